package registry_test

import (
	"context"
	"testing"
	"time"

	"github.com/pressly/goose/v3/lock"

	"github.com/rotatord/rotatord/migrations"
)

// The schema version is read without waiting for goose's migration lock,
// which a replica holds while it migrates.
func TestSchemaVersion(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	latest, err := migrations.Latest()
	if err != nil || latest < 1 {
		t.Fatalf("Latest = %d, %v", latest, err)
	}
	conn, err := s.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, lock.DefaultLockID); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, lock.DefaultLockID) //nolint:errcheck // the connection goes back to the pool

	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	current, got, err := s.SchemaVersion(qctx)
	if err != nil || current != latest || got != latest {
		t.Fatalf("SchemaVersion = %d, %d, %v; want %d, %d", current, got, err, latest, latest)
	}
	// Branches number their migrations in their own ranges until they are
	// renumbered: the one before the newest need not be latest-1.
	var prev int64
	if err := s.Pool().QueryRow(ctx, `SELECT max(version_id) FROM goose_db_version WHERE is_applied AND version_id < $1`, latest).Scan(&prev); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(ctx, `DELETE FROM goose_db_version WHERE version_id = $1`, latest); err != nil {
		t.Fatal(err)
	}
	if current, _, err := s.SchemaVersion(qctx); err != nil || current != prev {
		t.Fatalf("SchemaVersion after removing the newest = %d, %v; want %d", current, err, prev)
	}
}
