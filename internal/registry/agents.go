package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

const agentCols = `g.id, g.account_id, a.name, a.public_key, g.name, g.permissions, g.schedule, g.grace_seconds,
	g.delivery, g.state, g.next_rotation_at, g.failures, g.created_at, g.updated_at,
	c.id, c.public_key, c.jwt, c.jwt_id, c.issued_at, c.expires_at, c.signing_key, ` + agentRoleCols

const agentFrom = ` FROM agents g JOIN accounts a ON a.id = g.account_id
	LEFT JOIN credentials c ON c.agent_id = g.id AND c.state = 'active'` + agentRoleFrom

func scanAgent(row pgx.Row) (*rotatord.Agent, error) {
	var (
		g             rotatord.Agent
		grace         int32
		delivery      string
		credID        *int64
		pub, jwt, jti *string
		iat, exp      *time.Time
		signer        *string
		claims        []byte
		roleID        *int64
	)
	err := row.Scan(&g.ID, &g.AccountID, &g.Account, &g.AccountKey, &g.Name, &g.Permissions, &g.Rotation.Schedule, &grace,
		&delivery, &g.State, &g.NextRotationAt, &g.Failures, &g.CreatedAt, &g.UpdatedAt,
		&credID, &pub, &jwt, &jti, &iat, &exp, &signer, &claims, &roleID, &g.Role, &g.RoleKey)
	if err != nil {
		return nil, err
	}
	if err := scanAgentClaims(&g, claims, roleID); err != nil {
		return nil, err
	}
	g.Rotation.Grace = time.Duration(grace) * time.Second
	g.Delivery = rotatord.Delivery(delivery)
	g.Permissions = g.Permissions.Normalize()
	if credID != nil {
		g.Active = &rotatord.Credential{ID: *credID, AgentID: g.ID, PublicKey: *pub, JWT: *jwt, JWTID: *jti,
			IssuedAt: *iat, ExpiresAt: *exp, State: rotatord.CredentialActive, SigningKey: deref(signer)}
	}
	return &g, nil
}

// CreateAgent stores a new agent and sets its ID and times. A taken name is ECONFLICT.
func (s *Store) CreateAgent(ctx context.Context, g *rotatord.Agent) error {
	err := s.q(ctx).QueryRow(ctx, `
		INSERT INTO agents (account_id, name, permissions, schedule, grace_seconds, delivery, state, next_rotation_at, claims, role_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id, created_at, updated_at`,
		g.AccountID, g.Name, g.Permissions.Normalize(), g.Rotation.Schedule, int32(g.Rotation.Grace/time.Second),
		string(g.Delivery), g.State, g.NextRotationAt, agentClaimsOf(g), idPtr(g.RoleID),
	).Scan(&g.ID, &g.CreatedAt, &g.UpdatedAt)
	if err != nil {
		return mapErr(fmt.Errorf("create agent %s: %w", g.Name, err))
	}
	return nil
}

// FindAgentByName returns the named agent with its active credential, or ENOTFOUND.
func (s *Store) FindAgentByName(ctx context.Context, name string) (*rotatord.Agent, error) {
	g, err := scanAgent(s.q(ctx).QueryRow(ctx, `SELECT `+agentCols+agentFrom+` WHERE g.name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("agent", name)
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find agent %s: %w", name, err))
	}
	return g, nil
}

// LockAgent reads an agent and locks its row until the transaction in ctx ends.
func (s *Store) LockAgent(ctx context.Context, name string) (*rotatord.Agent, error) {
	if err := needTx(ctx, "lock agent"); err != nil {
		return nil, err
	}
	// Lock first, then read in a statement of its own: under READ COMMITTED
	// a locking read that waited re-checks only the locked row, and the
	// joined credential would be the one from before the wait (a key a
	// concurrent completion retired meanwhile).
	var id int64
	err := s.q(ctx).QueryRow(ctx, `SELECT id FROM agents WHERE name = $1 FOR NO KEY UPDATE`, name).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("agent", name)
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("lock agent %s: %w", name, err))
	}
	g, err := scanAgent(s.q(ctx).QueryRow(ctx, `SELECT `+agentCols+agentFrom+` WHERE g.id = $1`, id))
	if err != nil {
		return nil, mapErr(fmt.Errorf("read locked agent %s: %w", name, err))
	}
	return g, nil
}

// ForgetSeed drops the sealed seed of a credential (delivered elsewhere).
func (s *Store) ForgetSeed(ctx context.Context, id int64) error {
	if _, err := s.q(ctx).Exec(ctx, `UPDATE credentials SET seed_enc = NULL WHERE id = $1 AND seed_enc IS NOT NULL`, id); err != nil {
		return mapErr(fmt.Errorf("forget seed of credential %d: %w", id, err))
	}
	return nil
}

// ListAgents returns agents ordered by name.
func (s *Store) ListAgents(ctx context.Context, f rotatord.AgentFilter) ([]*rotatord.Agent, error) {
	limit := any(nil)
	if f.Limit > 0 {
		limit = f.Limit
	}
	outcomes := f.Outcomes
	if outcomes == nil {
		outcomes = []string{}
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT `+agentCols+agentFrom+`
		WHERE ($1 = '' OR a.name = $1) AND g.name > $2`+agentFilterSQL+` ORDER BY g.name LIMIT $3`,
		f.Account, f.After, limit, f.State, f.Search, outcomes)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list agents: %w", err))
	}
	return collect(rows, "agents", scanAgent)
}

// UpdateAgent stores g's permissions and other user claims, role, rotation
// policy, delivery, state, next rotation time and failure count.
func (s *Store) UpdateAgent(ctx context.Context, g *rotatord.Agent) error {
	err := s.q(ctx).QueryRow(ctx, `
		UPDATE agents SET permissions = $2, schedule = $3, grace_seconds = $4, delivery = $5, state = $6,
			next_rotation_at = $7, failures = $8, claims = $9, role_id = $10, updated_at = now()
		WHERE id = $1 RETURNING updated_at`,
		g.ID, g.Permissions.Normalize(), g.Rotation.Schedule, int32(g.Rotation.Grace/time.Second), string(g.Delivery),
		g.State, g.NextRotationAt, g.Failures, agentClaimsOf(g), idPtr(g.RoleID)).Scan(&g.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound("agent", g.Name)
	}
	if err != nil {
		return mapErr(fmt.Errorf("update agent %s: %w", g.Name, err))
	}
	return nil
}

// DeleteAgent removes an agent and its credentials and rotations.
func (s *Store) DeleteAgent(ctx context.Context, id int64) error {
	tag, err := s.q(ctx).Exec(ctx, `DELETE FROM agents WHERE id = $1`, id)
	if err != nil {
		return mapErr(fmt.Errorf("delete agent %d: %w", id, err))
	}
	if tag.RowsAffected() == 0 {
		return notFound("agent", fmt.Sprint(id))
	}
	return nil
}

const credentialCols = `id, agent_id, public_key, jwt, jwt_id, issued_at, expires_at, state, seed_enc, revoked_at, signing_key`

func scanCredential(row pgx.Row) (*rotatord.Credential, error) {
	var c rotatord.Credential
	var signer *string
	err := row.Scan(&c.ID, &c.AgentID, &c.PublicKey, &c.JWT, &c.JWTID, &c.IssuedAt, &c.ExpiresAt, &c.State, &c.SeedEnc, &c.RevokedAt, &signer)
	c.SigningKey = deref(signer)
	return &c, err
}

// CreateCredential stores a credential and sets its ID. A key already used
// anywhere is ECONFLICT.
func (s *Store) CreateCredential(ctx context.Context, c *rotatord.Credential) error {
	return s.CreateCredentials(ctx, []*rotatord.Credential{c})
}

// Credentials returns an agent's credentials in the given states (all when
// none are given), newest first.
func (s *Store) Credentials(ctx context.Context, agentID int64, states ...string) ([]*rotatord.Credential, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT `+credentialCols+` FROM credentials
		WHERE agent_id = $1 AND (cardinality($2::text[]) = 0 OR state = ANY($2)) ORDER BY issued_at DESC, id DESC`, agentID, states)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list credentials: %w", err))
	}
	return collect(rows, "credentials", scanCredential)
}

// FindCredentialByPublicKey returns the credential of a user key, or ENOTFOUND.
func (s *Store) FindCredentialByPublicKey(ctx context.Context, pub string) (*rotatord.Credential, error) {
	c, err := scanCredential(s.q(ctx).QueryRow(ctx, `SELECT `+credentialCols+` FROM credentials WHERE public_key = $1`, pub))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("credential", pub)
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find credential %s: %w", pub, err))
	}
	return c, nil
}

// FindAgentKey reads, in one round trip, the credential of key pub, the
// agent named name, the agent's rotation in flight and that rotation's new
// credential: the agent API asks this of every request, and thousands of
// agents ask at once when their servers drop them. A key or agent that does
// not exist is ENOTFOUND; whether the key is the agent's is for the caller
// to check (Presented.AgentID).
func (s *Store) FindAgentKey(ctx context.Context, name, pub string) (*rotatord.AgentKey, error) {
	var k rotatord.AgentKey
	const inFlight = `r.agent_id = (SELECT id FROM agents WHERE name = $1) AND r.state IN ('issued', 'distributed', 'confirmed')`
	b := &pgx.Batch{}
	queueRow(b, &k.Presented, scanCredential, `SELECT `+credentialCols+` FROM credentials WHERE public_key = $1`, pub)
	queueRow(b, &k.Agent, scanAgent, `SELECT `+agentCols+agentFrom+` WHERE g.name = $1`, name)
	queueRow(b, &k.InFlight, scanRotation, `SELECT `+rotationCols+rotationFrom+` WHERE `+inFlight, name)
	queueRow(b, &k.Next, scanCredential, `SELECT `+credentialCols+` FROM credentials
		WHERE id = (SELECT r.new_credential_id FROM rotations r WHERE `+inFlight+`)`, name)
	if err := s.q(ctx).SendBatch(ctx, b).Close(); err != nil {
		return nil, mapErr(fmt.Errorf("find key %s of agent %s: %w", pub, name, err))
	}
	if k.Presented == nil {
		return nil, notFound("credential", pub)
	}
	if k.Agent == nil {
		return nil, notFound("agent", name)
	}
	if k.InFlight == nil || k.Next == nil || k.Next.ID != k.InFlight.NewCredentialID {
		// The rotation changed between the two reads: read it again later.
		k.Next = nil
	}
	return &k, nil
}

// queueRow queues a query of at most one row on b: its row, scanned, goes
// to *dst; no row leaves *dst nil.
func queueRow[T any](b *pgx.Batch, dst **T, scan func(pgx.Row) (*T, error), sql string, args ...any) {
	b.Queue(sql, args...).QueryRow(func(row pgx.Row) error {
		v, err := scan(row)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err == nil {
			*dst = v
		}
		return err
	})
}

// SetCredentialState moves a credential to state; for retired and revoked
// states it records when, and it always forgets the seed once the credential
// leaves pending.
func (s *Store) SetCredentialState(ctx context.Context, id int64, state string, at time.Time) error {
	_, err := s.q(ctx).Exec(ctx, `
		UPDATE credentials SET state = $2,
			revoked_at = CASE WHEN $2 IN ('retired', 'revoked') THEN $3 ELSE revoked_at END,
			seed_enc = CASE WHEN $2 = 'pending' THEN seed_enc ELSE NULL END
		WHERE id = $1`, id, state, dbTime(at))
	if err != nil {
		return mapErr(fmt.Errorf("set credential %d %s: %w", id, state, err))
	}
	return nil
}

// OldestValidIssuedAt reports the earliest issued_at among the account's
// credentials that nats-server must still accept: pending or active, and
// not expired before notExpiredAt (an expired JWT is refused anyway, so an
// agent that has been away for days does not hold folding back). ok is
// false when there are none.
func (s *Store) OldestValidIssuedAt(ctx context.Context, accountID int64, notExpiredAt time.Time) (t time.Time, ok bool, err error) {
	// Walking valid credentials from the oldest (credentials_valid_issued)
	// finds the first one of the account without visiting the others.
	err = s.q(ctx).QueryRow(ctx, `SELECT c.issued_at FROM credentials c JOIN agents g ON g.id = c.agent_id
		WHERE g.account_id = $1 AND c.state IN ('pending', 'active') AND c.expires_at >= $2
		ORDER BY c.issued_at LIMIT 1`, accountID, dbTime(notExpiredAt)).Scan(&t)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, mapErr(fmt.Errorf("oldest valid credential: %w", err))
	}
	return t, true, nil
}
