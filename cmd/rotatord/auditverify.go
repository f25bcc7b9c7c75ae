package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/rotatord/rotatord/internal/auditchain"
	"github.com/rotatord/rotatord/internal/registry"
)

// auditSealInterval is how often serve seals queued audit events into the
// hash chain.
const auditSealInterval = time.Second

// runAuditVerify checks the audit trail's hash chain in the database: it
// seals the events still queued (so a fresh trail verifies), then rehashes
// the whole chain. It prints "ok: N events, head SEQ HASH", or each problem
// and fails.
func runAuditVerify(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit verify", stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	noSeal := fs.Bool("no-seal", false, "do not seal queued events first (verify only; for read-only access)")
	unsealedAge := fs.Duration("unsealed-age", registry.DefaultUnsealedAge, "warn about events at least this old that are not sealed")
	var anchors []auditchain.Head
	fs.Func("anchor", "`SEQ:HASH` of a head recorded earlier that must still be in the chain (repeatable)", func(s string) error {
		h, err := auditchain.ParseHead(s)
		if err != nil {
			return err
		}
		anchors = append(anchors, h)
		return nil
	})
	cfg.bind(fs, "database-url", "no-migrate", "log-level", "log-format")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("audit verify: unexpected argument %q", fs.Arg(0))
	}
	if *unsealedAge <= 0 {
		return fmt.Errorf("--unsealed-age %s: want a positive duration", *unsealedAge)
	}
	store, _, err := openService(ctx, cfg, false)
	if err != nil {
		return err
	}
	defer store.Close()

	if !*noSeal {
		n, err := store.SealAllAudit(ctx)
		if err != nil {
			return err
		}
		if n > 0 {
			fmt.Fprintf(stderr, "sealed %d queued audit events\n", n)
		}
	}
	r, err := store.VerifyAudit(ctx, registry.VerifyAuditOptions{UnsealedAge: *unsealedAge, Anchors: anchors})
	if err != nil {
		return err
	}
	if r.Unsealed > 0 {
		fmt.Fprintf(stderr, "warning: %d audit events older than %s are not sealed (oldest id %d): "+
			"they were written around the sealing queue, or taken off it, and are not protected\n",
			r.Unsealed, *unsealedAge, r.OldestUnsealedID)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			OK bool `json:"ok"`
			*auditchain.Report
		}{r.OK(), r}); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	} else if r.OK() {
		fmt.Fprintf(stdout, "ok: %d events, head %d %s\n", r.Events, r.Head.Seq, r.Head.Hash)
	} else {
		for _, p := range r.Problems {
			fmt.Fprintln(stdout, p)
		}
		if r.MoreProblems > 0 {
			fmt.Fprintf(stdout, "... and %d more problems\n", r.MoreProblems)
		}
	}
	if !r.OK() {
		return errors.New(failureSummary(r))
	}
	return nil
}

func failureSummary(r *auditchain.Report) string {
	n := len(r.Problems) + r.MoreProblems
	noun := "problems"
	if n == 1 {
		noun = "problem"
	}
	return fmt.Sprintf("audit trail verification failed: %d %s in %d events up to link %d", n, noun, r.Events, r.Head.Seq)
}
