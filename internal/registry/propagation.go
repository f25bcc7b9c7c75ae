package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

// Propagation: the nats-servers of the cluster, what each holds of every
// account's JWT, the per-account push lock, and completing the rotations
// whose revoking JWT was pushed.

// pushLockClass is the first key of the per-account push locks
// (pg_advisory_lock(class, account id)); it keeps them apart from other
// advisory locks.
const pushLockClass = 0x726f7470 // "rotp"

// WithAccountLock runs fn holding the account's push lock, a session
// advisory lock on one pooled connection, so that one pusher at a time
// (across all replicas) pushes an account's JWT. The account's row is not
// locked: writes to the account go on while a push waits for the servers.
// fn's store calls run on that connection (InTx begins on it). If the lock
// cannot be released, the connection is closed, which releases it.
func (s *Store) WithAccountLock(ctx context.Context, accountID int64, fn func(ctx context.Context) error) error {
	actx, cancel := opContext(ctx, s.opTimeout)
	conn, err := s.pool.Acquire(actx)
	cancel()
	if err != nil {
		return mapErr(fmt.Errorf("lock account %d for push: %w", accountID, err))
	}
	lctx, cancel := opContext(ctx, s.opTimeout)
	_, err = conn.Exec(lctx, `SELECT pg_advisory_lock($1, $2)`, pushLockClass, int32(accountID))
	cancel()
	if err != nil {
		conn.Release()
		return mapErr(fmt.Errorf("lock account %d for push: %w", accountID, err))
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1, $2)`, pushLockClass, int32(accountID)); err != nil {
			// Never hand back a connection that may still hold the lock.
			conn.Conn().Close(uctx) //nolint:errcheck // closing is the point
		}
		conn.Release()
	}()
	return fn(context.WithValue(ctx, connKey{}, conn))
}

// FindAccount returns an account by ID without locking it, and without
// its revocation and agent counts (left zero).
func (s *Store) FindAccount(ctx context.Context, id int64) (*rotatord.Account, error) {
	a, err := scanAccount(s.q(ctx).QueryRow(ctx, `SELECT `+lockedAccountCols+` FROM accounts a WHERE a.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("account", fmt.Sprint(id))
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("find account %d: %w", id, err))
	}
	return a, nil
}

// AccountVersion returns the account's newest stored JWT version.
func (s *Store) AccountVersion(ctx context.Context, id int64) (int64, error) {
	var v int64
	err := s.q(ctx).QueryRow(ctx, `SELECT jwt_version FROM accounts WHERE id = $1`, id).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, notFound("account", fmt.Sprint(id))
	}
	if err != nil {
		return 0, mapErr(fmt.Errorf("read version of account %d: %w", id, err))
	}
	return v, nil
}

const serverCols = `n.id, n.name, n.cluster, n.first_seen, n.last_seen, n.missed_at`

func scanServer(row pgx.Row) (rotatord.Server, error) {
	var sv rotatord.Server
	err := row.Scan(&sv.ID, &sv.Name, &sv.Cluster, &sv.FirstSeen, &sv.LastSeen, &sv.MissedAt)
	return sv, err
}

// TouchServers records that servers were heard from, each at its
// LastSeen, or at at when that is zero: unknown ones are added, known ones
// get the later last-seen time (and their name and cluster, when given).
func (s *Store) TouchServers(ctx context.Context, servers []rotatord.Server, at time.Time) error {
	if len(servers) == 0 {
		return nil
	}
	n := len(servers)
	ids, names, clusters := make([]string, n), make([]string, n), make([]string, n)
	seen := make([]time.Time, n)
	for i, sv := range servers {
		ids[i], names[i], clusters[i], seen[i] = sv.ID, sv.Name, sv.Cluster, dbTime(at)
		if !sv.LastSeen.IsZero() {
			seen[i] = dbTime(sv.LastSeen)
		}
	}
	_, err := s.q(ctx).Exec(ctx, `
		INSERT INTO nats_servers (id, name, cluster, first_seen, last_seen)
		SELECT id, max(name), max(cluster), max(seen), max(seen)
		FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS v(id, name, cluster, seen)
		WHERE id <> '' GROUP BY id
		ON CONFLICT (id) DO UPDATE SET
			name = CASE WHEN excluded.name <> '' THEN excluded.name ELSE nats_servers.name END,
			cluster = CASE WHEN excluded.cluster <> '' THEN excluded.cluster ELSE nats_servers.cluster END,
			last_seen = greatest(nats_servers.last_seen, excluded.last_seen)`,
		ids, names, clusters, seen)
	if err != nil {
		return mapErr(fmt.Errorf("record %d nats-servers seen: %w", n, err))
	}
	return nil
}

// MarkServersMissed records that the servers did not answer a push that
// waited for them, at at.
func (s *Store) MarkServersMissed(ctx context.Context, ids []string, at time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := s.q(ctx).Exec(ctx, `UPDATE nats_servers SET missed_at = $2 WHERE id = ANY($1)`, ids, dbTime(at)); err != nil {
		return mapErr(fmt.Errorf("mark %d nats-servers missed: %w", len(ids), err))
	}
	return nil
}

// ForgetServer removes a server and what it held; unknown IDs are ignored.
func (s *Store) ForgetServer(ctx context.Context, id string) error {
	if _, err := s.q(ctx).Exec(ctx, `DELETE FROM nats_servers WHERE id = $1`, id); err != nil {
		return mapErr(fmt.Errorf("forget nats-server %s: %w", id, err))
	}
	return nil
}

// ForgetServersSilentSince removes the servers not heard from since t and
// returns them.
func (s *Store) ForgetServersSilentSince(ctx context.Context, t time.Time) ([]rotatord.Server, error) {
	rows, err := s.q(ctx).Query(ctx, `DELETE FROM nats_servers n WHERE n.last_seen < $1 RETURNING `+serverCols, dbTime(t))
	if err != nil {
		return nil, mapErr(fmt.Errorf("forget silent nats-servers: %w", err))
	}
	return collect(rows, "nats-servers", scanServer)
}

// Servers returns every known server, by name.
func (s *Store) Servers(ctx context.Context) ([]rotatord.Server, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT `+serverCols+` FROM nats_servers n ORDER BY n.name, n.id`)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list nats-servers: %w", err))
	}
	return collect(rows, "nats-servers", scanServer)
}

func scanAccountServer(row pgx.Row) (rotatord.AccountServer, error) {
	var a rotatord.AccountServer
	err := row.Scan(&a.ID, &a.Name, &a.Cluster, &a.FirstSeen, &a.LastSeen, &a.MissedAt,
		&a.AccountID, &a.Version, &a.Status, &a.AckedAt, &a.BehindSince)
	return a, err
}

// AccountServers returns every known server with what it holds of the
// account's JWT; servers that never answered for the account have Version
// 0 and an empty Status.
func (s *Store) AccountServers(ctx context.Context, accountID int64) ([]rotatord.AccountServer, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT `+serverCols+`, $1::bigint, coalesce(sa.version, 0), coalesce(sa.status, ''),
			sa.acked_at, sa.behind_since
		FROM nats_servers n LEFT JOIN server_accounts sa ON sa.server_id = n.id AND sa.account_id = $1
		ORDER BY n.name, n.id`, accountID)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list nats-servers of account %d: %w", accountID, err))
	}
	return collect(rows, "nats-servers", scanAccountServer)
}

// SetServerAccounts stores what servers hold of an account's JWT, as
// given (Version never goes back). Call it under the account's push lock.
// Servers forgotten meanwhile are skipped.
func (s *Store) SetServerAccounts(ctx context.Context, accountID int64, list []rotatord.AccountServer) error {
	if len(list) == 0 {
		return nil
	}
	n := len(list)
	ids, statuses := make([]string, n), make([]string, n)
	versions := make([]int64, n)
	acked, behind := make([]*time.Time, n), make([]*time.Time, n)
	for i, a := range list {
		ids[i], statuses[i], versions[i] = a.ID, a.Status, a.Version
		acked[i], behind[i] = timePtr(a.AckedAt), timePtr(a.BehindSince)
	}
	_, err := s.q(ctx).Exec(ctx, `
		INSERT INTO server_accounts (server_id, account_id, version, status, acked_at, behind_since)
		SELECT v.id, $1, v.version, v.status, v.acked, v.behind
		FROM unnest($2::text[], $3::bigint[], $4::text[], $5::timestamptz[], $6::timestamptz[]) AS v(id, version, status, acked, behind)
		JOIN nats_servers n ON n.id = v.id
		ON CONFLICT (server_id, account_id) DO UPDATE SET
			version = greatest(server_accounts.version, excluded.version), status = excluded.status,
			acked_at = coalesce(excluded.acked_at, server_accounts.acked_at), behind_since = excluded.behind_since`,
		accountID, ids, versions, statuses, acked, behind)
	if err != nil {
		return mapErr(fmt.Errorf("record what %d nats-servers hold of account %d: %w", n, accountID, err))
	}
	return nil
}

// ServersBehind returns every (server, account) pair where the server is
// known to be behind the stored JWT, by server.
func (s *Store) ServersBehind(ctx context.Context) ([]rotatord.ServerCheck, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT `+serverCols+`, sa.account_id, sa.version, sa.status, sa.acked_at, sa.behind_since,
			a.name, a.public_key, a.jwt, a.jwt_version
		FROM server_accounts sa JOIN nats_servers n ON n.id = sa.server_id JOIN accounts a ON a.id = sa.account_id
		WHERE sa.behind_since IS NOT NULL ORDER BY n.id, sa.behind_since, a.id`)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list nats-servers behind: %w", err))
	}
	return collect(rows, "nats-servers behind", func(row pgx.Row) (rotatord.ServerCheck, error) {
		var b rotatord.ServerCheck
		err := row.Scan(&b.ID, &b.Name, &b.Cluster, &b.FirstSeen, &b.LastSeen, &b.MissedAt,
			&b.AccountID, &b.Version, &b.Status, &b.AckedAt, &b.BehindSince, &b.AccountName, &b.AccountKey, &b.JWT, &b.JWTVersion)
		return b, err
	})
}

// UnverifiedServerAccounts returns up to limit (server, account) pairs of
// servers heard from since t that never answered for the account (Version
// 0, no BehindSince).
func (s *Store) UnverifiedServerAccounts(ctx context.Context, t time.Time, limit int) ([]rotatord.ServerCheck, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT `+serverCols+`, a.id, a.name, a.public_key, a.jwt, a.jwt_version
		FROM nats_servers n CROSS JOIN accounts a
		WHERE n.last_seen >= $1
		  AND NOT EXISTS (SELECT 1 FROM server_accounts sa WHERE sa.server_id = n.id AND sa.account_id = a.id)
		ORDER BY n.id, a.id LIMIT $2`, dbTime(t), limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list unverified nats-server accounts: %w", err))
	}
	return collect(rows, "unverified nats-server accounts", func(row pgx.Row) (rotatord.ServerCheck, error) {
		var b rotatord.ServerCheck
		err := row.Scan(&b.ID, &b.Name, &b.Cluster, &b.FirstSeen, &b.LastSeen, &b.MissedAt,
			&b.AccountID, &b.AccountName, &b.AccountKey, &b.JWT, &b.JWTVersion)
		return b, err
	})
}

// AddRevocationWait records that an operator revocation, requested at at,
// is carried by version of the account's JWT.
func (s *Store) AddRevocationWait(ctx context.Context, accountID, version int64, at time.Time) error {
	_, err := s.q(ctx).Exec(ctx, `INSERT INTO revocation_waits (account_id, version, requested_at) VALUES ($1, $2, $3)`,
		accountID, version, dbTime(at))
	if err != nil {
		return mapErr(fmt.Errorf("record revocation of account %d: %w", accountID, err))
	}
	return nil
}

// PopRevocationWaits removes the revocation waits that have landed (the
// version that carries them was pushed, and no known server holds an older
// one) of one account (0: of every account) and returns when each was
// requested.
func (s *Store) PopRevocationWaits(ctx context.Context, accountID int64) ([]time.Time, error) {
	rows, err := s.q(ctx).Query(ctx, `
		DELETE FROM revocation_waits w USING accounts a
		WHERE a.id = w.account_id AND ($1::bigint = 0 OR w.account_id = $1) AND w.version <= a.pushed_version
		  AND NOT EXISTS (SELECT 1 FROM server_accounts sa WHERE sa.account_id = w.account_id AND sa.version < w.version)
		RETURNING w.requested_at`, accountID)
	if err != nil {
		return nil, mapErr(fmt.Errorf("pop landed revocations: %w", err))
	}
	return collect(rows, "landed revocations", func(row pgx.Row) (time.Time, error) {
		var t time.Time
		err := row.Scan(&t)
		return t, err
	})
}

// RotationsAwaitingResign returns the confirmed rotations of an account
// whose old key's revocation is recorded and that no stored JWT version
// carries yet.
func (s *Store) RotationsAwaitingResign(ctx context.Context, accountID int64) ([]rotatord.RetiredKey, error) {
	// Few rotations wait at any time, however large the account: start from
	// them (a small partial index), not from the account's agents.
	rows, err := s.q(ctx).Query(ctx, `
		WITH waiting AS MATERIALIZED (
			SELECT r.id, r.agent_id, r.old_public_key, r.old_credential_id FROM rotations r
			WHERE r.state = 'confirmed' AND r.resign_version IS NULL AND r.old_revoked_at IS NOT NULL)
		SELECT w.id::text, coalesce(w.old_public_key, ''), coalesce(c.issued_at, 'epoch'), coalesce(c.expires_at, 'epoch')
		FROM waiting w
		CROSS JOIN LATERAL (SELECT 1 FROM agents g WHERE g.id = w.agent_id AND g.account_id = $1) g
		LEFT JOIN LATERAL (SELECT issued_at, expires_at FROM credentials c WHERE c.id = w.old_credential_id) c ON true`, accountID)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list rotations awaiting a re-sign: %w", err))
	}
	return collect(rows, "rotations awaiting a re-sign", func(row pgx.Row) (rotatord.RetiredKey, error) {
		var a rotatord.RetiredKey
		err := row.Scan(&a.Rotation, &a.PublicKey, &a.IssuedAt, &a.ExpiresAt)
		return a, err
	})
}

// SetResignVersion records that version of the account's JWT is the first
// to carry the old key's revocation of each rotation.
func (s *Store) SetResignVersion(ctx context.Context, ids []string, version int64) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := s.q(ctx).Exec(ctx, `UPDATE rotations SET resign_version = $2, updated_at = now()
		WHERE id = ANY($1::uuid[]) AND resign_version IS NULL`, ids, version)
	if err != nil {
		return mapErr(fmt.Errorf("record re-sign of %d rotations: %w", len(ids), err))
	}
	return nil
}

// CompleteRotations completes the account's confirmed rotations whose old
// key's revocation is carried by version or an older one, at at, and
// returns them (completed, with agent, account, keys and start time).
func (s *Store) CompleteRotations(ctx context.Context, accountID, version int64, at time.Time) ([]*rotatord.Rotation, error) {
	rows, err := s.q(ctx).Query(ctx, `
		WITH done AS MATERIALIZED (
			SELECT r.id FROM rotations r WHERE r.state = 'confirmed' AND r.resign_version <= $2)
		UPDATE rotations r SET state = 'completed', finished_at = $3, updated_at = now()
		FROM done, agents g JOIN accounts a ON a.id = g.account_id
		WHERE r.id = done.id AND g.id = r.agent_id AND g.account_id = $1 AND r.state = 'confirmed' AND r.resign_version <= $2
		RETURNING r.id::text, r.agent_id, g.name, a.name, a.id, a.public_key, coalesce(r.old_public_key, ''), r.new_public_key,
			r.created_at, r.resign_version`, accountID, version, dbTime(at))
	if err != nil {
		return nil, mapErr(fmt.Errorf("complete rotations of account %d: %w", accountID, err))
	}
	return collect(rows, "completed rotations", func(row pgx.Row) (*rotatord.Rotation, error) {
		r := &rotatord.Rotation{State: rotatord.RotationCompleted}
		err := row.Scan(&r.ID, &r.AgentID, &r.Agent, &r.Account, &r.AccountID, &r.AccountKey, &r.OldKey, &r.NewKey,
			&r.CreatedAt, &r.ResignVersion)
		t := at
		r.FinishedAt = &t
		return r, err
	})
}
