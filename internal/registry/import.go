package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

// FindSigningKey returns the owner of a stored signing key: the account's
// ID, or 0 for the operator. A key rotatord does not hold is ENOTFOUND.
func (s *Store) FindSigningKey(ctx context.Context, pub string) (accountID int64, err error) {
	var id *int64
	err = s.q(ctx).QueryRow(ctx, `SELECT account_id FROM signing_keys WHERE public_key = $1`, pub).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, notFound("signing key", pub)
	}
	if err != nil {
		return 0, mapErr(fmt.Errorf("find signing key %s: %w", pub, err))
	}
	if id == nil {
		return 0, nil
	}
	return *id, nil
}

// MarkPushOwed records that no nats-server has the account's current JWT
// yet, so that the push retry sends it. An imported account whose JWT
// rotatord re-signed while importing needs this: the servers hold the JWT
// that was imported, not the new one.
func (s *Store) MarkPushOwed(ctx context.Context, accountID int64) error {
	tag, err := s.q(ctx).Exec(ctx, `UPDATE accounts SET pushed_version = 0 WHERE id = $1`, accountID)
	if err != nil {
		return mapErr(fmt.Errorf("mark account %d push owed: %w", accountID, err))
	}
	if tag.RowsAffected() == 0 {
		return rotatord.Errorf(rotatord.ENOTFOUND, "account %d not found", accountID)
	}
	return nil
}
