package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCLIAgentsReissue(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := newEnvWith(t, func(c *Config) { c.TickSpec = ""; c.FileDeliveryDir = filepath.Join(dir, "delivered") })
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	_, creds := createAgent(e, "kate", "fleet")
	oldKey := must(userKey(t, creds).PublicKey())

	// Without --creds-out a poll agent is not touched: its creds would be lost.
	e.runCLI("agents", "reissue", "kate").failed(t, "--creds-out")
	if got := e.must(200, "GET", "/v1/agents/kate", nil)["credential"].(map[string]any)["public_key"]; got != oldKey {
		t.Fatalf("a refused reissue changed the key to %v", got)
	}

	file := filepath.Join(dir, "kate.creds")
	r := e.runCLI("agents", "reissue", "kate", "--creds-out", file).ok(t)
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("creds file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	b, _ := os.ReadFile(file)
	newKey := must(userKey(t, string(b)).PublicKey())
	if newKey == oldKey || !strings.Contains(r.stdout, newKey) || !strings.Contains(r.stdout, oldKey) || hasSeed(r.stdout) {
		t.Fatalf("reissue printed %q; want the new and the revoked key, no seed", r.stdout)
	}
	// An existing file is never overwritten, and nothing is reissued then.
	e.runCLI("agents", "reissue", "kate", "--creds-out", file).failed(t, "file exists")
	if got := e.must(200, "GET", "/v1/agents/kate", nil)["credential"].(map[string]any)["public_key"]; got != newKey {
		t.Fatalf("a refused reissue changed the key to %v", got)
	}

	// --creds-out - puts the creds file alone on stdout.
	r = e.runCLI("agents", "reissue", "kate", "--creds-out", "-", "-o", "json").ok(t)
	if !strings.HasPrefix(r.stdout, "-----BEGIN NATS USER JWT-----") || !strings.Contains(r.stdout, "USER NKEY SEED") {
		t.Fatalf("stdout = %q, want the creds file alone", r.stdout)
	}
	if !strings.Contains(r.stderr, "kate") {
		t.Fatalf("stderr = %q, want the summary", r.stderr)
	}

	// A file agent gets its creds delivered; --creds-out is refused.
	e.must(201, "POST", "/v1/agents", map[string]any{"name": "fay", "account": "fleet", "delivery": "file"})
	e.runCLI("agents", "reissue", "fay", "--creds-out", filepath.Join(dir, "fay.creds")).failed(t, "file delivery")
	r = e.runCLI("agents", "reissue", "fay", "-o", "json").ok(t)
	res := decodeJSON(t, r.stdout)
	if _, ok := res["agent"].(map[string]any)["creds"]; ok || len(res["revoked_keys"].([]any)) != 1 {
		t.Fatalf("reissue of a file agent = %s", r.stdout)
	}
	delivered, _ := os.ReadFile(filepath.Join(dir, "delivered", "fleet", "fay.creds"))
	if !strings.Contains(string(delivered), "USER NKEY SEED") {
		t.Fatal("the file agent's new creds were not delivered")
	}
	if key := must(userKey(t, string(delivered)).PublicKey()); key != res["agent"].(map[string]any)["credential"].(map[string]any)["public_key"] {
		t.Fatalf("delivered key %s, want the reissued one", key)
	}
	e.runCLI("agents", "reissue", "nobody", "--creds-out", "-").failed(t, "not_found")
}
