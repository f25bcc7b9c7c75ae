package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

// FindKeyOwner returns the agent (with its account's name and key) and the
// credential of a user public key, for attributing an authentication
// failure. When the credential row is gone (its agent was deleted) but the
// account still revokes the key, it returns what the revocation entry
// records: an agent with only Name, Account and AccountKey set (Name may be
// empty) and a credential without a JWT ID, in state retired when a
// rotation replaced it and revoked otherwise. That fallback
// is looked up only in the account accountKey (an account public key, from
// the presented JWT's issuer), which keeps it on the revocations' primary
// key; pass "" to skip it. An unknown key is ENOTFOUND.
func (s *Store) FindKeyOwner(ctx context.Context, pub, accountKey string) (*rotatord.Agent, *rotatord.Credential, error) {
	var (
		g rotatord.Agent
		c = rotatord.Credential{PublicKey: pub}
	)
	err := s.q(ctx).QueryRow(ctx, `SELECT g.id, g.name, g.state, a.id, a.name, a.public_key,
			c.id, c.jwt_id, c.issued_at, c.expires_at, c.state, c.revoked_at
		FROM credentials c JOIN agents g ON g.id = c.agent_id JOIN accounts a ON a.id = g.account_id
		WHERE c.public_key = $1`, pub).Scan(&g.ID, &g.Name, &g.State, &g.AccountID, &g.Account, &g.AccountKey,
		&c.ID, &c.JWTID, &c.IssuedAt, &c.ExpiresAt, &c.State, &c.RevokedAt)
	if err == nil {
		c.AgentID = g.ID
		return &g, &c, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, mapErr(fmt.Errorf("find owner of key %s: %w", pub, err))
	}
	if accountKey == "" {
		return nil, nil, notFound("key", pub)
	}
	var revokedAt time.Time
	var reason string
	err = s.q(ctx).QueryRow(ctx, `SELECT coalesce(r.agent_name, ''), a.id, a.name, a.public_key, r.revoked_at, r.expires_at, r.reason
		FROM revocations r JOIN accounts a ON a.id = r.account_id
		WHERE a.public_key = $1 AND r.public_key = $2`, accountKey, pub).Scan(&g.Name, &g.AccountID, &g.Account, &g.AccountKey,
		&revokedAt, &c.ExpiresAt, &reason)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, notFound("key", pub)
	}
	if err != nil {
		return nil, nil, mapErr(fmt.Errorf("find revocation of key %s: %w", pub, err))
	}
	c.State = rotatord.CredentialRevoked
	if reason == rotatord.RevocationRotated {
		// Replaced by a rotation before its agent went.
		c.State = rotatord.CredentialRetired
	}
	c.RevokedAt = &revokedAt
	return &g, &c, nil
}
