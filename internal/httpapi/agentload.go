package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/rotatord/rotatord"
)

// The agent API's share of the database. When a fleet is dropped at once
// (an emergency rotation of its signing key), every agent polls at the same
// moment: left alone, their requests would take every connection of the
// pool and starve the work they wait for (issuing their new credentials,
// confirming their reconnects). At most MaxInFlight agent requests do
// database work at a time; the others wait in memory, in order, up to
// AgentLimits.QueueWait (10 s), then get 503 with Retry-After.

// DefaultAgentMaxInFlight is AgentLimits.MaxInFlight's default: half of
// the registry's default pool of 32 connections.
const DefaultAgentMaxInFlight = 16

// DefaultAgentQueueWait is AgentLimits.QueueWait's default: how long an
// agent request waits for its turn.
const DefaultAgentQueueWait = 10 * time.Second

// agentSlots lets at most cap(slots) agent requests in at a time.
type agentSlots struct {
	slots chan struct{}
	wait  time.Duration
}

func newAgentSlots(n int, wait time.Duration) agentSlots {
	if n <= 0 {
		n = DefaultAgentMaxInFlight
	}
	if wait <= 0 {
		wait = DefaultAgentQueueWait
	}
	return agentSlots{slots: make(chan struct{}, n), wait: wait}
}

// enter waits for a slot; the caller calls the release it returns. It
// fails with EUNAVAILABLE (retry after a second) when none was free within
// the queue wait, and when ctx ends first.
func (s agentSlots) enter(ctx context.Context) (release func(), err error) {
	t := time.NewTimer(s.wait)
	defer t.Stop()
	select {
	case s.slots <- struct{}{}:
		return func() { <-s.slots }, nil
	case <-ctx.Done():
		return nil, busy()
	case <-t.C:
		return nil, busy()
	}
}

func busy() error {
	return &rotatord.RetryError{Err: rotatord.Errorf(rotatord.EUNAVAILABLE, "rotatord is busy with other agents: try again"), After: time.Second}
}

// withSlot runs fn holding one of the agent API's slots, or answers 503.
func (s *Server) withSlot(w http.ResponseWriter, r *http.Request, fn func()) {
	release, err := s.agent.slots.enter(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer release()
	fn()
}
