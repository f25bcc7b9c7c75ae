package distribute_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/distribute"
	"github.com/rotatord/rotatord/internal/distribute/vaulttest"
)

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// canWrite checks that the client's current token works.
func canWrite(t *testing.T, c *vaultapi.Client) {
	t.Helper()
	if _, err := c.KVv2("secret").Put(context.Background(), "probe", map[string]any{"ok": true}); err != nil {
		t.Fatalf("write with the client's token: %v", err)
	}
}

func TestNewVaultClientToken(t *testing.T) {
	t.Parallel()
	s := vaulttest.New(t, "root-token")
	s.SetTokenTTL(2*time.Second, 0)
	tok := s.NewToken()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	c, err := distribute.NewVaultClient(ctx, distribute.VaultAuth{Addr: s.URL(), Token: tok}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Token() != tok {
		t.Fatal("client does not use the given token")
	}
	if got, want := c.ClientTimeout(), distribute.DefaultVaultTimeout; got != want {
		t.Errorf("client timeout: got %v, want %v", got, want)
	}
	// The watcher renews at once, then about every 2/3 of the 2s TTL; the
	// token outlives its first TTL only if that works.
	waitFor(t, 4*time.Second, "two renewals", func() bool { return s.Renewals() >= 2 })
	canWrite(t, c)

	// The root token never expires: nothing to renew.
	before := s.Renewals()
	root, err := distribute.NewVaultClient(ctx, distribute.VaultAuth{Addr: s.URL(), Method: "token", Token: "root-token"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	canWrite(t, root)
	cancel()
	time.Sleep(50 * time.Millisecond)
	if got := s.Renewals(); got > before+1 {
		t.Errorf("renewals after cancel: got %d, want at most %d", got, before+1)
	}
}

func TestNewVaultClientAppRole(t *testing.T) {
	t.Parallel()
	s := vaulttest.New(t, "root-token")
	s.SetAppRole("role-1", "secret-id-never-shown")
	// The token cannot live past 2s: renewal stops, and the client must log
	// in again.
	s.SetTokenTTL(time.Second, 2*time.Second)
	file := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(file, []byte("secret-id-never-shown\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	c, err := distribute.NewVaultClient(ctx, distribute.VaultAuth{Addr: s.URL(), Method: "approle",
		RoleID: "role-1", SecretIDFile: file}, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := c.Token()
	canWrite(t, c)
	waitFor(t, 4*time.Second, "a renewal, a second login and its new token", func() bool {
		return s.Renewals() >= 1 && s.Logins() >= 2 && c.Token() != first
	})
	canWrite(t, c)
}

func TestNewVaultClientKubernetes(t *testing.T) {
	t.Parallel()
	s := vaulttest.New(t, "root-token")
	s.SetKubernetes("rotatord", "eyJhbGciOiJSUzI1NiJ9.sa-token.sig")
	s.SetTokenTTL(time.Hour, 0)
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("eyJhbGciOiJSUzI1NiJ9.sa-token.sig"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := distribute.NewVaultClient(ctx, distribute.VaultAuth{Addr: s.URL(), Method: "kubernetes",
		K8sRole: "rotatord", K8sTokenPath: file}, nil)
	if err != nil {
		t.Fatal(err)
	}
	canWrite(t, c)
	if s.Logins() != 1 {
		t.Fatalf("got %d logins, want 1", s.Logins())
	}
	waitFor(t, 2*time.Second, "a renewal", func() bool { return s.Renewals() >= 1 })
}

func TestNewVaultClientErrors(t *testing.T) {
	t.Parallel()
	s := vaulttest.New(t, "root-token")
	s.SetAppRole("role-1", "right-secret-id")
	s.SetKubernetes("rotatord", "sa-token")
	dir := t.TempDir()
	wrong := filepath.Join(dir, "wrong")
	if err := os.WriteFile(wrong, []byte("wrong-secret-id-never-shown"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	for _, tc := range []struct {
		name string
		auth distribute.VaultAuth
		is   error
		want string
	}{
		{"unknown method", distribute.VaultAuth{Addr: s.URL(), Method: "ldap"}, rotatord.ErrInvalid, "unknown vault auth method"},
		{"approle without role", distribute.VaultAuth{Addr: s.URL(), Method: "approle", SecretIDFile: wrong}, rotatord.ErrInvalid, "role ID"},
		{"approle wrong secret", distribute.VaultAuth{Addr: s.URL(), Method: "approle", RoleID: "role-1", SecretIDFile: wrong},
			nil, "invalid role or secret ID"},
		{"approle missing file", distribute.VaultAuth{Addr: s.URL(), Method: "approle", RoleID: "role-1",
			SecretIDFile: filepath.Join(dir, "missing")}, rotatord.ErrInvalid, filepath.Join(dir, "missing")},
		{"kubernetes without role", distribute.VaultAuth{Addr: s.URL(), Method: "kubernetes"}, rotatord.ErrInvalid, "role"},
		{"kubernetes wrong role", distribute.VaultAuth{Addr: s.URL(), Method: "kubernetes", K8sRole: "other", K8sTokenPath: wrong},
			nil, "invalid role name"},
		{"kubernetes missing token", distribute.VaultAuth{Addr: s.URL(), Method: "kubernetes", K8sRole: "rotatord",
			K8sTokenPath: filepath.Join(dir, "nope")}, rotatord.ErrInvalid, "nope"},
		{"bad token", distribute.VaultAuth{Addr: s.URL(), Token: "hvs.bad-token-never-shown"}, rotatord.ErrUnavailable, "permission denied"},
	} {
		_, err := distribute.NewVaultClient(ctx, tc.auth, nil)
		if err == nil {
			t.Errorf("%s: got no error", tc.name)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
		if tc.is != nil && !errors.Is(err, tc.is) {
			t.Errorf("%s: got %v, want errors.Is %v", tc.name, err, tc.is)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %q, want it to mention %q", tc.name, err, tc.want)
		}
		for _, secret := range []string{"never-shown", "right-secret-id", "sa-token"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: error shows a secret: %q", tc.name, err)
			}
		}
	}
}

// TestNewVaultClientVaultAway starts while Vault is sealed: the client
// logs in once Vault is back. Without retries (VAULT_MAX_RETRIES) the
// first attempt fails at once; the environment makes it sequential.
func TestNewVaultClientVaultAway(t *testing.T) {
	t.Setenv("VAULT_MAX_RETRIES", "0")
	s := vaulttest.New(t, "root-token")
	s.SetAppRole("role-1", "secret-id")
	file := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(file, []byte("secret-id"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Seal()
	c, err := distribute.NewVaultClient(t.Context(), distribute.VaultAuth{Addr: s.URL(), Method: "approle",
		RoleID: "role-1", SecretIDFile: file}, nil)
	if err != nil {
		t.Fatalf("sealed at start: %v", err)
	}
	if c.Token() != "" {
		t.Fatal("client has a token before any login")
	}
	s.Unseal()
	waitFor(t, 3*time.Second, "a login after unseal", func() bool { return s.Logins() >= 1 && c.Token() != "" })
	canWrite(t, c)
}

// TestNewVaultClientEnvToken reads VAULT_ADDR and VAULT_TOKEN like the
// vault CLI; it changes the environment, so it does not run in parallel.
func TestNewVaultClientEnvToken(t *testing.T) {
	s := vaulttest.New(t, "root-token")
	t.Setenv("VAULT_ADDR", s.URL())
	t.Setenv("VAULT_TOKEN", "root-token")
	c, err := distribute.NewVaultClient(t.Context(), distribute.VaultAuth{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	canWrite(t, c)

	// Vault down: the client comes back anyway (without retries, to keep
	// it quick), and deliveries say why they fail.
	t.Setenv("VAULT_MAX_RETRIES", "0")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	down, err := distribute.NewVaultClient(ctx, distribute.VaultAuth{Addr: closedAddr(t), Token: "hvs.token-never-shown"}, nil)
	if err != nil {
		t.Fatalf("vault down: %v", err)
	}
	v, err := distribute.NewVault(distribute.VaultConfig{Client: down})
	if err != nil {
		t.Fatal(err)
	}
	h := newHandoff(t, "acme", "bot", "r1", time.Now(), false)
	_, err = v.Deliver(ctx, h)
	checkErr(t, "deliver", err, []string{"connection refused"}, rotatord.ErrUnavailable, "hvs.token-never-shown", h)
	cancel()

	t.Setenv("VAULT_TOKEN", "")
	if _, err := distribute.NewVaultClient(t.Context(), distribute.VaultAuth{}, nil); !errors.Is(err, rotatord.ErrInvalid) {
		t.Fatalf("no token: got %v, want invalid", err)
	}
}

// closedAddr returns the address of a port nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + l.Addr().String()
	l.Close()
	return addr
}

func TestVaultConnectionRefused(t *testing.T) {
	t.Parallel()
	cfg := vaultapi.DefaultConfig()
	cfg.Address, cfg.MaxRetries = closedAddr(t), 0
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken("hvs.token-never-shown")
	v, err := distribute.NewVault(distribute.VaultConfig{Client: c})
	if err != nil {
		t.Fatal(err)
	}
	h := newHandoff(t, "acme", "bot", "r1", time.Now(), false)
	_, err = v.Deliver(t.Context(), h)
	checkErr(t, "deliver", err, []string{"vault unavailable: connection refused"}, rotatord.ErrUnavailable, "hvs.token-never-shown", h)
	checkErr(t, "check", v.Check(t.Context()), []string{"vault unavailable: connection refused"}, rotatord.ErrUnavailable, "hvs.token-never-shown", h)
}
