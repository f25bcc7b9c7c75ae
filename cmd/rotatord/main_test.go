package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/apitest"
	"github.com/rotatord/rotatord/internal/natsrun"
	"github.com/rotatord/rotatord/internal/pgtest"
	"github.com/rotatord/rotatord/internal/resolver"
	"github.com/rotatord/rotatord/internal/seal"
)

func TestMain(m *testing.M) {
	if os.Getenv(natsChildEnv) != "" {
		runNATSChild()
		return
	}
	pgtest.Main(m)
}

// logBuffer collects a Main's logs and prints them if the test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// env is a running rotatord with its database, and optionally a nats-server.
type env struct {
	t        testing.TB
	dbURL    string
	keyFile  string
	natsPort int
	main     *Main
	logs     *logBuffer
	ns       *server.Server
	admin    string // admin token
	mod      func(*Config)
	http     *http.Client
}

// newEnv starts rotatord (init done) on a fresh database, with a NATS URL
// on a free port where nothing listens until startNATS.
func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvOn(t, pgtest.New(t))
}

// newEnvOn is newEnv on a given (empty) database.
func newEnvOn(t testing.TB, dbURL string) *env {
	t.Helper()
	return newEnvFull(t, dbURL, nil)
}

// newClockedEnv is an env on a clock of the test's (clk.Now), without the
// scheduler: the test ticks.
func newClockedEnv(t testing.TB) (*env, *clock) {
	t.Helper()
	clk := &clock{}
	return newEnvWith(t, func(c *Config) { c.Now, c.TickSpec = clk.Now, "" }), clk
}

// newEnvWith is newEnv with a changed configuration.
func newEnvWith(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	return newEnvFull(t, pgtest.New(t), mod)
}

// newBareEnv is an env with a master key and a NATS port, and nothing in
// its database yet.
func newBareEnv(t testing.TB, dbURL string) *env {
	t.Helper()
	e := &env{t: t, dbURL: dbURL, http: apitest.Client(t)}
	e.keyFile = filepath.Join(t.TempDir(), "master.key")
	if _, err := seal.WriteNewKeyFile(e.keyFile); err != nil {
		t.Fatal(err)
	}
	port, err := natsrun.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	e.natsPort = port
	return e
}

func newEnvFull(t testing.TB, dbURL string, mod func(*Config)) *env {
	t.Helper()
	e := newBareEnv(t, dbURL)
	cfg := e.config()
	store, svc, err := openService(context.Background(), cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.Init(context.Background(), "test", "test-op"); err != nil {
		t.Fatal(err)
	}
	e.admin, _, err = svc.CreateToken(context.Background(), "test", "admin", rotatord.ScopeAdmin)
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(&cfg)
	}
	e.mod = mod
	e.main = e.startMain(cfg)
	return e
}

func (e *env) config() Config {
	cfg := DefaultConfig()
	cfg.DatabaseURL = e.dbURL
	cfg.Listen = "127.0.0.1:0"
	cfg.MasterKeyFile = e.keyFile
	cfg.NATSURL = fmt.Sprintf("nats://127.0.0.1:%d", e.natsPort)
	cfg.ShutdownWait = 2 * time.Second
	cfg.NoJitter = true
	if e.mod != nil {
		e.mod(&cfg)
	}
	return cfg
}

// watchedConnect connects an agent with creds, reporting permission
// violations and disconnects with an error on the two channels.
func watchedConnect(e *env, creds string) (nc *nats.Conn, violations, dropped chan error, err error) {
	violations, dropped = make(chan error, 10), make(chan error, 10)
	nc, err = nats.Connect(e.ns.ClientURL(), nats.UserCredentials(writeCreds(e.t, creds)),
		nats.MaxReconnects(3), nats.ReconnectWait(50*time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				dropped <- err
			}
		}))
	return nc, violations, dropped, err
}

// waitRevokedDrop waits for a watchedConnect connection to be dropped with
// "authentication revoked".
func waitRevokedDrop(t testing.TB, dropped, violations <-chan error) {
	t.Helper()
	select {
	case <-dropped:
	case <-time.After(5 * time.Second):
		t.Fatal("client was not dropped after revoke")
	}
	for revoked := false; !revoked; {
		select {
		case err := <-violations:
			revoked = errors.Is(err, nats.ErrAuthRevoked)
		case <-time.After(5 * time.Second):
			t.Fatal("client was dropped without 'authentication revoked'")
		}
	}
}

// startMain runs another rotatord (a replica) on the same database.
func (e *env) startMain(cfg Config) *Main {
	e.t.Helper()
	logs := &logBuffer{}
	if e.logs == nil {
		e.logs = logs
	}
	m := NewMain()
	m.Config = cfg
	m.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := m.Run(context.Background()); err != nil {
		e.t.Fatalf("run rotatord: %v", err)
	}
	e.t.Cleanup(func() {
		m.Close()
		if e.t.Failed() {
			e.t.Logf("rotatord logs:\n%s", logs.String())
		}
	})
	return m
}

// startNATS starts a nats-server using the resolver of e.main.
func (e *env) startNATS() *server.Server {
	e.t.Helper()
	op, err := e.main.Store.Operator(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	ns, err := natsrun.Start(natsrun.Options{OperatorJWT: op.JWT, SystemAccount: op.SystemAccount,
		ResolverURL: e.main.URL() + "/jwt/v1/accounts/", Port: e.natsPort})
	if err != nil {
		e.t.Fatal(err)
	}
	e.ns = ns
	e.t.Cleanup(ns.Shutdown)
	return ns
}

// waitNATS waits until rotatord's own NATS connection is up.
func (e *env) waitNATS() {
	e.t.Helper()
	eventually(e.t, 10*time.Second, "rotatord connected to nats", func() bool { return e.main.NATS.Connected() })
}

func eventually(t testing.TB, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// do sends a request with the given token and JSON body (a string is sent
// as is) and returns the status and body.
func (e *env) do(method, path, token string, body any) (int, []byte) {
	e.t.Helper()
	return e.doAt(e.main, method, path, token, body)
}

// doRaw sends body with the given content type and the admin token.
func (e *env) doRaw(method, path, contentType, body string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.main.URL()+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+e.admin)
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (e *env) doAt(m *Main, method, path, token string, body any) (int, []byte) {
	e.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, m.URL()+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, out
}

// must sends a request and fails the test unless the status is want.
func (e *env) must(want int, method, path string, body any) map[string]any {
	e.t.Helper()
	status, out := e.do(method, path, e.admin, body)
	if status != want {
		e.t.Fatalf("%s %s = %d %s; want %d", method, path, status, out, want)
	}
	var m map[string]any
	if len(out) > 0 {
		if err := json.Unmarshal(out, &m); err != nil {
			e.t.Fatalf("%s %s: body %q: %v", method, path, out, err)
		}
	}
	return m
}

// writeCreds writes a creds file to a temp dir and returns its path.
func writeCreds(t testing.TB, creds string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.creds")
	if err := os.WriteFile(p, []byte(creds), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func createAgent(e *env, name, account string) (agent map[string]any, creds string) {
	e.t.Helper()
	agent = e.must(201, "POST", "/v1/agents", map[string]any{
		"name": name, "account": account,
		"permissions": map[string]any{
			"pub": map[string]any{"allow": []string{"orders.>", "_INBOX.>"}, "deny": []string{"orders.secret"}},
			"sub": map[string]any{"allow": []string{"orders.>", "_INBOX.>"}},
		},
		"rotation": map[string]any{"schedule": "@every 24h", "grace": "30m"},
		"delivery": "poll",
	})
	creds, _ = agent["creds"].(string)
	if !strings.Contains(creds, "BEGIN NATS USER JWT") || !strings.Contains(creds, "BEGIN USER NKEY SEED") {
		e.t.Fatalf("create agent: creds = %q, want a creds file", creds)
	}
	return agent, creds
}

func TestEndToEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startNATS()
	e.waitNATS()

	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet", "description": "the fleet"})
	agent, creds := createAgent(e, "kate", "fleet")
	if agent["state"] != "active" {
		t.Fatalf("agent state = %v, want active", agent["state"])
	}
	// The creds are handed out once: reads never carry them.
	got := e.must(200, "GET", "/v1/agents/kate", nil)
	if _, ok := got["creds"]; ok {
		t.Fatal("GET /v1/agents/kate returned creds")
	}

	nc, violations, dropped, err := watchedConnect(e, creds)
	if err != nil {
		t.Fatalf("agent connect with issued creds: %v", err)
	}
	defer nc.Close()

	sub, err := nc.SubscribeSync("orders.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("orders.new", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if msg, err := sub.NextMsg(2 * time.Second); err != nil || string(msg.Data) != "1" {
		t.Fatalf("allowed publish: got %v, %v; want the message back", msg, err)
	}
	if err := nc.Publish("orders.secret", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("billing.charge", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{"orders.secret", "billing.charge"} {
		select {
		case err := <-violations:
			if !strings.Contains(err.Error(), "Permissions Violation") || !strings.Contains(err.Error(), subj) {
				t.Fatalf("denied publish to %s: err = %v, want a permissions violation", subj, err)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("denied publish to %s: no permissions violation", subj)
		}
	}

	start := time.Now()
	rev := e.must(200, "POST", "/v1/agents/kate/revoke", map[string]any{"reason": "compromised"})
	if rev["pushed"] != true || rev["state"] != "revoked" {
		t.Fatalf("revoke = %v; want pushed and revoked", rev)
	}
	// The server sends -ERR 'User Authentication Revoked' and closes the
	// connection; nats.go reports the reason to the async error handler.
	waitRevokedDrop(t, dropped, violations)
	t.Logf("client dropped %s after the revoke request was sent", time.Since(start))
	if _, err := connectCreds(e, creds); err == nil {
		t.Fatal("revoked creds connected again")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("reconnect with revoked creds: %v, want an authorization violation", err)
	}
	eventually(t, 5*time.Second, "the client to give up", nc.IsClosed)

	// Every state change is in the audit trail, and no seed is.
	audit := e.must(200, "GET", "/v1/audit?agent=kate", nil)
	var actions []string
	for _, ev := range audit["events"].([]any) {
		actions = append(actions, ev.(map[string]any)["action"].(string))
	}
	for _, want := range []string{"agent.create", "credential.issue", "credential.revoke", "agent.revoke"} {
		if !contains(actions, want) {
			t.Errorf("audit actions %v lack %s", actions, want)
		}
	}
	raw, _ := json.Marshal(audit)
	if seed := seedOf(t, creds); bytes.Contains(raw, []byte(seed)) || strings.Contains(e.logs.String(), seed) {
		t.Error("the agent's seed appears in the audit trail or the logs")
	}
}

func newPublicKey(t testing.TB, kind nkeys.PrefixByte) string {
	t.Helper()
	kp, err := nkeys.CreatePair(kind)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return pub
}

// seedOf returns the user seed in a creds file.
// seedRE matches an NKey user seed as nkeys encodes it.
var seedRE = regexp.MustCompile(`SU[A-Z2-7]{56}`)

// hasSeed reports whether s holds a user seed or a creds file's seed block
// (a random JWT ID may contain the letters SEED, so those alone do not count).
func hasSeed(s string) bool {
	return seedRE.MatchString(s) || strings.Contains(s, "NKEY SEED")
}

func seedOf(t testing.TB, creds string) string {
	t.Helper()
	kp, err := jwt.ParseDecoratedUserNKey([]byte(creds))
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return string(seed)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// connectCreds connects to e's nats-server with a creds file, without retries.
func connectCreds(e *env, creds string) (*nats.Conn, error) {
	return nats.Connect(e.ns.ClientURL(), nats.UserCredentials(writeCreds(e.t, creds)), nats.MaxReconnects(0))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestResolver(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	acc := e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	pub := acc["public_key"].(string)

	get := func(m *Main, path string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", m.URL()+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get(e.main, "/jwt/v1/accounts/")
	if resp.StatusCode != 200 || body != "" {
		t.Fatalf("GET base = %d %q, want 200 empty", resp.StatusCode, body)
	}
	resp, body = get(e.main, "/jwt/v1/accounts/"+pub)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/jwt" {
		t.Fatalf("GET account = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	claims, err := jwt.DecodeAccountClaims(body)
	if err != nil || claims.Subject != pub {
		t.Fatalf("served jwt: %v, subject %v", err, claims)
	}
	if etag := resp.Header.Get("ETag"); etag != resolver.ETag(string(body)) {
		t.Fatalf("ETag = %s, want the hash of the jwt %s", etag, resolver.ETag(string(body)))
	}
	resp, _ = get(e.main, "/jwt/v1/accounts/"+pub, "If-None-Match", resolver.ETag(string(body)))
	if resp.StatusCode != 304 {
		t.Fatalf("If-None-Match = %d, want 304", resp.StatusCode)
	}
	op, _ := e.main.Store.Operator(context.Background())
	if _, body := get(e.main, "/jwt/v1/operator"); body != op.JWT {
		t.Fatal("GET /jwt/v1/operator is not the operator jwt")
	}
	for _, c := range []struct {
		key  string
		want int
	}{
		{newPublicKey(t, nkeys.PrefixByteAccount), 404}, // an account key rotatord does not know
		{"not-a-key", 400},
		{op.PublicKey, 400},                          // an operator key
		{newPublicKey(t, nkeys.PrefixByteUser), 400}, // a user key
		{pub + "X", 400},
		{pub[:55], 400},
		{strings.ToLower(pub), 400},
	} {
		if resp, _ := get(e.main, "/jwt/v1/accounts/"+c.key); resp.StatusCode != c.want {
			t.Errorf("GET account %q = %d, want %d", c.key, resp.StatusCode, c.want)
		}
	}

	// A second replica on the same database follows changes made on the
	// first through LISTEN/NOTIFY, without a restart.
	b := e.startMain(e.config())
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "later"})
	later := e.must(200, "GET", "/v1/accounts/later", nil)["public_key"].(string)
	eventually(t, 5*time.Second, "replica b to serve the new account", func() bool {
		resp, _ := get(b, "/jwt/v1/accounts/"+later)
		return resp.StatusCode == 200
	})
	createAgent(e, "kate", "fleet")
	e.must(200, "POST", "/v1/agents/kate/revoke", nil)
	// Not the jwt_id: two JWTs signed in the same second share it.
	_, newest := get(e.main, "/jwt/v1/accounts/"+pub)
	eventually(t, 5*time.Second, "replica b to serve the re-signed account", func() bool {
		resp, _ := get(b, "/jwt/v1/accounts/"+pub)
		return resp.Header.Get("ETag") == resolver.ETag(string(newest))
	})
	_, body = get(b, "/jwt/v1/accounts/"+pub)
	claims, _ = jwt.DecodeAccountClaims(body)
	if len(claims.Revocations) != 1 {
		t.Fatalf("replica b serves %d revocations, want 1", len(claims.Revocations))
	}
	e.must(204, "DELETE", "/v1/accounts/later", nil)
	eventually(t, 5*time.Second, "replica b to drop the deleted account", func() bool {
		resp, _ := get(b, "/jwt/v1/accounts/"+later)
		return resp.StatusCode == 404
	})
}
