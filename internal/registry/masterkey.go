package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

// sealedColumn is a column of values sealed under the master key (package
// seal), each bound to the row's public key. `rotatord master-key rotate`
// re-seals every column listed here: a new sealed column goes on this list.
type sealedColumn struct {
	kind  string // what the values are, for people
	table string
}

var sealedColumns = []sealedColumn{
	{kind: "operator identity seed", table: "operator"},
	{kind: "signing key seed", table: "signing_keys"}, // the operator's, accounts' and roles'
	{kind: "pending user seed", table: "credentials"},
}

// sealedWhere selects the rows that hold a sealed value: an operator
// imported without its identity seed has none (NULL, or empty after a
// down migration), and a credential keeps its seed only until delivery.
const sealedWhere = ` WHERE seed_enc IS NOT NULL AND length(seed_enc) > 0`

// replicasLock is the advisory lock between replicas recording themselves
// (shared) and a master-key rotation checking them (exclusive): a replica
// that starts during a rotation is recorded after it, and then finds the
// values re-sealed.
const replicasLock = 7290090

// RecordReplica records or renews a running replica, with seen_at set by
// the database's clock. It waits while a master-key rotation checks the
// replicas.
func (s *Store) RecordReplica(ctx context.Context, r *rotatord.Replica) error {
	err := s.InTx(ctx, func(ctx context.Context) error {
		if _, err := s.q(ctx).Exec(ctx, `SELECT pg_advisory_xact_lock_shared($1)`, replicasLock); err != nil {
			return err
		}
		return s.q(ctx).QueryRow(ctx, `
			INSERT INTO replicas (id, host, pid, key_ids, seal_key_id) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (id) DO UPDATE SET key_ids = EXCLUDED.key_ids, seal_key_id = EXCLUDED.seal_key_id, seen_at = now()
			RETURNING started_at, seen_at`,
			r.ID, r.Host, r.PID, r.KeyIDs, r.SealKeyID).Scan(&r.StartedAt, &r.SeenAt)
	})
	if err != nil {
		return mapErr(fmt.Errorf("record replica %s: %w", r.ID, err))
	}
	return nil
}

// DeleteReplica forgets a replica that stops.
func (s *Store) DeleteReplica(ctx context.Context, id string) error {
	if _, err := s.q(ctx).Exec(ctx, `DELETE FROM replicas WHERE id = $1`, id); err != nil {
		return mapErr(fmt.Errorf("delete replica %s: %w", id, err))
	}
	return nil
}

// PruneReplicas forgets replicas not seen for longer than silent, and
// returns how many.
func (s *Store) PruneReplicas(ctx context.Context, silent time.Duration) (int64, error) {
	tag, err := s.q(ctx).Exec(ctx, `DELETE FROM replicas WHERE seen_at < now() - make_interval(secs => $1)`, silent.Seconds())
	if err != nil {
		return 0, mapErr(fmt.Errorf("prune replicas: %w", err))
	}
	return tag.RowsAffected(), nil
}

// LockReplicas takes the replicas lock exclusively for the rest of the
// transaction: no replica records itself until it commits.
func (s *Store) LockReplicas(ctx context.Context) error {
	if err := needTx(ctx, "lock replicas"); err != nil {
		return err
	}
	if _, err := s.q(ctx).Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, replicasLock); err != nil {
		return mapErr(fmt.Errorf("lock replicas: %w", err))
	}
	return nil
}

// Replicas returns every recorded replica, the oldest first, with Live
// (seen within live) and Silent computed by the database's clock.
func (s *Store) Replicas(ctx context.Context, live time.Duration) ([]*rotatord.Replica, error) {
	rows, err := s.q(ctx).Query(ctx, `
		SELECT id, host, pid, key_ids, seal_key_id, started_at, seen_at,
			seen_at >= now() - make_interval(secs => $1), extract(epoch FROM now() - seen_at)
		FROM replicas ORDER BY started_at, id`, live.Seconds())
	if err != nil {
		return nil, mapErr(fmt.Errorf("list replicas: %w", err))
	}
	return collect(rows, "replicas", func(row pgx.Row) (*rotatord.Replica, error) {
		var (
			r      rotatord.Replica
			silent float64
		)
		err := row.Scan(&r.ID, &r.Host, &r.PID, &r.KeyIDs, &r.SealKeyID, &r.StartedAt, &r.SeenAt, &r.Live, &silent)
		r.Silent = time.Duration(silent * float64(time.Second)).Round(time.Second)
		return &r, err
	})
}

// Reseal passes every sealed value of the database to fn, with its owner
// (the public key it is bound to), and stores what fn returns in its place;
// nil leaves the value as it is. Rows are locked as they are read: run it
// inside InTx, so that every value changes in one commit. It returns how
// many values of each kind changed.
func (s *Store) Reseal(ctx context.Context, fn func(v rotatord.SealedValue) ([]byte, error)) (map[string]int, error) {
	if err := needTx(ctx, "re-seal"); err != nil {
		return nil, err
	}
	changed := map[string]int{}
	for _, c := range sealedColumns {
		rows, err := s.q(ctx).Query(ctx, `SELECT public_key, seed_enc FROM `+c.table+sealedWhere+` ORDER BY public_key FOR UPDATE`)
		if err != nil {
			return nil, mapErr(fmt.Errorf("read %ss: %w", c.kind, err))
		}
		values, err := collect(rows, c.kind+"s", func(row pgx.Row) (rotatord.SealedValue, error) {
			v := rotatord.SealedValue{Kind: c.kind}
			return v, row.Scan(&v.Owner, &v.Sealed)
		})
		if err != nil {
			return nil, err
		}
		var owners []string
		var sealed [][]byte
		for _, v := range values {
			out, err := fn(v)
			if err != nil {
				return nil, err
			}
			if out != nil {
				owners, sealed = append(owners, v.Owner), append(sealed, out)
			}
		}
		if len(owners) == 0 {
			continue
		}
		tag, err := s.q(ctx).Exec(ctx, `UPDATE `+c.table+` t SET seed_enc = u.sealed
			FROM unnest($1::text[], $2::bytea[]) AS u(owner, sealed) WHERE t.public_key = u.owner`, owners, sealed)
		if err != nil {
			return nil, mapErr(fmt.Errorf("re-seal %ss: %w", c.kind, err))
		}
		changed[c.kind] = int(tag.RowsAffected())
	}
	return changed, nil
}

// SealedCounts counts the sealed values of the database by kind and by the
// master key that sealed them (the key ID a version-2 value carries; "" for
// version 1), without reading them out.
func (s *Store) SealedCounts(ctx context.Context) ([]rotatord.SealedCount, error) {
	var out []rotatord.SealedCount
	for _, c := range sealedColumns {
		rows, err := s.q(ctx).Query(ctx, `
			SELECT CASE WHEN get_byte(seed_enc, 0) = 2 AND length(seed_enc) >= 9
				THEN encode(substring(seed_enc FROM 2 FOR 8), 'hex') ELSE '' END AS key_id, count(*)
			FROM `+c.table+sealedWhere+` GROUP BY 1 ORDER BY 1`)
		if err != nil {
			return nil, mapErr(fmt.Errorf("count %ss: %w", c.kind, err))
		}
		counts, err := collect(rows, c.kind+" counts", func(row pgx.Row) (rotatord.SealedCount, error) {
			n := rotatord.SealedCount{Kind: c.kind}
			return n, row.Scan(&n.KeyID, &n.Count)
		})
		if err != nil {
			return nil, err
		}
		out = append(out, counts...)
	}
	return out, nil
}

// UnnamedSealed returns the sealed values that do not name their master key
// (the first format, or anything that is not a version-2 value), so that a
// caller holding keys can check whether they open.
func (s *Store) UnnamedSealed(ctx context.Context) ([]rotatord.SealedValue, error) {
	var out []rotatord.SealedValue
	for _, c := range sealedColumns {
		rows, err := s.q(ctx).Query(ctx, `SELECT public_key, seed_enc FROM `+c.table+sealedWhere+
			` AND NOT (get_byte(seed_enc, 0) = 2 AND length(seed_enc) >= 9) ORDER BY public_key`)
		if err != nil {
			return nil, mapErr(fmt.Errorf("read %ss: %w", c.kind, err))
		}
		values, err := collect(rows, c.kind+"s", func(row pgx.Row) (rotatord.SealedValue, error) {
			v := rotatord.SealedValue{Kind: c.kind}
			return v, row.Scan(&v.Owner, &v.Sealed)
		})
		if err != nil {
			return nil, err
		}
		out = append(out, values...)
	}
	return out, nil
}
