package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord/internal/pgtest"
)

// Every command takes -h (exit 0, its flags shown); a bad flag is one
// error line, printed once by main, without the list of flags.
func TestFlagErrorsAndHelp(t *testing.T) {
	t.Parallel()
	commands := [][]string{
		{"serve"}, {"migrate"}, {"init"}, {"nats-config"}, {"token", "create"}, {"dev"}, {"import"},
		{"audit", "verify"}, {"demo-agent"}, {"doctor"},
		{"accounts", "list"}, {"accounts", "show"}, {"accounts", "add"}, {"accounts", "update"},
		{"agents", "list"}, {"agents", "show"}, {"agents", "add"}, {"agents", "rotate"}, {"agents", "revoke"},
		{"rotations", "list"}, {"rotations", "show"}, {"audit", "list"},
	}
	for _, cmd := range commands {
		name := strings.Join(cmd, " ")
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), append(cmd, "-h"), &stdout, &stderr)
		if code := exitCode(err, &bytes.Buffer{}); code != 0 {
			t.Errorf("rotatord %s -h: exit %d (%v), want 0", name, code, err)
		}
		if !strings.Contains(stderr.String()+stdout.String(), "-") || !strings.Contains(strings.ToLower(stderr.String()), "usage") {
			t.Errorf("rotatord %s -h printed no flags:\n%s", name, stderr.String())
		}

		stdout.Reset()
		stderr.Reset()
		err = run(context.Background(), append(cmd, "--no-such-flag"), &stdout, &stderr)
		var printed bytes.Buffer
		if code := exitCode(err, &printed); code != 1 {
			t.Errorf("rotatord %s --no-such-flag: exit %d, want 1", name, code)
		}
		if got := printed.String(); got != "rotatord: flag provided but not defined: -no-such-flag\n" {
			t.Errorf("rotatord %s --no-such-flag printed %q, want the error once", name, got)
		}
		if stderr.Len()+stdout.Len() > 0 {
			t.Errorf("rotatord %s --no-such-flag also printed:\n%s%s", name, stdout.String(), stderr.String())
		}
	}
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"token", "-h"}, {"agents", "-h"}, {"audit", "help"}} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		if code := exitCode(err, &stderr); code != 0 || !strings.Contains(strings.ToLower(stdout.String()), "usage") {
			t.Errorf("rotatord %s: exit %d, stdout %q, want 0 and the usage", strings.Join(args, " "), code, stdout.String())
		}
	}
	// An unknown command: one line, no usage dump.
	for _, args := range [][]string{{"frobnicate"}, {"agents", "frobnicate"}} {
		var stdout, stderr, printed bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		if code := exitCode(err, &printed); code != 1 || strings.Count(printed.String(), "\n") != 1 || stderr.Len()+stdout.Len() > 0 {
			t.Errorf("rotatord %s: exit %d, printed %q, then %q; want one line", strings.Join(args, " "), code, printed.String(), stderr.String())
		}
	}
}

// Without a token, the CLI points at the dev token file where `rotatord
// dev` runs.
func TestNoTokenHintPointsAtDev(t *testing.T) {
	t.Setenv("ROTATORD_TOKEN", "")
	t.Setenv("ROTATORD_TOKEN_FILE", "")
	t.Chdir(t.TempDir())
	runCLIWith(t, "agents", "list").failed(t, "no API token", "rotatord token create")

	if err := os.MkdirAll(devDirName, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(devDirName, devTokenFile), []byte("rtd_x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runCLIWith(t, "agents", "list").failed(t, "no API token", "--token-file .rotatord-dev/admin.token")
	if err := os.WriteFile(filepath.Join(devDirName, devEnvFile), []byte("export ROTATORD_URL='x'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runCLIWith(t, "agents", "list").failed(t, "no API token", "source .rotatord-dev/env")
}

// audit list shows the newest events first, pages on with --after, and
// shows the oldest first on request; the API's order=desc does it.
func TestAuditNewestFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	for _, name := range []string{"a1", "a2", "a3"} {
		createAgent(e, name, "fleet")
	}
	ids := func(r cliResult) []int {
		t.Helper()
		var out []int
		for _, ev := range decodeJSON(t, r.stdout)["events"].([]any) {
			out = append(out, int(ev.(map[string]any)["id"].(float64)))
		}
		return out
	}
	all := ids(e.runCLI("audit", "list", "-o", "json", "--all").ok(t))
	if len(all) < 6 {
		t.Fatalf("audit list --all = %v, want the events of three agents", all)
	}
	for i := 1; i < len(all); i++ {
		if all[i] >= all[i-1] {
			t.Fatalf("audit list = %v, want the newest first", all)
		}
	}
	oldest := ids(e.runCLI("audit", "list", "-o", "json", "--all", "--oldest-first").ok(t))
	for i := range oldest {
		if oldest[i] != all[len(all)-1-i] {
			t.Fatalf("audit list --oldest-first = %v, want %v reversed", oldest, all)
		}
	}
	r := e.runCLI("audit", "list", "-o", "json", "--limit", "2").ok(t)
	first := ids(r)
	next := decodeJSON(t, r.stdout)["next"].(string)
	if len(first) != 2 || first[0] != all[0] || next != strconv.Itoa(all[1]) || !strings.Contains(r.stderr, "--after "+next) {
		t.Fatalf("audit list --limit 2 = %v next %s (stderr %q), want the newest two", first, next, r.stderr)
	}
	rest := ids(e.runCLI("audit", "list", "-o", "json", "--all", "--after", next).ok(t))
	if len(rest) != len(all)-2 || rest[0] != all[2] {
		t.Fatalf("audit list --after %s = %v, want %v", next, rest, all[2:])
	}
	// The table too: the newest first.
	table := e.runCLI("audit", "list", "--limit", "1").ok(t).stdout
	if !strings.Contains(table, strconv.Itoa(all[0])) {
		t.Errorf("audit list table does not start with event %d:\n%s", all[0], table)
	}
	e.must(400, "GET", "/v1/audit?order=sideways", nil)
	page := e.must(200, "GET", "/v1/audit?order=desc&limit=1", nil)
	if got := page["events"].([]any)[0].(map[string]any)["id"].(float64); int(got) != all[0] {
		t.Errorf("GET /v1/audit?order=desc starts with %v, want %d", got, all[0])
	}
}

// rotations list without --agent lists the fleet's rotations, newest first,
// by account and state, paged.
func TestRotationsListFleet(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "ops"})
	createAgent(e, "kate", "fleet")
	createAgent(e, "lee", "ops")
	kate := e.must(202, "POST", "/v1/agents/kate/rotate", nil)["id"].(string)
	lee := e.must(202, "POST", "/v1/agents/lee/rotate", nil)["id"].(string)

	r := e.runCLI("rotations", "list").ok(t)
	if !strings.Contains(r.stdout, "AGENT") || strings.Index(r.stdout, lee) < 0 || strings.Index(r.stdout, lee) > strings.Index(r.stdout, kate) {
		t.Fatalf("rotations list = \n%s\nwant %s (lee) before %s (kate)", r.stdout, lee, kate)
	}
	r = e.runCLI("rotations", "list", "--account", "fleet", "-o", "json").ok(t)
	if rots := decodeJSON(t, r.stdout)["rotations"].([]any); len(rots) != 1 || rots[0].(map[string]any)["id"] != kate {
		t.Errorf("rotations list --account fleet = %s", r.stdout)
	}
	r = e.runCLI("rotations", "list", "--state", "completed", "-o", "json").ok(t)
	if rots := decodeJSON(t, r.stdout)["rotations"].([]any); len(rots) != 0 {
		t.Errorf("rotations list --state completed = %s, want none", r.stdout)
	}
	r = e.runCLI("rotations", "list", "--limit", "1", "-o", "json").ok(t)
	if rots := decodeJSON(t, r.stdout)["rotations"].([]any); len(rots) != 1 || rots[0].(map[string]any)["id"] != lee ||
		!strings.Contains(r.stderr, "--after "+lee) {
		t.Errorf("rotations list --limit 1 = %s (stderr %q), want lee's and where to go on", r.stdout, r.stderr)
	}
	r = e.runCLI("rotations", "list", "--after", lee, "-o", "json").ok(t)
	if rots := decodeJSON(t, r.stdout)["rotations"].([]any); len(rots) != 1 || rots[0].(map[string]any)["id"] != kate {
		t.Errorf("rotations list --after %s = %s, want kate's", lee, r.stdout)
	}
}

// Requests that change nothing are logged at debug, changes at info, and
// the rotation's steps at info.
func TestLogLevels(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	e.must(200, "GET", "/v1/accounts", nil)
	createAgent(e, "kate", "fleet")
	e.must(202, "POST", "/v1/agents/kate/rotate", nil)
	logs := e.logs.String()
	for _, re := range []string{
		`level=DEBUG msg="http request" method=GET path=/v1/accounts status=200`,
		`level=INFO msg="http request" method=POST path=/v1/accounts status=201`,
		`level=INFO msg="rotation started" agent=kate account=fleet rotation=\S+ key=U\S+ trigger=manual`,
		`level=INFO msg="rotation distributed: waiting for the agent to reconnect with the new key" agent=kate`,
	} {
		if !regexp.MustCompile(re).MatchString(logs) {
			t.Errorf("logs lack %s:\n%s", re, logs)
		}
	}
	if regexp.MustCompile(`level=INFO msg="http request" method=GET`).MatchString(logs) {
		t.Errorf("a GET is logged at info:\n%s", logs)
	}
}

// init without ROTATORD_PUBLIC_URL warns that the resolver URL is loopback;
// init with one re-signs the operator JWT for it, audited; without it
// again, init does not go back to loopback.
func TestInitPublicURL(t *testing.T) {
	t.Setenv("ROTATORD_PUBLIC_URL", "")
	e := newBareEnv(t, pgtest.New(t))
	initCLI := func(args ...string) (block, msg string, oc *jwt.OperatorClaims) {
		t.Helper()
		r := runCLIWith(t, append([]string{"init", "--operator", "acme", "--database-url", e.dbURL, "--master-key-file", e.keyFile,
			"--log-level", "error"}, args...)...).ok(t)
		op, _, _ := strings.Cut(strings.TrimPrefix(r.stdout, "operator: "), "\n")
		oc, err := jwt.DecodeOperatorClaims(op)
		if err != nil {
			t.Fatalf("init printed %q: %v", r.stdout, err)
		}
		return r.stdout, r.stderr, oc
	}
	block, msg, first := initCLI()
	if !strings.Contains(msg, "warning: ROTATORD_PUBLIC_URL is not set, and http://127.0.0.1:8080 is a loopback address") ||
		!strings.Contains(block, `resolver: URL("http://127.0.0.1:8080/jwt/v1/accounts/")`) || first.AccountServerURL != "http://127.0.0.1:8080/jwt/v1" {
		t.Fatalf("first init: stderr %q, block\n%s\naccount server url %q", msg, block, first.AccountServerURL)
	}

	const public = "https://rotatord.example:8443"
	block, msg, updated := initCLI("--public-url", public)
	if !strings.Contains(msg, "updated the operator JWT: its resolver URL was http://127.0.0.1:8080/jwt/v1, now "+public+"/jwt/v1") ||
		strings.Contains(msg, "loopback") || !strings.Contains(block, `resolver: URL("`+public+`/jwt/v1/accounts/")`) {
		t.Fatalf("init with a public URL: stderr %q, block\n%s", msg, block)
	}
	if updated.AccountServerURL != public+"/jwt/v1" || updated.Subject != first.Subject || updated.SystemAccount != first.SystemAccount ||
		len(updated.SigningKeys) != 1 || !updated.SigningKeys.Contains(first.SigningKeys[0]) {
		t.Fatalf("re-signed operator = %+v, want the same operator with account server url %s", updated, public+"/jwt/v1")
	}
	// The stored operator JWT is the new one, and the change is audited.
	if _, served := e.operatorJWT(t); served != strings.TrimPrefix(strings.Split(block, "\n")[0], "operator: ") {
		t.Error("the stored operator JWT is not the one printed")
	}
	e.auditHas(t, "operator.update", public+"/jwt/v1")

	again, msg, _ := initCLI("--public-url", public)
	if again != block || !strings.Contains(msg, "operator acme already initialized; nothing changed") {
		t.Fatalf("init again with the same URL: stderr %q, same block %v", msg, again == block)
	}
	_, msg, kept := initCLI()
	if kept.AccountServerURL != public+"/jwt/v1" || !strings.Contains(msg, "the operator JWT names the resolver URL "+public+"/jwt/v1") ||
		!strings.Contains(msg, "ROTATORD_PUBLIC_URL="+public) {
		t.Fatalf("init without a public URL after one: stderr %q, account server url %q", msg, kept.AccountServerURL)
	}
}

// operatorJWT reads the stored operator from e's database.
func (e *env) operatorJWT(t *testing.T) (name, token string) {
	t.Helper()
	store, _, err := openService(context.Background(), e.config(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	op, err := store.Operator(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return op.Name, op.JWT
}

// auditHas fails unless e's audit trail has an action whose details hold want.
func (e *env) auditHas(t *testing.T, action, want string) {
	t.Helper()
	store, _, err := openService(context.Background(), e.config(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var n int
	if err := store.Pool().QueryRow(context.Background(),
		`SELECT count(*) FROM audit_events WHERE action = $1 AND details::text LIKE '%' || $2 || '%'`, action, want).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("audit events %s with %q: %d, want 1", action, want, n)
	}
}
