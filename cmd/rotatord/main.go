// Command rotatord gives every agent of a NATS fleet its own credentials and
// keeps them fresh. See README.md for the commands and configuration.
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

	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/seal"
)

const usage = `rotatord: per-agent NATS credentials with scheduled rotation

Usage:
  rotatord [serve] [flags]                 run the resolver, API and rotation engine
  rotatord migrate [flags]                 apply database migrations
  rotatord init --operator NAME [flags]    create the operator and system account (idempotent)
                                           and print the nats-server configuration block
  rotatord nats-config [--mode url|cache] [flags]
                                           print the nats-server configuration block again
  rotatord token create --name NAME --scope admin|rotate|read [--expires DURATION] [flags]
                                           create an API token and print it once
  rotatord token list [--json] [flags]     list API tokens (never their secrets)
  rotatord token revoke --name NAME [flags]
                                           revoke an API token on every replica at once
  rotatord dev [--dir DIR] [flags]         run everything locally: PostgreSQL, nats-server, rotatord
                                           and a demo agent that rotates every 2 minutes (make run)
  rotatord import [flags]                  import an nsc store or JWT/creds files (see rotatord import -h)
  rotatord doctor [--json] [flags]         check the deployment end to end and say what to fix
                                           (exit 0 all well, 1 a check failed, 2 warnings only)
  rotatord master-key rotate --new-key-file FILE | status [flags]
                                           re-seal every secret under a new master key; show the keys in use

Operator CLI, over the REST API (--url/ROTATORD_URL, --token/ROTATORD_TOKEN, -o table|json):
  rotatord accounts list|show|add|update
  rotatord agents list|show|add|update|rotate|revoke|reissue
  rotatord roles list|show|add|update|delete ACCOUNT ...
  rotatord rotations list [--agent NAME] | show ID
  rotatord key-rotations list|show|complete|abandon   signing-key rotations (accounts rotate-key starts one)
  rotatord fleet-rotations list|show|resume|abort     rotations in waves (accounts rotate-all starts one)
  rotatord audit list [--agent NAME] [--action ACTION] [--since TIME]   (newest first)
  rotatord audit verify [flags]            check the audit trail's hash chain in the database
  rotatord operator rotate-key [--wait]    rotate the operator's signing key (restart the servers with each new block)
  rotatord key-rotations show ID [--wait]

Every command takes -h for its flags. Flags mirror the ROTATORD_* environment variables.
`

func main() {
	// SIGHUP too: a closed terminal stops `rotatord dev` cleanly, with its
	// PostgreSQL, instead of leaving the server running.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		// After the first signal, a second one ends the process at once.
		<-ctx.Done()
		stop()
	}()
	os.Exit(exitCode(run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr))
}

// exitError ends the process with a status other than 1; msg, when set, is
// printed first.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// exitCode prints err once and returns the process's exit status: 0 for
// none and for -h (flag.ErrHelp), an exitError's code, else 1.
func exitCode(err error, stderr io.Writer) int {
	var ee *exitError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintln(stderr, "rotatord:", ee.msg)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "rotatord:", err)
	return 1
}

// run dispatches a command line; stdout gets only what scripts read.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprint(stdout, usage)
		return nil
	}
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	cfg := DefaultConfig()
	cfg.fromEnv(os.Getenv)
	switch cmd {
	case "serve":
		return runServe(ctx, cfg, args, stderr)
	case "migrate":
		return runMigrate(ctx, cfg, args, stdout, stderr)
	case "init":
		return runInit(ctx, cfg, args, stdout, stderr)
	case "nats-config":
		return runNATSConfig(ctx, cfg, args, stdout, stderr)
	case "token":
		return runToken(ctx, cfg, args, stdout, stderr)
	case "dev":
		return runDev(ctx, cfg, args, stdout, stderr)
	case "demo-agent":
		// Not in the usage: the demo agent process that dev runs.
		return runDemoAgent(ctx, args, os.Stdin, stderr)
	case "import":
		return runImport(ctx, cfg, args, stdout, stderr)
	case "doctor":
		return runDoctor(ctx, cfg, args, stdout, stderr)
	case "master-key":
		return runMasterKey(ctx, cfg, args, stdout, stderr)
	case "operator":
		return runOperator(ctx, args, stdout, stderr)
	case "key-rotations":
		return runKeyRotations(ctx, args, stdout, stderr)
	case "accounts":
		return runAccounts(ctx, args, stdout, stderr)
	case "agents":
		return runAgents(ctx, args, stdout, stderr)
	case "roles":
		return runRoles(ctx, args, stdout, stderr)
	case "rotations":
		return runRotations(ctx, args, stdout, stderr)
	case "fleet-rotations":
		return runFleetRotations(ctx, args, stdout, stderr)
	case "audit":
		if len(args) > 0 && args[0] == "verify" {
			return runAuditVerify(ctx, cfg, args[1:], stdout, stderr)
		}
		return runAudit(ctx, args, stdout, stderr)
	}
	return fmt.Errorf("unknown command %q (rotatord help lists the commands)", cmd)
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	switch arg {
	case "help", "-h", "-help", "--help":
		return true
	}
	return false
}

func runServe(ctx context.Context, cfg Config, args []string, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	cfg.bind(fs, "database-url", "listen", "public-url", "nats-url", "master-key-file", "alert-webhook", "log-level", "log-format", "no-migrate",
		"vault-auth", "vault-role-id", "vault-secret-id-file", "vault-k8s-role", "vault-mount", "vault-path", "file-delivery-dir",
		"auth-fail-threshold", "auth-fail-window", "max-account-jwt-bytes",
		"agent-fail-rate", "agent-rate", "agent-rotate-min-interval", "agent-reconnect-rate",
		"tls-cert-file", "tls-key-file", "tls-client-ca-file", "tls-client-allowed", "nats-ca-file", "nats-cert-file", "nats-key-file",
		"max-control-line")
	cfg.bind(fs, "db-timeout", "server-forget-after", "alert-retention")
	if err := fs.Parse(args); err != nil {
		return err
	}
	m := NewMain()
	m.Config = cfg
	if err := m.Run(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	m.Log.Info("shutting down")
	return m.Close()
}

// openService opens the store and a service for one-shot commands.
func openService(ctx context.Context, cfg Config, needKey bool) (*registry.Store, *rotate.Service, error) {
	needs := []string{"database-url"}
	if needKey {
		needs = append(needs, "master-key-file")
	}
	if err := cfg.Validate(needs...); err != nil {
		return nil, nil, err
	}
	var sealer *seal.Sealer
	if needKey {
		var err error
		if sealer, err = seal.LoadFile(cfg.MasterKeyFile); err != nil {
			return nil, nil, err
		}
	}
	store, err := registry.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, nil, err
	}
	if !cfg.NoMigrate {
		if _, err := store.Migrate(ctx); err != nil {
			store.Close()
			return nil, nil, err
		}
	}
	svc := rotate.New(rotate.Config{Store: store, Sealer: sealer, Log: cfg.logger(), PublicURL: cfg.publicURL(),
		MaxAccountJWTBytes: int(cfg.MaxAccountJWTBytes)})
	return store, svc, nil
}

func runMigrate(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("migrate", stderr)
	cfg.bind(fs, "database-url")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate("database-url"); err != nil {
		return err
	}
	store, err := registry.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer store.Close()
	n, err := store.Migrate(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "applied %d migrations\n", n)
	return nil
}

func runInit(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("init", stderr)
	name := fs.String("operator", "", "operator name (required)")
	outFile := fs.String("out", "", "also write the nats-server block to this file")
	cfg.bind(fs, "database-url", "master-key-file", "public-url", "listen", "log-level", "log-format")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		return errors.New("--operator NAME is required")
	}
	store, svc, err := openService(ctx, cfg, true)
	if err != nil {
		return err
	}
	defer store.Close()
	op, created, err := svc.Init(ctx, rotate.Actor("cli:init"), *name)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(stderr, "created operator %s (%s) and system account %s\n", op.Name, op.PublicKey, op.SystemAccount)
	}
	if err := initPublicURL(ctx, cfg, svc, op.Name, created, stderr); err != nil {
		return err
	}
	return printNATSConfig(ctx, svc, "url", "", *outFile, stdout)
}

// printNATSConfig prints the nats-server block for the resolver mode (url:
// HTTP; cache: over NATS), and writes it to file when given.
func printNATSConfig(ctx context.Context, svc *rotate.Service, mode, cacheDir, file string, stdout io.Writer) error {
	var block string
	var err error
	switch mode {
	case "url":
		block, err = svc.NATSConfig(ctx)
	case "cache":
		block, err = svc.NATSConfigCache(ctx, cacheDir)
	default:
		err = fmt.Errorf("--mode %q is not url or cache", mode)
	}
	if err != nil {
		return err
	}
	if file != "" {
		// The block holds only public material (JWTs and public keys).
		if err := os.WriteFile(file, []byte(block), 0o644); err != nil {
			return fmt.Errorf("write nats-server block: %w", err)
		}
	}
	fmt.Fprint(stdout, block)
	return nil
}

func runNATSConfig(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("nats-config", stderr)
	outFile := fs.String("out", "", "also write the block to this file")
	mode := fs.String("mode", "url", "resolver mode: url (nats-server fetches account JWTs over HTTP) or cache (over NATS; rotatord answers CLAIMS.LOOKUP)")
	cacheDir := fs.String("cache-dir", "./jwt", "with --mode cache: the folder where nats-server keeps the account JWTs it fetched")
	cfg.bind(fs, "database-url", "public-url", "listen")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *mode != "url" && *mode != "cache" {
		return fmt.Errorf("--mode %q is not url or cache", *mode)
	}
	store, svc, err := openService(ctx, cfg, false)
	if err != nil {
		return err
	}
	defer store.Close()
	return printNATSConfig(ctx, svc, *mode, *cacheDir, *outFile, stdout)
}
