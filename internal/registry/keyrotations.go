package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

// Signing-key rotations (key_rotations), the signing keys they retire, and
// the accounts' key rotation schedules (account_key_schedules).

const keyRotationCols = `k.id::text, k.kind, coalesce(k.account_id, 0), coalesce(a.name, ''), coalesce(a.public_key, ''),
	coalesce(k.role_id, 0), coalesce(ro.name, ''), k.mode, k.state, k.trigger, k.old_keys, k.new_key, k.new_seed_enc,
	k.added_version, k.removed_version, k.removed_at, k.stragglers, coalesce(k.fleet_rotation_id::text, ''), k.actor, k.reason,
	k.created_at, k.updated_at, k.finished_at`

const keyRotationFrom = ` FROM key_rotations k LEFT JOIN accounts a ON a.id = k.account_id LEFT JOIN roles ro ON ro.id = k.role_id`

func scanKeyRotation(row pgx.Row) (*rotatord.KeyRotation, error) {
	var k rotatord.KeyRotation
	err := row.Scan(&k.ID, &k.Kind, &k.AccountID, &k.Account, &k.AccountKey, &k.RoleID, &k.Role, &k.Mode, &k.State, &k.Trigger,
		&k.OldKeys, &k.NewKey, &k.NewSeedEnc, &k.AddedVersion, &k.RemovedVersion, &k.RemovedAt, &k.Stragglers, &k.FleetRotation,
		&k.Actor, &k.Reason, &k.CreatedAt, &k.UpdatedAt, &k.FinishedAt)
	return &k, err
}

// CreateKeyRotation stores a new key rotation and sets its ID and times.
// While another key rotation of the account is in flight it fails with
// ECONFLICT: the database keeps one per account.
func (s *Store) CreateKeyRotation(ctx context.Context, k *rotatord.KeyRotation) error {
	var acc, role any
	if k.AccountID != 0 {
		acc = k.AccountID
	}
	if k.RoleID != 0 {
		role = k.RoleID
	}
	err := s.q(ctx).QueryRow(ctx, `INSERT INTO key_rotations (kind, account_id, role_id, mode, state, trigger, old_keys, new_key,
			new_seed_enc, added_version, removed_version, actor, reason)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id::text, created_at, updated_at`,
		k.Kind, acc, role, k.Mode, k.State, k.Trigger, k.OldKeys, k.NewKey, k.NewSeedEnc, k.AddedVersion, k.RemovedVersion,
		k.Actor, k.Reason).Scan(&k.ID, &k.CreatedAt, &k.UpdatedAt)
	if err != nil {
		return mapErr(fmt.Errorf("create key rotation of account %d: %w", k.AccountID, err))
	}
	return nil
}

// UpdateKeyRotation stores k's state and progress fields.
func (s *Store) UpdateKeyRotation(ctx context.Context, k *rotatord.KeyRotation) error {
	var fleet any
	if k.FleetRotation != "" {
		fleet = k.FleetRotation
	}
	err := s.q(ctx).QueryRow(ctx, `UPDATE key_rotations SET state = $2, new_seed_enc = $3, added_version = $4,
			removed_version = $5, removed_at = $6, stragglers = $7, fleet_rotation_id = $8::uuid, reason = $9, finished_at = $10,
			updated_at = now()
		WHERE id = $1::uuid RETURNING updated_at`, k.ID, k.State, k.NewSeedEnc, k.AddedVersion, k.RemovedVersion, k.RemovedAt,
		k.Stragglers, fleet, k.Reason, k.FinishedAt).Scan(&k.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound("key rotation", k.ID)
	}
	if err != nil {
		return mapErr(fmt.Errorf("update key rotation %s: %w", k.ID, err))
	}
	return nil
}

// FindKeyRotation returns a key rotation by ID, or ENOTFOUND (also for an
// ID that is not a UUID).
func (s *Store) FindKeyRotation(ctx context.Context, id string) (*rotatord.KeyRotation, error) {
	if !isUUID(id) {
		return nil, notFound("key rotation", id)
	}
	k, err := scanKeyRotation(s.q(ctx).QueryRow(ctx, `SELECT `+keyRotationCols+keyRotationFrom+` WHERE k.id = $1::uuid`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("key rotation", id)
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find key rotation %s: %w", id, err))
	}
	return k, nil
}

// LockKeyRotation reads a key rotation and locks it for the transaction in
// ctx; with skip, one another transaction holds is skipped (ok false).
func (s *Store) LockKeyRotation(ctx context.Context, id string, skip bool) (k *rotatord.KeyRotation, ok bool, err error) {
	if err := needTx(ctx, "lock key rotation"); err != nil {
		return nil, false, err
	}
	if !isUUID(id) {
		return nil, false, notFound("key rotation", id)
	}
	lock := " FOR NO KEY UPDATE OF k"
	if skip {
		lock += " SKIP LOCKED"
	}
	k, err = scanKeyRotation(s.q(ctx).QueryRow(ctx, `SELECT `+keyRotationCols+keyRotationFrom+` WHERE k.id = $1::uuid`+lock, id))
	if errors.Is(err, pgx.ErrNoRows) {
		if skip {
			return nil, false, nil
		}
		return nil, false, notFound("key rotation", id)
	}
	if err != nil {
		return nil, false, mapErr(fmt.Errorf("lock key rotation %s: %w", id, err))
	}
	return k, true, nil
}

// ListKeyRotations returns key rotations matching f, newest first.
func (s *Store) ListKeyRotations(ctx context.Context, f rotatord.KeyRotationFilter) ([]*rotatord.KeyRotation, error) {
	var after any
	if f.After != "" {
		if !isUUID(f.After) {
			return nil, rotatord.Errorf(rotatord.EINVALID, "after %.40q is not a key rotation id", f.After)
		}
		after = f.After
	}
	limit := any(nil)
	if f.Limit > 0 {
		limit = f.Limit
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT `+keyRotationCols+keyRotationFrom+`
		WHERE ($1 = '' OR a.name = $1)
		  AND ($2::uuid IS NULL OR (k.created_at, k.id) < (SELECT created_at, id FROM key_rotations WHERE id = $2::uuid))
		ORDER BY k.created_at DESC, k.id DESC LIMIT $3`, f.Account, after, limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list key rotations: %w", err))
	}
	return collect(rows, "key rotations", scanKeyRotation)
}

// InFlightKeyRotation returns the account's key rotation in flight, or nil.
func (s *Store) InFlightKeyRotation(ctx context.Context, accountID int64) (*rotatord.KeyRotation, error) {
	k, err := scanKeyRotation(s.q(ctx).QueryRow(ctx, `SELECT `+keyRotationCols+keyRotationFrom+`
		WHERE k.account_id = $1 AND k.state IN ('adding', 'reissuing', 'waiting', 'removing')`, accountID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find the key rotation in flight: %w", err))
	}
	return k, nil
}

// KeyRotationsInFlight returns the IDs of account and role key rotations
// in flight, the least recently driven first.
func (s *Store) KeyRotationsInFlight(ctx context.Context, limit int) ([]string, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT id::text FROM key_rotations
		WHERE state IN ('adding', 'reissuing', 'waiting', 'removing') AND kind IN ('account', 'role')
		ORDER BY updated_at LIMIT $1`, limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list key rotations in flight: %w", err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, mapErr(fmt.Errorf("list key rotations in flight: %w", err))
	}
	return ids, nil
}

// PendingSigningKeys returns the new keys of the account's key rotations
// that are adding them.
func (s *Store) PendingSigningKeys(ctx context.Context, accountID int64) ([]rotatord.PendingKey, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT new_key, coalesce(role_id, 0) FROM key_rotations
		WHERE account_id = $1 AND state = 'adding' AND new_seed_enc IS NOT NULL ORDER BY created_at`, accountID)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list pending signing keys: %w", err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[rotatord.PendingKey])
	if err != nil {
		return nil, mapErr(fmt.Errorf("list pending signing keys: %w", err))
	}
	return out, nil
}

// KeyHolders returns the active agents holding a credential (pending or
// active, not expired at now) signed by one of keys: their IDs in order,
// and the names of the first limit of them.
func (s *Store) KeyHolders(ctx context.Context, keys []string, now time.Time, limit int) (ids []int64, names []string, err error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT DISTINCT g.id, g.name FROM credentials c JOIN agents g ON g.id = c.agent_id
		WHERE c.signing_key = ANY($1) AND c.state IN ('pending', 'active') AND c.expires_at > $2 AND g.state = 'active'
		ORDER BY g.id`, keys, dbTime(now))
	if err != nil {
		return nil, nil, mapErr(fmt.Errorf("find agents holding keys: %w", err))
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var name string
		if err := rows.Scan(&id, &name); err != nil {
			return nil, nil, mapErr(fmt.Errorf("find agents holding keys: %w", err))
		}
		ids = append(ids, id)
		if len(names) < limit {
			names = append(names, name)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, mapErr(fmt.Errorf("find agents holding keys: %w", err))
	}
	return ids, names, nil
}

// RetireSigningKeys retires live signing keys at time at. It first locks
// their rows FOR UPDATE, which waits for every transaction that is signing
// with one of them (they hold a KEY SHARE lock, see SigningKey): once it
// returns, no credential signed by them can still be committed.
func (s *Store) RetireSigningKeys(ctx context.Context, keys []string, at time.Time) error {
	if err := needTx(ctx, "retire signing keys"); err != nil {
		return err
	}
	if _, err := s.q(ctx).Exec(ctx, `SELECT 1 FROM signing_keys WHERE public_key = ANY($1) FOR UPDATE`, keys); err != nil {
		return mapErr(fmt.Errorf("lock signing keys: %w", err))
	}
	if _, err := s.q(ctx).Exec(ctx, `UPDATE signing_keys SET retired_at = $2 WHERE public_key = ANY($1) AND retired_at IS NULL`,
		keys, dbTime(at)); err != nil {
		return mapErr(fmt.Errorf("retire signing keys: %w", err))
	}
	return nil
}

// RetiredSigningKeys reports which of keys are signing keys rotatord
// retired (keys it does not hold are not in the result).
func (s *Store) RetiredSigningKeys(ctx context.Context, keys []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(keys) == 0 {
		return out, nil
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT public_key FROM signing_keys WHERE public_key = ANY($1) AND retired_at IS NOT NULL`, keys)
	if err != nil {
		return nil, mapErr(fmt.Errorf("find retired signing keys: %w", err))
	}
	list, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, mapErr(fmt.Errorf("find retired signing keys: %w", err))
	}
	for _, k := range list {
		out[k] = true
	}
	return out, nil
}

// LiveSigningKeys reports which of keys are live signing keys.
func (s *Store) LiveSigningKeys(ctx context.Context, keys []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(keys) == 0 {
		return out, nil
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT public_key FROM signing_keys WHERE public_key = ANY($1) AND retired_at IS NULL`, keys)
	if err != nil {
		return nil, mapErr(fmt.Errorf("find live signing keys: %w", err))
	}
	list, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, mapErr(fmt.Errorf("find live signing keys: %w", err))
	}
	for _, k := range list {
		out[k] = true
	}
	return out, nil
}

// PruneRevocationsSignedBy deletes an account's revocation entries of user
// keys whose JWTs were signed by one of keys: once those signing keys are
// out of the account JWT, nats-server refuses every JWT they signed, and
// the entries only make the account JWT bigger. It returns how many went.
func (s *Store) PruneRevocationsSignedBy(ctx context.Context, accountID int64, keys []string) (int64, error) {
	tag, err := s.q(ctx).Exec(ctx, `DELETE FROM revocations r USING credentials c
		WHERE r.account_id = $1 AND r.public_key <> '*' AND c.public_key = r.public_key AND c.signing_key = ANY($2)`, accountID, keys)
	if err != nil {
		return 0, mapErr(fmt.Errorf("prune revocations of retired signing keys: %w", err))
	}
	return tag.RowsAffected(), nil
}

// SetKeySchedule sets (or with an empty schedule, removes) an account's key
// rotation schedule.
func (s *Store) SetKeySchedule(ctx context.Context, accountID int64, schedule string, next time.Time) error {
	var err error
	if schedule == "" {
		_, err = s.q(ctx).Exec(ctx, `DELETE FROM account_key_schedules WHERE account_id = $1`, accountID)
	} else {
		_, err = s.q(ctx).Exec(ctx, `INSERT INTO account_key_schedules (account_id, schedule, next_at) VALUES ($1, $2, $3)
			ON CONFLICT (account_id) DO UPDATE SET schedule = excluded.schedule, next_at = excluded.next_at`,
			accountID, schedule, dbTime(next))
	}
	if err != nil {
		return mapErr(fmt.Errorf("set key rotation schedule of account %d: %w", accountID, err))
	}
	return nil
}

// KeySchedules returns the key rotation schedules of the given accounts.
func (s *Store) KeySchedules(ctx context.Context, accountIDs []int64) (map[int64]rotatord.KeyRotationPolicy, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT account_id, schedule, next_at FROM account_key_schedules WHERE account_id = ANY($1)`, accountIDs)
	if err != nil {
		return nil, mapErr(fmt.Errorf("read key rotation schedules: %w", err))
	}
	defer rows.Close()
	out := map[int64]rotatord.KeyRotationPolicy{}
	for rows.Next() {
		var id int64
		var p rotatord.KeyRotationPolicy
		if err := rows.Scan(&id, &p.Schedule, &p.NextAt); err != nil {
			return nil, mapErr(fmt.Errorf("read key rotation schedules: %w", err))
		}
		out[id] = p
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(fmt.Errorf("read key rotation schedules: %w", err))
	}
	return out, nil
}

// ClaimDueKeySchedules locks up to limit schedules due at now, skipping
// ones another replica holds. Call inside InTx.
func (s *Store) ClaimDueKeySchedules(ctx context.Context, now time.Time, limit int) ([]rotatord.KeySchedule, error) {
	if err := needTx(ctx, "claim key rotation schedules"); err != nil {
		return nil, err
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT ks.account_id, a.name, ks.schedule, ks.next_at
		FROM account_key_schedules ks JOIN accounts a ON a.id = ks.account_id
		WHERE ks.next_at <= $1 ORDER BY ks.next_at LIMIT $2 FOR UPDATE OF ks SKIP LOCKED`, dbTime(now), limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("claim key rotation schedules: %w", err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[rotatord.KeySchedule])
	if err != nil {
		return nil, mapErr(fmt.Errorf("claim key rotation schedules: %w", err))
	}
	return out, nil
}
