package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/apitest"
	"github.com/rotatord/rotatord/internal/httpapi"
	"github.com/rotatord/rotatord/pkg/agent"
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
	t.Parallel()
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
		{"never-firing schedule", "POST", "/v1/agents", e.admin, agent(func(a map[string]any) { a["rotation"] = map[string]any{"schedule": "0 0 30 2 *"} }), 400, "invalid", "never runs"},
		{"schedule over 90 days", "POST", "/v1/agents", e.admin, agent(func(a map[string]any) { a["rotation"] = map[string]any{"schedule": "0 0 1 1,7 *"} }), 400, "invalid", "rotate at least every 90 days"},
		{"dense then a year", "POST", "/v1/agents", e.admin, agent(func(a map[string]any) { a["rotation"] = map[string]any{"schedule": "* * 1 1 *"} }), 400, "invalid", "days without a run"},
		{"patch never-firing schedule", "PATCH", "/v1/agents/kate", e.admin, map[string]any{"rotation": map[string]any{"schedule": "0 0 31 11 *"}}, 400, "invalid", "never runs"},
		{"patch yearly schedule", "PATCH", "/v1/agents/kate", e.admin, map[string]any{"rotation": map[string]any{"schedule": "@yearly"}}, 400, "invalid", "rotate at least every 90 days"},
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
	t.Parallel()
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

// badBytes are values PostgreSQL cannot store as text, percent-encoded for
// a path or query: a NUL character, and bytes that are not UTF-8.
var badBytes = []string{"%00", "kate%00", "%FF", "%C3", "a%80b"}

// TestBadBytesEveryAdminRoute sends, to every route behind a bearer token
// (walked from the router), a NUL character or bytes that are not UTF-8 in
// each path parameter, each query parameter the spec declares for it, and
// each string field of its JSON body (walked from the spec's schema). Every
// one is a 400 invalid, none a 500, and nothing changes. The agents' own
// endpoints (/creds) do their own checks and are left out.
func TestBadBytesEveryAdminRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	createAgent(e, "kate", "fleet")
	e.createToken("dash", "read", "")
	rotation := e.must(202, "POST", "/v1/agents/kate/rotate", nil)["id"].(string)
	doc := apitest.Doc(t)
	srv, ok := e.main.http.Handler.(*httpapi.Server)
	if !ok {
		t.Fatalf("the HTTP handler is %T, not the httpapi server", e.main.http.Handler)
	}

	// A valid value for each path parameter, so that a request would go
	// all the way to the database if nothing stopped it.
	fill := func(pattern, param string) string {
		switch {
		case param == "id":
			return rotation
		case strings.HasPrefix(pattern, "/v1/accounts/"):
			return "fleet"
		case strings.HasPrefix(pattern, "/v1/tokens/"):
			return "dash"
		}
		return "kate"
	}
	paramRE := regexp.MustCompile(`\{(\w+)\}`)

	type badRequest struct {
		method, path, what string
		body               []byte
	}
	var reqs []badRequest
	routes := 0
	err := chi.Walk(srv.Routes(), func(method, pattern string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if !strings.HasPrefix(pattern, "/v1/") || strings.HasSuffix(pattern, "/creds") {
			return nil
		}
		item := doc.Paths.Find(pattern)
		if item == nil || item.GetOperation(method) == nil {
			t.Errorf("%s %s is not in the spec", method, pattern)
			return nil
		}
		op := item.GetOperation(method)
		routes++
		build := func(bad, value string) string {
			return paramRE.ReplaceAllStringFunc(pattern, func(m string) string {
				name := m[1 : len(m)-1]
				if name == bad {
					return value
				}
				return fill(pattern, name)
			})
		}
		for _, m := range paramRE.FindAllStringSubmatch(pattern, -1) {
			for _, b := range badBytes {
				reqs = append(reqs, badRequest{method, build(m[1], b), "path {" + m[1] + "}=" + b, nil})
			}
		}
		for _, p := range append(slices.Clone(item.Parameters), op.Parameters...) {
			if p.Value == nil || p.Value.In != "query" {
				continue
			}
			for _, b := range badBytes {
				reqs = append(reqs, badRequest{method, build("", "") + "?" + p.Value.Name + "=" + b, "query " + p.Value.Name + "=" + b, nil})
			}
		}
		if op.RequestBody != nil && op.RequestBody.Value != nil {
			mt := op.RequestBody.Value.Content.Get("application/json")
			for _, leaf := range stringLeaves(mt.Schema, nil, 0) {
				for _, bad := range []string{`"\u0000"`, `"x\u0000"`, "\"\xff\"", "\"caf\xc3\""} {
					reqs = append(reqs, badRequest{method, build("", ""), fmt.Sprintf("body %s=%q", strings.Join(leaf, "."), bad), bodyWith(t, leaf, bad)})
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if routes < 19 {
		t.Fatalf("walked %d admin routes, want every one (19 or more)", routes)
	}

	before := e.counts()
	for _, r := range reqs {
		var body any
		if r.body != nil {
			body = r.body
		}
		status, out := e.do(r.method, r.path, e.admin, body)
		var eb struct{ Error, Code string }
		if status != 400 || json.Unmarshal(out, &eb) != nil || eb.Code != "invalid" {
			t.Errorf("%s %s (%s) = %d %s; want 400 invalid", r.method, r.path, r.what, status, out)
		}
	}
	t.Logf("%d bad requests over %d admin routes", len(reqs), routes)
	if after := e.counts(); after != before {
		t.Fatalf("bad requests changed the registry: before %+v, after %+v", before, after)
	}
	if status, _ := e.do("GET", "/v1/agents", "", nil); status != 401 {
		t.Fatalf("no token = %d, want 401", status)
	}
}

// stringLeaves returns the paths to every string field of a JSON schema
// (array items are "[]").
func stringLeaves(ref *openapi3.SchemaRef, path []string, depth int) [][]string {
	if ref == nil || ref.Value == nil || depth > 8 {
		return nil
	}
	s := ref.Value
	var out [][]string
	for _, sub := range s.AllOf {
		out = append(out, stringLeaves(sub, path, depth+1)...)
	}
	switch {
	case s.Type.Is("string"):
		out = append(out, slices.Clone(path))
	case s.Type.Is("array"):
		out = append(out, stringLeaves(s.Items, append(slices.Clone(path), "[]"), depth+1)...)
	case s.Type.Is("object"):
		for _, name := range slices.Sorted(maps.Keys(s.Properties)) {
			out = append(out, stringLeaves(s.Properties[name], append(slices.Clone(path), name), depth+1)...)
		}
	}
	return out
}

// bodyWith is a JSON body holding raw (a JSON string, as bytes) at path.
func bodyWith(t *testing.T, path []string, raw string) []byte {
	t.Helper()
	const mark = "@@value@@"
	var v any = mark
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == "[]" {
			v = []any{v}
		} else {
			v = map[string]any{path[i]: v}
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Replace(b, []byte(`"`+mark+`"`), []byte(raw), 1)
}

// No answer and no log line repeats a seed a caller sent by mistake: as a
// name, in a path, in a subject, as the agent's new public key.
func TestSeedNeverEchoed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	_, creds := createAgent(e, "kate", "fleet")
	seed := seedOf(t, creds)
	kp, err := nkeys.FromSeed([]byte(seed))
	if err != nil {
		t.Fatal(err)
	}
	newAgent := func(mod func(map[string]any)) map[string]any {
		a := map[string]any{"name": "bob", "account": "fleet", "permissions": map[string]any{"pub": map[string]any{"allow": []string{"a"}}}}
		mod(a)
		return a
	}
	cases := []struct {
		method, path string
		body         any
	}{
		{"GET", "/v1/agents/" + seed, nil},
		{"GET", "/v1/accounts/" + strings.ToLower(seed), nil},
		{"POST", "/v1/agents/" + seed + "/rotate", nil},
		{"DELETE", "/v1/tokens/" + seed, nil},
		{"POST", "/v1/agents", newAgent(func(a map[string]any) { a["name"] = seed + "!" })},
		{"POST", "/v1/agents", newAgent(func(a map[string]any) { a["account"] = seed })},
		{"POST", "/v1/agents", newAgent(func(a map[string]any) {
			a["permissions"] = map[string]any{"pub": map[string]any{"allow": []string{seed + " x"}}}
		})},
		{"POST", "/v1/accounts", map[string]any{"name": seed + "/x"}},
		{"POST", "/v1/tokens", map[string]any{"name": seed + "?", "scope": "read"}},
	}
	for _, c := range cases {
		status, out := e.do(c.method, c.path, e.admin, c.body)
		if status < 400 || status >= 500 {
			t.Errorf("%s %s = %d %s, want a 4xx", c.method, c.path, status, out)
		}
		if strings.Contains(strings.ToUpper(string(out)), seed) {
			t.Errorf("%s %s echoes the seed: %s", c.method, c.path, out)
		}
	}
	// An unknown endpoint (not in the spec, so around the validator).
	if resp, err := http.Get(e.main.URL() + "/v1/nothing/" + seed); err != nil {
		t.Fatal(err)
	} else {
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || strings.Contains(string(out), seed) {
			t.Errorf("unknown endpoint with a seed = %d %s", resp.StatusCode, out)
		}
	}
	// The agent sends its seed where its new public key goes, with a proof.
	req, _ := http.NewRequest("POST", e.main.URL()+"/v1/agents/kate/creds", strings.NewReader(`{"public_key":"`+seed+`"}`))
	req.Header.Set("Content-Type", "application/json")
	if err := agent.SignRequest(req, kp, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 && resp.StatusCode != 401 || strings.Contains(string(out), seed) {
		t.Errorf("a seed as public_key = %d %s; want a 4xx that does not repeat it", resp.StatusCode, out)
	}
	if logs := strings.ToUpper(e.logs.String()); strings.Contains(logs, seed) {
		t.Error("the seed is in the logs")
	}
}

// A request header over 16 KiB gets rotatord's JSON 431 from the real
// server (Go's own limit is higher); over 64 KiB Go refuses it itself.
func TestHeaderLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	send := func(n int) (int, http.Header, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", e.main.URL()+"/v1/agents", nil)
		req.Header.Set("Authorization", "Bearer "+e.admin)
		req.Header.Set("X-Padding", strings.Repeat("p", n))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, body
	}
	if status, _, body := send(httpapi.MaxHeaderBytes - 2048); status != 200 {
		t.Fatalf("a header under the limit = %d %s", status, body)
	}
	status, h, body := send(httpapi.MaxHeaderBytes + 1)
	var eb struct{ Error, Code string }
	if status != 431 || h.Get("Content-Type") != "application/json" || json.Unmarshal(body, &eb) != nil || eb.Code != "header_too_large" {
		t.Fatalf("a header over the limit = %d %s %q; want 431 with the JSON error body", status, h.Get("Content-Type"), body)
	}
	if status, _, _ := send(httpapi.ServerMaxHeaderBytes + 8192); status != 431 {
		t.Fatalf("a header over Go's limit = %d, want 431", status)
	}
}
