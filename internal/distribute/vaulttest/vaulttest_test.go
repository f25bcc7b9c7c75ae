package vaulttest_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/rotatord/rotatord/internal/distribute/vaulttest"
)

// conformance checks KV v2 behaviour through vault/api; it runs against
// the fake and, when VAULT_ADDR and VAULT_TOKEN are set, against a real
// Vault, so the two can be compared.
func conformance(t *testing.T, c *vaultapi.Client, mount, prefix string) {
	ctx := context.Background()
	kv := c.KVv2(mount)
	p := prefix + "/a"
	t.Cleanup(func() { _ = kv.DeleteMetadata(context.Background(), p) })

	if _, err := kv.Get(ctx, p); !errors.Is(err, vaultapi.ErrSecretNotFound) {
		t.Fatalf("missing secret: got %v, want ErrSecretNotFound", err)
	}
	if _, err := kv.GetMetadata(ctx, p); !errors.Is(err, vaultapi.ErrSecretNotFound) {
		t.Fatalf("missing metadata: got %v, want ErrSecretNotFound", err)
	}
	// cas 1 on a missing secret fails; cas 0 creates it.
	if _, err := kv.Put(ctx, p, map[string]any{"n": "1"}, vaultapi.WithCheckAndSet(1)); !isCAS(err) {
		t.Fatalf("cas 1 on a missing secret: got %v, want a check-and-set error", err)
	}
	s, err := kv.Put(ctx, p, map[string]any{"n": "1"}, vaultapi.WithCheckAndSet(0))
	if err != nil || s.VersionMetadata.Version != 1 || s.VersionMetadata.CreatedTime.IsZero() {
		t.Fatalf("cas 0: got %+v, %v", s, err)
	}
	if _, err := kv.Put(ctx, p, map[string]any{"n": "x"}, vaultapi.WithCheckAndSet(0)); !isCAS(err) {
		t.Fatalf("cas 0 on an existing secret: got %v, want a check-and-set error", err)
	}
	if s, err = kv.Put(ctx, p, map[string]any{"n": "2"}, vaultapi.WithCheckAndSet(1)); err != nil || s.VersionMetadata.Version != 2 {
		t.Fatalf("cas 1: got %+v, %v", s, err)
	}
	if s, err = kv.Put(ctx, p, map[string]any{"n": "3"}); err != nil || s.VersionMetadata.Version != 3 {
		t.Fatalf("write without cas: got %+v, %v", s, err)
	}

	// Soft delete of the latest version: reads answer its metadata.
	if err := kv.Delete(ctx, p); err != nil {
		t.Fatal(err)
	}
	s, err = kv.Get(ctx, p)
	if err != nil || s.Data != nil || s.VersionMetadata.Version != 3 || s.VersionMetadata.DeletionTime.IsZero() {
		t.Fatalf("deleted latest: got %+v, %v", s, err)
	}
	// cas still compares with the deleted current version.
	if _, err := kv.Put(ctx, p, map[string]any{"n": "x"}, vaultapi.WithCheckAndSet(2)); !isCAS(err) {
		t.Fatalf("cas 2 with version 3 deleted: got %v, want a check-and-set error", err)
	}
	if err := kv.Undelete(ctx, p, []int{3}); err != nil {
		t.Fatal(err)
	}
	if s, err = kv.Get(ctx, p); err != nil || s.Data["n"] != "3" {
		t.Fatalf("undeleted: got %+v, %v", s, err)
	}
	if err := kv.DeleteVersions(ctx, p, []int{1}); err != nil {
		t.Fatal(err)
	}
	if s, err = kv.GetVersion(ctx, p, 1); err != nil || s.Data != nil || s.VersionMetadata.DeletionTime.IsZero() {
		t.Fatalf("deleted version 1: got %+v, %v", s, err)
	}
	if err := kv.Destroy(ctx, p, []int{2}); err != nil {
		t.Fatal(err)
	}
	if s, err = kv.GetVersion(ctx, p, 2); err != nil || s.Data != nil || !s.VersionMetadata.Destroyed {
		t.Fatalf("destroyed version 2: got %+v, %v", s, err)
	}
	if _, err := kv.GetVersion(ctx, p, 9); !errors.Is(err, vaultapi.ErrSecretNotFound) {
		t.Fatalf("version 9: got %v, want ErrSecretNotFound", err)
	}

	md, err := kv.GetMetadata(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if md.CurrentVersion != 3 || md.OldestVersion != 0 || len(md.Versions) != 3 ||
		md.Versions["1"].DeletionTime.IsZero() || !md.Versions["2"].Destroyed || md.Versions["3"].CreatedTime.IsZero() {
		t.Fatalf("metadata: got %+v", md)
	}

	if s, err = kv.Patch(ctx, p, map[string]any{"m": "x"}); err != nil || s.VersionMetadata.Version != 4 {
		t.Fatalf("patch: got %+v, %v", s, err)
	}
	if s, err = kv.Get(ctx, p); err != nil || s.Data["n"] != "3" || s.Data["m"] != "x" {
		t.Fatalf("patched: got %+v, %v", s, err)
	}

	list, err := c.Logical().ListWithContext(ctx, mount+"/metadata/"+prefix)
	if err != nil || list == nil || !strings.Contains(strings.Join(toStrings(list.Data["keys"]), ","), "a") {
		t.Fatalf("list: got %+v, %v", list, err)
	}

	if err := kv.DeleteMetadata(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, p); !errors.Is(err, vaultapi.ErrSecretNotFound) {
		t.Fatalf("after metadata delete: got %v, want ErrSecretNotFound", err)
	}

	h, err := c.Sys().HealthWithContext(ctx)
	if err != nil || !h.Initialized || h.Sealed {
		t.Fatalf("health: got %+v, %v", h, err)
	}
	self, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil || self.Data["id"] != c.Token() {
		t.Fatalf("lookup-self: %v", err)
	}
}

func isCAS(err error) bool {
	var re *vaultapi.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusBadRequest &&
		strings.Contains(strings.Join(re.Errors, " "), "check-and-set parameter did not match the current version")
}

func toStrings(v any) []string {
	l, _ := v.([]any)
	var out []string
	for _, e := range l {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

func TestConformanceFake(t *testing.T) {
	s := vaulttest.New(t, "root")
	conformance(t, s.Client(t), "secret", "conf")
}

// TestConformanceReal runs the same checks on a real Vault: start one with
// `vault server -dev`, then set VAULT_ADDR and VAULT_TOKEN.
func TestConformanceReal(t *testing.T) {
	c := vaulttest.RealClient(t)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	conformance(t, c, "secret", "rotatord-conformance-"+hex.EncodeToString(b))
}

func TestFailures(t *testing.T) {
	s := vaulttest.New(t, "root")
	c := s.Client(t)
	ctx := context.Background()
	kv := c.KVv2("secret")

	s.FailNext(http.StatusBadGateway, 2)
	for range 2 {
		var re *vaultapi.ResponseError
		if _, err := kv.Put(ctx, "x", map[string]any{"a": "b"}); !errors.As(err, &re) || re.StatusCode != 502 || len(re.Errors) != 1 {
			t.Fatalf("FailNext: got %v, want a 502 with one error", err)
		}
	}
	if _, err := kv.Put(ctx, "x", map[string]any{"a": "b"}); err != nil {
		t.Fatalf("after FailNext: %v", err)
	}

	s.Seal()
	var re *vaultapi.ResponseError
	if _, err := kv.Get(ctx, "x"); !errors.As(err, &re) || re.StatusCode != 503 || re.Errors[0] != "Vault is sealed" {
		t.Fatalf("sealed: got %v", err)
	}
	if h, err := c.Sys().HealthWithContext(ctx); err != nil || !h.Sealed {
		t.Fatalf("sealed health: got %+v, %v", h, err)
	}
	resp, err := http.Get(s.URL() + "/v1/sys/health")
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("sealed health default code: got %v, %v, want 503", resp, err)
	}
	resp.Body.Close()
	s.Unseal()

	s.Deny("team/")
	if _, err := kv.Put(ctx, "team/x", map[string]any{"a": "b"}); !errors.As(err, &re) || re.StatusCode != 403 {
		t.Fatalf("denied: got %v", err)
	}
	if _, err := kv.Put(ctx, "other/x", map[string]any{"a": "b"}); err != nil {
		t.Fatalf("not denied: %v", err)
	}

	wrong := s.Client(t)
	wrong.SetToken("nope")
	if _, err := wrong.KVv2("secret").Get(ctx, "x"); !errors.As(err, &re) || re.StatusCode != 403 {
		t.Fatalf("wrong token: got %v", err)
	}

	s.Down()
	before := s.Requests()
	if _, err := kv.Get(ctx, "x"); err == nil || errors.As(err, &re) {
		t.Fatalf("down: got %v, want a connection error", err)
	}
	if s.Requests() == before {
		t.Fatal("requests while down were not counted")
	}
	s.Up()
	if data, version, ok := s.Secret("x"); !ok || version != 1 || data["a"] != "b" {
		t.Fatalf("Secret: got %v %d %v", data, version, ok)
	}
}
