package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

// CreateToken stores a token by the hash of its secret. A taken name is ECONFLICT.
func (s *Store) CreateToken(ctx context.Context, t *rotatord.Token, hash []byte) error {
	err := s.q(ctx).QueryRow(ctx, `INSERT INTO api_tokens (name, hash, scope) VALUES ($1, $2, $3) RETURNING id, created_at`,
		t.Name, hash, string(t.Scope)).Scan(&t.ID, &t.CreatedAt)
	if err != nil {
		return mapErr(fmt.Errorf("create token %s: %w", t.Name, err))
	}
	return nil
}

// FindTokenByHash returns the live token whose secret hashes to hash, or ENOTFOUND.
func (s *Store) FindTokenByHash(ctx context.Context, hash []byte) (*rotatord.Token, error) {
	var t rotatord.Token
	var scope string
	err := s.q(ctx).QueryRow(ctx, `SELECT id, name, scope, created_at FROM api_tokens WHERE hash = $1 AND revoked_at IS NULL`, hash).
		Scan(&t.ID, &t.Name, &scope, &t.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, rotatord.Errorf(rotatord.ENOTFOUND, "token not found")
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find token: %w", err))
	}
	t.Scope = rotatord.Scope(scope)
	return &t, nil
}

// RevokeToken stops the named token from authenticating.
func (s *Store) RevokeToken(ctx context.Context, name string) error {
	tag, err := s.q(ctx).Exec(ctx, `UPDATE api_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL`, name)
	if err != nil {
		return mapErr(fmt.Errorf("revoke token %s: %w", name, err))
	}
	if tag.RowsAffected() == 0 {
		return notFound("token", name)
	}
	return nil
}
