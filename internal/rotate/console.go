package rotate

import (
	"context"
	"fmt"
	"strings"

	"github.com/rotatord/rotatord"
)

// The reads behind the fleet console (and any other API client): agents
// with their newest rotation, alerts, an account's revocation entries and
// an agent's keys.

// maxSearch bounds AgentFilter.Search: agent names are at most 64 bytes.
const maxSearch = 64

// checkAgentFilter refuses a filter the store cannot answer.
func checkAgentFilter(f rotatord.AgentFilter) error {
	if f.State != "" && f.State != rotatord.AgentActive && f.State != rotatord.AgentRevoked {
		return rotatord.Errorf(rotatord.EINVALID, "state %.40q is not active or revoked", f.State)
	}
	if len(f.Search) > maxSearch {
		return rotatord.Errorf(rotatord.EINVALID, "search is longer than %d bytes", maxSearch)
	}
	for _, o := range f.Outcomes {
		if _, ok := rotatord.OutcomeStates(o); !ok && !rotatord.ValidRotationState(o) {
			return rotatord.Errorf(rotatord.EINVALID, "outcome %.40q is not one of completed, rolled_back, in_flight, none", o)
		}
	}
	return nil
}

// ParseOutcomes turns a comma-separated list of outcomes (completed,
// rolled_back, in_flight, none) into the rotation states AgentFilter.Outcomes
// matches. An unknown outcome is EINVALID.
func ParseOutcomes(list string) ([]string, error) {
	if list == "" {
		return nil, nil
	}
	var states []string
	for _, o := range strings.Split(list, ",") {
		ss, ok := rotatord.OutcomeStates(strings.TrimSpace(o))
		if !ok {
			return nil, rotatord.Errorf(rotatord.EINVALID, "outcome %.40q is not one of completed, rolled_back, in_flight, none", o)
		}
		states = append(states, ss...)
	}
	return states, nil
}

// FillLastRotations sets each agent's LastRotation, with one query.
func (s *Service) FillLastRotations(ctx context.Context, agents ...*rotatord.Agent) error {
	if len(agents) == 0 {
		return nil
	}
	ids := make([]int64, len(agents))
	for i, g := range agents {
		ids[i] = g.ID
	}
	last, err := s.store.LastRotations(ctx, ids)
	if err != nil {
		return fmt.Errorf("read last rotations: %w", err)
	}
	for _, g := range agents {
		g.LastRotation = last[g.ID]
	}
	return nil
}

// Alerts lists alerts matching f, newest first. An unknown severity is
// EINVALID.
func (s *Service) Alerts(ctx context.Context, f rotatord.AlertFilter) ([]*rotatord.Alert, error) {
	if f.Severity != "" && !rotatord.ValidSeverity(f.Severity) {
		return nil, rotatord.Errorf(rotatord.EINVALID, "severity %.40q is not info, warning or critical", f.Severity)
	}
	return s.store.ListAlertsBy(ctx, f)
}

// AccountRevocations lists a page of the named account's revocation
// entries, newest first. An unknown account is ENOTFOUND.
func (s *Service) AccountRevocations(ctx context.Context, name string, f rotatord.PageFilter) ([]rotatord.Revocation, error) {
	acc, err := s.store.FindAccountByName(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.store.ListRevocationsPage(ctx, acc.ID, f)
}

// AgentKeys lists a page of the named agent's user keys, newest first,
// never a seed. An unknown agent is ENOTFOUND.
func (s *Service) AgentKeys(ctx context.Context, name string, f rotatord.PageFilter) ([]*rotatord.KeyInfo, error) {
	g, err := s.store.FindAgentByName(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.store.ListKeys(ctx, g.ID, f)
}
