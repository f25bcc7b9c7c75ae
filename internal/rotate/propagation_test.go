package rotate_test

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/pgtest"
	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/seal"
)

// A confirmed rotation is completed only by the re-sign that revokes its
// old key, which any replica may make: a replica that stops after the
// confirmation leaves nothing behind that another cannot finish.
func TestCompletedOnlyAfterResign(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	store, err := registry.Open(context.Background(), pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	key := make([]byte, seal.KeySize)
	rand.Read(key)
	sealer, _ := seal.New(key)
	a := rotate.New(rotate.Config{Store: store, Sealer: sealer, Now: clk.Now, NoJitter: true})
	b := rotate.New(rotate.Config{Store: store, Sealer: sealer, Now: clk.Now, NoJitter: true})
	ctx := context.Background()
	if _, _, err := a.Init(ctx, "test", "op"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kate", "lee"} {
		if _, _, err := a.CreateAgent(ctx, "test", rotate.AgentInput{Name: name, Account: "fleet"}); err != nil {
			t.Fatal(err)
		}
	}
	start := func(name string) *rotatord.Rotation {
		t.Helper()
		r, err := a.StartRotation(ctx, "test", name, rotatord.TriggerManual)
		if err != nil {
			t.Fatal(err)
		}
		if r, err = a.Confirm(ctx, r.NewKey, "", "event"); err != nil || r.State != rotatord.RotationConfirmed {
			t.Fatalf("confirm = %v, %v; want confirmed", r, err)
		}
		return r
	}
	kate, lee := start("kate"), start("lee")
	for _, r := range []*rotatord.Rotation{kate, lee} {
		got, err := a.Rotation(ctx, r.ID)
		if err != nil || got.State != rotatord.RotationConfirmed || got.OldRevokedAt == nil || got.ResignVersion != 0 {
			t.Fatalf("rotation before the re-sign = %+v, %v; want confirmed, old key's revocation recorded", got, err)
		}
		// The old key is retired and revoked in the registry, but no stored
		// account JWT revokes it yet.
		if revs := accountRevocations(t, a, "fleet"); revs[r.OldKey] != 0 {
			t.Fatalf("the account jwt revokes %s before the re-sign", r.OldKey)
		}
	}
	// lee is revoked meanwhile: its confirmed rotation is not rolled back;
	// the revocation's re-sign carries its old key and completes it.
	if _, err := a.RevokeAgent(ctx, "test", "lee", "left"); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.Rotation(ctx, lee.ID); got.State != rotatord.RotationCompleted {
		t.Fatalf("lee's rotation after its agent's revocation = %s, want completed", got.State)
	}
	if got, _ := a.Rotation(ctx, kate.ID); got.State != rotatord.RotationCompleted {
		// The revocation's re-sign carries kate's old key too.
		t.Fatalf("kate's rotation after the re-sign of the account = %s, want completed", got.State)
	}

	// Replica b completes a rotation confirmed on replica a.
	r := start("kate")
	if n, err := b.ResignQueued(ctx); err != nil || n != 1 {
		t.Fatalf("replica b re-signed %d accounts, %v; want 1", n, err)
	}
	got, err := b.Rotation(ctx, r.ID)
	if err != nil || got.State != rotatord.RotationCompleted || got.FinishedAt == nil {
		t.Fatalf("rotation after replica b's re-sign = %+v, %v; want completed", got, err)
	}
	acc, _ := b.Account(ctx, "fleet")
	if got.ResignVersion != acc.JWTVersion {
		t.Fatalf("re-sign version %d, want the account's current %d", got.ResignVersion, acc.JWTVersion)
	}
	ac, _ := jwt.DecodeAccountClaims(acc.JWT)
	old, _ := store.FindCredentialByPublicKey(ctx, r.OldKey)
	if !ac.Revocations.IsRevoked(r.OldKey, old.IssuedAt) {
		t.Fatal("the rotation is completed but the account jwt does not revoke its old key")
	}
	events, _ := b.Audit(ctx, rotatord.AuditFilter{Agent: "kate", Action: "rotation.complete", Limit: 10})
	if len(events) != 2 || events[len(events)-1].Rotation != r.ID {
		t.Fatalf("rotation.complete events of kate = %+v; want one per rotation", events)
	}
}
