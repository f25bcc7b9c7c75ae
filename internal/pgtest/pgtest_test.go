package pgtest_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestNew(t *testing.T) {
	var (
		mu    sync.Mutex
		names []string
	)
	t.Run("parallel", func(t *testing.T) {
		for _, name := range []string{"a", "b"} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				conn := connect(t, pgtest.New(t))

				var db string
				var hasAgents bool
				err := conn.QueryRow(t.Context(),
					"SELECT current_database(), to_regclass('agents') IS NOT NULL").Scan(&db, &hasAgents)
				if err != nil {
					t.Fatal(err)
				}
				if !hasAgents {
					t.Errorf("database %s has no agents table", db)
				}
				// Each test may write freely without seeing the others.
				if _, err := conn.Exec(t.Context(), "CREATE TABLE scratch (id int)"); err != nil {
					t.Fatal(err)
				}
				mu.Lock()
				names = append(names, db)
				mu.Unlock()
			})
		}
	})
	// The parallel subtests and their cleanups have finished here.

	if len(names) != 2 || names[0] == names[1] {
		t.Fatalf("databases = %v, want two different ones", names)
	}
	conn := connect(t, pgtest.New(t))
	var left int
	err := conn.QueryRow(t.Context(),
		"SELECT count(*) FROM pg_database WHERE datname = ANY($1)", names).Scan(&left)
	if err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d of %v still exist after cleanup", left, names)
	}
}
