package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rotatord/rotatord/internal/distribute/vaulttest"
	"github.com/rotatord/rotatord/pkg/agent"
)

// vaultEnv is an env whose rotatord delivers to a fake Vault through the
// same configuration an operator uses (VAULT_ADDR, VAULT_TOKEN).
func vaultEnv(t *testing.T) (*env, *vaulttest.Server) {
	t.Helper()
	v := vaulttest.New(t, "root-token")
	t.Setenv("VAULT_TOKEN", "root-token")
	e := newEnvWith(t, func(c *Config) {
		c.VaultAddr = v.URL()
		c.TickSpec = ""
	})
	e.startNATS()
	e.waitNATS()
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	return e, v
}

func createVaultAgent(e *env, name string) map[string]any {
	e.t.Helper()
	g := e.must(201, "POST", "/v1/agents", map[string]any{
		"name": name, "account": "fleet", "delivery": "vault",
		"permissions": map[string]any{
			"pub": map[string]any{"allow": []string{"orders.>", "_INBOX.>"}},
			"sub": map[string]any{"allow": []string{"orders.>", "_INBOX.>"}},
		},
	})
	if _, ok := g["creds"]; ok {
		e.t.Fatal("a vault agent's creds were returned by the API")
	}
	return g
}

func TestVaultDelivery(t *testing.T) {
	e, v := vaultEnv(t)
	g := createVaultAgent(e, "kate")
	data, version, ok := v.Secret("nats/fleet/kate")
	if !ok || version != 1 || data["public_key"] != g["credential"].(map[string]any)["public_key"] {
		t.Fatalf("vault secret after create: %v v%d %v", ok, version, data["public_key"])
	}
	for _, field := range []string{"creds", "jwt", "seed", "public_key", "issued_at"} {
		if data[field] == nil || data[field] == "" {
			t.Errorf("vault secret lacks %s", field)
		}
	}
	oldCreds := data["creds"].(string)

	// The agent reads its creds from Vault and watches the path.
	a, err := agent.New(agent.Config{Server: e.main.URL(), Name: "kate", Creds: []byte(oldCreds)})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := a.Connect(e.ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.WatchVault(ctx, v.Client(t), "secret", "nats/fleet/kate", 50*time.Millisecond)

	id := e.must(202, "POST", "/v1/agents/kate/rotate", nil)["id"].(string)
	// Once the creds are in Vault, rotatord keeps no sealed copy of the seed.
	var seeds int
	if err := e.main.Store.Pool().QueryRow(context.Background(), `SELECT count(*) FROM credentials c
		JOIN agents g ON g.id = c.agent_id WHERE g.name = 'kate' AND c.seed_enc IS NOT NULL`).Scan(&seeds); err != nil || seeds != 0 {
		t.Fatalf("%d sealed seeds kept after the delivery to vault (%v), want 0", seeds, err)
	}
	r := e.waitRotation(id, "completed")
	if _, version, _ := v.Secret("nats/fleet/kate"); version != 2 {
		t.Fatalf("vault version after rotation = %d, want 2", version)
	}
	if a.PublicKey() != r["new_public_key"] {
		t.Fatalf("agent key %s, rotation's new key %s", a.PublicKey(), r["new_public_key"])
	}
	eventually(t, 10*time.Second, "the old creds to be refused", func() bool {
		c, err := connectCreds(e, oldCreds)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if status, body := e.do("GET", "/readyz", "", nil); status != 200 {
		t.Fatalf("readyz with vault = %d %s", status, body)
	}
}

// Vault down, refusing or sealed at the distribute step: the rotation is
// rolled back before anything is revoked, Vault keeps the old creds as its
// current version, an alert is raised, and the agent keeps working.
func TestVaultFailures(t *testing.T) {
	cases := []struct {
		name      string
		break_    func(*vaulttest.Server)
		want      string
		unhealthy bool // readyz reports Vault itself as unavailable
	}{
		{"down", func(v *vaulttest.Server) { v.Down() }, "unavailable", true},
		{"forbidden", func(v *vaulttest.Server) { v.Deny("nats/") }, "permission denied", false},
		{"sealed", func(v *vaulttest.Server) { v.Seal() }, "sealed", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, v := vaultEnv(t)
			createVaultAgent(e, "kate")
			data, _, _ := v.Secret("nats/fleet/kate")
			oldCreds := data["creds"].(string)
			nc, err := connectCreds(e, oldCreds)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()

			c.break_(v)
			got := e.must(202, "POST", "/v1/agents/kate/rotate", nil)
			r := e.rotation(got["id"].(string))
			if r["state"] != "rolled_back" || !strings.Contains(r["reason"].(string), "delivery failed") ||
				!strings.Contains(strings.ToLower(r["reason"].(string)), c.want) {
				t.Fatalf("rotation = %v; want rolled back for %q", r, c.want)
			}
			if strings.Contains(r["reason"].(string), "root-token") {
				t.Fatal("the vault token leaked into the rotation's reason")
			}
			want := 200
			if c.unhealthy {
				want = 503
			}
			if status, _ := e.do("GET", "/readyz", "", nil); status != want {
				t.Errorf("readyz with vault %s = %d, want %d", c.name, status, want)
			}
			// Nothing half-written is the current version.
			v.Up()
			v.Unseal()
			v.Deny("")
			if data, version, _ := v.Secret("nats/fleet/kate"); version != 1 || data["creds"] != oldCreds {
				t.Fatalf("vault current version %d after a failed rotation, want the old creds at 1", version)
			}
			mustConnect(t, e, oldCreds, "after the failed rotation")
			if !nc.IsConnected() {
				t.Fatal("the agent was dropped")
			}
			alerts, err := e.main.Store.ListAlerts(context.Background(), 10)
			if err != nil || len(alerts) != 1 || alerts[0].Agent != "kate" || !strings.Contains(alerts[0].Reason, "delivery failed") {
				t.Fatalf("alerts = %+v, %v", alerts, err)
			}
			// Retried later with backoff, not at once.
			next, _ := time.Parse(time.RFC3339, e.must(200, "GET", "/v1/agents/kate", nil)["next_rotation_at"].(string))
			if d := time.Until(next); d < 30*time.Second || d > 2*time.Minute {
				t.Fatalf("retry in %s, want about a minute", d)
			}
		})
	}
}

// An agent on pkg/agent publishes steadily through a scheduled rotation;
// the subscriber counts every sequence number.
func TestNoLossThroughScheduledRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // the real cron tick, every second
	e.startNATS()
	e.waitNATS()
	a, nc, oldCreds := fleetAgent(e, "publisher")
	_, subCreds := createAgent(e, "subscriber", "fleet")
	sub, err := nats.Connect(e.ns.ClientURL(), nats.UserCredentials(writeCreds(t, subCreds)))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var mu sync.Mutex
	seen := map[int]bool{}
	if _, err := sub.Subscribe("orders.seq", func(m *nats.Msg) {
		var n int
		json.Unmarshal(m.Data, &n)
		mu.Lock()
		seen[n] = true
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	sub.Flush()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx, 100*time.Millisecond)
	var sent atomic.Int64
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 1; ctx.Err() == nil; i++ {
			b, _ := json.Marshal(i)
			if err := nc.Publish("orders.seq", b); err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
			sent.Store(int64(i))
			time.Sleep(2 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	if _, err := e.main.Store.Pool().Exec(ctx, `UPDATE agents SET next_rotation_at = now() - interval '1 second' WHERE name = 'publisher'`); err != nil {
		t.Fatal(err)
	}
	var rot map[string]any
	eventually(t, 20*time.Second, "the scheduled rotation to complete", func() bool {
		rots := e.must(200, "GET", "/v1/agents/publisher/rotations", nil)["rotations"].([]any)
		if len(rots) == 0 {
			return false
		}
		rot = rots[0].(map[string]any)
		return rot["state"] == "completed"
	})
	time.Sleep(300 * time.Millisecond) // keep publishing on the new key
	cancel()
	<-pubDone
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	n := int(sent.Load())
	eventually(t, 5*time.Second, "every message to arrive", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) >= n
	})
	mu.Lock()
	for i := 1; i <= n; i++ {
		if !seen[i] {
			t.Errorf("message %d of %d lost", i, n)
		}
	}
	mu.Unlock()
	if rot["trigger"] != "schedule" || a.PublicKey() != rot["new_public_key"] {
		t.Fatalf("rotation %v, agent on %s", rot, a.PublicKey())
	}
	eventually(t, 10*time.Second, "the old creds to be refused", func() bool {
		c, err := connectCreds(e, oldCreds)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	t.Logf("%d messages published through the rotation, none lost", n)
}

// File delivery: the agent watches its creds file; after the rotation the
// file holds the new creds and the old seed is gone from the folder.
func TestFileDelivery(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := newEnvWith(t, func(c *Config) { c.FileDeliveryDir = dir; c.TickSpec = "" })
	e.startNATS()
	e.waitNATS()
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	e.must(201, "POST", "/v1/agents", map[string]any{"name": "kate", "account": "fleet", "delivery": "file",
		"permissions": map[string]any{"pub": map[string]any{"allow": []string{"orders.>"}}}})
	path := filepath.Join(dir, "fleet", "kate.creds")
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("first creds file: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("creds file mode %v, want 0600", fi.Mode().Perm())
	}
	a, err := agent.New(agent.Config{Server: e.main.URL(), Name: "kate", Creds: old})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := a.Connect(e.ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.WatchFile(ctx, path, 50*time.Millisecond)

	id := e.must(202, "POST", "/v1/agents/kate/rotate", nil)["id"].(string)
	r := e.waitRotation(id, "completed")
	if a.PublicKey() != r["new_public_key"] {
		t.Fatalf("agent on %s, want %s", a.PublicKey(), r["new_public_key"])
	}
	eventually(t, 5*time.Second, "the old creds' copy to be removed", func() bool {
		_, err := os.Stat(path + ".prev")
		return os.IsNotExist(err)
	})
	oldSeed := seedOf(t, string(old))
	entries, _ := os.ReadDir(filepath.Join(dir, "fleet"))
	for _, en := range entries {
		b, _ := os.ReadFile(filepath.Join(dir, "fleet", en.Name()))
		if strings.Contains(string(b), oldSeed) {
			t.Fatalf("%s still holds the old seed", en.Name())
		}
	}
}
