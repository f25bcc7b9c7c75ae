package registry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/registry"
)

// UseToken finds live tokens only, and writes last_used_at at most once per
// TokenTouchEvery however many requests it authenticates.
func TestUseToken(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	exp := now.Add(time.Hour)
	for _, tok := range []struct {
		name    string
		expires *time.Time
	}{{"forever", nil}, {"hour", &exp}} {
		if err := s.CreateToken(ctx, &rotatord.Token{Name: tok.name, Scope: rotatord.ScopeRead, CreatedBy: "test", ExpiresAt: tok.expires}, []byte(tok.name)); err != nil {
			t.Fatal(err)
		}
	}
	err := s.CreateToken(ctx, &rotatord.Token{Name: "hour", Scope: rotatord.ScopeAdmin}, []byte("other"))
	if !errors.Is(err, rotatord.ErrConflict) {
		t.Fatalf("duplicate name = %v, want ErrConflict", err)
	}

	got, err := s.UseToken(ctx, []byte("hour"), now)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "hour" || got.CreatedBy != "test" || got.ExpiresAt == nil || !got.ExpiresAt.Equal(exp) {
		t.Fatalf("UseToken = %+v", got)
	}
	if _, err := s.UseToken(ctx, []byte("hour"), exp); !errors.Is(err, rotatord.ErrNotFound) {
		t.Fatalf("UseToken at its expiry = %v, want ErrNotFound", err)
	}
	if _, err := s.UseToken(ctx, []byte("nope"), now); !errors.Is(err, rotatord.ErrNotFound) {
		t.Fatalf("UseToken of an unknown hash = %v, want ErrNotFound", err)
	}

	// Writes of last_used_at: count row versions through xmin changes.
	lastUsed := func() (time.Time, string) {
		t.Helper()
		var at time.Time
		var xmin string
		if err := s.Pool().QueryRow(ctx, `SELECT last_used_at, xmin::text FROM api_tokens WHERE name = 'forever'`).Scan(&at, &xmin); err != nil {
			t.Fatal(err)
		}
		return at, xmin
	}
	if _, err := s.UseToken(ctx, []byte("forever"), now); err != nil {
		t.Fatal(err)
	}
	first, xmin := lastUsed()
	if !first.Equal(now) {
		t.Fatalf("last_used_at = %s, want %s", first, now)
	}
	for i := range 50 {
		if _, err := s.UseToken(ctx, []byte("forever"), now.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if at, x := lastUsed(); !at.Equal(first) || x != xmin {
		t.Fatalf("50 uses within a minute rewrote the row (last_used_at %s, xmin %s -> %s)", at, xmin, x)
	}
	later := now.Add(registry.TokenTouchEvery + time.Second)
	if _, err := s.UseToken(ctx, []byte("forever"), later); err != nil {
		t.Fatal(err)
	}
	if at, _ := lastUsed(); !at.Equal(later) {
		t.Fatalf("last_used_at after a minute = %s, want %s", at, later)
	}

	// Revoked: refused at once; the first revocation time stays.
	if err := s.RevokeToken(ctx, "forever", later); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UseToken(ctx, []byte("forever"), later); !errors.Is(err, rotatord.ErrNotFound) {
		t.Fatalf("UseToken after revoke = %v, want ErrNotFound", err)
	}
	if err := s.RevokeToken(ctx, "forever", later.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeToken(ctx, "nobody", later); !errors.Is(err, rotatord.ErrNotFound) {
		t.Fatalf("RevokeToken of an unknown name = %v, want ErrNotFound", err)
	}
	list, err := s.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "forever" || list[0].RevokedAt == nil || !list[0].RevokedAt.Equal(later) ||
		list[0].State(later) != rotatord.TokenRevoked || list[1].State(exp) != rotatord.TokenExpired || list[1].State(now) != rotatord.TokenActive {
		t.Fatalf("ListTokens = %+v", list)
	}

	// Live admin tokens, locked inside a transaction only.
	if _, err := s.LockLiveTokens(ctx, rotatord.ScopeAdmin, now); err == nil {
		t.Fatal("LockLiveTokens outside a transaction succeeded")
	}
	err = s.InTx(ctx, func(ctx context.Context) error {
		names, err := s.LockLiveTokens(ctx, rotatord.ScopeRead, now)
		if err != nil {
			return err
		}
		if len(names) != 1 || names[0] != "hour" {
			t.Errorf("live read tokens = %v, want [hour]", names)
		}
		_, err = s.LockToken(ctx, "nobody")
		if !errors.Is(err, rotatord.ErrNotFound) {
			t.Errorf("LockToken of an unknown name = %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
