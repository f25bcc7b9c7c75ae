package registry

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

// Audit appends an event to the audit trail and sets its ID and time.
func (s *Store) Audit(ctx context.Context, e *rotatord.AuditEvent) error {
	err := s.q(ctx).QueryRow(ctx, `
		INSERT INTO audit_events (actor, action, account, agent, public_key, rotation_id, details)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, at`, auditArgs(e)...).Scan(&e.ID, &e.At)
	if err != nil {
		return mapErr(fmt.Errorf("write audit event %s: %w", e.Action, err))
	}
	return nil
}

// auditArgs is an event's columns as statement arguments: actor, action,
// account, agent, public key, rotation (NULL when none) and details.
func auditArgs(e *rotatord.AuditEvent) []any {
	details := e.Details
	if details == nil {
		details = map[string]any{}
	}
	var rot any
	if e.Rotation != "" {
		rot = e.Rotation
	}
	return []any{e.Actor, e.Action, e.Account, e.Agent, e.PublicKey, rot, details}
}

// ListAudit returns events matching f, oldest first (newest first with f.Newest).
func (s *Store) ListAudit(ctx context.Context, f rotatord.AuditFilter) ([]*rotatord.AuditEvent, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	var since any
	if !f.Since.IsZero() {
		since = f.Since
	}
	// Newest first pages down from AfterID (0: from the newest event).
	page, order := `id > $4`, `id`
	if f.Newest {
		page, order = `($4 = 0 OR id < $4)`, `id DESC`
	}
	rows, err := s.q(ctx).Query(ctx, `
		SELECT id, at, actor, action, account, agent, public_key, coalesce(rotation_id::text, ''), details
		FROM audit_events
		WHERE ($1 = '' OR agent = $1) AND ($2 = '' OR action = $2) AND ($3::timestamptz IS NULL OR at >= $3) AND `+page+`
		ORDER BY `+order+` LIMIT $5`, f.Agent, f.Action, since, f.AfterID, limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("list audit events: %w", err))
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*rotatord.AuditEvent, error) {
		var e rotatord.AuditEvent
		err := row.Scan(&e.ID, &e.At, &e.Actor, &e.Action, &e.Account, &e.Agent, &e.PublicKey, &e.Rotation, &e.Details)
		return &e, err
	})
	if err != nil {
		return nil, mapErr(fmt.Errorf("list audit events: %w", err))
	}
	return out, nil
}
