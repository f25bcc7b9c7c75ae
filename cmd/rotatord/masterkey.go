package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/seal"
)

const masterKeyUsage = `Usage:
  rotatord master-key rotate --new-key-file FILE [--master-key-file FILE] [--database-url URL]
      re-seal every sealed value under the first key of FILE, in one transaction
  rotatord master-key status [--master-key-file FILE] [--database-url URL]
      which master keys the live replicas hold, and which keys seal the database's values

The procedure: make a new key (openssl rand -base64 32); give every replica a
ROTATORD_MASTER_KEY_FILE with the new key on the first line and the old one on
the second, and restart them one by one; run master-key rotate (it refuses while
a live replica does not hold and seal with the new key); then drop the old line
from every replica's file and restart them again. Nothing stops serving.
`

func runMasterKey(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, masterKeyUsage)
		return errors.New("master-key: missing command")
	}
	switch args[0] {
	case "rotate":
		return runMasterKeyRotate(ctx, cfg, args[1:], stdout, stderr)
	case "status":
		return runMasterKeyStatus(ctx, cfg, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, masterKeyUsage)
		return nil
	}
	fmt.Fprint(stderr, masterKeyUsage)
	return fmt.Errorf("master-key: unknown command %q", args[0])
}

// openWithSealer opens the store (migrated unless told not to) and a
// service around sealer, which may be nil.
func openWithSealer(ctx context.Context, cfg Config, sealer *seal.Sealer) (*registry.Store, *rotate.Service, error) {
	if err := cfg.Validate("database-url"); err != nil {
		return nil, nil, err
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
	return store, rotate.New(rotate.Config{Store: store, Sealer: sealer, Log: cfg.logger(), PublicURL: cfg.publicURL()}), nil
}

func runMasterKeyRotate(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("master-key rotate", stderr)
	newFile := fs.String("new-key-file", "", "file whose first line is the new master key (the replicas' new file will do); required")
	cfg.bind(fs, "database-url", "master-key-file", "log-level", "log-format")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *newFile == "" || fs.NArg() > 0 {
		return errors.New("usage: rotatord master-key rotate --new-key-file FILE [--master-key-file FILE]")
	}
	sealer, err := seal.LoadFile(*newFile)
	if err != nil {
		return fmt.Errorf("new key: %w", err)
	}
	// The current key file opens what the new one does not hold.
	if cfg.MasterKeyFile != "" {
		old, err := seal.LoadFile(cfg.MasterKeyFile)
		if err != nil {
			return err
		}
		sealer = sealer.With(old)
	}
	store, svc, err := openWithSealer(ctx, cfg, sealer)
	if err != nil {
		return err
	}
	defer store.Close()
	res, err := svc.RotateMasterKey(ctx, rotate.Actor("cli:master-key"))
	if err != nil {
		return err
	}
	kinds := make([]string, 0, len(res.Resealed))
	total := 0
	for k, n := range res.Resealed {
		kinds = append(kinds, fmt.Sprintf("%d %s(s)", n, k))
		total += n
	}
	sort.Strings(kinds)
	what := "nothing to re-seal"
	if total > 0 {
		what = "re-sealed " + strings.Join(kinds, ", ")
	}
	fmt.Fprintf(stdout, "every sealed value is under master key %s: %s; %d live replica(s) hold it\n", res.KeyID, what, res.Replicas)
	fmt.Fprintln(stderr, "next: drop the old key's line from every replica's ROTATORD_MASTER_KEY_FILE (and from every other copy of the file) and restart the replicas one by one")
	return nil
}

func runMasterKeyStatus(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("master-key status", stderr)
	cfg.bind(fs, "database-url", "master-key-file", "log-level", "log-format")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var sealer *seal.Sealer
	if cfg.MasterKeyFile != "" {
		var err error
		if sealer, err = seal.LoadFile(cfg.MasterKeyFile); err != nil {
			return err
		}
	}
	store, svc, err := openWithSealer(ctx, cfg, sealer)
	if err != nil {
		return err
	}
	defer store.Close()
	st, err := svc.MasterKeyStatus(ctx)
	if err != nil {
		return err
	}
	t := newTable(stdout, "REPLICA", "HOST", "PID", "LIVE", "SEEN", "SEALS WITH", "HOLDS")
	for _, r := range st.Replicas {
		t.row(r.ID, r.Host, strconv.Itoa(r.PID), strconv.FormatBool(r.Live), r.Silent.String()+" ago", r.SealKeyID, strings.Join(r.KeyIDs, ","))
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	t = newTable(stdout, "SEALED VALUES", "MASTER KEY", "COUNT")
	for _, c := range st.Sealed {
		id := c.KeyID
		if id == "" {
			id = "(first format, no key ID)"
		}
		t.row(c.Kind, id, strconv.Itoa(c.Count))
	}
	if err := t.flush(); err != nil {
		return err
	}
	for _, n := range st.Notes {
		fmt.Fprintln(stderr, "note:", n)
	}
	for _, p := range st.Problems {
		fmt.Fprintln(stderr, "problem:", p)
	}
	if len(st.Problems) > 0 {
		return fmt.Errorf("%d problem(s) with sealed values", len(st.Problems))
	}
	return nil
}
