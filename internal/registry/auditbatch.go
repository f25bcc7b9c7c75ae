package registry

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/rotatord/rotatord"
)

// AuditBatch appends events to the audit trail with one statement, in the
// order given. A rotation step writes several events; one round trip
// instead of one each matters when thousands of agents rotate at once.
func (s *Store) AuditBatch(ctx context.Context, events []*rotatord.AuditEvent) error {
	n := len(events)
	if n == 0 {
		return nil
	}
	actors, actions, accounts, agents := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	keys, rotations, details := make([]string, n), make([]string, n), make([]string, n)
	for i, e := range events {
		d := e.Details
		if d == nil {
			d = map[string]any{}
		}
		b, err := json.Marshal(d)
		if err != nil {
			return fmt.Errorf("encode details of audit event %s: %w", e.Action, err)
		}
		actors[i], actions[i], accounts[i], agents[i] = e.Actor, e.Action, e.Account, e.Agent
		keys[i], rotations[i], details[i] = e.PublicKey, e.Rotation, string(b)
	}
	_, err := s.q(ctx).Exec(ctx, `
		INSERT INTO audit_events (actor, action, account, agent, public_key, rotation_id, details)
		SELECT actor, action, account, agent, public_key, nullif(rotation, '')::uuid, details::jsonb
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
			WITH ORDINALITY AS e(actor, action, account, agent, public_key, rotation, details, ord)
		ORDER BY ord`,
		actors, actions, accounts, agents, keys, rotations, details)
	if err != nil {
		return mapErr(fmt.Errorf("write %d audit events: %w", n, err))
	}
	return nil
}
