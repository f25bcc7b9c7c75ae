package registry_test

import (
	"context"
	"testing"
	"time"

	"github.com/rotatord/rotatord"
)

// A replica that records itself while a master-key rotation holds the
// replicas lock waits for its commit, so it either is checked by the
// rotation or starts after the values were re-sealed. Liveness and
// silence come from the database's clock; old records are pruned.
func TestReplicaRecords(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	r := &rotatord.Replica{ID: "a", Host: "h", PID: 7, KeyIDs: []string{"k2", "k1"}, SealKeyID: "k2"}
	if err := s.RecordReplica(ctx, r); err != nil || r.StartedAt.IsZero() {
		t.Fatalf("RecordReplica = %v, started %v", err, r.StartedAt)
	}

	locked, release, recorded := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		s.InTx(ctx, func(ctx context.Context) error {
			if err := s.LockReplicas(ctx); err != nil {
				t.Error(err)
			}
			close(locked)
			<-release
			return nil
		})
	}()
	<-locked
	go func() {
		recorded <- s.RecordReplica(ctx, &rotatord.Replica{ID: "b", KeyIDs: []string{"k1"}, SealKeyID: "k1"})
	}()
	select {
	case err := <-recorded:
		t.Fatalf("RecordReplica went through the rotation's lock: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-recorded; err != nil {
		t.Fatal(err)
	}
	if err := s.LockReplicas(ctx); err == nil {
		t.Fatal("LockReplicas outside a transaction succeeded")
	}

	s.Pool().Exec(ctx, `UPDATE replicas SET seen_at = now() - interval '2 hours' WHERE id = 'b'`)
	reps, err := s.Replicas(ctx, rotatord.ReplicaLive)
	if err != nil || len(reps) != 2 {
		t.Fatalf("Replicas = %v, %v", reps, err)
	}
	byID := map[string]*rotatord.Replica{reps[0].ID: reps[0], reps[1].ID: reps[1]}
	if a := byID["a"]; !a.Live || a.Silent > 5*time.Second || !a.Holds("k1") || a.Holds("k3") || a.SealKeyID != "k2" || a.Host != "h" || a.PID != 7 {
		t.Fatalf("replica a = %+v", a)
	}
	if b := byID["b"]; b.Live || b.Silent < 2*time.Hour-time.Minute {
		t.Fatalf("replica b = %+v, want not live, silent for 2h", b)
	}
	if n, err := s.PruneReplicas(ctx, time.Hour); err != nil || n != 1 {
		t.Fatalf("PruneReplicas = %d, %v", n, err)
	}
	if err := s.DeleteReplica(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if reps, _ := s.Replicas(ctx, rotatord.ReplicaLive); len(reps) != 0 {
		t.Fatalf("replicas left: %v", reps)
	}
	if _, err := s.Reseal(ctx, nil); err == nil {
		t.Fatal("Reseal outside a transaction succeeded")
	}
}
