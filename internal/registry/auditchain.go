package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord/internal/auditchain"
)

// auditSealLock is the transaction-level advisory lock that lets one sealer
// at a time, on any replica, append to the audit chain. (7290001 guards Init.)
const auditSealLock = 7290002

// DefaultSealBatch is how many events SealAudit seals at most when given no limit.
const DefaultSealBatch = 1000

// verifyPage is how many links VerifyAudit reads per query.
const verifyPage = 1000

// DefaultUnsealedAge is how old an event must be before VerifyAudit reports
// it as unsealed; younger ones may still be on their way to the chain.
const DefaultUnsealedAge = 5 * time.Minute

// takeQueuedSQL takes up to $1 events off the sealing queue, oldest first,
// and returns them. Queue rows of events that are gone stay, for
// VerifyAudit to report. Rows of events already in the chain (the queue is
// not append-only) are dropped, never sealed twice.
//
// The queue is walked in order, and each taken row's event and link are
// looked up by their keys (subqueries in a select list, and a lateral one
// that cannot be flattened, run once per row), whatever the tables'
// statistics say: joined, the planner merged or hashed the batch with the
// whole trail, so every batch cost more as the trail grew (100,000 events:
// 25 to 40 ms a batch instead of 13).
const takeQueuedSQL = `
	WITH batch AS (
		DELETE FROM audit_unsealed
		WHERE event_id IN (
			SELECT q.event_id FROM (
				SELECT u.event_id, (SELECT true FROM audit_events e WHERE e.id = u.event_id) AS present
				FROM audit_unsealed u ORDER BY u.event_id) q
			WHERE q.present LIMIT $1)
		RETURNING event_id
	)
	SELECT e.id, e.at, e.actor, e.action, e.account, e.agent, e.public_key, e.rotation, e.details
	FROM batch b, LATERAL (
		SELECT e.id, e.at, e.actor, e.action, e.account, e.agent, e.public_key,
		       coalesce(e.rotation_id::text, '') AS rotation, e.details::text AS details,
		       EXISTS (SELECT 1 FROM audit_chain c WHERE c.event_id = e.id) AS sealed
		FROM audit_events e WHERE e.id = b.event_id
		OFFSET 0) e
	WHERE NOT e.sealed
	ORDER BY e.id`

// SealAudit appends up to limit queued audit events to the hash chain, in
// one transaction of its own, and returns how many it sealed. Fewer than
// limit means the queue was drained, or another sealer (maybe on another
// replica) holds the chain: it then returns 0 at once rather than wait.
// Audit writers never wait for the sealer: they only queue their events.
// Call it outside InTx: inside, it would hold the chain until that commits.
func (s *Store) SealAudit(ctx context.Context, limit int) (int, error) {
	if limit <= 0 {
		limit = DefaultSealBatch
	}
	var n int
	err := s.InTx(ctx, func(ctx context.Context) error {
		q := s.q(ctx)
		var locked bool
		if err := q.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, auditSealLock).Scan(&locked); err != nil {
			return mapErr(fmt.Errorf("lock audit chain: %w", err))
		}
		if !locked {
			return nil
		}
		rows, err := q.Query(ctx, takeQueuedSQL, limit)
		if err != nil {
			return mapErr(fmt.Errorf("take queued events: %w", err))
		}
		events, err := collect(rows, "queued audit events", scanChainEvent)
		if err != nil || len(events) == 0 {
			return err
		}
		seq, prev := int64(0), auditchain.Genesis()
		err = q.QueryRow(ctx, `SELECT seq, hash FROM audit_chain ORDER BY seq DESC LIMIT 1`).Scan(&seq, &prev)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return mapErr(fmt.Errorf("read audit chain head: %w", err))
		}
		seqs := make([]int64, len(events))
		ids := make([]int64, len(events))
		prevs := make([][]byte, len(events))
		hashes := make([][]byte, len(events))
		for i, e := range events {
			h, err := auditchain.Hash(prev, *e)
			if err != nil {
				return err
			}
			seq++
			seqs[i], ids[i], prevs[i], hashes[i] = seq, e.ID, prev, h
			prev = h
		}
		if _, err := q.Exec(ctx, `
			INSERT INTO audit_chain (seq, event_id, prev_hash, hash)
			SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[])`,
			seqs, ids, prevs, hashes); err != nil {
			return mapErr(fmt.Errorf("append links: %w", err))
		}
		n = len(events)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("seal audit events: %w", err)
	}
	return n, nil
}

// SealAllAudit seals queued events in batches until the queue is drained
// (or another sealer holds the chain) and returns how many it sealed.
func (s *Store) SealAllAudit(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := s.SealAudit(ctx, DefaultSealBatch)
		total += n
		if err != nil || n < DefaultSealBatch {
			return total, err
		}
	}
}

// RunAuditSealer seals queued audit events every interval until ctx ends.
// A failure is logged once when a streak of failures starts, and once more
// when sealing works again.
func (s *Store) RunAuditSealer(ctx context.Context, log *slog.Logger, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := s.SealAllAudit(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			failing = true
			log.Error("seal audit events; retrying quietly until it works", "err", err)
		case err == nil && failing:
			failing = false
			log.Info("sealing audit events again", "sealed", n)
		}
	}
}

// VerifyAuditOptions tunes VerifyAudit.
type VerifyAuditOptions struct {
	// UnsealedAge: events at least this old (by the database's clock) that
	// are not in the chain are reported. DefaultUnsealedAge when zero.
	UnsealedAge time.Duration
	// Anchors are heads recorded earlier; each must still be in the chain.
	Anchors []auditchain.Head
}

// VerifyAudit walks the whole hash chain in seq order, a page at a time, in
// one read-only snapshot, rehashes every sealed event and reports what does
// not match (see auditchain.Report), events deleted while queued for
// sealing, and old events that are not sealed. An error means the check could not be
// done, not that the trail is damaged.
func (s *Store) VerifyAudit(ctx context.Context, opts VerifyAuditOptions) (*auditchain.Report, error) {
	age := opts.UnsealedAge
	if age <= 0 {
		age = DefaultUnsealedAge
	}
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, mapErr(fmt.Errorf("verify audit chain: begin: %w", err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only

	v := auditchain.NewVerifier(opts.Anchors...)
	for after := int64(0); ; {
		last, n, err := verifyPageAfter(ctx, tx, v, after)
		if err != nil {
			return nil, mapErr(fmt.Errorf("verify audit chain after link %d: %w", after, err))
		}
		if n < verifyPage {
			break
		}
		after = last
	}
	// Events deleted before they were sealed left their queue rows behind.
	rows, err := tx.Query(ctx, `
		SELECT u.event_id FROM audit_unsealed u
		WHERE NOT EXISTS (SELECT 1 FROM audit_events e WHERE e.id = u.event_id)
		ORDER BY u.event_id`)
	if err != nil {
		return nil, mapErr(fmt.Errorf("read sealing queue: %w", err))
	}
	var id int64
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error {
		v.DeletedBeforeSealing(id)
		return nil
	}); err != nil {
		return nil, mapErr(fmt.Errorf("read sealing queue: %w", err))
	}
	r := v.Report()

	var oldest *int64
	err = tx.QueryRow(ctx, `
		SELECT now() - $1::float8 * interval '1 second', count(*), min(e.id)
		FROM audit_events e
		WHERE e.at < now() - $1::float8 * interval '1 second'
		  AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.event_id = e.id)`,
		age.Seconds()).Scan(&r.UnsealedBefore, &r.Unsealed, &oldest)
	if err != nil {
		return nil, mapErr(fmt.Errorf("count unsealed audit events: %w", err))
	}
	r.UnsealedBefore = r.UnsealedBefore.UTC()
	if oldest != nil {
		r.OldestUnsealedID = *oldest
	}
	return &r, nil
}

// verifyPageAfter feeds v the links after seq after, up to verifyPage of
// them, and returns the last seq and how many there were.
func verifyPageAfter(ctx context.Context, tx pgx.Tx, v *auditchain.Verifier, after int64) (last int64, n int, err error) {
	rows, err := tx.Query(ctx, `
		SELECT c.seq, c.event_id, c.prev_hash, c.hash, e.id IS NOT NULL,
		       coalesce(e.at, 'epoch'), coalesce(e.actor, ''), coalesce(e.action, ''), coalesce(e.account, ''),
		       coalesce(e.agent, ''), coalesce(e.public_key, ''), coalesce(e.rotation_id::text, ''),
		       coalesce(e.details::text, '')
		FROM audit_chain c LEFT JOIN audit_events e ON e.id = c.event_id
		WHERE c.seq > $1
		ORDER BY c.seq
		LIMIT $2`, after, verifyPage)
	if err != nil {
		return 0, 0, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			l       auditchain.Link
			e       auditchain.Event
			present bool
			details string
		)
		if err := rows.Scan(&l.Seq, &l.EventID, &l.PrevHash, &l.Hash, &present,
			&e.At, &e.Actor, &e.Action, &e.Account, &e.Agent, &e.PublicKey, &e.RotationID, &details); err != nil {
			return 0, 0, err
		}
		if present {
			e.ID, e.Details = l.EventID, []byte(details)
			v.Check(l, &e)
		} else {
			v.Check(l, nil)
		}
		last, n = l.Seq, n+1
	}
	return last, n, rows.Err()
}

func scanChainEvent(row pgx.Row) (*auditchain.Event, error) {
	var e auditchain.Event
	var details string
	err := row.Scan(&e.ID, &e.At, &e.Actor, &e.Action, &e.Account, &e.Agent, &e.PublicKey, &e.RotationID, &details)
	e.Details = []byte(details)
	return &e, err
}
