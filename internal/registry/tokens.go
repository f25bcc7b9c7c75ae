package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

// TokenTouchEvery is how stale a token's last_used_at may get: a request
// authenticated by a token writes it only when it is older than this, so a
// busy token costs one write a minute, not one per request.
const TokenTouchEvery = time.Minute

const tokenColumns = `id, name, scope, created_at, created_by, expires_at, last_used_at, revoked_at`

func scanToken(row pgx.Row) (*rotatord.Token, error) {
	var t rotatord.Token
	var scope string
	if err := row.Scan(&t.ID, &t.Name, &scope, &t.CreatedAt, &t.CreatedBy, &t.ExpiresAt, &t.LastUsedAt, &t.RevokedAt); err != nil {
		return nil, err
	}
	t.Scope = rotatord.Scope(scope)
	return &t, nil
}

// CreateToken stores a token by the hash of its secret, with t's name,
// scope, creator and expiry. A taken name (a revoked token's too) is
// ECONFLICT.
func (s *Store) CreateToken(ctx context.Context, t *rotatord.Token, hash []byte) error {
	err := s.q(ctx).QueryRow(ctx, `INSERT INTO api_tokens (name, hash, scope, created_by, expires_at)
		VALUES ($1, $2, $3, $4, $5) RETURNING id, created_at`,
		t.Name, hash, string(t.Scope), t.CreatedBy, timePtr(t.ExpiresAt)).Scan(&t.ID, &t.CreatedAt)
	if err != nil {
		return mapErr(fmt.Errorf("create token %s: %w", t.Name, err))
	}
	return nil
}

// UseToken returns the token whose secret hashes to hash if it
// authenticates at now (not revoked, not expired), or ENOTFOUND. In the same
// statement it records now as the token's last use, unless that was written
// less than TokenTouchEvery ago. Nothing is cached: a revocation committed
// by any replica refuses the next request everywhere.
func (s *Store) UseToken(ctx context.Context, hash []byte, now time.Time) (*rotatord.Token, error) {
	now = dbTime(now)
	// The UPDATE re-checks a.last_used_at on the row it locks, so requests
	// racing at the minute boundary write once.
	row := s.q(ctx).QueryRow(ctx, `WITH t AS (
			SELECT `+tokenColumns+` FROM api_tokens
			WHERE hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)
		), touched AS (
			UPDATE api_tokens a SET last_used_at = $2 FROM t
			WHERE a.id = t.id AND a.revoked_at IS NULL AND (a.last_used_at IS NULL OR a.last_used_at < $3)
		)
		SELECT `+tokenColumns+` FROM t`, hash, now, now.Add(-TokenTouchEvery))
	t, err := scanToken(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, rotatord.Errorf(rotatord.ENOTFOUND, "token not found")
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find token: %w", err))
	}
	return t, nil
}

// ListTokens returns every token, revoked and expired ones included, by name.
func (s *Store) ListTokens(ctx context.Context) ([]*rotatord.Token, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT `+tokenColumns+` FROM api_tokens ORDER BY name`)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list tokens: %w", err))
	}
	return collect(rows, "tokens", scanToken)
}

// LockToken returns the named token, locked until the transaction ends, or
// ENOTFOUND.
func (s *Store) LockToken(ctx context.Context, name string) (*rotatord.Token, error) {
	if err := needTx(ctx, "lock token"); err != nil {
		return nil, err
	}
	t, err := scanToken(s.q(ctx).QueryRow(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE name = $1 FOR UPDATE`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("token", name)
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("lock token %s: %w", name, err))
	}
	return t, nil
}

// LockLiveTokens returns the names of the tokens of scope that authenticate
// at now, locked (in id order, so two callers cannot deadlock) until the
// transaction ends.
func (s *Store) LockLiveTokens(ctx context.Context, scope rotatord.Scope, now time.Time) ([]string, error) {
	if err := needTx(ctx, "lock tokens"); err != nil {
		return nil, err
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT name FROM api_tokens
		WHERE scope = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)
		ORDER BY id FOR UPDATE`, string(scope), dbTime(now))
	if err != nil {
		return nil, mapErr(fmt.Errorf("lock %s tokens: %w", scope, err))
	}
	return collect(rows, "tokens", func(row pgx.Row) (string, error) {
		var name string
		err := row.Scan(&name)
		return name, err
	})
}

// RevokeToken marks the named token revoked at at. A token revoked already
// keeps its first revocation time; ENOTFOUND for an unknown name.
func (s *Store) RevokeToken(ctx context.Context, name string, at time.Time) error {
	tag, err := s.q(ctx).Exec(ctx, `UPDATE api_tokens SET revoked_at = coalesce(revoked_at, $2) WHERE name = $1`, name, dbTime(at))
	if err != nil {
		return mapErr(fmt.Errorf("revoke token %s: %w", name, err))
	}
	if tag.RowsAffected() == 0 {
		return notFound("token", name)
	}
	return nil
}
