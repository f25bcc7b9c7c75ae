package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord/internal/httpapi"
	"github.com/rotatord/rotatord/internal/pglocal"
	"github.com/rotatord/rotatord/internal/resolver"
	"github.com/rotatord/rotatord/pkg/agent"
)

// apiCall is one request to an API route.
type apiCall struct {
	method, path string
	agentProof   bool // signed by the agent instead of the admin token
}

var routeParam = regexp.MustCompile(`\{[^}]+\}`)

// apiCalls returns a call to every /v1 route of m's router: parameters
// filled with the given agent and rotation, token routes with the admin
// token, the agents' own creds routes with a valid proof of the agent's key.
func apiCalls(t *testing.T, m *Main, agentName, rotationID string) []apiCall {
	t.Helper()
	srv, ok := m.http.Handler.(*httpapi.Server)
	if !ok {
		t.Fatalf("handler is %T, want *httpapi.Server", m.http.Handler)
	}
	var calls []apiCall
	err := chi.Walk(srv.Routes(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if !strings.HasPrefix(route, "/v1/") {
			return nil
		}
		path := routeParam.ReplaceAllStringFunc(route, func(p string) string {
			if p == "{id}" {
				return rotationID
			}
			return agentName
		})
		calls = append(calls, apiCall{method: method, path: path, agentProof: strings.HasSuffix(route, "/creds")})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return calls
}

// send makes one call; for agent calls it signs with the agent's key (and
// a new key's proof for the own-key POST), so that they pass every check
// made before the database.
func (e *env) send(m *Main, c apiCall, a *agent.Client) (*http.Response, []byte, error) {
	var body io.Reader
	now := time.Now()
	if c.method == http.MethodPost || c.method == http.MethodPatch || c.method == http.MethodPut {
		b := []byte(`{}`)
		if c.agentProof {
			next, err := nkeys.CreateUser()
			if err != nil {
				return nil, nil, err
			}
			if b, err = agent.OwnKeyBody(next, "kate", now.Unix()); err != nil {
				return nil, nil, err
			}
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(c.method, m.URL()+c.path, body)
	if err != nil {
		return nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.agentProof {
		kp, err := jwt.ParseDecoratedUserNKey(a.CredsFile())
		if err != nil {
			return nil, nil, err
		}
		if err := agent.SignRequest(req, kp, now); err != nil {
			return nil, nil, err
		}
	} else {
		req.Header.Set("Authorization", "Bearer "+e.admin)
	}
	client := &http.Client{Transport: e.http.Transport, Timeout: 20 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp, out, err
}

// everyCallUnavailable makes every API call at once and checks that each
// answers 503 unavailable, without internals, within within.
func (e *env) everyCallUnavailable(t *testing.T, m *Main, calls []apiCall, a *agent.Client, within time.Duration, when string) {
	t.Helper()
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			resp, body, err := e.send(m, c, a)
			took := time.Since(start)
			if err != nil {
				t.Errorf("%s: %s %s: no answer after %s: %v", when, c.method, c.path, took, err)
				return
			}
			var eb struct{ Error, Code string }
			json.Unmarshal(body, &eb)
			if resp.StatusCode != 503 || eb.Code != "unavailable" || eb.Error != "database unavailable" {
				t.Errorf("%s: %s %s = %d %s; want 503 unavailable", when, c.method, c.path, resp.StatusCode, body)
			}
			if took > within {
				t.Errorf("%s: %s %s answered after %s, want within %s", when, c.method, c.path, took, within)
			}
		}()
	}
	wg.Wait()
}

// PostgreSQL frozen (every process stopped with SIGSTOP, as a dropped
// network looks) and then stopped: every API call, token authentication and
// the agents' API included, answers 503 within the database deadline, the
// resolver keeps answering from memory, and once PostgreSQL is back
// rotatord recovers without a restart: API, resolver refresh on another
// replica, scheduler.
func TestDatabaseFrozenAndStopped(t *testing.T) {
	dir, err := os.MkdirTemp("", "rotatord-pgout-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx := context.Background()
	pg, err := pglocal.Start(ctx, pglocal.Options{Dir: dir, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop() })
	if err := pg.CreateDatabase(ctx, "rotatord"); err != nil {
		t.Fatal(err)
	}
	const deadline = time.Second
	e := newEnvFull(t, pg.URL("rotatord"), func(c *Config) { c.DBTimeout = deadline })
	replica := e.startMain(e.config())
	e.startNATS()
	e.waitNATS()
	a, _, _ := fleetAgent(e, "kate")
	pub := e.must(200, "GET", "/v1/accounts/fleet", nil)["public_key"].(string)
	calls := apiCalls(t, e.main, "kate", "6f1c2b9e-4d3a-4f5e-9a7b-2c8d1e0f3a45")
	if len(calls) < 15 {
		t.Fatalf("only %d api routes found", len(calls))
	}
	resolverOK := func(m *Main, when string) {
		t.Helper()
		if status, body := e.doAt(m, "GET", "/jwt/v1/accounts/"+pub, "", nil); status != 200 || !strings.HasPrefix(string(body), "eyJ") {
			t.Fatalf("%s: resolver = %d %.40s; want the cached jwt", when, status, body)
		}
	}
	// "A little" past the deadline, generous for a busy machine.
	within := deadline + 4*time.Second

	if err := pg.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			if err := pg.Signal(syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(thaw) // before the cluster is stopped
	e.everyCallUnavailable(t, e.main, calls, a, within, "postgres frozen")
	resolverOK(e.main, "postgres frozen")
	thaw()
	eventually(t, 20*time.Second, "the api to answer after postgres thawed", func() bool {
		status, _, err := e.try("GET", "/v1/agents/kate", nil)
		return err == nil && status == 200
	})

	// Connections in the pool, then PostgreSQL stopped under them: the
	// first calls find them broken.
	var wg sync.WaitGroup
	for range 12 {
		wg.Add(1)
		go func() { defer wg.Done(); e.try("GET", "/v1/agents/kate", nil) }()
	}
	wg.Wait()
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	e.everyCallUnavailable(t, e.main, calls, a, within, "postgres stopped")
	resolverOK(e.main, "postgres stopped")
	resolverOK(replica, "postgres stopped")
	if t.Failed() {
		return
	}

	pg2, err := pglocal.Start(ctx, pglocal.Options{Dir: dir, Port: pg.Port(), Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg2.Stop() })
	eventually(t, 20*time.Second, "the api to answer after postgres came back", func() bool {
		status, _, err := e.try("GET", "/v1/agents/kate", nil)
		return err == nil && status == 200
	})
	// The other replica's resolver follows a change again (LISTEN/NOTIFY).
	e.must(200, "PATCH", "/v1/accounts/fleet", map[string]any{"description": "after the outage"})
	_, newest := e.do("GET", "/jwt/v1/accounts/"+pub, "", nil)
	eventually(t, 20*time.Second, "the replica's resolver to serve the changed account", func() bool {
		req, _ := http.NewRequest("GET", replica.URL()+"/jwt/v1/accounts/"+pub, nil)
		resp, err := e.http.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.Header.Get("ETag") == resolver.ETag(string(newest))
	})
	// The scheduler rotates a due agent again.
	if _, err := e.main.Store.Pool().Exec(ctx, `UPDATE agents SET next_rotation_at = now() - interval '1 second' WHERE name = 'kate'`); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the scheduler to start a rotation", func() bool {
		rots, _ := e.must(200, "GET", "/v1/agents/kate/rotations", nil)["rotations"].([]any)
		for _, r := range rots {
			if r.(map[string]any)["trigger"] == "schedule" {
				return true
			}
		}
		return false
	})
}

// ROTATORD_DB_TIMEOUT and ROTATORD_SERVER_FORGET_AFTER, and their flags.
func TestPropagationConfig(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	cfg := DefaultConfig()
	if cfg.DBTimeout != 5*time.Second || cfg.ServerForgetAfter != 15*time.Minute {
		t.Fatalf("defaults = %s, %s; want 5s, 15m", cfg.DBTimeout, cfg.ServerForgetAfter)
	}
	cfg.fromEnv(env(map[string]string{"ROTATORD_DB_TIMEOUT": "2s", "ROTATORD_SERVER_FORGET_AFTER": "1h"}))
	if cfg.DBTimeout != 2*time.Second || cfg.ServerForgetAfter != time.Hour || cfg.Validate() != nil {
		t.Fatalf("from env = %s, %s, %v; want 2s, 1h, valid", cfg.DBTimeout, cfg.ServerForgetAfter, cfg.Validate())
	}
	for vars, want := range map[[2]string]string{
		{"soon", ""}:   `ROTATORD_DB_TIMEOUT="soon" is not a duration`,
		{"", "15"}:     `ROTATORD_SERVER_FORGET_AFTER="15" is not a duration`,
		{"10ms", ""}:   "database timeout 10ms must be between 100ms and 5m",
		{"10m", ""}:    "database timeout 10m0s must be between 100ms and 5m",
		{"", "30s"}:    "server forget interval 30s must be at least 1m",
		{"-1s", "-1m"}: "must be at least 1m",
	} {
		cfg := DefaultConfig()
		cfg.fromEnv(env(map[string]string{"ROTATORD_DB_TIMEOUT": vars[0], "ROTATORD_SERVER_FORGET_AFTER": vars[1]}))
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("env %q: Validate = %v, want %q", vars, err, want)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--db-timeout", "1ms"}, "database timeout 1ms"},
		{[]string{"--server-forget-after", "10s"}, "server forget interval 10s"},
	} {
		args := append([]string{"serve", "--database-url", "postgres://127.0.0.1:1/x", "--master-key-file", "/nonexistent"}, c.args...)
		var stderr strings.Builder
		if err := run(context.Background(), args, io.Discard, &stderr); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("serve %v = %v, want an error naming %q", c.args, err, c.want)
		}
	}
}

// ROTATORD_ALERT_RETENTION and its flag.
func TestAlertRetentionConfig(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	cfg := DefaultConfig()
	if cfg.AlertRetention != 30*24*time.Hour {
		t.Fatalf("default = %s; want 720h", cfg.AlertRetention)
	}
	cfg.fromEnv(env(map[string]string{"ROTATORD_ALERT_RETENTION": "2160h"}))
	if cfg.AlertRetention != 90*24*time.Hour || cfg.Validate() != nil {
		t.Fatalf("from env = %s, %v; want 2160h, valid", cfg.AlertRetention, cfg.Validate())
	}
	for v, want := range map[string]string{
		"forever": `ROTATORD_ALERT_RETENTION="forever" is not a duration`,
		"10m":     "alert retention 10m0s must be at least 1h",
	} {
		cfg := DefaultConfig()
		cfg.fromEnv(env(map[string]string{"ROTATORD_ALERT_RETENTION": v}))
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("env %q: Validate = %v, want %q", v, err, want)
		}
	}
	args := []string{"serve", "--database-url", "postgres://127.0.0.1:1/x", "--master-key-file", "/nonexistent", "--alert-retention", "1m"}
	if err := run(context.Background(), args, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "alert retention 1m0s") {
		t.Errorf("serve --alert-retention 1m = %v, want an error naming the retention", err)
	}
}
