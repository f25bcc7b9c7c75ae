package main

import (
	"strings"
	"testing"
)

// accounts add, list, show and update, in table and JSON; update changes
// only the limits given and refuses to do nothing.
func TestCLIAccounts(t *testing.T) {
	e := newEnv(t)
	out := e.runCLI("accounts", "add", "fleet", "--description", "build agents", "--conn", "100").ok(t).stdout
	for _, want := range []string{"fleet", "build agents", "conn 100, subs unlimited"} {
		if !strings.Contains(out, want) {
			t.Errorf("accounts add output lacks %q:\n%s", want, out)
		}
	}
	e.runCLI("accounts", "add", "fleet").failed(t, "conflict", "HTTP 409")

	list := e.runCLI("accounts", "list").ok(t).stdout
	if !strings.Contains(list, "NAME") || !strings.Contains(list, "fleet") {
		t.Errorf("accounts list:\n%s", list)
	}
	doc := decodeJSON(t, e.runCLI("accounts", "list", "-o", "json").ok(t).stdout)
	if accs, _ := doc["accounts"].([]any); len(accs) != 2 { // fleet and the system account
		t.Errorf("accounts list -o json = %v, want 2 accounts", doc)
	}

	acc := decodeJSON(t, e.runCLI("accounts", "update", "fleet", "--subs", "50", "-o", "json").ok(t).stdout)
	limits, _ := acc["limits"].(map[string]any)
	if limits["subs"] != float64(50) || limits["conn"] != float64(100) || limits["payload"] != float64(-1) {
		t.Errorf("limits after update --subs 50 = %v, want subs 50 and the rest unchanged", limits)
	}
	acc = decodeJSON(t, e.runCLI("accounts", "update", "fleet", "--keep-revocations", "true", "--description", "", "-o", "json").ok(t).stdout)
	if acc["keep_revocations"] != true || acc["description"] != "" {
		t.Errorf("after update --keep-revocations true --description '' = %v", acc)
	}
	show := e.runCLI("accounts", "show", "fleet").ok(t).stdout
	if !strings.Contains(show, "Keep revocations:  true") {
		t.Errorf("accounts show:\n%s", show)
	}
	e.runCLI("accounts", "update", "fleet").failed(t, "nothing to change")
	e.runCLI("accounts", "update", "fleet", "--keep-revocations", "maybe").failed(t, "want true or false")
	e.runCLI("accounts", "show", "nope").failed(t, "not_found", "HTTP 404")
}
