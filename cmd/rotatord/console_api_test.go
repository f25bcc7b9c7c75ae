package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/rotate"
)

// names returns the agent names of a GET /v1/agents answer.
func names(t testing.TB, list map[string]any) []string {
	t.Helper()
	var out []string
	for _, a := range list["agents"].([]any) {
		out = append(out, a.(map[string]any)["name"].(string))
	}
	return out
}

// The reads the console makes, against a real rotatord with NATS: who the
// token is, the fleet's filters and each agent's last rotation, keys,
// revocation entries, alerts, the audit trail newest first, and the audit
// verification with anchors and after tampering. apitest checks every
// answer against api/openapi.yaml.
func TestConsoleAPI(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *Config) { c.MaxAccountJWTBytes = 100_000 })
	e.startNATS()
	e.waitNATS()
	ctx := context.Background()

	// done: a completed rotation; busy: one in flight; gone: revoked;
	// fresh, x_y and xzy: none.
	done, _, _ := fleetAgent(e, "done")
	oldKey := done.PublicKey()
	rot := e.must(202, "POST", "/v1/agents/done/rotate", nil)["id"].(string)
	if ok, err := done.Refresh(ctx); err != nil || !ok {
		t.Fatalf("refresh: %v %v", ok, err)
	}
	e.waitRotation(rot, "completed")
	createAgent(e, "busy", "fleet")
	busyRot := e.must(202, "POST", "/v1/agents/busy/rotate", nil)["id"].(string)
	createAgent(e, "gone", "fleet")
	e.must(200, "POST", "/v1/agents/gone/revoke", map[string]any{"reason": "lost laptop"})
	for _, n := range []string{"fresh", "x_y", "xzy"} {
		createAgent(e, n, "fleet")
	}

	t.Run("whoami", func(t *testing.T) {
		_, viewer := e.token("viewer", rotatord.ScopeRead)
		status, body := e.do("GET", "/v1/whoami", viewer, nil)
		var me map[string]any
		json.Unmarshal(body, &me) //nolint:errcheck // checked below
		if status != 200 || me["name"] != "viewer" || me["scope"] != "read" || me["expires_at"] != nil {
			t.Fatalf("whoami = %d %s", status, body)
		}
		// A token that expires says when, so the console can show it.
		secret, tok, err := e.main.Service.IssueToken(context.Background(), "test",
			rotate.TokenInput{Name: "shortlived", Scope: rotatord.ScopeRead, Expires: 48 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		status, body = e.do("GET", "/v1/whoami", secret, nil)
		json.Unmarshal(body, &me) //nolint:errcheck // checked below
		if at, _ := time.Parse(time.RFC3339, fmt.Sprint(me["expires_at"])); status != 200 || !at.Equal(tok.ExpiresAt.Truncate(time.Second)) {
			t.Fatalf("whoami of an expiring token = %d %s, want expires_at %s", status, body, tok.ExpiresAt)
		}
		if status, _ := e.do("GET", "/v1/whoami", "", nil); status != 401 {
			t.Fatalf("whoami without a token = %d, want 401", status)
		}
		if status, _ := e.do("GET", "/v1/whoami", "rtd_nope", nil); status != 401 {
			t.Fatalf("whoami with a bad token = %d, want 401", status)
		}
	})

	t.Run("fleet filters", func(t *testing.T) {
		for q, want := range map[string]string{
			"":                                   "busy done fresh gone x_y xzy",
			"?outcome=completed":                 "done",
			"?outcome=in_flight":                 "busy",
			"?outcome=rolled_back":               "",
			"?outcome=none":                      "fresh gone x_y xzy",
			"?outcome=completed,in_flight":       "busy done",
			"?state=revoked":                     "gone",
			"?state=active&outcome=none":         "fresh x_y xzy",
			"?search=US":                         "busy",
			"?search=x_y":                        "x_y", // '_' is a character, not a wildcard
			"?search=%25":                        "",
			"?search=o&limit=2":                  "done gone",
			"?search=o&limit=2&after=gone":       "",
			"?account=fleet&outcome=none":        "fresh gone x_y xzy",
			"?account=nowhere":                   "",
			"?search=" + strings.Repeat("a", 64): "",
		} {
			got := strings.Join(names(t, e.must(200, "GET", "/v1/agents"+q, nil)), " ")
			if got != want {
				t.Errorf("GET /v1/agents%s = %q, want %q", q, got, want)
			}
		}
		for _, q := range []string{"?outcome=bogus", "?outcome=completed,", "?state=paused", "?search=" + strings.Repeat("a", 65)} {
			if status, body := e.do("GET", "/v1/agents"+q, e.admin, nil); status != 400 {
				t.Errorf("GET /v1/agents%s = %d %s, want 400", q, status, body)
			}
		}
		last := e.must(200, "GET", "/v1/agents/done", nil)["last_rotation"].(map[string]any)
		if last["id"] != rot || last["state"] != "completed" || last["trigger"] != "manual" || last["finished_at"] == nil {
			t.Errorf("done's last_rotation = %v", last)
		}
		if got := e.must(200, "GET", "/v1/agents/fresh", nil)["last_rotation"]; got != nil {
			t.Errorf("fresh's last_rotation = %v, want null", got)
		}
		patched := e.must(200, "PATCH", "/v1/agents/busy", map[string]any{"rotation": map[string]any{"grace": "45m"}})
		if lr, _ := patched["last_rotation"].(map[string]any); lr == nil || lr["id"] != busyRot {
			t.Errorf("PATCH answer's last_rotation = %v, want %s", patched["last_rotation"], busyRot)
		}
	})

	t.Run("keys", func(t *testing.T) {
		keys := e.must(200, "GET", "/v1/agents/done/keys", nil)["keys"].([]any)
		if len(keys) != 2 {
			t.Fatalf("done has %d keys, want 2: %v", len(keys), keys)
		}
		newest, old := keys[0].(map[string]any), keys[1].(map[string]any)
		if newest["public_key"] != done.PublicKey() || newest["state"] != "active" || old["public_key"] != oldKey ||
			old["state"] != "retired" || old["revoked_at"] == nil {
			t.Errorf("keys = %v", keys)
		}
		page := e.must(200, "GET", "/v1/agents/done/keys?limit=1", nil)
		if page["next"] != done.PublicKey() {
			t.Fatalf("first page of one: next = %v", page["next"])
		}
		rest := e.must(200, "GET", "/v1/agents/done/keys?limit=1&after="+done.PublicKey(), nil)["keys"].([]any)
		if len(rest) != 1 || rest[0].(map[string]any)["public_key"] != oldKey {
			t.Errorf("second page = %v", rest)
		}
		_, body := e.do("GET", "/v1/agents/busy/keys", e.admin, nil)
		if strings.Contains(string(body), "SUA") || strings.Contains(string(body), "eyJ") {
			t.Errorf("keys answer holds a seed or a JWT: %s", body)
		}
		e.must(400, "GET", "/v1/agents/done/keys?after="+oldKey+"X", nil)
		e.must(404, "GET", "/v1/agents/nobody/keys", nil)
	})

	t.Run("revocations", func(t *testing.T) {
		revs := e.must(200, "GET", "/v1/accounts/fleet/revocations", nil)["revocations"].([]any)
		byKey := map[string]map[string]any{}
		for _, r := range revs {
			byKey[r.(map[string]any)["public_key"].(string)] = r.(map[string]any)
		}
		if r := byKey[oldKey]; r == nil || r["agent"] != "done" || r["reason"] != "rotated" {
			t.Errorf("done's old key entry = %v (all %v)", r, revs)
		}
		var goneEntry map[string]any
		for _, r := range byKey {
			if r["agent"] == "gone" {
				goneEntry = r
			}
		}
		if goneEntry == nil || goneEntry["reason"] != "lost laptop" {
			t.Errorf("gone's entry = %v", goneEntry)
		}
		first := e.must(200, "GET", "/v1/accounts/fleet/revocations?limit=1", nil)
		next, _ := first["next"].(string)
		second := e.must(200, "GET", "/v1/accounts/fleet/revocations?limit=1&after="+next, nil)["revocations"].([]any)
		if next == "" || len(second) != 1 || second[0].(map[string]any)["public_key"] == next {
			t.Errorf("pages: first %v, second %v", first, second)
		}
		e.must(400, "GET", "/v1/accounts/fleet/revocations?after="+newPublicKey(t, nkeys.PrefixByteUser), nil)
		e.must(404, "GET", "/v1/accounts/nowhere/revocations", nil)

		acc := e.must(200, "GET", "/v1/accounts/fleet", nil)
		_, served := e.do("GET", "/jwt/v1/accounts/"+acc["public_key"].(string), "", nil)
		if acc["jwt_bytes"] != float64(len(served)) || acc["jwt_max_bytes"] != float64(100_000) {
			t.Errorf("jwt_bytes %v, jwt_max_bytes %v; want %d and the configured 100000", acc["jwt_bytes"], acc["jwt_max_bytes"], len(served))
		}
	})

	t.Run("alerts", func(t *testing.T) {
		for i, sev := range []string{rotatord.SeverityInfo, rotatord.SeverityCritical, rotatord.SeverityWarning} {
			if err := e.main.Store.AddAlert(ctx, &rotatord.Alert{Kind: fmt.Sprintf("test_%d", i), Severity: sev, Agent: "done",
				Account: "fleet", Reason: "reason " + sev}); err != nil {
				t.Fatal(err)
			}
		}
		list := e.must(200, "GET", "/v1/alerts?kind=test_2", nil)["alerts"].([]any)
		if len(list) != 1 || list[0].(map[string]any)["severity"] != "warning" || list[0].(map[string]any)["rotation"] != nil {
			t.Fatalf("kind filter = %v", list)
		}
		all := e.must(200, "GET", "/v1/alerts?agent=done&account=fleet", nil)["alerts"].([]any)
		var ids []float64
		for _, a := range all {
			ids = append(ids, a.(map[string]any)["id"].(float64))
		}
		if len(ids) < 3 || ids[0] <= ids[1] || ids[1] <= ids[2] {
			t.Fatalf("alerts not newest first: %v", ids)
		}
		crit := e.must(200, "GET", "/v1/alerts?severity=critical", nil)["alerts"].([]any)
		if len(crit) != 1 || crit[0].(map[string]any)["kind"] != "test_1" {
			t.Errorf("severity filter = %v", crit)
		}
		page := e.must(200, "GET", "/v1/alerts?agent=done&limit=1", nil)
		rest := e.must(200, "GET", "/v1/alerts?agent=done&limit=2&after="+page["next"].(string), nil)["alerts"].([]any)
		if len(rest) != 2 || rest[0].(map[string]any)["id"].(float64) >= ids[0] {
			t.Errorf("after %v: %v", page["next"], rest)
		}
		for _, q := range []string{"?severity=loud", "?after=x", "?after=0", "?limit=0"} {
			e.must(400, "GET", "/v1/alerts"+q, nil)
		}
	})

	t.Run("audit newest first", func(t *testing.T) {
		page := e.must(200, "GET", "/v1/audit?order=desc&limit=5", nil)
		evs := page["events"].([]any)
		if len(evs) != 5 {
			t.Fatalf("%d events", len(evs))
		}
		last := evs[0].(map[string]any)["id"].(float64)
		for _, ev := range evs[1:] {
			id := ev.(map[string]any)["id"].(float64)
			if id >= last {
				t.Fatalf("events not newest first: %v", evs)
			}
			last = id
		}
		more := e.must(200, "GET", "/v1/audit?order=desc&limit=5&after="+page["next"].(string), nil)["events"].([]any)
		if len(more) == 0 || more[0].(map[string]any)["id"].(float64) >= last {
			t.Errorf("second page starts at %v after %v", more, last)
		}
		revokes := e.must(200, "GET", "/v1/audit?order=desc&action=agent.revoke", nil)["events"].([]any)
		if len(revokes) != 1 || revokes[0].(map[string]any)["agent"] != "gone" {
			t.Errorf("agent.revoke events = %v", revokes)
		}
		e.must(400, "GET", "/v1/audit?order=sideways", nil)
	})

	t.Run("verify", func(t *testing.T) {
		// The sealer seals every second; wait for a chain that covers the
		// events so far.
		var v map[string]any
		eventually(t, 20*time.Second, "a sealed, verified trail", func() bool {
			v = e.must(200, "GET", "/v1/audit/verify?max_age=0", nil)
			return v["ok"] == true && v["head"].(map[string]any)["seq"].(float64) > 10
		})
		head := v["head"].(map[string]any)
		anchor := fmt.Sprintf("%.0f:%s", head["seq"], head["hash"])
		stdout, _, err := auditVerify(e, "--anchor", anchor)
		if err != nil || !strings.HasPrefix(stdout, "ok:") {
			t.Fatalf("the CLI with the API's head as anchor: %q %v", stdout, err)
		}
		again := e.must(200, "GET", "/v1/audit/verify", nil)
		if again["finished_at"] != v["finished_at"] {
			t.Errorf("a second call within max_age ran again: %v then %v", v["finished_at"], again["finished_at"])
		}
		ok := e.must(200, "GET", "/v1/audit/verify?max_age=0&anchor="+url.QueryEscape(anchor), nil)
		if ok["ok"] != true || len(ok["anchors"].([]any)) != 1 {
			t.Errorf("verify with the head as anchor = %v", ok)
		}
		wrong := fmt.Sprintf("%.0f:%s", head["seq"], strings.Repeat("0", 64))
		bad := e.must(200, "GET", "/v1/audit/verify?max_age=0&anchor="+wrong, nil)
		if bad["ok"] != false || !strings.Contains(fmt.Sprint(bad["problems"]), "anchor_mismatch") {
			t.Errorf("verify with a wrong anchor = %v", bad)
		}
		e.must(400, "GET", "/v1/audit/verify?anchor=nope", nil)

		// An event rewritten behind rotatord's back.
		tamper(e, "UPDATE audit_events SET details = '{\"reason\":\"nothing to see\"}' WHERE action = 'agent.revoke'")
		broken := e.must(200, "GET", "/v1/audit/verify?max_age=0", nil)
		if broken["ok"] != false || !strings.Contains(fmt.Sprint(broken["problems"]), "changed") {
			t.Errorf("verify after tampering = %v", broken)
		}
	})
}

// The console is served over HTTPS without a client certificate (the
// files are public), while every API call it makes needs one when the
// admin API asks for them, and the security headers hold on both.
func TestConsoleOverMTLS(t *testing.T) {
	t.Parallel()
	e, pki := newTLSEnv(t, true)
	anon := pki.httpClient("")
	base := e.main.URL()

	get := func(c *http.Client, path, token string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get(anon, "/ui/", "")
	if resp.StatusCode != 200 || !strings.Contains(body, `<script type="module" src="app.js">`) {
		t.Fatalf("GET /ui/ without a client certificate = %d %.200q", resp.StatusCode, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") ||
		resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("console headers: %v", resp.Header)
	}
	if resp, _ := get(anon, "/ui/app.js", ""); resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Errorf("GET /ui/app.js = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// The redirects to the console.
	noFollow := *anon
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, p := range []string{"/", "/ui"} {
		if resp, _ := get(&noFollow, p, ""); resp.StatusCode != 302 || resp.Header.Get("Location") != "/ui/" {
			t.Errorf("GET %s = %d to %q, want 302 to /ui/", p, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	// The API the console calls: a certificate is needed besides the token.
	resp, body = get(anon, "/v1/whoami", e.admin)
	if resp.StatusCode != 403 || !strings.Contains(body, "client certificate") {
		t.Fatalf("whoami without a client certificate = %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("API headers: %v", resp.Header)
	}
	resp, body = get(e.http, "/v1/whoami", e.admin)
	if resp.StatusCode != 200 || !strings.Contains(body, `"scope":"admin"`) {
		t.Fatalf("whoami with a client certificate = %d %s", resp.StatusCode, body)
	}
}
