package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord"
)

// cliResult is what one CLI run printed and returned.
type cliResult struct {
	stdout, stderr string
	err            error
}

// runCLI runs `rotatord args...` against e's server with its admin token.
func (e *env) runCLI(args ...string) cliResult {
	e.t.Helper()
	return runCLIWith(e.t, append(args, "--url", e.main.URL(), "--token", e.admin)...)
}

// runCLIWith runs `rotatord args...` as given.
func runCLIWith(t testing.TB, args ...string) cliResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, &stdout, &stderr)
	return cliResult{stdout.String(), stderr.String(), err}
}

// ok fails the test unless the run succeeded.
func (r cliResult) ok(t testing.TB) cliResult {
	t.Helper()
	if r.err != nil {
		t.Fatalf("cli: %v\nstdout:\n%s\nstderr:\n%s", r.err, r.stdout, r.stderr)
	}
	return r
}

// failed fails the test unless the run failed with an error holding every want.
func (r cliResult) failed(t testing.TB, want ...string) {
	t.Helper()
	if r.err == nil {
		t.Fatalf("cli succeeded, want an error with %q\nstdout:\n%s", want, r.stdout)
	}
	for _, w := range want {
		if !strings.Contains(r.err.Error(), w) {
			t.Errorf("cli error %q lacks %q", r.err, w)
		}
	}
}

func decodeJSON(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("output is not one JSON document: %v\n%s", err, s)
	}
	return m
}

var uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// The operator's round trip: add, list, show, rotate, revoke, audit.
func TestCLIAgents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})

	// add with --creds-out: the seed goes to a 0600 file, never to the output.
	credsFile := filepath.Join(t.TempDir(), "kate.creds")
	r := e.runCLI("agents", "add", "kate", "--account", "fleet", "--pub", "orders.>,_INBOX.>", "--pub-deny", "orders.secret",
		"--sub", "orders.>", "--sub", "_INBOX.>", "--schedule", "@every 12h", "--grace", "45m", "--creds-out", credsFile).ok(t)
	creds, err := os.ReadFile(credsFile)
	if err != nil {
		t.Fatal(err)
	}
	seed := seedOf(t, string(creds))
	if fi, _ := os.Stat(credsFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("creds file mode = %v, want 0600", fi.Mode().Perm())
	}
	if strings.Contains(r.stdout+r.stderr, seed) {
		t.Fatal("add --creds-out printed the seed")
	}
	if !strings.Contains(r.stdout, "kate") || !strings.Contains(r.stdout, "orders.secret") {
		t.Errorf("add output lacks the agent:\n%s", r.stdout)
	}
	got := e.must(200, "GET", "/v1/agents/kate", nil)
	var perms bytes.Buffer
	enc := json.NewEncoder(&perms)
	enc.SetEscapeHTML(false)
	enc.Encode(got["permissions"]) //nolint:errcheck // decoded from JSON
	if want := `{"pub":{"allow":["orders.>","_INBOX.>"],"deny":["orders.secret"]},"sub":{"allow":["orders.>","_INBOX.>"],"deny":[]}}`; strings.TrimSpace(perms.String()) != want {
		t.Errorf("permissions = %s, want %s", perms.String(), want)
	}
	if rot := got["rotation"].(map[string]any); rot["schedule"] != "@every 12h" || rot["grace"] != "45m" {
		t.Errorf("rotation = %v, want @every 12h and 45m", rot)
	}

	// An existing creds file is never overwritten, and no agent is created.
	e.runCLI("agents", "add", "kate2", "--account", "fleet", "--sub", "x", "--creds-out", credsFile).failed(t, "file exists")
	e.must(404, "GET", "/v1/agents/kate2", nil)

	// Without --creds-out, stdout is exactly the creds file; the summary goes to stderr.
	r = e.runCLI("agents", "add", "lee", "--account", "fleet", "--sub", "tasks.>").ok(t)
	if !strings.HasPrefix(r.stdout, "-----BEGIN NATS USER JWT-----") || strings.Contains(r.stdout, "Name:") {
		t.Errorf("add stdout is not just a creds file:\n%s", r.stdout)
	}
	if seedOf(t, r.stdout) == "" || !strings.Contains(r.stderr, "lee") || hasSeed(r.stderr) {
		t.Errorf("add stderr = %q, want the summary without the seed", r.stderr)
	}
	// JSON with --creds-out leaves creds out of the document.
	maxFile := filepath.Join(t.TempDir(), "max.creds")
	r = e.runCLI("agents", "add", "max", "-o", "json", "--account", "fleet", "--creds-out", maxFile).ok(t)
	if m := decodeJSON(t, r.stdout); m["name"] != "max" || m["creds"] != nil {
		t.Errorf("add -o json --creds-out = %v, want the agent without creds", m)
	}
	if !strings.Contains(r.stderr, "may neither publish nor subscribe") {
		t.Errorf("add without permissions: stderr %q lacks the note", r.stderr)
	}

	// list: a table, and JSON that parses.
	r = e.runCLI("agents", "list").ok(t)
	for _, want := range []string{"NAME", "kate", "lee", "max", "fleet", "@every 12h"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("agents list lacks %q:\n%s", want, r.stdout)
		}
	}
	r = e.runCLI("agents", "list", "--account", "fleet", "-o", "json").ok(t)
	agents := decodeJSON(t, r.stdout)["agents"].([]any)
	if len(agents) != 3 || agents[0].(map[string]any)["name"] != "kate" || hasSeed(r.stdout) {
		t.Fatalf("agents list -o json = %s", r.stdout)
	}

	// show, with flags after the name.
	r = e.runCLI("agents", "show", "kate", "-o", "json").ok(t)
	if m := decodeJSON(t, r.stdout); m["name"] != "kate" || m["state"] != "active" {
		t.Errorf("show -o json = %v", m)
	}
	r = e.runCLI("agents", "show", "kate").ok(t)
	if !strings.Contains(r.stdout, "Publish deny:") || !strings.Contains(r.stdout, "orders.secret") {
		t.Errorf("show:\n%s", r.stdout)
	}

	// rotate prints the rotation's ID; a second one conflicts.
	r = e.runCLI("agents", "rotate", "kate").ok(t)
	id := uuidRE.FindString(r.stdout)
	if id == "" {
		t.Fatalf("rotate printed no rotation id:\n%s", r.stdout)
	}
	if rot := e.must(200, "GET", "/v1/rotations/"+id, nil); rot["agent"] != "kate" || rot["trigger"] != "manual" {
		t.Errorf("rotation %s = %v", id, rot)
	}
	r = e.runCLI("agents", "rotate", "kate")
	r.failed(t, "conflict: ", "(HTTP 409)", "rotation "+id+" of agent kate is in flight", "rotatord rotations show "+id)
	if !errors.Is(r.err, rotatord.ErrConflict) {
		t.Errorf("rotate twice: %v is not a conflict", r.err)
	}
	// The API names the rotation in flight (apitest checks the body
	// against the spec).
	if status, body := e.do("POST", "/v1/agents/kate/rotate", e.admin, nil); status != 409 ||
		decodeJSON(t, string(body))["rotation"] != id || decodeJSON(t, string(body))["code"] != "conflict" {
		t.Errorf("POST rotate while one is in flight = %d %s, want 409 naming %s", status, body, id)
	}
	r = e.runCLI("rotations", "list", "--agent", "kate").ok(t)
	if !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "manual") {
		t.Errorf("rotations list:\n%s", r.stdout)
	}
	r = e.runCLI("rotations", "list", "-o", "json", "--agent", "kate").ok(t)
	if rots := decodeJSON(t, r.stdout)["rotations"].([]any); len(rots) != 1 || rots[0].(map[string]any)["id"] != id {
		t.Errorf("rotations list -o json = %s", r.stdout)
	}
	r = e.runCLI("rotations", "show", id).ok(t)
	if !strings.Contains(r.stdout, "State:") || !strings.Contains(r.stdout, "kate") {
		t.Errorf("rotations show:\n%s", r.stdout)
	}

	// revoke
	r = e.runCLI("agents", "revoke", "kate", "--reason", "key leaked").ok(t)
	if !strings.Contains(r.stdout, "revoked") {
		t.Errorf("revoke:\n%s", r.stdout)
	}
	if got := e.must(200, "GET", "/v1/agents/kate", nil); got["state"] != "revoked" {
		t.Errorf("agent after revoke = %v", got["state"])
	}

	// audit list shows the events, filtered and paged.
	r = e.runCLI("audit", "list", "--agent", "kate").ok(t)
	for _, want := range []string{"agent.create", "credential.issue", "rotation.start", "agent.revoke", "key leaked"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("audit list lacks %s:\n%s", want, r.stdout)
		}
	}
	r = e.runCLI("audit", "list", "-o", "json", "--agent", "kate", "--action", "agent.revoke", "--since", "1h").ok(t)
	if events := decodeJSON(t, r.stdout)["events"].([]any); len(events) != 1 || events[0].(map[string]any)["action"] != "agent.revoke" {
		t.Errorf("audit list --action agent.revoke = %s", r.stdout)
	}
	r = e.runCLI("audit", "list", "-o", "json", "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)).ok(t)
	if events := decodeJSON(t, r.stdout)["events"].([]any); len(events) != 0 {
		t.Errorf("audit list --since in an hour = %d events, want none", len(events))
	}
	all := decodeJSON(t, e.runCLI("audit", "list", "-o", "json", "--all").ok(t).stdout)["events"].([]any)
	r = e.runCLI("audit", "list", "-o", "json", "--limit", "2").ok(t)
	first := decodeJSON(t, r.stdout)
	if len(all) < 5 || len(first["events"].([]any)) != 2 || first["next"] == nil || !strings.Contains(r.stderr, "--after") {
		t.Fatalf("audit list --limit 2 = %s (stderr %q), with %d events in all", r.stdout, r.stderr, len(all))
	}
	rest := decodeJSON(t, e.runCLI("audit", "list", "-o", "json", "--all", "--after", first["next"].(string)).ok(t).stdout)
	if n := len(rest["events"].([]any)); n != len(all)-2 {
		t.Errorf("audit list --after: %d events, want %d", n, len(all)-2)
	}

	// Paging follows next page after page.
	api, err := newAPIClient(e.main.URL(), e.admin, tlsFiles{}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	paged, err := api.list(context.Background(), "/v1/audit", nil, "events", 0, 2)
	if err != nil || len(paged.items) != len(all) || paged.next != "" {
		t.Fatalf("list in pages of 2: %d events, next %q, %v; want %d", len(paged.items), paged.next, err, len(all))
	}
	pagedAgents, err := api.list(context.Background(), "/v1/agents", nil, "agents", 0, 1)
	if err != nil || len(pagedAgents.items) != 3 {
		t.Fatalf("agents in pages of 1: %d, %v; want 3", len(pagedAgents.items), err)
	}
	if strings.Contains(e.logs.String(), seed) {
		t.Error("the seed is in rotatord's logs")
	}
}

// Errors name the API's code and status, the URL that could not be reached,
// or the usage; the token never shows.
func TestCLIErrors(t *testing.T) {
	e := newEnv(t)
	r := e.runCLI("agents", "show", "nobody")
	r.failed(t, "not_found: ", "nobody", "(HTTP 404)")
	if !errors.Is(r.err, rotatord.ErrNotFound) {
		t.Errorf("show unknown agent: %v is not a not-found error", r.err)
	}
	e.runCLI("agents", "revoke", "nobody").failed(t, "not_found: ", "(HTTP 404)")
	e.runCLI("rotations", "show", "6f1c2b9e-4d3a-4f5e-9a7b-2c8d1e0f3a45").failed(t, "not_found: ", "(HTTP 404)")
	credsFile := filepath.Join(t.TempDir(), "kate.creds")
	e.runCLI("agents", "add", "kate", "--account", "nosuch", "--sub", "x", "--creds-out", credsFile).failed(t, "invalid: ", "(HTTP 400)")
	if _, err := os.Stat(credsFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed add left its creds file behind: %v", err)
	}

	const bogus = "rtd_not-a-real-token-at-all"
	r = runCLIWith(t, "agents", "list", "--url", e.main.URL(), "--token", bogus)
	r.failed(t, "unauthorized: ", "(HTTP 401)")
	if strings.Contains(r.err.Error()+r.stdout+r.stderr, bogus) {
		t.Error("the token was printed")
	}
	reader, _, err := e.main.Service.CreateToken(context.Background(), "test", "reader", rotatord.ScopeRead)
	if err != nil {
		t.Fatal(err)
	}
	runCLIWith(t, "agents", "revoke", "nobody", "--url", e.main.URL(), "--token", reader).failed(t, "forbidden: ", "(HTTP 403)")

	// Nothing listens: the error names the URL.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String()
	l.Close()
	runCLIWith(t, "agents", "list", "--url", down, "--token", e.admin).failed(t, "cannot reach rotatord at "+down)
	// A proxy's error page is not the API's error.
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "<html>upstream \x1b[31mdown</html>", http.StatusBadGateway)
	}))
	defer proxy.Close()
	r = runCLIWith(t, "agents", "list", "--url", proxy.URL, "--token", e.admin)
	r.failed(t, "unexpected answer 502 Bad Gateway", "upstream", "(HTTP 502)")
	if strings.Contains(r.err.Error(), "\x1b") {
		t.Errorf("error %q carries a control character", r.err)
	}

	// A redirect is shown, not followed.
	redirect := httptest.NewServer(http.RedirectHandler("https://elsewhere.example/v1/agents", http.StatusMovedPermanently))
	defer redirect.Close()
	runCLIWith(t, "agents", "list", "--url", redirect.URL, "--token", e.admin).
		failed(t, "redirected to https://elsewhere.example/v1/agents", "(HTTP 301)")

	// Usage errors, before any request.
	for _, args := range [][]string{
		{"agents"}, {"agents", "bogus"}, {"agents", "show"}, {"agents", "show", "a", "b"},
		{"agents", "add", "kate"}, {"agents", "add", "--account", "fleet"},
		{"agents", "add", "kate", "--account", "fleet", "--delivery", "carrier-pigeon"},
		{"agents", "rotate"}, {"rotations", "list", "--agent", "kate", "--state", "completed"}, {"rotations", "show"}, {"audit", "list", "extra"},
		{"audit", "list", "--since", "yesterday"}, {"audit", "list", "--limit", "0"}, {"agents", "list", "-o", "yaml"},
	} {
		if r := runCLIWith(t, append(args, "--url", down, "--token", e.admin)...); r.err == nil || strings.Contains(r.err.Error(), "cannot reach") {
			t.Errorf("rotatord %s: err = %v, want a usage error", strings.Join(args, " "), r.err)
		}
	}
	runCLIWith(t, "agents", "add", "kate", "--account", "fleet", "--url", down, "--token", e.admin, "--token-file", "x").
		failed(t, "not both")

	// The environment, and a token file; -h never shows the token.
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(e.admin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ROTATORD_URL", e.main.URL())
	t.Setenv("ROTATORD_TOKEN", "")
	t.Setenv("ROTATORD_TOKEN_FILE", "")
	runCLIWith(t, "agents", "list").failed(t, "no API token")
	t.Setenv("ROTATORD_TOKEN_FILE", tokenFile)
	r = runCLIWith(t, "agents", "list", "-o", "json").ok(t)
	if agents := decodeJSON(t, r.stdout)["agents"].([]any); len(agents) != 0 {
		t.Errorf("agents = %v, want none", agents)
	}
	t.Setenv("ROTATORD_TOKEN", e.admin)
	r = runCLIWith(t, "agents", "list", "-h")
	if !errors.Is(r.err, flag.ErrHelp) || !strings.Contains(r.stderr, "-token-file") || strings.Contains(r.stderr, e.admin) {
		t.Errorf("agents list -h: %v\n%s", r.err, r.stderr)
	}
	r = runCLIWith(t, "agents", "help").ok(t)
	if !strings.Contains(r.stdout, "agents add NAME --account ACCOUNT") {
		t.Errorf("agents help:\n%s", r.stdout)
	}
}

// TLS: a private CA with --ca-file, and a client certificate for a rotatord
// behind mTLS.
func TestCLITLS(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	ca, caKey, caPEM := cliTestCA(t)
	clientCert, clientKey := cliTestLeaf(t, ca, caKey, x509.ExtKeyUsageClientAuth)
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	for f, b := range map[string][]byte{caFile: caPEM, certFile: clientCert, keyFile: clientKey} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	target, _ := url.Parse(e.main.URL())
	srv := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
	srv.StartTLS()
	defer srv.Close()
	srvCA := filepath.Join(dir, "server-ca.pem")
	if err := os.WriteFile(srvCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	base := []string{"agents", "list", "--url", srv.URL, "--token", e.admin}
	runCLIWith(t, base...).failed(t, "cannot reach rotatord at "+srv.URL, "--ca-file")
	runCLIWith(t, append(base, "--ca-file", srvCA)...).failed(t, "cannot reach rotatord at "+srv.URL)
	runCLIWith(t, append(base, "--ca-file", srvCA, "--client-cert-file", certFile)...).failed(t, "go together")
	runCLIWith(t, append(base, "--ca-file", srvCA, "--client-cert-file", certFile, "--client-key-file", keyFile)...).ok(t)
	t.Setenv("ROTATORD_CA_FILE", srvCA)
	t.Setenv("ROTATORD_CLIENT_CERT_FILE", certFile)
	t.Setenv("ROTATORD_CLIENT_KEY_FILE", keyFile)
	runCLIWith(t, base...).ok(t)
}

// --wait follows a rotation to its end: completed exits 0, rolled back
// exits non-zero, and --wait-timeout bounds the wait.
func TestCLIRotateWait(t *testing.T) {
	t.Parallel()
	e, clk := newClockedEnv(t)
	e.startNATS()
	e.waitNATS()
	a, _, _ := fleetAgent(e, "kate")
	ctx := context.Background()

	// rotateWait starts `agents rotate kate --wait` and returns the new
	// rotation's ID once it waits for the agent, and the run's result.
	rotateWait := func(n int, args ...string) (string, <-chan cliResult) {
		done := make(chan cliResult, 1)
		go func() { done <- e.runCLI(append([]string{"agents", "rotate", "kate", "--wait"}, args...)...) }()
		var id string
		eventually(t, 10*time.Second, "the rotation to be distributed", func() bool {
			rots := e.must(200, "GET", "/v1/agents/kate/rotations", nil)["rotations"].([]any)
			if len(rots) < n {
				return false
			}
			newest := rots[0].(map[string]any)
			id = newest["id"].(string)
			return newest["state"] == "distributed"
		})
		return id, done
	}

	id, done := rotateWait(1, "-o", "json")
	if got, err := a.Refresh(ctx); err != nil || !got {
		t.Fatalf("agent refresh = %v, %v; want new creds", got, err)
	}
	r := waitCLI(t, e, done).ok(t)
	rot := decodeJSON(t, r.stdout)
	if rot["id"] != id || rot["state"] != "completed" {
		t.Fatalf("rotate --wait -o json = %v, want %s completed", rot, id)
	}
	if !strings.Contains(r.stderr, "completed") {
		t.Errorf("rotate --wait stderr %q lacks the states", r.stderr)
	}
	// It says what it waits for, and until when.
	deadline, err := time.Parse(time.RFC3339, rot["deadline"].(string))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"waiting for agent kate to fetch its new credentials and reconnect with the new key " + rot["new_public_key"].(string),
		"rolls the rotation back if it has not by " + deadline.UTC().Format(time.RFC3339),
		"Ctrl-C stops waiting, not the rotation",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("rotate --wait stderr lacks %q:\n%s", want, r.stderr)
		}
	}

	id, done = rotateWait(2)
	clk.Advance(31 * time.Minute) // past the grace: the agent never fetched
	r = waitCLI(t, e, done)
	r.failed(t, "rotation "+id, "rolled back", "did not reconnect")
	if !strings.Contains(r.stdout, "rolled_back") {
		t.Errorf("rotate --wait printed no rotation:\n%s", r.stdout)
	}

	id, done = rotateWait(3, "--wait-timeout", "300ms")
	waitCLI(t, e, done).failed(t, "stopped waiting for rotation "+id, "distributed", "deadline exceeded")
}

// waitCLI waits for a CLI run, ticking e's scheduler meanwhile.
func waitCLI(t testing.TB, e *env, done <-chan cliResult) cliResult {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case r := <-done:
			return r
		case <-deadline:
			t.Fatal("the CLI did not return")
		case <-time.After(100 * time.Millisecond):
			if _, err := e.main.Service.Tick(context.Background()); err != nil {
				t.Fatalf("tick: %v", err)
			}
		}
	}
}

func TestCLIParseSince(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2026-11-20T08:00:00Z":      time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC),
		"2026-11-20T08:00:00+01:00": time.Date(2026, 11, 20, 7, 0, 0, 0, time.UTC),
		"2026-11-20":                time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC),
		"90m":                       now.Add(-90 * time.Minute),
		"7d":                        now.Add(-7 * 24 * time.Hour),
	} {
		if got, err := parseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "yesterday", "-1h", "xd", "2026-13-01"} {
		if _, err := parseSince(in, now); err == nil {
			t.Errorf("parseSince(%q) succeeded", in)
		}
	}
}

// cliTestCA makes a self-signed CA.
func cliTestCA(t testing.TB) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cli test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// cliTestLeaf makes a certificate signed by ca and returns it and its key as PEM.
func cliTestLeaf(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "operator"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// An agent may fetch and reconnect before the CLI's first poll: a wait that
// began on a distributed rotation still says what it waited for, even if
// the first state it sees is completed.
func TestCLIWaitSaysWhatItWaitedFor(t *testing.T) {
	t.Parallel()
	deadline := time.Now().Add(30 * time.Minute).UTC().Truncate(time.Second)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"id": "r1", "agent": "kate", "state": "completed",
			"new_public_key": "UNEWKEY", "deadline": deadline.Format(time.RFC3339)})
	}))
	defer srv.Close()
	var stderr strings.Builder
	c := &cli{stdout: io.Discard, stderr: &stderr}
	api := &apiClient{base: srv.URL, token: "t", timeout: 5 * time.Second, http: srv.Client()}
	_, rot, err := c.waitRotation(context.Background(), api, "r1", "distributed")
	if err != nil || rot.State != "completed" {
		t.Fatalf("wait = %+v, %v", rot, err)
	}
	for _, want := range []string{"waiting for agent kate to fetch its new credentials and reconnect with the new key UNEWKEY",
		"rotation r1 of agent kate: completed"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}
