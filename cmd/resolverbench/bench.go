package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/httpapi"
	"github.com/rotatord/rotatord/internal/pglocal"
	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/internal/resolver"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/seal"
)

const (
	benchDatabase = "rotatord_bench"
	benchOperator = "bench"
	benchActor    = rotate.Actor("resolverbench")
)

// bench is one run. cleanup undoes whatever part of it was set up.
type bench struct {
	cfg config
	log io.Writer

	tmpDir  string // loadgen binary, URL files, the throwaway cluster
	cluster *pglocal.Cluster
	store   *registry.Store
	servers []*http.Server

	accounts []registry.AccountJWT // the accounts this run created
	setup    setupStats
}

type setupStats struct {
	database   string // "throwaway pglocal cluster" or "-database-url"
	createTime time.Duration
	cached     int
	loadTime   time.Duration
	jwtBytes   int // average size of the looked-up JWTs
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "resolverbench: "+format+"\n", args...)
}

func (b *bench) run(ctx context.Context, stdout io.Writer) error {
	dir, err := os.MkdirTemp("", "rotatord-bench-")
	if err != nil {
		return fmt.Errorf("create temporary folder: %w", err)
	}
	b.tmpDir = dir
	// The postgres user must be able to enter it when we run as root.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("chmod temporary folder: %w", err)
	}

	loadgen, err := b.loadgenBinary(ctx)
	if err != nil {
		return err
	}
	svc, err := b.openRegistry(ctx)
	if err != nil {
		return err
	}
	if err := b.createAccounts(ctx, svc); err != nil {
		return err
	}
	cache, bare, err := b.loadCache(ctx)
	if err != nil {
		return err
	}
	// From here on the registry is gone: a lookup that touched PostgreSQL
	// would fail and show up as errors.
	b.store.Close()
	b.store = nil
	if b.cluster != nil {
		if err := b.cluster.Stop(); err != nil {
			return err
		}
		b.logf("stopped PostgreSQL: lookups are served from memory only")
	} else {
		b.logf("closed the registry's connections: lookups are served from memory only")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	api := httpapi.New(httpapi.Config{
		Service:  svc,
		Resolver: resolver.NewHandler(cache, reg),
		Metrics:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		Log:      slog.New(slog.DiscardHandler),
	})
	targets := []*target{
		{name: "bare net/http handler (map)", short: "bare"},
		{name: "rotatord (httpapi router + resolver.Handler)", short: "rotatord"},
	}
	for i, h := range []http.Handler{bare, api} {
		base, err := b.serve(h)
		if err != nil {
			return err
		}
		t := targets[i]
		t.base = base
		if err := b.check(ctx, t); err != nil {
			return err
		}
		if t.urlFile, err = b.writeURLs(t); err != nil {
			return err
		}
	}

	// Start the runs from a clean heap: account creation left garbage.
	runtime.GC()
	var runs []*runResult
	for round := 1; round <= b.cfg.rounds; round++ {
		order := targets
		if round%2 == 0 {
			order = []*target{targets[1], targets[0]}
		}
		for _, t := range order {
			profile := b.cfg.cpuProfile != "" && t.short == "rotatord" && round == 1
			r, err := b.load(ctx, loadgen, t, round, profile)
			if err != nil {
				return err
			}
			runs = append(runs, r)
		}
	}

	report := b.report(runs)
	if _, err := io.WriteString(stdout, report); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if b.cfg.markdownOut != "" {
		if err := os.WriteFile(b.cfg.markdownOut, []byte(report), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	return nil
}

// cleanup stops the servers and PostgreSQL and removes the temporary folder.
// It runs on success and on error.
func (b *bench) cleanup() {
	for _, s := range b.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.Shutdown(ctx); err != nil {
			s.Close() //nolint:errcheck // best effort
		}
		cancel()
	}
	if b.store != nil {
		b.store.Close()
	}
	if b.cluster != nil {
		if err := b.cluster.Stop(); err != nil {
			b.logf("%v", err)
		}
	}
	if b.tmpDir != "" {
		if err := os.RemoveAll(b.tmpDir); err != nil {
			b.logf("remove temporary folder: %v", err)
		}
	}
}

// loadgenBinary returns -loadgen, or builds cmd/loadgen into the temporary
// folder.
func (b *bench) loadgenBinary(ctx context.Context) (string, error) {
	if b.cfg.loadgen != "" {
		if _, err := os.Stat(b.cfg.loadgen); err != nil {
			return "", fmt.Errorf("loadgen binary: %w", err)
		}
		return b.cfg.loadgen, nil
	}
	out := filepath.Join(b.tmpDir, "loadgen")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/rotatord/rotatord/cmd/loadgen")
	cmd.Stdout, cmd.Stderr = b.log, b.log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build loadgen (run from the module, or pass -loadgen): %w", err)
	}
	return out, nil
}

// openRegistry connects to (or starts) PostgreSQL, migrates it and makes
// sure it has an operator.
func (b *bench) openRegistry(ctx context.Context) (*rotate.Service, error) {
	url := b.cfg.databaseURL
	if url == "" {
		start := time.Now()
		c, err := pglocal.Start(ctx, pglocal.Options{Dir: filepath.Join(b.tmpDir, "pg"), Fast: true})
		if err != nil {
			return nil, fmt.Errorf("%w (or give -database-url)", err)
		}
		b.cluster = c
		if err := c.CreateDatabase(ctx, benchDatabase); err != nil {
			return nil, err
		}
		// One connection per account-creating goroutine.
		url = c.URL(benchDatabase) + fmt.Sprintf("&pool_max_conns=%d", max(4, b.cfg.workers))
		b.setup.database = "throwaway PostgreSQL cluster (pglocal, fsync off)"
		b.logf("started PostgreSQL in %s", time.Since(start).Round(time.Millisecond))
	} else {
		b.setup.database = "-database-url"
	}
	store, err := registry.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	b.store = store
	if err := store.Ping(ctx); err != nil {
		return nil, err
	}
	if _, err := store.Migrate(ctx); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}

	var sealer *seal.Sealer
	if b.cfg.masterKeyFile != "" {
		sealer, err = seal.LoadFile(b.cfg.masterKeyFile)
	} else {
		key := make([]byte, seal.KeySize)
		rand.Read(key) //nolint:errcheck // crypto/rand.Read does not fail
		sealer, err = seal.New(key)
	}
	if err != nil {
		return nil, err
	}
	svc := rotate.New(rotate.Config{Store: store, Sealer: sealer, Log: slog.New(slog.DiscardHandler), PublicURL: "http://127.0.0.1"})
	switch op, err := store.Operator(ctx); {
	case errors.Is(err, rotatord.ErrNotFound):
		if _, _, err := svc.Init(ctx, benchActor, benchOperator); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	default:
		b.logf("using the existing operator %q", op.Name)
	}
	return svc, nil
}

// createAccounts creates cfg.accounts accounts through the service, from
// cfg.workers goroutines.
func (b *bench) createAccounts(ctx context.Context, svc *rotate.Service) error {
	runID := make([]byte, 3)
	rand.Read(runID) //nolint:errcheck // crypto/rand.Read does not fail
	prefix := "bench-" + hex.EncodeToString(runID) + "-"
	n := b.cfg.accounts
	b.accounts = make([]registry.AccountJWT, n)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	b.logf("creating %d accounts through rotate.Service with %d goroutines...", n, b.cfg.workers)
	for range b.cfg.workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				acc, err := svc.CreateAccount(ctx, benchActor, rotate.AccountInput{Name: fmt.Sprintf("%s%05d", prefix, i)})
				if err != nil {
					cancel(err)
					return
				}
				b.accounts[i] = registry.AccountJWT{PublicKey: acc.PublicKey, JWT: acc.JWT}
				if d := done.Add(1); d%(max(int64(n)/4, 1)) == 0 && d < int64(n) {
					b.logf("  %d/%d accounts (%s)", d, n, time.Since(start).Round(time.Millisecond))
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		if errors.Is(err, seal.ErrDecrypt) {
			return fmt.Errorf("create accounts: %w (the database's operator keys were sealed with another master key: pass it with -master-key-file)", err)
		}
		return fmt.Errorf("create accounts: %w", err)
	}
	b.setup.createTime = time.Since(start)
	b.logf("created %d accounts in %s (%.0f accounts/s)", n, b.setup.createTime.Round(time.Millisecond),
		float64(n)/b.setup.createTime.Seconds())
	return nil
}

// loadCache fills the resolver cache from the registry exactly as
// cmd/rotatord's Main does, and returns it with a bare handler over a map
// of the same JWT bytes.
func (b *bench) loadCache(ctx context.Context) (*resolver.Cache, http.Handler, error) {
	start := time.Now()
	op, err := b.store.Operator(ctx)
	if err != nil {
		return nil, nil, err
	}
	cache := resolver.NewCache()
	cache.SetOperator(op.JWT)
	all, err := b.store.AccountJWTs(ctx)
	if err != nil {
		return nil, nil, err
	}
	out := make([]resolver.Account, len(all))
	for i, a := range all {
		out[i] = resolver.Account{PublicKey: a.PublicKey, JWT: a.JWT}
	}
	cache.Replace(out, cache.Snapshot())
	b.setup.loadTime = time.Since(start)
	b.setup.cached = cache.Len()
	b.logf("loaded %d account JWTs into the resolver cache in %s", cache.Len(), b.setup.loadTime.Round(time.Millisecond))

	// The registry is the source of both servers' bytes; the accounts to
	// look up must be there with the JWT the service returned.
	m := make(map[string][]byte, len(all))
	for _, a := range all {
		m[a.PublicKey] = []byte(a.JWT)
	}
	size := 0
	for _, a := range b.accounts {
		size += len(a.JWT)
	}
	b.setup.jwtBytes = size / len(b.accounts)
	for _, a := range b.accounts {
		if got, ok := m[a.PublicKey]; !ok || string(got) != a.JWT {
			return nil, nil, fmt.Errorf("load cache: account %s is missing from the registry or differs", a.PublicKey)
		}
	}
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := m[strings.TrimPrefix(r.URL.Path, resolver.AccountsPath)]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/jwt")
		w.Write(body) //nolint:errcheck // the client went away
	})
	return cache, bare, nil
}

// serve serves h on a new 127.0.0.1 port with cmd/rotatord's server
// settings and returns its base URL.
func (b *bench) serve(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listen on 127.0.0.1: %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	b.servers = append(b.servers, srv)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.logf("server on %s stopped: %v", ln.Addr(), err)
		}
	}()
	return "http://" + ln.Addr().String(), nil
}

// target is one server under test.
type target struct {
	name, short string
	base        string
	urlFile     string
}

// check GETs one account from t and compares the bytes.
func (b *bench) check(ctx context.Context, t *target) error {
	a := b.accounts[0]
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.base+resolver.AccountsPath+a.PublicKey, nil)
	if err != nil {
		return fmt.Errorf("check %s: %w", t.short, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("check %s: %w", t.short, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("check %s: %w", t.short, err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, []byte(a.JWT)) {
		return fmt.Errorf("check %s: GET %s: status %d, %d bytes, want 200 with the account's %d-byte JWT",
			t.short, req.URL.Path, resp.StatusCode, len(body), len(a.JWT))
	}
	return nil
}

// writeURLs writes one lookup URL per created account for t.
func (b *bench) writeURLs(t *target) (string, error) {
	var buf bytes.Buffer
	for _, a := range b.accounts {
		buf.WriteString(t.base + resolver.AccountsPath + a.PublicKey + "\n")
	}
	path := filepath.Join(b.tmpDir, t.short+".urls")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("write urls for %s: %w", t.short, err)
	}
	return path, nil
}
