package rotate_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/pgtest"
	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/seal"
)

// fileDrop is a distributor that keeps what it was handed, standing for a
// delivery that calls out of the database.
type fileDrop struct {
	mu  sync.Mutex
	got map[string]int
}

func (f *fileDrop) Deliver(_ context.Context, h rotatord.Handoff) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got[h.Agent]++
	return "v", nil
}

func (f *fileDrop) Restore(context.Context, rotatord.Handoff, string) error { return nil }

// A scheduled wave starts many rotations per transaction and a burst of
// reconnects completes many per transaction, with the same records as one
// by one: two replicas ticking at once start each agent once, agents with
// an outside delivery go through their distributor, and a key that
// connected with another JWT is not confirmed.
func TestBatchStartAndConfirm(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	store, err := registry.Open(context.Background(), pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	key := make([]byte, seal.KeySize)
	rand.Read(key)
	sealer, _ := seal.New(key)
	drop := &fileDrop{got: map[string]int{}}
	newReplica := func() *rotate.Service {
		return rotate.New(rotate.Config{Store: store, Sealer: sealer, Now: clk.Now, NoJitter: true,
			Distributors: map[rotatord.Delivery]rotate.Distributor{rotatord.DeliveryFile: drop}})
	}
	a, b := newReplica(), newReplica()
	ctx := context.Background()
	if _, _, err := a.Init(ctx, "test", "op"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	const n = 150
	for i := range n {
		in := rotate.AgentInput{Name: fmt.Sprintf("agent-%03d", i), Account: "fleet"}
		if i%50 == 7 {
			in.Delivery = rotatord.DeliveryFile
		}
		if _, _, err := a.CreateAgent(ctx, "test", in); err != nil {
			t.Fatal(err)
		}
	}
	clk.Add(25 * time.Hour)

	var wg sync.WaitGroup
	results := make([]rotate.TickResult, 2)
	for i, svc := range []*rotate.Service{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := svc.Tick(ctx)
			if err != nil {
				t.Errorf("tick: %v", err)
			}
			results[i] = res
		}()
	}
	wg.Wait()
	if got := results[0].Started + results[1].Started; got != n {
		t.Fatalf("replicas started %d and %d rotations, want %d in all", results[0].Started, results[1].Started, n)
	}
	var rotations, distributed int
	store.Pool().QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE state = 'distributed') FROM rotations`).Scan(&rotations, &distributed)
	if rotations != n || distributed != n {
		t.Fatalf("%d rotations, %d distributed; want %d of each", rotations, distributed, n)
	}
	for _, name := range []string{"agent-007", "agent-057", "agent-107"} {
		if drop.got[name] != 2 { // the first creds, then the rotation's
			t.Errorf("%s was delivered %d times, want 2", name, drop.got[name])
		}
	}
	events, err := a.Audit(ctx, rotatord.AuditFilter{Agent: "agent-042", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range events {
		actions = append(actions, e.Action)
	}
	if want := "[agent.create credential.issue rotation.start credential.issue credential.deliver]"; fmt.Sprint(actions) != want {
		t.Fatalf("audit of agent-042 = %v, want %s", actions, want)
	}

	// Every agent reconnects; agent-001 with a JWT that is not the new one.
	conns := map[string]string{"UNOTWAITEDFOR": ""}
	for i := range n {
		name := fmt.Sprintf("agent-%03d", i)
		rots, err := a.Rotations(ctx, rotatord.RotationFilter{Agent: name, Limit: 1})
		if err != nil || len(rots) != 1 {
			t.Fatalf("rotations of %s: %v, %v", name, rots, err)
		}
		conns[rots[0].NewKey] = ""
		if i == 1 {
			conns[rots[0].NewKey] = "some-other-jwt-id"
		}
	}
	done, err := a.ConfirmMany(ctx, conns, "event")
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != n-1 {
		t.Fatalf("confirmed %d rotations, want %d", len(done), n-1)
	}
	// Confirmed, the old keys retired and their revocations recorded; not
	// completed until the account JWT that revokes them is stored and pushed.
	var confirmed, completed, revocations, active, retired int
	store.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'confirmed'), count(*) FILTER (WHERE state = 'completed') FROM rotations`).Scan(&confirmed, &completed)
	store.Pool().QueryRow(ctx, `SELECT count(*) FROM revocations WHERE reason = 'rotated'`).Scan(&revocations)
	store.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'active'), count(*) FILTER (WHERE state = 'retired') FROM credentials`).Scan(&active, &retired)
	if confirmed != n-1 || completed != 0 || revocations != n-1 || active != n || retired != n-1 {
		t.Fatalf("confirmed %d, completed %d, revocations %d, active creds %d, retired %d; want %d, 0, %d, %d, %d",
			confirmed, completed, revocations, active, retired, n-1, n-1, n, n-1)
	}
	g, _ := a.Agent(ctx, "agent-042")
	// @every rounds to the second.
	if d := g.NextRotationAt.Sub(clk.Now()); d < 24*time.Hour-time.Second || d > 24*time.Hour {
		t.Fatalf("agent-042's next rotation in %s, want 24h", d)
	}
	if r, _ := a.Rotations(ctx, rotatord.RotationFilter{Agent: "agent-001", Limit: 1}); r[0].State != rotatord.RotationDistributed {
		t.Fatalf("agent-001 connected with another jwt and its rotation is %s, want distributed", r[0].State)
	}
	events, _ = a.Audit(ctx, rotatord.AuditFilter{Agent: "agent-042", Limit: 100})
	actions = actions[:0]
	for _, e := range events[5:] {
		actions = append(actions, e.Action)
	}
	if want := "[rotation.confirm credential.revoke]"; fmt.Sprint(actions) != want {
		t.Fatalf("audit of agent-042 after confirm = %v, want %s", actions, want)
	}
	// Confirming again changes nothing.
	if again, err := b.ConfirmMany(ctx, conns, "connz"); err != nil || len(again) != 0 {
		t.Fatalf("confirm again = %d, %v; want none", len(again), err)
	}

	// One re-sign carries every old key's revocation and completes them all
	// (without NATS, storing the JWT is all the push there is).
	if resigned, err := b.ResignQueued(ctx); err != nil || resigned != 1 {
		t.Fatalf("re-signed %d accounts, %v; want 1", resigned, err)
	}
	store.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'confirmed'), count(*) FILTER (WHERE state = 'completed') FROM rotations`).Scan(&confirmed, &completed)
	if confirmed != 0 || completed != n-1 {
		t.Fatalf("after the re-sign: confirmed %d, completed %d; want 0, %d", confirmed, completed, n-1)
	}
	events, _ = a.Audit(ctx, rotatord.AuditFilter{Agent: "agent-042", Limit: 100})
	if last := events[len(events)-1]; last.Action != "rotation.complete" {
		t.Fatalf("audit of agent-042 ends with %s, want rotation.complete", last.Action)
	}
}

// An agent's rotations page newest first, each page continuing after the
// last ID of the previous one.
func TestRotationsPage(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, _ := newService(t, clk)
	ctx := context.Background()
	svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"})
	if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: "a", Account: "fleet"}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 3 {
		ids = append(ids, rotateAgent(t, svc, "a").ID)
		clk.Add(time.Second)
	}
	first, err := svc.Rotations(ctx, rotatord.RotationFilter{Agent: "a", Limit: 2})
	if err != nil || len(first) != 2 || first[0].ID != ids[2] || first[1].ID != ids[1] {
		t.Fatalf("first page = %v, %v; want the two newest", first, err)
	}
	rest, err := svc.Rotations(ctx, rotatord.RotationFilter{Agent: "a", After: first[1].ID, Limit: 2})
	if err != nil || len(rest) != 1 || rest[0].ID != ids[0] {
		t.Fatalf("second page = %v, %v; want the oldest", rest, err)
	}
	if _, err := svc.Rotations(ctx, rotatord.RotationFilter{Agent: "a", After: "not-an-id", Limit: 2}); !errors.Is(err, rotatord.ErrInvalid) {
		t.Fatalf("page after a bad id = %v, want ErrInvalid", err)
	}
}

// The fleet's rotations page newest first across agents and filter by
// account and state.
func TestFleetRotations(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, _ := newService(t, clk)
	ctx := context.Background()
	for _, acc := range []string{"fleet", "other"} {
		if _, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: acc}); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []rotate.AgentInput{{Name: "a", Account: "fleet"}, {Name: "b", Account: "fleet"}, {Name: "c", Account: "other"}} {
		if _, _, err := svc.CreateAgent(ctx, "test", g); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	for _, name := range []string{"a", "b", "c", "a"} {
		ids = append(ids, rotateAgent(t, svc, name).ID)
		clk.Add(time.Second)
	}
	all, err := svc.Rotations(ctx, rotatord.RotationFilter{Limit: 3})
	if err != nil || len(all) != 3 || all[0].ID != ids[3] || all[1].ID != ids[2] || all[2].ID != ids[1] {
		t.Fatalf("fleet page = %v, %v; want the three newest of every agent", all, err)
	}
	rest, err := svc.Rotations(ctx, rotatord.RotationFilter{After: all[2].ID, Limit: 3})
	if err != nil || len(rest) != 1 || rest[0].ID != ids[0] {
		t.Fatalf("second fleet page = %v, %v; want the oldest", rest, err)
	}
	other, err := svc.Rotations(ctx, rotatord.RotationFilter{Account: "other"})
	if err != nil || len(other) != 1 || other[0].Agent != "c" {
		t.Fatalf("account other = %v, %v; want c's rotation only", other, err)
	}
	if done, err := svc.Rotations(ctx, rotatord.RotationFilter{State: rotatord.RotationCompleted}); err != nil || len(done) != 4 {
		t.Fatalf("completed = %d, %v; want all 4", len(done), err)
	}
	if back, err := svc.Rotations(ctx, rotatord.RotationFilter{State: rotatord.RotationRolledBack}); err != nil || len(back) != 0 {
		t.Fatalf("rolled back = %v, %v; want none", back, err)
	}
	if _, err := svc.Rotations(ctx, rotatord.RotationFilter{State: "finished"}); !errors.Is(err, rotatord.ErrInvalid) {
		t.Fatalf("unknown state = %v, want ErrInvalid", err)
	}
}

// A batch that fails (here: the database refuses multi-row inserts of
// rotations) starts nothing; the agents are then started one by one.
func TestBatchStartFallsBackOneByOne(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"})
	for i := range 5 {
		if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: fmt.Sprintf("agent-%d", i), Account: "fleet"}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := store.Pool().Exec(ctx, `
		CREATE FUNCTION refuse_batches() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF (SELECT count(*) FROM inserted) > 1 THEN
				RAISE EXCEPTION 'no batches today';
			END IF;
			RETURN NULL;
		END $$;
		CREATE TRIGGER refuse_batches AFTER INSERT ON rotations REFERENCING NEW TABLE AS inserted
			FOR EACH STATEMENT EXECUTE FUNCTION refuse_batches();`)
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(25 * time.Hour)
	res, err := svc.Tick(ctx)
	if err != nil || res.Started != 5 {
		t.Fatalf("tick = %+v, %v; want 5 started one by one", res, err)
	}
	var rotations, credentials int
	store.Pool().QueryRow(ctx, `SELECT count(*) FROM rotations WHERE state = 'distributed'`).Scan(&rotations)
	store.Pool().QueryRow(ctx, `SELECT count(*) FROM credentials WHERE state = 'pending'`).Scan(&credentials)
	if rotations != 5 || credentials != 5 {
		t.Fatalf("%d rotations and %d pending credentials, want 5 each: the failed batch left something behind", rotations, credentials)
	}
}

// connected is a ConnChecker that reports fixed connections.
type connected map[string]string

func (c connected) Connected(_ context.Context, _ string, keys []string) (map[string]string, error) {
	out := map[string]string{}
	for _, k := range keys {
		if id, ok := c[k]; ok {
			out[k] = id
		}
	}
	return out, nil
}

// A rotation that cannot be confirmed (here: the database refuses it) does
// not hold up the others of its batch: they are confirmed one by one, and
// the tick's re-sign completes them.
func TestBatchConfirmIsolatesFailure(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"})
	conns := connected{}
	for _, name := range []string{"a", "b", "poison"} {
		if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: name, Account: "fleet"}); err != nil {
			t.Fatal(err)
		}
		r, err := svc.StartRotation(ctx, "test", name, rotatord.TriggerManual)
		if err != nil {
			t.Fatal(err)
		}
		conns[r.NewKey] = ""
	}
	_, err := store.Pool().Exec(ctx, `
		CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.state = 'confirmed' AND NEW.agent_id = (SELECT id FROM agents WHERE name = 'poison') THEN
				RAISE EXCEPTION 'cannot complete this one';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_poison BEFORE UPDATE ON rotations FOR EACH ROW EXECUTE FUNCTION refuse_poison();`)
	if err != nil {
		t.Fatal(err)
	}
	svc.SetConnChecker(conns)
	svc.MarkEventsMissed()
	res, err := svc.Tick(ctx)
	if err == nil || !strings.Contains(err.Error(), "cannot complete this one") {
		t.Fatalf("tick error = %v, want the refused confirmation", err)
	}
	if res.Confirmed != 2 {
		t.Fatalf("confirmed %d, want the 2 that could be", res.Confirmed)
	}
	for name, want := range map[string]string{"a": rotatord.RotationCompleted, "b": rotatord.RotationCompleted, "poison": rotatord.RotationDistributed} {
		if r, _ := svc.Rotations(ctx, rotatord.RotationFilter{Agent: name, Limit: 1}); r[0].State != want {
			t.Errorf("%s's rotation is %s, want %s", name, r[0].State, want)
		}
	}
}
