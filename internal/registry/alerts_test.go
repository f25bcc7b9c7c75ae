package registry_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rotatord/rotatord"
)

// Replicas racing to raise the same alert write it once per window; a new
// window opens when the last one ended, and other keys are independent.
func TestAddAlertOnce(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	t0 := time.Unix(1_800_000_000, 0).UTC()
	raise := func(key string, now time.Time) bool {
		t.Helper()
		wrote, err := s.AddAlertOnce(ctx, &rotatord.Alert{Kind: "auth_failures", Severity: rotatord.SeverityWarning, Reason: key},
			key, now, now.Add(5*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		return wrote
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wrote := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if raise("source:10.0.0.1", t0) {
				mu.Lock()
				wrote++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wrote != 1 {
		t.Fatalf("8 replicas wrote %d alerts, want 1", wrote)
	}
	if raise("source:10.0.0.1", t0.Add(4*time.Minute)) {
		t.Fatal("an alert was written again within the window")
	}
	if !raise("source:10.0.0.2", t0.Add(4*time.Minute)) {
		t.Fatal("another key's alert was suppressed")
	}
	if !raise("source:10.0.0.1", t0.Add(5*time.Minute)) {
		t.Fatal("no alert once the window ended")
	}
	alerts, err := s.ListAlerts(ctx, 10)
	if err != nil || len(alerts) != 3 {
		t.Fatalf("outbox = %d alerts, %v; want 3", len(alerts), err)
	}
}

// Alerts older than the retention go, delivered or not, and newer ones
// stay, however many there are (PruneAlerts deletes in batches).
func TestPruneAlerts(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	for i := range 3 {
		if err := s.AddAlert(ctx, &rotatord.Alert{Kind: "auth_failures", Severity: rotatord.SeverityWarning,
			Reason: fmt.Sprintf("old %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Pool().Exec(ctx, `UPDATE alerts SET created_at = now() - interval '31 days'`); err != nil {
		t.Fatal(err)
	}
	if err := s.AddAlert(ctx, &rotatord.Alert{Kind: "auth_failures", Severity: rotatord.SeverityWarning, Reason: "new"}); err != nil {
		t.Fatal(err)
	}
	n, err := s.PruneAlerts(ctx, 30*24*time.Hour)
	if err != nil || n != 3 {
		t.Fatalf("pruned %d: %v; want the 3 old alerts", n, err)
	}
	var left []string
	rows, err := s.Pool().Query(ctx, `SELECT reason FROM alerts`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			t.Fatal(err)
		}
		left = append(left, r)
	}
	if rows.Err() != nil || len(left) != 1 || left[0] != "new" {
		t.Fatalf("alerts left: %v (%v)", left, rows.Err())
	}
	if n, err := s.PruneAlerts(ctx, 30*24*time.Hour); err != nil || n != 0 {
		t.Fatalf("second prune: %d, %v", n, err)
	}
}
