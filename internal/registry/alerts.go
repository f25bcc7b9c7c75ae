package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

// AddAlert writes an alert to the outbox, in the caller's transaction.
func (s *Store) AddAlert(ctx context.Context, a *rotatord.Alert) error {
	var rot any
	if a.Rotation != "" {
		rot = a.Rotation
	}
	err := s.q(ctx).QueryRow(ctx, `INSERT INTO alerts (kind, severity, account, agent, rotation_id, reason)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, created_at`,
		a.Kind, a.Severity, a.Account, a.Agent, rot, a.Reason).Scan(&a.ID, &a.CreatedAt)
	if err != nil {
		return mapErr(fmt.Errorf("add alert %s: %w", a.Kind, err))
	}
	return nil
}

// ClaimAlerts locks up to limit alerts due for delivery at now, skipping
// ones another replica holds. Call inside InTx.
func (s *Store) ClaimAlerts(ctx context.Context, now time.Time, limit int) ([]*rotatord.OutboxAlert, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT id, kind, severity, account, agent, coalesce(rotation_id::text, ''), reason, created_at,
			logged_at IS NOT NULL, webhook_done_at IS NOT NULL, nats_done_at IS NOT NULL, attempts
		FROM alerts WHERE (logged_at IS NULL OR webhook_done_at IS NULL OR nats_done_at IS NULL) AND next_attempt_at <= $1
		ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED`, dbTime(now), limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("claim alerts: %w", err))
	}
	return collect(rows, "alerts", scanAlert)
}

// UpdateAlert records which channels an alert reached and when to try the rest.
func (s *Store) UpdateAlert(ctx context.Context, p *rotatord.OutboxAlert, next time.Time, lastErr string) error {
	_, err := s.q(ctx).Exec(ctx, `UPDATE alerts SET
			logged_at = CASE WHEN $2 THEN coalesce(logged_at, now()) END,
			webhook_done_at = CASE WHEN $3 THEN coalesce(webhook_done_at, now()) END,
			nats_done_at = CASE WHEN $4 THEN coalesce(nats_done_at, now()) END,
			attempts = $5, next_attempt_at = $6, last_error = $7
		WHERE id = $1`, p.ID, p.Logged, p.WebhookDone, p.NATSDone, p.Attempts, dbTime(next), lastErr)
	if err != nil {
		return mapErr(fmt.Errorf("update alert %d: %w", p.ID, err))
	}
	return nil
}

// ListAlerts returns the newest alerts, for tests and operators.
func (s *Store) ListAlerts(ctx context.Context, limit int) ([]*rotatord.OutboxAlert, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT id, kind, severity, account, agent, coalesce(rotation_id::text, ''), reason, created_at,
			logged_at IS NOT NULL, webhook_done_at IS NOT NULL, nats_done_at IS NOT NULL, attempts
		FROM alerts ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list alerts: %w", err))
	}
	return collect(rows, "alerts", scanAlert)
}

func scanAlert(row pgx.Row) (*rotatord.OutboxAlert, error) {
	var p rotatord.OutboxAlert
	err := row.Scan(&p.ID, &p.Kind, &p.Severity, &p.Account, &p.Agent, &p.Rotation, &p.Reason, &p.CreatedAt,
		&p.Logged, &p.WebhookDone, &p.NATSDone, &p.Attempts)
	return &p, err
}

// AddAlertOnce writes a to the outbox unless an alert of its kind for key
// was written by anyone (any replica) in a window still running at now;
// the new window runs until until. It reports whether it wrote a.
func (s *Store) AddAlertOnce(ctx context.Context, a *rotatord.Alert, key string, now, until time.Time) (bool, error) {
	var rot any
	if a.Rotation != "" {
		rot = a.Rotation
	}
	// Windows long over are of no use; this runs only when an alert is due.
	if _, err := s.q(ctx).Exec(ctx, `DELETE FROM alert_windows WHERE until < $1`, dbTime(now.Add(-24*time.Hour))); err != nil {
		return false, mapErr(fmt.Errorf("prune alert windows: %w", err))
	}
	err := s.q(ctx).QueryRow(ctx, `
		WITH claim AS (
			INSERT INTO alert_windows (kind, key, until) VALUES ($1, $7, $8)
			ON CONFLICT (kind, key) DO UPDATE SET until = excluded.until WHERE alert_windows.until <= $9
			RETURNING 1)
		INSERT INTO alerts (kind, severity, account, agent, rotation_id, reason)
		SELECT $1, $2, $3, $4, $5, $6 FROM claim RETURNING id, created_at`,
		a.Kind, a.Severity, a.Account, a.Agent, rot, a.Reason, key, dbTime(until), dbTime(now)).Scan(&a.ID, &a.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, mapErr(fmt.Errorf("add alert %s once for %s: %w", a.Kind, key, err))
	}
	return true, nil
}

// alertPruneBatch is how many alerts one statement of PruneAlerts deletes.
const alertPruneBatch = 10_000

// PruneAlerts deletes alerts raised more than olderThan ago by the
// database's clock, delivered or not (an alert no channel took in that
// long will not be), a batch per statement, and returns how many went.
// Alerts are the outbox and the history the API and the console list: a
// flood of them (auth failures from many addresses) must not grow the
// database without bound.
func (s *Store) PruneAlerts(ctx context.Context, olderThan time.Duration) (int64, error) {
	var total int64
	for {
		tag, err := s.q(ctx).Exec(ctx, `DELETE FROM alerts WHERE id IN (
			SELECT id FROM alerts WHERE created_at < now() - make_interval(secs => $1) ORDER BY id LIMIT $2)`,
			olderThan.Seconds(), alertPruneBatch)
		if err != nil {
			return total, mapErr(fmt.Errorf("prune alerts older than %s: %w", olderThan, err))
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < alertPruneBatch {
			return total, nil
		}
	}
}
