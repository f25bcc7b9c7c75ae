package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/auditchain"
	"github.com/rotatord/rotatord/internal/pgtest"
	"github.com/rotatord/rotatord/internal/registry"
)

// superExec runs stmts in one transaction on s's connection, which in
// these tests is PostgreSQL's superuser: what an attacker with full
// database access can do.
func superExec(t *testing.T, s *registry.Store, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	for _, q := range stmts {
		if _, err := tx.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func verify(t *testing.T, s *registry.Store, opts registry.VerifyAuditOptions) *auditchain.Report {
	t.Helper()
	r, err := s.VerifyAudit(context.Background(), opts)
	if err != nil {
		t.Fatalf("VerifyAudit: %v", err)
	}
	return r
}

func audit(t *testing.T, s *registry.Store, ctx context.Context, e *rotatord.AuditEvent) *rotatord.AuditEvent {
	t.Helper()
	if err := s.Audit(ctx, e); err != nil {
		t.Fatal(err)
	}
	return e
}

func sealAll(t *testing.T, s *registry.Store) int {
	t.Helper()
	n, err := s.SealAllAudit(context.Background())
	if err != nil {
		t.Fatalf("SealAllAudit: %v", err)
	}
	return n
}

func TestAuditChainSealsAndVerifies(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()

	if r := verify(t, s, registry.VerifyAuditOptions{}); !r.OK() || r.Events != 0 || r.Head.Seq != 0 {
		t.Fatalf("empty trail: %+v", r)
	}
	events := []*rotatord.AuditEvent{
		{Actor: "token:admin", Action: "agent.create", Account: "fleet", Agent: "kate",
			Details: map[string]any{"delivery": "poll", "permissions": map[string]any{"pub": []any{"orders.>"}}}},
		{Actor: "rotator", Action: "credential.issue", Account: "fleet", Agent: "kate", PublicKey: "UKATE",
			Rotation: "0b6f7e52-9d1c-4a55-8f0e-6c1f2b7a9d10",
			// Past float64 precision, HTML characters, an escaped control character.
			Details: map[string]any{"big": json.Number("12345678901234567890"), "dec": json.Number("1.50"), "note": "<a&b>\x01 été"}},
		{Actor: "token:admin", Action: "agent.revoke", Agent: "kate"},
	}
	for _, e := range events {
		audit(t, s, ctx, e)
	}
	if r := verify(t, s, registry.VerifyAuditOptions{UnsealedAge: time.Nanosecond}); !r.OK() || r.Unsealed != 3 || r.OldestUnsealedID != events[0].ID {
		t.Fatalf("before sealing: %+v; want 3 unsealed from %d", r, events[0].ID)
	}
	if n, err := s.SealAudit(ctx, 2); err != nil || n != 2 {
		t.Fatalf("SealAudit(2) = %d, %v; want 2", n, err)
	}
	if n := sealAll(t, s); n != 1 {
		t.Fatalf("SealAllAudit = %d; want the 1 left", n)
	}
	if n := sealAll(t, s); n != 0 {
		t.Fatalf("SealAllAudit again = %d; want 0", n)
	}
	r := verify(t, s, registry.VerifyAuditOptions{UnsealedAge: time.Nanosecond})
	if !r.OK() || r.Events != 3 || r.Head.Seq != 3 || len(r.Head.Hash) != 64 || r.Unsealed != 0 {
		t.Fatalf("after sealing: %+v", r)
	}
	anchor := r.Head

	// An event whose transaction commits after later events were sealed
	// (it has the lower id) is sealed in a later batch, not lost.
	inTx, release := make(chan int64), make(chan struct{})
	done := make(chan error)
	go func() {
		done <- s.InTx(ctx, func(ctx context.Context) error {
			e := &rotatord.AuditEvent{Actor: "rotator", Action: "rotation.complete", Agent: "kate"}
			if err := s.Audit(ctx, e); err != nil {
				return err
			}
			inTx <- e.ID
			<-release
			return nil
		})
	}()
	lateID := <-inTx
	early := audit(t, s, ctx, &rotatord.AuditEvent{Actor: "token:admin", Action: "agent.create", Agent: "bob"})
	if n := sealAll(t, s); n != 1 {
		t.Fatalf("sealed %d while a transaction is open; want 1", n)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := sealAll(t, s); n != 1 {
		t.Fatalf("sealed %d after the late commit; want 1", n)
	}
	var lateSeq, earlySeq int64
	if err := s.Pool().QueryRow(ctx, `SELECT (SELECT seq FROM audit_chain WHERE event_id = $1), (SELECT seq FROM audit_chain WHERE event_id = $2)`,
		lateID, early.ID).Scan(&lateSeq, &earlySeq); err != nil {
		t.Fatal(err)
	}
	if !(lateID < early.ID && lateSeq > earlySeq) {
		t.Fatalf("late event %d at seq %d, early event %d at seq %d; want the late one sealed after", lateID, lateSeq, early.ID, earlySeq)
	}
	r = verify(t, s, registry.VerifyAuditOptions{Anchors: []auditchain.Head{anchor}})
	if !r.OK() || r.Events != 5 || r.Head.Seq != 5 {
		t.Fatalf("after the late commit: %+v", r)
	}

	for _, stmt := range []string{"UPDATE audit_chain SET hash = prev_hash", "DELETE FROM audit_chain", "TRUNCATE audit_chain"} {
		if _, err := s.Pool().Exec(ctx, stmt); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v, want refused as append-only", stmt, err)
		}
	}
}

func TestAuditChainDetectsTampering(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	var ids []int64
	for i := range 6 {
		e := audit(t, s, ctx, &rotatord.AuditEvent{Actor: "token:admin", Action: "agent.create",
			Agent: fmt.Sprintf("agent-%d", i), Details: map[string]any{"n": json.Number("12345678901234567890")}})
		ids = append(ids, e.ID)
	}
	sealAll(t, s)
	good := verify(t, s, registry.VerifyAuditOptions{})
	if !good.OK() || good.Head.Seq != 6 {
		t.Fatalf("untouched: %+v", good)
	}
	problems := func(r *auditchain.Report) string {
		var out []string
		for _, p := range r.Problems {
			out = append(out, fmt.Sprintf("%s %d %d", p.Kind, p.Seq, p.EventID))
		}
		return strings.Join(out, "; ")
	}
	alter := func(set string, id int64) {
		superExec(t, s, "ALTER TABLE audit_events DISABLE TRIGGER USER",
			fmt.Sprintf("UPDATE audit_events SET %s WHERE id = %d", set, id),
			"ALTER TABLE audit_events ENABLE TRIGGER USER")
	}

	// A number changed beyond float64 precision is still a change.
	alter(`details = '{"n": 12345678901234567891}'`, ids[1])
	if r := verify(t, s, registry.VerifyAuditOptions{}); problems(r) != fmt.Sprintf("changed 2 %d", ids[1]) {
		t.Fatalf("details changed: problems %q; want event %d changed", problems(r), ids[1])
	}
	alter(`details = '{"n": 12345678901234567890}'`, ids[1])
	// jsonb normalizes: the same value written differently is no change.
	alter(`details = '{ "n" :12345678901234567890 }'`, ids[1])
	if r := verify(t, s, registry.VerifyAuditOptions{}); !r.OK() {
		t.Fatalf("restored: %+v", r)
	}
	alter(`at = at + interval '1 microsecond'`, ids[2])
	if r := verify(t, s, registry.VerifyAuditOptions{}); problems(r) != fmt.Sprintf("changed 3 %d", ids[2]) {
		t.Fatalf("time changed: problems %q", problems(r))
	}
	alter(`at = at - interval '1 microsecond'`, ids[2])

	superExec(t, s, "ALTER TABLE audit_events DISABLE TRIGGER USER",
		fmt.Sprintf("DELETE FROM audit_events WHERE id = %d", ids[3]),
		"ALTER TABLE audit_events ENABLE TRIGGER USER")
	if r := verify(t, s, registry.VerifyAuditOptions{}); problems(r) != fmt.Sprintf("deleted 4 %d", ids[3]) {
		t.Fatalf("event deleted: problems %q", problems(r))
	}

	// A link removed from the chain.
	superExec(t, s, "ALTER TABLE audit_chain DISABLE TRIGGER USER", "DELETE FROM audit_chain WHERE seq = 5",
		"ALTER TABLE audit_chain ENABLE TRIGGER USER")
	if r := verify(t, s, registry.VerifyAuditOptions{}); !strings.Contains(problems(r), "missing 5 0") {
		t.Fatalf("link deleted: problems %q", problems(r))
	}

	// The whole chain rewritten consistently passes on its own; only an
	// anchor recorded before tells.
	superExec(t, s, "ALTER TABLE audit_chain DISABLE TRIGGER USER", "DELETE FROM audit_chain",
		"ALTER TABLE audit_chain ENABLE TRIGGER USER", "INSERT INTO audit_unsealed SELECT id FROM audit_events")
	sealAll(t, s)
	if r := verify(t, s, registry.VerifyAuditOptions{}); !r.OK() {
		t.Fatalf("rewritten chain: %+v", r)
	}
	if r := verify(t, s, registry.VerifyAuditOptions{Anchors: []auditchain.Head{good.Head}}); !strings.Contains(problems(r), "anchor_mismatch") {
		t.Fatalf("rewritten chain against the old head: problems %q; want an anchor mismatch", problems(r))
	}

	// An event written around the queue is never sealed: a warning.
	superExec(t, s, "ALTER TABLE audit_events DISABLE TRIGGER USER",
		"INSERT INTO audit_events (at, actor, action) VALUES (now() - interval '1 hour', 'mallory', 'agent.create')",
		"ALTER TABLE audit_events ENABLE TRIGGER USER")
	if n := sealAll(t, s); n != 0 {
		t.Fatalf("sealed %d events written around the queue", n)
	}
	r := verify(t, s, registry.VerifyAuditOptions{})
	if !r.OK() || r.Unsealed != 1 || r.OldestUnsealedID <= ids[5] {
		t.Fatalf("forged event: %+v; want one unsealed", r)
	}

	// An event deleted before the sealer got to it leaves its queue row.
	gone := audit(t, s, ctx, &rotatord.AuditEvent{Actor: "test", Action: "agent.revoke"})
	superExec(t, s, "ALTER TABLE audit_events DISABLE TRIGGER USER",
		fmt.Sprintf("DELETE FROM audit_events WHERE id = %d", gone.ID),
		"ALTER TABLE audit_events ENABLE TRIGGER USER")
	audit(t, s, ctx, &rotatord.AuditEvent{Actor: "test", Action: "agent.create"})
	if n := sealAll(t, s); n != 1 {
		t.Fatalf("sealed %d; want the 1 event still there", n)
	}
	if r := verify(t, s, registry.VerifyAuditOptions{}); problems(r) != fmt.Sprintf("deleted 0 %d", gone.ID) {
		t.Fatalf("event deleted before sealing: problems %q", problems(r))
	}
}

// TestAuditSealerNeverBlocksWriters holds the sealers' lock as a busy
// sealer would: writers go on, and other sealers skip the round.
func TestAuditSealerNeverBlocksWriters(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	audit(t, s, ctx, &rotatord.AuditEvent{Actor: "test", Action: "agent.create"})
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	// 7290002 is registry.auditSealLock.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7290002)`); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	for range 20 {
		audit(t, s, short, &rotatord.AuditEvent{Actor: "test", Action: "agent.create"})
	}
	if n, err := s.SealAudit(short, 0); err != nil || n != 0 {
		t.Fatalf("SealAudit while another sealer holds the chain = %d, %v; want 0 at once", n, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("writes and a skipped seal took %s", d)
	}
	tx.Rollback(ctx) //nolint:errcheck
	if n := sealAll(t, s); n != 21 {
		t.Fatalf("sealed %d; want 21", n)
	}
}

// TestAuditChainConcurrentWriters writes events from many concurrent
// transactions (some rolled back) while three sealers, as on three
// replicas, seal in small batches. Every committed event ends up sealed
// exactly once, in a chain that verifies.
func TestAuditChainConcurrentWriters(t *testing.T) {
	t.Parallel()
	url := pgtest.New(t)
	ctx := context.Background()
	stores := make([]*registry.Store, 3)
	for i := range stores {
		s, err := registry.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		stores[i] = s
	}
	s := stores[0]

	const writers, txs, perTx = 8, 20, 3
	var committed, sealedDuring atomic.Int64
	stop := make(chan struct{})
	var sealers sync.WaitGroup
	sealErrs := make(chan error, len(stores))
	for _, st := range stores {
		sealers.Add(1)
		go func() {
			defer sealers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				n, err := st.SealAudit(ctx, 7)
				if err != nil {
					sealErrs <- err
					return
				}
				sealedDuring.Add(int64(n))
			}
		}()
	}
	var wg sync.WaitGroup
	writeErrs := make(chan error, writers)
	rollback := errors.New("rollback")
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range txs {
				err := s.InTx(ctx, func(ctx context.Context) error {
					for j := range perTx {
						e := &rotatord.AuditEvent{Actor: fmt.Sprintf("writer-%d", w), Action: "credential.issue",
							Agent: fmt.Sprintf("agent-%d-%d", w, i), Details: map[string]any{"step": j}}
						if err := s.Audit(ctx, e); err != nil {
							return err
						}
					}
					if i%5 == 4 {
						return rollback
					}
					return nil
				})
				switch {
				case err == nil:
					committed.Add(perTx)
				case !errors.Is(err, rollback):
					writeErrs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	sealers.Wait()
	close(writeErrs)
	close(sealErrs)
	for err := range writeErrs {
		t.Fatalf("writer: %v", err)
	}
	for err := range sealErrs {
		t.Fatalf("sealer: %v", err)
	}
	sealAll(t, s)

	want := committed.Load()
	if want != writers*txs*perTx*4/5 {
		t.Fatalf("committed %d events; want %d", want, writers*txs*perTx*4/5)
	}
	t.Logf("%d events, %d sealed while writers ran", want, sealedDuring.Load())
	var links, events, maxSeq, unsealed, queued int64
	if err := s.Pool().QueryRow(ctx, `
		SELECT (SELECT count(DISTINCT event_id) FROM audit_chain), (SELECT count(*) FROM audit_events),
		       (SELECT coalesce(max(seq), 0) FROM audit_chain),
		       (SELECT count(*) FROM audit_events e WHERE NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.event_id = e.id)),
		       (SELECT count(*) FROM audit_unsealed)`).Scan(&links, &events, &maxSeq, &unsealed, &queued); err != nil {
		t.Fatal(err)
	}
	if links != want || events != want || maxSeq != want || unsealed != 0 || queued != 0 {
		t.Fatalf("%d sealed events, %d events, max seq %d, %d unsealed, %d queued; want %d, %d, %d, 0, 0",
			links, events, maxSeq, unsealed, queued, want, want, want)
	}
	r := verify(t, s, registry.VerifyAuditOptions{UnsealedAge: time.Nanosecond})
	if !r.OK() || r.Events != want || r.Head.Seq != want || r.Unsealed != 0 {
		t.Fatalf("verify: %+v", r)
	}
}

func TestAuditSealerLoop(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		s.RunAuditSealer(ctx, discard(), 10*time.Millisecond)
		close(done)
	}()
	audit(t, s, context.Background(), &rotatord.AuditEvent{Actor: "test", Action: "agent.create"})
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := verify(t, s, registry.VerifyAuditOptions{})
		if r.Head.Seq == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sealer loop did not seal the event")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}

// TestAuditSealerLogsOncePerStreak: a sealer that keeps failing logs once.
func TestAuditSealerLogsOncePerStreak(t *testing.T) {
	t.Parallel()
	s, err := registry.Open(context.Background(), pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Close() // every seal now fails
	var logs bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	s.RunAuditSealer(ctx, slog.New(slog.NewTextHandler(&logs, nil)), 5*time.Millisecond)
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 {
		t.Fatalf("logged %d failures; want 1:\n%s", n, logs.String())
	}
}
