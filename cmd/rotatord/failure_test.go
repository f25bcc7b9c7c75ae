package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord/internal/pglocal"
	"github.com/rotatord/rotatord/internal/pgtest"
	"github.com/rotatord/rotatord/internal/seal"
)

func TestServeRefusesToStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	other := filepath.Join(t.TempDir(), "other.key")
	if _, err := seal.WriteNewKeyFile(other); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.key")
	os.WriteFile(bad, []byte("c2hvcnQ=\n"), 0o600)
	uninitialized := pgtest.New(t)

	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no master key", func(c *Config) { c.MasterKeyFile = "" }, "ROTATORD_MASTER_KEY_FILE"},
		{"missing key file", func(c *Config) { c.MasterKeyFile = filepath.Join(t.TempDir(), "nope") }, "read master key file"},
		{"short key", func(c *Config) { c.MasterKeyFile = bad }, "want 32"},
		{"wrong key", func(c *Config) { c.MasterKeyFile = other }, "wrong master key"},
		{"not initialized", func(c *Config) { c.DatabaseURL = uninitialized }, "rotatord init"},
		{"no database", func(c *Config) { c.DatabaseURL = "" }, "ROTATORD_DATABASE_URL"},
		{"database down", func(c *Config) {
			c.DatabaseURL = "postgres://postgres@/x?host=/nonexistent&port=1&connect_timeout=2"
		}, "database"},
		{"bad listen", func(c *Config) { c.Listen = "nonsense" }, "listen address"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := e.config()
			c.mod(&cfg)
			m := NewMain()
			m.Config = cfg
			m.Log = discardLogger()
			err := m.Run(context.Background())
			if err == nil {
				m.Close()
				t.Fatal("Run succeeded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Run = %v; want an error mentioning %q", err, c.want)
			}
		})
	}
}

func TestInitAndTokenCLI(t *testing.T) {
	dbURL := pgtest.New(t)
	keyFile := filepath.Join(t.TempDir(), "master.key")
	seal.WriteNewKeyFile(keyFile)
	t.Setenv("ROTATORD_DATABASE_URL", dbURL)
	t.Setenv("ROTATORD_MASTER_KEY_FILE", keyFile)
	t.Setenv("ROTATORD_PUBLIC_URL", "https://rotatord.example:8443")
	t.Setenv("ROTATORD_LOG_LEVEL", "error")

	runCLI := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, &out, &errOut)
		return out.String(), errOut.String(), err
	}
	first, msg, err := runCLI("init", "--operator", "acme")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(first), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "operator: ") || !strings.HasPrefix(lines[1], "system_account: A") ||
		lines[2] != `resolver: URL("https://rotatord.example:8443/jwt/v1/accounts/")` {
		t.Fatalf("init printed:\n%s", first)
	}
	oc, err := jwt.DecodeOperatorClaims(strings.TrimPrefix(lines[0], "operator: "))
	if err != nil || oc.Name != "acme" || oc.SystemAccount != strings.TrimPrefix(lines[1], "system_account: ") || len(oc.SigningKeys) != 1 {
		t.Fatalf("operator jwt: %v %+v", err, oc)
	}
	if !strings.Contains(msg, "created operator acme") {
		t.Fatalf("init stderr = %q", msg)
	}
	second, msg, err := runCLI("init", "--operator", "acme")
	if err != nil || second != first || !strings.Contains(msg, "nothing changed") {
		t.Fatalf("second init: %v, stderr %q, same block %v", err, msg, second == first)
	}
	if _, _, err := runCLI("init", "--operator", "other"); err == nil || !strings.Contains(err.Error(), `already initialized for operator "acme"`) {
		t.Fatalf("init with another name: %v", err)
	}
	if block, _, err := runCLI("nats-config"); err != nil || block != first {
		t.Fatalf("nats-config: %v\n%s", err, block)
	}

	token, msg, err := runCLI("token", "create", "--name", "ci", "--scope", "rotate")
	if err != nil || !strings.HasPrefix(token, "rtd_") || strings.Contains(msg, strings.TrimSpace(token)) {
		t.Fatalf("token create: %v, stdout %q, stderr %q", err, token, msg)
	}
	if _, _, err := runCLI("token", "create", "--name", "ci", "--scope", "rotate"); err == nil || !strings.Contains(err.Error(), `a token named "ci" exists already`) {
		t.Fatalf("duplicate token: %v", err)
	}
	if _, _, err := runCLI("token", "create", "--name", "x", "--scope", "root"); err == nil || !strings.Contains(err.Error(), "scope") {
		t.Fatalf("bad scope: %v", err)
	}
	if _, _, err := runCLI("frobnicate"); err == nil {
		t.Fatal("unknown command succeeded")
	}
	// The token is stored hashed: its secret is nowhere in the database.
	m := e2eStoreDump(t, dbURL)
	if strings.Contains(m, strings.TrimSpace(token)[4:]) {
		t.Fatal("token secret found in the database")
	}
}

// e2eStoreDump returns every row of the tables that could hold secrets, as text.
func e2eStoreDump(t *testing.T, dbURL string) string {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DatabaseURL = dbURL
	store, _, err := openService(context.Background(), cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var out strings.Builder
	for _, table := range []string{"api_tokens", "audit_events", "operator", "signing_keys", "accounts", "credentials"} {
		rows, err := store.Pool().Query(context.Background(), "SELECT * FROM "+table)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			vals, _ := rows.Values()
			fmt.Fprintln(&out, vals...)
		}
		rows.Close()
	}
	return out.String()
}

// rotatord starts and serves the resolver while NATS is down; an account
// change made meanwhile is pushed once NATS comes up.
func TestStartsWhileNATSIsDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	status, body := e.do("GET", "/readyz", "", nil)
	if status != 503 || !strings.Contains(string(body), "nats not connected") {
		t.Fatalf("readyz without nats = %d %s; want 503", status, body)
	}
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	_, creds := createAgent(e, "kate", "fleet")
	rev := e.must(200, "POST", "/v1/agents/kate/revoke", nil)
	if rev["pushed"] != false {
		t.Fatalf("revoke without nats: pushed = %v, want false", rev["pushed"])
	}
	owed, err := e.main.Store.ListPushOwed(context.Background())
	if err != nil || len(owed) != 1 {
		t.Fatalf("owed pushes = %v, %v; want the fleet account", owed, err)
	}

	e.startNATS()
	e.waitNATS()
	eventually(t, 10*time.Second, "the owed push to be acknowledged", func() bool {
		owed, _ := e.main.Store.ListPushOwed(context.Background())
		return len(owed) == 0
	})
	if status, body := e.do("GET", "/readyz", "", nil); status != 200 {
		t.Fatalf("readyz with nats = %d %s", status, body)
	}
	// The revocation reached the server through the resolver too.
	if _, err := connectCreds(e, creds); err == nil {
		t.Fatal("revoked agent connected after nats came up")
	}
}

// With PostgreSQL gone, the resolver keeps answering from memory, readyz
// says so, and the API answers 503 without leaking internals.
func TestDatabaseDown(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "rotatord-pgdown-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	pg, err := pglocal.Start(context.Background(), pglocal.Options{Dir: dir, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop() })
	if err := pg.CreateDatabase(context.Background(), "rotatord"); err != nil {
		t.Fatal(err)
	}
	e := newEnvOn(t, pg.URL("rotatord"))
	acc := e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	pub := acc["public_key"].(string)

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if status, body := e.do("GET", "/jwt/v1/accounts/"+pub, "", nil); status != 200 || !strings.HasPrefix(string(body), "eyJ") {
		t.Fatalf("resolver with database down = %d %.40s; want the cached jwt", status, body)
	}
	if status, body := e.do("GET", "/readyz", "", nil); status != 503 || !strings.Contains(string(body), "database unreachable") {
		t.Fatalf("readyz with database down = %d %s", status, body)
	}
	status, body := e.do("GET", "/v1/accounts", e.admin, nil)
	var eb struct{ Error, Code string }
	json.Unmarshal(body, &eb)
	if status != 503 || eb.Code != "unavailable" || strings.Contains(eb.Error, "dial") || strings.Contains(eb.Error, dir) {
		t.Fatalf("API with database down = %d %s; want 503 without internals", status, body)
	}
}
