package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/doctor"
	"github.com/rotatord/rotatord/internal/natsrun"
	"github.com/rotatord/rotatord/internal/seal"
)

// doctorConfig is the configuration doctor checks e's deployment with.
func (e *env) doctorConfig() Config {
	cfg := e.config()
	cfg.PublicURL = e.main.URL()
	cfg.LogLevel = "error"
	if e.ns != nil {
		cfg.NATSURL = e.ns.ClientURL()
	}
	return cfg
}

func doctorOpts() doctorOptions {
	// A generous timeout: each probe bounds only what fails to answer.
	return doctorOptions{now: time.Now, timeout: 20 * time.Second, maxJWT: rotatord.DefaultMaxAccountJWTBytes,
		stuckAfter: time.Minute, rollbacks: 24 * time.Hour}
}

// result finds a check (and subject, when given) in a report.
func result(t *testing.T, rep *doctor.Report, check, subject string) doctor.Result {
	t.Helper()
	for _, r := range rep.Results {
		if r.Check == check && (subject == "" || r.Subject == subject) {
			return r
		}
	}
	t.Fatalf("no %s %s in the report: %+v", check, subject, rep.Results)
	return doctor.Result{}
}

func expectResult(t *testing.T, rep *doctor.Report, check, subject string, status doctor.Status, msg ...string) {
	t.Helper()
	r := result(t, rep, check, subject)
	if r.Status != status {
		t.Errorf("%s %s = %s %q, want %s", check, subject, r.Status, r.Message, status)
	}
	for _, m := range msg {
		if !strings.Contains(r.Message, m) {
			t.Errorf("%s %s: %q lacks %q", check, subject, r.Message, m)
		}
	}
}

// A healthy deployment passes every check, and doctor exits 0; a broken
// one fails the check that names it.
func TestDoctor(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startNATS()
	e.waitNATS()
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	createAgent(e, "kate", "fleet")
	cfg := e.doctorConfig()

	t.Run("healthy", func(t *testing.T) {
		t.Parallel()
		rep := diagnose(context.Background(), cfg, doctorOpts())
		if rep.Status != doctor.StatusOK {
			t.Fatalf("healthy deployment: status %s: %+v", rep.Status, rep.Results)
		}
		for _, c := range []string{"database", "master key", "nats", "servers", "server trust", "clock", "resolver", "account jwt",
			"rotations stuck", "rollbacks", "audit chain"} {
			if r := result(t, rep, c, ""); r.Status != doctor.StatusOK {
				t.Errorf("%s = %+v", c, r)
			}
		}
		expectResult(t, rep, "master key", "", doctor.StatusOK, "operator and 2 accounts")
		expectResult(t, rep, "servers", "", doctor.StatusOK, "1 answered")

		// As a user runs it: exit 0, and --json parses.
		var stdout, stderr bytes.Buffer
		args := []string{"doctor", "--database-url", cfg.DatabaseURL, "--master-key-file", cfg.MasterKeyFile,
			"--nats-url", cfg.NATSURL, "--public-url", cfg.PublicURL, "--log-level", "error"}
		if err := run(context.Background(), args, &stdout, &stderr); exitCode(err, &stderr) != 0 {
			t.Fatalf("doctor: %v\n%s%s", err, stdout.String(), stderr.String())
		}
		if !strings.Contains(stdout.String(), "all is well") {
			t.Errorf("doctor printed:\n%s", stdout.String())
		}
		stdout.Reset()
		if err := run(context.Background(), append(args, "--json"), &stdout, &stderr); err != nil {
			t.Fatal(err)
		}
		var doc doctor.Report
		if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil || doc.Status != doctor.StatusOK || len(doc.Results) < 11 {
			t.Fatalf("doctor --json = %v, %s", err, stdout.String())
		}
	})

	t.Run("wrong operator on a server", func(t *testing.T) {
		t.Parallel()
		foreign := foreignNATS(t)
		bad := cfg
		bad.NATSURL = cfg.NATSURL + "," + foreign.ClientURL()
		rep := diagnose(context.Background(), bad, doctorOpts())
		expectResult(t, rep, "nats", cfg.NATSURL, doctor.StatusOK)
		expectResult(t, rep, "nats", foreign.ClientURL(), doctor.StatusFail, "refuses rotatord's system user", "does not trust operator test")
		if rep.Status != doctor.StatusFail {
			t.Errorf("status = %s, want fail", rep.Status)
		}
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"doctor", "--database-url", cfg.DatabaseURL, "--master-key-file", cfg.MasterKeyFile,
			"--nats-url", bad.NATSURL, "--public-url", cfg.PublicURL, "--log-level", "error"}, &stdout, &stderr)
		var printed bytes.Buffer
		if code := exitCode(err, &printed); code != 1 || !strings.Contains(stdout.String(), "FAIL") ||
			!strings.Contains(stdout.String(), "fix: put the block that `rotatord nats-config` prints") {
			t.Errorf("doctor with a foreign server: exit %d (%s)\n%s", code, printed.String(), stdout.String())
		}
	})

	t.Run("resolver URL that does not answer", func(t *testing.T) {
		t.Parallel()
		port, err := natsrun.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		bad := cfg
		bad.PublicURL = fmt.Sprintf("http://127.0.0.1:%d", port)
		rep := diagnose(context.Background(), bad, doctorOpts())
		expectResult(t, rep, "resolver", bad.PublicURL+"/jwt/v1/accounts/", doctor.StatusFail, "does not answer", "connection refused")
		expectResult(t, rep, "servers", "", doctor.StatusOK)
	})

	t.Run("skewed clock", func(t *testing.T) {
		t.Parallel()
		o := doctorOpts()
		o.now = func() time.Time { return time.Now().Add(-2 * time.Minute) } // rotatord's clock is behind
		rep := diagnose(context.Background(), cfg, o)
		expectResult(t, rep, "clock", "", doctor.StatusFail, "ahead of rotatord's")
		o.now = func() time.Time { return time.Now().Add(5 * time.Second) }
		expectResult(t, diagnose(context.Background(), cfg, o), "clock", "", doctor.StatusWarn, "behind rotatord's")
	})

	t.Run("account JWT over the guard", func(t *testing.T) {
		t.Parallel()
		o := doctorOpts()
		o.maxJWT = 800
		rep := diagnose(context.Background(), cfg, o)
		expectResult(t, rep, "account jwt", "fleet", doctor.StatusFail, "above the guard of 800")
	})

	t.Run("wrong master key", func(t *testing.T) {
		t.Parallel()
		bad := cfg
		bad.MasterKeyFile = filepath.Join(t.TempDir(), "other.key")
		if _, err := seal.WriteNewKeyFile(bad.MasterKeyFile); err != nil {
			t.Fatal(err)
		}
		rep := diagnose(context.Background(), bad, doctorOpts())
		expectResult(t, rep, "master key", "", doctor.StatusFail, "does not open 3 of 3 signing keys", "operator")
		expectResult(t, rep, "nats", "", doctor.StatusSkip)
	})

	t.Run("database down", func(t *testing.T) {
		t.Parallel()
		port, err := natsrun.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		bad := cfg
		bad.DatabaseURL = fmt.Sprintf("postgres://rotatord:hunter2@127.0.0.1:%d/rotatord", port)
		rep := diagnose(context.Background(), bad, doctorOpts())
		expectResult(t, rep, "database", "", doctor.StatusFail, "cannot connect to PostgreSQL", fmt.Sprintf("127.0.0.1:%d", port))
		for _, c := range []string{"master key", "account jwt", "rotations", "audit chain"} {
			expectResult(t, rep, c, "", doctor.StatusSkip)
		}
		raw, _ := json.Marshal(rep)
		if strings.Contains(string(raw), "hunter2") {
			t.Error("the report shows the database password")
		}
	})
}

// A rotation past its deadline is stuck; one rolled back is reported.
func TestDoctorRotations(t *testing.T) {
	t.Parallel()
	e, clk := newClockedEnv(t)
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	createAgent(e, "kate", "fleet")
	id := e.must(202, "POST", "/v1/agents/kate/rotate", nil)["id"].(string)
	cfg := e.doctorConfig()
	cfg.NATSURL = "" // the rotations only
	o := doctorOpts()
	o.now = func() time.Time { return clk.Now().Add(32 * time.Minute) } // the grace is 30m
	rep := diagnose(context.Background(), cfg, o)
	expectResult(t, rep, "rotations stuck", "", doctor.StatusFail, "1 rotations in flight", "kate ("+id+", distributed, deadline")
	expectResult(t, rep, "rollbacks", "", doctor.StatusOK, "none")

	clk.Advance(31 * time.Minute)
	if _, err := e.main.Service.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := e.rotation(id); r["state"] != "rolled_back" {
		t.Fatalf("rotation = %v, want rolled back", r["state"])
	}
	o.now = clk.Now
	rep = diagnose(context.Background(), cfg, o)
	expectResult(t, rep, "rotations stuck", "", doctor.StatusOK, "none")
	expectResult(t, rep, "rollbacks", "", doctor.StatusWarn, "1 rotations rolled back in the last 24h", "kate ("+id+", the agent did not reconnect")
	if rep.Status != doctor.StatusWarn {
		t.Errorf("status = %s, want warn", rep.Status)
	}
}

// foreignNATS starts a nats-server of another operator, with its own
// system account.
func foreignNATS(t *testing.T) *server.Server {
	t.Helper()
	opKP, _ := nkeys.CreateOperator()
	opPub, _ := opKP.PublicKey()
	sysKP, _ := nkeys.CreateAccount()
	sysPub, _ := sysKP.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name, oc.SystemAccount = "legacy", sysPub
	opJWT, err := oc.Encode(opKP)
	if err != nil {
		t.Fatal(err)
	}
	ac := jwt.NewAccountClaims(sysPub)
	ac.Name = "SYS"
	sysJWT, err := ac.Encode(opKP)
	if err != nil {
		t.Fatal(err)
	}
	res := &server.MemAccResolver{}
	if err := res.Store(sysPub, sysJWT); err != nil {
		t.Fatal(err)
	}
	ns, err := natsrun.Start(natsrun.Options{OperatorJWT: opJWT, SystemAccount: sysPub, ResolverURL: "http://127.0.0.1:1/",
		Configure: func(o *server.Options) { o.AccountResolver = res }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	return ns
}
