package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord"
)

// The key lifecycle's endpoints: scopes, bad input, one operation per
// account, and the account's key rotation schedule.
func TestKeyLifecycleAPI(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *Config) { c.TickSpec = "" })
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	createAgent(e, "kate", "fleet")
	_, rotateTok := e.token("rotator", rotatord.ScopeRotate)
	_, readTok := e.token("reader", rotatord.ScopeRead)

	expect := func(status int, code, method, path, token string, body any) map[string]any {
		t.Helper()
		got, out := e.do(method, path, token, body)
		if got != status {
			t.Fatalf("%s %s = %d %s; want %d", method, path, got, out, status)
		}
		var m map[string]any
		json.Unmarshal(out, &m)
		if code != "" && m["code"] != code {
			t.Fatalf("%s %s: code %v (%s), want %s", method, path, m["code"], out, code)
		}
		return m
	}
	// Scopes: rotate-all, resume and abort need rotate; signing keys admin.
	expect(403, "forbidden", "POST", "/v1/accounts/fleet/rotate-all", readTok, nil)
	expect(403, "forbidden", "POST", "/v1/accounts/fleet/signing-keys/rotate", rotateTok, nil)
	expect(401, "unauthorized", "POST", "/v1/accounts/fleet/rotate-all", "", nil)
	// Bad input.
	for _, body := range []any{
		map[string]any{"waves": []int{5, 50}},
		map[string]any{"waves": []int{50, 10, 100}},
		map[string]any{"waves": []int{}},
		map[string]any{"halt_on_failure_rate": 2},
		map[string]any{"halt_on_failure_rate": -0.5},
		map[string]any{"waves": "1,10,100"},
		map[string]any{"wave": []int{100}},
		"{not json",
	} {
		expect(400, "invalid", "POST", "/v1/accounts/fleet/rotate-all", rotateTok, body)
	}
	if status, _ := e.doRaw("POST", "/v1/accounts/fleet/rotate-all", "text/plain", "{}"); status != 415 {
		t.Fatalf("rotate-all as text/plain = %d, want 415", status)
	}
	expect(404, "not_found", "POST", "/v1/accounts/nope/rotate-all", rotateTok, nil)
	expect(400, "invalid", "POST", "/v1/accounts/SYS/rotate-all", rotateTok, nil)
	expect(400, "invalid", "POST", "/v1/accounts/fleet/signing-keys/rotate", e.admin, map[string]any{"mode": "fast"})
	expect(400, "invalid", "POST", "/v1/accounts/SYS/signing-keys/rotate", e.admin, nil)
	expect(404, "not_found", "POST", "/v1/accounts/fleet/roles/nope/rotate", e.admin, nil)
	expect(404, "not_found", "GET", "/v1/key-rotations/not-a-uuid", readTok, nil)
	expect(404, "not_found", "GET", "/v1/fleet-rotations/6f1c2b9e-4d3a-4f5e-9a7b-2c8d1e0f3a45", readTok, nil)
	expect(404, "not_found", "POST", "/v1/fleet-rotations/6f1c2b9e-4d3a-4f5e-9a7b-2c8d1e0f3a45/abort", rotateTok, nil)
	expect(404, "not_found", "GET", "/v1/fleet-rotations?account=nope", readTok, nil)
	expect(400, "invalid", "GET", "/v1/key-rotations?limit=0", readTok, nil)

	// One fleet operation per account, whoever asks.
	status, out := e.do("POST", "/v1/accounts/fleet/rotate-all", rotateTok, nil)
	if status != 202 {
		t.Fatalf("rotate-all = %d %s", status, out)
	}
	var started map[string]string
	json.Unmarshal(out, &started)
	id := started["id"]
	for _, path := range []string{"/v1/accounts/fleet/rotate-all", "/v1/accounts/fleet/signing-keys/rotate"} {
		m := expect(409, "conflict", "POST", path, e.admin, map[string]any{})
		if !strings.Contains(m["error"].(string), id) {
			t.Fatalf("%s conflict %q does not name fleet rotation %s", path, m["error"], id)
		}
	}
	expect(409, "conflict", "POST", "/v1/fleet-rotations/"+id+"/resume", rotateTok, nil)
	f := expect(200, "", "GET", "/v1/fleet-rotations/"+id, readTok, nil)
	if f["state"] != "running" || num(f["agents"]) != 1 || len(f["progress"].([]any)) != 3 {
		t.Fatalf("fleet rotation = %v", f)
	}
	if list := expect(200, "", "GET", "/v1/fleet-rotations?account=fleet", readTok, nil)["fleet_rotations"].([]any); len(list) != 1 {
		t.Fatalf("fleet rotations of fleet: %v", list)
	}
	if f = expect(200, "", "POST", "/v1/fleet-rotations/"+id+"/abort", rotateTok, nil); f["state"] != "aborted" {
		t.Fatalf("abort = %v", f)
	}

	// A staged key rotation, abandoned while it adds its key (no server
	// acknowledged the new JWT: NATS is down here).
	k := expect(202, "", "POST", "/v1/accounts/fleet/signing-keys/rotate", e.admin, nil)
	kid := k["id"].(string)
	if k["state"] != "adding" {
		t.Fatalf("staged rotation started %v, want adding", k["state"])
	}
	kr := expect(200, "", "GET", "/v1/key-rotations/"+kid, readTok, nil)
	if kr["kind"] != "account" || kr["mode"] != "staged" || num(kr["stragglers"]) != 1 || kr["fleet_rotation"] == nil {
		t.Fatalf("key rotation = %v", kr)
	}
	expect(403, "forbidden", "POST", "/v1/key-rotations/"+kid+"/abandon", rotateTok, nil)
	if kr = expect(200, "", "POST", "/v1/key-rotations/"+kid+"/abandon", e.admin, nil); kr["state"] != "abandoned" {
		t.Fatalf("abandon = %v", kr)
	}
	expect(409, "conflict", "POST", "/v1/key-rotations/"+kid+"/complete", e.admin, nil)
	if keys := e.must(200, "GET", "/v1/accounts/fleet", nil)["signing_keys"].([]any); len(keys) != 2 {
		t.Fatalf("signing keys after abandon: %v, want both", keys)
	}
	if list := expect(200, "", "GET", "/v1/key-rotations?account=fleet", readTok, nil)["key_rotations"].([]any); len(list) != 1 {
		t.Fatalf("key rotations of fleet: %v", list)
	}

	// The account's key rotation schedule.
	for _, body := range []any{
		map[string]any{"key_rotation": map[string]any{"schedule": "@every 30m"}},
		map[string]any{"key_rotation": map[string]any{"schedule": ""}},
		map[string]any{"key_rotation": map[string]any{"schedule": "@every 720h", "mode": "x"}},
		map[string]any{"key_rotation": "@every 720h"},
	} {
		expect(400, "invalid", "PATCH", "/v1/accounts/fleet", e.admin, body)
	}
	acc := expect(200, "", "PATCH", "/v1/accounts/fleet", e.admin, map[string]any{"key_rotation": map[string]any{"schedule": "@every 2160h"}})
	sched, _ := acc["key_rotation"].(map[string]any)
	next, _ := time.Parse(time.RFC3339, asString(sched["next_at"]))
	if sched["schedule"] != "@every 2160h" || time.Until(next) < 2100*time.Hour {
		t.Fatalf("key_rotation after PATCH = %v", acc["key_rotation"])
	}
	if acc = e.must(200, "GET", "/v1/accounts/fleet", nil); acc["key_rotation"] == nil {
		t.Fatal("GET lost the key rotation schedule")
	}
	if acc = expect(200, "", "PATCH", "/v1/accounts/fleet", e.admin, map[string]any{"key_rotation": nil}); acc["key_rotation"] != nil {
		t.Fatalf("key_rotation after null = %v", acc["key_rotation"])
	}
	created := expect(201, "", "POST", "/v1/accounts", e.admin, map[string]any{"name": "scheduled", "key_rotation": map[string]any{"schedule": "0 3 1 * *"}})
	if s, _ := created["key_rotation"].(map[string]any); s["schedule"] != "0 3 1 * *" {
		t.Fatalf("created with key_rotation %v", created["key_rotation"])
	}
	expect(400, "invalid", "POST", "/v1/accounts", e.admin, map[string]any{"name": "bad", "key_rotation": map[string]any{"schedule": "* * * * *"}})
	expect(400, "invalid", "PATCH", "/v1/accounts/SYS", e.admin, map[string]any{"key_rotation": map[string]any{"schedule": "@every 2160h"}})
}

func asString(v any) string { s, _ := v.(string); return s }

// The CLI of signing-key rotations, and accounts' key rotation schedule.
func TestCLIKeyRotations(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startNATS()
	e.waitNATS()
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	e.must(201, "POST", "/v1/accounts/fleet/roles", map[string]any{"name": "worker",
		"permissions": map[string]any{"pub": map[string]any{"allow": []string{"jobs.>"}}}})

	// An account without agents: nothing to wait for.
	r := e.runCLI("accounts", "rotate-key", "fleet", "--wait", "-o", "json").ok(t)
	k := decodeJSON(t, r.stdout)
	if k["state"] != "completed" || k["mode"] != "staged" {
		t.Fatalf("rotate-key --wait -o json = %v", k)
	}
	if !strings.Contains(r.stderr, "key rotation "+k["id"].(string)+" of account fleet: completed") {
		t.Errorf("rotate-key --wait stderr lacks the progress:\n%s", r.stderr)
	}
	r = e.runCLI("accounts", "rotate-key", "fleet", "--role", "worker", "--mode", "emergency").ok(t)
	id := uuidRE.FindString(r.stdout)
	if id == "" || !strings.Contains(r.stdout, "reissuing") {
		t.Fatalf("rotate-key --role printed:\n%s", r.stdout)
	}
	eventually(t, 20*time.Second, "the role's key rotation to complete", func() bool {
		return e.getJSON("/v1/key-rotations/" + id)["state"] == "completed"
	})
	r = e.runCLI("key-rotations", "show", id).ok(t)
	for _, want := range []string{"role worker of account fleet", "emergency", "completed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("key-rotations show lacks %q:\n%s", want, r.stdout)
		}
	}
	r = e.runCLI("key-rotations", "list", "--account", "fleet").ok(t)
	if strings.Count(r.stdout, "completed") != 2 {
		t.Errorf("key-rotations list:\n%s", r.stdout)
	}
	e.runCLI("key-rotations", "complete", id).failed(t, "completed already")
	e.runCLI("accounts", "rotate-key", "fleet", "--mode", "fast").failed(t, "--mode")
	e.runCLI("key-rotations", "show").failed(t, "usage")

	// The schedule, on and off.
	r = e.runCLI("accounts", "update", "fleet", "--key-rotation", "@every 2160h").ok(t)
	if !strings.Contains(r.stdout, "Key rotation:") || !strings.Contains(r.stdout, "@every 2160h, next ") {
		t.Errorf("accounts update --key-rotation printed:\n%s", r.stdout)
	}
	r = e.runCLI("accounts", "update", "fleet", "--key-rotation", "off").ok(t)
	if !strings.Contains(r.stdout, "Key rotation:  ") && !strings.Contains(r.stdout, "off") {
		t.Errorf("accounts update --key-rotation off printed:\n%s", r.stdout)
	}
	e.runCLI("accounts", "update", "fleet", "--key-rotation", "@every 1m").failed(t, "key_rotation.schedule")
}
