package registry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/registry"
)

func TestFindKeyOwnerAndStats(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	acc := account("fleet")
	if err := s.CreateAccount(ctx, acc); err != nil {
		t.Fatal(err)
	}
	g := &rotatord.Agent{AccountID: acc.ID, Name: "kate", Rotation: rotatord.RotationPolicy{Schedule: "@every 24h", Grace: time.Minute},
		Delivery: rotatord.DeliveryPoll, State: rotatord.AgentActive}
	if err := s.CreateAgent(ctx, g); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_800_000_000, 0).UTC()
	c := &rotatord.Credential{AgentID: g.ID, PublicKey: "UKATE1", JWT: "jwt", JWTID: "jti-1", IssuedAt: t0,
		ExpiresAt: t0.Add(time.Hour), State: rotatord.CredentialActive}
	if err := s.CreateCredential(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.SetCredentialState(ctx, c.ID, rotatord.CredentialRetired, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}

	owner, cred, err := s.FindKeyOwner(ctx, "UKATE1", "")
	if err != nil || owner.Name != "kate" || owner.Account != "fleet" || owner.AccountKey != acc.PublicKey ||
		owner.State != rotatord.AgentActive || cred.JWTID != "jti-1" || cred.State != rotatord.CredentialRetired ||
		cred.RevokedAt == nil || !cred.RevokedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("FindKeyOwner = %+v, %+v, %v", owner, cred, err)
	}
	if _, _, err := s.FindKeyOwner(ctx, "UNOBODY", acc.PublicKey); !errors.Is(err, rotatord.ErrNotFound) {
		t.Fatalf("unknown key = %v, want ErrNotFound", err)
	}

	// A deleted agent's key is still known from the account's revocations.
	if err := s.AddRevocations(ctx, acc.ID, []rotatord.Revocation{{PublicKey: "UGONE", RevokedAt: t0, ExpiresAt: t0.Add(time.Hour),
		Agent: "gone", Reason: "deleted"}}); err != nil {
		t.Fatal(err)
	}
	owner, cred, err = s.FindKeyOwner(ctx, "UGONE", acc.PublicKey)
	if err != nil || owner.ID != 0 || owner.Name != "gone" || owner.Account != "fleet" || cred.State != rotatord.CredentialRevoked ||
		cred.JWTID != "" || cred.RevokedAt == nil || !cred.RevokedAt.Equal(t0) {
		t.Fatalf("FindKeyOwner(revoked only) = %+v, %+v, %v", owner, cred, err)
	}
	if _, _, err := s.FindKeyOwner(ctx, "UGONE", ""); !errors.Is(err, rotatord.ErrNotFound) {
		t.Fatalf("revoked-only key without its account = %v, want ErrNotFound", err)
	}

	st, err := s.Stats(ctx, t0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if st.Agents[rotatord.AgentActive] != 1 || len(st.RotationsActive) != 0 || st.Accounts != 1 ||
		st.JWTBytes != int64(len(acc.JWT)) || st.Revocations != 1 || len(st.Largest) != 1 ||
		st.Largest[0] != (registry.AccountStats{Name: "fleet", JWTBytes: int64(len(acc.JWT)), Revocations: 1}) {
		t.Fatalf("Stats = %+v", st)
	}
}

// A deleted agent's key that a rotation had replaced is found as replaced
// (retired), with the time of its replacement.
func TestFindKeyOwnerOfReplacedKeyOfDeletedAgent(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	acc := account("fleet")
	if err := s.CreateAccount(ctx, acc); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_800_000_000, 0).UTC()
	if err := s.AddRevocations(ctx, acc.ID, []rotatord.Revocation{
		{PublicKey: "UOLD", RevokedAt: t0, ExpiresAt: t0.Add(time.Hour), Agent: "gone", Reason: rotatord.RevocationRotated},
		{PublicKey: "ULAST", RevokedAt: t0.Add(time.Minute), ExpiresAt: t0.Add(time.Hour), Agent: "gone", Reason: "agent deleted"},
	}); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]struct {
		state string
		at    time.Time
	}{"UOLD": {rotatord.CredentialRetired, t0}, "ULAST": {rotatord.CredentialRevoked, t0.Add(time.Minute)}} {
		owner, cred, err := s.FindKeyOwner(ctx, key, acc.PublicKey)
		if err != nil || owner.Name != "gone" || cred.State != want.state || cred.RevokedAt == nil || !cred.RevokedAt.Equal(want.at) {
			t.Errorf("FindKeyOwner(%s) = %+v, %+v, %v; want state %s at %s", key, owner, cred, err, want.state, want.at)
		}
	}
}
