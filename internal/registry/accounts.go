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

const accountBase = `a.id, a.name, a.public_key, a.system, a.description, a.limits, a.jwt, a.jwt_id,
	a.jwt_version, a.pushed_version, a.keep_revocations, a.base_claims, a.created_at, a.updated_at,
	a.claims, `

// accountCols reads an account with its revocation and agent counts, for
// the API; lockedAccountCols leaves them out (zero): writers of the JWT and
// pushes lock the account often, and counting 10,000 agents each time is
// waste.
const (
	accountCols = accountBase + `(SELECT count(*) FROM revocations r WHERE r.account_id = a.id),
	(SELECT count(*) FROM agents g WHERE g.account_id = a.id)`
	lockedAccountCols = accountBase + `0::bigint, 0::bigint`
)

func scanAccount(row pgx.Row) (*rotatord.Account, error) {
	var a rotatord.Account
	err := row.Scan(&a.ID, &a.Name, &a.PublicKey, &a.System, &a.Description, &a.Limits, &a.JWT, &a.JWTID,
		&a.JWTVersion, &a.PushedVersion, &a.KeepRevocations, &a.BaseClaims, &a.CreatedAt, &a.UpdatedAt,
		&a.Claims, &a.Revocations, &a.Agents)
	return &a, err
}

// CreateAccount stores a new account and sets its ID and times. A taken name
// or key is ECONFLICT. Its first JWT counts as pushed: no server can have
// loaded an account that did not exist.
func (s *Store) CreateAccount(ctx context.Context, a *rotatord.Account) error {
	err := s.q(ctx).QueryRow(ctx, `
		INSERT INTO accounts (name, public_key, system, description, limits, jwt, jwt_id, pushed_version, keep_revocations, base_claims,
			claims)
		VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10)
		RETURNING id, jwt_version, pushed_version, created_at, updated_at`,
		a.Name, a.PublicKey, a.System, a.Description, a.Limits, a.JWT, a.JWTID, a.KeepRevocations, nullJSON(a.BaseClaims),
		claimsArg(a.Claims),
	).Scan(&a.ID, &a.JWTVersion, &a.PushedVersion, &a.CreatedAt, &a.UpdatedAt)
	if err != nil {
		return mapErr(fmt.Errorf("create account %s: %w", a.Name, err))
	}
	return nil
}

// FindAccountByName returns the named account or ENOTFOUND.
func (s *Store) FindAccountByName(ctx context.Context, name string) (*rotatord.Account, error) {
	a, err := scanAccount(s.q(ctx).QueryRow(ctx, `SELECT `+accountCols+` FROM accounts a WHERE a.name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("account", name)
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find account %s: %w", name, err))
	}
	return a, nil
}

// FindAccountByPublicKey returns the account with that identity key or ENOTFOUND.
func (s *Store) FindAccountByPublicKey(ctx context.Context, pub string) (*rotatord.Account, error) {
	a, err := scanAccount(s.q(ctx).QueryRow(ctx, `SELECT `+accountCols+` FROM accounts a WHERE a.public_key = $1`, pub))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("account", pub)
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find account %s: %w", pub, err))
	}
	return a, nil
}

// LockAccount reads an account and locks its row until the transaction in
// ctx ends. The lock is FOR NO KEY UPDATE: rows that reference the account
// (revocations, the re-sign queue) take KEY SHARE locks on it, which must
// not wait for, or be waited on by, a writer of its JWT. Revocations and
// Agents are not counted (left zero). Every write of an account's JWT holds this lock, which
// serializes them across replicas; so does every push, so an older JWT is
// never pushed after a newer one was stored.
func (s *Store) LockAccount(ctx context.Context, id int64) (*rotatord.Account, error) {
	if err := needTx(ctx, "lock account"); err != nil {
		return nil, err
	}
	a, err := scanAccount(s.q(ctx).QueryRow(ctx, `SELECT `+lockedAccountCols+` FROM accounts a WHERE a.id = $1 FOR NO KEY UPDATE OF a`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("account", fmt.Sprint(id))
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("lock account %d: %w", id, err))
	}
	return a, nil
}

// ListAccounts returns every account, ordered by name.
func (s *Store) ListAccounts(ctx context.Context) ([]*rotatord.Account, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT `+accountCols+` FROM accounts a ORDER BY a.name`)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list accounts: %w", err))
	}
	return collect(rows, "accounts", scanAccount)
}

// UpdateAccount stores a's description, limits, claims and newly signed
// JWT, and bumps its JWT version. Call it with the account locked. Nil
// claims leave the stored ones as they are.
func (s *Store) UpdateAccount(ctx context.Context, a *rotatord.Account) error {
	err := s.q(ctx).QueryRow(ctx, `
		UPDATE accounts SET description = $2, limits = $3, jwt = $4, jwt_id = $5, keep_revocations = $6,
			claims = coalesce($7, claims),
			jwt_version = jwt_version + 1, updated_at = now()
		WHERE id = $1 RETURNING jwt_version, updated_at`,
		a.ID, a.Description, a.Limits, a.JWT, a.JWTID, a.KeepRevocations, claimsArg(a.Claims)).Scan(&a.JWTVersion, &a.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound("account", a.Name)
	}
	if err != nil {
		return mapErr(fmt.Errorf("update account %s: %w", a.Name, err))
	}
	return nil
}

// DeleteAccount removes an account; ECONFLICT while it still has agents.
func (s *Store) DeleteAccount(ctx context.Context, id int64) error {
	tag, err := s.q(ctx).Exec(ctx, `DELETE FROM accounts WHERE id = $1`, id)
	if err != nil {
		return mapErr(fmt.Errorf("delete account %d: %w", id, err))
	}
	if tag.RowsAffected() == 0 {
		return notFound("account", fmt.Sprint(id))
	}
	return nil
}

// AccountJWT is what the resolver serves for one account.
type AccountJWT struct {
	PublicKey string
	JWT       string
	Version   int64
}

// AccountJWTs returns every account's current JWT, for the resolver cache.
func (s *Store) AccountJWTs(ctx context.Context) ([]AccountJWT, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT public_key, jwt, jwt_version FROM accounts`)
	if err != nil {
		return nil, mapErr(fmt.Errorf("load account jwts: %w", err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[AccountJWT])
	if err != nil {
		return nil, mapErr(fmt.Errorf("load account jwts: %w", err))
	}
	return out, nil
}

// FindAccountJWT returns one account's current JWT or ENOTFOUND.
func (s *Store) FindAccountJWT(ctx context.Context, pub string) (AccountJWT, error) {
	var j AccountJWT
	err := s.q(ctx).QueryRow(ctx, `SELECT public_key, jwt, jwt_version FROM accounts WHERE public_key = $1`, pub).
		Scan(&j.PublicKey, &j.JWT, &j.Version)
	if errors.Is(err, pgx.ErrNoRows) {
		return j, notFound("account", pub)
	}
	if err != nil {
		return j, mapErr(fmt.Errorf("find account jwt %s: %w", pub, err))
	}
	return j, nil
}

// MarkPushed records that version of the account's JWT reached the servers.
func (s *Store) MarkPushed(ctx context.Context, id, version int64) error {
	_, err := s.q(ctx).Exec(ctx, `UPDATE accounts SET pushed_version = greatest(pushed_version, $2) WHERE id = $1`, id, version)
	if err != nil {
		return mapErr(fmt.Errorf("mark account %d pushed: %w", id, err))
	}
	return nil
}

// ListPushOwed returns the IDs of accounts whose newest JWT no server has
// acknowledged yet.
func (s *Store) ListPushOwed(ctx context.Context) ([]int64, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT id FROM accounts WHERE pushed_version < jwt_version ORDER BY id`)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list owed pushes: %w", err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, mapErr(fmt.Errorf("list owed pushes: %w", err))
	}
	return ids, nil
}

// Revocations returns an account's revocation entries.
func (s *Store) Revocations(ctx context.Context, accountID int64) ([]rotatord.Revocation, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT public_key, revoked_at, expires_at, coalesce(agent_name, ''), reason, jwt_issued_at
		FROM revocations WHERE account_id = $1 ORDER BY public_key`, accountID)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list revocations: %w", err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[rotatord.Revocation])
	if err != nil {
		return nil, mapErr(fmt.Errorf("list revocations: %w", err))
	}
	return out, nil
}

// AddRevocations upserts entries; an existing entry keeps the later times.
// An entry whose IssuedAt is unknown (zero) records its RevokedAt instead,
// which is always safe to fold on (see rotatord.Revocation).
func (s *Store) AddRevocations(ctx context.Context, accountID int64, rs []rotatord.Revocation) error {
	n := len(rs)
	keys, agents, reasons := make([]string, n), make([]string, n), make([]string, n)
	revoked, expires, issued := make([]time.Time, n), make([]time.Time, n), make([]time.Time, n)
	for i, r := range rs {
		keys[i], agents[i], reasons[i] = r.PublicKey, r.Agent, r.Reason
		revoked[i], expires[i], issued[i] = dbTime(r.RevokedAt), dbTime(r.ExpiresAt), dbTime(r.IssuedAt)
		if r.IssuedAt.IsZero() {
			issued[i] = revoked[i]
		}
	}
	// One statement for the lot; a key listed twice keeps the latest times.
	_, err := s.q(ctx).Exec(ctx, `
		INSERT INTO revocations (account_id, public_key, revoked_at, expires_at, agent_name, reason, jwt_issued_at)
		SELECT $1, key, max(revoked), max(expires), nullif(max(agent), ''), max(reason), max(issued)
		FROM unnest($2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[], $6::text[], $7::timestamptz[])
			AS v(key, revoked, expires, agent, reason, issued)
		GROUP BY key
		ON CONFLICT (account_id, public_key) DO UPDATE SET
			revoked_at = greatest(revocations.revoked_at, excluded.revoked_at),
			expires_at = greatest(revocations.expires_at, excluded.expires_at),
			jwt_issued_at = greatest(revocations.jwt_issued_at, excluded.jwt_issued_at)`,
		accountID, keys, revoked, expires, agents, reasons, issued)
	if err != nil {
		return mapErr(fmt.Errorf("add %d revocations: %w", n, err))
	}
	return nil
}

// DeleteRevocationsExpiredBefore removes entries whose revoked JWTs have all
// expired by t, and returns how many went.
func (s *Store) DeleteRevocationsExpiredBefore(ctx context.Context, accountID int64, t time.Time) (int64, error) {
	tag, err := s.q(ctx).Exec(ctx, `DELETE FROM revocations WHERE account_id = $1 AND public_key <> '*' AND expires_at < $2`, accountID, dbTime(t))
	if err != nil {
		return 0, mapErr(fmt.Errorf("prune revocations: %w", err))
	}
	return tag.RowsAffected(), nil
}

// nullJSON stores empty JSON as NULL.
func nullJSON(b json.RawMessage) any {
	if len(b) == 0 {
		return nil
	}
	return []byte(b)
}
