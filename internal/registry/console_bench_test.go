package registry_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/pgtest"
	"github.com/rotatord/rotatord/internal/registry"
)

// BenchmarkFleetPage measures one page of the console's fleet view against
// a fleet of 10,000 agents with a rotation each (a tenth of them rolled
// back): the agents of the page (ListAgents, 100 a page, with the filter)
// and the newest rotation of each (LastRotations), as GET /v1/agents does.
//
//	go test -run '^$' -bench FleetPage -benchtime 200x ./internal/registry
//
// On the busy 2-core machine (load average 17): first page 6.0 ms, a page
// in the middle 3.7 ms, name search 4.5 ms, outcome filter (rolled_back,
// which looks up the newest rotation of agents until the page is full)
// 9.6 ms per page.
func BenchmarkFleetPage(b *testing.B) {
	ctx := context.Background()
	s, err := registry.Open(ctx, pgtest.New(b))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const agents = 10_000
	acc := &rotatord.Account{Name: "fleet", PublicKey: "AA7YSGD4WLBDBFDBS4RC7Z6WQR7SW3ARJPBR2OV5QZMZH6ECUG7BOU2Z",
		Limits: rotatord.NoLimits, JWT: "x.y.z", JWTID: "J"}
	if err := s.CreateAccount(ctx, acc); err != nil {
		b.Fatal(err)
	}
	for _, q := range []string{
		fmt.Sprintf(`INSERT INTO agents (account_id, name, permissions, schedule, grace_seconds, delivery, next_rotation_at)
			SELECT %d, 'agent-' || lpad(i::text, 5, '0'), '{}', '@every 24h', 1800, 'poll', now() + interval '1 day'
			FROM generate_series(1, %d) AS i`, acc.ID, agents),
		`INSERT INTO rotations (agent_id, state, trigger, new_public_key, finished_at, created_at)
			SELECT id, CASE WHEN id % 10 = 0 THEN 'rolled_back' ELSE 'completed' END, 'schedule', 'U' || id, now(), now() - interval '1 hour'
			FROM agents`,
		`ANALYZE agents`, `ANALYZE rotations`,
	} {
		if _, err := s.Pool().Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	page := func(b *testing.B, f rotatord.AgentFilter) {
		f.Limit = 100
		b.ResetTimer()
		for range b.N {
			list, err := s.ListAgents(ctx, f)
			if err != nil {
				b.Fatal(err)
			}
			ids := make([]int64, len(list))
			for i, g := range list {
				ids[i] = g.ID
			}
			last, err := s.LastRotations(ctx, ids)
			if err != nil || len(list) == 0 || len(last) != len(list) {
				b.Fatalf("%d agents, %d rotations: %v", len(list), len(last), err)
			}
		}
	}
	b.Run("first", func(b *testing.B) { page(b, rotatord.AgentFilter{}) })
	b.Run("middle", func(b *testing.B) { page(b, rotatord.AgentFilter{After: "agent-05000"}) })
	b.Run("search", func(b *testing.B) { page(b, rotatord.AgentFilter{Search: "GENT-0"}) })
	b.Run("rolled_back", func(b *testing.B) {
		page(b, rotatord.AgentFilter{Outcomes: []string{rotatord.RotationRolledBack}})
	})
}
