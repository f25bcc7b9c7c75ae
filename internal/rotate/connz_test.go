package rotate_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/internal/rotate"
)

// askedChecker is a ConnChecker that records which keys it was asked about
// and answers from conns (or fails with err).
type askedChecker struct {
	mu    sync.Mutex
	conns map[string]string
	err   error
	asked []string
}

func (c *askedChecker) Connected(_ context.Context, _ string, keys []string) (map[string]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked = append(c.asked, keys...)
	out := map[string]string{}
	for _, k := range keys {
		if id, ok := c.conns[k]; ok {
			out[k] = id
		}
	}
	return out, c.err
}

// take returns the keys asked about since the last take.
func (c *askedChecker) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.asked
	c.asked = nil
	return out
}

// startRotations makes a service on a fake clock, creates n agents in
// account fleet and starts a rotation of each; it returns the rotations.
func startRotations(t *testing.T, n int) (*fakeClock, *rotate.Service, *registry.Store, []*rotatord.Rotation) {
	t.Helper()
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	if _, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	var rs []*rotatord.Rotation
	for i := range n {
		name := fmt.Sprintf("agent-%03d", i)
		if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: name, Account: "fleet"}); err != nil {
			t.Fatal(err)
		}
		r, err := svc.StartRotation(ctx, "test", name, rotatord.TriggerManual)
		if err != nil {
			t.Fatal(err)
		}
		if r.State != rotatord.RotationDistributed {
			t.Fatalf("rotation of %s is %s, want distributed", name, r.State)
		}
		rs = append(rs, r)
	}
	return clk, svc, store, rs
}

// rotationStates counts the rotations of trigger manual by state.
func rotationStates(t *testing.T, store *registry.Store) map[string]int {
	t.Helper()
	rows, err := store.Pool().Query(context.Background(), `SELECT state, count(*) FROM rotations WHERE trigger = 'manual' GROUP BY state`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			t.Fatal(err)
		}
		out[state] = n
	}
	return out
}

// A rotation past its deadline is rolled back only after the servers said
// its new key is not connected, and one Tick asks about a bounded number of
// keys (a listing of every connection of a large account made the servers
// decode every JWT of it, page after page): the others wait for the next
// Tick instead of being rolled back unasked.
func TestTickAsksBeforeRollingBack(t *testing.T) {
	t.Parallel()
	const n = 200
	clk, svc, store, rs := startRotations(t, n)
	ctx := context.Background()
	checker := &askedChecker{conns: map[string]string{}}
	for _, r := range rs[:10] {
		checker.conns[r.NewKey] = "" // these agents did reconnect; their events were lost
	}
	svc.SetConnChecker(checker)
	clk.Add(48 * time.Hour)

	// The servers do not answer: nothing is rolled back.
	checker.err = errors.New("no server answered")
	if _, err := svc.Tick(ctx); err == nil {
		t.Fatal("tick: no error, want the servers' silence reported")
	}
	asked := checker.take()
	if len(asked) == 0 || len(asked) > 128 {
		t.Fatalf("asked about %d keys, want 1 to 128", len(asked))
	}
	if st := rotationStates(t, store); st[rotatord.RotationRolledBack] != 0 {
		t.Fatalf("rotations %v after a tick whose question went unanswered: none may roll back", st)
	}

	checker.err = nil
	seen := map[string]bool{}
	for _, k := range asked {
		seen[k] = true // those found connected were confirmed all the same
	}
	// At the same instant the budget is spent: nothing more is asked.
	if _, err := svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if asked := checker.take(); len(asked) != 0 {
		t.Fatalf("a second tick in the same second asked about %d more keys; want none", len(asked))
	}
	for tick := 1; ; tick++ {
		clk.Add(time.Second)
		if _, err := svc.Tick(ctx); err != nil {
			t.Fatalf("tick %d: %v", tick, err)
		}
		asked := checker.take()
		if len(asked) > 128 {
			t.Fatalf("tick %d asked about %d keys, want at most 128", tick, len(asked))
		}
		for _, k := range asked {
			seen[k] = true
		}
		st := rotationStates(t, store)
		// Whatever was not asked about is still waiting.
		if done := n - st[rotatord.RotationDistributed]; done > len(seen) {
			t.Fatalf("tick %d: %d rotations ended but only %d keys were asked about: %v", tick, done, len(seen), st)
		}
		if st[rotatord.RotationDistributed] == 0 {
			if st[rotatord.RotationRolledBack] != n-10 || st[rotatord.RotationCompleted]+st[rotatord.RotationConfirmed] != 10 {
				t.Fatalf("rotations %v; want %d rolled back and the 10 connected confirmed", st, n-10)
			}
			if tick < 2 {
				t.Fatalf("all %d expired rotations were decided in one tick, beyond its budget", n)
			}
			break
		}
		if tick > 10 {
			t.Fatalf("rotations %v after %d ticks", st, tick)
		}
	}
}

// Every connzEvery the servers are asked about every rotation that has
// waited that long, each key once, a bounded number a second; one handed
// out just now is not asked about: its connect event may be on its way.
// After events may have been missed, every rotation is asked about.
func TestConnzSweepAsksAboutEveryKeyOnce(t *testing.T) {
	t.Parallel()
	const n = 300
	clk, svc, store, rs := startRotations(t, n)
	ctx := context.Background()
	clk.Add(31 * time.Second)
	if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: "young", Account: "fleet"}); err != nil {
		t.Fatal(err)
	}
	young, err := svc.StartRotation(ctx, "test", "young", rotatord.TriggerManual)
	if err != nil {
		t.Fatal(err)
	}
	checker := &askedChecker{conns: map[string]string{rs[7].NewKey: "", rs[250].NewKey: ""}}
	svc.SetConnChecker(checker)
	count := map[string]int{}
	ticks := 0
	for ; ticks < 10; ticks++ {
		clk.Add(time.Second)
		if _, err := svc.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		asked := checker.take()
		if len(asked) > 128 {
			t.Fatalf("a tick asked about %d keys, want at most 128", len(asked))
		}
		if len(asked) == 0 {
			break
		}
		for _, k := range asked {
			count[k]++
		}
	}
	if ticks < 3 {
		t.Fatalf("the sweep of %d rotations took %d ticks, want at least 3 of at most 128 keys", n, ticks)
	}
	for _, r := range rs {
		if count[r.NewKey] != 1 {
			t.Fatalf("key of %s asked about %d times in the sweep, want once", r.Agent, count[r.NewKey])
		}
	}
	if count[young.NewKey] != 0 {
		t.Fatal("the sweep asked about a rotation handed out a moment before it")
	}
	if st := rotationStates(t, store); st[rotatord.RotationDistributed] != n+1-2 {
		t.Fatalf("rotations %v; want the 2 connected ones confirmed, the others waiting", st)
	}
	clk.Add(time.Second)
	if _, err := svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if asked := checker.take(); len(asked) != 0 {
		t.Fatalf("asked about %d keys again right after the sweep", len(asked))
	}
	clk.Add(31 * time.Second)
	if _, err := svc.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if asked := checker.take(); len(asked) != 128 {
		t.Fatalf("asked about %d keys once connzEvery passed, want a new sweep's first 128", len(asked))
	}

	svc.MarkEventsMissed()
	count = map[string]int{}
	for range 10 {
		clk.Add(time.Second)
		if _, err := svc.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		for _, k := range checker.take() {
			count[k]++
		}
	}
	if count[young.NewKey] != 1 {
		t.Fatalf("after events were missed, the young rotation was asked about %d times; want once", count[young.NewKey])
	}
}
