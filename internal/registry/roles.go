package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

// The agent columns for its role and its other user claims (agentCols).
const (
	agentRoleCols = `g.claims, g.role_id, coalesce(r.name, ''),
	coalesce((SELECT sk.public_key FROM signing_keys sk WHERE sk.role_id = g.role_id AND sk.retired_at IS NULL AND NOT sk.staged
		ORDER BY sk.created_at DESC, sk.public_key DESC LIMIT 1), '')`
	agentRoleFrom = ` LEFT JOIN roles r ON r.id = g.role_id`
)

// agentClaims is the agents.claims column: the user claims beyond
// permissions, which have their own column.
type agentClaims struct {
	Limits          rotatord.UserLimits  `json:"limits"`
	Src             []string             `json:"src,omitempty"`
	Times           []rotatord.TimeRange `json:"times,omitempty"`
	TimesLocation   string               `json:"times_location,omitempty"`
	ConnectionTypes []string             `json:"connection_types,omitempty"`
	Tags            []string             `json:"tags,omitempty"`
}

func agentClaimsOf(g *rotatord.Agent) agentClaims {
	return agentClaims{Limits: g.Limits, Src: g.Src, Times: g.Times, TimesLocation: g.TimesLocation,
		ConnectionTypes: g.ConnectionTypes, Tags: g.Tags}
}

func scanAgentClaims(g *rotatord.Agent, raw []byte, roleID *int64) error {
	// Absent limits are unlimited (rows written before the column had them).
	c := agentClaims{Limits: rotatord.NoUserLimits}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &c); err != nil {
			return fmt.Errorf("decode claims of agent %s: %w", g.Name, err)
		}
	}
	g.Limits, g.Src, g.Times, g.TimesLocation = c.Limits, nonNil(c.Src), c.Times, c.TimesLocation
	g.ConnectionTypes, g.Tags = nonNil(c.ConnectionTypes), nonNil(c.Tags)
	if g.Times == nil {
		g.Times = []rotatord.TimeRange{}
	}
	if roleID != nil {
		g.RoleID = *roleID
	} else {
		g.Role, g.RoleKey = "", ""
	}
	return nil
}

// refreshRoles reads the role name and key of locked agents again, in a
// statement of its own: the ones joined by the locking read may be from
// before it waited for a lock (an agent moved to another role meanwhile).
func (s *Store) refreshRoles(ctx context.Context, gs []*rotatord.Agent) error {
	var ids []int64
	byID := map[int64]*rotatord.Agent{}
	for _, g := range gs {
		if g.RoleID != 0 {
			ids = append(ids, g.ID)
			byID[g.ID] = g
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT g.id, g.role_id, coalesce(r.name, ''),
		coalesce((SELECT sk.public_key FROM signing_keys sk WHERE sk.role_id = g.role_id AND sk.retired_at IS NULL AND NOT sk.staged
			ORDER BY sk.created_at DESC, sk.public_key DESC LIMIT 1), '')
		FROM agents g LEFT JOIN roles r ON r.id = g.role_id WHERE g.id = ANY($1)`, ids)
	if err != nil {
		return mapErr(fmt.Errorf("read roles of locked agents: %w", err))
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var roleID *int64
		var name, key string
		if err := rows.Scan(&id, &roleID, &name, &key); err != nil {
			return mapErr(fmt.Errorf("read roles of locked agents: %w", err))
		}
		g := byID[id]
		g.RoleID, g.Role, g.RoleKey = 0, name, key
		if roleID != nil {
			g.RoleID = *roleID
		}
	}
	if err := rows.Err(); err != nil {
		return mapErr(fmt.Errorf("read roles of locked agents: %w", err))
	}
	return nil
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

const roleCols = `r.id, r.account_id, a.name, a.public_key, r.name, r.description, r.template, r.created_at, r.updated_at,
	coalesce((SELECT array_agg(sk.public_key ORDER BY sk.created_at, sk.public_key) FROM signing_keys sk
		WHERE sk.role_id = r.id AND sk.retired_at IS NULL AND NOT sk.staged), '{}'),
	(SELECT count(*) FROM agents g WHERE g.role_id = r.id)`

const roleFrom = ` FROM roles r JOIN accounts a ON a.id = r.account_id`

func scanRole(row pgx.Row) (*rotatord.Role, error) {
	var r rotatord.Role
	var tmpl []byte
	err := row.Scan(&r.ID, &r.AccountID, &r.Account, &r.AccountKey, &r.Name, &r.Description, &tmpl, &r.CreatedAt, &r.UpdatedAt,
		&r.SigningKeys, &r.Agents)
	if err != nil {
		return nil, err
	}
	r.Template.Limits = rotatord.NoUserLimits
	if err := json.Unmarshal(tmpl, &r.Template); err != nil {
		return nil, fmt.Errorf("decode template of role %s: %w", r.Name, err)
	}
	r.Template = r.Template.Normalize()
	return &r, nil
}

// CreateRole stores a new role of an account and sets its ID and times. A
// name taken in the account is ECONFLICT.
func (s *Store) CreateRole(ctx context.Context, r *rotatord.Role) error {
	err := s.q(ctx).QueryRow(ctx, `INSERT INTO roles (account_id, name, description, template)
		VALUES ($1, $2, $3, $4) RETURNING id, created_at, updated_at`,
		r.AccountID, r.Name, r.Description, r.Template.Normalize()).Scan(&r.ID, &r.CreatedAt, &r.UpdatedAt)
	if err != nil {
		return mapErr(fmt.Errorf("create role %s: %w", r.Name, err))
	}
	return nil
}

// AddRoleSigningKey stores a scoped signing key of a role (an account-kind
// key) with its encrypted seed.
func (s *Store) AddRoleSigningKey(ctx context.Context, r *rotatord.Role, pub string, seedEnc []byte) error {
	_, err := s.q(ctx).Exec(ctx, `INSERT INTO signing_keys (public_key, owner_kind, account_id, role_id, seed_enc)
		VALUES ($1, 'role', $2, $3, $4)`, pub, r.AccountID, r.ID, seedEnc)
	if err != nil {
		return mapErr(fmt.Errorf("add signing key of role %s: %w", r.Name, err))
	}
	r.SigningKeys = append(r.SigningKeys, pub)
	return nil
}

// FindRole returns the named role of an account, or ENOTFOUND.
func (s *Store) FindRole(ctx context.Context, accountID int64, name string) (*rotatord.Role, error) {
	return s.findRole(ctx, accountID, name, "")
}

// LockRole reads a role and locks its row until the transaction in ctx
// ends (FOR NO KEY UPDATE: agents referencing it are not blocked).
func (s *Store) LockRole(ctx context.Context, accountID int64, name string) (*rotatord.Role, error) {
	if err := needTx(ctx, "lock role"); err != nil {
		return nil, err
	}
	return s.findRole(ctx, accountID, name, " FOR NO KEY UPDATE OF r")
}

// ShareRole reads a role and holds a share lock on it until the
// transaction in ctx ends, so that its template cannot change while an
// agent is checked against it and joins it.
func (s *Store) ShareRole(ctx context.Context, accountID int64, name string) (*rotatord.Role, error) {
	if err := needTx(ctx, "share role"); err != nil {
		return nil, err
	}
	return s.findRole(ctx, accountID, name, " FOR SHARE OF r")
}

func (s *Store) findRole(ctx context.Context, accountID int64, name, lock string) (*rotatord.Role, error) {
	r, err := scanRole(s.q(ctx).QueryRow(ctx, `SELECT `+roleCols+roleFrom+` WHERE r.account_id = $1 AND r.name = $2`+lock, accountID, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("role", name)
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find role %s: %w", name, err))
	}
	return r, nil
}

// ListRoles returns an account's roles ordered by name.
func (s *Store) ListRoles(ctx context.Context, accountID int64) ([]*rotatord.Role, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT `+roleCols+roleFrom+` WHERE r.account_id = $1 ORDER BY r.name`, accountID)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list roles: %w", err))
	}
	return collect(rows, "roles", scanRole)
}

// UpdateRole stores r's description and template.
func (s *Store) UpdateRole(ctx context.Context, r *rotatord.Role) error {
	err := s.q(ctx).QueryRow(ctx, `UPDATE roles SET description = $2, template = $3, updated_at = now()
		WHERE id = $1 RETURNING updated_at`, r.ID, r.Description, r.Template.Normalize()).Scan(&r.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound("role", r.Name)
	}
	if err != nil {
		return mapErr(fmt.Errorf("update role %s: %w", r.Name, err))
	}
	return nil
}

// DeleteRole removes a role and its keys (their sealed seeds go with
// them). A role that agents still reference is ECONFLICT.
func (s *Store) DeleteRole(ctx context.Context, id int64) error {
	tag, err := s.q(ctx).Exec(ctx, `DELETE FROM roles WHERE id = $1`, id)
	if err != nil {
		return mapErr(fmt.Errorf("delete role %d: %w", id, err))
	}
	if tag.RowsAffected() == 0 {
		return notFound("role", fmt.Sprint(id))
	}
	return nil
}

// RoleAgents returns the agents of a role, ordered by name.
func (s *Store) RoleAgents(ctx context.Context, roleID int64) ([]*rotatord.Agent, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT `+agentCols+agentFrom+` WHERE g.role_id = $1 ORDER BY g.name`, roleID)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list agents of role %d: %w", roleID, err))
	}
	return collect(rows, "agents", scanAgent)
}

// CountValidSignedBy counts the agents with a pending or active credential
// signed by one of the keys.
func (s *Store) CountValidSignedBy(ctx context.Context, keys []string) (int, error) {
	var n int
	err := s.q(ctx).QueryRow(ctx, `SELECT count(DISTINCT agent_id) FROM credentials
		WHERE signing_key = ANY($1) AND state IN ('pending', 'active')`, keys).Scan(&n)
	if err != nil {
		return 0, mapErr(fmt.Errorf("count credentials by signing key: %w", err))
	}
	return n, nil
}

// SigningKeySeed returns the encrypted seed of a live signing key (of the
// operator, an account or a role) by its public key, or ENOTFOUND. Inside a
// transaction it locks the key as SigningKey does.
func (s *Store) SigningKeySeed(ctx context.Context, pub string) ([]byte, error) {
	var enc []byte
	err := s.q(ctx).QueryRow(ctx, `SELECT seed_enc FROM signing_keys WHERE public_key = $1 AND retired_at IS NULL`+keyShare(ctx), pub).Scan(&enc)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, rotatord.Errorf(rotatord.ENOTFOUND, "no live signing key %s", pub)
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("read signing key %s: %w", pub, err))
	}
	return enc, nil
}
