package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/migrations"
)

// SchemaVersion returns the newest migration applied to the database (0
// before the first) and the newest one this binary holds. It reads goose's
// table without its lock, so it neither waits for a migration that runs
// nor changes anything.
func (s *Store) SchemaVersion(ctx context.Context) (current, latest int64, err error) {
	if latest, err = migrations.Latest(); err != nil {
		return 0, 0, err
	}
	err = s.q(ctx).QueryRow(ctx, `SELECT coalesce(max(version_id), 0) FROM goose_db_version WHERE is_applied`).Scan(&current)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table: never migrated
		return 0, latest, nil
	}
	if err != nil {
		return 0, 0, mapErr(fmt.Errorf("read schema version: %w", connectError(err)))
	}
	return current, latest, nil
}

// StuckRotations returns the rotations in flight that should have moved on
// by now, the oldest first, at most limit of them, and how many there are:
// distributed ones whose deadline passed before deadlineBefore (the
// scheduler rolls those back), and issued or confirmed ones (steps a
// replica takes at once) unchanged for longer than stale, by the
// database's clock (which set updated_at).
func (s *Store) StuckRotations(ctx context.Context, deadlineBefore time.Time, stale time.Duration, limit int) ([]*rotatord.Rotation, int, error) {
	const where = ` WHERE (r.state = 'distributed' AND r.deadline < $1)
		OR (r.state IN ('issued', 'confirmed') AND r.updated_at < now() - make_interval(secs => $2))`
	return s.rotationSample(ctx, "stuck rotations", where, `r.created_at`, limit, deadlineBefore, stale.Seconds())
}

// RollbacksSince returns the rotations rolled back at or after since, the
// newest first, at most limit of them, and how many there are.
func (s *Store) RollbacksSince(ctx context.Context, since time.Time, limit int) ([]*rotatord.Rotation, int, error) {
	// A rotation ends by its deadline, at most the longest grace (168h)
	// after it began: the bound on created_at keeps to recent rows of the
	// rotations_created index.
	return s.rotationSample(ctx, "recent rollbacks", ` WHERE r.state = 'rolled_back' AND r.finished_at >= $1 AND r.created_at >= $2`,
		`r.finished_at DESC`, limit, since, since.Add(-8*24*time.Hour))
}

func (s *Store) rotationSample(ctx context.Context, what, where, order string, limit int, args ...any) ([]*rotatord.Rotation, int, error) {
	var n int
	if err := s.q(ctx).QueryRow(ctx, `SELECT count(*) FROM rotations r`+where, args...).Scan(&n); err != nil {
		return nil, 0, mapErr(fmt.Errorf("count %s: %w", what, err))
	}
	if n == 0 {
		return nil, 0, nil
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT `+rotationCols+rotationFrom+where+` ORDER BY `+order+fmt.Sprintf(` LIMIT %d`, limit), args...)
	if err != nil {
		return nil, 0, mapErr(fmt.Errorf("list %s: %w", what, err))
	}
	rs, err := collect(rows, what, scanRotation)
	return rs, n, err
}
