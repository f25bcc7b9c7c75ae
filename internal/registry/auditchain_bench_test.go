package registry_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/pgtest"
	"github.com/rotatord/rotatord/internal/registry"
)

// BenchmarkSealAudit measures how fast the sealer appends queued audit
// events to the hash chain (events/s), against a real PostgreSQL, after a
// trail of 0 or 100,000 events sealed before them (the cost of a batch must
// not grow with the trail). A rotation writes about seven events.
//
//	go test -run '^$' -bench SealAudit -benchtime 20000x ./internal/registry
func BenchmarkSealAudit(b *testing.B) {
	for _, trail := range []int{0, 100000} {
		b.Run(fmt.Sprintf("trail=%d", trail), func(b *testing.B) {
			ctx := context.Background()
			s, err := registry.Open(ctx, pgtest.New(b))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			queueEvents(b, s, trail)
			if n, err := s.SealAllAudit(ctx); err != nil || n != trail {
				b.Fatalf("sealed %d of a trail of %d: %v", n, trail, err)
			}
			queueEvents(b, s, b.N)
			b.ResetTimer()
			n, err := s.SealAllAudit(ctx)
			if err != nil || n != b.N {
				b.Fatalf("sealed %d of %d: %v", n, b.N, err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// queueEvents writes n audit events, 500 a statement.
func queueEvents(b *testing.B, s *registry.Store, n int) {
	b.Helper()
	const batch = 500
	for i := 0; i < n; i += batch {
		events := make([]*rotatord.AuditEvent, 0, batch)
		for range min(batch, n-i) {
			events = append(events, &rotatord.AuditEvent{Actor: "system", Action: "rotation.complete", Account: "fleet",
				Agent: "agent-00042", PublicKey: "UBNR2HD2KNMWT2TPPFLQNYFZFQKEGFTA4C6UPLU2QATCLEMZQNWSK6KG",
				Details: map[string]any{"next_rotation_at": "2026-11-24T04:24:43Z"}})
		}
		if err := s.AuditBatch(context.Background(), events); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyAudit rehashes a sealed trail of b.N events, as
// `audit verify` and GET /v1/audit/verify do.
func BenchmarkVerifyAudit(b *testing.B) {
	ctx := context.Background()
	s, err := registry.Open(ctx, pgtest.New(b))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	queueEvents(b, s, b.N)
	if _, err := s.SealAllAudit(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	r, err := s.VerifyAudit(ctx, registry.VerifyAuditOptions{})
	b.StopTimer()
	if err != nil || !r.OK() || r.Events != int64(b.N) {
		b.Fatalf("verify %d events: %v, %+v", b.N, err, r)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
