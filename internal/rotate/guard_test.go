package rotate_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/internal/rotate"
)

// setIssuedAt moves the iat rotatord records for the agent's credentials in
// use to at, as if they had been issued then.
func setIssuedAt(t testing.TB, store *registry.Store, agent string, at time.Time) {
	t.Helper()
	tag, err := store.Pool().Exec(context.Background(), `UPDATE credentials c SET issued_at = $2 FROM agents g
		WHERE g.id = c.agent_id AND g.name = $1 AND c.state IN ('pending', 'active')`, agent, at)
	if err != nil || tag.RowsAffected() == 0 {
		t.Fatalf("set issued_at of %s: %v (%d rows)", agent, err, tag.RowsAffected())
	}
}

// accountClaims returns the named account and its decoded JWT.
func accountClaims(t testing.TB, svc *rotate.Service, name string) (*rotatord.Account, *jwt.AccountClaims) {
	t.Helper()
	acc, err := svc.Account(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(acc.JWT)
	if err != nil {
		t.Fatal(err)
	}
	return acc, ac
}

// refuses reports whether the account JWT refuses a JWT of pub issued at iat.
func refuses(ac *jwt.AccountClaims, pub string, iat time.Time) bool {
	uc := jwt.NewUserClaims(pub)
	uc.IssuedAt = iat.Unix()
	return ac.IsClaimRevoked(uc)
}

// key is a credential in use: its public key and recorded iat.
type key struct {
	pub string
	iat time.Time
}

// activeKey returns the agent's active key.
func activeKey(t testing.TB, svc *rotate.Service, agent string) key {
	t.Helper()
	g, err := svc.Agent(context.Background(), agent)
	if err != nil || g.Active == nil {
		t.Fatalf("agent %s: %v, active %v", agent, err, g)
	}
	return key{g.Active.PublicKey, g.Active.IssuedAt}
}

func alertsOf(t testing.TB, store *registry.Store, kind string) []*rotatord.OutboxAlert {
	t.Helper()
	all, err := store.ListAlerts(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []*rotatord.OutboxAlert
	for _, a := range all {
		if a.Kind == kind {
			out = append(out, a)
		}
	}
	return out
}

func mustCreate(t testing.TB, svc *rotate.Service, account string, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, _, err := svc.CreateAgent(context.Background(), "test", rotate.AgentInput{Name: name, Account: account}); err != nil {
			t.Fatal(err)
		}
	}
}

func mustRevoke(t testing.TB, svc *rotate.Service, name string) {
	t.Helper()
	res, err := svc.RevokeAgent(context.Background(), "test", name, "test")
	if err != nil || len(res.RevokedKeys) == 0 {
		t.Fatalf("revoke %s = %+v, %v", name, res, err)
	}
}

// Every kind of entry folds into '*' once no credential in use is as old
// as the JWT it revokes: operator revocations and deletes (which used to
// record no iat and stayed until their JWT expired), and entries whose iat
// is unknown (imported), on their own time. An unknown-iat entry revoking
// up to a time still ahead stays: folding it would let JWTs back in.
func TestEveryRevocationFolds(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	if _, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, svc, "fleet", "revoked", "deleted", "keeper")
	now := clk.Now()
	setIssuedAt(t, store, "revoked", now.Add(-2*time.Hour))
	setIssuedAt(t, store, "deleted", now.Add(-2*time.Hour))
	revoked, deleted, keeper := activeKey(t, svc, "revoked"), activeKey(t, svc, "deleted"), activeKey(t, svc, "keeper")

	mustRevoke(t, svc, "revoked")
	if err := svc.DeleteAgent(ctx, "test", "deleted"); err != nil {
		t.Fatal(err)
	}
	// A revocation is signed in at once as its own entry; folding is the
	// sweep's work.
	if _, ac := accountClaims(t, svc, "fleet"); len(ac.Revocations) != 2 || !refuses(ac, revoked.pub, revoked.iat) || !refuses(ac, deleted.pub, deleted.iat) {
		t.Fatalf("revocations = %v, want one entry per revoked key", ac.Revocations)
	}
	accID := mustAccountID(t, svc)
	if err := store.AddRevocations(ctx, accID, []rotatord.Revocation{
		{PublicKey: "UIMPORTEDEARLIER", RevokedAt: now.Add(-time.Hour), ExpiresAt: rotate.NeverExpires, Reason: "imported"},
		{PublicKey: "UIMPORTEDAHEAD", RevokedAt: now.Add(time.Hour), ExpiresAt: rotate.NeverExpires, Reason: "imported"},
	}); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Minute)
	if _, err := svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	_, ac := accountClaims(t, svc, "fleet")
	if len(ac.Revocations) != 2 || ac.Revocations[jwt.All] == 0 || ac.Revocations["UIMPORTEDAHEAD"] == 0 {
		t.Fatalf("revocations after the sweep = %v, want '*' and the entry revoking up to an hour ahead", ac.Revocations)
	}
	for _, k := range []key{revoked, deleted, {"UIMPORTEDEARLIER", now.Add(-time.Hour)}} {
		if !refuses(ac, k.pub, k.iat) {
			t.Errorf("the folded JWT no longer refuses %s issued at %s", k.pub, k.iat)
		}
	}
	if refuses(ac, "UIMPORTEDAHEAD", now.Add(30*time.Minute)) != true {
		t.Error("an imported entry revoking up to an hour ahead was folded into an earlier '*'")
	}
	if refuses(ac, keeper.pub, keeper.iat) {
		t.Errorf("'*' at %d refuses the credential in use issued at %d", ac.Revocations[jwt.All], keeper.iat.Unix())
	}
}

// A credential whose JWT expired (an agent away for days) is refused by the
// servers anyway: it does not keep older entries from folding.
func TestExpiredCredentialsDoNotHoldFoldingBack(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	if _, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, svc, "fleet", "away", "rotated")
	now := clk.Now()
	if _, err := store.Pool().Exec(ctx, `UPDATE credentials c SET issued_at = $1, expires_at = $2 FROM agents g
		WHERE g.id = c.agent_id AND g.name = 'away'`, now.Add(-30*time.Hour), now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	setIssuedAt(t, store, "rotated", now.Add(-2*time.Hour))
	old := activeKey(t, svc, "rotated")
	rotateAgent(t, svc, "rotated")
	clk.Add(2 * time.Minute)
	if _, err := svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	_, ac := accountClaims(t, svc, "fleet")
	if len(ac.Revocations) != 1 || ac.Revocations[jwt.All] == 0 || !refuses(ac, old.pub, old.iat) {
		t.Fatalf("revocations = %v, want a single '*' refusing the rotated key", ac.Revocations)
	}
	if refuses(ac, activeKey(t, svc, "rotated").pub, activeKey(t, svc, "rotated").iat) {
		t.Fatal("'*' refuses the new credential")
	}
}

// guardFleet makes an account "fleet" under a small guard: an agent
// "anchor" whose credential is older than everyone's (it keeps every entry
// from folding), victims v00..v(n-1) issued a second apart after it, and a
// "bystander" issued now.
func guardFleet(t *testing.T, clk *fakeClock, guard, n int) (*rotate.Service, *registry.Store, map[string]key) {
	t.Helper()
	svc, store := newServiceWith(t, clk, rotate.Config{NoJitter: true, MaxAccountJWTBytes: guard})
	ctx := context.Background()
	if _, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	now := clk.Now()
	keys := map[string]key{}
	mustCreate(t, svc, "fleet", "anchor", "bystander")
	setIssuedAt(t, store, "anchor", now.Add(-3*time.Hour))
	for i := range n {
		name := fmt.Sprintf("v%02d", i)
		mustCreate(t, svc, "fleet", name)
		setIssuedAt(t, store, name, now.Add(-2*time.Hour+time.Duration(i)*time.Second))
	}
	for _, name := range append([]string{"anchor", "bystander"}, victims(0, n)...) {
		keys[name] = activeKey(t, svc, name)
	}
	return svc, store, keys
}

func victims(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("v%02d", i))
	}
	return out
}

func nextRotation(t testing.TB, svc *rotate.Service, agent string) time.Time {
	t.Helper()
	g, err := svc.Agent(context.Background(), agent)
	if err != nil {
		t.Fatal(err)
	}
	return *g.NextRotationAt
}

// Past half the guard, rotatord rotates early the agent whose old
// credential keeps the entries from folding; once it reconnected, the next
// sweep folds them, and the account JWT is small again, without anyone
// being cut off and without the guard being reached.
func TestGuardMakesRoomByRotatingEarly(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{t: time.Now()}
	const guard = 8 << 10
	svc, store, keys := guardFleet(t, clk, guard, 60)
	ctx := context.Background()
	day := clk.Now().Add(23 * time.Hour)

	// Revoked oldest first, each is behind the anchor's credential only.
	var crossed string
	for _, name := range victims(0, 60) {
		mustRevoke(t, svc, name)
		acc, ac := accountClaims(t, svc, "fleet")
		if len(acc.JWT) > guard || !refuses(ac, keys[name].pub, keys[name].iat) {
			t.Fatalf("after revoking %s: %d-byte JWT (guard %d), refuses it: %v", name, len(acc.JWT), guard, refuses(ac, keys[name].pub, keys[name].iat))
		}
		if 2*len(acc.JWT) > guard {
			crossed = name
			break
		}
	}
	if crossed == "" {
		t.Fatal("60 revocations never took the JWT past half the guard")
	}
	if a := alertsOf(t, store, rotate.AlertJWTLarge); len(a) != 1 || a[0].Severity != rotatord.SeverityWarning || !strings.Contains(a[0].Reason, "ROTATORD_MAX_ACCOUNT_JWT_BYTES") {
		t.Fatalf("account_jwt_large alerts = %+v, want one warning naming the limit", a)
	}
	// Only the anchor holds folding back; the victims still valid and the
	// bystander are newer than every entry.
	if next := nextRotation(t, svc, "anchor"); next.After(clk.Now()) {
		t.Fatalf("anchor's next rotation is %s, want due now (%s)", next, clk.Now())
	}
	for _, name := range []string{"bystander", "v59"} {
		if next := nextRotation(t, svc, name); next.Before(day) {
			t.Fatalf("%s was made due (%s) although it holds nothing back", name, next)
		}
	}
	if ev, _ := svc.Audit(ctx, rotatord.AuditFilter{Action: "account.make_room"}); len(ev) == 0 {
		t.Fatal("no account.make_room audit event")
	}

	// The scheduler starts it, the agent reconnects, the sweep folds.
	if res, err := svc.Tick(ctx); err != nil || res.Started != 1 {
		t.Fatalf("tick = %+v, %v; want the anchor's early rotation started", res, err)
	}
	rots, _ := svc.Rotations(ctx, rotatord.RotationFilter{Agent: "anchor", Limit: 1})
	if len(rots) != 1 {
		t.Fatal("no rotation of the anchor")
	}
	if r, err := svc.Confirm(ctx, rots[0].NewKey, "", "event"); err != nil || r.State != rotatord.RotationConfirmed {
		t.Fatalf("confirm = %v, %v", r, err)
	}
	clk.Add(2 * time.Minute)
	if _, err := svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if r, err := svc.Rotation(ctx, rots[0].ID); err != nil || r.State != rotatord.RotationCompleted {
		t.Fatalf("the early rotation after the tick's re-sign = %v, %v; want completed", r, err)
	}
	acc, ac := accountClaims(t, svc, "fleet")
	if 4*len(acc.JWT) > guard || ac.Revocations[jwt.All] == 0 {
		t.Fatalf("after the early rotation and a sweep: %d bytes, revocations %v; want '*' and under a quarter of %d", len(acc.JWT), ac.Revocations, guard)
	}
	for _, name := range victims(0, 60) {
		g, _ := svc.Agent(ctx, name)
		k := keys[name]
		if g.State == rotatord.AgentRevoked && !refuses(ac, k.pub, k.iat) {
			t.Fatalf("revoked %s is no longer refused", name)
		}
		if g.State == rotatord.AgentActive && refuses(ac, k.pub, k.iat) {
			t.Fatalf("%s, still in use, is refused", name)
		}
	}
	if refuses(ac, keys["bystander"].pub, keys["bystander"].iat) || refuses(ac, activeKey(t, svc, "anchor").pub, activeKey(t, svc, "anchor").iat) {
		t.Fatal("a credential in use is refused")
	}
	if a := alertsOf(t, store, rotate.AlertJWTFull); len(a) != 0 {
		t.Fatalf("account_jwt_full alerts = %+v, want none: room was made in time", a)
	}
}

// When revocations come faster than early rotations make room, each still
// lands at once under the guard: the oldest entries are folded into '*'
// all the same, as few as make it fit. The credentials in use that '*'
// then refuses (the anchor, the oldest victims) are rotated now; newer
// ones (the bystander) are untouched. Alerts: account_jwt_large once,
// account_jwt_full (critical) once within the hour.
func TestGuardRevocationAlwaysLands(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{t: time.Now()}
	const guard = 8 << 10
	svc, store, keys := guardFleet(t, clk, guard, 90)
	ctx := context.Background()

	// Newest first: each entry is behind every victim still valid.
	var folded bool
	for i := 89; i >= 0; i-- {
		name := fmt.Sprintf("v%02d", i)
		mustRevoke(t, svc, name)
		acc, ac := accountClaims(t, svc, "fleet")
		if len(acc.JWT) > guard {
			t.Fatalf("after revoking %s the account JWT is %d bytes, over the %d-byte guard", name, len(acc.JWT), guard)
		}
		for _, done := range victims(i, 90) {
			if !refuses(ac, keys[done].pub, keys[done].iat) {
				t.Fatalf("after revoking %s, revoked %s is not refused", name, done)
			}
		}
		if refuses(ac, keys["bystander"].pub, keys["bystander"].iat) {
			t.Fatalf("after revoking %s, '*' refuses the bystander, newer than every entry", name)
		}
		if ac.Revocations[jwt.All] == 0 {
			continue
		}
		if !folded {
			folded = true
			star := time.Unix(ac.Revocations[jwt.All], 0)
			// Every credential in use that '*' refuses is being rotated.
			for _, other := range append([]string{"anchor"}, victims(0, i)...) {
				if k := keys[other]; refuses(ac, k.pub, k.iat) && nextRotation(t, svc, other).After(clk.Now()) {
					t.Fatalf("%s is refused by '*' at %s but not due for rotation", other, star)
				}
			}
			// As few entries as fit: the newest victim revoked stays its own entry.
			if _, ok := ac.Revocations[keys["v89"].pub]; !ok {
				t.Fatalf("the fold took every entry: %v", ac.Revocations)
			}
			if a := alertsOf(t, store, rotate.AlertJWTFull); len(a) != 1 || a[0].Severity != rotatord.SeverityCritical {
				t.Fatalf("account_jwt_full alerts = %+v, want one critical", a)
			}
			if ev, _ := svc.Audit(ctx, rotatord.AuditFilter{Action: "revocations.fold"}); len(ev) != 1 {
				t.Fatalf("revocations.fold audit events = %d, want 1", len(ev))
			}
		}
	}
	if !folded {
		t.Fatal("90 revocations never reached the guard")
	}

	if a := alertsOf(t, store, rotate.AlertJWTLarge); len(a) != 1 {
		t.Fatalf("account_jwt_large alerts = %d, want 1 a day", len(a))
	}
	if a := alertsOf(t, store, rotate.AlertJWTFull); len(a) != 1 {
		t.Fatalf("account_jwt_full alerts = %d, want 1 within the hour", len(a))
	}
	// The agents cut off get new credentials at the next tick.
	if res, err := svc.Tick(ctx); err != nil || res.Started < 1 {
		t.Fatalf("tick = %+v, %v; want the cut-off anchor rotated", res, err)
	}
	if rots, _ := svc.Rotations(ctx, rotatord.RotationFilter{Agent: "anchor", Limit: 1}); len(rots) != 1 || rots[0].State != rotatord.RotationDistributed {
		t.Fatalf("anchor's rotations = %+v, want one distributed", rots)
	}
}

// An account that keeps its revocation entries cannot fold them, so
// rotatord refuses the rotations that would take it past the guard (with
// an error saying why and what to do, an alert, and scheduled ones
// retried later) and changes that are not revocations; revocations still
// land, folding even there.
func TestGuardKeepRevocations(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{t: time.Now()}
	const guard = 6 << 10
	svc, store := newServiceWith(t, clk, rotate.Config{NoJitter: true, MaxAccountJWTBytes: guard})
	ctx := context.Background()
	if _, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	keep := true
	if _, err := svc.UpdateAccount(ctx, "test", "fleet", rotate.AccountPatch{KeepRevocations: &keep}); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, svc, "fleet", "rotor", "scheduled", "last")
	var i int
	for ; ; i++ {
		acc, _ := accountClaims(t, svc, "fleet")
		if len(acc.JWT)+100 > guard {
			break
		}
		name := fmt.Sprintf("r%02d", i)
		mustCreate(t, svc, "fleet", name)
		mustRevoke(t, svc, name)
	}
	acc, ac := accountClaims(t, svc, "fleet")
	if ac.Revocations[jwt.All] != 0 || len(ac.Revocations) != i {
		t.Fatalf("revocations = %d (%v), want %d and no '*'", len(ac.Revocations), ac.Revocations[jwt.All], i)
	}

	_, err := svc.StartRotation(ctx, "test", "rotor", rotatord.TriggerManual)
	if !errors.Is(err, rotatord.ErrJWTFull) || !strings.Contains(rotatord.ErrorMessage(err), "keep_revocations") ||
		!strings.Contains(rotatord.ErrorMessage(err), "ROTATORD_MAX_ACCOUNT_JWT_BYTES") {
		t.Fatalf("rotation = %v, want ErrJWTFull saying why and what to do", err)
	}
	if a := alertsOf(t, store, rotate.AlertJWTFull); len(a) != 1 || a[0].Severity != rotatord.SeverityCritical {
		t.Fatalf("account_jwt_full alerts = %+v, want one critical", a)
	}
	// A scheduled one is not started, and not retried at every tick.
	if _, err := store.Pool().Exec(ctx, `UPDATE agents SET next_rotation_at = $1 WHERE name = 'scheduled'`, clk.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if res, err := svc.Tick(ctx); err != nil || res.Started != 0 {
		t.Fatalf("tick = %+v, %v; want nothing started", res, err)
	}
	if next := nextRotation(t, svc, "scheduled"); next.Before(clk.Now().Add(10 * time.Minute)) {
		t.Fatalf("refused scheduled rotation retried at %s, want some minutes later", next)
	}
	// Nor a change that is not a revocation.
	desc := strings.Repeat("d", 1000)
	if _, err := svc.UpdateAccount(ctx, "test", "fleet", rotate.AccountPatch{Description: &desc}); !errors.Is(err, rotatord.ErrJWTFull) {
		t.Fatalf("update past the guard = %v, want ErrJWTFull", err)
	}
	if after, _ := accountClaims(t, svc, "fleet"); after.JWT != acc.JWT {
		t.Fatal("a refused update changed the account JWT")
	}

	// A revocation lands all the same. (The clock moves past the real
	// iat the JWT library stamped on the revoked credentials: entries
	// issued after now cannot fold.)
	clk.Add(time.Minute)
	last := activeKey(t, svc, "last")
	mustRevoke(t, svc, "last")
	acc, ac = accountClaims(t, svc, "fleet")
	if len(acc.JWT) > guard || !refuses(ac, last.pub, last.iat) {
		t.Fatalf("revocation past the guard: %d bytes (guard %d), refused %v", len(acc.JWT), guard, refuses(ac, last.pub, last.iat))
	}
	if ac.Revocations[jwt.All] == 0 {
		t.Fatal("no '*' entry: how did it fit?")
	}
	a := alertsOf(t, store, rotate.AlertJWTFull)
	if len(a) != 2 || !strings.Contains(a[0].Reason, "did not issue") {
		t.Fatalf("account_jwt_full alerts = %+v, want a second one saying JWTs issued elsewhere are refused too", a)
	}
}

// An account JWT stored under a larger guard is brought under a lowered
// one at the next sweep, still refusing every revoked key.
func TestGuardLoweredShrinksStoredJWT(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{t: time.Now()}
	svc, store, sealer := newSealedService(t, clk)
	ctx := context.Background()
	if _, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, svc, "fleet", "anchor")
	setIssuedAt(t, store, "anchor", clk.Now().Add(-3*time.Hour))
	var revoked []key
	for i := range 100 {
		name := fmt.Sprintf("v%02d", i)
		mustCreate(t, svc, "fleet", name)
		setIssuedAt(t, store, name, clk.Now().Add(-2*time.Hour+time.Duration(i)*time.Second))
		revoked = append(revoked, activeKey(t, svc, name))
		mustRevoke(t, svc, name)
	}
	const guard = 8 << 10
	if acc, _ := accountClaims(t, svc, "fleet"); len(acc.JWT) <= guard {
		t.Fatalf("account JWT %d bytes, want it over %d to begin with", len(acc.JWT), guard)
	}

	lowered := rotate.New(rotate.Config{Store: store, Sealer: sealer, Now: clk.Now, NoJitter: true, MaxAccountJWTBytes: guard})
	clk.Add(2 * time.Minute)
	if _, err := lowered.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	acc, ac := accountClaims(t, lowered, "fleet")
	if len(acc.JWT) > guard {
		t.Fatalf("after a sweep under the lowered guard: %d bytes, over %d", len(acc.JWT), guard)
	}
	for _, k := range revoked {
		if !refuses(ac, k.pub, k.iat) {
			t.Fatalf("revoked %s is no longer refused", k.pub)
		}
	}
}
