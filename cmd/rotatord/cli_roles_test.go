package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// roles add, list, show, update and delete, and agents add --role and
// agents update: every claim flag reaches the API.
func TestCLIRoles(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})

	r := e.runCLI("roles", "add", "fleet", "worker", "--description", "build workers", "--pub", "jobs.{{name()}}.>",
		"--sub", "jobs.{{name()}}.>,teams.{{tag(team)}}.>", "--sub", "_INBOX.>", "--resp-max", "1", "--resp-ttl", "5s",
		"--subs", "10", "--src", "10.0.0.0/8,127.0.0.0/8", "--time", "08:00:00-18:00:00", "--times-location", "UTC",
		"--conn-type", "standard").ok(t)
	for _, want := range []string{"worker", "build workers", "jobs.{{name()}}.>", "max 1, ttl 5s", "subs 10, data unlimited",
		"10.0.0.0/8,127.0.0.0/8", "08:00:00-18:00:00", "UTC", "STANDARD"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("roles add output lacks %q:\n%s", want, r.stdout)
		}
	}
	e.runCLI("roles", "add", "fleet", "worker").failed(t, "conflict", "HTTP 409")
	e.runCLI("roles", "add", "fleet", "bad", "--time", "8-9").failed(t, "invalid", "HH:MM:SS")
	e.runCLI("roles", "add", "fleet", "bad", "--time", "08:00:00").failed(t, "START-END")

	list := e.runCLI("roles", "list", "fleet").ok(t).stdout
	if !strings.Contains(list, "NAME") || !strings.Contains(list, "worker") {
		t.Errorf("roles list:\n%s", list)
	}
	doc := decodeJSON(t, e.runCLI("roles", "show", "fleet", "worker", "-o", "json").ok(t).stdout)
	if doc["signing_key"] == "" || doc["times_location"] != "UTC" {
		t.Errorf("roles show -o json = %v", doc)
	}

	// A permission flag replaces that list only; the change is announced.
	r = e.runCLI("roles", "update", "fleet", "worker", "--sub", "jobs.{{name()}}.>,_INBOX.>", "-o", "json").ok(t)
	role := decodeJSON(t, r.stdout)
	perms := role["permissions"].(map[string]any)
	if fmt.Sprint(perms["pub"]) != "map[allow:[jobs.{{name()}}.>] deny:[]]" || fmt.Sprint(perms["sub"]) != "map[allow:[jobs.{{name()}}.> _INBOX.>] deny:[]]" ||
		perms["resp"] == nil {
		t.Errorf("permissions after update --sub = %v", perms)
	}
	if !strings.Contains(r.stderr, "reconnect") {
		t.Errorf("update of the scope: stderr %q lacks the reconnect notice", r.stderr)
	}
	r = e.runCLI("roles", "update", "fleet", "worker", "--description", "workers").ok(t)
	if strings.Contains(r.stderr, "reconnect") {
		t.Errorf("description update announced reconnects: %q", r.stderr)
	}
	role = decodeJSON(t, e.runCLI("roles", "update", "fleet", "worker", "--no-resp", "-o", "json").ok(t).stdout)
	if role["permissions"].(map[string]any)["resp"] != nil {
		t.Errorf("--no-resp left %v", role["permissions"])
	}
	e.runCLI("roles", "update", "fleet", "worker").failed(t, "nothing to change")

	// An agent of the role, with tags; the role's claims exclude its own.
	credsFile := filepath.Join(t.TempDir(), "kate.creds")
	r = e.runCLI("agents", "add", "kate", "--account", "fleet", "--role", "worker", "--tag", "team:blue", "--creds-out", credsFile).ok(t)
	if !strings.Contains(r.stdout, "worker") || !strings.Contains(r.stdout, "team:blue") || strings.Contains(r.stderr, "neither publish") {
		t.Errorf("agents add --role:\nstdout %s\nstderr %s", r.stdout, r.stderr)
	}
	e.runCLI("agents", "add", "lee", "--account", "fleet", "--role", "worker", "--pub", "x").failed(t, "exclude each other")
	e.runCLI("roles", "delete", "fleet", "worker").failed(t, "conflict", "has 1 agents")

	// Out of the role with permissions of its own; then only a limit changes.
	r = e.runCLI("agents", "update", "kate", "--role", "", "--pub", "a.>", "-o", "json").ok(t)
	a := decodeJSON(t, r.stdout)
	if a["role"] != nil || fmt.Sprint(a["permissions"].(map[string]any)["pub"]) != "map[allow:[a.>] deny:[]]" {
		t.Errorf("agents update --role '' --pub = %v", a)
	}
	if !strings.Contains(r.stderr, "next credentials") {
		t.Errorf("agents update: stderr %q does not say when it takes effect", r.stderr)
	}
	a = decodeJSON(t, e.runCLI("agents", "update", "kate", "--payload", "1024", "--conn-type", "STANDARD,WEBSOCKET", "-o", "json").ok(t).stdout)
	if fmt.Sprint(a["limits"]) != "map[data:-1 payload:1024 subs:-1]" || fmt.Sprint(a["connection_types"]) != "[STANDARD WEBSOCKET]" ||
		fmt.Sprint(a["permissions"].(map[string]any)["pub"]) != "map[allow:[a.>] deny:[]]" {
		t.Errorf("agents update --payload --conn-type = %v", a)
	}
	e.runCLI("agents", "update", "kate").failed(t, "nothing to change")
	// Its creds are still signed by the role's key until it rotates.
	e.runCLI("roles", "delete", "fleet", "worker").failed(t, "conflict", "rotate them first")

	e.runCLI("roles", "add", "fleet", "spare").ok(t)
	r = e.runCLI("roles", "delete", "fleet", "spare").ok(t)
	if !strings.Contains(r.stderr, "deleted role spare") {
		t.Errorf("roles delete: stderr %q", r.stderr)
	}
	e.runCLI("roles", "show", "fleet", "spare").failed(t, "not_found", "HTTP 404")
	e.runCLI("roles", "list").failed(t, "usage")

	show := e.runCLI("agents", "show", "kate").ok(t).stdout
	for _, want := range []string{"Tags:", "team:blue", "Connection types:", "STANDARD,WEBSOCKET", "payload 1024"} {
		if !strings.Contains(show, want) {
			t.Errorf("agents show lacks %q:\n%s", want, show)
		}
	}
}
