package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// accounts add, list, show and update, in table and JSON; update changes
// only the limits given and refuses to do nothing.
func TestCLIAccounts(t *testing.T) {
	t.Parallel()
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

// JetStream, exports, imports and the other claims from the CLI: flags for
// the simple ones, --from-file for the rest.
func TestCLIAccountClaims(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	exporter := filepath.Join(t.TempDir(), "exporter.json")
	if err := os.WriteFile(exporter, []byte(`{"exports": [{"name": "events", "subject": "events.>", "type": "stream"},
		{"subject": "svc.lookup", "type": "service", "token_req": true}], "limits": {"conn": 5}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out := e.runCLI("accounts", "add", "tenant-a", "--from-file", exporter, "--conn", "10", "--js-disk-storage", "1073741824",
		"--tag", "team:a,env:prod", "--info-url", "https://wiki.example.com/a").ok(t).stdout
	for _, want := range []string{"conn 10,", "JetStream:", "mem unlimited, disk 1073741824", "stream events.> (events, public)",
		"service svc.lookup (svc.lookup, token required)", "team:a,env:prod", "https://wiki.example.com/a"} {
		if !strings.Contains(out, want) {
			t.Errorf("accounts add output lacks %q:\n%s", want, out)
		}
	}
	importer := filepath.Join(t.TempDir(), "importer.json")
	os.WriteFile(importer, []byte(`{"imports": [{"account": "tenant-a", "subject": "svc.lookup", "type": "service", "local_subject": "a.lookup"}]}`), 0o600)
	out = e.runCLI("accounts", "add", "tenant-b", "--from-file", importer, "--js-tier", "R1", "--js-streams", "5").ok(t).stdout
	if !strings.Contains(out, "service svc.lookup from tenant-a as a.lookup") || !strings.Contains(out, "R1: mem unlimited, disk unlimited, streams 5") {
		t.Errorf("accounts add tenant-b output:\n%s", out)
	}
	// A tier given on update is merged into the account's tiers.
	doc := decodeJSON(t, e.runCLI("accounts", "update", "tenant-b", "--js-tier", "R3", "--js-disk-storage", "100", "-o", "json").ok(t).stdout)
	tiers := doc["jetstream"].(map[string]any)["tiers"].(map[string]any)
	if len(tiers) != 2 || tiers["R1"].(map[string]any)["streams"] != float64(5) || tiers["R3"].(map[string]any)["disk_storage"] != float64(100) {
		t.Errorf("tiers after update --js-tier R3 = %v", tiers)
	}
	doc = decodeJSON(t, e.runCLI("accounts", "update", "tenant-b", "--no-jetstream", "--wildcards=false", "-o", "json").ok(t).stdout)
	if doc["jetstream"] != nil || doc["limits"].(map[string]any)["wildcards"] != false {
		t.Errorf("after --no-jetstream --wildcards=false: %v", doc)
	}
	e.runCLI("accounts", "update", "tenant-b", "--no-jetstream", "--js-streams", "1").failed(t, "--no-jetstream cannot go with")
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`[1]`), 0o600)
	e.runCLI("accounts", "update", "tenant-b", "--from-file", bad).failed(t, "not a JSON object")
	e.runCLI("accounts", "add", "tenant-c", "--js-tier", "R9", "--js-streams", "1").failed(t, "invalid", "R1 to R5")
	list := e.runCLI("accounts", "list").ok(t).stdout
	if !strings.Contains(list, "JETSTREAM") || !strings.Contains(list, "tenant-a") {
		t.Errorf("accounts list:\n%s", list)
	}
}
