package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

// Operator returns the operator; ENOTFOUND until `rotatord init` ran.
func (s *Store) Operator(ctx context.Context) (*rotatord.Operator, error) {
	var op rotatord.Operator
	err := s.q(ctx).QueryRow(ctx, `SELECT name, public_key, jwt, system_account, created_at FROM operator`).
		Scan(&op.Name, &op.PublicKey, &op.JWT, &op.SystemAccount, &op.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, rotatord.Errorf(rotatord.ENOTFOUND, "no operator: run `rotatord init --operator NAME` first")
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("read operator: %w", err))
	}
	return &op, nil
}

// CreateOperator stores the operator with its encrypted identity seed.
func (s *Store) CreateOperator(ctx context.Context, op *rotatord.Operator, seedEnc []byte) error {
	err := s.q(ctx).QueryRow(ctx, `
		INSERT INTO operator (name, public_key, seed_enc, jwt, system_account)
		VALUES ($1, $2, $3, $4, $5) RETURNING created_at`,
		op.Name, op.PublicKey, seedEnc, op.JWT, op.SystemAccount).Scan(&op.CreatedAt)
	if err != nil {
		return mapErr(fmt.Errorf("create operator %s: %w", op.Name, err))
	}
	return nil
}

// UpdateOperator replaces the operator JWT and system account key.
func (s *Store) UpdateOperator(ctx context.Context, op *rotatord.Operator) error {
	_, err := s.q(ctx).Exec(ctx, `UPDATE operator SET jwt = $1, system_account = $2, updated_at = now()`,
		op.JWT, op.SystemAccount)
	if err != nil {
		return mapErr(fmt.Errorf("update operator: %w", err))
	}
	return nil
}

// LockOperator takes the operator row lock for the rest of the transaction;
// `init` holds it so that two concurrent runs create one operator.
func (s *Store) LockOperator(ctx context.Context) error {
	if _, err := s.q(ctx).Exec(ctx, `SELECT pg_advisory_xact_lock(7290001)`); err != nil {
		return mapErr(fmt.Errorf("lock operator: %w", err))
	}
	return nil
}

// AddSigningKey stores a signing key of the operator (accountID 0) or of an account.
func (s *Store) AddSigningKey(ctx context.Context, accountID int64, pub string, seedEnc []byte) error {
	kind, acc := "operator", any(nil)
	if accountID != 0 {
		kind, acc = "account", accountID
	}
	_, err := s.q(ctx).Exec(ctx, `INSERT INTO signing_keys (public_key, owner_kind, account_id, seed_enc) VALUES ($1, $2, $3, $4)`,
		pub, kind, acc, seedEnc)
	if err != nil {
		return mapErr(fmt.Errorf("add signing key: %w", err))
	}
	return nil
}

// SigningKey returns the newest live signing key of the operator (accountID
// 0) or of an account (not of its roles), as public key and encrypted seed.
// A staged key (one added by a rotation, trusted but not signing yet) is not
// returned. Inside a transaction it holds a KEY SHARE lock on the key until
// the transaction ends: retiring the key (RetireSigningKeys) waits for every
// transaction signing with it, so none commits a credential signed by a
// key already retired.
func (s *Store) SigningKey(ctx context.Context, accountID int64) (pub string, seedEnc []byte, err error) {
	var row pgx.Row
	lock := keyShare(ctx)
	if accountID == 0 {
		row = s.q(ctx).QueryRow(ctx, `SELECT public_key, seed_enc FROM signing_keys
			WHERE owner_kind = 'operator' AND retired_at IS NULL AND NOT staged ORDER BY created_at DESC, public_key DESC LIMIT 1`+lock)
	} else {
		row = s.q(ctx).QueryRow(ctx, `SELECT public_key, seed_enc FROM signing_keys
			WHERE account_id = $1 AND role_id IS NULL AND retired_at IS NULL AND NOT staged ORDER BY created_at DESC, public_key DESC LIMIT 1`+lock, accountID)
	}
	err = row.Scan(&pub, &seedEnc)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil, rotatord.Errorf(rotatord.ENOTFOUND, "no signing key")
	}
	if err != nil {
		return "", nil, mapErr(fmt.Errorf("read signing key: %w", err))
	}
	return pub, seedEnc, nil
}

// SigningKeys returns the public keys of an account's live signing keys
// (not its roles' scoped keys).
func (s *Store) SigningKeys(ctx context.Context, accountID int64) ([]string, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT public_key FROM signing_keys WHERE account_id = $1 AND role_id IS NULL AND retired_at IS NULL ORDER BY created_at`, accountID)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list signing keys: %w", err))
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, mapErr(fmt.Errorf("list signing keys: %w", err))
	}
	return keys, nil
}

// keyShare is the lock a signer takes on the signing key it reads: KEY
// SHARE inside a transaction (see SigningKey), none outside one.
func keyShare(ctx context.Context) string {
	if _, ok := ctx.Value(txKey{}).(pgx.Tx); ok {
		return " FOR KEY SHARE"
	}
	return ""
}
