package rotate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
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

// Rotation errors callers can test for; a rotation in flight is a
// *rotatord.RotationInFlightError (isInFlight).
var errAgentRevoked = rotatord.Errorf(rotatord.ECONFLICT, "agent is revoked")

func isInFlight(err error) bool {
	var e *rotatord.RotationInFlightError
	return errors.As(err, &e)
}

// StartRotation issues a new key for the agent and hands it out. It returns
// once the rotation is distributed (or rolled back because delivery failed);
// the agent's reconnect completes it. ECONFLICT while the agent is revoked
// or another rotation of it is in flight (a *rotatord.RotationInFlightError
// naming that one).
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
	var noRoom error
	err := s.inTx(ctx, func(ctx context.Context) error {
		noRoom = nil
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
		if trigger == rotatord.TriggerAgent {
			// Judged under the agent's lock by the database's clock, so
			// replicas agree and two requests at once cannot both pass.
			wait, err := s.store.AgentRotationWait(ctx, g.ID, s.agentRotateEvery)
			if err != nil {
				return err
			}
			if wait > 0 {
				return rotatord.TooManyRequests(wait, "agent %s rotated its own key less than %s ago: try again in %s",
					g.Name, s.agentRotateEvery, wait.Round(time.Second))
			}
		}
		if inflight, err := s.store.InFlightRotation(ctx, g.ID); err != nil {
			return err
		} else if inflight != nil {
			return &rotatord.RotationInFlightError{Agent: g.Name, Rotation: inflight.ID}
		}
		if _, refused, err := s.roomFor(ctx, []*rotatord.Agent{g}); err != nil {
			return err
		} else if len(refused) > 0 {
			// Committed: the alert, and a scheduled retry later rather
			// than at every tick.
			noRoom = refused[0].err
			if trigger == rotatord.TriggerSchedule {
				return s.postpone(ctx, refused, now)
			}
			return nil
		}
		rs, err := s.start(ctx, actor, []*rotatord.Agent{g}, trigger, pub, now)
		if err != nil {
			return err
		}
		r = rs[0]
		return nil
	})
	if err == nil && noRoom != nil {
		err = noRoom
	}
	if err != nil {
		return nil, fmt.Errorf("start rotation of %s: %w", agent, err)
	}
	s.metrics.started(trigger)
	return r, nil
}

// start issues a new key for each agent (locked, active, with no rotation
// in flight) and records the rotations. Handing out by poll only marks the
// creds ready: nothing outside the database happens between issuing and
// distributing, so those rotations are stored distributed at once. pub is
// a key the agent generated (one agent only) or empty.
func (s *Service) start(ctx context.Context, actor Actor, gs []*rotatord.Agent, trigger, pub string, now time.Time) ([]*rotatord.Rotation, error) {
	if memoOf(ctx) == nil {
		ctx = withSignerMemo(ctx) // one read of each signing key per batch
	}
	// Callers sort out the rotations with no room first (roomFor); this
	// keeps one that did not from overfilling an account JWT.
	if _, refused, err := s.roomFor(ctx, gs); err != nil {
		return nil, err
	} else if len(refused) > 0 {
		return nil, refused[0].err
	}
	creds := make([]*rotatord.Credential, len(gs))
	for i, g := range gs {
		var cred *rotatord.Credential
		var err error
		if pub == "" {
			var kp nkeys.KeyPair
			if cred, kp, err = s.issue(ctx, g, now); err != nil {
				return nil, err
			}
			cred.SeedEnc = s.seal(kp)
		} else if cred, err = s.issueFor(ctx, g, pub, now); err != nil {
			return nil, err
		}
		cred.State = rotatord.CredentialPending
		creds[i] = cred
	}
	if err := s.store.CreateCredentials(ctx, creds); err != nil {
		return nil, err
	}
	rs := make([]*rotatord.Rotation, len(gs))
	for i, g := range gs {
		cred := creds[i]
		r := &rotatord.Rotation{AgentID: g.ID, Agent: g.Name, Account: g.Account, AccountID: g.AccountID, AccountKey: g.AccountKey,
			State: rotatord.RotationIssued, Trigger: trigger, NewKey: cred.PublicKey, NewCredentialID: cred.ID}
		if g.Active != nil {
			r.OldKey, r.OldCredentialID = g.Active.PublicKey, g.Active.ID
		}
		if g.Delivery == rotatord.DeliveryPoll {
			deadline := now.Add(g.Rotation.Grace)
			r.State, r.DistributedAt, r.Deadline = rotatord.RotationDistributed, &now, &deadline
		}
		rs[i] = r
	}
	if err := s.store.CreateRotations(ctx, rs); err != nil {
		return nil, err
	}
	for i, g := range gs {
		r, cred := rs[i], creds[i]
		if err := s.audit(ctx, actor, "rotation.start", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
			PublicKey: cred.PublicKey, Rotation: r.ID, Details: map[string]any{"trigger": trigger, "old_key": r.OldKey}}); err != nil {
			return nil, err
		}
		if err := s.audit(ctx, actor, "credential.issue", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
			PublicKey: cred.PublicKey, Rotation: r.ID, Details: map[string]any{"jwt_id": cred.JWTID, "expires_at": cred.ExpiresAt}}); err != nil {
			return nil, err
		}
		if r.State == rotatord.RotationDistributed {
			if err := s.auditDelivered(ctx, g, r); err != nil {
				return nil, err
			}
		}
	}
	return rs, nil
}

// auditDelivered records that a rotation's creds were handed out.
func (s *Service) auditDelivered(ctx context.Context, g *rotatord.Agent, r *rotatord.Rotation) error {
	return s.audit(ctx, SystemActor, "credential.deliver", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
		PublicKey: r.NewKey, Rotation: r.ID, Details: map[string]any{"delivery": g.Delivery, "deadline": *r.Deadline, "ref": r.DeliveryRef}})
}

// startDue starts the scheduled rotations of the named agents that are due,
// many per transaction. It handles agents with poll delivery; the others
// (whose delivery calls out of the database) are returned for one-by-one
// starts. On error nothing was started.
func (s *Service) startDue(ctx context.Context, names []string) (started int, rest []string, err error) {
	now := s.now()
	err = s.inTx(ctx, func(ctx context.Context) error {
		rest = rest[:0]
		locked, err := s.store.LockDueAgents(ctx, names, now)
		if err != nil {
			return err
		}
		poll := make([]*rotatord.Agent, 0, len(locked))
		for _, g := range locked {
			if g.Delivery == rotatord.DeliveryPoll {
				poll = append(poll, g)
			} else {
				rest = append(rest, g.Name)
			}
		}
		if len(poll) == 0 {
			return nil
		}
		poll, refused, err := s.roomFor(ctx, poll)
		if err != nil {
			return err
		}
		if err := s.postpone(ctx, refused, now); err != nil {
			return err
		}
		if len(poll) == 0 {
			return nil
		}
		rs, err := s.start(ctx, SystemActor, poll, rotatord.TriggerSchedule, "", now)
		started = len(rs)
		return err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("start %d rotations: %w", len(names), err)
	}
	for range started {
		s.metrics.started(rotatord.TriggerSchedule)
	}
	return started, rest, nil
}

var errNotDue = rotatord.Errorf(rotatord.ECONFLICT, "agent is not due")

// advance moves a rotation in flight one or more steps, as far as it can
// go now: issued ones are distributed, confirmed ones whose old key is not
// retired yet have it retired (the push completes them), and distributed
// ones past their deadline (or all of them with expire) rolled back. Every step is its own committed transaction under the agent's row
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
	err = s.inTx(ctx, func(ctx context.Context) error {
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
			if r.OldRevokedAt == nil {
				after, err = s.complete(ctx, g, r, now)
				moved = err == nil
			}
		case rotatord.RotationDistributed:
			if expire || (r.Deadline != nil && !now.Before(*r.Deadline)) {
				var held bool
				if !expire {
					// A rollback to credentials that stopped working would
					// lock the agent out (keyhold.go).
					if held, after, err = s.hold(ctx, g, r, now); err != nil {
						return err
					}
				}
				if !held {
					after, err = s.rollback(ctx, g, r, now, "the agent did not reconnect with the new key before the deadline")
				}
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
	if _, poll := dist.(pollDelivery); err == nil && !poll {
		// Poll delivery hands nothing out here: the agent fetches the creds.
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
	if g.Delivery != rotatord.DeliveryPoll {
		// Delivered: the seed is where the agent reads it, and rotatord
		// keeps no copy. A rollback restores by the delivery's reference
		// (a Vault version, the kept file), which needs no seed.
		if err := s.store.ForgetSeed(ctx, r.NewCredentialID); err != nil {
			return nil, err
		}
	}
	return nil, s.auditDelivered(ctx, g, r)
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
// (and the JWT issued for it) and, in the same transaction, retires the old
// key: its revocation entry is recorded and the account queued for a
// re-sign. The rotation is then confirmed; it is completed once the
// re-signed account JWT that revokes the old key is stored and pushed
// (push.go), so that completed means the servers refuse the old key. how
// says what showed the reconnect ("event" or "connz"). A key that no
// rotation waits for is ignored.
func (s *Service) Confirm(ctx context.Context, newKey, jwtID, how string) (*rotatord.Rotation, error) {
	done, err := s.ConfirmMany(ctx, map[string]string{newKey: jwtID}, how)
	if err != nil || len(done) == 0 {
		return nil, err
	}
	return done[0], nil
}

// ConfirmMany is Confirm for many connected keys (user key to the ID of the
// JWT it connected with, or "" when unknown) in one transaction, and
// returns the rotations it confirmed (or completed, when there was no old
// key to revoke).
func (s *Service) ConfirmMany(ctx context.Context, conns map[string]string, how string) ([]*rotatord.Rotation, error) {
	waiting, err := s.waitingFor(ctx, conns)
	if err != nil || len(waiting) == 0 {
		return nil, err
	}
	return s.confirm(ctx, waiting, conns, how)
}

// waitingFor finds the rotations waiting for any of the connected keys.
func (s *Service) waitingFor(ctx context.Context, conns map[string]string) ([]*rotatord.Rotation, error) {
	byKey, err := s.store.PendingRotationsByKey(ctx, slices.Collect(maps.Keys(conns)))
	if err != nil {
		return nil, fmt.Errorf("look up connecting keys: %w", err)
	}
	return slices.Collect(maps.Values(byKey)), nil
}

// confirm confirms rotations found waiting for a connected key and
// retires their old keys, in one transaction; under their locks it checks
// that each still waits, so rotations read before it began are fine.
func (s *Service) confirm(ctx context.Context, waiting []*rotatord.Rotation, conns map[string]string, how string) ([]*rotatord.Rotation, error) {
	var done []*rotatord.Rotation
	var after func()
	err := s.inTx(ctx, func(ctx context.Context) error {
		done = done[:0]
		// Lock order everywhere: agents (by ID), then rotations, then accounts.
		agentIDs := make([]int64, 0, len(waiting))
		rotIDs := make([]string, 0, len(waiting))
		for _, r := range waiting {
			agentIDs = append(agentIDs, r.AgentID)
			rotIDs = append(rotIDs, r.ID)
		}
		agents, err := s.store.LockAgentsByID(ctx, agentIDs)
		if err != nil {
			return err
		}
		locked, err := s.store.LockRotations(ctx, rotIDs)
		if err != nil {
			return err
		}
		credIDs := make([]int64, 0, len(locked))
		for _, r := range locked {
			credIDs = append(credIDs, r.NewCredentialID)
		}
		creds, err := s.store.FindCredentials(ctx, credIDs)
		if err != nil {
			return err
		}
		now := s.now()
		var items []completion
		for _, r := range locked {
			g, cred := agents[r.AgentID], creds[r.NewCredentialID]
			if g == nil || cred == nil || (r.State != rotatord.RotationIssued && r.State != rotatord.RotationDistributed) {
				continue
			}
			if jwtID := conns[r.NewKey]; jwtID != "" && jwtID != cred.JWTID {
				s.log.Warn("agent connected with the new key but another jwt", "agent", g.Name, "rotation", r.ID, "jwt_id", jwtID)
				continue
			}
			r.State, r.ConfirmedAt, r.ConfirmedBy = rotatord.RotationConfirmed, &now, how
			if err := s.audit(ctx, SystemActor, "rotation.confirm", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
				PublicKey: r.NewKey, Rotation: r.ID, Details: map[string]any{"by": how, "jwt_id": cred.JWTID}}); err != nil {
				return err
			}
			items = append(items, completion{g, r})
		}
		if len(items) == 0 {
			return nil
		}
		after, err = s.completeMany(ctx, items, now)
		for _, it := range items {
			done = append(done, it.r)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("confirm %d rotations: %w", len(waiting), err)
	}
	if after != nil {
		after()
	}
	return done, nil
}

// completion is a confirmed rotation and its agent, both locked.
type completion struct {
	g *rotatord.Agent
	r *rotatord.Rotation
}

// complete retires the old key of a confirmed rotation whose old key was
// not retired yet (a rotation left confirmed by an older rotatord).
func (s *Service) complete(ctx context.Context, g *rotatord.Agent, r *rotatord.Rotation, now time.Time) (func(), error) {
	return s.completeMany(ctx, []completion{{g, r}}, now)
}

// completeMany retires the old keys of confirmed rotations with one
// statement per step: the old credential is retired and its revocation
// entry recorded (folded into the account JWT by the re-signer), the new
// one made active, and the agent's next rotation scheduled. The rotations
// stay confirmed until the re-signed JWT is pushed (settle, in push.go);
// a rotation with no old key to revoke is completed at once.
func (s *Service) completeMany(ctx context.Context, items []completion, now time.Time) (func(), error) {
	oldIDs := make([]int64, 0, len(items))
	newIDs := make([]int64, 0, len(items))
	for _, it := range items {
		if it.r.OldCredentialID != 0 {
			oldIDs = append(oldIDs, it.r.OldCredentialID)
		}
		newIDs = append(newIDs, it.r.NewCredentialID)
	}
	olds, err := s.store.FindCredentials(ctx, oldIDs)
	if err != nil {
		return nil, err
	}
	dead, err := s.signedByRetired(ctx, olds)
	if err != nil {
		return nil, err
	}
	var retire []int64
	revs := map[int64][]rotatord.Revocation{}
	var accounts []int64
	revoking := map[string]bool{} // rotation IDs whose old key is revoked now
	deadByAccount := map[int64][]string{}
	for _, it := range items {
		old := olds[it.r.OldCredentialID]
		if old == nil || (old.State != rotatord.CredentialActive && old.State != rotatord.CredentialPending) {
			continue
		}
		revoking[it.r.ID] = true
		retire = append(retire, old.ID)
		if dead[old.SigningKey] {
			// Its signing key is out of the account JWT: the stored JWT
			// refuses it already, and an entry would only grow the JWT
			// (keyhold.go).
			deadByAccount[it.g.AccountID] = append(deadByAccount[it.g.AccountID], it.r.ID)
			continue
		}
		if revs[it.g.AccountID] == nil {
			accounts = append(accounts, it.g.AccountID)
		}
		revs[it.g.AccountID] = append(revs[it.g.AccountID], revocationOf(old, now, it.g.Name, rotatord.RevocationRotated))
	}
	if len(retire) > 0 {
		if err := s.store.SetCredentialStates(ctx, retire, rotatord.CredentialRetired, now); err != nil {
			return nil, err
		}
	}
	slices.Sort(accounts)
	for _, acc := range accounts {
		if err := s.store.AddRevocations(ctx, acc, revs[acc]); err != nil {
			return nil, err
		}
		if err := s.store.QueueResign(ctx, acc); err != nil {
			return nil, err
		}
	}
	if err := s.store.SetCredentialStates(ctx, newIDs, rotatord.CredentialActive, now); err != nil {
		return nil, err
	}
	gs := make([]*rotatord.Agent, len(items))
	rs := make([]*rotatord.Rotation, len(items))
	for i, it := range items {
		it.g.Failures = 0
		next := s.nextRotation(it.g, now)
		it.g.NextRotationAt = &next
		if revoking[it.r.ID] {
			at := now
			it.r.State, it.r.OldRevokedAt = rotatord.RotationConfirmed, &at
		} else {
			// Nothing to revoke (no old key, or it was revoked already).
			it.r.State, it.r.FinishedAt = rotatord.RotationCompleted, &now
		}
		gs[i], rs[i] = it.g, it.r
	}
	if err := s.stampSignedByRetired(ctx, items, deadByAccount); err != nil {
		return nil, err
	}
	if err := s.store.SetSchedules(ctx, gs); err != nil {
		return nil, err
	}
	if err := s.store.UpdateRotations(ctx, rs); err != nil {
		return nil, err
	}
	type finish struct {
		fin Finisher
		h   rotatord.Handoff
	}
	var finishes []finish
	var durations []time.Duration
	for _, it := range items {
		g, r := it.g, it.r
		if revoking[r.ID] {
			if err := s.audit(ctx, SystemActor, "credential.revoke", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
				PublicKey: r.OldKey, Rotation: r.ID, Details: map[string]any{"reason": "rotated", "next_rotation_at": *g.NextRotationAt}}); err != nil {
				return nil, err
			}
		} else {
			if err := s.audit(ctx, SystemActor, "rotation.complete", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
				PublicKey: r.NewKey, Rotation: r.ID, Details: map[string]any{"next_rotation_at": *g.NextRotationAt}}); err != nil {
				return nil, err
			}
			durations = append(durations, now.Sub(r.CreatedAt))
		}
		// The old key is retired: a rollback can no longer happen, so what
		// was kept for one goes.
		if fin, ok := s.distributors[g.Delivery].(Finisher); ok {
			finishes = append(finishes, finish{fin, rotatord.Handoff{Account: g.Account, Agent: g.Name, RotationID: r.ID, PublicKey: r.NewKey}})
		}
	}
	return func() {
		for _, d := range durations {
			s.metrics.finished(rotatord.RotationCompleted, d)
		}
		s.kickResign()
		for acc := range deadByAccount {
			s.pushSoon(acc) // completes them (its JWT may be pushed already)
		}
		for _, f := range finishes {
			if err := f.fin.Finish(context.WithoutCancel(ctx), f.h); err != nil {
				s.log.Warn("clean up after delivery", "agent", f.h.Agent, "rotation", f.h.RotationID, "err", err)
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
		if err := s.store.AddRevocations(ctx, g.AccountID, []rotatord.Revocation{revocationOf(cred, now, g.Name, "rolled back")}); err != nil {
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
	next := nextRun(sched, now)
	spread := min(next.Sub(now)/10, 30*time.Minute)
	if spread > 0 && s.jitter {
		next = next.Add(time.Duration(rand.Int64N(int64(spread))))
	}
	return next
}
