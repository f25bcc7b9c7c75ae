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

// Fleet rotations: fleet_rotations and their agents, fleet_rotation_agents.

const fleetCols = `f.id::text, f.account_id, a.name, coalesce(f.role_id, 0), coalesce(ro.name, ''), f.waves,
	f.halt_on_failure_rate, f.state, f.wave, f.wave_log, f.replacing, coalesce(f.key_rotation_id::text, ''), f.trigger,
	f.actor, f.reason, f.created_at, f.updated_at, f.finished_at`

const fleetFrom = ` FROM fleet_rotations f JOIN accounts a ON a.id = f.account_id LEFT JOIN roles ro ON ro.id = f.role_id`

func scanFleet(row pgx.Row) (*rotatord.FleetRotation, error) {
	var (
		f     rotatord.FleetRotation
		waves []int32
		log   []byte
	)
	err := row.Scan(&f.ID, &f.AccountID, &f.Account, &f.RoleID, &f.Role, &waves, &f.HaltOnFailureRate, &f.State, &f.Wave,
		&log, &f.Replacing, &f.KeyRotation, &f.Trigger, &f.Actor, &f.Reason, &f.CreatedAt, &f.UpdatedAt, &f.FinishedAt)
	if err != nil {
		return nil, err
	}
	f.Waves = make([]int, len(waves))
	for i, w := range waves {
		f.Waves[i] = int(w)
	}
	if err := json.Unmarshal(log, &f.WaveLog); err != nil {
		return nil, fmt.Errorf("decode wave log of fleet rotation %s: %w", f.ID, err)
	}
	if f.Replacing == nil {
		f.Replacing = []string{}
	}
	return &f, nil
}

func waveLogJSON(l []rotatord.FleetWaveLog) []byte {
	if l == nil {
		l = []rotatord.FleetWaveLog{}
	}
	b, _ := json.Marshal(l) // plain fields: cannot fail
	return b
}

// CreateFleetRotation stores a new fleet rotation and sets its ID and
// times. While another fleet rotation of the account is running or halted
// it fails with ECONFLICT: the database keeps one per account.
func (s *Store) CreateFleetRotation(ctx context.Context, f *rotatord.FleetRotation) error {
	var role, key any
	if f.RoleID != 0 {
		role = f.RoleID
	}
	if f.KeyRotation != "" {
		key = f.KeyRotation
	}
	waves := make([]int32, len(f.Waves))
	for i, w := range f.Waves {
		waves[i] = int32(w)
	}
	replacing := f.Replacing
	if replacing == nil {
		replacing = []string{}
	}
	err := s.q(ctx).QueryRow(ctx, `INSERT INTO fleet_rotations (account_id, role_id, waves, halt_on_failure_rate, state, wave,
			wave_log, replacing, key_rotation_id, trigger, actor, reason)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::uuid, $10, $11, $12) RETURNING id::text, created_at, updated_at`,
		f.AccountID, role, waves, f.HaltOnFailureRate, f.State, f.Wave, waveLogJSON(f.WaveLog), replacing, key,
		f.Trigger, f.Actor, f.Reason).Scan(&f.ID, &f.CreatedAt, &f.UpdatedAt)
	if err != nil {
		return mapErr(fmt.Errorf("create fleet rotation of account %d: %w", f.AccountID, err))
	}
	return nil
}

// AddFleetMembers adds agents to a fleet rotation, each in its wave, waiting.
func (s *Store) AddFleetMembers(ctx context.Context, fleetID string, agentIDs []int64, waves []int) error {
	if len(agentIDs) == 0 {
		return nil
	}
	w := make([]int32, len(waves))
	for i, v := range waves {
		w[i] = int32(v)
	}
	_, err := s.q(ctx).Exec(ctx, `INSERT INTO fleet_rotation_agents (fleet_id, agent_id, wave, state)
		SELECT $1::uuid, id, wave, 'waiting' FROM unnest($2::bigint[], $3::int[]) AS v(id, wave)`, fleetID, agentIDs, w)
	if err != nil {
		return mapErr(fmt.Errorf("add %d agents to fleet rotation %s: %w", len(agentIDs), fleetID, err))
	}
	if len(agentIDs) >= analyzeMembersAt {
		// The scheduler counts a big wave every tick from now on: with
		// the statistics of an empty table, the planner scans the whole
		// wave once per agent it looks up. The transaction's own rows
		// count (ANALYZE sees them); it takes no lock writers wait for.
		if _, err := s.q(ctx).Exec(ctx, `ANALYZE fleet_rotation_agents`); err != nil {
			return mapErr(fmt.Errorf("analyze members of fleet rotation %s: %w", fleetID, err))
		}
	}
	return nil
}

// analyzeMembersAt is how many members make AddFleetMembers refresh the
// table's statistics.
const analyzeMembersAt = 500

// FindFleetRotation returns a fleet rotation by ID, or ENOTFOUND (also for
// an ID that is not a UUID).
func (s *Store) FindFleetRotation(ctx context.Context, id string) (*rotatord.FleetRotation, error) {
	if !isUUID(id) {
		return nil, notFound("fleet rotation", id)
	}
	f, err := scanFleet(s.q(ctx).QueryRow(ctx, `SELECT `+fleetCols+fleetFrom+` WHERE f.id = $1::uuid`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("fleet rotation", id)
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find fleet rotation %s: %w", id, err))
	}
	return f, nil
}

// LockFleetRotation reads a fleet rotation and locks it for the
// transaction in ctx. With skip, a rotation another transaction holds is
// skipped (ok false: someone else is driving it); without, it waits.
func (s *Store) LockFleetRotation(ctx context.Context, id string, skip bool) (f *rotatord.FleetRotation, ok bool, err error) {
	if err := needTx(ctx, "lock fleet rotation"); err != nil {
		return nil, false, err
	}
	if !isUUID(id) {
		return nil, false, notFound("fleet rotation", id)
	}
	lock := " FOR NO KEY UPDATE OF f"
	if skip {
		lock += " SKIP LOCKED"
	}
	f, err = scanFleet(s.q(ctx).QueryRow(ctx, `SELECT `+fleetCols+fleetFrom+` WHERE f.id = $1::uuid`+lock, id))
	if errors.Is(err, pgx.ErrNoRows) {
		if skip {
			return nil, false, nil
		}
		return nil, false, notFound("fleet rotation", id)
	}
	if err != nil {
		return nil, false, mapErr(fmt.Errorf("lock fleet rotation %s: %w", id, err))
	}
	return f, true, nil
}

// UpdateFleetRotation stores f's state, wave, wave log and reason.
func (s *Store) UpdateFleetRotation(ctx context.Context, f *rotatord.FleetRotation) error {
	err := s.q(ctx).QueryRow(ctx, `UPDATE fleet_rotations SET state = $2, wave = $3, wave_log = $4, reason = $5,
			finished_at = $6, updated_at = now()
		WHERE id = $1::uuid RETURNING updated_at`, f.ID, f.State, f.Wave, waveLogJSON(f.WaveLog), f.Reason, f.FinishedAt).Scan(&f.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound("fleet rotation", f.ID)
	}
	if err != nil {
		return mapErr(fmt.Errorf("update fleet rotation %s: %w", f.ID, err))
	}
	return nil
}

// ListFleetRotations returns fleet rotations matching f, newest first.
func (s *Store) ListFleetRotations(ctx context.Context, f rotatord.FleetFilter) ([]*rotatord.FleetRotation, error) {
	after, limit, err := pageArgs(f.After, f.Limit, "fleet rotation")
	if err != nil {
		return nil, err
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT `+fleetCols+fleetFrom+`
		WHERE ($1 = '' OR a.name = $1)
		  AND ($2::uuid IS NULL OR (f.created_at, f.id) < (SELECT created_at, id FROM fleet_rotations WHERE id = $2::uuid))
		ORDER BY f.created_at DESC, f.id DESC LIMIT $3`, f.Account, after, limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list fleet rotations: %w", err))
	}
	return collect(rows, "fleet rotations", scanFleet)
}

// ActiveFleetRotation returns the account's running or halted fleet
// rotation, or nil.
func (s *Store) ActiveFleetRotation(ctx context.Context, accountID int64) (*rotatord.FleetRotation, error) {
	f, err := scanFleet(s.q(ctx).QueryRow(ctx, `SELECT `+fleetCols+fleetFrom+`
		WHERE f.account_id = $1 AND f.state IN ('running', 'halted')`, accountID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find the fleet rotation in flight: %w", err))
	}
	return f, nil
}

// RunningFleetRotations returns the IDs of running fleet rotations, the
// least recently driven first.
func (s *Store) RunningFleetRotations(ctx context.Context, limit int) ([]string, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT id::text FROM fleet_rotations WHERE state = 'running' ORDER BY updated_at LIMIT $1`, limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list running fleet rotations: %w", err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, mapErr(fmt.Errorf("list running fleet rotations: %w", err))
	}
	return ids, nil
}

// FleetProgress counts the agents of each wave of a fleet rotation, from
// its members and their rotations' states: done (completed, or skipped),
// failed (rolled back), waiting (not started, or in flight) and in flight.
// Auth failures are the agents not rolled back with an alert of one of
// kinds since since[wave] (a wave missing from since counts none). The
// result has one entry per wave that has agents, by wave number; with
// wave > 0, only that wave's.
func (s *Store) FleetProgress(ctx context.Context, fleetID string, wave int, kinds []string, since map[int]time.Time) (map[int]rotatord.FleetWave, error) {
	waves := make([]int32, 0, len(since))
	starts := make([]time.Time, 0, len(since))
	for w, t := range since {
		waves = append(waves, int32(w))
		starts = append(starts, t)
	}
	// The scheduler asks every tick while a wave runs. Two queries whose
	// plans do not depend on the table's statistics (members are added in
	// bulk, well before an analyze): the counts look up each member's
	// rotation by key, and the few agents with alerts are looked up as
	// members, never the other way round (a join the planner nested per
	// member cost half a second a call at 10,000 agents).
	rows, err := s.q(ctx).Query(ctx, `
		SELECT m.wave, count(*),
			count(*) FILTER (WHERE m.state = 'skipped' OR r.state = 'completed'),
			count(*) FILTER (WHERE m.state = 'rotating' AND r.state = 'rolled_back'),
			count(*) FILTER (WHERE m.state = 'waiting' OR (m.state = 'rotating' AND r.state IN ('issued', 'distributed', 'confirmed'))),
			count(*) FILTER (WHERE m.state = 'rotating' AND r.state IN ('issued', 'distributed', 'confirmed'))
		FROM fleet_rotation_agents m
		LEFT JOIN rotations r ON r.id = m.rotation_id
		WHERE m.fleet_id = $1::uuid AND ($2::int = 0 OR m.wave = $2) GROUP BY m.wave`, fleetID, wave)
	if err != nil {
		return nil, mapErr(fmt.Errorf("count progress of fleet rotation %s: %w", fleetID, err))
	}
	out := map[int]rotatord.FleetWave{}
	for rows.Next() {
		var w rotatord.FleetWave
		if err := rows.Scan(&w.Wave, &w.Agents, &w.Done, &w.Failed, &w.Waiting, &w.InFlight); err != nil {
			rows.Close()
			return nil, mapErr(fmt.Errorf("count progress of fleet rotation %s: %w", fleetID, err))
		}
		out[w.Wave] = w
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, mapErr(fmt.Errorf("count progress of fleet rotation %s: %w", fleetID, err))
	}
	if len(waves) == 0 {
		return out, nil
	}
	rows, err = s.q(ctx).Query(ctx, `
		WITH w AS (SELECT * FROM unnest($2::int[], $3::timestamptz[]) AS w(wave, since)),
		flagged AS MATERIALIZED (
			SELECT DISTINCT g.id, w.wave FROM alerts al
			JOIN w ON al.created_at >= w.since
			JOIN accounts a ON a.name = al.account
			JOIN agents g ON g.account_id = a.id AND g.name = al.agent
			WHERE al.agent <> '' AND al.kind = ANY($4) AND al.created_at >= (SELECT min(since) FROM w))
		SELECT m.wave, count(*) FROM flagged f
		JOIN fleet_rotation_agents m ON m.fleet_id = $1::uuid AND m.agent_id = f.id AND m.wave = f.wave
		LEFT JOIN rotations r ON r.id = m.rotation_id
		WHERE r.state IS DISTINCT FROM 'rolled_back' AND ($5::int = 0 OR m.wave = $5)
		GROUP BY m.wave`, fleetID, waves, starts, kinds, wave)
	if err != nil {
		return nil, mapErr(fmt.Errorf("count auth failures of fleet rotation %s: %w", fleetID, err))
	}
	defer rows.Close()
	for rows.Next() {
		var n, failures int
		if err := rows.Scan(&n, &failures); err != nil {
			return nil, mapErr(fmt.Errorf("count auth failures of fleet rotation %s: %w", fleetID, err))
		}
		w := out[n]
		w.AuthFailures = failures
		out[n] = w
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(fmt.Errorf("count auth failures of fleet rotation %s: %w", fleetID, err))
	}
	return out, nil
}

// WaitingMembers returns the IDs of a wave's waiting agents, in ID order.
func (s *Store) WaitingMembers(ctx context.Context, fleetID string, wave int) ([]int64, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT agent_id FROM fleet_rotation_agents
		WHERE fleet_id = $1::uuid AND wave = $2 AND state = 'waiting' ORDER BY agent_id`, fleetID, wave)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list waiting agents of fleet rotation %s: %w", fleetID, err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, mapErr(fmt.Errorf("list waiting agents of fleet rotation %s: %w", fleetID, err))
	}
	return ids, nil
}

// LockWaitingMembers locks those of the given agents that still wait in
// the fleet rotation and returns their IDs in order. With skip, ones another
// transaction holds are skipped; without, it waits for them (and leaves out
// those that no longer wait once it got them).
func (s *Store) LockWaitingMembers(ctx context.Context, fleetID string, agentIDs []int64, skip bool) ([]int64, error) {
	if err := needTx(ctx, "lock fleet members"); err != nil {
		return nil, err
	}
	lock := " FOR UPDATE"
	if skip {
		lock += " SKIP LOCKED"
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT agent_id FROM fleet_rotation_agents
		WHERE fleet_id = $1::uuid AND agent_id = ANY($2) AND state = 'waiting'
		ORDER BY agent_id`+lock, fleetID, agentIDs)
	if err != nil {
		return nil, mapErr(fmt.Errorf("lock agents of fleet rotation %s: %w", fleetID, err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, mapErr(fmt.Errorf("lock agents of fleet rotation %s: %w", fleetID, err))
	}
	return ids, nil
}

// SetFleetMembers stores the state of fleet members.
func (s *Store) SetFleetMembers(ctx context.Context, fleetID string, ms []rotatord.FleetMember) error {
	if len(ms) == 0 {
		return nil
	}
	n := len(ms)
	ids, states, rots, reasons := make([]int64, n), make([]string, n), make([]*string, n), make([]string, n)
	for i, m := range ms {
		ids[i], states[i], reasons[i] = m.AgentID, m.State, m.Reason
		if m.RotationID != "" {
			rots[i] = &ms[i].RotationID
		}
	}
	_, err := s.q(ctx).Exec(ctx, `UPDATE fleet_rotation_agents m SET state = v.state, rotation_id = v.rot, reason = v.reason
		FROM unnest($2::bigint[], $3::text[], $4::uuid[], $5::text[]) AS v(id, state, rot, reason)
		WHERE m.fleet_id = $1::uuid AND m.agent_id = v.id`, fleetID, ids, states, rots, reasons)
	if err != nil {
		return mapErr(fmt.Errorf("update %d agents of fleet rotation %s: %w", n, fleetID, err))
	}
	return nil
}

// WaitingFleetOf returns the running fleet rotation whose current wave holds
// the agent, still waiting to be rotated, or nil.
func (s *Store) WaitingFleetOf(ctx context.Context, agentID int64) (*rotatord.FleetRotation, error) {
	f, err := scanFleet(s.q(ctx).QueryRow(ctx, `SELECT `+fleetCols+fleetFrom+`
		JOIN fleet_rotation_agents m ON m.fleet_id = f.id
		WHERE m.agent_id = $1 AND m.state = 'waiting' AND f.state = 'running' AND m.wave = f.wave`, agentID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find the fleet rotation of agent %d: %w", agentID, err))
	}
	return f, nil
}

// FleetMemberIDs returns the IDs of every agent of a fleet rotation.
func (s *Store) FleetMemberIDs(ctx context.Context, fleetID string) ([]int64, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT agent_id FROM fleet_rotation_agents WHERE fleet_id = $1::uuid ORDER BY agent_id`, fleetID)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list agents of fleet rotation %s: %w", fleetID, err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, mapErr(fmt.Errorf("list agents of fleet rotation %s: %w", fleetID, err))
	}
	return ids, nil
}

// AgentIDsOf returns the IDs of an account's active agents (of one role
// when roleID is not 0), in ID order.
func (s *Store) AgentIDsOf(ctx context.Context, accountID, roleID int64) ([]int64, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT id FROM agents WHERE account_id = $1 AND state = 'active'
		AND ($2::bigint = 0 OR role_id = $2) ORDER BY id`, accountID, roleID)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list agents of account %d: %w", accountID, err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, mapErr(fmt.Errorf("list agents of account %d: %w", accountID, err))
	}
	return ids, nil
}

// InFlightByAgents returns the rotations in flight of the given agents,
// by agent ID.
func (s *Store) InFlightByAgents(ctx context.Context, agentIDs []int64) (map[int64]*rotatord.Rotation, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT `+rotationCols+rotationFrom+`
		WHERE r.agent_id = ANY($1) AND r.state IN ('issued', 'distributed', 'confirmed')`, agentIDs)
	if err != nil {
		return nil, mapErr(fmt.Errorf("find rotations in flight: %w", err))
	}
	list, err := collectRotations(rows)
	if err != nil {
		return nil, err
	}
	out := make(map[int64]*rotatord.Rotation, len(list))
	for _, r := range list {
		out[r.AgentID] = r
	}
	return out, nil
}

// RotatedSince reports which of the agents had a rotation created at or
// after t (by the database's clock).
func (s *Store) RotatedSince(ctx context.Context, agentIDs []int64, t time.Time) (map[int64]bool, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT DISTINCT agent_id FROM rotations WHERE agent_id = ANY($1) AND created_at >= $2`,
		agentIDs, t)
	if err != nil {
		return nil, mapErr(fmt.Errorf("find agents rotated since %s: %w", t, err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, mapErr(fmt.Errorf("find agents rotated since %s: %w", t, err))
	}
	out := make(map[int64]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

// DBNow returns the database's clock (the transaction's start inside one),
// which alerts and waves share.
func (s *Store) DBNow(ctx context.Context) (time.Time, error) {
	var t time.Time
	if err := s.q(ctx).QueryRow(ctx, `SELECT now()`).Scan(&t); err != nil {
		return t, mapErr(fmt.Errorf("read the database clock: %w", err))
	}
	return t, nil
}
