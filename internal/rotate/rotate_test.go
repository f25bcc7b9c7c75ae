package rotate_test

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/pgtest"
	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/seal"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newService(t *testing.T, clk *fakeClock) (*rotate.Service, *registry.Store) {
	t.Helper()
	return newServiceWith(t, clk, rotate.Config{NoJitter: true})
}

// newServiceWith is newService with cfg; Store, Sealer and Now are set here.
func newServiceWith(t testing.TB, clk *fakeClock, cfg rotate.Config) (*rotate.Service, *registry.Store) {
	t.Helper()
	svc, store, _ := newSealedServiceWith(t, clk, cfg)
	return svc, store
}

// newSealedService is newService that also returns the sealer, for a second
// service on the same database.
func newSealedService(t *testing.T, clk *fakeClock) (*rotate.Service, *registry.Store, *seal.Sealer) {
	t.Helper()
	return newSealedServiceWith(t, clk, rotate.Config{NoJitter: true})
}

// newSealedServiceWith is newSealedService with cfg (see newServiceWith).
func newSealedServiceWith(t testing.TB, clk *fakeClock, cfg rotate.Config) (*rotate.Service, *registry.Store, *seal.Sealer) {
	t.Helper()
	store, err := registry.Open(context.Background(), pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	key := make([]byte, seal.KeySize)
	rand.Read(key)
	sealer, _ := seal.New(key)
	cfg.Store, cfg.Sealer, cfg.Now = store, sealer, clk.Now
	svc := rotate.New(cfg)
	if _, _, err := svc.Init(context.Background(), "test", "op"); err != nil {
		t.Fatal(err)
	}
	return svc, store, sealer
}

func accountRevocations(t *testing.T, svc *rotate.Service, name string) map[string]int64 {
	t.Helper()
	acc, err := svc.Account(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(acc.JWT)
	if err != nil {
		t.Fatal(err)
	}
	return ac.Revocations
}

// rotate runs a full rotation of agent, confirmed as if it reconnected,
// and completed by the re-sign that revokes its old key.
func rotateAgent(t *testing.T, svc *rotate.Service, agent string) *rotatord.Rotation {
	t.Helper()
	ctx := context.Background()
	r, err := svc.StartRotation(ctx, "test", agent, rotatord.TriggerManual)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != rotatord.RotationDistributed {
		t.Fatalf("started rotation is %s, want distributed", r.State)
	}
	if r, err = svc.Confirm(ctx, r.NewKey, "", "event"); err != nil || r.State != rotatord.RotationConfirmed {
		t.Fatalf("confirm = %v, %v; want confirmed", r, err)
	}
	if _, err := svc.ResignQueued(ctx); err != nil {
		t.Fatal(err)
	}
	if r, err = svc.Rotation(ctx, r.ID); err != nil || r.State != rotatord.RotationCompleted {
		t.Fatalf("rotation after the re-sign = %v, %v; want completed", r, err)
	}
	return r
}

func TestPruneAndCompactRevocations(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	if _, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b", "c", "d"} {
		if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: name, Account: "fleet"}); err != nil {
			t.Fatal(err)
		}
	}
	// The agents' credentials were issued two hours ago; d's three hours ago.
	db := store.Pool()
	db.Exec(ctx, `UPDATE credentials SET issued_at = issued_at - interval '2 hours'`)
	db.Exec(ctx, `UPDATE credentials c SET issued_at = issued_at - interval '1 hour' FROM agents g WHERE g.id = c.agent_id AND g.name = 'd'`)

	var old []string
	for _, name := range []string{"a", "b", "c"} {
		old = append(old, rotateAgent(t, svc, name).OldKey)
	}
	if _, err := svc.ResignQueued(ctx); err != nil {
		t.Fatal(err)
	}
	// d's credential is still valid and older than the revoked ones, so
	// nothing can be folded: one entry per revoked key.
	revs := accountRevocations(t, svc, "fleet")
	if len(revs) != 3 || revs[old[0]] == 0 || revs[jwt.All] != 0 {
		t.Fatalf("revocations = %v, want the 3 old keys", revs)
	}

	// Once d is rotated too, every revoked JWT predates the oldest valid
	// credential: they fold into one '*' entry that revokes nothing in use.
	rotateAgent(t, svc, "d")
	if _, err := svc.ResignQueued(ctx); err != nil {
		t.Fatal(err)
	}
	revs = accountRevocations(t, svc, "fleet")
	if len(revs) != 1 || revs[jwt.All] == 0 {
		t.Fatalf("revocations after compaction = %v, want a single '*'", revs)
	}
	for _, name := range []string{"a", "b", "c", "d"} {
		g, _ := svc.Agent(ctx, name)
		if revs[jwt.All] >= g.Active.IssuedAt.Unix() {
			t.Fatalf("'*' at %d revokes %s's active credential issued at %d", revs[jwt.All], name, g.Active.IssuedAt.Unix())
		}
	}

	// An entry whose JWT has expired is pruned by the periodic sweep.
	if err := store.AddRevocations(ctx, mustAccountID(t, svc), []rotatord.Revocation{{PublicKey: "UEXPIRED",
		RevokedAt: clk.Now(), ExpiresAt: clk.Now().Add(time.Hour), IssuedAt: clk.Now()}}); err != nil {
		t.Fatal(err)
	}
	store.QueueResign(ctx, mustAccountID(t, svc))
	svc.ResignQueued(ctx)
	if revs = accountRevocations(t, svc, "fleet"); len(revs) != 2 {
		t.Fatalf("revocations = %v, want '*' and UEXPIRED", revs)
	}
	clk.Add(2 * time.Hour)
	if _, err := svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if revs = accountRevocations(t, svc, "fleet"); len(revs) != 1 || revs["UEXPIRED"] != 0 {
		t.Fatalf("revocations after expiry = %v, want only '*'", revs)
	}
	// A sweep that finds nothing to fold leaves the JWT alone.
	before, _ := svc.Account(ctx, "fleet")
	clk.Add(2 * time.Minute)
	svc.Tick(ctx)
	after, _ := svc.Account(ctx, "fleet")
	if after.JWT != before.JWT {
		t.Fatal("a sweep with nothing to fold re-signed the account")
	}
}

func mustAccountID(t *testing.T, svc *rotate.Service) int64 {
	t.Helper()
	acc, err := svc.Account(context.Background(), "fleet")
	if err != nil {
		t.Fatal(err)
	}
	return acc.ID
}

// Decisions follow the injected clock: nothing is due before the schedule,
// a rotation is started when the clock passes it, and the deadline rolls it
// back only once the grace period is over.
func TestTickFollowsClock(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, _ := newService(t, clk)
	ctx := context.Background()
	svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"})
	if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: "a", Account: "fleet", Schedule: "@every 1h", Grace: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	clk.Add(59 * time.Minute)
	if res, err := svc.Tick(ctx); err != nil || res.Started != 0 {
		t.Fatalf("tick before due = %+v, %v; want nothing started", res, err)
	}
	clk.Add(2 * time.Minute)
	if res, err := svc.Tick(ctx); err != nil || res.Started != 1 {
		t.Fatalf("tick when due = %+v, %v; want one started", res, err)
	}
	rots, _ := svc.Rotations(ctx, rotatord.RotationFilter{Agent: "a", Limit: 10})
	if len(rots) != 1 || rots[0].State != rotatord.RotationDistributed || rots[0].Trigger != rotatord.TriggerSchedule {
		t.Fatalf("rotations = %+v", rots)
	}
	clk.Add(9 * time.Minute)
	svc.Tick(ctx)
	if r, _ := svc.Rotation(ctx, rots[0].ID); r.State != rotatord.RotationDistributed {
		t.Fatalf("before the deadline: %s, want distributed", r.State)
	}
	clk.Add(2 * time.Minute)
	svc.Tick(ctx)
	r, _ := svc.Rotation(ctx, rots[0].ID)
	if r.State != rotatord.RotationRolledBack {
		t.Fatalf("after the deadline: %s, want rolled_back", r.State)
	}
	g, _ := svc.Agent(ctx, "a")
	// PostgreSQL keeps microseconds, the clock nanoseconds.
	if d := g.NextRotationAt.Sub(clk.Now()); g.Failures != 1 || d < time.Minute-time.Millisecond || d > time.Minute {
		t.Fatalf("after rollback: failures %d, retry in %s; want 1 and 1m", g.Failures, g.NextRotationAt.Sub(clk.Now()))
	}
	// A revoked agent is not rotated, and a manual rotation says why.
	svc.RevokeAgent(ctx, "test", "a", "test")
	clk.Add(time.Hour)
	if res, _ := svc.Tick(ctx); res.Started != 0 {
		t.Fatalf("a revoked agent was rotated: %+v", res)
	}
	if _, err := svc.StartRotation(ctx, "test", "a", rotatord.TriggerManual); !errors.Is(err, rotatord.ErrConflict) {
		t.Fatalf("rotate revoked agent = %v, want ErrConflict", err)
	}
}

// An imported account whose users rotatord may not all know keeps one
// entry per revoked key: a '*' would lock out JWTs issued elsewhere.
// Expired entries still go.
func TestKeepRevocations(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"})
	for _, name := range []string{"a", "b"} {
		if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: name, Account: "fleet"}); err != nil {
			t.Fatal(err)
		}
	}
	db := store.Pool()
	db.Exec(ctx, `UPDATE credentials SET issued_at = issued_at - interval '2 hours'`)
	db.Exec(ctx, `UPDATE accounts SET keep_revocations = true WHERE name = 'fleet'`)
	var old []string
	for _, name := range []string{"a", "b"} {
		old = append(old, rotateAgent(t, svc, name).OldKey)
	}
	if _, err := svc.ResignQueued(ctx); err != nil {
		t.Fatal(err)
	}
	revs := accountRevocations(t, svc, "fleet")
	if len(revs) != 2 || revs[old[0]] == 0 || revs[old[1]] == 0 {
		t.Fatalf("revocations = %v, want one entry per old key and no '*'", revs)
	}
	// The periodic sweep finds nothing to do for it.
	before, _ := svc.Account(ctx, "fleet")
	if !before.KeepRevocations {
		t.Fatal("account does not say it keeps its revocations")
	}
	clk.Add(2 * time.Minute)
	svc.Tick(ctx)
	if after, _ := svc.Account(ctx, "fleet"); after.JWT != before.JWT {
		t.Fatal("the sweep re-signed an account whose revocations are kept")
	}
	// Once rotatord manages every user, the operator lets it fold: the
	// entries become one '*' that revokes no current credential.
	keep := false
	if _, err := svc.UpdateAccount(ctx, "test", "fleet", rotate.AccountPatch{KeepRevocations: &keep}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.ResignQueued(ctx); err != nil {
		t.Fatal(err)
	}
	if revs := accountRevocations(t, svc, "fleet"); len(revs) != 1 || revs[jwt.All] == 0 {
		t.Fatalf("revocations after keep_revocations=false = %v, want a single '*'", revs)
	}
	if acc, _ := svc.Account(ctx, "fleet"); acc.KeepRevocations {
		t.Fatal("keep_revocations is still on")
	}
	// Once the old JWTs expired, their entries are pruned.
	clk.Add(26 * time.Hour)
	svc.Tick(ctx)
	if revs := accountRevocations(t, svc, "fleet"); len(revs) != 1 || revs[jwt.All] == 0 {
		t.Fatalf("revocations after the old JWTs expired = %v, want only '*'", revs)
	}
}

// Tick deletes the alerts past Config.AlertRetention, at its first run and
// then every ten minutes, not on every tick.
func TestTickPrunesOldAlerts(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store := newServiceWith(t, clk, rotate.Config{AlertRetention: 48 * time.Hour})
	ctx := context.Background()
	addOld := func(reason string) {
		t.Helper()
		if err := store.AddAlert(ctx, &rotatord.Alert{Kind: "auth_failures", Severity: rotatord.SeverityWarning, Reason: reason}); err != nil {
			t.Fatal(err)
		}
		if _, err := store.Pool().Exec(ctx, `UPDATE alerts SET created_at = now() - interval '3 days' WHERE reason = $1`, reason); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		t.Helper()
		var n int
		if err := store.Pool().QueryRow(ctx, `SELECT count(*) FROM alerts`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	addOld("first")
	if err := store.AddAlert(ctx, &rotatord.Alert{Kind: "auth_failures", Severity: rotatord.SeverityWarning, Reason: "recent"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Fatalf("%d alerts after the first tick; want the recent one", n)
	}
	addOld("second")
	clk.Add(time.Minute)
	svc.Tick(ctx)
	if n := count(); n != 2 {
		t.Fatalf("%d alerts a minute later; want 2 (the next prune is due in 10 minutes)", n)
	}
	clk.Add(10 * time.Minute)
	svc.Tick(ctx)
	if n := count(); n != 1 {
		t.Fatalf("%d alerts ten minutes later; want 1", n)
	}
}
