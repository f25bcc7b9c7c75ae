package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

const rotationCols = `r.id::text, r.agent_id, g.name, a.name, a.id, a.public_key, r.state, r.trigger,
	coalesce(r.old_public_key, ''), r.new_public_key, coalesce(r.old_credential_id, 0), coalesce(r.new_credential_id, 0),
	r.deadline, r.distributed_at, r.confirmed_at, r.confirmed_by, r.delivery_ref, r.reason,
	r.created_at, r.updated_at, r.finished_at, r.old_revoked_at, coalesce(r.resign_version, 0)`

const rotationFrom = ` FROM rotations r JOIN agents g ON g.id = r.agent_id JOIN accounts a ON a.id = g.account_id`

func scanRotation(row pgx.Row) (*rotatord.Rotation, error) {
	var r rotatord.Rotation
	err := row.Scan(&r.ID, &r.AgentID, &r.Agent, &r.Account, &r.AccountID, &r.AccountKey, &r.State, &r.Trigger,
		&r.OldKey, &r.NewKey, &r.OldCredentialID, &r.NewCredentialID,
		&r.Deadline, &r.DistributedAt, &r.ConfirmedAt, &r.ConfirmedBy, &r.DeliveryRef, &r.Reason,
		&r.CreatedAt, &r.UpdatedAt, &r.FinishedAt, &r.OldRevokedAt, &r.ResignVersion)
	return &r, err
}

// isUUID reports whether s is a UUID in its canonical text form
// (8-4-4-4-12 hex digits, any case).
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}

// UpdateRotation stores r's state and progress fields.
func (s *Store) UpdateRotation(ctx context.Context, r *rotatord.Rotation) error {
	err := s.q(ctx).QueryRow(ctx, `
		UPDATE rotations SET state = $2, deadline = $3, distributed_at = $4, confirmed_at = $5, confirmed_by = $6,
			delivery_ref = $7, reason = $8, finished_at = $9, new_credential_id = $10, old_revoked_at = $11, updated_at = now()
		WHERE id = $1 RETURNING updated_at`,
		r.ID, r.State, r.Deadline, r.DistributedAt, r.ConfirmedAt, r.ConfirmedBy, r.DeliveryRef, r.Reason, r.FinishedAt,
		idPtr(r.NewCredentialID), timePtr(r.OldRevokedAt)).Scan(&r.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound("rotation", r.ID)
	}
	if err != nil {
		return mapErr(fmt.Errorf("update rotation %s: %w", r.ID, err))
	}
	return nil
}

// FindRotation returns a rotation by ID, or ENOTFOUND (also for an ID that
// is not a UUID).
func (s *Store) FindRotation(ctx context.Context, id string) (*rotatord.Rotation, error) {
	if !isUUID(id) {
		return nil, notFound("rotation", id)
	}
	// Compare as uuid, not text, so that the primary key is used.
	r, err := scanRotation(s.q(ctx).QueryRow(ctx, `SELECT `+rotationCols+rotationFrom+` WHERE r.id = $1::uuid`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("rotation", id)
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find rotation %s: %w", id, err))
	}
	return r, nil
}

// LockRotation reads a rotation and locks it for the transaction in ctx;
// when another transaction holds it, ok is false (SKIP LOCKED): someone else
// is working on it.
func (s *Store) LockRotation(ctx context.Context, id string) (r *rotatord.Rotation, ok bool, err error) {
	if err := needTx(ctx, "lock rotation"); err != nil {
		return nil, false, err
	}
	if !isUUID(id) {
		return nil, false, nil
	}
	r, err = scanRotation(s.q(ctx).QueryRow(ctx, `SELECT `+rotationCols+rotationFrom+` WHERE r.id = $1::uuid FOR NO KEY UPDATE OF r SKIP LOCKED`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, mapErr(fmt.Errorf("lock rotation %s: %w", id, err))
	}
	return r, true, nil
}

// InFlightRotation returns the agent's rotation in flight, if any.
func (s *Store) InFlightRotation(ctx context.Context, agentID int64) (*rotatord.Rotation, error) {
	r, err := scanRotation(s.q(ctx).QueryRow(ctx, `SELECT `+rotationCols+rotationFrom+`
		WHERE r.agent_id = $1 AND r.state IN ('issued', 'distributed', 'confirmed')`, agentID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find rotation in flight: %w", err))
	}
	return r, nil
}

// pageArgs turns a page's start (the UUID of the last item of the previous
// page, "" for the first) and size (0 for no limit) into query arguments,
// nil for none; a start that is not a UUID is EINVALID.
func pageArgs(after string, limit int, what string) (afterArg, limitArg any, err error) {
	if after != "" {
		if !isUUID(after) {
			return nil, nil, rotatord.Errorf(rotatord.EINVALID, "after %.40q is not a %s id", after, what)
		}
		afterArg = after
	}
	if limit > 0 {
		limitArg = limit
	}
	return afterArg, limitArg, nil
}

// ListRotations returns rotations matching f, newest first; f.After, when
// set, is the ID of the last rotation of the previous page.
func (s *Store) ListRotations(ctx context.Context, f rotatord.RotationFilter) ([]*rotatord.Rotation, error) {
	from, limit, err := pageArgs(f.After, f.Limit, "rotation")
	if err != nil {
		return nil, err
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT `+rotationCols+rotationFrom+`
		WHERE ($1::bigint = 0 OR r.agent_id = $1) AND ($2 = '' OR a.name = $2) AND ($3 = '' OR r.state = $3)
		AND ($4::uuid IS NULL OR (r.created_at, r.id) < (SELECT created_at, id FROM rotations WHERE id = $4::uuid))
		ORDER BY r.created_at DESC, r.id DESC LIMIT $5`, f.AgentID, f.Account, f.State, from, limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list rotations: %w", err))
	}
	return collectRotations(rows)
}

func collectRotations(rows pgx.Rows) ([]*rotatord.Rotation, error) {
	return collect(rows, "rotations", scanRotation)
}

// ListRotationsToAdvance returns the IDs of rotations in flight that need
// work: issued ones, confirmed ones whose old key's revocation was not
// recorded (left so by an older rotatord), and distributed ones whose
// deadline is not after now. Confirmed rotations waiting for their re-sign
// and push are completed by the pusher, not here.
//
// expired nil lists every rotation past its deadline; otherwise only those
// of the IDs in expired are listed (the ones the servers were asked about).
func (s *Store) ListRotationsToAdvance(ctx context.Context, now time.Time, limit int, expired []string) ([]string, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT id::text FROM rotations
		WHERE state = 'issued' OR (state = 'confirmed' AND old_revoked_at IS NULL)
		   OR (state = 'distributed' AND deadline <= $1 AND ($3 OR id = ANY($4::uuid[])))
		ORDER BY updated_at LIMIT $2`, dbTime(now), limit, expired == nil, expired)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list rotations to advance: %w", err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, mapErr(fmt.Errorf("list rotations to advance: %w", err))
	}
	return ids, nil
}

// PendingRotationsByKey returns the rotations in flight whose new key is one
// of keys, keyed by that key.
func (s *Store) PendingRotationsByKey(ctx context.Context, keys []string) (map[string]*rotatord.Rotation, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT `+rotationCols+rotationFrom+`
		WHERE r.new_public_key = ANY($1) AND r.state IN ('issued', 'distributed')`, keys)
	if err != nil {
		return nil, mapErr(fmt.Errorf("find rotations by key: %w", err))
	}
	list, err := collectRotations(rows)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*rotatord.Rotation, len(list))
	for _, r := range list {
		out[r.NewKey] = r
	}
	return out, nil
}

// ExpiredRotations returns up to limit rotations handed out and waiting for
// a reconnect whose deadline is not after now, the earliest deadline first.
func (s *Store) ExpiredRotations(ctx context.Context, now time.Time, limit int) ([]*rotatord.Rotation, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT `+rotationCols+rotationFrom+`
		WHERE r.state = 'distributed' AND r.deadline <= $1 ORDER BY r.deadline, r.id LIMIT $2`, dbTime(now), limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list expired rotations: %w", err))
	}
	return collectRotations(rows)
}

// WaitingRotations returns up to limit rotations whose new key has not
// connected yet (issued or distributed), handed out (or issued) before the
// given time, with a new key after the given one, in key order: a cursor
// through all of them.
func (s *Store) WaitingRotations(ctx context.Context, before time.Time, afterKey string, limit int) ([]*rotatord.Rotation, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT `+rotationCols+rotationFrom+`
		WHERE r.state IN ('issued', 'distributed') AND coalesce(r.distributed_at, r.created_at) <= $1 AND r.new_public_key > $2
		ORDER BY r.new_public_key LIMIT $3`, dbTime(before), afterKey, limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list rotations waiting: %w", err))
	}
	return collectRotations(rows)
}

// ClaimDueAgents locks up to limit active agents whose next rotation is due
// at now and that have no rotation in flight, skipping agents another
// replica holds; it returns their names. Call inside InTx.
func (s *Store) ClaimDueAgents(ctx context.Context, now time.Time, limit int) ([]string, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT g.name FROM agents g
		WHERE g.state = 'active' AND g.next_rotation_at <= $1
		  AND NOT EXISTS (SELECT 1 FROM rotations r WHERE r.agent_id = g.id AND r.state IN ('issued', 'distributed', 'confirmed'))
		ORDER BY g.next_rotation_at LIMIT $2 FOR NO KEY UPDATE OF g SKIP LOCKED`, dbTime(now), limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("claim due agents: %w", err))
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, mapErr(fmt.Errorf("claim due agents: %w", err))
	}
	return names, nil
}

// FindCredential returns a credential by ID.
func (s *Store) FindCredential(ctx context.Context, id int64) (*rotatord.Credential, error) {
	c, err := scanCredential(s.q(ctx).QueryRow(ctx, `SELECT `+credentialCols+` FROM credentials WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("credential", fmt.Sprint(id))
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find credential %d: %w", id, err))
	}
	return c, nil
}

// QueueResign asks for the account's JWT to be re-signed.
func (s *Store) QueueResign(ctx context.Context, accountID int64) error {
	_, err := s.q(ctx).Exec(ctx, `INSERT INTO account_resign (account_id) VALUES ($1)`, accountID)
	if err != nil {
		return mapErr(fmt.Errorf("queue re-sign of account %d: %w", accountID, err))
	}
	return nil
}

// ClaimResign takes one queued account off the queue, skipping ones another
// replica holds, and returns its ID (0 when the queue is empty). Call inside
// InTx: the claim is undone if the transaction fails.
func (s *Store) ClaimResign(ctx context.Context) (int64, error) {
	var id int64
	err := s.q(ctx).QueryRow(ctx, `SELECT account_id FROM account_resign ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED`).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, mapErr(fmt.Errorf("claim re-sign: %w", err))
	}
	// Every request of the account committed so far is served by this
	// re-sign; ones committed later stay for the next.
	if _, err := s.q(ctx).Exec(ctx, `DELETE FROM account_resign WHERE account_id = $1`, id); err != nil {
		return 0, mapErr(fmt.Errorf("claim re-sign of account %d: %w", id, err))
	}
	return id, nil
}

// QueueCompactable queues for a re-sign the accounts with revocation
// entries whose revoked JWT expired before now or was issued at or before
// cutoff.
func (s *Store) QueueCompactable(ctx context.Context, now, cutoff time.Time) error {
	_, err := s.q(ctx).Exec(ctx, `INSERT INTO account_resign (account_id)
		SELECT DISTINCT r.account_id FROM revocations r JOIN accounts a ON a.id = r.account_id
		WHERE r.public_key <> '*' AND (r.expires_at < $1 OR (r.jwt_issued_at <= $2 AND NOT a.keep_revocations))`,
		dbTime(now), dbTime(cutoff))
	if err != nil {
		return mapErr(fmt.Errorf("queue compactable accounts: %w", err))
	}
	return nil
}

// CompactRevocations folds every entry whose revoked JWT was issued at or
// before t into one '*' entry at t, and returns how many entries went.
func (s *Store) CompactRevocations(ctx context.Context, accountID int64, t, expires time.Time) (int64, error) {
	tag, err := s.q(ctx).Exec(ctx, `DELETE FROM revocations WHERE account_id = $1 AND public_key <> '*'
		AND jwt_issued_at <= $2`, accountID, dbTime(t))
	if err != nil {
		return 0, mapErr(fmt.Errorf("compact revocations: %w", err))
	}
	if tag.RowsAffected() == 0 {
		return 0, nil
	}
	_, err = s.q(ctx).Exec(ctx, `
		INSERT INTO revocations (account_id, public_key, revoked_at, expires_at, reason, jwt_issued_at)
		VALUES ($1, '*', $2, $3, 'compacted', $2)
		ON CONFLICT (account_id, public_key) DO UPDATE SET
			revoked_at = greatest(revocations.revoked_at, excluded.revoked_at),
			expires_at = greatest(revocations.expires_at, excluded.expires_at),
			jwt_issued_at = greatest(revocations.jwt_issued_at, excluded.jwt_issued_at)`,
		accountID, dbTime(t), dbTime(expires))
	if err != nil {
		return 0, mapErr(fmt.Errorf("compact revocations: %w", err))
	}
	return tag.RowsAffected(), nil
}

// UseProof records a proof-of-possession signature; a second use of the
// same signature is ECONFLICT. Expired records are cleaned up on the way.
func (s *Store) UseProof(ctx context.Context, sig []byte, expires time.Time) error {
	tag, err := s.q(ctx).Exec(ctx, `INSERT INTO proof_replays (signature, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING`, sig, dbTime(expires))
	if err != nil {
		return mapErr(fmt.Errorf("record proof: %w", err))
	}
	if tag.RowsAffected() == 0 {
		return rotatord.Errorf(rotatord.ECONFLICT, "proof already used")
	}
	return nil
}

// UseProofFor is UseProof that also appends e, the audit event of what the
// proof is used for, in the same statement: the event is written only when
// the proof was not used before. e gets its ID and time.
func (s *Store) UseProofFor(ctx context.Context, sig []byte, expires time.Time, e *rotatord.AuditEvent) error {
	err := s.q(ctx).QueryRow(ctx, `
		WITH p AS (INSERT INTO proof_replays (signature, expires_at) VALUES ($8, $9) ON CONFLICT DO NOTHING RETURNING 1)
		INSERT INTO audit_events (actor, action, account, agent, public_key, rotation_id, details)
		SELECT $1, $2, $3, $4, $5, $6::uuid, $7::jsonb FROM p RETURNING id, at`,
		append(auditArgs(e), sig, dbTime(expires))...).Scan(&e.ID, &e.At)
	if errors.Is(err, pgx.ErrNoRows) {
		return rotatord.Errorf(rotatord.ECONFLICT, "proof already used")
	}
	if err != nil {
		return mapErr(fmt.Errorf("record proof and audit event %s: %w", e.Action, err))
	}
	return nil
}

// PruneProofs removes proof records whose acceptance ended more than margin
// ago by the database's clock: one clock for every replica, so a replica
// whose own clock runs ahead cannot forget a proof another still accepts.
func (s *Store) PruneProofs(ctx context.Context, margin time.Duration) error {
	if _, err := s.q(ctx).Exec(ctx, `DELETE FROM proof_replays WHERE expires_at < now() - make_interval(secs => $1)`,
		margin.Seconds()); err != nil {
		return mapErr(fmt.Errorf("prune proofs: %w", err))
	}
	return nil
}

// AgentRotationWait returns how long, by the database's clock, until every
// is over since the agent's latest own-key rotation (trigger agent); zero
// when it is over or there was none.
func (s *Store) AgentRotationWait(ctx context.Context, agentID int64, every time.Duration) (time.Duration, error) {
	var secs *float64
	err := s.q(ctx).QueryRow(ctx, `SELECT extract(epoch FROM max(created_at) + make_interval(secs => $2) - now())::float8
		FROM rotations WHERE agent_id = $1 AND trigger = 'agent'`, agentID, every.Seconds()).Scan(&secs)
	if err != nil {
		return 0, mapErr(fmt.Errorf("last own-key rotation of agent %d: %w", agentID, err))
	}
	if secs == nil || *secs <= 0 {
		return 0, nil
	}
	return time.Duration(*secs * float64(time.Second)), nil
}
