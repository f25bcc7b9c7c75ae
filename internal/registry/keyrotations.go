package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

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

const keyRotationCols = `id::text, kind, state, old_keys, new_key, actor, servers, waiting, created_at, updated_at, step_at, finished_at`

func scanKeyRotation(row pgx.Row) (*rotatord.KeyRotation, error) {
	var (
		k       rotatord.KeyRotation
		servers []byte
	)
	if err := row.Scan(&k.ID, &k.Kind, &k.State, &k.OldKeys, &k.NewKey, &k.Actor, &servers, &k.Waiting,
		&k.CreatedAt, &k.UpdatedAt, &k.StepAt, &k.FinishedAt); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(servers, &k.Servers); err != nil {
		return nil, fmt.Errorf("decode servers of key rotation %s: %w", k.ID, err)
	}
	return &k, nil
}

// CreateKeyRotation stores a new key rotation and sets its ID and times.
// ECONFLICT while another operator key rotation is in flight.
func (s *Store) CreateKeyRotation(ctx context.Context, k *rotatord.KeyRotation) error {
	servers, err := json.Marshal(orEmpty(k.Servers))
	if err != nil {
		return fmt.Errorf("encode servers: %w", err)
	}
	err = s.q(ctx).QueryRow(ctx, `
		INSERT INTO key_rotations (kind, state, old_keys, new_key, actor, servers, waiting)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id::text, created_at, updated_at, step_at`,
		k.Kind, k.State, orEmpty(k.OldKeys), k.NewKey, k.Actor, servers, k.Waiting).Scan(&k.ID, &k.CreatedAt, &k.UpdatedAt, &k.StepAt)
	if err != nil {
		return mapErr(fmt.Errorf("create %s key rotation: %w", k.Kind, err))
	}
	return nil
}

// UpdateKeyRotation stores k's state, servers and waiting note; a new state
// starts a new step (step_at), and completed sets finished_at.
func (s *Store) UpdateKeyRotation(ctx context.Context, k *rotatord.KeyRotation) error {
	servers, err := json.Marshal(orEmpty(k.Servers))
	if err != nil {
		return fmt.Errorf("encode servers: %w", err)
	}
	err = s.q(ctx).QueryRow(ctx, `
		UPDATE key_rotations SET
			step_at = CASE WHEN state = $2 THEN step_at ELSE now() END,
			state = $2, servers = $3, waiting = $4, updated_at = now(),
			finished_at = CASE WHEN $2 IN ('completed', 'abandoned') THEN coalesce(finished_at, now()) END
		WHERE id = $1::uuid RETURNING updated_at, step_at, finished_at`,
		k.ID, k.State, servers, k.Waiting).Scan(&k.UpdatedAt, &k.StepAt, &k.FinishedAt)
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
	k, err := scanKeyRotation(s.q(ctx).QueryRow(ctx, `SELECT `+keyRotationCols+` FROM key_rotations WHERE id = $1::uuid`, id))
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
	k, err = scanKeyRotation(s.q(ctx).QueryRow(ctx, `SELECT `+keyRotationCols+` FROM key_rotations
		WHERE id = $1::uuid AND finished_at IS NULL FOR UPDATE SKIP LOCKED`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, mapErr(fmt.Errorf("lock key rotation %s: %w", id, err))
	}
	return k, true, nil
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

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
