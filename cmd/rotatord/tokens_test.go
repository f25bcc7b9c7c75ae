package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// tokenAnswer is the body of POST /v1/tokens.
type tokenAnswer struct {
	Name      string     `json:"name"`
	Scope     string     `json:"scope"`
	State     string     `json:"state"`
	ExpiresAt *time.Time `json:"expires_at"`
	Token     string     `json:"token"`
}

// createToken makes a token over the API with e's admin token.
func (e *env) createToken(name, scope, expires string) tokenAnswer {
	e.t.Helper()
	body := map[string]any{"name": name, "scope": scope}
	if expires != "" {
		body["expires"] = expires
	}
	status, out := e.do("POST", "/v1/tokens", e.admin, body)
	if status != 201 {
		e.t.Fatalf("POST /v1/tokens %s = %d %s", name, status, out)
	}
	var a tokenAnswer
	if err := json.Unmarshal(out, &a); err != nil {
		e.t.Fatal(err)
	}
	return a
}

// statusWith is the status of GET path on m with token.
func (e *env) statusWith(m *Main, token, path string) int {
	e.t.Helper()
	status, _ := e.doAt(m, "GET", path, token, nil)
	return status
}

// Tokens over REST: created once with an expiry, listed without secrets,
// revoked and expired tokens refused on every replica from the next request
// on, the last admin token kept, every change audited.
func TestTokensAPI(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	e := newEnvWith(t, func(c *Config) { c.Now = clk.Now })
	b := e.startMain(e.config()) // a second replica on the same database

	// Created: the secret once, not cacheable; it works on both replicas
	// within its scope.
	req, _ := http.NewRequest("POST", e.main.URL()+"/v1/tokens", strings.NewReader(`{"name":"dash","scope":"read","expires":"1h"}`))
	req.Header.Set("Authorization", "Bearer "+e.admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var dash tokenAnswer
	if err := json.NewDecoder(resp.Body).Decode(&dash); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 || resp.Header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(dash.Token, "rtd_") {
		t.Fatalf("POST /v1/tokens = %d (Cache-Control %q) %+v", resp.StatusCode, resp.Header.Get("Cache-Control"), dash)
	}
	if dash.State != "active" || dash.ExpiresAt == nil || dash.ExpiresAt.Sub(clk.Now()) > time.Hour || dash.ExpiresAt.Sub(clk.Now()) < 59*time.Minute {
		t.Fatalf("dash = %+v, want active, expiring in an hour", dash)
	}
	for _, m := range []*Main{e.main, b} {
		if got := e.statusWith(m, dash.Token, "/v1/agents"); got != 200 {
			t.Fatalf("read token on a replica = %d, want 200", got)
		}
	}
	if status, _ := e.do("POST", "/v1/tokens", dash.Token, map[string]any{"name": "mine", "scope": "admin"}); status != 403 {
		t.Fatalf("a read token creating a token = %d, want 403", status)
	}

	// Listed: names, scopes, times; never a secret.
	status, out := e.do("GET", "/v1/tokens", e.admin, nil)
	if status != 200 {
		t.Fatalf("GET /v1/tokens = %d %s", status, out)
	}
	if strings.Contains(string(out), dash.Token) || strings.Contains(string(out), e.admin) || strings.Contains(string(out), `"token"`) {
		t.Fatalf("GET /v1/tokens shows a secret: %s", out)
	}
	var list struct {
		Tokens []struct {
			Name       string     `json:"name"`
			Scope      string     `json:"scope"`
			CreatedBy  string     `json:"created_by"`
			LastUsedAt *time.Time `json:"last_used_at"`
		} `json:"tokens"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatal(err)
	}
	byName := map[string]int{}
	for i, tok := range list.Tokens {
		byName[tok.Name] = i
	}
	if len(list.Tokens) != 2 || list.Tokens[byName["dash"]].LastUsedAt == nil || list.Tokens[byName["dash"]].CreatedBy != "token:admin" ||
		list.Tokens[byName["admin"]].Scope != "admin" {
		t.Fatalf("GET /v1/tokens = %s", out)
	}

	// A taken name is one clear conflict, not the database's words.
	status, out = e.do("POST", "/v1/tokens", e.admin, map[string]any{"name": "dash", "scope": "admin"})
	if status != 409 || !strings.Contains(string(out), `a token named \"dash\" exists already`) ||
		strings.Contains(string(out), "duplicate") || strings.Contains(string(out), "api_tokens") {
		t.Fatalf("duplicate name = %d %s", status, out)
	}

	// Revoked on one replica: refused on the other at the next request.
	if status, out := e.do("DELETE", "/v1/tokens/dash", e.admin, nil); status != 204 {
		t.Fatalf("DELETE /v1/tokens/dash = %d %s", status, out)
	}
	for _, m := range []*Main{b, e.main} {
		if got := e.statusWith(m, dash.Token, "/v1/agents"); got != 401 {
			t.Fatalf("revoked token = %d, want 401", got)
		}
	}
	if status, _ := e.do("DELETE", "/v1/tokens/dash", e.admin, nil); status != 204 {
		t.Fatalf("revoking a revoked token = %d, want 204", status)
	}
	if status, _ := e.do("DELETE", "/v1/tokens/nobody", e.admin, nil); status != 404 {
		t.Fatalf("revoking an unknown token = %d, want 404", status)
	}

	// Expired: refused everywhere once the clock passes its expiry.
	short := e.createToken("short", "rotate", "2m")
	if got := e.statusWith(b, short.Token, "/v1/agents"); got != 200 {
		t.Fatalf("short-lived token = %d, want 200", got)
	}
	clk.Advance(2*time.Minute + time.Second)
	for _, m := range []*Main{e.main, b} {
		if got := e.statusWith(m, short.Token, "/v1/agents"); got != 401 {
			t.Fatalf("expired token = %d, want 401", got)
		}
	}

	// The last admin token that works cannot be revoked over the API; an
	// expired one does not count. A token may revoke itself.
	status, out = e.do("DELETE", "/v1/tokens/admin", e.admin, nil)
	if status != 409 || !strings.Contains(string(out), "last admin token") {
		t.Fatalf("revoking the last admin token = %d %s, want 409", status, out)
	}
	e.createToken("fading", "admin", "1m")
	clk.Advance(2 * time.Minute)
	if status, _ := e.do("DELETE", "/v1/tokens/admin", e.admin, nil); status != 409 {
		t.Fatalf("revoking the last live admin token next to an expired one = %d, want 409", status)
	}
	second := e.createToken("second", "admin", "")
	if status, out := e.do("DELETE", "/v1/tokens/admin", e.admin, nil); status != 204 {
		t.Fatalf("an admin token revoking itself = %d %s, want 204", status, out)
	}
	if got := e.statusWith(b, e.admin, "/v1/agents"); got != 401 {
		t.Fatalf("self-revoked token = %d, want 401", got)
	}
	e.admin = second.Token
	if status, _ := e.do("DELETE", "/v1/tokens/second", e.admin, nil); status != 409 {
		t.Fatalf("revoking the last admin token = %d, want 409", status)
	}

	// Every change is in the audit trail with who made it.
	audit := e.must(200, "GET", "/v1/audit?limit=1000", nil)
	var seen []string
	for _, ev := range audit["events"].([]any) {
		ev := ev.(map[string]any)
		if a := ev["action"].(string); strings.HasPrefix(a, "token.") {
			seen = append(seen, a+" "+ev["details"].(map[string]any)["name"].(string)+" by "+ev["actor"].(string))
		}
	}
	want := []string{"token.create admin by test", "token.create dash by token:admin", "token.revoke dash by token:admin",
		"token.create short by token:admin", "token.create fading by token:admin", "token.create second by token:admin",
		"token.revoke admin by token:admin"}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Fatalf("token audit events:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
	raw, _ := json.Marshal(audit)
	for _, secret := range []string{dash.Token, short.Token, second.Token} {
		if strings.Contains(string(raw), secret) || strings.Contains(e.logs.String(), secret) {
			t.Fatal("a token secret is in the audit trail or the logs")
		}
	}
}

func TestTokensAPIBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, c := range []struct {
		body any
		want string
	}{
		{map[string]any{"name": "x", "scope": "read", "expires": "soon"}, "not a duration"},
		{map[string]any{"name": "x", "scope": "read", "expires": "0d"}, "out of range"},
		{map[string]any{"name": "x", "scope": "read", "expires": "30s"}, "out of range"},
		{map[string]any{"name": "x", "scope": "read", "expires": "4000d"}, "out of range"},
		{map[string]any{"name": "x", "scope": "root"}, "scope"},
		{map[string]any{"name": "has space", "scope": "read"}, "token name"},
		{map[string]any{"name": "x", "scope": "read", "secret": "x"}, "unknown field"},
		{map[string]any{"scope": "read"}, "token name"},
	} {
		status, out := e.do("POST", "/v1/tokens", e.admin, c.body)
		if status != 400 || !strings.Contains(string(out), c.want) {
			t.Errorf("POST /v1/tokens %v = %d %s, want 400 with %q", c.body, status, out, c.want)
		}
	}
	if got := e.must(200, "GET", "/v1/tokens", nil)["tokens"].([]any); len(got) != 1 {
		t.Fatalf("bad requests made tokens: %v", got)
	}
}

// The database commands: create with an expiry, list as a table or JSON
// without secrets, revoke (and refuse the last admin token without
// --force); a taken name is one line.
func TestTokenCLI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	db := []string{"--database-url", e.dbURL}
	cli := func(args ...string) cliResult {
		t.Helper()
		return runCLIWith(t, append(args, db...)...)
	}

	r := cli("token", "create", "--name", "ci", "--scope", "rotate", "--expires", "30d").ok(t)
	secret := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(secret, "rtd_") || !strings.Contains(r.stderr, "expires at") {
		t.Fatalf("token create: stdout %q stderr %q", r.stdout, r.stderr)
	}
	if got := e.statusWith(e.main, secret, "/v1/agents"); got != 200 {
		t.Fatalf("CLI-made token = %d, want 200", got)
	}

	r = cli("token", "create", "--name", "ci", "--scope", "admin")
	r.failed(t, `a token named "ci" exists already`)
	if msg := r.err.Error(); strings.Contains(msg, "\n") || strings.Contains(msg, "duplicate key") || strings.Contains(msg, "SQLSTATE") {
		t.Fatalf("duplicate name error is not one clean line: %q", msg)
	}
	cli("token", "create", "--name", "x", "--scope", "read", "--expires", "tomorrow").failed(t, "not a duration")
	cli("token", "create", "--name", "x").failed(t, "--name and --scope are required")
	cli("token", "rename").failed(t, "unknown command")

	r = cli("token", "list", "--json").ok(t)
	if strings.Contains(r.stdout, secret) || strings.Contains(r.stdout, e.admin) {
		t.Fatal("token list --json shows a secret")
	}
	var list struct {
		Tokens []map[string]any `json:"tokens"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("token list --json: %v\n%s", err, r.stdout)
	}
	if len(list.Tokens) != 2 || list.Tokens[1]["name"] != "ci" || list.Tokens[1]["state"] != "active" ||
		list.Tokens[1]["expires_at"] == nil || list.Tokens[1]["last_used_at"] == nil || list.Tokens[1]["created_by"] != "cli:token" {
		t.Fatalf("token list --json = %s", r.stdout)
	}
	// The same shape as GET /v1/tokens.
	api := e.must(200, "GET", "/v1/tokens", nil)["tokens"].([]any)
	apiCI, _ := json.Marshal(api[1])
	cliCI, _ := json.Marshal(list.Tokens[1])
	if string(apiCI) != string(cliCI) {
		t.Fatalf("token list --json %s, GET /v1/tokens %s", cliCI, apiCI)
	}
	r = cli("token", "list").ok(t)
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") ||
		!strings.Contains(lines[2], "ci") || !strings.Contains(lines[2], "rotate") || strings.Contains(r.stdout, secret) {
		t.Fatalf("token list:\n%s", r.stdout)
	}

	r = cli("token", "revoke", "--name", "ci").ok(t)
	if !strings.Contains(r.stderr, "revoked rotate token") {
		t.Fatalf("token revoke stderr %q", r.stderr)
	}
	if got := e.statusWith(e.main, secret, "/v1/agents"); got != 401 {
		t.Fatalf("revoked token = %d, want 401", got)
	}
	if r := cli("token", "revoke", "--name", "ci").ok(t); !strings.Contains(r.stderr, "revoked already") {
		t.Fatalf("second revoke stderr %q", r.stderr)
	}
	cli("token", "revoke", "--name", "nobody").failed(t, `token "nobody" not found`)
	cli("token", "revoke", "--name", "admin").failed(t, "last admin token", "--force")
	if got := e.statusWith(e.main, e.admin, "/v1/agents"); got != 200 {
		t.Fatalf("admin token after a refused revoke = %d, want 200", got)
	}
	cli("token", "revoke", "--name", "admin", "--force").ok(t)
	if got := e.statusWith(e.main, e.admin, "/v1/agents"); got != 401 {
		t.Fatalf("admin token after revoke --force = %d, want 401", got)
	}
}
