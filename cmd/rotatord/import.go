package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
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
	var accountJWTs, creds, seeds, opSeeds, accSeeds stringsFlag
	fs.Var(&accountJWTs, "account-jwt", "an account JWT file (repeatable)")
	fs.Var(&creds, "creds", "a user's creds file or JWT file (repeatable); only its JWT is read, never its seed")
	fs.Var(&seeds, "seed", "a seed file (.nk or decorated) of the operator, an account, or one of their signing keys (repeatable)")
	fs.Var(&opSeeds, "operator-seed", "a seed file of the operator or of one of its signing keys (repeatable)")
	fs.Var(&accSeeds, "account-seed", "a seed file of an account or of one of its signing keys (repeatable)")
	dryRun := fs.Bool("dry-run", false, "print what would be imported and change nothing")
	fold := fs.Bool("fold-revocations", false, "rotatord manages every user of the imported accounts: fold their revocations into one '*' entry like other accounts' (without it, entries are kept until the revoked JWTs expire)")
	drop := fs.Bool("drop-unmodeled", false, "import even when JWTs hold claims rotatord cannot keep (users' source networks, response permissions, time limits; scoped signing keys...), dropping them")
	schedule := fs.String("schedule", rotatord.DefaultSchedule, "rotation schedule of the imported agents")
	grace := fs.Duration("grace", rotatord.DefaultGrace, "rotation grace period of the imported agents")
	delivery := fs.String("delivery", string(rotatord.DeliveryPoll), "how the imported agents get new credentials: poll, vault or file")
	cfg.bind(fs, "database-url", "master-key-file", "log-level", "log-format")
	cfg.bind(fs, "max-account-jwt-bytes")
	setUsage(fs, func() {
		fmt.Fprint(stderr, `Usage:
  rotatord import [--store DIR] [--keys DIR] [--operator NAME] [flags]
  rotatord import --operator-jwt FILE --account-jwt FILE... --creds FILE... --seed FILE... [flags]

Takes over an existing operator, its accounts (with the system account) and
their users, each user becoming an agent that keeps its creds file until its
first rotation. rotatord needs the seed of the operator (or of one of its
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

	lookup := &seedFiles{loose: map[string]looseSeed{}}
	defer lookup.wipe()
	for _, s := range []struct {
		files stringsFlag
		kind  nkeys.PrefixByte
	}{{seeds, 0}, {opSeeds, nkeys.PrefixByteOperator}, {accSeeds, nkeys.PrefixByteAccount}} {
		for _, f := range s.files {
			if err := lookup.add(f, s.kind); err != nil {
				return fmt.Errorf("import: %w", err)
			}
		}
	}

	var src rotate.ImportSource
	var err error
	if *opJWT != "" {
		if *storeDir != "" || *operator != "" {
			return errors.New("import: use either --store (and --operator) or --operator-jwt, not both")
		}
		if src.Operator, err = readImportFile(*opJWT); err != nil {
			return fmt.Errorf("import: %w", err)
		}
		if *keysDir != "" {
			lookup.keys = *keysDir
		}
	} else {
		dir := *storeDir
		if dir == "" {
			dir = nscDataDir("stores", filepath.Join(".nsc", "nats"))
		}
		if src, err = readNSCStore(dir, *operator); err != nil {
			return fmt.Errorf("import: %w", err)
		}
		lookup.keys = *keysDir
		if lookup.keys == "" {
			if lookup.keys = os.Getenv("NKEYS_PATH"); lookup.keys == "" {
				lookup.keys = nscDataDir("keys", ".nkeys")
			}
		}
	}
	for _, f := range accountJWTs {
		file, err := readImportFile(f)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		src.Accounts = append(src.Accounts, file)
	}
	for _, f := range creds {
		file, err := readImportFile(f)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		src.Users = append(src.Users, file)
	}
	src.Seeds = lookup.lookup
	if lookup.keys != "" {
		fmt.Fprintf(stderr, "operator %s; seeds from %d files and the keystore %s\n", src.Operator.Path, len(lookup.loose), lookup.keys)
	} else {
		fmt.Fprintf(stderr, "operator %s; seeds from %d files\n", src.Operator.Path, len(lookup.loose))
	}

	store, svc, err := openService(ctx, cfg, true)
	if err != nil {
		return err
	}
	defer store.Close()
	report, err := svc.Import(ctx, rotate.Actor("cli:import"), src, rotate.ImportOptions{
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

// nscDataDir is nsc's default folder for "stores" or "keys": under
// $XDG_DATA_HOME/nats/nsc (~/.local/share/nats/nsc), or the folder older
// nsc versions used (under the home folder) when only that one exists.
func nscDataDir(name, old string) string {
	home, _ := os.UserHomeDir()
	data := os.Getenv("XDG_DATA_HOME")
	if data == "" {
		data = filepath.Join(home, ".local", "share")
	}
	dir := filepath.Join(data, "nats", "nsc", name)
	if _, err := os.Stat(dir); err != nil && home != "" {
		if _, err := os.Stat(filepath.Join(home, old)); err == nil {
			return filepath.Join(home, old)
		}
	}
	return dir
}

func readImportFile(path string) (rotate.ImportFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return rotate.ImportFile{}, fmt.Errorf("read %s: %w", path, err)
	}
	return rotate.ImportFile{Path: path, Content: b}, nil
}

// readNSCStore reads an operator of an nsc store:
//
//	<stores>/<operator>/<operator>.jwt
//	<stores>/<operator>/accounts/<account>/<account>.jwt
//	<stores>/<operator>/accounts/<account>/users/<user>.jwt
//
// With no operator named, the store must hold exactly one.
func readNSCStore(stores, operator string) (rotate.ImportSource, error) {
	var src rotate.ImportSource
	if operator == "" {
		entries, err := os.ReadDir(stores)
		if errors.Is(err, fs.ErrNotExist) {
			return src, fmt.Errorf("no nsc store at %s: pass --store DIR, or --operator-jwt FILE with --account-jwt, --creds and --seed files", stores)
		}
		if err != nil {
			return src, fmt.Errorf("read nsc store: %w", err)
		}
		var ops []string
		for _, e := range entries {
			if e.IsDir() && isFile(filepath.Join(stores, e.Name(), e.Name()+".jwt")) {
				ops = append(ops, e.Name())
			}
		}
		switch len(ops) {
		case 0:
			return src, fmt.Errorf("no nsc operator in %s (looked for %s)", stores, filepath.Join(stores, "<operator>", "<operator>.jwt"))
		case 1:
			operator = ops[0]
		default:
			return src, fmt.Errorf("the nsc store %s holds operators %s: choose one with --operator", stores, strings.Join(ops, ", "))
		}
	}
	dir := filepath.Join(stores, operator)
	var err error
	if src.Operator, err = readImportFile(filepath.Join(dir, operator+".jwt")); err != nil {
		return src, err
	}
	accDir := filepath.Join(dir, "accounts")
	accounts, err := os.ReadDir(accDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return src, fmt.Errorf("read nsc accounts: %w", err)
	}
	for _, a := range accounts {
		path := filepath.Join(accDir, a.Name(), a.Name()+".jwt")
		if !a.IsDir() || !isFile(path) {
			continue
		}
		f, err := readImportFile(path)
		if err != nil {
			return src, err
		}
		src.Accounts = append(src.Accounts, f)
		users, err := os.ReadDir(filepath.Join(accDir, a.Name(), "users"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return src, fmt.Errorf("read nsc users of %s: %w", a.Name(), err)
		}
		for _, u := range users {
			if u.IsDir() || !strings.HasSuffix(u.Name(), ".jwt") {
				continue
			}
			f, err := readImportFile(filepath.Join(accDir, a.Name(), "users", u.Name()))
			if err != nil {
				return src, err
			}
			src.Users = append(src.Users, f)
		}
	}
	return src, nil
}

func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// seedFiles finds seeds: in files given on the command line, then in an
// nsc keystore (<keys>/keys/<kind>/<2 chars>/<public key>.nk). It reads only
// the keys Import asks for, never a user's.
type seedFiles struct {
	keys  string
	loose map[string]looseSeed
}

type looseSeed struct {
	path string
	seed []byte
}

// add reads a seed file; kind, when not 0, is the kind of key it must hold.
func (s *seedFiles) add(path string, kind nkeys.PrefixByte) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read seed file %s: %w", path, err)
	}
	defer clear(b)
	kp, err := jwt.ParseDecoratedNKey(b)
	if err != nil {
		return fmt.Errorf("seed file %s: %w", path, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return fmt.Errorf("seed file %s: %w", path, err)
	}
	got := nkeys.Prefix(pub)
	switch {
	case got == nkeys.PrefixByteUser:
		return fmt.Errorf("seed file %s holds a user seed: user seeds are not needed (agents keep theirs); pass the user's creds with --creds", path)
	case got != nkeys.PrefixByteOperator && got != nkeys.PrefixByteAccount:
		return fmt.Errorf("seed file %s holds a %s seed, not an operator or account seed", path, got)
	case kind != 0 && got != kind:
		return fmt.Errorf("seed file %s holds a %s seed, not an %s seed", path, got, kind)
	}
	seed, err := kp.Seed()
	if err != nil {
		return fmt.Errorf("seed file %s: %w", path, err)
	}
	s.loose[pub] = looseSeed{path: path, seed: append([]byte(nil), seed...)}
	return nil
}

// lookup is a rotate.SeedLookup; the caller owns (and wipes) the bytes.
func (s *seedFiles) lookup(pub string) ([]byte, string, error) {
	if l, ok := s.loose[pub]; ok {
		return append([]byte(nil), l.seed...), l.path, nil
	}
	if s.keys == "" || len(pub) < 3 {
		return nil, "", nil
	}
	path := filepath.Join(s.keys, "keys", pub[:1], pub[1:3], pub+".nk")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, path, fmt.Errorf("read %s: %w", path, err)
	}
	return b, path, nil
}

func (s *seedFiles) wipe() {
	for _, l := range s.loose {
		clear(l.seed)
	}
}
