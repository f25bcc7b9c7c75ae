package pglocal_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord/internal/pglocal"
)

// A server whose starter died without Stop is stopped by StopStale, and
// the cluster starts again with its data.
func TestStopStale(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	dir := tempDir(t)
	if stopped, err := pglocal.StopStale(ctx, pglocal.Options{Dir: dir}); err != nil || stopped {
		t.Fatalf("StopStale on an empty folder = %v, %v; want false, nil", stopped, err)
	}

	// Started, and never stopped: what a killed `rotatord dev` leaves.
	left, err := pglocal.Start(ctx, pglocal.Options{Dir: dir, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { left.Stop() })
	url := left.URL("postgres")
	if _, err := pglocal.Start(ctx, pglocal.Options{Dir: dir, Fast: true, Port: left.Port()}); err == nil {
		t.Fatal("Start on the running cluster succeeded")
	}
	stopped, err := pglocal.StopStale(ctx, pglocal.Options{Dir: dir})
	if err != nil || !stopped {
		t.Fatalf("StopStale = %v, %v; want true, nil", stopped, err)
	}
	if conn, err := pgx.Connect(ctx, url); err == nil {
		conn.Close(ctx)
		t.Fatal("the stale server still answers")
	}
	if stopped, err := pglocal.StopStale(ctx, pglocal.Options{Dir: dir}); err != nil || stopped {
		t.Fatalf("StopStale after stopping = %v, %v; want false, nil", stopped, err)
	}
	c := start(t, ctx, dir)
	connect(t, ctx, c.URL("postgres"))
}
