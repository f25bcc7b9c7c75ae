package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/rotatord/rotatord"
)

// Multi-row statements for the rotation engine: a scheduled wave starts,
// and reconnects complete, dozens of rotations per transaction, and one
// statement per step instead of one per rotation is what keeps PostgreSQL
// from being the bottleneck of a fleet-wide rotation.

// LockDueAgents locks those of the named agents that are active, due at
// now and have no rotation in flight, in ID order (the same order every
// batch locks in). Agents another transaction holds are skipped: their
// rotation is being handled.
func (s *Store) LockDueAgents(ctx context.Context, names []string, now time.Time) ([]*rotatord.Agent, error) {
	if err := needTx(ctx, "lock due agents"); err != nil {
		return nil, err
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT `+agentCols+agentFrom+`
		WHERE g.name = ANY($1) AND g.state = 'active' AND g.next_rotation_at <= $2
		  AND NOT EXISTS (SELECT 1 FROM rotations r WHERE r.agent_id = g.id AND r.state IN ('issued', 'distributed', 'confirmed'))
		ORDER BY g.id FOR NO KEY UPDATE OF g SKIP LOCKED`, names, dbTime(now))
	if err != nil {
		return nil, mapErr(fmt.Errorf("lock due agents: %w", err))
	}
	list, err := collect(rows, "agents", scanAgent)
	if err != nil {
		return nil, err
	}
	return list, s.refreshActive(ctx, list)
}

// refreshActive reads the active credentials (and roles) of locked agents
// again, in a statement of its own: the ones joined by the locking read may
// be from before it waited for a lock (READ COMMITTED re-checks only
// locked rows).
func (s *Store) refreshActive(ctx context.Context, gs []*rotatord.Agent) error {
	if len(gs) == 0 {
		return nil
	}
	ids := make([]int64, len(gs))
	byID := make(map[int64]*rotatord.Agent, len(gs))
	for i, g := range gs {
		ids[i], byID[g.ID] = g.ID, g
		g.Active = nil
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT `+credentialCols+` FROM credentials WHERE agent_id = ANY($1) AND state = 'active'`, ids)
	if err != nil {
		return mapErr(fmt.Errorf("read active credentials: %w", err))
	}
	creds, err := collect(rows, "credentials", scanCredential)
	if err != nil {
		return err
	}
	for _, c := range creds {
		c.SeedEnc = nil
		byID[c.AgentID].Active = c
	}
	return s.refreshRoles(ctx, gs)
}

// LockAgentsByID locks agents in ID order and returns them by ID.
func (s *Store) LockAgentsByID(ctx context.Context, ids []int64) (map[int64]*rotatord.Agent, error) {
	if err := needTx(ctx, "lock agents"); err != nil {
		return nil, err
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT `+agentCols+agentFrom+` WHERE g.id = ANY($1) ORDER BY g.id FOR NO KEY UPDATE OF g`, ids)
	if err != nil {
		return nil, mapErr(fmt.Errorf("lock agents: %w", err))
	}
	list, err := collect(rows, "agents", scanAgent)
	if err != nil {
		return nil, err
	}
	if err := s.refreshActive(ctx, list); err != nil {
		return nil, err
	}
	out := make(map[int64]*rotatord.Agent, len(list))
	for _, g := range list {
		out[g.ID] = g
	}
	return out, nil
}

// LockRotations locks the rotations with the given IDs, skipping those
// another transaction holds (someone else is working on them).
func (s *Store) LockRotations(ctx context.Context, ids []string) ([]*rotatord.Rotation, error) {
	if err := needTx(ctx, "lock rotations"); err != nil {
		return nil, err
	}
	valid := make([]string, 0, len(ids))
	for _, id := range ids {
		if isUUID(id) {
			valid = append(valid, id)
		}
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT `+rotationCols+rotationFrom+` WHERE r.id = ANY($1::uuid[])
		ORDER BY r.id FOR NO KEY UPDATE OF r SKIP LOCKED`, valid)
	if err != nil {
		return nil, mapErr(fmt.Errorf("lock rotations: %w", err))
	}
	return collectRotations(rows)
}

// FindCredentials returns credentials by ID.
func (s *Store) FindCredentials(ctx context.Context, ids []int64) (map[int64]*rotatord.Credential, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT `+credentialCols+` FROM credentials WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, mapErr(fmt.Errorf("find credentials: %w", err))
	}
	list, err := collect(rows, "credentials", scanCredential)
	if err != nil {
		return nil, err
	}
	out := make(map[int64]*rotatord.Credential, len(list))
	for _, c := range list {
		out[c.ID] = c
	}
	return out, nil
}

// CreateCredentials stores credentials and sets their IDs. A key already
// used anywhere is ECONFLICT.
func (s *Store) CreateCredentials(ctx context.Context, cs []*rotatord.Credential) error {
	n := len(cs)
	agents, keys, jwts, jtis, states := make([]int64, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	iats, exps, seeds, signers := make([]time.Time, n), make([]time.Time, n), make([][]byte, n), make([]*string, n)
	byKey := make(map[string]*rotatord.Credential, n)
	for i, c := range cs {
		agents[i], keys[i], jwts[i], jtis[i], states[i] = c.AgentID, c.PublicKey, c.JWT, c.JWTID, c.State
		iats[i], exps[i], seeds[i] = dbTime(c.IssuedAt), dbTime(c.ExpiresAt), c.SeedEnc
		if c.SigningKey != "" {
			signers[i] = &c.SigningKey
		}
		byKey[c.PublicKey] = c
	}
	rows, err := s.q(ctx).Query(ctx, `
		INSERT INTO credentials (agent_id, public_key, jwt, jwt_id, issued_at, expires_at, state, seed_enc, signing_key)
		SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::text[], $8::bytea[], $9::text[])
		RETURNING public_key, id`, agents, keys, jwts, jtis, iats, exps, states, seeds, signers)
	if err != nil {
		return mapErr(fmt.Errorf("create %d credentials: %w", n, err))
	}
	defer rows.Close()
	for rows.Next() {
		var key string
		var id int64
		if err := rows.Scan(&key, &id); err != nil {
			return mapErr(fmt.Errorf("create credentials: %w", err))
		}
		byKey[key].ID = id
	}
	if err := rows.Err(); err != nil {
		return mapErr(fmt.Errorf("create %d credentials: %w", n, err))
	}
	return nil
}

// CreateRotations stores new rotations (in the state they are given, with
// their deadline and delivery fields) and sets their IDs and times. While
// another rotation of an agent is in flight it fails with ECONFLICT: the
// database, not memory, keeps one rotation per agent.
func (s *Store) CreateRotations(ctx context.Context, rs []*rotatord.Rotation) error {
	n := len(rs)
	agents, states, triggers, olds, news, refs := make([]int64, n), make([]string, n), make([]string, n), make([]*string, n), make([]string, n), make([]string, n)
	oldIDs, newIDs := make([]*int64, n), make([]*int64, n)
	deadlines, distributed := make([]*time.Time, n), make([]*time.Time, n)
	byKey := make(map[string]*rotatord.Rotation, n)
	for i, r := range rs {
		agents[i], states[i], triggers[i], news[i], refs[i] = r.AgentID, r.State, r.Trigger, r.NewKey, r.DeliveryRef
		if r.OldKey != "" {
			olds[i] = &r.OldKey
		}
		oldIDs[i], newIDs[i] = idPtr(r.OldCredentialID), idPtr(r.NewCredentialID)
		deadlines[i], distributed[i] = timePtr(r.Deadline), timePtr(r.DistributedAt)
		byKey[r.NewKey] = r
	}
	rows, err := s.q(ctx).Query(ctx, `
		INSERT INTO rotations (agent_id, state, trigger, old_public_key, new_public_key, old_credential_id, new_credential_id,
			deadline, distributed_at, delivery_ref)
		SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[],
			$8::timestamptz[], $9::timestamptz[], $10::text[])
		RETURNING new_public_key, id::text, created_at, updated_at`,
		agents, states, triggers, olds, news, oldIDs, newIDs, deadlines, distributed, refs)
	if err != nil {
		return mapErr(fmt.Errorf("create %d rotations: %w", n, err))
	}
	defer rows.Close()
	for rows.Next() {
		var key, id string
		var created, updated time.Time
		if err := rows.Scan(&key, &id, &created, &updated); err != nil {
			return mapErr(fmt.Errorf("create rotations: %w", err))
		}
		r := byKey[key]
		r.ID, r.CreatedAt, r.UpdatedAt = id, created, updated
	}
	if err := rows.Err(); err != nil {
		return mapErr(fmt.Errorf("create %d rotations: %w", n, err))
	}
	return nil
}

// UpdateRotations stores the state and progress fields of rotations. A
// rotation's ResignVersion is stored only where none is stored yet (as
// SetResignVersion does), and only when not zero: it is never cleared.
func (s *Store) UpdateRotations(ctx context.Context, rs []*rotatord.Rotation) error {
	n := len(rs)
	ids, states, by, refs, reasons := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	deadlines, distributed, confirmed, finished := make([]*time.Time, n), make([]*time.Time, n), make([]*time.Time, n), make([]*time.Time, n)
	oldRevoked, resigned := make([]*time.Time, n), make([]int64, n)
	for i, r := range rs {
		ids[i], states[i], by[i], refs[i], reasons[i] = r.ID, r.State, r.ConfirmedBy, r.DeliveryRef, r.Reason
		deadlines[i], distributed[i], confirmed[i], finished[i] = timePtr(r.Deadline), timePtr(r.DistributedAt), timePtr(r.ConfirmedAt), timePtr(r.FinishedAt)
		oldRevoked[i], resigned[i] = timePtr(r.OldRevokedAt), r.ResignVersion
	}
	tag, err := s.q(ctx).Exec(ctx, `
		UPDATE rotations r SET state = v.state, deadline = v.deadline, distributed_at = v.distributed_at,
			confirmed_at = v.confirmed_at, confirmed_by = v.confirmed_by, delivery_ref = v.delivery_ref, reason = v.reason,
			finished_at = v.finished_at, old_revoked_at = v.old_revoked_at,
			resign_version = coalesce(r.resign_version, nullif(v.resign_version, 0)), updated_at = now()
		FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::text[],
			$8::text[], $9::timestamptz[], $10::timestamptz[], $11::bigint[])
			AS v(id, state, deadline, distributed_at, confirmed_at, confirmed_by, delivery_ref, reason, finished_at, old_revoked_at, resign_version)
		WHERE r.id = v.id`, ids, states, deadlines, distributed, confirmed, by, refs, reasons, finished, oldRevoked, resigned)
	if err != nil {
		return mapErr(fmt.Errorf("update %d rotations: %w", n, err))
	}
	if int(tag.RowsAffected()) != n {
		return notFound("rotation", fmt.Sprintf("%d of %d", n-int(tag.RowsAffected()), n))
	}
	return nil
}

// SetCredentialStates moves credentials to state at time at (see
// SetCredentialState).
func (s *Store) SetCredentialStates(ctx context.Context, ids []int64, state string, at time.Time) error {
	_, err := s.q(ctx).Exec(ctx, `
		UPDATE credentials SET state = $2,
			revoked_at = CASE WHEN $2 IN ('retired', 'revoked') THEN $3 ELSE revoked_at END,
			seed_enc = CASE WHEN $2 = 'pending' THEN seed_enc ELSE NULL END
		WHERE id = ANY($1)`, ids, state, dbTime(at))
	if err != nil {
		return mapErr(fmt.Errorf("set %d credentials %s: %w", len(ids), state, err))
	}
	return nil
}

// SetSchedules stores the next rotation time and failure count of agents.
func (s *Store) SetSchedules(ctx context.Context, gs []*rotatord.Agent) error {
	n := len(gs)
	ids, next, failures := make([]int64, n), make([]*time.Time, n), make([]int32, n)
	for i, g := range gs {
		ids[i], next[i], failures[i] = g.ID, timePtr(g.NextRotationAt), int32(g.Failures)
	}
	tag, err := s.q(ctx).Exec(ctx, `
		UPDATE agents g SET next_rotation_at = v.next, failures = v.failures, updated_at = now()
		FROM unnest($1::bigint[], $2::timestamptz[], $3::int[]) AS v(id, next, failures)
		WHERE g.id = v.id`, ids, next, failures)
	if err != nil {
		return mapErr(fmt.Errorf("update schedules of %d agents: %w", n, err))
	}
	if int(tag.RowsAffected()) != n {
		return notFound("agent", fmt.Sprintf("%d of %d", n-int(tag.RowsAffected()), n))
	}
	return nil
}
