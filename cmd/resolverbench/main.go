// Command resolverbench measures rotatord's account resolver over loopback
// HTTP, side by side with a bare net/http handler serving the same bytes.
//
// It starts a throwaway PostgreSQL cluster (package pglocal) unless
// -database-url or ROTATORD_DATABASE_URL names one, migrates it, creates the
// operator and -accounts accounts through rotate.Service, loads the resolver
// cache from the registry as `rotatord serve` does, and then closes the
// registry (and stops the throwaway cluster) so that a lookup touching
// PostgreSQL would fail. It serves the cache through rotatord's real router
// (httpapi.New with resolver.NewHandler) on one 127.0.0.1 port and a bare
// handler over a map[string][]byte of the same JWTs on another, then runs
// cmd/loadgen as a separate process against each in turn with the same
// settings, and prints a markdown table.
//
// Both servers (this process) and the load generator share the machine's
// cores. See docs/benchmarks.md.
//
//	go run ./cmd/resolverbench                      # 10,000 accounts, -c 32 -d 10s -warmup 2s
//	go run ./cmd/resolverbench -rounds 3 -d 20s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Bounds on the flags, so that a run stays bounded.
const (
	maxAccounts = 100_000
	maxRounds   = 10
	maxWorkers  = 64
)

type config struct {
	accounts      int
	workers       int
	databaseURL   string
	masterKeyFile string
	loadgen       string
	c             int
	d             time.Duration
	warmup        time.Duration
	timeout       time.Duration
	rounds        int
	cpuProfile    string
	markdownOut   string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "resolverbench:", err)
		}
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("resolverbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.accounts, "accounts", 10_000, fmt.Sprintf("accounts to create in the registry and look up at random (1-%d)", maxAccounts))
	fs.IntVar(&cfg.workers, "workers", 8, fmt.Sprintf("goroutines creating the accounts (1-%d)", maxWorkers))
	fs.StringVar(&cfg.databaseURL, "database-url", os.Getenv("ROTATORD_DATABASE_URL"),
		"PostgreSQL database to use instead of a throwaway local cluster (ROTATORD_DATABASE_URL); the run adds accounts to it and does not remove them")
	fs.StringVar(&cfg.masterKeyFile, "master-key-file", os.Getenv("ROTATORD_MASTER_KEY_FILE"),
		"master key of an existing -database-url whose operator exists already (ROTATORD_MASTER_KEY_FILE); default a random key")
	fs.StringVar(&cfg.loadgen, "loadgen", "", "path of the loadgen binary (default: go build ./cmd/loadgen into a temporary folder)")
	fs.IntVar(&cfg.c, "c", 32, "loadgen: concurrent keep-alive connections")
	fs.DurationVar(&cfg.d, "d", 10*time.Second, "loadgen: measured duration per server")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "loadgen: warm-up per server before measuring")
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Second, "loadgen: timeout of one request")
	fs.IntVar(&cfg.rounds, "rounds", 1, fmt.Sprintf("rounds of (bare, rotatord) runs, alternating the order (1-%d)", maxRounds))
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the servers' process during the first rotatord run to this file")
	fs.StringVar(&cfg.markdownOut, "o", "", "also write the markdown report to this file")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: resolverbench [flags]\n\nBenchmark rotatord's resolver against a bare net/http handler over loopback.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	switch {
	case fs.NArg() > 0:
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	case cfg.accounts < 1 || cfg.accounts > maxAccounts:
		return cfg, fmt.Errorf("-accounts %d: want 1 to %d", cfg.accounts, maxAccounts)
	case cfg.workers < 1 || cfg.workers > maxWorkers:
		return cfg, fmt.Errorf("-workers %d: want 1 to %d", cfg.workers, maxWorkers)
	case cfg.rounds < 1 || cfg.rounds > maxRounds:
		return cfg, fmt.Errorf("-rounds %d: want 1 to %d", cfg.rounds, maxRounds)
	case cfg.c < 1 || cfg.d <= 0 || cfg.warmup < 0 || cfg.timeout <= 0:
		return cfg, errors.New("-c, -d and -timeout must be positive and -warmup not negative")
	}
	return cfg, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	b := &bench{cfg: cfg, log: stderr}
	defer b.cleanup()
	return b.run(ctx, stdout)
}
