package rotate

import (
	"context"
	"fmt"
	"time"

	"github.com/rotatord/rotatord"
)

// RotateAt moves the agent's next scheduled rotation to at (the scheduler
// starts it at its first tick from then on), and audits it as
// agent.schedule. `rotatord dev` uses it so that a newcomer sees a
// rotation soon after start. ECONFLICT for a revoked agent.
func (s *Service) RotateAt(ctx context.Context, actor Actor, name string, at time.Time) (*rotatord.Agent, error) {
	var g *rotatord.Agent
	err := s.inTx(ctx, func(ctx context.Context) error {
		var err error
		if g, err = s.store.LockAgent(ctx, name); err != nil {
			return err
		}
		if g.State != rotatord.AgentActive {
			return errAgentRevoked
		}
		g.NextRotationAt = &at
		if err := s.store.SetSchedules(ctx, []*rotatord.Agent{g}); err != nil {
			return err
		}
		return s.audit(ctx, actor, "agent.schedule", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
			Details: map[string]any{"next_rotation_at": at.UTC()}})
	})
	if err != nil {
		return nil, fmt.Errorf("schedule rotation of %s: %w", name, err)
	}
	return g, nil
}
