package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

// The reads of the fleet console: agents by state, name and the outcome of
// their newest rotation, the newest rotation of a page of agents, alerts,
// revocation entries and an agent's keys, each a page at a time and newest
// first. Each is bounded by its page and served by an index.

// agentFilterSQL is the part of ListAgents' WHERE for AgentFilter's State
// ($4), Search ($5) and Outcomes ($6). The name search is a substring match
// on at most the whole agents table (a sequential scan of names: about 2 ms
// for 10,000 agents); the outcome looks up each candidate's newest
// rotation through rotations_agent.
const agentFilterSQL = `
		AND ($4 = '' OR g.state = $4)
		AND ($5 = '' OR strpos(lower(g.name), lower($5)) > 0)
		AND (cardinality($6::text[]) = 0 OR coalesce((SELECT r.state FROM rotations r WHERE r.agent_id = g.id
			ORDER BY r.created_at DESC, r.id DESC LIMIT 1), 'none') = ANY($6::text[]))`

// LastRotations returns the newest rotation of each of the agents, keyed by
// agent ID; agents without one are absent.
func (s *Store) LastRotations(ctx context.Context, agentIDs []int64) (map[int64]*rotatord.Rotation, error) {
	out := make(map[int64]*rotatord.Rotation, len(agentIDs))
	if len(agentIDs) == 0 {
		return out, nil
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT `+rotationCols+`
		FROM unnest($1::bigint[]) AS ids (id)
		CROSS JOIN LATERAL (SELECT * FROM rotations r WHERE r.agent_id = ids.id
			ORDER BY r.created_at DESC, r.id DESC LIMIT 1) r
		JOIN agents g ON g.id = r.agent_id JOIN accounts a ON a.id = g.account_id`, agentIDs)
	if err != nil {
		return nil, mapErr(fmt.Errorf("find last rotations: %w", err))
	}
	list, err := collectRotations(rows)
	if err != nil {
		return nil, err
	}
	for _, r := range list {
		out[r.AgentID] = r
	}
	return out, nil
}

// ListAlertsBy returns the alerts matching f, newest first.
func (s *Store) ListAlertsBy(ctx context.Context, f rotatord.AlertFilter) ([]*rotatord.Alert, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT id, kind, severity, account, agent, coalesce(rotation_id::text, ''), reason, created_at
		FROM alerts
		WHERE ($1 = '' OR kind = $1) AND ($2 = '' OR severity = $2) AND ($3 = '' OR account = $3)
		  AND ($4 = '' OR agent = $4) AND ($5::bigint = 0 OR id < $5)
		ORDER BY id DESC LIMIT $6`, f.Kind, f.Severity, f.Account, f.Agent, f.BeforeID, limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list alerts: %w", err))
	}
	return collect(rows, "alerts", func(row pgx.Row) (*rotatord.Alert, error) {
		var a rotatord.Alert
		err := row.Scan(&a.ID, &a.Kind, &a.Severity, &a.Account, &a.Agent, &a.Rotation, &a.Reason, &a.CreatedAt)
		return &a, err
	})
}

// ListRevocationsPage returns a page of the account's revocation entries,
// newest first (by the time they revoke from, then by key); f.After is the
// key of the last entry of the previous page. A key that is not an entry of
// the account (any more: entries are pruned and folded) is EINVALID.
func (s *Store) ListRevocationsPage(ctx context.Context, accountID int64, f rotatord.PageFilter) ([]rotatord.Revocation, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	if f.After != "" {
		var n int
		err := s.q(ctx).QueryRow(ctx, `SELECT 1 FROM revocations WHERE account_id = $1 AND public_key = $2`, accountID, f.After).Scan(&n)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, rotatord.Errorf(rotatord.EINVALID, "after %.60q is not a revocation entry of the account (it may have been pruned): start again from the first page", f.After)
		}
		if err != nil {
			return nil, mapErr(fmt.Errorf("list revocations: %w", err))
		}
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT public_key, revoked_at, expires_at, coalesce(agent_name, ''), reason, jwt_issued_at
		FROM revocations
		WHERE account_id = $1 AND ($2 = '' OR (revoked_at, public_key) <
			(SELECT revoked_at, public_key FROM revocations WHERE account_id = $1 AND public_key = $2))
		ORDER BY revoked_at DESC, public_key DESC LIMIT $3`, accountID, f.After, limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list revocations: %w", err))
	}
	defer rows.Close()
	var out []rotatord.Revocation
	for rows.Next() {
		var r rotatord.Revocation
		if err := rows.Scan(&r.PublicKey, &r.RevokedAt, &r.ExpiresAt, &r.Agent, &r.Reason, &r.IssuedAt); err != nil {
			return nil, mapErr(fmt.Errorf("list revocations: %w", err))
		}
		if r.IssuedAt.Equal(time.Unix(0, 0)) {
			r.IssuedAt = time.Time{}
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(fmt.Errorf("list revocations: %w", err))
	}
	return out, nil
}

// ListKeys returns a page of an agent's user keys, newest first; f.After is
// the public key of the last one of the previous page. Seeds are not read.
func (s *Store) ListKeys(ctx context.Context, agentID int64, f rotatord.PageFilter) ([]*rotatord.KeyInfo, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	if f.After != "" {
		var n int
		err := s.q(ctx).QueryRow(ctx, `SELECT 1 FROM credentials WHERE agent_id = $1 AND public_key = $2`, agentID, f.After).Scan(&n)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, rotatord.Errorf(rotatord.EINVALID, "after %.60q is not a key of the agent", f.After)
		}
		if err != nil {
			return nil, mapErr(fmt.Errorf("list keys: %w", err))
		}
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT public_key, jwt_id, state, issued_at, expires_at, revoked_at
		FROM credentials
		WHERE agent_id = $1 AND ($2 = '' OR (issued_at, id) < (SELECT issued_at, id FROM credentials WHERE public_key = $2))
		ORDER BY issued_at DESC, id DESC LIMIT $3`, agentID, f.After, limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list keys: %w", err))
	}
	return collect(rows, "keys", func(row pgx.Row) (*rotatord.KeyInfo, error) {
		var k rotatord.KeyInfo
		err := row.Scan(&k.PublicKey, &k.JWTID, &k.State, &k.IssuedAt, &k.ExpiresAt, &k.RevokedAt)
		return &k, err
	})
}
