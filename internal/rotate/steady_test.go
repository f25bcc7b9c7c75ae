package rotate_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/internal/rotate"
)

// steadyConfig is a steady-state fleet simulation: agents in one account
// rotating every 24h (with the scheduler's jitter), revocations a day by
// the operator (each revoked agent replaced by a new one), for days
// simulated days after a day in which the fleet is enrolled, one agent at
// a time, so that credential ages spread over the day as in a fleet that
// has run for a while.
type steadyConfig struct {
	agents      int
	days        int
	revocations int           // per day
	step        time.Duration // simulated time between ticks
}

// steadyResult is what the simulation saw over the simulated days (the
// enrolment day left out).
type steadyResult struct {
	maxJWT, maxEntries int
	maxAt              time.Duration // from the start of the first day
	dayMax             []int         // largest account JWT of each day
	baseJWT            int           // the account JWT with no entry
	rotations          int
	revoked            int
	ticks              int
}

// simulateSteadyState runs the simulation against the real service and
// PostgreSQL with an injected clock. No NATS: each rotation is confirmed
// through the service one tick after it started, as the agent's connect
// event would. The JWT library stamps credentials with the real clock, so
// after each tick the registry's iat of new credentials is moved to the
// simulated time: that iat is what pruning and folding read.
func simulateSteadyState(tb testing.TB, cfg steadyConfig) steadyResult {
	tb.Helper()
	ctx := context.Background()
	// Far enough in the past that any real iat is later than every
	// simulated time, so new credentials are told from rewritten ones.
	clk := &fakeClock{t: time.Now().Add(-30 * 24 * time.Hour).Truncate(time.Minute)}
	svc, store := newServiceWith(tb, clk, rotate.Config{})
	if _, err := svc.CreateAccount(ctx, "sim", rotate.AccountInput{Name: "fleet"}); err != nil {
		tb.Fatal(err)
	}
	res := steadyResult{baseJWT: jwtSize(tb, store)}
	db := store.Pool()
	settle := func() {
		tb.Helper()
		if _, err := db.Exec(ctx, `UPDATE credentials SET issued_at = $1
			WHERE state IN ('pending', 'active') AND issued_at > $1::timestamptz + interval '1 day'`, clk.Now()); err != nil {
			tb.Fatal(err)
		}
	}
	create := func(name string) {
		tb.Helper()
		if _, _, err := svc.CreateAgent(ctx, "sim", rotate.AgentInput{Name: name, Account: "fleet", Schedule: "@every 24h"}); err != nil {
			tb.Fatal(err)
		}
	}

	// Enrolment day.
	active := make([]string, 0, cfg.agents)
	spacing := 24 * time.Hour / time.Duration(cfg.agents)
	start := clk.Now()
	for i := range cfg.agents {
		// One agent every spacing, in ticks of cfg.step.
		if at := start.Add(time.Duration(i) * spacing); at.After(clk.Now()) {
			settle()
			clk.Add(max(at.Sub(clk.Now()), cfg.step))
		}
		name := fmt.Sprintf("agent-%05d", i)
		create(name)
		active = append(active, name)
	}
	settle()
	clk.Add(start.Add(24 * time.Hour).Sub(clk.Now()))

	rnd := rand.New(rand.NewPCG(1, 2))
	day0 := clk.Now()
	revEvery := 24 * time.Hour / time.Duration(max(cfg.revocations, 1))
	nextRev := day0.Add(revEvery / 2)
	res.dayMax = make([]int, cfg.days)
	for clk.Now().Before(day0.Add(time.Duration(cfg.days) * 24 * time.Hour)) {
		clk.Add(cfg.step)
		// Agents whose rotation went out at the last tick have fetched
		// their creds and reconnected.
		rows, err := db.Query(ctx, `SELECT new_public_key FROM rotations WHERE state = 'distributed'`)
		if err != nil {
			tb.Fatal(err)
		}
		conns := map[string]string{}
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				tb.Fatal(err)
			}
			conns[k] = ""
		}
		rows.Close()
		if len(conns) > 0 {
			done, err := svc.ConfirmMany(ctx, conns, "event")
			if err != nil {
				tb.Fatal(err)
			}
			res.rotations += len(done)
		}
		// The operator's revocations, evenly spread, of agents picked at
		// random; each is replaced.
		for cfg.revocations > 0 && !nextRev.After(clk.Now()) {
			i := rnd.IntN(len(active))
			name := active[i]
			if _, err := svc.RevokeAgent(ctx, "sim", name, "simulated"); err != nil {
				tb.Fatal(err)
			}
			res.revoked++
			active[i] = fmt.Sprintf("re-%05d", res.revoked)
			create(active[i])
			nextRev = nextRev.Add(revEvery)
		}
		if _, err := svc.Tick(ctx); err != nil {
			tb.Fatal(err)
		}
		res.ticks++
		settle()

		size, entries := jwtSize(tb, store), 0
		if err := db.QueryRow(ctx, `SELECT count(*) FROM revocations`).Scan(&entries); err != nil {
			tb.Fatal(err)
		}
		at := clk.Now().Sub(day0)
		if d := int(at / (24 * time.Hour)); d < cfg.days {
			res.dayMax[d] = max(res.dayMax[d], size)
		}
		if size > res.maxJWT {
			res.maxJWT, res.maxAt = size, at
		}
		res.maxEntries = max(res.maxEntries, entries)
	}
	return res
}

func jwtSize(tb testing.TB, store *registry.Store) int {
	tb.Helper()
	var n int
	if err := store.Pool().QueryRow(context.Background(), `SELECT octet_length(jwt) FROM accounts WHERE name = 'fleet'`).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// steadyGoal is the goal (64 KiB for 10,000 agents and 500
// revocations a day) scaled to a fleet of n agents: the JWT's claims
// without entries, plus the goal's entries in proportion.
func steadyGoal(base, n int) int {
	return base + (64<<10-base)*n/10000
}

// A fleet at steady state keeps a small account JWT: entries fold or
// expire about a day after the JWT they revoke was issued, so the JWT holds
// about a day of operator revocations and the rotations of the last
// jitter spread. 300 agents and 15 revocations a day (the fleet
// scaled down by 10,000/300), three days in ticks of 15 minutes: the
// largest account JWT stays under the 64 KiB goal scaled the same
// way. The full size is BenchmarkSteadyState.
func TestSteadyStateAccountJWT(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("simulates three days of a fleet")
	}
	const agents = 300
	res := simulateSteadyState(t, steadyConfig{agents: agents, days: 3, revocations: 15, step: 15 * time.Minute})
	t.Logf("%d agents, 3 days: %d rotations, %d revocations; largest account JWT %d bytes (%d entries) at %s; by day %v",
		agents, res.rotations, res.revoked, res.maxJWT, res.maxEntries, res.maxAt, res.dayMax)
	// Every agent rotated about once a day, and revocations happened.
	if res.rotations < 27*agents/10 || res.revoked != 45 {
		t.Fatalf("%d rotations and %d revocations, want about %d and 45", res.rotations, res.revoked, 3*agents)
	}
	if goal := steadyGoal(res.baseJWT, agents); res.maxJWT > goal {
		t.Fatalf("largest account JWT %d bytes, over the scaled goal of %d", res.maxJWT, goal)
	}
	// Steady: the third day is no larger than the second (revocations
	// start on the first), give or take a few entries.
	if last, first := res.dayMax[2], res.dayMax[1]; last > first+10*94 {
		t.Fatalf("largest JWT by day %v: it grows", res.dayMax)
	}
}

// BenchmarkSteadyState is the steady-state simulation at fleet size:
// 10,000 agents in one account, 24h schedule with jitter, three simulated
// days, 500 operator revocations a day. It reports the largest account JWT
// seen (goal: under 64 KiB throughout).
//
//	go test -run '^$' -bench 'SteadyState/agents=10000' -benchtime 1x -timeout 60m ./internal/rotate
func BenchmarkSteadyState(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			for range b.N {
				t0 := time.Now()
				res := simulateSteadyState(b, steadyConfig{agents: n, days: 3, revocations: 500 * n / 10000, step: time.Minute})
				b.ReportMetric(float64(res.maxJWT), "max_jwt_bytes")
				b.ReportMetric(float64(res.maxEntries), "max_entries")
				b.Logf("%d agents, 3 days, %d ticks: %d rotations, %d revocations; largest account JWT %d bytes (%d entries) at %s; by day %v; %s",
					n, res.ticks, res.rotations, res.revoked, res.maxJWT, res.maxEntries, res.maxAt, res.dayMax, time.Since(t0).Round(time.Second))
			}
		})
	}
}
