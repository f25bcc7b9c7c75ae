package rotate_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/pgtest"
	"github.com/rotatord/rotatord/internal/refusals"
	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/seal"
)

// signGet is a version 2 proof of a GET of the agent's creds.
func signGet(t testing.TB, kp nkeys.KeyPair, name string, at time.Time) rotate.Proof {
	t.Helper()
	target := "/v1/agents/" + name + "/creds"
	pub, _ := kp.PublicKey()
	sig, err := kp.Sign(rotatord.ProofMessage("GET", target, at.Unix(), rotatord.BodyHash(nil)))
	if err != nil {
		t.Fatal(err)
	}
	return rotate.Proof{Header: rotatord.FormatProof(pub, at.Unix(), sig), Method: "GET", Target: target, Source: "192.0.2.1"}
}

func TestCheckProof(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	now := time.Unix(1_800_000_000, 0)
	good := signGet(t, kp, "kate", now)
	ap, err := rotate.CheckProof("kate", good, now)
	if err != nil || ap.PublicKey != pub || ap.Unix != now.Unix() || ap.Agent != "kate" {
		t.Fatalf("CheckProof(good) = %+v, %v", ap, err)
	}
	withBody := func(body string) rotate.Proof {
		sig, _ := kp.Sign(rotatord.ProofMessage("POST", "/v1/agents/kate/creds", now.Unix(), rotatord.BodyHash([]byte(body))))
		return rotate.Proof{Header: rotatord.FormatProof(pub, now.Unix(), sig), Method: "POST", Target: "/v1/agents/kate/creds", Body: []byte(body)}
	}
	tampered := withBody(`{"public_key":"A"}`)
	tampered.Body = []byte(`{"public_key":"B"}`)
	for _, c := range []struct {
		name, agent string
		p           rotate.Proof
		at          time.Time
		reason      string
		code        string
	}{
		{"body covered", "kate", withBody(`{"x":1}`), now, "", ""},
		{"tampered body", "kate", tampered, now, refusals.ReasonBadSignature, rotatord.EUNAUTHORIZED},
		{"invalid name", strings.Repeat("k", 65), good, now, refusals.ReasonInvalidName, rotatord.EINVALID},
		{"no header", "kate", rotate.Proof{Method: "GET"}, now, refusals.ReasonMissingProof, rotatord.EUNAUTHORIZED},
		{"garbage", "kate", rotate.Proof{Header: "NKey x", Method: "GET"}, now, refusals.ReasonMalformed, rotatord.EUNAUTHORIZED},
		{"stale", "kate", good, now.Add(61 * time.Second), refusals.ReasonStale, rotatord.EUNAUTHORIZED},
	} {
		_, err := rotate.CheckProof(c.agent, c.p, c.at)
		reason, refused := rotate.RefusalReason(err)
		if c.reason == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if !refused || reason != c.reason || rotatord.ErrorCode(err) != c.code {
			t.Errorf("%s: got %v (reason %q, code %s), want reason %q code %s", c.name, err, reason, rotatord.ErrorCode(err), c.reason, c.code)
		}
	}
}

// Two replicas on one database, one 30 s ahead: the one ahead prunes used
// proofs by the database's clock with a margin, so the other never accepts
// the same proof twice.
func TestReplayAcrossReplicasWithSkewedClocks(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	key := make([]byte, seal.KeySize)
	rand.Read(key)
	sealer, _ := seal.New(key)
	start := time.Now()
	clkA, clkB := &fakeClock{t: start}, &fakeClock{t: start.Add(30 * time.Second)}
	open := func(clk *fakeClock) (*rotate.Service, *registry.Store) {
		store, err := registry.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(store.Close)
		return rotate.New(rotate.Config{Store: store, Sealer: sealer, Now: clk.Now, NoJitter: true}), store
	}
	a, _ := open(clkA)
	b, _ := open(clkB)
	if _, _, err := a.Init(ctx, "test", "op"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	_, creds, err := a.CreateAgent(ctx, "test", rotate.AgentInput{Name: "kate", Account: "fleet"})
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := jwt.ParseDecoratedUserNKey(creds)
	p := signGet(t, kp, "kate", start)
	use := func() error {
		ap, err := rotate.CheckProof("kate", p, clkA.Now())
		if err != nil {
			t.Fatalf("replica a's clock refuses the proof: %v", err)
		}
		_, err = a.AgentCreds(ctx, ap)
		return err
	}
	if err := use(); !errors.Is(err, rotatord.ErrNotModified) {
		t.Fatalf("first use = %v, want accepted (not modified)", err)
	}
	// 31 s later: a still accepts the proof's time; b's clock says 61 s.
	clkA.Add(31 * time.Second)
	clkB.Add(31 * time.Second)
	if _, err := b.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	err = use()
	if reason, _ := rotate.RefusalReason(err); reason != refusals.ReasonReplay {
		t.Fatalf("second use after replica b pruned = %v, want a replay refusal", err)
	}
}

// A fetch of creds that are ready records its proof and its audit event in
// one statement: the creds go out once per proof, every fetch is audited
// once, and a replay is refused and leaves no event.
func TestFetchOfReadyCredsUsesTheProofOnce(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	if _, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	_, creds, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: "kate", Account: "fleet"})
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := jwt.ParseDecoratedUserNKey(creds)
	oldKey, _ := kp.PublicKey()
	r, err := svc.StartRotation(ctx, "test", "kate", rotatord.TriggerManual)
	if err != nil || r.State != rotatord.RotationDistributed {
		t.Fatalf("start = %+v, %v; want a distributed rotation", r, err)
	}
	fetch := func(p rotate.Proof) ([]byte, error) {
		ap, err := rotate.CheckProof("kate", p, clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		return svc.AgentCreds(ctx, ap)
	}
	fetches := func() []*rotatord.AuditEvent {
		events, err := store.ListAudit(ctx, rotatord.AuditFilter{Action: "credential.fetch"})
		if err != nil {
			t.Fatal(err)
		}
		return events
	}
	p := signGet(t, kp, "kate", clk.Now())
	got, err := fetch(p)
	if err != nil {
		t.Fatalf("fetch of ready creds = %v", err)
	}
	if nkp, err := jwt.ParseDecoratedUserNKey(got); err != nil || must(nkp.PublicKey()) != r.NewKey {
		t.Fatalf("fetched creds are not the rotation's new key %s: %v", r.NewKey, err)
	}
	if _, err := fetch(p); !isRefusal(err, refusals.ReasonReplay) {
		t.Fatalf("replayed fetch = %v, want a replay refusal", err)
	}
	events := fetches()
	if len(events) != 1 {
		t.Fatalf("%d credential.fetch events after a fetch and its replay, want 1", len(events))
	}
	e := events[0]
	if e.Actor != "agent:kate" || e.Agent != "kate" || e.Account != "fleet" || e.PublicKey != r.NewKey || e.Rotation != r.ID ||
		e.Details["proof_key"] != oldKey || e.Details["source"] != "192.0.2.1" {
		t.Fatalf("fetch event = %+v, want kate's fetch of %s in rotation %s with proof key %s", e, r.NewKey, r.ID, oldKey)
	}
	// A new proof fetches them again, and is audited again.
	clk.Add(time.Second)
	if _, err := fetch(signGet(t, kp, "kate", clk.Now())); err != nil {
		t.Fatalf("second fetch with a new proof = %v", err)
	}
	if n := len(fetches()); n != 2 {
		t.Fatalf("%d credential.fetch events after two fetches, want 2", n)
	}
	// The new key is current: not modified, nothing audited.
	if _, err := fetch(signGet(t, nkeysFromCreds(t, got), "kate", clk.Now())); !errors.Is(err, rotatord.ErrNotModified) {
		t.Fatalf("fetch with the new key = %v, want not modified", err)
	}
	if n := len(fetches()); n != 2 {
		t.Fatalf("%d credential.fetch events after a fetch with the new key, want 2", n)
	}
}

func isRefusal(err error, reason string) bool {
	got, ok := rotate.RefusalReason(err)
	return ok && got == reason
}

func nkeysFromCreds(t *testing.T, creds []byte) nkeys.KeyPair {
	t.Helper()
	kp, err := jwt.ParseDecoratedUserNKey(creds)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// startRotation reads the agent's state after it holds the agent's lock: a
// confirmation that commits while it waits is seen (the rotation is in
// flight until its revoking JWT is pushed), and the next rotation, once the
// first completed, records the right old key and completes.
func TestStartRotationWaitsForCompletion(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	if _, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: "kate", Account: "fleet"}); err != nil {
		t.Fatal(err)
	}
	r1, err := svc.StartRotation(ctx, "test", "kate", rotatord.TriggerManual)
	if err != nil {
		t.Fatal(err)
	}
	type started struct {
		r   *rotatord.Rotation
		err error
	}
	done := make(chan started, 1)
	err = store.InTx(ctx, func(ctx context.Context) error {
		if _, err := store.LockAgent(ctx, "kate"); err != nil {
			return err
		}
		go func() {
			r, err := svc.StartRotation(context.Background(), "test", "kate", rotatord.TriggerManual)
			done <- started{r, err}
		}()
		// Wait until the second start waits for kate's lock.
		deadline := time.Now().Add(20 * time.Second)
		for {
			var n int
			if err := store.Pool().QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FOR NO KEY UPDATE%'`).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				return errors.New("the second start never waited for the agent's lock")
			}
			time.Sleep(10 * time.Millisecond)
		}
		// The first rotation is confirmed meanwhile, under the same lock.
		r, err := svc.Confirm(ctx, r1.NewKey, "", "event")
		if err != nil || r == nil || r.State != rotatord.RotationConfirmed {
			return errors.Join(errors.New("confirm under the lock"), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var s started
	select {
	case s = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the second start did not finish")
	}
	// It saw the confirmed rotation, still in flight: a start that read the
	// agent before the lock would have gone ahead with the retired key.
	if !errors.Is(s.err, rotatord.ErrConflict) {
		t.Fatalf("second start while the first is confirmed = %v, %v; want a conflict", s.r, s.err)
	}
	if _, err := svc.ResignQueued(ctx); err != nil {
		t.Fatal(err)
	}
	if s.r, err = svc.StartRotation(ctx, "test", "kate", rotatord.TriggerManual); err != nil {
		t.Fatalf("start after the first completed: %v", err)
	}
	if s.r.OldKey != r1.NewKey {
		t.Fatalf("second rotation's old key = %s, want %s (the key the first one made active), not the retired %s",
			s.r.OldKey, r1.NewKey, r1.OldKey)
	}
	if r, err := svc.Confirm(ctx, s.r.NewKey, "", "event"); err != nil || r == nil || r.State != rotatord.RotationConfirmed {
		t.Fatalf("second rotation's confirm = %v, %v; want confirmed", r, err)
	}
	if _, err := svc.ResignQueued(ctx); err != nil {
		t.Fatal(err)
	}
	if r, err := svc.Rotation(ctx, s.r.ID); err != nil || r.State != rotatord.RotationCompleted {
		t.Fatalf("second rotation after the re-sign = %v, %v; want completed", r, err)
	}
}

// An agent-initiated rotation is allowed once per interval, judged by the
// database's clock: a replica whose clock runs hours ahead does not let a
// second one through.
func TestAgentRotateMinInterval(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{t: time.Now()}
	svc, _ := newService(t, clk)
	if _, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	_, creds, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: "kate", Account: "fleet"})
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := jwt.ParseDecoratedUserNKey(creds)
	ownKey := func() (nkeys.KeyPair, *rotate.AgentKeyResult, error) {
		next, _ := nkeys.CreateUser()
		pub, _ := next.PublicKey()
		ap, err := rotate.CheckProof("kate", signGet(t, cur, "kate", clk.Now()), clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		res, err := svc.AgentKey(ctx, ap, pub)
		return next, res, err
	}
	next, res, err := ownKey()
	if err != nil {
		t.Fatal(err)
	}
	if r, err := svc.Confirm(ctx, res.Rotation.NewKey, "", "event"); err != nil || r.State != rotatord.RotationConfirmed {
		t.Fatalf("confirm = %v, %v", r, err)
	}
	if _, err := svc.ResignQueued(ctx); err != nil {
		t.Fatal(err)
	}
	cur = next
	clk.Add(20 * time.Hour)
	_, _, err = ownKey()
	wait, ok := rotatord.RetryAfter(err)
	if rotatord.ErrorCode(err) != rotatord.ETOOMANYREQUESTS || !ok || wait < 9*time.Minute || wait > 10*time.Minute {
		t.Fatalf("a second own key 20 h later by this replica's clock = %v (retry after %s), want too_many_requests for about 10m", err, wait)
	}
}
