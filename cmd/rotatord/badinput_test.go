package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rotatord/rotatord"
)

// counts is a snapshot of what bad requests must not change.
type counts struct{ accounts, agents, credentials, audit, revocations int }

func (e *env) counts() counts {
	e.t.Helper()
	var c counts
	err := e.main.Store.Pool().QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM accounts), (SELECT count(*) FROM agents), (SELECT count(*) FROM credentials),
		(SELECT count(*) FROM audit_events), (SELECT count(*) FROM revocations)`).
		Scan(&c.accounts, &c.agents, &c.credentials, &c.audit, &c.revocations)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	createAgent(e, "kate", "fleet")
	ctx := context.Background()
	read, _, err := e.main.Service.CreateToken(ctx, "test", "reader", rotatord.ScopeRead)
	if err != nil {
		t.Fatal(err)
	}
	rot, _, err := e.main.Service.CreateToken(ctx, "test", "rotator", rotatord.ScopeRotate)
	if err != nil {
		t.Fatal(err)
	}

	agent := func(mod func(map[string]any)) map[string]any {
		a := map[string]any{"name": "bob", "account": "fleet",
			"permissions": map[string]any{"pub": map[string]any{"allow": []string{"a.b"}}}}
		mod(a)
		return a
	}
	perms := func(dir, list string, subjects ...string) func(map[string]any) {
		return func(a map[string]any) {
			a["permissions"] = map[string]any{dir: map[string]any{list: subjects}}
		}
	}
	big := `{"name":"` + strings.Repeat("x", 70<<10) + `"}`

	cases := []struct {
		name, method, path, token string
		body                      any
		status                    int
		code, msg                 string
	}{
		{"no token", "GET", "/v1/agents", "", nil, 401, "unauthorized", "missing bearer token"},
		{"unknown token", "GET", "/v1/agents", "rtd_" + strings.Repeat("A", 43), nil, 401, "unauthorized", "invalid token"},
		{"not a rotatord token", "GET", "/v1/agents", "hunter2", nil, 401, "unauthorized", "invalid token"},
		{"read token creates", "POST", "/v1/accounts", read, map[string]any{"name": "x"}, 403, "forbidden", "needs admin"},
		{"read token revokes", "POST", "/v1/agents/kate/revoke", read, nil, 403, "forbidden", "needs rotate"},
		{"rotate token deletes", "DELETE", "/v1/agents/kate", rot, nil, 403, "forbidden", "needs admin"},
		{"invalid json", "POST", "/v1/accounts", e.admin, `{"name":`, 400, "invalid", "not valid JSON"},
		{"not an object", "POST", "/v1/accounts", e.admin, `["fleet2"]`, 400, "invalid", "JSON object"},
		{"two objects", "POST", "/v1/accounts", e.admin, `{"name":"a1"}{"name":"a2"}`, 400, "invalid", "single JSON object"},
		{"empty body", "POST", "/v1/accounts", e.admin, ``, 400, "invalid", "body is empty"},
		{"unknown field", "POST", "/v1/accounts", e.admin, map[string]any{"name": "x", "colour": "red"}, 400, "invalid", `unknown field "colour"`},
		{"wrong type", "POST", "/v1/accounts", e.admin, map[string]any{"name": 7}, 400, "invalid", `"name" must be a string`},
		{"body too large", "POST", "/v1/accounts", e.admin, big, 413, "too_large", "larger than"},
		{"bad account name", "POST", "/v1/accounts", e.admin, map[string]any{"name": "has space"}, 400, "invalid", "account name"},
		{"negative limit", "POST", "/v1/accounts", e.admin, map[string]any{"name": "x", "limits": map[string]any{"conn": -5, "subs": -1, "payload": -1, "data": -1}}, 400, "invalid", "limits.conn"},
		{"duplicate account", "POST", "/v1/accounts", e.admin, map[string]any{"name": "fleet"}, 409, "conflict", "account with this name exists"},
		{"duplicate agent", "POST", "/v1/agents", e.admin, agent(func(a map[string]any) { a["name"] = "kate" }), 409, "conflict", "agent with this name exists"},
		{"unknown account", "POST", "/v1/agents", e.admin, agent(func(a map[string]any) { a["account"] = "nope" }), 400, "invalid", `account "nope" does not exist`},
		{"missing account", "POST", "/v1/agents", e.admin, agent(func(a map[string]any) { delete(a, "account") }), 400, "invalid", "account is required"},
		{"system account", "POST", "/v1/agents", e.admin, agent(func(a map[string]any) { a["account"] = "SYS" }), 400, "invalid", "system account"},
		{"bad agent name", "POST", "/v1/agents", e.admin, agent(func(a map[string]any) { a["name"] = "../etc" }), 400, "invalid", "agent name"},
		{"empty subject token", "POST", "/v1/agents", e.admin, agent(perms("pub", "allow", "a..b")), 400, "invalid", "permissions.pub.allow"},
		{"gt not last", "POST", "/v1/agents", e.admin, agent(perms("sub", "allow", "a.>.b")), 400, "invalid", "'>' must be the last token"},
		{"partial wildcard", "POST", "/v1/agents", e.admin, agent(perms("sub", "deny", "a.b*")), 400, "invalid", "wildcards"},
		{"space in subject", "POST", "/v1/agents", e.admin, agent(perms("pub", "deny", "a b")), 400, "invalid", "whitespace"},
		{"empty subject", "POST", "/v1/agents", e.admin, agent(perms("pub", "allow", "")), 400, "invalid", "empty subject"},
		{"bad schedule", "POST", "/v1/agents", e.admin, agent(func(a map[string]any) { a["rotation"] = map[string]any{"schedule": "sometimes"} }), 400, "invalid", "rotation.schedule"},
		{"too frequent", "POST", "/v1/agents", e.admin, agent(func(a map[string]any) { a["rotation"] = map[string]any{"schedule": "@every 5s"} }), 400, "invalid", "under one minute"},
		{"bad grace", "POST", "/v1/agents", e.admin, agent(func(a map[string]any) { a["rotation"] = map[string]any{"grace": "soon"} }), 400, "invalid", "rotation.grace"},
		{"grace too short", "POST", "/v1/agents", e.admin, agent(func(a map[string]any) { a["rotation"] = map[string]any{"grace": "1s"} }), 400, "invalid", "out of range"},
		{"bad delivery", "POST", "/v1/agents", e.admin, agent(func(a map[string]any) { a["delivery"] = "carrier-pigeon" }), 400, "invalid", "delivery"},
		{"vault not configured", "POST", "/v1/agents", e.admin, agent(func(a map[string]any) { a["delivery"] = "vault" }), 422, "unsupported", "not configured"},
		{"unknown agent", "GET", "/v1/agents/nobody", e.admin, nil, 404, "not_found", `agent "nobody" not found`},
		{"revoke unknown agent", "POST", "/v1/agents/nobody/revoke", e.admin, nil, 404, "not_found", "not found"},
		{"patch unknown agent", "PATCH", "/v1/agents/nobody", e.admin, map[string]any{"delivery": "poll"}, 404, "not_found", "not found"},
		{"patch bad subject", "PATCH", "/v1/agents/kate", e.admin, map[string]any{"permissions": map[string]any{"pub": map[string]any{"allow": []string{"a..b"}}}}, 400, "invalid", "permissions"},
		{"unknown account get", "GET", "/v1/accounts/nope", e.admin, nil, 404, "not_found", "not found"},
		{"delete account with agents", "DELETE", "/v1/accounts/fleet", e.admin, nil, 409, "conflict", "still has 1 agents"},
		{"delete system account", "DELETE", "/v1/accounts/SYS", e.admin, nil, 409, "conflict", "system account"},
		{"revoke reason not a string", "POST", "/v1/agents/kate/revoke", e.admin, map[string]any{"reason": 1}, 400, "invalid", "reason"},
		{"bad limit", "GET", "/v1/agents?limit=0", e.admin, nil, 400, "invalid", "limit"},
		{"bad since", "GET", "/v1/audit?since=yesterday", e.admin, nil, 400, "invalid", "since"},
		{"wrong method", "PUT", "/v1/agents/kate", e.admin, nil, 405, "method_not_allowed", "not allowed"},
	}
	before := e.counts()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, out := e.do(c.method, c.path, c.token, c.body)
			if status != c.status {
				t.Fatalf("%s %s = %d %s; want %d", c.method, c.path, status, out, c.status)
			}
			var body struct{ Error, Code string }
			if err := json.Unmarshal(out, &body); err != nil {
				t.Fatalf("error body %q is not JSON: %v", out, err)
			}
			if body.Code != c.code || !strings.Contains(body.Error, c.msg) {
				t.Fatalf("error = %+v; want code %s and a message with %q", body, c.code, c.msg)
			}
		})
	}
	if after := e.counts(); after != before {
		t.Fatalf("bad requests changed the registry: before %+v, after %+v", before, after)
	}

	// An unknown endpoint is not in the spec, so it goes around the validator.
	resp, err := http.Get(e.main.URL() + "/v1/nothing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("unknown endpoint = %d %s; want a JSON 404", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	// Wrong content type is refused before the body is read.
	req := `{"name":"ct"}`
	status, out := e.doRaw("POST", "/v1/accounts", "text/plain", req)
	if status != 415 || !strings.Contains(string(out), "application/json") {
		t.Fatalf("text/plain body = %d %s; want 415", status, out)
	}
}

// serve takes every setting as a flag too; bad values are refused before
// anything starts.
func TestServeFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--auth-fail-threshold", "0"}, "auth failure threshold 0"},
		{[]string{"--auth-fail-window", "10ms"}, "auth failure window 10ms"},
		{[]string{"--tls-cert-file", "/nonexistent/cert.pem"}, "ROTATORD_TLS_KEY_FILE"},
		{[]string{"--nats-key-file", "/nonexistent/key.pem"}, "ROTATORD_NATS_CERT_FILE"},
	} {
		args := append([]string{"serve", "--database-url", "postgres://127.0.0.1:1/x", "--master-key-file", "/nonexistent"}, c.args...)
		var stderr strings.Builder
		err := run(context.Background(), args, io.Discard, &stderr)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("serve %v = %v, want an error naming %q", c.args, err, c.want)
		}
	}
}
