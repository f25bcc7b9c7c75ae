package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/rotatord/rotatord/pkg/agent"
)

// fleetAgent creates account "fleet" (unless it exists) and an agent in it,
// and connects the agent through pkg/agent.
func fleetAgent(e *env, name string) (*agent.Client, *nats.Conn, string) {
	e.t.Helper()
	if status, _ := e.do("GET", "/v1/accounts/fleet", e.admin, nil); status == 404 {
		e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	}
	_, creds := createAgent(e, name, "fleet")
	a, err := agent.New(agent.Config{Server: e.main.URL(), Name: name, Creds: []byte(creds)})
	if err != nil {
		e.t.Fatal(err)
	}
	nc, err := a.Connect(e.ns.ClientURL())
	if err != nil {
		e.t.Fatalf("agent %s connect: %v", name, err)
	}
	e.t.Cleanup(nc.Close)
	return a, nc, creds
}

func (e *env) rotation(id string) map[string]any {
	e.t.Helper()
	return e.must(200, "GET", "/v1/rotations/"+id, nil)
}

func (e *env) waitRotation(id, state string) map[string]any {
	e.t.Helper()
	var r map[string]any
	eventually(e.t, 15*time.Second, "rotation "+id+" to be "+state, func() bool {
		r = e.rotation(id)
		return r["state"] == state
	})
	return r
}

// accountRevokes reports whether the account JWT that the resolver serves
// revokes key's JWT issued at iat.
func (e *env) accountRevokes(account, key string, iat int64) bool {
	e.t.Helper()
	pub := e.must(200, "GET", "/v1/accounts/"+account, nil)["public_key"].(string)
	_, body := e.do("GET", "/jwt/v1/accounts/"+pub, "", nil)
	ac, err := jwt.DecodeAccountClaims(string(body))
	if err != nil {
		e.t.Fatal(err)
	}
	uc := jwt.NewUserClaims(key)
	uc.IssuedAt = iat
	return ac.IsClaimRevoked(uc)
}

func TestManualRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startNATS()
	e.waitNATS()
	a, nc, oldCreds := fleetAgent(e, "kate")
	oldKey := a.PublicKey()
	var rotated atomic.Value
	sub, err := nc.SubscribeSync("orders.in")
	if err != nil {
		t.Fatal(err)
	}

	started := e.must(202, "POST", "/v1/agents/kate/rotate", nil)
	id := started["id"].(string)
	if started["state"] != "distributed" {
		t.Fatalf("rotate = %v, want distributed", started)
	}
	// One rotation per agent at a time.
	e.must(409, "POST", "/v1/agents/kate/rotate", nil)
	// The old key still works until the new one is confirmed.
	if c, err := connectCreds(e, oldCreds); err != nil {
		t.Fatalf("old creds refused before confirmation: %v", err)
	} else {
		c.Close()
	}

	got, err := a.Refresh(context.Background())
	if err != nil || !got {
		t.Fatalf("agent refresh = %v, %v; want new creds", got, err)
	}
	rotated.Store(a.PublicKey())
	if a.PublicKey() == oldKey {
		t.Fatal("agent key did not change")
	}
	r := e.waitRotation(id, "completed")
	if r["new_public_key"] != a.PublicKey() || r["old_public_key"] != oldKey || r["confirmed_by"] != "event" {
		t.Fatalf("rotation = %v", r)
	}
	if again, err := a.Refresh(context.Background()); err != nil || again {
		t.Fatalf("second refresh = %v, %v; want not modified", again, err)
	}
	// The agent kept its subscription across the reconnect.
	eventually(t, 5*time.Second, "agent connected", nc.IsConnected)
	nc.Publish("orders.in", []byte("after"))
	if m, err := sub.NextMsg(3 * time.Second); err != nil || string(m.Data) != "after" {
		t.Fatalf("subscription after rotation: %v, %v", m, err)
	}
	// The old key is revoked: in the account JWT, and by the server.
	oldJWT, _ := jwt.ParseDecoratedJWT([]byte(oldCreds))
	oldClaims, _ := jwt.DecodeUserClaims(oldJWT)
	// Re-signs are at least 5 s apart (a tick may have re-signed just
	// before the rotation completed): wait longer than that.
	eventually(t, 20*time.Second, "the account jwt to revoke the old key", func() bool {
		return e.accountRevokes("fleet", oldKey, oldClaims.IssuedAt)
	})
	eventually(t, 5*time.Second, "the old creds to be refused", func() bool {
		c, err := connectCreds(e, oldCreds)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	agentNow := e.must(200, "GET", "/v1/agents/kate", nil)
	if agentNow["credential"].(map[string]any)["public_key"] != a.PublicKey() {
		t.Fatalf("agent credential = %v, want the new key", agentNow["credential"])
	}
	rots := e.must(200, "GET", "/v1/agents/kate/rotations", nil)["rotations"].([]any)
	if len(rots) != 1 || rots[0].(map[string]any)["id"] != id {
		t.Fatalf("rotations = %v", rots)
	}
	var actions []string
	for _, ev := range e.must(200, "GET", "/v1/audit?agent=kate", nil)["events"].([]any) {
		actions = append(actions, ev.(map[string]any)["action"].(string))
	}
	for _, want := range []string{"rotation.start", "credential.issue", "credential.deliver", "credential.fetch", "rotation.confirm", "credential.revoke", "rotation.complete"} {
		if !contains(actions, want) {
			t.Errorf("audit %v lacks %s", actions, want)
		}
	}
	e.must(404, "GET", "/v1/rotations/6f1c2b9e-4d3a-4f5e-9a7b-2c8d1e0f3a45", nil)
	e.must(404, "GET", "/v1/rotations/not-a-uuid", nil)
}

// A scheduled rotation happens with no API call: the cron tick starts it
// and the agent's own polling completes it.
func TestScheduledRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startNATS()
	e.waitNATS()
	a, _, _ := fleetAgent(e, "kate")
	oldKey := a.PublicKey()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx, 100*time.Millisecond)

	// Make the agent due, as if its 24 h had passed.
	if _, err := e.main.Store.Pool().Exec(ctx, `UPDATE agents SET next_rotation_at = now() - interval '1 second' WHERE name = 'kate'`); err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	eventually(t, 20*time.Second, "a scheduled rotation to complete", func() bool {
		rots := e.must(200, "GET", "/v1/agents/kate/rotations", nil)["rotations"].([]any)
		if len(rots) == 0 {
			return false
		}
		r = rots[0].(map[string]any)
		return r["state"] == "completed"
	})
	if r["trigger"] != "schedule" || r["old_public_key"] != oldKey || a.PublicKey() == oldKey {
		t.Fatalf("rotation = %v, agent key %s", r, a.PublicKey())
	}
	next, _ := time.Parse(time.RFC3339, e.must(200, "GET", "/v1/agents/kate", nil)["next_rotation_at"].(string))
	if d := time.Until(next); d < 23*time.Hour || d > 25*time.Hour {
		t.Fatalf("next rotation in %s, want about 24h", d)
	}
}

// webhook records alerts; it answers 503 to the first failFirst calls.
type webhook struct {
	mu        sync.Mutex
	failFirst int
	calls     int
	alerts    []map[string]any
}

func (h *webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if h.calls <= h.failFirst {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var a map[string]any
	json.Unmarshal(body, &a)
	h.alerts = append(h.alerts, a)
}

func (h *webhook) received() []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]any(nil), h.alerts...)
}

// clock is a test clock that can be moved forward.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// An agent that never reconnects is rolled back, keeps working on its old
// creds, and the alert reaches a webhook that was down at first.
func TestRollbackAndAlert(t *testing.T) {
	t.Parallel()
	hook := &webhook{failFirst: 2}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	clk := &clock{}
	e := newEnvWith(t, func(c *Config) {
		c.AlertWebhook = srv.URL + "/alerts?token=s3cret"
		c.Now = clk.Now
		c.TickSpec = "" // the test ticks
	})
	e.startNATS()
	e.waitNATS()
	a, nc, oldCreds := fleetAgent(e, "kate")
	// Alerts go out in the system account, where operators listen.
	sysJWT, sysKey, err := e.main.Service.MintSystemUser(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sysConn, err := nats.Connect(e.ns.ClientURL(), nats.UserJWT(
		func() (string, error) { return sysJWT, nil }, sysKey.Sign))
	if err != nil {
		t.Fatal(err)
	}
	defer sysConn.Close()
	alerts, err := sysConn.SubscribeSync("rotatord.alerts.>")
	if err != nil {
		t.Fatal(err)
	}
	sysConn.Flush()
	id := e.must(202, "POST", "/v1/agents/kate/rotate", nil)["id"].(string)

	// The agent fetches the new creds but never reconnects with them.
	newCreds := fetchCreds(t, e, a)
	clk.Advance(31 * time.Minute)
	if _, err := e.main.Service.Tick(context.Background()); err != nil {
		t.Fatalf("tick: %v", err)
	}
	r := e.rotation(id)
	if r["state"] != "rolled_back" || !strings.Contains(r["reason"].(string), "did not reconnect") {
		t.Fatalf("rotation after deadline = %v", r)
	}
	// The old creds still work; the new ones are revoked.
	if c, err := connectCreds(e, oldCreds); err != nil {
		t.Fatalf("old creds refused after rollback: %v", err)
	} else {
		c.Close()
	}
	eventually(t, 5*time.Second, "the new creds to be refused", func() bool {
		c, err := connectCreds(e, newCreds)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if !nc.IsConnected() {
		t.Fatal("the agent lost its connection")
	}
	// The alert reaches the webhook despite its first failures.
	for i := 0; i < 20 && len(hook.received()) == 0; i++ {
		clk.Advance(10 * time.Second)
		e.main.Alerts.Dispatch(context.Background())
		time.Sleep(50 * time.Millisecond)
	}
	got := hook.received()
	if len(got) != 1 {
		t.Fatalf("webhook got %d alerts after %d calls, want 1", len(got), hook.calls)
	}
	al := got[0]
	if al["agent"] != "kate" || al["account"] != "fleet" || al["rotation"] != id || al["severity"] != "warning" ||
		!strings.Contains(al["reason"].(string), "did not reconnect") || al["kind"] != "rotation_rolled_back" {
		t.Fatalf("alert = %v", al)
	}
	if hook.calls != 3 {
		t.Fatalf("webhook calls = %d, want 2 failures then 1 success", hook.calls)
	}
	if m, err := alerts.NextMsg(3 * time.Second); err != nil || !strings.Contains(string(m.Data), id) {
		t.Fatalf("alert on nats: %v, %v", m, err)
	}
	if strings.Contains(e.logs.String(), "s3cret") {
		t.Fatal("the webhook URL's token is in the logs")
	}
	// The agent is retried with backoff, not at once.
	next, _ := time.Parse(time.RFC3339, e.must(200, "GET", "/v1/agents/kate", nil)["next_rotation_at"].(string))
	if d := next.Sub(clk.Now()); d < 30*time.Second || d > 2*time.Minute {
		t.Fatalf("retry in %s, want about 1m", d)
	}
}

// fetchCreds polls rotatord for the agent's new creds without using them.
func fetchCreds(t testing.TB, e *env, a *agent.Client) string {
	t.Helper()
	req, _ := http.NewRequest("GET", e.main.URL()+"/v1/agents/kate/creds", nil)
	kp, _ := jwt.ParseDecoratedUserNKey(a.CredsFile())
	if err := agent.SignRequest(req, kp, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("fetch creds = %d %s", resp.StatusCode, body)
	}
	return string(body)
}
