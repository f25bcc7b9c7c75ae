package distribute_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/distribute"
	"github.com/rotatord/rotatord/internal/distribute/vaulttest"
)

func TestNewVaultConfig(t *testing.T) {
	t.Parallel()
	s := vaulttest.New(t, "root")
	client := s.Client(t)
	client.SetClientTimeout(0)
	v, err := distribute.NewVault(distribute.VaultConfig{Client: client})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := v.Path("acme", "bot"), "nats/acme/bot"; got != want {
		t.Errorf("default path: got %q, want %q", got, want)
	}
	if got, want := v.Mount(), "secret"; got != want {
		t.Errorf("default mount: got %q, want %q", got, want)
	}
	if got, want := client.ClientTimeout(), distribute.DefaultVaultTimeout; got != want {
		t.Errorf("client timeout: got %v, want %v", got, want)
	}
	if got, want := v.Path("{account}", "{agent}"), "nats/{account}/{agent}"; got != want {
		t.Errorf("template shown as a path: got %q, want %q", got, want)
	}

	for _, tc := range []struct {
		name string
		cfg  distribute.VaultConfig
	}{
		{"no client", distribute.VaultConfig{}},
		{"no agent", distribute.VaultConfig{Client: client, PathTemplate: "nats/{account}"}},
		{"unknown placeholder", distribute.VaultConfig{Client: client, PathTemplate: "nats/{agent}/{team}"}},
		{"dot dot", distribute.VaultConfig{Client: client, PathTemplate: "nats/../{agent}"}},
		{"leading slash", distribute.VaultConfig{Client: client, PathTemplate: "/nats/{agent}"}},
		{"double slash", distribute.VaultConfig{Client: client, PathTemplate: "nats//{agent}"}},
		{"space", distribute.VaultConfig{Client: client, PathTemplate: "nats/{agent} x"}},
		{"bad mount", distribute.VaultConfig{Client: client, Mount: "a/../b"}},
	} {
		if _, err := distribute.NewVault(tc.cfg); !errors.Is(err, rotatord.ErrInvalid) {
			t.Errorf("%s: got %v, want invalid", tc.name, err)
		}
	}
	for _, ok := range []string{"{agent}", "nats/{account}/{agent}", "teams/{account}-nats/{agent}.creds"} {
		if _, err := distribute.NewVault(distribute.VaultConfig{Client: client, PathTemplate: ok}); err != nil {
			t.Errorf("template %q: %v", ok, err)
		}
	}
}

// TestVaultFailures checks that every way Vault can fail gives an error
// that says what happened, writes nothing, and never shows a secret.
func TestVaultFailures(t *testing.T) {
	t.Parallel()
	const token = "hvs.root-token-never-shown"
	for _, tc := range []struct {
		name    string
		setup   func(s *vaulttest.Server, c *vaultapi.Client)
		want    []string
		is      error
		restore bool // Restore fails the same way
	}{
		{"down", func(s *vaulttest.Server, _ *vaultapi.Client) { s.Down() },
			[]string{"vault unavailable", "read vault secret secret/nats/acme/bot"}, rotatord.ErrUnavailable, true},
		{"sealed", func(s *vaulttest.Server, _ *vaultapi.Client) { s.Seal() },
			[]string{"vault is sealed"}, rotatord.ErrUnavailable, true},
		{"denied path", func(s *vaulttest.Server, _ *vaultapi.Client) { s.Deny("nats/acme") },
			[]string{"vault refused: permission denied (403)"}, rotatord.ErrUnavailable, true},
		{"wrong token", func(_ *vaulttest.Server, c *vaultapi.Client) { c.SetToken("hvs.wrong-token-never-shown") },
			[]string{"permission denied"}, rotatord.ErrUnavailable, true},
		{"internal error", func(s *vaulttest.Server, _ *vaultapi.Client) { s.FailNext(http.StatusInternalServerError, 1) },
			[]string{"vault unavailable: internal error (500)"}, rotatord.ErrUnavailable, false},
		{"bad gateway", func(s *vaulttest.Server, _ *vaultapi.Client) { s.FailNext(http.StatusBadGateway, 1) },
			[]string{"vault unavailable", "(502)"}, rotatord.ErrUnavailable, false},
		{"rate limited", func(s *vaulttest.Server, _ *vaultapi.Client) { s.FailNext(http.StatusTooManyRequests, 1) },
			[]string{"rate limited (429)"}, rotatord.ErrUnavailable, false},
		{"timeout", func(s *vaulttest.Server, c *vaultapi.Client) {
			c.SetClientTimeout(200 * time.Millisecond)
			s.SetDelay(2 * time.Second)
		}, []string{"vault unavailable: request timed out"}, rotatord.ErrUnavailable, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := vaulttest.New(t, token)
			c := s.Client(t)
			v, err := distribute.NewVault(distribute.VaultConfig{Client: c})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			h1 := newHandoff(t, "acme", "bot", "r1", time.Now().Add(-time.Hour), false)
			ref, err := v.Deliver(ctx, h1)
			if err != nil {
				t.Fatal(err)
			}
			h2 := newHandoff(t, "acme", "bot", "r2", time.Now(), false)
			tc.setup(s, c)

			start := time.Now()
			_, err = v.Deliver(ctx, h2)
			if took := time.Since(start); took > 1500*time.Millisecond {
				t.Errorf("deliver took %v", took)
			}
			checkErr(t, "deliver", err, tc.want, tc.is, token, h1, h2)
			if tc.restore {
				checkErr(t, "restore", v.Restore(ctx, h1, ref), tc.want, tc.is, token, h1, h2)
			}
			if err := v.Check(ctx); tc.name == "down" || tc.name == "sealed" || tc.name == "timeout" {
				checkErr(t, "check", err, tc.want[:1], tc.is, token, h1, h2)
			}

			if _, version, _ := s.Secret("nats/acme/bot"); version != 1 {
				t.Errorf("got version %d after the failure, want 1 (nothing written)", version)
			}
		})
	}
}

func checkErr(t *testing.T, op string, err error, want []string, is error, token string, hs ...rotatord.Handoff) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got no error, want %q", op, want)
	}
	t.Logf("%s: %v", op, err)
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: got %q, want it to mention %q", op, err, w)
		}
	}
	if !errors.Is(err, is) {
		t.Errorf("%s: got %v (code %s), want errors.Is %v", op, err, rotatord.ErrorCode(err), is)
	}
	if msg := err.Error(); strings.ContainsAny(msg, "\n") {
		t.Errorf("%s: error spans lines: %q", op, msg)
	}
	text := err.Error() + rotatord.ErrorMessage(err)
	for _, secret := range []string{token, "hvs.wrong-token-never-shown"} {
		if strings.Contains(text, secret) {
			t.Errorf("%s: error shows a token: %q", op, text)
		}
	}
	for _, h := range hs {
		if strings.Contains(text, string(h.Seed)) || strings.Contains(text, string(h.Seed[:12])) || strings.Contains(text, string(h.Creds)) {
			t.Errorf("%s: error shows a seed or creds: %q", op, text)
		}
	}
}

func TestVaultRecovers(t *testing.T) {
	t.Parallel()
	s := vaulttest.New(t, "root")
	v, err := distribute.NewVault(distribute.VaultConfig{Client: s.Client(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h := newHandoff(t, "acme", "bot", "r1", time.Now(), false)

	s.Down()
	if _, err := v.Deliver(ctx, h); err == nil {
		t.Fatal("deliver while down: got no error")
	}
	s.Up()
	s.Seal()
	if _, err := v.Deliver(ctx, h); err == nil {
		t.Fatal("deliver while sealed: got no error")
	}
	s.Unseal()
	if err := v.Check(ctx); err != nil {
		t.Fatalf("check: %v", err)
	}
	ref, err := v.Deliver(ctx, h)
	if err != nil || ref != "v1:prev0" {
		t.Fatalf("deliver after recovery: got %q, %v, want v1:prev0", ref, err)
	}
	if data, version, ok := s.Secret("nats/acme/bot"); !ok || version != 1 || data["rotation_id"] != "r1" {
		t.Fatalf("got %v version %d ok %v, want r1 at version 1", data["rotation_id"], version, ok)
	}
}

// TestVaultWriteFails makes the write itself fail after a good read.
func TestVaultWriteFails(t *testing.T) {
	t.Parallel()
	s := vaulttest.New(t, "root-token")
	c := s.Client(t).WithRequestCallbacks(func(r *vaultapi.Request) {
		if r.Method == http.MethodPut {
			s.FailNext(http.StatusServiceUnavailable, 1) // Vault-style "Vault is sealed"
		}
	})
	v, err := distribute.NewVault(distribute.VaultConfig{Client: c})
	if err != nil {
		t.Fatal(err)
	}
	h := newHandoff(t, "acme", "bot", "r1", time.Now(), false)
	_, err = v.Deliver(context.Background(), h)
	checkErr(t, "deliver", err, []string{"write vault secret secret/nats/acme/bot", "vault is sealed"}, rotatord.ErrUnavailable, "root-token", h)
	if _, version, _ := s.Secret("nats/acme/bot"); version != 0 {
		t.Fatalf("got version %d, want nothing written", version)
	}
}
