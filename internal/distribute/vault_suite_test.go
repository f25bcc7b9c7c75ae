package distribute_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/distribute"
	"github.com/rotatord/rotatord/internal/distribute/vaulttest"
)

// kvSuite exercises Vault delivery against whatever Vault client points at:
// the fake, or a real Vault. Every secret it writes is below prefix in the
// KV v2 engine at mount, and is removed when the test ends.
func kvSuite(t *testing.T, client *vaultapi.Client, mount, prefix string) {
	ctx := context.Background()
	kv := client.KVv2(mount)
	const account = "acme"
	newVault := func(t *testing.T, c *vaultapi.Client) *distribute.Vault {
		t.Helper()
		v, err := distribute.NewVault(distribute.VaultConfig{Client: c, Mount: mount, PathTemplate: prefix + "/{account}/{agent}"})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	v := newVault(t, client)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)

	var mu sync.Mutex
	var paths []string
	agent := func(t *testing.T) string {
		name := strings.ToLower(strings.NewReplacer("/", "-", " ", "-", "_", "-").Replace(t.Name()))
		name = name[strings.LastIndex(name, "-")+1:] + "-" + randomHex(t, 3)
		mu.Lock()
		paths = append(paths, v.Path(account, name))
		mu.Unlock()
		return name
	}
	t.Cleanup(func() {
		for _, p := range paths {
			_ = kv.DeleteMetadata(context.Background(), p)
		}
	})
	deliver := func(t *testing.T, h rotatord.Handoff, want string) {
		t.Helper()
		ref, err := v.Deliver(ctx, h)
		if err != nil {
			t.Fatalf("deliver %s: %v", h.RotationID, err)
		}
		if ref != want {
			t.Fatalf("deliver %s: got ref %q, want %q", h.RotationID, ref, want)
		}
	}
	// current returns the latest version's number and data (nil when it is
	// deleted).
	current := func(t *testing.T, name string) (int, map[string]any) {
		t.Helper()
		s, err := kv.Get(ctx, v.Path(account, name))
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		return s.VersionMetadata.Version, s.Data
	}
	wantCurrent := func(t *testing.T, name string, version int, h rotatord.Handoff) {
		t.Helper()
		got, data := current(t, name)
		if got != version {
			t.Fatalf("current version: got %d, want %d", got, version)
		}
		if data == nil {
			t.Fatalf("version %d is deleted, want the creds of %s", version, h.RotationID)
		}
		if data["public_key"] != h.PublicKey || data["rotation_id"] != h.RotationID {
			t.Fatalf("version %d holds %v/%v, want %s/%s", version, data["rotation_id"], data["public_key"], h.RotationID, h.PublicKey)
		}
	}

	t.Run("first delivery", func(t *testing.T) {
		name := agent(t)
		h := newHandoff(t, account, name, "r1", t0, false)
		deliver(t, h, "v1:prev0")
		_, data := current(t, name)
		want := map[string]any{
			"creds": string(h.Creds), "jwt": h.JWT, "seed": string(h.Seed), "public_key": h.PublicKey,
			"rotation_id": "r1", "issued_at": h.IssuedAt.UTC().Format(time.RFC3339),
			"expires_at": h.ExpiresAt.UTC().Format(time.RFC3339),
		}
		if len(data) != len(want) {
			t.Errorf("fields: got %d %v, want %d", len(data), keys(data), len(want))
		}
		for k, w := range want {
			if data[k] != w {
				t.Errorf("field %s: got %v, want %v", k, data[k], w)
			}
		}
	})

	t.Run("second rotation", func(t *testing.T) {
		name := agent(t)
		h1 := newHandoff(t, account, name, "r1", t0, false)
		h2 := newHandoff(t, account, name, "r2", t0.Add(time.Minute), false)
		deliver(t, h1, "v1:prev0")
		deliver(t, h2, "v2:prev1")
		wantCurrent(t, name, 2, h2)
	})

	t.Run("retry is idempotent", func(t *testing.T) {
		name := agent(t)
		h1 := newHandoff(t, account, name, "r1", t0, false)
		h2 := newHandoff(t, account, name, "r2", t0.Add(time.Minute), false)
		deliver(t, h1, "v1:prev0")
		deliver(t, h2, "v2:prev1")
		deliver(t, h2, "v2:prev1")
		deliver(t, h2, "v2:prev1")
		md, err := kv.GetMetadata(ctx, v.Path(account, name))
		if err != nil {
			t.Fatal(err)
		}
		if md.CurrentVersion != 2 || len(md.Versions) != 2 {
			t.Fatalf("got current version %d and %d versions, want 2 and 2", md.CurrentVersion, len(md.Versions))
		}
	})

	t.Run("newer version wins", func(t *testing.T) {
		name := agent(t)
		path := v.Path(account, name)
		h1 := newHandoff(t, account, name, "r1", t0, false)
		h2 := newHandoff(t, account, name, "r2", t0.Add(time.Minute), false)
		deliver(t, h1, "v1:prev0")
		deliver(t, h2, "v2:prev1")

		// Someone else writes between Deliver's read and its write.
		other := map[string]any{"public_key": "UOTHER", "rotation_id": "elsewhere"}
		var once sync.Once
		racing := client.WithRequestCallbacks(func(r *vaultapi.Request) {
			if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/data/"+path) {
				once.Do(func() {
					if _, err := kv.Put(ctx, path, other); err != nil {
						t.Errorf("competing write: %v", err)
					}
				})
			}
		})
		h3 := newHandoff(t, account, name, "r3", t0.Add(2*time.Minute), false)
		_, err := newVault(t, racing).Deliver(ctx, h3)
		if !errors.Is(err, rotatord.ErrConflict) || !strings.Contains(err.Error(), "check-and-set") {
			t.Fatalf("stale deliver: got %v, want a check-and-set conflict", err)
		}
		if n, data := current(t, name); n != 3 || data["rotation_id"] != "elsewhere" {
			t.Fatalf("got version %d %v, want version 3 of the other writer", n, data["rotation_id"])
		}

		// Rolling back r2 must not undo the other writer's version.
		if err := v.Restore(ctx, h2, "v2:prev1"); err != nil {
			t.Fatalf("restore: %v", err)
		}
		if n, data := current(t, name); n != 3 || data["rotation_id"] != "elsewhere" {
			t.Fatalf("after restore: got version %d %v, want version 3 untouched", n, data["rotation_id"])
		}

		// A late retry of an older rotation does not replace newer creds.
		deliver(t, newHandoff(t, account, name, "r4", t0.Add(3*time.Minute), false), "v4:prev3")
		if _, err := v.Deliver(ctx, h2); !errors.Is(err, rotatord.ErrConflict) {
			t.Fatalf("late retry of r2: got %v, want a conflict", err)
		}
		if n, _ := current(t, name); n != 4 {
			t.Fatalf("got version %d, want 4", n)
		}
	})

	t.Run("restore puts the previous creds back", func(t *testing.T) {
		name := agent(t)
		h1 := newHandoff(t, account, name, "r1", t0, false)
		h2 := newHandoff(t, account, name, "r2", t0.Add(time.Minute), false)
		deliver(t, h1, "v1:prev0")
		deliver(t, h2, "v2:prev1")
		if err := v.Restore(ctx, h2, "v2:prev1"); err != nil {
			t.Fatalf("restore: %v", err)
		}
		wantCurrent(t, name, 3, h1)
		if _, data := current(t, name); data["seed"] != string(h1.Seed) || data["creds"] != string(h1.Creds) {
			t.Fatal("restored version does not hold r1's seed and creds")
		}
		// Restoring twice changes nothing more.
		if err := v.Restore(ctx, h2, "v2:prev1"); err != nil {
			t.Fatalf("second restore: %v", err)
		}
		wantCurrent(t, name, 3, h1)
		// The next rotation writes on top.
		h3 := newHandoff(t, account, name, "r3", t0.Add(2*time.Minute), false)
		deliver(t, h3, "v4:prev3")
	})

	t.Run("restore after a first delivery deletes it", func(t *testing.T) {
		name := agent(t)
		h1 := newHandoff(t, account, name, "r1", t0, false)
		deliver(t, h1, "v1:prev0")
		if err := v.Restore(ctx, h1, "v1:prev0"); err != nil {
			t.Fatalf("restore: %v", err)
		}
		s, err := kv.Get(ctx, v.Path(account, name))
		if err != nil {
			t.Fatal(err)
		}
		if s.Data != nil || s.VersionMetadata.Version != 1 || s.VersionMetadata.DeletionTime.IsZero() {
			t.Fatalf("got version %d deleted at %v with data %v, want version 1 soft-deleted",
				s.VersionMetadata.Version, s.VersionMetadata.DeletionTime, s.Data != nil)
		}
		// The retry writes a new version; rolling that back finds the
		// previous one deleted, so it deletes again.
		h2 := newHandoff(t, account, name, "r2", t0.Add(time.Minute), false)
		deliver(t, h2, "v2:prev1")
		if err := v.Restore(ctx, h2, "v2:prev1"); err != nil {
			t.Fatalf("restore: %v", err)
		}
		if n, data := current(t, name); n != 2 || data != nil {
			t.Fatalf("got version %d with data %v, want version 2 deleted", n, data != nil)
		}
	})

	t.Run("agent-generated key", func(t *testing.T) {
		name := agent(t)
		h := newHandoff(t, account, name, "r1", t0, true)
		deliver(t, h, "v1:prev0")
		_, data := current(t, name)
		for _, k := range []string{"seed", "creds"} {
			if _, ok := data[k]; ok {
				t.Errorf("field %s is present, want it left out for an agent-generated key", k)
			}
		}
		if data["jwt"] != h.JWT || data["public_key"] != h.PublicKey {
			t.Errorf("jwt or public_key missing: %v", keys(data))
		}
	})

	t.Run("refuses names that leave the path", func(t *testing.T) {
		for _, bad := range [][2]string{{account, "../x"}, {account, "a/b"}, {"..", "x"}, {account, ""}} {
			h := newHandoff(t, bad[0], bad[1], "r1", t0, false)
			if _, err := v.Deliver(ctx, h); !errors.Is(err, rotatord.ErrInvalid) {
				t.Errorf("deliver %q/%q: got %v, want invalid", bad[0], bad[1], err)
			}
			if err := v.Restore(ctx, h, "v1:prev0"); !errors.Is(err, rotatord.ErrInvalid) {
				t.Errorf("restore %q/%q: got %v, want invalid", bad[0], bad[1], err)
			}
		}
		if err := v.Restore(ctx, newHandoff(t, account, "x", "r1", t0, false), "v3"); !errors.Is(err, rotatord.ErrInvalid) {
			t.Errorf("restore with a bad ref: got %v, want invalid", err)
		}
	})

	t.Run("check", func(t *testing.T) {
		if err := v.Check(ctx); err != nil {
			t.Fatalf("check: %v", err)
		}
	})
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestVaultFake(t *testing.T) {
	t.Parallel()
	s := vaulttest.New(t, "root-"+randomHex(t, 8))
	kvSuite(t, s.Client(t), "secret", "nats")
}

func TestVaultFakeOtherMount(t *testing.T) {
	t.Parallel()
	s := vaulttest.New(t, "root-"+randomHex(t, 8))
	s.AddMount("kv/rotatord")
	kvSuite(t, s.Client(t), "kv/rotatord", "fleet/nats")
}

// TestVaultReal runs the suite against a real Vault: start one with
// `vault server -dev`, then set VAULT_ADDR and VAULT_TOKEN.
func TestVaultReal(t *testing.T) {
	client := vaulttest.RealClient(t)
	mount := os.Getenv("ROTATORD_TEST_VAULT_MOUNT")
	if mount == "" {
		mount = "secret"
	}
	kvSuite(t, client, mount, "rotatord-test-"+randomHex(t, 6))
}
