package registry_test

import (
	"context"
	"testing"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/pgtest"
	"github.com/rotatord/rotatord/internal/registry"
)

// BenchmarkSealAudit measures how fast the sealer appends queued audit
// events to the hash chain (events/s), against a real PostgreSQL. A
// rotation writes about seven events.
//
//	go test -run '^$' -bench SealAudit -benchtime 20000x ./internal/registry
func BenchmarkSealAudit(b *testing.B) {
	ctx := context.Background()
	s, err := registry.Open(ctx, pgtest.New(b))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const batch = 500
	for i := 0; i < b.N; i += batch {
		events := make([]*rotatord.AuditEvent, 0, batch)
		for range min(batch, b.N-i) {
			events = append(events, &rotatord.AuditEvent{Actor: "system", Action: "rotation.complete", Account: "fleet",
				Agent: "agent-00042", PublicKey: "UBNR2HD2KNMWT2TPPFLQNYFZFQKEGFTA4C6UPLU2QATCLEMZQNWSK6KG",
				Details: map[string]any{"next_rotation_at": "2026-11-24T04:24:43Z"}})
		}
		if err := s.AuditBatch(ctx, events); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	n, err := s.SealAllAudit(ctx)
	if err != nil || n != b.N {
		b.Fatalf("sealed %d of %d: %v", n, b.N, err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
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
	const batch = 500
	for i := 0; i < b.N; i += batch {
		events := make([]*rotatord.AuditEvent, 0, batch)
		for range min(batch, b.N-i) {
			events = append(events, &rotatord.AuditEvent{Actor: "system", Action: "rotation.complete", Account: "fleet",
				Agent: "agent-00042", PublicKey: "UBNR2HD2KNMWT2TPPFLQNYFZFQKEGFTA4C6UPLU2QATCLEMZQNWSK6KG",
				Details: map[string]any{"next_rotation_at": "2026-11-24T04:24:43Z"}})
		}
		if err := s.AuditBatch(ctx, events); err != nil {
			b.Fatal(err)
		}
	}
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
