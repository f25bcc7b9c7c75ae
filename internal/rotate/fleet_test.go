package rotate_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/authwatch"
	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/internal/rotate"
)

// fleetOf creates account "fleet" with n agents (grace 1m) named
// agent-00, agent-01, ... in that (ID) order.
func fleetOf(t *testing.T, svc *rotate.Service, n int) []string {
	t.Helper()
	ctx := context.Background()
	if _, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("agent-%02d", i)
		if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: names[i], Account: "fleet", Grace: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	return names
}

func tick(t *testing.T, svc *rotate.Service) rotate.TickResult {
	t.Helper()
	res, err := svc.Tick(context.Background())
	if err != nil {
		t.Fatalf("tick: %v", err)
	}
	return res
}

// inFlight returns the rotation in flight of each named agent that has one.
func inFlight(t *testing.T, store *registry.Store, names []string) map[string]*rotatord.Rotation {
	t.Helper()
	out := map[string]*rotatord.Rotation{}
	for _, n := range names {
		g, err := store.FindAgentByName(context.Background(), n)
		if err != nil {
			t.Fatal(err)
		}
		r, err := store.InFlightRotation(context.Background(), g.ID)
		if err != nil {
			t.Fatal(err)
		}
		if r != nil {
			out[n] = r
		}
	}
	return out
}

// confirmAll confirms the rotations as if their agents reconnected, and
// lets the re-sign that refuses their old keys be stored and pushed, which
// completes them.
func confirmAll(t *testing.T, svc *rotate.Service, rs map[string]*rotatord.Rotation) {
	t.Helper()
	ctx := context.Background()
	conns := map[string]string{}
	accounts := map[int64]bool{}
	for _, r := range rs {
		conns[r.NewKey] = ""
		accounts[r.AccountID] = true
	}
	if _, err := svc.ConfirmMany(ctx, conns, "event"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.ResignQueued(ctx); err != nil {
		t.Fatal(err)
	}
	for id := range accounts {
		if _, err := svc.PushAccount(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
}

func fleetState(t *testing.T, svc *rotate.Service, id string) *rotatord.FleetRotation {
	t.Helper()
	f, err := svc.FleetRotation(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestAuthFailureKindsAreAuthwatchs(t *testing.T) {
	want := []string{authwatch.KindAuthFailures, authwatch.KindRevokedKeyUsed}
	if !slices.Equal(rotate.AuthFailureKinds, want) {
		t.Fatalf("a wave counts alerts %v, want authwatch's %v", rotate.AuthFailureKinds, want)
	}
}

// Each wave starts only once every rotation of the one before ended, and
// covers its cumulative percent of the agents.
func TestRotateAllInWaves(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	names := fleetOf(t, svc, 20)
	f, err := svc.RotateAll(ctx, "test", "fleet", rotate.FleetInput{Waves: []int{10, 50, 100}})
	if err != nil {
		t.Fatal(err)
	}
	if f.State != rotatord.FleetRunning || len(f.Waves) != 3 || f.HaltOnFailureRate != rotate.DefaultFleetHaltRate {
		t.Fatalf("fleet rotation = %+v", f)
	}
	for i, want := range []struct{ inFlight, done int }{{2, 0}, {8, 2}, {10, 10}} {
		tick(t, svc)
		rs := inFlight(t, store, names)
		if len(rs) != want.inFlight {
			t.Fatalf("wave %d: %d rotations in flight, want %d", i+1, len(rs), want.inFlight)
		}
		for n, r := range rs {
			if r.Trigger != rotatord.TriggerFleet {
				t.Fatalf("%s's rotation has trigger %s", n, r.Trigger)
			}
		}
		// The next wave waits for this one.
		tick(t, svc)
		if got := inFlight(t, store, names); len(got) != want.inFlight {
			t.Fatalf("wave %d: %d in flight after another tick, want still %d", i+1, len(got), want.inFlight)
		}
		st := fleetState(t, svc, f.ID)
		if st.Wave != i+1 || st.Progress[i].Waiting != want.inFlight || st.Progress[i].InFlight != want.inFlight {
			t.Fatalf("wave %d: progress %+v", i+1, st.Progress)
		}
		confirmAll(t, svc, rs)
	}
	tick(t, svc)
	st := fleetState(t, svc, f.ID)
	if st.State != rotatord.FleetCompleted || st.FinishedAt == nil {
		t.Fatalf("fleet rotation = %s, want completed", st.State)
	}
	for i, w := range st.Progress {
		if w.Done != w.Agents || w.Failed != 0 || w.Waiting != 0 || w.StartedAt == nil || w.EndedAt == nil {
			t.Fatalf("wave %d: %+v", i+1, w)
		}
	}
	if got := st.Progress[0].Agents + st.Progress[1].Agents + st.Progress[2].Agents; got != 20 {
		t.Fatalf("waves hold %d agents, want 20", got)
	}
	// Every agent rotated once.
	for _, n := range names {
		rs, err := svc.Rotations(ctx, rotatord.RotationFilter{Agent: n})
		if err != nil || len(rs) != 1 || rs[0].State != rotatord.RotationCompleted {
			t.Fatalf("%s: rotations %v (%v), want one completed", n, rs, err)
		}
	}
}

// A canary that does not come back halts the operation with an alert and
// no later wave starts; resume goes on, abort stops.
func TestRotateAllCanaryHalts(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	names := fleetOf(t, svc, 30)
	f, err := svc.RotateAll(ctx, "test", "fleet", rotate.FleetInput{})
	if err != nil {
		t.Fatal(err)
	}
	tick(t, svc)
	if rs := inFlight(t, store, names); len(rs) != 1 || rs[names[0]] == nil {
		t.Fatalf("canary: %v in flight, want only %s", rs, names[0])
	}
	clk.Add(2 * time.Minute) // past the canary's grace: rolled back
	tick(t, svc)
	tick(t, svc)
	st := fleetState(t, svc, f.ID)
	if st.State != rotatord.FleetHalted || st.Progress[0].Failed != 1 || st.Wave != 1 {
		t.Fatalf("after the canary failed: %s wave %d %+v", st.State, st.Wave, st.Progress[0])
	}
	if rs := inFlight(t, store, names); len(rs) != 0 {
		t.Fatalf("halted, yet %d rotations started", len(rs))
	}
	alerts, err := store.ListAlertsBy(ctx, rotatord.AlertFilter{Kind: rotate.AlertFleetHalted})
	if err != nil || len(alerts) != 1 || alerts[0].Severity != rotatord.SeverityCritical || alerts[0].Account != "fleet" {
		t.Fatalf("halt alerts = %v, %v", alerts, err)
	}
	// Halted holds the account's one slot.
	if _, err := svc.RotateAll(ctx, "test", "fleet", rotate.FleetInput{}); !errors.Is(err, rotatord.ErrConflict) {
		t.Fatalf("second rotate-all while halted = %v, want a conflict", err)
	}
	if _, err := svc.AbortFleetRotation(ctx, "test", "00000000-0000-0000-0000-000000000000"); !errors.Is(err, rotatord.ErrNotFound) {
		t.Fatalf("abort of an unknown fleet rotation = %v, want not found", err)
	}

	if _, err := svc.ResumeFleetRotation(ctx, "test", f.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.ResumeFleetRotation(ctx, "test", f.ID); !errors.Is(err, rotatord.ErrConflict) {
		t.Fatalf("resume of a running fleet rotation = %v, want a conflict", err)
	}
	tick(t, svc)
	// Wave 2 (10% of 30 = 3, so agents 1 and 2) starts; the canary is not
	// retried by the fleet.
	rs := inFlight(t, store, names)
	if len(rs) != 2 || rs[names[1]] == nil || rs[names[2]] == nil {
		t.Fatalf("after resume: %v in flight, want %s and %s", rs, names[1], names[2])
	}
	st, err = svc.AbortFleetRotation(ctx, "test", f.ID)
	if err != nil || st.State != rotatord.FleetAborted {
		t.Fatalf("abort = %v, %v", st, err)
	}
	confirmAll(t, svc, rs) // rotations in flight end by themselves
	tick(t, svc)
	if got := inFlight(t, store, names); len(got) != 0 {
		t.Fatalf("aborted, yet %d rotations in flight", len(got))
	}
	if st := fleetState(t, svc, f.ID); st.State != rotatord.FleetAborted || st.Progress[1].Done != 2 || st.Progress[2].Waiting != 27 {
		t.Fatalf("aborted fleet rotation: %s %+v", st.State, st.Progress)
	}
	if _, err := svc.AbortFleetRotation(ctx, "test", f.ID); !errors.Is(err, rotatord.ErrConflict) {
		t.Fatalf("second abort = %v, want a conflict", err)
	}
	// The slot is free again.
	if _, err := svc.RotateAll(ctx, "test", "fleet", rotate.FleetInput{}); err != nil {
		t.Fatalf("rotate-all after abort: %v", err)
	}
}

// Auth-failure alerts of a wave's agents count like rollbacks.
func TestRotateAllHaltsOnAuthFailures(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	names := fleetOf(t, svc, 10)
	f, err := svc.RotateAll(ctx, "test", "fleet", rotate.FleetInput{Waves: []int{20, 100}, HaltOnFailureRate: ptr(0.4)})
	if err != nil {
		t.Fatal(err)
	}
	tick(t, svc)
	// An alert from before the wave started does not count; one of an
	// agent of another wave neither.
	for _, a := range []*rotatord.Alert{
		{Kind: authwatch.KindAuthFailures, Severity: rotatord.SeverityWarning, Account: "fleet", Agent: names[0], Reason: "x"},
		{Kind: authwatch.KindAuthFailures, Severity: rotatord.SeverityWarning, Account: "fleet", Agent: names[5], Reason: "x"},
		{Kind: authwatch.KindRevokedKeyUsed, Severity: rotatord.SeverityWarning, Account: "fleet", Agent: names[1], Reason: "x"},
	} {
		if err := store.AddAlert(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	tick(t, svc)
	st := fleetState(t, svc, f.ID)
	if st.State != rotatord.FleetHalted || st.Progress[0].AuthFailures != 2 {
		t.Fatalf("with 2 of 2 canaries alerting: %s, %+v", st.State, st.Progress[0])
	}
}

func ptr[T any](v T) *T { return &v }

func TestRotateAllBadInput(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, _ := newService(t, clk)
	ctx := context.Background()
	fleetOf(t, svc, 1)
	for _, in := range []rotate.FleetInput{
		{Waves: []int{}}, {Waves: []int{5, 50}}, {Waves: []int{50, 20, 100}},
		{HaltOnFailureRate: ptr(-0.1)}, {HaltOnFailureRate: ptr(2.0)},
	} {
		if _, err := svc.RotateAll(ctx, "test", "fleet", in); !errors.Is(err, rotatord.ErrInvalid) {
			t.Errorf("RotateAll(%+v) = %v, want invalid", in, err)
		}
	}
	if _, err := svc.RotateAll(ctx, "test", "nope", rotate.FleetInput{}); !errors.Is(err, rotatord.ErrNotFound) {
		t.Errorf("RotateAll of an unknown account = %v, want not found", err)
	}
	if _, err := svc.RotateAll(ctx, "test", rotate.SystemAccountName, rotate.FleetInput{}); !errors.Is(err, rotatord.ErrInvalid) {
		t.Errorf("RotateAll of the system account = %v, want invalid", err)
	}
}

// Two rotate-all at once: exactly one starts, whichever replica; the
// database, not memory, keeps one per account.
func TestOneFleetRotationPerAccount(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store, sealer := newSealedService(t, clk)
	ctx := context.Background()
	fleetOf(t, svc, 3)
	other := rotate.New(rotate.Config{Store: store, Sealer: sealer, Now: clk.Now, NoJitter: true})
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := svc
			if i%2 == 1 {
				s = other
			}
			_, errs[i] = s.RotateAll(ctx, "test", "fleet", rotate.FleetInput{})
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, rotatord.ErrConflict):
			t.Fatalf("rotate-all = %v, want success or a conflict", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d rotate-all started, want 1", ok)
	}
	// Even bypassing the service's check, the database refuses a second.
	_, err := store.Pool().Exec(ctx, `INSERT INTO fleet_rotations (account_id, waves, halt_on_failure_rate, state, trigger)
		SELECT id, '{100}', 0, 'running', 'fleet' FROM accounts WHERE name = 'fleet'`)
	if err == nil {
		t.Fatal("the database took a second running fleet rotation of the account")
	}
}

// A fleet rotation left half done by a replica is finished by another.
func TestFleetRotationResumedByAnotherReplica(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store, sealer := newSealedService(t, clk)
	ctx := context.Background()
	names := fleetOf(t, svc, 10)
	f, err := svc.RotateAll(ctx, "test", "fleet", rotate.FleetInput{Waves: []int{50, 100}})
	if err != nil {
		t.Fatal(err)
	}
	tick(t, svc)
	confirmAll(t, svc, inFlight(t, store, names))
	// The first replica is gone; a second one takes over.
	other := rotate.New(rotate.Config{Store: store, Sealer: sealer, Now: clk.Now, NoJitter: true})
	tick(t, other)
	rs := inFlight(t, store, names)
	if len(rs) != 5 {
		t.Fatalf("second wave on the other replica: %d in flight, want 5", len(rs))
	}
	confirmAll(t, other, rs)
	tick(t, other)
	if st := fleetState(t, other, f.ID); st.State != rotatord.FleetCompleted {
		t.Fatalf("fleet rotation = %s, want completed", st.State)
	}
}

// signedBy returns the issuer of each agent's active credential.
func signedBy(t *testing.T, store *registry.Store, names []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range names {
		g, err := store.FindAgentByName(context.Background(), n)
		if err != nil {
			t.Fatal(err)
		}
		uc, err := jwt.DecodeUserClaims(g.Active.JWT)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = uc.Issuer
	}
	return out
}

// fetch asks for the agent's creds as the agent would (proof of possession
// of the key it holds); nil means 304.
func fetch(t *testing.T, svc *rotate.Service, name string, kp nkeys.KeyPair, at time.Time) []byte {
	t.Helper()
	ap, err := rotate.CheckProof(name, signGet(t, kp, name, at), at)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := svc.AgentCreds(context.Background(), ap)
	if errors.Is(err, rotatord.ErrNotModified) {
		return nil
	}
	if err != nil {
		t.Fatalf("creds of %s: %v", name, err)
	}
	return creds
}

// An agent of the current wave that polls before the batches reached it is
// re-issued at once, in its own request; one of a later wave is not, and
// no agent is before its wave started.
func TestAgentOfCurrentWaveReissuedOnItsPoll(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	if _, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	keys := map[string]nkeys.KeyPair{}
	var names []string
	for i := range 4 {
		name := fmt.Sprintf("agent-%02d", i)
		_, creds, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: name, Account: "fleet"})
		if err != nil {
			t.Fatal(err)
		}
		if keys[name], err = jwt.ParseDecoratedUserNKey(creds); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	f, err := svc.RotateAll(ctx, "test", "fleet", rotate.FleetInput{Waves: []int{50, 100}})
	if err != nil {
		t.Fatal(err)
	}
	at := clk.Now()
	if creds := fetch(t, svc, names[0], keys[names[0]], at); creds != nil {
		t.Fatal("an agent was re-issued before its wave started")
	}
	// The driver started wave 1 and stopped before starting its agents (a
	// replica that died in between).
	if _, err := store.Pool().Exec(ctx, `UPDATE fleet_rotations SET wave = 1,
		wave_log = jsonb_build_array(jsonb_build_object('wave', 1, 'started_at', now())) WHERE id = $1`, f.ID); err != nil {
		t.Fatal(err)
	}
	at = at.Add(time.Second)
	creds := fetch(t, svc, names[0], keys[names[0]], at)
	if creds == nil {
		t.Fatal("an agent of the current wave got 304 on its poll, want its new creds")
	}
	if rs := inFlight(t, store, names); len(rs) != 1 || rs[names[0]] == nil || rs[names[0]].Trigger != rotatord.TriggerFleet {
		t.Fatalf("in flight after its poll: %v, want only %s's fleet rotation", rs, names[0])
	}
	if creds := fetch(t, svc, names[3], keys[names[3]], at); creds != nil {
		t.Fatal("an agent of the next wave was re-issued on its poll")
	}
	// The driver picks up where it was: the other agent of wave 1 only.
	tick(t, svc)
	if rs := inFlight(t, store, names); len(rs) != 2 || rs[names[1]] == nil {
		t.Fatalf("in flight after the tick: %v, want %s and %s", rs, names[0], names[1])
	}
	st := fleetState(t, svc, f.ID)
	if st.Progress[0].InFlight != 2 || st.Progress[1].Waiting != 2 || st.Progress[1].InFlight != 0 {
		t.Fatalf("progress %+v", st.Progress)
	}
}
