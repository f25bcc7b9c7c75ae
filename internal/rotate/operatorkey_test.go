package rotate_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/pgtest"
	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/internal/resolver"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/seal"
)

// fakeServers stands in for the nats-servers' VARZ answers: each server's
// operator JWT, by name. The real answers are tested end to end in
// cmd/rotatord against nats-servers started from their configuration.
type fakeServers struct {
	mu      sync.Mutex
	jwts    map[string]string // server name -> operator JWT it runs; "" for silent
	offline bool
}

func (f *fakeServers) run(name, operatorJWT string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.jwts == nil {
		f.jwts = map[string]string{}
	}
	f.jwts[name] = operatorJWT
}

func (f *fakeServers) TrustedOperators(context.Context, time.Duration) ([]rotatord.ServerTrust, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.offline {
		return nil, resolver.ErrNotConnected
	}
	var out []rotatord.ServerTrust
	for name, token := range f.jwts {
		if token == "" {
			continue
		}
		oc, err := jwt.DecodeOperatorClaims(token)
		if err != nil {
			return nil, err
		}
		out = append(out, rotatord.ServerTrust{ServerID: "N" + name, ServerName: name, Operators: map[string][]string{oc.Subject: oc.SigningKeys}})
	}
	return out, nil
}

type opKeyFixture struct {
	svc     *rotate.Service
	sealer  *seal.Sealer
	store   *registry.Store
	clk     *fakeClock
	servers *fakeServers
}

func newOpKeyFixture(t *testing.T) *opKeyFixture {
	t.Helper()
	store, err := registry.Open(context.Background(), pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	f := &opKeyFixture{store: store, clk: &fakeClock{t: time.Now()}, servers: &fakeServers{}, sealer: mustSealer(t, newKey(t))}
	f.svc = rotate.New(rotate.Config{Store: store, Sealer: f.sealer, Now: f.clk.Now, NoJitter: true,
		OperatorProber: f.servers, KeyRotationServerLive: time.Minute})
	if _, _, err := f.svc.Init(context.Background(), "test", "op"); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *opKeyFixture) operatorJWT(t *testing.T) (string, *jwt.OperatorClaims) {
	t.Helper()
	op, err := f.store.Operator(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	oc, err := jwt.DecodeOperatorClaims(op.JWT)
	if err != nil {
		t.Fatal(err)
	}
	return op.JWT, oc
}

// advance moves the rotation as far as it goes and returns it.
func (f *opKeyFixture) advance(t *testing.T, id string) *rotatord.KeyRotation {
	t.Helper()
	if _, err := f.svc.AdvanceKeyRotations(context.Background()); err != nil {
		t.Fatal(err)
	}
	kr, err := f.svc.KeyRotation(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func issuerOf(t *testing.T, token string) string {
	t.Helper()
	c, err := jwt.Decode(token)
	if err != nil {
		t.Fatal(err)
	}
	return c.Claims().Issuer
}

func behindNames(kr *rotatord.KeyRotation) string {
	var n []string
	for _, s := range kr.Behind() {
		n = append(n, s.Name)
	}
	return strings.Join(n, ",")
}

// The operator key rotation's steps: the new key joins the operator JWT
// but signs nothing until every server runs that JWT; then every account
// is re-signed with it; then the old key leaves the operator JWT, and the
// rotation ends once no server trusts it.
func TestOperatorKeyRotationSteps(t *testing.T) {
	f := newOpKeyFixture(t)
	ctx := context.Background()
	original, oc0 := f.operatorJWT(t)
	oldKey := oc0.SigningKeys[0]
	if _, err := f.svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	f.servers.run("a", original)

	kr, err := f.svc.StartOperatorKeyRotation(ctx, "token:ops")
	if err != nil {
		t.Fatal(err)
	}
	if kr.State != rotatord.KeyRotationAddingKey || len(kr.OldKeys) != 1 || kr.OldKeys[0] != oldKey || kr.NewKey == oldKey {
		t.Fatalf("started = %+v", kr)
	}
	if _, err := f.svc.StartOperatorKeyRotation(ctx, "token:ops"); !errors.Is(err, rotatord.ErrConflict) || !strings.Contains(err.Error(), kr.ID) {
		t.Fatalf("second start = %v, want a conflict naming %s", err, kr.ID)
	}
	both, oc1 := f.operatorJWT(t)
	if !oc1.SigningKeys.Contains(oldKey) || !oc1.SigningKeys.Contains(kr.NewKey) || oc1.Subject != oc0.Subject || oc1.SystemAccount != oc0.SystemAccount {
		t.Fatalf("operator jwt while adding = %+v", oc1)
	}
	// The new key does not sign yet: an account made now is signed by the old one.
	early, err := f.svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "early"})
	if err != nil {
		t.Fatal(err)
	}
	if got := issuerOf(t, early.JWT); got != oldKey {
		t.Fatalf("account made while adding is signed by %s, want the old key", got)
	}

	// a runs the original JWT: waited for.
	kr = f.advance(t, kr.ID)
	if kr.State != rotatord.KeyRotationAddingKey || behindNames(kr) != "a" || !strings.Contains(kr.Waiting, "waiting for a to run the operator JWT with the new signing key") ||
		!strings.Contains(kr.Waiting, "rotatord nats-config") {
		t.Fatalf("while a runs the old jwt: %+v", kr)
	}
	// a restarted with the new JWT, b appears with the old one.
	f.servers.run("a", both)
	f.servers.run("b", original)
	kr = f.advance(t, kr.ID)
	if kr.State != rotatord.KeyRotationAddingKey || behindNames(kr) != "b" || len(kr.Servers) != 2 {
		t.Fatalf("while b runs the old jwt: %+v", kr)
	}
	// b stops answering (it restarts): still waited for within the live time.
	f.servers.run("b", "")
	f.clk.Add(30 * time.Second)
	if kr = f.advance(t, kr.ID); kr.State != rotatord.KeyRotationAddingKey || behindNames(kr) != "b" {
		t.Fatalf("while b restarts: %+v", kr)
	}
	f.servers.offline = true
	if kr = f.advance(t, kr.ID); kr.State != rotatord.KeyRotationAddingKey || !strings.Contains(kr.Waiting, "not connected to NATS") {
		t.Fatalf("without NATS: %+v", kr)
	}
	f.servers.offline = false
	f.servers.run("b", both)
	kr = f.advance(t, kr.ID)
	if kr.State != rotatord.KeyRotationRemovingKey {
		t.Fatalf("once every server trusts the new key: %+v", kr)
	}

	// Every account, the system account too, is signed by the new key.
	accs, err := f.svc.Accounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(accs) != 3 {
		t.Fatalf("%d accounts", len(accs))
	}
	for _, a := range accs {
		if got := issuerOf(t, a.JWT); got != kr.NewKey {
			t.Errorf("account %s signed by %s, want the new key", a.Name, got)
		}
	}
	after, err := f.svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "after"})
	if err != nil || issuerOf(t, after.JWT) != kr.NewKey {
		t.Fatalf("account made after the switch: %v", err)
	}
	only, oc2 := f.operatorJWT(t)
	if oc2.SigningKeys.Contains(oldKey) || !oc2.SigningKeys.Contains(kr.NewKey) || len(oc2.SigningKeys) != 1 {
		t.Fatalf("operator jwt while removing = %v", oc2.SigningKeys)
	}
	// Both servers still trust the old key: waited for.
	kr = f.advance(t, kr.ID)
	if kr.State != rotatord.KeyRotationRemovingKey || behindNames(kr) != "a,b" || !strings.Contains(kr.Waiting, "without the old signing key") {
		t.Fatalf("while both servers trust the old key: %+v", kr)
	}
	f.servers.run("a", only)
	if kr = f.advance(t, kr.ID); behindNames(kr) != "b" {
		t.Fatalf("while b trusts the old key: %+v", kr)
	}
	// b is gone for good: after the live time it is not waited for.
	f.servers.run("b", "")
	f.clk.Add(2 * time.Minute)
	kr = f.advance(t, kr.ID)
	if kr.State != rotatord.KeyRotationCompleted || kr.FinishedAt == nil || !strings.Contains(kr.Waiting, "not waiting for b") {
		t.Fatalf("once b is gone: %+v", kr)
	}

	var actions []string
	events, _ := f.svc.Audit(ctx, rotatord.AuditFilter{})
	for _, e := range events {
		if strings.HasPrefix(e.Action, "operator.signing_key.") {
			actions = append(actions, e.Action)
		}
	}
	if got := strings.Join(actions, " "); got != "operator.signing_key.rotate operator.signing_key.resigning operator.signing_key.removing_key operator.signing_key.completed" {
		t.Fatalf("audit = %s", got)
	}
	// A new rotation may start once this one ended; it replaces the new key.
	next, err := f.svc.StartOperatorKeyRotation(ctx, "token:ops")
	if err != nil || len(next.OldKeys) != 1 || next.OldKeys[0] != kr.NewKey {
		t.Fatalf("next rotation = %+v, %v", next, err)
	}
	if err := f.svc.CheckKeys(ctx); err != nil {
		t.Fatal(err)
	}
}

// Another replica (another Service on the same database) signs with the
// new key as soon as the rotation switched: the live key is read from the
// database, not kept from before.
func TestOperatorKeySwitchReachesOtherReplicas(t *testing.T) {
	f := newOpKeyFixture(t)
	ctx := context.Background()
	original, _ := f.operatorJWT(t)
	f.servers.run("a", original)
	other := rotate.New(rotate.Config{Store: f.store, Sealer: f.sealer, Now: f.clk.Now})
	if _, err := other.CreateAccount(ctx, "test", rotate.AccountInput{Name: "before"}); err != nil {
		t.Fatal(err)
	}
	kr, err := f.svc.StartOperatorKeyRotation(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	both, _ := f.operatorJWT(t)
	f.servers.run("a", both)
	if kr = f.advance(t, kr.ID); kr.State != rotatord.KeyRotationRemovingKey {
		t.Fatalf("state = %s", kr.State)
	}
	acc, err := other.CreateAccount(ctx, "test", rotate.AccountInput{Name: "late"})
	if err != nil || issuerOf(t, acc.JWT) != kr.NewKey {
		t.Fatalf("the other replica signed with %s (%v), want the new key", issuerOf(t, acc.JWT), err)
	}
}

// Refusals: without NATS, and for an operator imported without its
// identity seed, which alone signs the operator JWT.
func TestOperatorKeyRotationRefusals(t *testing.T) {
	f := newOpKeyFixture(t)
	ctx := context.Background()
	noNATS := rotate.New(rotate.Config{Store: f.store, Sealer: f.sealer, Now: f.clk.Now})
	if _, err := noNATS.StartOperatorKeyRotation(ctx, "test"); !errors.Is(err, rotatord.ErrUnsupported) || !strings.Contains(err.Error(), "ROTATORD_NATS_URL") {
		t.Fatalf("without NATS = %v", err)
	}
	before, _ := f.operatorJWT(t)
	if _, err := f.store.Pool().Exec(ctx, `UPDATE operator SET seed_enc = NULL`); err != nil {
		t.Fatal(err)
	}
	_, err := f.svc.StartOperatorKeyRotation(ctx, "test")
	if !errors.Is(err, rotatord.ErrUnsupported) || !strings.Contains(err.Error(), "without its identity seed") || !strings.Contains(err.Error(), "keystore that holds its identity seed") {
		t.Fatalf("imported without identity seed = %v", err)
	}
	if after, _ := f.operatorJWT(t); after != before {
		t.Fatal("a refused rotation changed the operator jwt")
	}
	if ids, _ := f.store.KeyRotationsInFlight(ctx, rotatord.KeyRotationOperator); len(ids) != 0 {
		t.Fatalf("a refused rotation left %v", ids)
	}
}

// A server that the cluster tracking heard from (nats_servers) but that
// has not answered the rotation's VARZ yet is waited for too, until it
// answers or stays silent past the live time.
func TestOperatorKeyRotationWaitsForKnownServers(t *testing.T) {
	f := newOpKeyFixture(t)
	ctx := context.Background()
	original, _ := f.operatorJWT(t)
	f.servers.run("a", original)
	if err := f.store.TouchServers(ctx, []rotatord.Server{{ID: "NC", Name: "c"}}, f.clk.Now()); err != nil {
		t.Fatal(err)
	}
	kr, err := f.svc.StartOperatorKeyRotation(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	both, _ := f.operatorJWT(t)
	f.servers.run("a", both)
	if kr = f.advance(t, kr.ID); kr.State != rotatord.KeyRotationAddingKey || behindNames(kr) != "c" || !strings.Contains(kr.Waiting, "waiting for c") {
		t.Fatalf("with c known but silent: %+v", kr)
	}
	f.clk.Add(45 * time.Second) // past the tracking's 30 s, within the rotation's 1 min
	if kr = f.advance(t, kr.ID); kr.State != rotatord.KeyRotationAddingKey || behindNames(kr) != "c" {
		t.Fatalf("c silent for 45 s: %+v", kr)
	}
	f.clk.Add(time.Minute)
	if kr = f.advance(t, kr.ID); kr.State != rotatord.KeyRotationRemovingKey || !strings.Contains(kr.Waiting, "not waiting for c") {
		t.Fatalf("c silent for longer than the live time: %+v", kr)
	}
}
