package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

// Signing-key rotations (key_rotations), the signing keys they retire, and
// the accounts' key rotation schedules (account_key_schedules).

const keyRotationCols = `k.id::text, k.kind, k.state, k.old_keys, k.new_key, k.actor, k.servers, k.waiting,
	k.created_at, k.updated_at, k.step_at, k.finished_at,
	coalesce(k.account_id, 0), coalesce(a.name, ''), coalesce(a.public_key, ''), coalesce(k.role_id, 0), coalesce(ro.name, ''),
	k.mode, k.trigger, k.added_version, k.removed_version, k.removed_at, k.stragglers, coalesce(k.fleet_rotation_id::text, ''), k.reason`

const keyRotationFrom = ` FROM key_rotations k LEFT JOIN accounts a ON a.id = k.account_id LEFT JOIN roles ro ON ro.id = k.role_id`

func scanKeyRotation(row pgx.Row) (*rotatord.KeyRotation, error) {
	var (
		k       rotatord.KeyRotation
		servers []byte
	)
	if err := row.Scan(&k.ID, &k.Kind, &k.State, &k.OldKeys, &k.NewKey, &k.Actor, &servers, &k.Waiting,
		&k.CreatedAt, &k.UpdatedAt, &k.StepAt, &k.FinishedAt,
		&k.AccountID, &k.Account, &k.AccountKey, &k.RoleID, &k.Role,
		&k.Mode, &k.Trigger, &k.AddedVersion, &k.RemovedVersion, &k.RemovedAt, &k.Stragglers, &k.FleetRotation, &k.Reason); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(servers, &k.Servers); err != nil {
		return nil, fmt.Errorf("decode servers of key rotation %s: %w", k.ID, err)
	}
	return &k, nil
}

// CreateKeyRotation stores a new key rotation and sets its ID and times.
// ECONFLICT while another operator key rotation is in flight, or another
// key rotation of the same account.
func (s *Store) CreateKeyRotation(ctx context.Context, k *rotatord.KeyRotation) error {
	servers, err := json.Marshal(orEmpty(k.Servers))
	if err != nil {
		return fmt.Errorf("encode servers: %w", err)
	}
	var acc, role any
	if k.AccountID != 0 {
		acc = k.AccountID
	}
	if k.RoleID != 0 {
		role = k.RoleID
	}
	mode := k.Mode
	if mode == "" {
		mode = rotatord.KeyModeStaged
	}
	trigger := k.Trigger
	if trigger == "" {
		trigger = rotatord.TriggerManual
	}
	err = s.q(ctx).QueryRow(ctx, `
		INSERT INTO key_rotations (kind, state, old_keys, new_key, actor, servers, waiting,
			account_id, role_id, mode, trigger, added_version, removed_version, removed_at, stragglers, reason)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
		RETURNING id::text, created_at, updated_at, step_at`,
		k.Kind, k.State, orEmpty(k.OldKeys), k.NewKey, k.Actor, servers, k.Waiting,
		acc, role, mode, trigger, k.AddedVersion, k.RemovedVersion, k.RemovedAt, k.Stragglers, k.Reason,
	).Scan(&k.ID, &k.CreatedAt, &k.UpdatedAt, &k.StepAt)
	if err != nil {
		return mapErr(fmt.Errorf("create %s key rotation: %w", k.Kind, err))
	}
	k.Mode, k.Trigger = mode, trigger
	return nil
}

// UpdateKeyRotation stores k's state and progress fields; a new state
// starts a new step (step_at), and completed or abandoned sets finished_at.
func (s *Store) UpdateKeyRotation(ctx context.Context, k *rotatord.KeyRotation) error {
	servers, err := json.Marshal(orEmpty(k.Servers))
	if err != nil {
		return fmt.Errorf("encode servers: %w", err)
	}
	var fleet any
	if k.FleetRotation != "" {
		fleet = k.FleetRotation
	}
	err = s.q(ctx).QueryRow(ctx, `
		UPDATE key_rotations SET
			step_at = CASE WHEN state = $2 THEN step_at ELSE now() END,
			state = $2, servers = $3, waiting = $4, updated_at = now(),
			finished_at = CASE WHEN $2 IN ('completed', 'abandoned') THEN coalesce(finished_at, now()) END,
			added_version = $5, removed_version = $6, removed_at = $7, stragglers = $8, fleet_rotation_id = $9::uuid, reason = $10
		WHERE id = $1::uuid RETURNING updated_at, step_at, finished_at`,
		k.ID, k.State, servers, k.Waiting, k.AddedVersion, k.RemovedVersion, k.RemovedAt, k.Stragglers, fleet, k.Reason,
	).Scan(&k.UpdatedAt, &k.StepAt, &k.FinishedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound("key rotation", k.ID)
	}
	if err != nil {
		return mapErr(fmt.Errorf("update key rotation %s: %w", k.ID, err))
	}
	return nil
}

// FindKeyRotation returns a key rotation by ID; ENOTFOUND for an unknown
// or malformed ID.
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

// LockKeyRotation locks a key rotation in flight for the rest of the
// transaction. ok is false when another transaction holds it (it is being
// advanced) or it has finished.
func (s *Store) LockKeyRotation(ctx context.Context, id string) (k *rotatord.KeyRotation, ok bool, err error) {
	if err := needTx(ctx, "lock key rotation"); err != nil {
		return nil, false, err
	}
	k, err = scanKeyRotation(s.q(ctx).QueryRow(ctx, `SELECT `+keyRotationCols+keyRotationFrom+`
		WHERE k.id = $1::uuid AND k.finished_at IS NULL FOR UPDATE OF k SKIP LOCKED`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, mapErr(fmt.Errorf("lock key rotation %s: %w", id, err))
	}
	return k, true, nil
}

// WaitKeyRotation locks a key rotation for the rest of the transaction,
// waiting for one that holds it (an operator's decision); ENOTFOUND for an
// unknown or malformed ID.
func (s *Store) WaitKeyRotation(ctx context.Context, id string) (*rotatord.KeyRotation, error) {
	if err := needTx(ctx, "lock key rotation"); err != nil {
		return nil, err
	}
	if !isUUID(id) {
		return nil, notFound("key rotation", id)
	}
	k, err := scanKeyRotation(s.q(ctx).QueryRow(ctx, `SELECT `+keyRotationCols+keyRotationFrom+`
		WHERE k.id = $1::uuid FOR UPDATE OF k`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("key rotation", id)
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("lock key rotation %s: %w", id, err))
	}
	return k, nil
}

// KeyRotationsInFlight returns the IDs of the key rotations of a kind that
// have not finished, the oldest first.
func (s *Store) KeyRotationsInFlight(ctx context.Context, kind string) ([]string, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT id::text FROM key_rotations WHERE finished_at IS NULL AND kind = $1 ORDER BY created_at`, kind)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list key rotations in flight: %w", err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, mapErr(fmt.Errorf("list key rotations in flight: %w", err))
	}
	return ids, nil
}

// ListKeyRotations returns key rotations matching f, newest first.
func (s *Store) ListKeyRotations(ctx context.Context, f rotatord.KeyRotationFilter) ([]*rotatord.KeyRotation, error) {
	after, limit, err := pageArgs(f.After, f.Limit, "key rotation")
	if err != nil {
		return nil, err
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
		WHERE k.account_id = $1 AND k.finished_at IS NULL`, accountID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find the key rotation in flight: %w", err))
	}
	return k, nil
}

// PendingSigningKeys returns the account's staged signing keys (its own
// and its roles'): trusted by its JWT, signing nothing yet.
func (s *Store) PendingSigningKeys(ctx context.Context, accountID int64) ([]rotatord.PendingKey, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT public_key, coalesce(role_id, 0) FROM signing_keys
		WHERE account_id = $1 AND staged AND retired_at IS NULL ORDER BY created_at, public_key`, accountID)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list staged signing keys: %w", err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[rotatord.PendingKey])
	if err != nil {
		return nil, mapErr(fmt.Errorf("list staged signing keys: %w", err))
	}
	return out, nil
}

// AddStagedRoleSigningKey stores a new scoped key of a role that is
// trusted but does not sign yet (see AddStagedSigningKey).
func (s *Store) AddStagedRoleSigningKey(ctx context.Context, r *rotatord.Role, pub string, seedEnc []byte) error {
	_, err := s.q(ctx).Exec(ctx, `INSERT INTO signing_keys (public_key, owner_kind, account_id, role_id, seed_enc, staged)
		VALUES ($1, 'role', $2, $3, $4, true)`, pub, r.AccountID, r.ID, seedEnc)
	if err != nil {
		return mapErr(fmt.Errorf("add staged signing key of role %s: %w", r.Name, err))
	}
	return nil
}

// AddStagedSigningKey stores a new signing key of the operator (accountID
// 0) or of an account that is trusted but does not sign yet: SigningKey
// skips it until ActivateSigningKey.
func (s *Store) AddStagedSigningKey(ctx context.Context, accountID int64, pub string, seedEnc []byte) error {
	kind, acc := "operator", any(nil)
	if accountID != 0 {
		kind, acc = "account", accountID
	}
	_, err := s.q(ctx).Exec(ctx, `INSERT INTO signing_keys (public_key, owner_kind, account_id, seed_enc, staged) VALUES ($1, $2, $3, $4, true)`,
		pub, kind, acc, seedEnc)
	if err != nil {
		return mapErr(fmt.Errorf("add staged signing key: %w", err))
	}
	return nil
}

// ActivateSigningKey makes a staged signing key the one that signs.
func (s *Store) ActivateSigningKey(ctx context.Context, pub string) error {
	tag, err := s.q(ctx).Exec(ctx, `UPDATE signing_keys SET staged = false WHERE public_key = $1 AND retired_at IS NULL`, pub)
	if err != nil {
		return mapErr(fmt.Errorf("activate signing key %s: %w", pub, err))
	}
	if tag.RowsAffected() == 0 {
		return notFound("signing key", pub)
	}
	return nil
}

// RetireOperatorSigningKeys retires every live signing key of the operator
// but keep, and returns their public keys.
func (s *Store) RetireOperatorSigningKeys(ctx context.Context, keep string) ([]string, error) {
	rows, err := s.q(ctx).Query(ctx, `UPDATE signing_keys SET retired_at = now()
		WHERE owner_kind = 'operator' AND retired_at IS NULL AND public_key <> $1 RETURNING public_key`, keep)
	if err != nil {
		return nil, mapErr(fmt.Errorf("retire operator signing keys: %w", err))
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, mapErr(fmt.Errorf("retire operator signing keys: %w", err))
	}
	return keys, nil
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

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// ActivationHolders returns, ordered by ID, the accounts holding
// activation tokens for imports of the exporter's exports (by its public
// key), only those with a token signed by one of signers when signers is
// not nil; with their ID, name, public key and JWT versions only.
func (s *Store) ActivationHolders(ctx context.Context, exporter string, signers []string) ([]*rotatord.Account, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT a.id, a.name, a.public_key, a.jwt_version, a.pushed_version FROM accounts a
		WHERE a.public_key IN (SELECT t.importer_key FROM activations t
			WHERE t.exporter_key = $1 AND ($2::text[] IS NULL OR t.signer = ANY($2)))
		ORDER BY a.id`, exporter, signers)
	if err != nil {
		return nil, mapErr(fmt.Errorf("accounts holding activations of %s: %w", exporter, err))
	}
	return collect(rows, "accounts holding activations", func(row pgx.Row) (*rotatord.Account, error) {
		var a rotatord.Account
		return &a, row.Scan(&a.ID, &a.Name, &a.PublicKey, &a.JWTVersion, &a.PushedVersion)
	})
}
