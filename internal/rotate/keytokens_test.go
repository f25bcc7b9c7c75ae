package rotate_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/resolver"
	"github.com/rotatord/rotatord/internal/rotate"
)

// gatePusher acknowledges every push (as one server that applied it)
// except those of the accounts held, and records the order of pushes.
type gatePusher struct {
	mu     sync.Mutex
	held   map[string]bool
	pushed []string // account public keys, in order
}

func (p *gatePusher) Push(_ context.Context, pub, _ string, _ []string) (resolver.PushResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held[pub] {
		return resolver.PushResult{}, resolver.ErrNoAck
	}
	p.pushed = append(p.pushed, pub)
	return resolver.PushResult{Updated: 1, Replies: []resolver.ServerReply{
		{Server: rotatord.Server{ID: "NFAKESERVER", Name: "fake"}, Status: rotatord.ServerUpdated}}}, nil
}

func (p *gatePusher) hold(pub string, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held == nil {
		p.held = map[string]bool{}
	}
	p.held[pub] = on
}

// exporterFixture is an account "exp" exporting a token-required stream
// and a service, and an account "imp" importing both: imp's JWT carries
// activation tokens exp's signing key signed.
func exporterFixture(t *testing.T) (*rotate.Service, *gatePusher, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Now()}
	p := &gatePusher{}
	svc, _ := newServiceWith(t, clk, rotate.Config{NoJitter: true, Pusher: p})
	ctx := context.Background()
	exports := []rotatord.Export{
		{Name: "orders", Subject: "orders.>", Type: "stream", TokenReq: true},
		{Name: "lookup", Subject: "svc.lookup", Type: "service", TokenReq: true},
	}
	if _, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "exp", Claims: rotate.ClaimsPatch{Exports: &exports}}); err != nil {
		t.Fatal(err)
	}
	imports := []rotatord.Import{
		{Account: "exp", Subject: "orders.>", Type: "stream"},
		{Account: "exp", Subject: "svc.lookup", Type: "service"},
	}
	if _, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "imp", Claims: rotate.ClaimsPatch{Imports: &imports}}); err != nil {
		t.Fatal(err)
	}
	return svc, p, clk
}

// tokenSigners returns the signers of the activation tokens in the
// account's JWT.
func tokenSigners(t *testing.T, svc *rotate.Service, name string) []string {
	t.Helper()
	var out []string
	for _, im := range accountJWT(t, svc, name).Imports {
		act, err := jwt.DecodeActivationClaims(im.Token)
		if err != nil {
			t.Fatalf("token of %s: %v", im.Subject, err)
		}
		out = append(out, act.Issuer)
	}
	return out
}

func allAre(keys []string, key string) bool {
	for _, k := range keys {
		if k != key {
			return false
		}
	}
	return len(keys) > 0
}

// A staged rotation of an exporter's signing key re-signs the importer
// with tokens of the new key when it starts signing, and keeps the old key
// in the exporter's JWT until the servers acknowledged the importer's.
func TestStagedKeyRotationMovesActivationTokens(t *testing.T) {
	svc, p, _ := exporterFixture(t)
	ctx := context.Background()
	old := accountJWT(t, svc, "exp").SigningKeys.Keys()[0]
	if got := tokenSigners(t, svc, "imp"); !allAre(got, old) {
		t.Fatalf("imp's tokens are signed by %v, want exp's key %s", got, old)
	}
	impAcc, err := svc.Account(ctx, "imp")
	if err != nil {
		t.Fatal(err)
	}
	p.hold(impAcc.PublicKey, true)

	k, err := svc.RotateSigningKey(ctx, "test", "exp", rotate.KeyRotationInput{})
	if err != nil {
		t.Fatal(err)
	}
	// adding: the new key signs nothing yet, tokens included.
	if got := tokenSigners(t, svc, "imp"); !allAre(got, old) {
		t.Fatalf("imp's tokens while adding are signed by %v, want the old key", got)
	}
	var moved bool
	for range 20 { // exp has no agents: the fleet rotation has nothing to do
		if _, err := svc.DriveKeyRotations(ctx); err != nil {
			t.Fatal(err)
		}
		svc.Tick(ctx)
		k = keyRotation(t, svc, k.ID)
		if !moved && k.State != rotatord.KeyRotationAdding {
			moved = true
			if got := tokenSigners(t, svc, "imp"); !allAre(got, k.NewKey) {
				t.Fatalf("imp's tokens once the new key signs are signed by %v, want %s", got, k.NewKey)
			}
		}
		if strings.Contains(k.Waiting, "imp") {
			break
		}
	}
	if !strings.Contains(k.Waiting, "activation tokens") || k.FinishedAt != nil || k.State == rotatord.KeyRotationRemoving {
		t.Fatalf("key rotation with imp's JWT unacknowledged = %s, waiting %q", k.State, k.Waiting)
	}
	if ac := accountJWT(t, svc, "exp"); !ac.SigningKeys.Contains(old) {
		t.Fatal("the old key left exp's JWT before the servers held imp's new tokens")
	}

	// The servers take imp's JWT: the old key goes.
	p.hold(impAcc.PublicKey, false)
	// The removal's own push runs in the background: keep driving (not a
	// fixed number of rounds, which a busy machine runs through first).
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := svc.PushAccount(ctx, impAcc.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.DriveKeyRotations(ctx); err != nil {
			t.Fatal(err)
		}
		if k = keyRotation(t, svc, k.ID); k.State == rotatord.KeyRotationCompleted {
			break
		}
	}
	if k.State != rotatord.KeyRotationCompleted {
		t.Fatalf("key rotation = %s (%q), want completed", k.State, k.Waiting)
	}
	if ac := accountJWT(t, svc, "exp"); ac.SigningKeys.Contains(old) || !ac.SigningKeys.Contains(k.NewKey) {
		t.Fatalf("exp's signing keys at the end: %v", ac.SigningKeys.Keys())
	}
	if got := tokenSigners(t, svc, "imp"); !allAre(got, k.NewKey) {
		t.Fatalf("imp's tokens at the end are signed by %v", got)
	}
}

// An emergency rotation re-signs the importer in its own transaction, and
// pushes it before the exporter (see keytokens.go).
func TestEmergencyKeyRotationMovesActivationTokens(t *testing.T) {
	svc, p, _ := exporterFixture(t)
	ctx := context.Background()
	expAcc, _ := svc.Account(ctx, "exp")
	impAcc, _ := svc.Account(ctx, "imp")
	p.mu.Lock()
	p.pushed = nil
	p.mu.Unlock()
	k, err := svc.RotateSigningKey(ctx, "test", "exp", rotate.KeyRotationInput{Mode: rotatord.KeyModeEmergency})
	if err != nil {
		t.Fatal(err)
	}
	if got := tokenSigners(t, svc, "imp"); !allAre(got, k.NewKey) {
		t.Fatalf("imp's tokens right after the request are signed by %v, want %s", got, k.NewKey)
	}
	var order []string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		order = append([]string(nil), p.pushed...)
		p.mu.Unlock()
		if len(order) >= 2 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(order) < 2 || order[0] != impAcc.PublicKey || order[1] != expAcc.PublicKey {
		t.Fatalf("pushes %v, want imp (%s) then exp (%s)", order, impAcc.PublicKey, expAcc.PublicKey)
	}
	events, err := svc.Audit(ctx, rotatord.AuditFilter{Action: "signing_key.retire"})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || !strings.Contains(strings.Join(toStrings(events[0].Details["importers_resigned"]), ","), "imp") {
		t.Fatalf("signing_key.retire audit = %+v", events)
	}
}

func toStrings(v any) []string {
	switch v := v.(type) {
	case []string:
		return v
	case []any:
		var out []string
		for _, x := range v {
			s, _ := x.(string)
			out = append(out, s)
		}
		return out
	}
	return nil
}
