package rotate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// Distributor hands new credentials to agents of one delivery kind.
type Distributor interface {
	// Deliver makes the credentials available to the agent and returns a
	// reference to what it wrote (such as a Vault version) for Restore.
	Deliver(ctx context.Context, h rotatord.Handoff) (ref string, err error)
	// Restore puts back what the agent had before a delivery that is being
	// rolled back, so that the agent finds working credentials.
	Restore(ctx context.Context, h rotatord.Handoff, ref string) error
}

// Finisher is implemented by distributors that keep something of the
// previous credentials for a rollback (a file's old copy): Finish is
// called once the rotation completed and the old key is revoked.
type Finisher interface {
	Finish(ctx context.Context, h rotatord.Handoff) error
}

// pollDelivery keeps the new credentials in the registry (the seed sealed
// under the master key) until the agent fetches them.
type pollDelivery struct{}

func (pollDelivery) Deliver(context.Context, rotatord.Handoff) (string, error) { return "", nil }
func (pollDelivery) Restore(context.Context, rotatord.Handoff, string) error   { return nil }

// Rotation errors callers can test for.
var (
	errAgentRevoked = rotatord.Errorf(rotatord.ECONFLICT, "agent is revoked")
	errInFlight     = rotatord.Errorf(rotatord.ECONFLICT, "a rotation of this agent is in flight")
)

// StartRotation issues a new key for the agent and hands it out. It returns
// once the rotation is distributed (or rolled back because delivery failed);
// the agent's reconnect completes it. ECONFLICT while another rotation of
// the agent is in flight or the agent is revoked.
func (s *Service) StartRotation(ctx context.Context, actor Actor, agent, trigger string) (*rotatord.Rotation, error) {
	r, err := s.startRotation(ctx, actor, agent, trigger, "")
	if err != nil {
		return nil, err
	}
	return s.advance(ctx, r.ID, false)
}

// startRotation records the issued step. pub, when set, is a key the agent
// generated itself; otherwise rotatord makes one and keeps its seed sealed.
func (s *Service) startRotation(ctx context.Context, actor Actor, agent, trigger, pub string) (*rotatord.Rotation, error) {
	var r *rotatord.Rotation
	err := s.store.InTx(ctx, func(ctx context.Context) error {
		g, err := s.store.LockAgent(ctx, agent)
		if err != nil {
			return err
		}
		if g.State != rotatord.AgentActive {
			return errAgentRevoked
		}
		now := s.now()
		if trigger == rotatord.TriggerSchedule && (g.NextRotationAt == nil || g.NextRotationAt.After(now)) {
			return errNotDue
		}
		if inflight, err := s.store.InFlightRotation(ctx, g.ID); err != nil {
			return err
		} else if inflight != nil {
			return errInFlight
		}
		var cred *rotatord.Credential
		if pub == "" {
			var kp nkeys.KeyPair
			if cred, kp, err = s.issue(ctx, g, now); err != nil {
				return err
			}
			cred.SeedEnc = s.seal(kp)
		} else if cred, err = s.issueFor(ctx, g, pub, now); err != nil {
			return err
		}
		cred.State = rotatord.CredentialPending
		if err := s.store.CreateCredential(ctx, cred); err != nil {
			return err
		}
		r = &rotatord.Rotation{AgentID: g.ID, Agent: g.Name, Account: g.Account, AccountID: g.AccountID, AccountKey: g.AccountKey,
			State: rotatord.RotationIssued, Trigger: trigger, NewKey: cred.PublicKey, NewCredentialID: cred.ID}
		if g.Active != nil {
			r.OldKey, r.OldCredentialID = g.Active.PublicKey, g.Active.ID
		}
		if err := s.store.CreateRotation(ctx, r); err != nil {
			return err
		}
		if err := s.audit(ctx, actor, "rotation.start", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
			PublicKey: cred.PublicKey, Rotation: r.ID, Details: map[string]any{"trigger": trigger, "old_key": r.OldKey}}); err != nil {
			return err
		}
		if err := s.audit(ctx, actor, "credential.issue", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
			PublicKey: cred.PublicKey, Rotation: r.ID, Details: map[string]any{"jwt_id": cred.JWTID, "expires_at": cred.ExpiresAt}}); err != nil {
			return err
		}
		if g.Delivery == rotatord.DeliveryPoll {
			// Handing out by poll only marks the creds ready: nothing
			// outside the database happens between the two steps, so they
			// commit together.
			_, err := s.distribute(ctx, g, r, now)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("start rotation of %s: %w", agent, err)
	}
	s.metrics.started(trigger)
	return r, nil
}

var errNotDue = rotatord.Errorf(rotatord.ECONFLICT, "agent is not due")

// advance moves a rotation in flight one or more steps, as far as it can
// go now: issued ones are distributed, confirmed ones completed, and
// distributed ones past their deadline (or all of them with expire) rolled
// back. Every step is its own committed transaction under the agent's row
// lock, so a replica that dies between steps leaves a state any replica
// resumes from.
func (s *Service) advance(ctx context.Context, id string, expire bool) (*rotatord.Rotation, error) {
	for {
		r, moved, err := s.step(ctx, id, expire)
		// A distributed rotation waits for the agent; stepping it again now
		// would do nothing.
		if err != nil || !moved || !r.InFlight() || (r.State == rotatord.RotationDistributed && !expire) {
			return r, err
		}
	}
}

// step does one transition and reports whether it did one.
func (s *Service) step(ctx context.Context, id string, expire bool) (r *rotatord.Rotation, moved bool, err error) {
	var after func()
	err = s.store.InTx(ctx, func(ctx context.Context) error {
		found, err := s.store.FindRotation(ctx, id)
		if err != nil {
			return err
		}
		// Lock order everywhere: agent, then rotation, then account.
		g, err := s.store.LockAgent(ctx, found.Agent)
		if err != nil {
			return err
		}
		var ok bool
		if r, ok, err = s.store.LockRotation(ctx, id); err != nil || !ok {
			r = found
			return err
		}
		now := s.now()
		switch r.State {
		case rotatord.RotationIssued:
			after, err = s.distribute(ctx, g, r, now)
			moved = err == nil
		case rotatord.RotationConfirmed:
			after, err = s.complete(ctx, g, r, now)
			moved = err == nil
		case rotatord.RotationDistributed:
			if expire || (r.Deadline != nil && !now.Before(*r.Deadline)) {
				after, err = s.rollback(ctx, g, r, now, "the agent did not reconnect with the new key before the deadline")
				moved = err == nil
			}
		}
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("advance rotation %s: %w", id, err)
	}
	if after != nil {
		after()
	}
	return r, moved, nil
}

func (s *Service) distributor(d rotatord.Delivery) (Distributor, error) {
	if d == rotatord.DeliveryPoll {
		return pollDelivery{}, nil
	}
	if dist, ok := s.distributors[d]; ok {
		return dist, nil
	}
	return nil, rotatord.Errorf(rotatord.EUNSUPPORTED, "delivery %q is not configured on this server", d)
}

// delivery rebuilds what a distributor hands out for the rotation's new key.
func (s *Service) delivery(ctx context.Context, g *rotatord.Agent, r *rotatord.Rotation) (rotatord.Handoff, error) {
	cred, err := s.store.FindCredential(ctx, r.NewCredentialID)
	if err != nil {
		return rotatord.Handoff{}, err
	}
	h := rotatord.Handoff{Account: g.Account, Agent: g.Name, RotationID: r.ID, PublicKey: cred.PublicKey, JWT: cred.JWT,
		IssuedAt: cred.IssuedAt, ExpiresAt: cred.ExpiresAt}
	if cred.SeedEnc != nil {
		if h.Seed, err = s.sealer.Open(cred.SeedEnc, []byte(cred.PublicKey)); err != nil {
			return rotatord.Handoff{}, fmt.Errorf("open seed of %s: %w", cred.PublicKey, err)
		}
		if h.Creds, err = jwtissue.Creds(cred.JWT, h.Seed); err != nil {
			return rotatord.Handoff{}, err
		}
	}
	return h, nil
}

// distribute hands the new credentials out; a failure rolls back before
// anything was revoked but the new key.
func (s *Service) distribute(ctx context.Context, g *rotatord.Agent, r *rotatord.Rotation, now time.Time) (func(), error) {
	dist, err := s.distributor(g.Delivery)
	var ref string
	if err == nil {
		var d rotatord.Handoff
		if d, err = s.delivery(ctx, g, r); err == nil {
			ref, err = dist.Deliver(ctx, d)
		}
	}
	if err != nil {
		s.log.Warn("delivery failed; rolling back", "agent", g.Name, "rotation", r.ID, "err", err)
		return s.rollback(ctx, g, r, now, "delivery failed: "+rotatord.ErrorMessage(err)+deliveryDetail(err))
	}
	deadline := now.Add(g.Rotation.Grace)
	r.State, r.DistributedAt, r.Deadline, r.DeliveryRef = rotatord.RotationDistributed, &now, &deadline, ref
	if err := s.store.UpdateRotation(ctx, r); err != nil {
		return nil, err
	}
	return nil, s.audit(ctx, SystemActor, "credential.deliver", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
		PublicKey: r.NewKey, Rotation: r.ID, Details: map[string]any{"delivery": g.Delivery, "deadline": deadline, "ref": ref}})
}

// deliveryDetail adds a distributor's own error text, which is ours (not a
// secret) but is not an *rotatord.Error.
func deliveryDetail(err error) string {
	var e *rotatord.Error
	if errors.As(err, &e) {
		return ""
	}
	return " (" + err.Error() + ")"
}

// Confirm records that the agent connected with the rotation's new key
// (and the JWT issued for it) and completes the rotation in the same
// transaction: completing touches only the database, so there is no step
// between the two that a crash could interrupt. how says what showed it
// ("event" or "connz"). A key that no rotation waits for is ignored.
func (s *Service) Confirm(ctx context.Context, newKey, jwtID, how string) (*rotatord.Rotation, error) {
	var r *rotatord.Rotation
	var after func()
	err := s.store.InTx(ctx, func(ctx context.Context) error {
		byKey, err := s.store.PendingRotationsByKey(ctx, []string{newKey})
		if err != nil || byKey[newKey] == nil {
			return err
		}
		g, err := s.store.LockAgent(ctx, byKey[newKey].Agent)
		if err != nil {
			return err
		}
		var ok bool
		if r, ok, err = s.store.LockRotation(ctx, byKey[newKey].ID); err != nil || !ok {
			return err
		}
		if r.State != rotatord.RotationIssued && r.State != rotatord.RotationDistributed {
			return nil
		}
		cred, err := s.store.FindCredential(ctx, r.NewCredentialID)
		if err != nil {
			return err
		}
		if jwtID != "" && jwtID != cred.JWTID {
			s.log.Warn("agent connected with the new key but another jwt", "agent", g.Name, "rotation", r.ID, "jwt_id", jwtID)
			return nil
		}
		now := s.now()
		r.State, r.ConfirmedAt, r.ConfirmedBy = rotatord.RotationConfirmed, &now, how
		if err := s.audit(ctx, SystemActor, "rotation.confirm", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
			PublicKey: r.NewKey, Rotation: r.ID, Details: map[string]any{"by": how, "jwt_id": cred.JWTID}}); err != nil {
			return err
		}
		after, err = s.complete(ctx, g, r, now)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("confirm %s: %w", newKey, err)
	}
	if after != nil {
		after()
	}
	return r, nil
}

// complete retires the old key (a revocation entry, folded into the account
// JWT by the re-signer) and makes the new one active.
func (s *Service) complete(ctx context.Context, g *rotatord.Agent, r *rotatord.Rotation, now time.Time) (func(), error) {
	if r.OldCredentialID != 0 {
		old, err := s.store.FindCredential(ctx, r.OldCredentialID)
		if err != nil {
			return nil, err
		}
		if old.State == rotatord.CredentialActive || old.State == rotatord.CredentialPending {
			if err := s.store.SetCredentialState(ctx, old.ID, rotatord.CredentialRetired, now); err != nil {
				return nil, err
			}
			if err := s.store.AddRevocations(ctx, g.AccountID, []rotatord.Revocation{{PublicKey: old.PublicKey,
				RevokedAt: revocationTime(old, now), ExpiresAt: old.ExpiresAt, IssuedAt: old.IssuedAt,
				Agent: g.Name, Reason: "rotated"}}); err != nil {
				return nil, err
			}
			if err := s.store.QueueResign(ctx, g.AccountID); err != nil {
				return nil, err
			}
		}
	}
	if err := s.store.SetCredentialState(ctx, r.NewCredentialID, rotatord.CredentialActive, now); err != nil {
		return nil, err
	}
	g.Failures = 0
	next := s.nextRotation(g, now)
	g.NextRotationAt = &next
	if err := s.store.UpdateAgent(ctx, g); err != nil {
		return nil, err
	}
	r.State, r.FinishedAt = rotatord.RotationCompleted, &now
	if err := s.store.UpdateRotation(ctx, r); err != nil {
		return nil, err
	}
	if r.OldKey != "" {
		if err := s.audit(ctx, SystemActor, "credential.revoke", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
			PublicKey: r.OldKey, Rotation: r.ID, Details: map[string]any{"reason": "rotated"}}); err != nil {
			return nil, err
		}
	}
	if err := s.audit(ctx, SystemActor, "rotation.complete", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
		PublicKey: r.NewKey, Rotation: r.ID, Details: map[string]any{"next_rotation_at": next}}); err != nil {
		return nil, err
	}
	created := r.CreatedAt
	h := rotatord.Handoff{Account: g.Account, Agent: g.Name, RotationID: r.ID, PublicKey: r.NewKey}
	fin, _ := s.distributors[g.Delivery].(Finisher)
	return func() {
		s.metrics.finished(rotatord.RotationCompleted, now.Sub(created))
		s.kickResign()
		if fin != nil {
			if err := fin.Finish(context.WithoutCancel(ctx), h); err != nil {
				s.log.Warn("clean up after delivery", "agent", h.Agent, "rotation", h.RotationID, "err", err)
			}
		}
	}, nil
}

// rollback revokes the new key, keeps the old one, puts back what the
// agent had, raises an alert and schedules a retry with backoff.
func (s *Service) rollback(ctx context.Context, g *rotatord.Agent, r *rotatord.Rotation, now time.Time, reason string) (func(), error) {
	cred, err := s.store.FindCredential(ctx, r.NewCredentialID)
	if err != nil {
		return nil, err
	}
	if r.State == rotatord.RotationDistributed && r.DeliveryRef != "" {
		if dist, err := s.distributor(g.Delivery); err == nil {
			if d, err := s.delivery(ctx, g, r); err == nil {
				if err := dist.Restore(ctx, d, r.DeliveryRef); err != nil {
					reason += "; restoring the previous credentials failed: " + err.Error()
				}
			}
		}
	}
	if cred.State == rotatord.CredentialPending {
		if err := s.store.SetCredentialState(ctx, cred.ID, rotatord.CredentialRevoked, now); err != nil {
			return nil, err
		}
		if err := s.store.AddRevocations(ctx, g.AccountID, []rotatord.Revocation{{PublicKey: cred.PublicKey,
			RevokedAt: revocationTime(cred, now), ExpiresAt: cred.ExpiresAt, IssuedAt: cred.IssuedAt,
			Agent: g.Name, Reason: "rolled back"}}); err != nil {
			return nil, err
		}
		if err := s.store.QueueResign(ctx, g.AccountID); err != nil {
			return nil, err
		}
	}
	g.Failures++
	retry := now.Add(retryBackoff(g.Failures))
	g.NextRotationAt = &retry
	if err := s.store.UpdateAgent(ctx, g); err != nil {
		return nil, err
	}
	r.State, r.Reason, r.FinishedAt = rotatord.RotationRolledBack, reason, &now
	if err := s.store.UpdateRotation(ctx, r); err != nil {
		return nil, err
	}
	severity := rotatord.SeverityWarning
	if g.Active != nil && g.Active.ExpiresAt.Before(retry.Add(g.Rotation.Grace)) {
		// The old key expires before a retry can finish: the agent will be
		// locked out unless someone acts.
		severity = rotatord.SeverityCritical
	}
	alert := &rotatord.Alert{Kind: "rotation_rolled_back", Severity: severity, Account: g.Account, Agent: g.Name,
		Rotation: r.ID, Reason: reason}
	if err := s.store.AddAlert(ctx, alert); err != nil {
		return nil, err
	}
	if err := s.audit(ctx, SystemActor, "rotation.rollback", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
		PublicKey: r.NewKey, Rotation: r.ID, Details: map[string]any{"reason": reason, "retry_at": retry, "failures": g.Failures}}); err != nil {
		return nil, err
	}
	created := r.CreatedAt
	return func() {
		s.metrics.finished(rotatord.RotationRolledBack, now.Sub(created))
		s.kickResign()
		s.kickAlerts()
	}, nil
}

// retryBackoff is the wait before retrying an agent whose rotation failed
// n times in a row: 1m, 2m, 4m, ... up to 1h.
func retryBackoff(n int) time.Duration {
	d := time.Minute
	for i := 1; i < n && d < time.Hour; i++ {
		d *= 2
	}
	return min(d, time.Hour)
}

// nextRotation is the agent's next scheduled rotation after now, with
// jitter of up to a tenth of the interval (at most 30 minutes, which the
// expiry margin covers) so that a fleet does not rotate in one second.
func (s *Service) nextRotation(g *rotatord.Agent, now time.Time) time.Time {
	sched, err := ParseSchedule(g.Rotation.Schedule)
	if err != nil {
		// Stored schedules were validated; fall back to the default.
		sched, _ = ParseSchedule(rotatord.DefaultSchedule)
	}
	next := sched.Next(now)
	spread := min(next.Sub(now)/10, 30*time.Minute)
	if spread > 0 && s.jitter {
		next = next.Add(time.Duration(rand.Int64N(int64(spread))))
	}
	return next
}
