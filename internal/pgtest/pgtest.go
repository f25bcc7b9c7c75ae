// Package pgtest gives each test its own migrated database on a real
// PostgreSQL server.
//
// If ROTATORD_TEST_DATABASE_URL is set, databases are made on that server
// (the URL's role needs the CREATEDB privilege). Otherwise the first call to
// New starts one local throwaway cluster per test process with package
// pglocal, which Main stops when the tests end.
//
// Every migration is applied once, to a template database; New clones it
// with CREATE DATABASE ... TEMPLATE, which is much faster than migrating each
// database.
//
// A package that uses pgtest must run its tests through Main:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/rotatord/rotatord/internal/pglocal"
	"github.com/rotatord/rotatord/migrations"
)

// EnvURL names the environment variable that points pgtest at an existing
// PostgreSQL server instead of a local throwaway cluster.
const EnvURL = "ROTATORD_TEST_DATABASE_URL"

// timeout bounds setup and each database operation.
const timeout = 2 * time.Minute

var (
	mainRunning atomic.Bool

	setupOnce sync.Once
	setupErr  error

	// mu guards the fields below against Main's teardown.
	mu       sync.Mutex
	srv      *server
	torndown bool
)

// server is the PostgreSQL server the tests use.
type server struct {
	baseURL  string           // admin connection URL
	admin    *sql.DB          // pool of admin connections
	template string           // migrated template database
	cluster  *pglocal.Cluster // nil when EnvURL is used
	tmpDir   string           // cluster folder to remove; "" when EnvURL is used
}

// Main runs the package's tests and stops the shared cluster afterwards. Use
// from TestMain: func TestMain(m *testing.M) { pgtest.Main(m) }
//
// An interrupt (SIGINT, SIGTERM) also stops the cluster before the process
// exits, so no server is left running.
func Main(m *testing.M) {
	mainRunning.Store(true)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s, ok := <-sig
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "pgtest: %v: stopping postgres\n", s)
		if err := teardown(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
		os.Exit(1)
	}()

	code := m.Run()
	signal.Stop(sig)
	close(sig)
	if err := teardown(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// New returns the URL of a fresh database with every migration applied; it
// is dropped in tb.Cleanup. Safe for parallel tests.
func New(tb testing.TB) string {
	tb.Helper()
	if !mainRunning.Load() {
		tb.Fatalf("pgtest: New needs pgtest.Main: add func TestMain(m *testing.M) { pgtest.Main(m) } to the package's tests")
	}
	setupOnce.Do(func() { setupErr = setup() })
	if setupErr != nil {
		tb.Fatalf("pgtest: %v", setupErr)
	}
	mu.Lock()
	s, down := srv, torndown
	mu.Unlock()
	if down || s == nil {
		tb.Fatalf("pgtest: New called after the tests ended")
	}

	name := "t_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if _, err := s.admin.ExecContext(ctx, "CREATE DATABASE "+ident(name)+" TEMPLATE "+ident(s.template)); err != nil {
		tb.Fatalf("pgtest: create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if _, err := s.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return s.databaseURL(name)
}

// setup connects to (or starts) the server and migrates the template.
func setup() error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	s := &server{template: "rotatord_template_" + randomHex(6)}
	// Register s before anything can fail, so teardown cleans up whatever
	// part of it was made.
	mu.Lock()
	if torndown {
		mu.Unlock()
		return errors.New("tests already ended")
	}
	srv = s
	mu.Unlock()

	if u := os.Getenv(EnvURL); u != "" {
		s.baseURL = u
	} else {
		dir, err := os.MkdirTemp("", "rotatord-pg-")
		if err != nil {
			return fmt.Errorf("create cluster folder: %w", err)
		}
		s.tmpDir = dir
		// The postgres user must be able to enter it when we run as root.
		if err := os.Chmod(dir, 0o755); err != nil {
			return fmt.Errorf("chmod cluster folder: %w", err)
		}
		c, err := pglocal.Start(ctx, pglocal.Options{Dir: dir, Fast: true})
		if err != nil {
			return fmt.Errorf("%w (set %s to use an existing server)", err, EnvURL)
		}
		mu.Lock()
		s.cluster = c
		mu.Unlock()
		s.baseURL = c.URL("postgres")
	}

	admin, err := sql.Open("pgx", s.baseURL)
	if err != nil {
		return fmt.Errorf("open %s: %w", redact(s.baseURL), err)
	}
	admin.SetMaxIdleConns(4)
	mu.Lock()
	s.admin = admin
	mu.Unlock()
	if err := admin.PingContext(ctx); err != nil {
		return fmt.Errorf("connect to %s: %w", redact(s.baseURL), err)
	}

	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+ident(s.template)); err != nil {
		return fmt.Errorf("create template database: %w", err)
	}
	db, err := sql.Open("pgx", s.databaseURL(s.template))
	if err != nil {
		return fmt.Errorf("open template database: %w", err)
	}
	_, err = migrations.Up(ctx, db)
	// Close before cloning: CREATE DATABASE ... TEMPLATE refuses a template
	// that has open sessions.
	if cerr := db.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("migrate template database: %w", err)
	}
	return nil
}

// teardown drops the template, stops the local cluster and removes its
// folder. It runs once; later calls do nothing.
func teardown() error {
	mu.Lock()
	defer mu.Unlock()
	if torndown {
		return nil
	}
	torndown = true
	s := srv
	if s == nil {
		return nil
	}
	var errs []error
	if s.admin != nil {
		if s.cluster == nil {
			// A shared server outlives us: drop what we made on it.
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			_, err := s.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+ident(s.template)+" WITH (FORCE)")
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("drop template database: %w", err))
			}
		}
		if err := s.admin.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close admin connections: %w", err))
		}
	}
	if s.cluster != nil {
		if err := s.cluster.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.tmpDir != "" {
		if err := os.RemoveAll(s.tmpDir); err != nil {
			errs = append(errs, fmt.Errorf("remove cluster folder: %w", err))
		}
	}
	return errors.Join(errs...)
}

// databaseURL returns baseURL pointed at database name. baseURL may be a URL
// or a keyword/value connection string.
func (s *server) databaseURL(name string) string {
	if strings.Contains(s.baseURL, "://") {
		u, err := url.Parse(s.baseURL)
		if err == nil {
			u.Path = "/" + name
			u.RawPath = ""
			return u.String()
		}
	}
	// In keyword/value strings a later keyword overrides an earlier one.
	return s.baseURL + " dbname=" + name
}

// redact hides a password in a connection URL for error messages.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	return u.Redacted()
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}
