package registry

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/pgtest"
)

// Taking a batch off the sealing queue reads the batch's events, not the
// trail sealed before them: the cost of a batch must not grow with the
// trail (a join planned as a merge walked audit_events from its first
// event on, every batch).
func TestSealingReadsOnlyTheBatch(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	write := func(n int) {
		t.Helper()
		for i := 0; i < n; i += 500 {
			events := make([]*rotatord.AuditEvent, 0, 500)
			for range min(500, n-i) {
				events = append(events, &rotatord.AuditEvent{Actor: "system", Action: "rotation.complete", Account: "fleet", Agent: "agent-1"})
			}
			if err := s.AuditBatch(ctx, events); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(6000)
	if n, err := s.SealAllAudit(ctx); err != nil || n != 6000 {
		t.Fatalf("sealed %d of 6000: %v", n, err)
	}
	const batch = 50
	write(batch)

	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var out []byte
	if err := tx.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+takeQueuedSQL, batch).Scan(&out); err != nil {
		t.Fatal(err)
	}
	var plans []struct{ Plan planNode }
	if err := json.Unmarshal(out, &plans); err != nil || len(plans) != 1 {
		t.Fatalf("plan %s: %v", out, err)
	}
	var read, taken float64
	var walk func(n planNode)
	walk = func(n planNode) {
		if n.Relation == "audit_events" || n.Relation == "audit_chain" {
			read += n.Rows * n.Loops
		}
		if n.Type == "ModifyTable" && n.Relation == "audit_unsealed" {
			taken += n.Rows * n.Loops
		}
		for _, c := range n.Plans {
			walk(c)
		}
	}
	walk(plans[0].Plan)
	if taken != batch {
		t.Fatalf("took %v queued events, want %d", taken, batch)
	}
	// Per event: a look-up to take it, one to read it, one for its link.
	if read > 3*batch {
		t.Fatalf("taking %d events read %v rows of audit_events and audit_chain (a trail of 6,000 sealed before them)", batch, read)
	}
}

type planNode struct {
	Type     string     `json:"Node Type"`
	Relation string     `json:"Relation Name"`
	Rows     float64    `json:"Actual Rows"`
	Loops    float64    `json:"Actual Loops"`
	Plans    []planNode `json:"Plans"`
}
