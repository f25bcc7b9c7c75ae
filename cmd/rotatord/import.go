package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/nscimport"
	"github.com/rotatord/rotatord/internal/rotate"
)

// stringsFlag is a repeatable string flag.
type stringsFlag []string

func (f *stringsFlag) String() string     { return strings.Join(*f, ",") }
func (f *stringsFlag) Set(v string) error { *f = append(*f, v); return nil }

// runImport imports an nsc store, or loose JWT, creds and seed files, so
// that a deployment moves to rotatord without re-keying its agents.
func runImport(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("import", stderr)
	storeDir := fs.String("store", "", "nsc stores folder (default $XDG_DATA_HOME/nats/nsc/stores, that is ~/.local/share/nats/nsc/stores)")
	keysDir := fs.String("keys", "", "nsc keystore folder, holding keys/ (default $NKEYS_PATH, else ~/.local/share/nats/nsc/keys)")
	operator := fs.String("operator", "", "the operator to import from the store (needed when it holds several)")
	opJWT := fs.String("operator-jwt", "", "import loose files instead of a store: the operator JWT file")
	var accountJWTs, creds, seedFlags, opSeeds, accSeeds stringsFlag
	fs.Var(&accountJWTs, "account-jwt", "an account JWT file (repeatable)")
	fs.Var(&creds, "creds", "a user's creds file or JWT file (repeatable); only its JWT is read, never its seed")
	fs.Var(&seedFlags, "seed", "a seed file (.nk or decorated) of the operator, an account, or one of their signing keys (repeatable)")
	fs.Var(&opSeeds, "operator-seed", "a seed file of the operator or of one of its signing keys (repeatable)")
	fs.Var(&accSeeds, "account-seed", "a seed file of an account or of one of its signing keys (repeatable)")
	dryRun := fs.Bool("dry-run", false, "print what would be imported and change nothing")
	fold := fs.Bool("fold-revocations", false, "rotatord manages every user of the imported accounts: fold their revocations into one '*' entry like other accounts' (without it, entries are kept until the revoked JWTs expire)")
	drop := fs.Bool("drop-unmodeled", false, "import even when JWTs hold claims rotatord cannot keep (signing keys whose seed is missing, bearer-token users, an account JWT's expiry), dropping them")
	schedule := fs.String("schedule", rotatord.DefaultSchedule, "rotation schedule of the imported agents")
	grace := fs.Duration("grace", rotatord.DefaultGrace, "rotation grace period of the imported agents")
	delivery := fs.String("delivery", string(rotatord.DeliveryPoll), "how the imported agents get new credentials: poll, vault or file")
	cfg.bind(fs, "database-url", "master-key-file", "log-level", "log-format")
	cfg.bind(fs, "max-account-jwt-bytes")
	setUsage(fs, func() {
		fmt.Fprint(stderr, `Usage:
  rotatord import [--store DIR] [--keys DIR] [--operator NAME] [flags]
  rotatord import --operator-jwt FILE --account-jwt FILE... --creds FILE... --seed FILE... [flags]

Takes over an existing operator, its accounts (with the system account,
JetStream, exports, imports and the other claims), their scoped signing keys
as roles, and their users, each user becoming an agent (of its role, when a
scoped key signed it) that keeps its creds file until its first rotation. rotatord needs the seed of the operator (or of one of its
signing keys) and, for each account, of the account or of one of its signing
keys; user seeds are never read. Importing again changes nothing.

`)
		fs.PrintDefaults()
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("import: unexpected argument %q", fs.Arg(0))
	}

	seeds := &nscimport.SeedFiles{}
	defer seeds.Wipe()
	for _, s := range []struct {
		files stringsFlag
		kind  nkeys.PrefixByte
	}{{seedFlags, 0}, {opSeeds, nkeys.PrefixByteOperator}, {accSeeds, nkeys.PrefixByteAccount}} {
		for _, f := range s.files {
			if err := seeds.Add(f, s.kind); err != nil {
				return fmt.Errorf("import: %w", err)
			}
		}
	}

	var src nscimport.Source
	var err error
	if *opJWT != "" {
		if *storeDir != "" || *operator != "" {
			return errors.New("import: use either --store (and --operator) or --operator-jwt, not both")
		}
		if src.Operator, err = nscimport.ReadFile(*opJWT); err != nil {
			return fmt.Errorf("import: %w", err)
		}
		seeds.Keys = *keysDir
	} else {
		dir := *storeDir
		if dir == "" {
			dir = nscimport.DataDir("stores", filepath.Join(".nsc", "nats"))
		}
		if src, err = nscimport.ReadStore(dir, *operator); err != nil {
			return fmt.Errorf("import: %w", err)
		}
		seeds.Keys = *keysDir
		if seeds.Keys == "" {
			if seeds.Keys = os.Getenv("NKEYS_PATH"); seeds.Keys == "" {
				seeds.Keys = nscimport.DataDir("keys", ".nkeys")
			}
		}
	}
	for _, f := range accountJWTs {
		file, err := nscimport.ReadFile(f)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		src.Accounts = append(src.Accounts, file)
	}
	for _, f := range creds {
		file, err := nscimport.ReadFile(f)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		src.Users = append(src.Users, file)
	}
	src.Seeds = seeds.Lookup
	if seeds.Keys != "" {
		fmt.Fprintf(stderr, "operator %s; seeds from %d files and the keystore %s\n", src.Operator.Path, seeds.Files(), seeds.Keys)
	} else {
		fmt.Fprintf(stderr, "operator %s; seeds from %d files\n", src.Operator.Path, seeds.Files())
	}
	set, err := nscimport.Read(src)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	defer set.Wipe()

	store, svc, err := openService(ctx, cfg, true)
	if err != nil {
		return err
	}
	defer store.Close()
	report, err := svc.Import(ctx, rotate.Actor("cli:import"), set, rotate.ImportOptions{
		DryRun: *dryRun, DropUnmodeled: *drop, FoldRevocations: *fold, Schedule: *schedule, Grace: *grace, Delivery: rotatord.Delivery(*delivery),
	})
	if report != nil {
		printImport(stdout, report, err == nil)
	}
	if err != nil {
		return err
	}
	if !report.DryRun && report.Created > 0 {
		fmt.Fprintln(stderr, "next: point nats-server at rotatord; `rotatord nats-config` prints the server block (--mode cache for a resolver over NATS)")
	}
	return nil
}

// printImport writes the plan, one line per operator, account and user,
// then what the import did (or would do, or why it refused).
func printImport(w io.Writer, r *rotate.ImportReport, ok bool) {
	if r.DryRun {
		fmt.Fprintln(w, "dry run: nothing is changed")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, s := range r.Steps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Kind, s.Name, s.Key, s.Action, s.Detail)
	}
	tw.Flush()
	if ok {
		for _, u := range r.Unmodeled {
			fmt.Fprintln(w, "dropped:", u)
		}
	}
	for _, warn := range r.Warnings {
		fmt.Fprintln(w, "warning:", warn)
	}
	if !ok {
		return
	}
	counts := map[string]int{}
	for _, s := range r.Steps {
		if s.Action == rotate.ImportCreate {
			counts[s.Kind]++
		}
	}
	switch {
	case r.Created == 0:
		fmt.Fprintln(w, "nothing to import: everything is already in rotatord")
	case r.DryRun:
		fmt.Fprintf(w, "would import %s\n", countText(counts))
	default:
		fmt.Fprintf(w, "imported %s\n", countText(counts))
	}
}

func countText(counts map[string]int) string {
	var parts []string
	for _, k := range []string{"operator", "account", "agent"} {
		switch n := counts[k]; n {
		case 0:
		case 1:
			parts = append(parts, "1 "+k)
		default:
			parts = append(parts, fmt.Sprintf("%d %ss", n, k))
		}
	}
	return strings.Join(parts, ", ")
}
