package main

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/pkg/agent"
)

func TestAgentAPIRefusals(t *testing.T) {
	e := newEnvWith(t, func(c *Config) { c.TickSpec = "" })
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	_, kateCreds := createAgent(e, "kate", "fleet")
	_, bobCreds := createAgent(e, "bob", "fleet")
	_, goneCreds := createAgent(e, "gone", "fleet")
	kate, _ := jwt.ParseDecoratedUserNKey([]byte(kateCreds))
	bob, _ := jwt.ParseDecoratedUserNKey([]byte(bobCreds))
	gone, _ := jwt.ParseDecoratedUserNKey([]byte(goneCreds))
	e.must(200, "POST", "/v1/agents/gone/revoke", nil)
	stranger, _ := nkeys.CreateUser()

	get := func(path, auth string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("GET", e.main.URL()+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		n, _ := resp.Body.Read(buf)
		b.Write(buf[:n])
		return resp.StatusCode, b.String(), resp.Header
	}
	proof := func(kp nkeys.KeyPair, method, path string, at time.Time) string {
		req, _ := http.NewRequest(method, e.main.URL()+path, nil)
		agent.SignRequest(req, kp, at)
		return req.Header.Get("Authorization")
	}
	const path = "/v1/agents/kate/creds"
	now := time.Now()

	// A good proof works: no rotation in flight, so the caller is current.
	if status, body, _ := get(path, proof(kate, "GET", path, now)); status != 304 {
		t.Fatalf("good proof = %d %s, want 304", status, body)
	}
	replayed := proof(kate, "GET", path, now.Add(-time.Second))
	if status, _, _ := get(path, replayed); status != 304 {
		t.Fatalf("first use = %d", status)
	}
	badSig := func() string {
		h := proof(kate, "GET", path, now)
		i := strings.LastIndex(h, ":")
		sig, _ := base64.RawURLEncoding.DecodeString(h[i+1:])
		sig[0] ^= 0xff
		return h[:i+1] + base64.RawURLEncoding.EncodeToString(sig)
	}()
	cases := []struct {
		name, auth string
		status     int
		msg        string
	}{
		{"no proof", "", 401, "missing NKey proof"},
		{"bearer instead", "Bearer rtd_x", 401, "missing NKey proof"},
		{"malformed", "NKey garbage", 401, "malformed"},
		{"bad signature", badSig, 401, "bad proof signature"},
		{"signed for another path", proof(kate, "GET", "/v1/agents/bob/creds", now), 401, "bad proof signature"},
		{"signed for another method", proof(kate, "POST", path, now), 401, "bad proof signature"},
		{"stale", proof(kate, "GET", path, now.Add(-2*time.Minute)), 401, "more than 60s"},
		{"from the future", proof(kate, "GET", path, now.Add(2*time.Minute)), 401, "more than 60s"},
		{"replayed", replayed, 401, "replay"},
		{"another agent's key", proof(bob, "GET", path, now), 403, "not a key of this agent"},
		{"unknown key", proof(stranger, "GET", path, now), 403, "not a key of this agent"},
		{"revoked key", proof(gone, "GET", "/v1/agents/gone/creds", now), 403, "revoked"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := path
			if c.name == "revoked key" {
				p = "/v1/agents/gone/creds"
			}
			status, body, hdr := get(p, c.auth)
			if status != c.status || !strings.Contains(body, c.msg) {
				t.Fatalf("= %d %s; want %d with %q", status, body, c.status, c.msg)
			}
			if status == 401 && hdr.Get("WWW-Authenticate") != `NKey realm="rotatord"` {
				t.Fatalf("WWW-Authenticate = %q", hdr.Get("WWW-Authenticate"))
			}
		})
	}
	// Each refusal that got as far as naming a key is audited, with its reason.
	events, err := e.main.Store.ListAudit(t.Context(), rotatord.AuditFilter{Action: "agent.auth_failed", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]bool{}
	for _, ev := range events {
		reasons[ev.Details["reason"].(string)] = true
	}
	for _, want := range []string{"bad proof signature", "proof timestamp is more than 60s away from the server's clock",
		"proof already used (replay)", "key is not a key of this agent", "key is revoked"} {
		if !reasons[want] {
			t.Errorf("no audit event for %q (have %v)", want, reasons)
		}
	}
}
