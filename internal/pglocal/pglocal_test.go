package pglocal_test

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord/internal/pglocal"
)

// tempDir returns a folder the postgres user can reach even when the tests
// run as root (testing.T.TempDir folders are 0700).
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pglocal-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func start(t *testing.T, ctx context.Context, dir string) *pglocal.Cluster {
	t.Helper()
	c, err := pglocal.Start(ctx, pglocal.Options{Dir: dir, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func connect(t *testing.T, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestStartStopRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	dir := tempDir(t)

	c := start(t, ctx, dir)
	if !strings.HasPrefix(c.URL("app"), "postgres://postgres@/app?") {
		t.Errorf("URL = %q", c.URL("app"))
	}
	for range 2 { // the second call finds the database and does nothing
		if err := c.CreateDatabase(ctx, "app"); err != nil {
			t.Fatal(err)
		}
	}
	conn := connect(t, ctx, c.URL("app"))
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('hello')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := pgx.Connect(ctx, c.URL("app")); err == nil {
		t.Fatal("connected after Stop")
	}

	c2 := start(t, ctx, dir)
	conn2 := connect(t, ctx, c2.URL("app"))
	var v string
	if err := conn2.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil {
		t.Fatalf("data lost across restart: %v", err)
	}
	if v != "hello" {
		t.Fatalf("v = %q, want hello", v)
	}

	// A second server on the same data folder must fail with a clear reason
	// and leave the first one running.
	_, err := pglocal.Start(ctx, pglocal.Options{Dir: dir, Fast: true})
	if err == nil {
		t.Fatal("second Start on a running cluster succeeded")
	}
	t.Logf("second Start: %v", err)
	if !strings.Contains(err.Error(), "postmaster.pid") {
		t.Errorf("error does not name the lock file: %v", err)
	}
	if err := conn2.Ping(ctx); err != nil {
		t.Fatalf("first server died: %v", err)
	}

	// Frozen (every process stopped), it answers nothing; thawed, it does.
	if err := c2.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c2.Signal(syscall.SIGCONT) }) // before Stop, which runs later
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	err = conn2.Ping(pctx)
	pcancel()
	if err == nil {
		t.Fatal("a frozen server answered")
	}
	if err := c2.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := connect(t, ctx, c2.URL("app")).Ping(ctx); err != nil {
		t.Fatalf("thawed server: %v", err)
	}
}

func TestStartNeedsDir(t *testing.T) {
	if _, err := pglocal.Start(t.Context(), pglocal.Options{}); err == nil {
		t.Fatal("Start without Dir succeeded")
	}
}
