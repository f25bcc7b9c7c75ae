package rotate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rotatord/rotatord"
)

// Fleet rotations re-key every agent of an account (or of a role) in waves:
// the waves are cumulative percents of the agents, the first one a canary;
// each wave starts when the previous one ended (every rotation of it
// completed or rolled back); a wave whose failures (rollbacks, and agents
// with auth-failure alerts since it started) pass the rate halts the
// operation with an alert, and an operator resumes or aborts it. Every step
// is a committed state: the driver (DriveFleets, from Tick and from
// RunKeyLifecycle) claims a fleet rotation with SKIP LOCKED, so any replica
// resumes what another left.

// Defaults of fleet rotations.
var (
	// DefaultFleetWaves are rotate-all's waves: a 1% canary, then 10%,
	// then everyone.
	DefaultFleetWaves = []int{1, 10, 100}
	// KeyRotationWaves are the waves of a staged signing-key rotation's
	// re-issue.
	KeyRotationWaves = []int{10, 100}
)

// Default halt rates.
const (
	DefaultFleetHaltRate = 0.05
	KeyRotationHaltRate  = 0.2
)

// authFailureKinds are the alerts (internal/authwatch's kinds) that count
// against the wave of the agent they name.
var authFailureKinds = []string{"auth_failures", "revoked_key_used"}

// fleetWorkers bounds the transactions that start a wave's rotations at
// once: issuing is CPU work (key pairs, signatures), so more would only
// queue on the cores and hold database connections.
const fleetWorkers = 4

// Alert kinds of the key lifecycle.
const (
	AlertFleetHalted        = "fleet_rotation_halted"
	AlertKeyRotationWaiting = "key_rotation_waiting"
	AlertRotationHeld       = "rotation_held"
)

// FleetInput is what a caller gives to start a fleet-wide rotation; nil
// fields take the defaults (DefaultFleetWaves, DefaultFleetHaltRate).
type FleetInput struct {
	Waves             []int
	HaltOnFailureRate *float64
}

// RotateAll starts a fleet-wide rotation of every active agent of an
// account, in waves. Only one fleet operation per account runs at a time
// (ECONFLICT, naming the one in flight, also while a signing-key rotation
// re-issues the agents); bad waves or rate are EINVALID; an unknown account
// ENOTFOUND.
func (s *Service) RotateAll(ctx context.Context, actor Actor, account string, in FleetInput) (*rotatord.FleetRotation, error) {
	waves := in.Waves
	if waves == nil {
		waves = DefaultFleetWaves
	}
	if err := rotatord.ValidateWaves(waves); err != nil {
		return nil, err
	}
	rate := DefaultFleetHaltRate
	if in.HaltOnFailureRate != nil {
		rate = *in.HaltOnFailureRate
	}
	if err := rotatord.ValidateHaltRate(rate); err != nil {
		return nil, err
	}
	var f *rotatord.FleetRotation
	err := s.inTx(ctx, func(ctx context.Context) error {
		found, err := s.store.FindAccountByName(ctx, account)
		if err != nil {
			return err
		}
		if found.System {
			return rotatord.Errorf(rotatord.EINVALID, "the system account has no agents")
		}
		acc, err := s.store.LockAccount(ctx, found.ID)
		if err != nil {
			return err
		}
		if err := s.fleetSlotFree(ctx, acc); err != nil {
			return err
		}
		f = &rotatord.FleetRotation{AccountID: acc.ID, Account: acc.Name, Waves: slices.Clone(waves), HaltOnFailureRate: rate,
			State: rotatord.FleetRunning, Trigger: rotatord.TriggerFleet, Actor: string(actor)}
		if err := s.store.CreateFleetRotation(ctx, f); err != nil {
			return err
		}
		ids, err := s.store.AgentIDsOf(ctx, acc.ID, 0)
		if err != nil {
			return err
		}
		if err := s.store.AddFleetMembers(ctx, f.ID, ids, assignWaves(len(ids), f.Waves)); err != nil {
			return err
		}
		return s.audit(ctx, actor, "fleet_rotation.start", rotatord.AuditEvent{Account: acc.Name, Details: map[string]any{
			"fleet_rotation": f.ID, "waves": f.Waves, "halt_on_failure_rate": rate, "agents": len(ids)}})
	})
	if err != nil {
		return nil, fmt.Errorf("rotate all agents of %s: %w", account, err)
	}
	s.kickKeys()
	return f, nil
}

// fleetSlotFree refuses a new fleet operation on an account (locked) while
// one is in flight, naming it. The database refuses a second one anyway
// (fleet_rotations_one_per_account); this says which and what to do.
func (s *Service) fleetSlotFree(ctx context.Context, acc *rotatord.Account) error {
	f, err := s.store.ActiveFleetRotation(ctx, acc.ID)
	if err != nil || f == nil {
		return err
	}
	if f.KeyRotation != "" {
		return rotatord.Errorf(rotatord.ECONFLICT, "fleet rotation %s of account %s is %s, re-issuing the agents of key rotation %s: "+
			"wait for it, or complete or abandon the key rotation", f.ID, acc.Name, f.State, f.KeyRotation)
	}
	return rotatord.Errorf(rotatord.ECONFLICT, "fleet rotation %s of account %s is %s: one fleet operation per account at a time; "+
		"wait for it, or resume or abort it (POST /v1/fleet-rotations/%s/resume|abort)", f.ID, acc.Name, f.State, f.ID)
}

// assignWaves returns the wave of each of n agents in order (WaveEnds).
func assignWaves(n int, waves []int) []int {
	out := make([]int, n)
	ends := rotatord.WaveEnds(n, waves)
	w := 0
	for i := range out {
		for i >= ends[w] {
			w++
		}
		out[i] = w + 1
	}
	return out
}

// FleetRotation returns a fleet rotation with its progress; an unknown ID
// is ENOTFOUND.
func (s *Service) FleetRotation(ctx context.Context, id string) (*rotatord.FleetRotation, error) {
	f, err := s.store.FindFleetRotation(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.fillProgress(ctx, f); err != nil {
		return nil, err
	}
	return f, nil
}

// FleetRotations lists fleet rotations, newest first, with their progress.
// An unknown account is ENOTFOUND.
func (s *Service) FleetRotations(ctx context.Context, f rotatord.FleetFilter) ([]*rotatord.FleetRotation, error) {
	if f.Account != "" {
		if _, err := s.store.FindAccountByName(ctx, f.Account); err != nil {
			return nil, err
		}
	}
	list, err := s.store.ListFleetRotations(ctx, f)
	if err != nil {
		return nil, err
	}
	for _, fr := range list {
		if err := s.fillProgress(ctx, fr); err != nil {
			return nil, err
		}
	}
	return list, nil
}

// fillProgress counts every wave's agents; a wave that ended reports the
// auth failures it ended with.
func (s *Service) fillProgress(ctx context.Context, f *rotatord.FleetRotation) error {
	since := map[int]time.Time{}
	for _, l := range f.WaveLog {
		if l.StartedAt != nil {
			since[l.Wave] = *l.StartedAt
		}
	}
	counts, err := s.store.FleetProgress(ctx, f.ID, 0, authFailureKinds, since)
	if err != nil {
		return err
	}
	f.Progress = make([]rotatord.FleetWave, len(f.Waves))
	for i, p := range f.Waves {
		w := counts[i+1]
		w.Wave, w.Percent = i+1, p
		if l := waveLog(f, i+1); l != nil {
			w.StartedAt, w.EndedAt = l.StartedAt, l.EndedAt
			if l.EndedAt != nil {
				w.AuthFailures = l.AuthFailures
			}
		}
		f.Progress[i] = w
	}
	return nil
}

// waveLog returns the log entry of a wave, or nil before it started.
func waveLog(f *rotatord.FleetRotation, wave int) *rotatord.FleetWaveLog {
	for i := range f.WaveLog {
		if f.WaveLog[i].Wave == wave {
			return &f.WaveLog[i]
		}
	}
	return nil
}

// ResumeFleetRotation resumes a halted fleet rotation: the failures of the
// wave that halted it are accepted, its remaining agents go on, and the
// next wave starts once it ended (at once if it had). The rotations that
// failed are not retried by the fleet rotation: each agent's own schedule
// retries it with backoff. ECONFLICT unless the rotation is halted.
func (s *Service) ResumeFleetRotation(ctx context.Context, actor Actor, id string) (*rotatord.FleetRotation, error) {
	f, err := s.endFleet(ctx, actor, id, "resume", func(f *rotatord.FleetRotation) error {
		if f.State != rotatord.FleetHalted {
			return rotatord.Errorf(rotatord.ECONFLICT, "fleet rotation %s is %s: only a halted one resumes", f.ID, f.State)
		}
		if l := waveLog(f, f.Wave); l != nil {
			l.Resumed = true
		}
		f.State, f.Reason = rotatord.FleetRunning, ""
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.kickKeys()
	return f, nil
}

// AbortFleetRotation stops a running or halted fleet rotation: agents whose
// wave did not start keep their keys; rotations in flight go on to their
// own end. A signing-key rotation whose re-issue this was then waits for
// the agents still on the old key (complete or abandon it). ECONFLICT for
// one that ended.
func (s *Service) AbortFleetRotation(ctx context.Context, actor Actor, id string) (*rotatord.FleetRotation, error) {
	f, err := s.endFleet(ctx, actor, id, "abort", func(f *rotatord.FleetRotation) error {
		if f.State != rotatord.FleetRunning && f.State != rotatord.FleetHalted {
			return rotatord.Errorf(rotatord.ECONFLICT, "fleet rotation %s is %s already", f.ID, f.State)
		}
		abortFleet(f, s.now(), "aborted by "+string(actor))
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.kickKeys()
	return f, nil
}

// abortFleet ends f (running or halted) as aborted.
func abortFleet(f *rotatord.FleetRotation, now time.Time, reason string) {
	f.State, f.Reason, f.FinishedAt = rotatord.FleetAborted, reason, &now
}

// endFleet changes a fleet rotation under its lock (waiting for a driver
// that holds it) and records what was done.
func (s *Service) endFleet(ctx context.Context, actor Actor, id, action string, change func(*rotatord.FleetRotation) error) (*rotatord.FleetRotation, error) {
	var f *rotatord.FleetRotation
	err := s.inTx(ctx, func(ctx context.Context) error {
		var err error
		if f, _, err = s.store.LockFleetRotation(ctx, id, false); err != nil {
			return err
		}
		if err := change(f); err != nil {
			return err
		}
		if err := s.store.UpdateFleetRotation(ctx, f); err != nil {
			return err
		}
		return s.audit(ctx, actor, "fleet_rotation."+action, rotatord.AuditEvent{Account: f.Account,
			Details: map[string]any{"fleet_rotation": f.ID, "wave": f.Wave, "state": f.State}})
	})
	if err != nil {
		return nil, fmt.Errorf("%s fleet rotation %s: %w", action, id, err)
	}
	if err := s.fillProgress(ctx, f); err != nil {
		return nil, err
	}
	return f, nil
}

// DriveFleets moves every running fleet rotation along: it starts waves,
// starts the rotations of their agents, ends waves whose rotations all
// ended and halts those that failed too often. It returns how many it
// moved.
func (s *Service) DriveFleets(ctx context.Context) (int, error) {
	ids, err := s.store.RunningFleetRotations(ctx, 100)
	if err != nil {
		return 0, err
	}
	var errs []error
	n := 0
	for _, id := range ids {
		moved, err := s.driveFleet(ctx, id)
		if err != nil {
			errs = append(errs, err)
		}
		if moved {
			n++
		}
	}
	return n, errors.Join(errs...)
}

// driveFleet does what a running fleet rotation needs now, under its lock
// (skipped when another replica drives it); then, outside of it, it starts
// the rotations of its current wave's waiting agents.
func (s *Service) driveFleet(ctx context.Context, id string) (bool, error) {
	var (
		f       *rotatord.FleetRotation
		changed bool
		ended   bool
	)
	err := s.inTx(ctx, func(ctx context.Context) error {
		var ok bool
		var err error
		if f, ok, err = s.store.LockFleetRotation(ctx, id, true); err != nil || !ok || f.State != rotatord.FleetRunning {
			f = nil
			return err
		}
		if f.KeyRotation != "" {
			k, err := s.store.FindKeyRotation(ctx, f.KeyRotation)
			if err != nil {
				return err
			}
			if k.State == rotatord.KeyRotationAdding {
				f = nil // the servers do not trust the new key yet
				return nil
			}
		}
		if changed, ended, err = s.advanceWaves(ctx, f); err != nil || !changed {
			return err
		}
		return s.store.UpdateFleetRotation(ctx, f)
	})
	if err != nil {
		return false, fmt.Errorf("drive fleet rotation %s: %w", id, err)
	}
	if f == nil {
		return false, nil
	}
	if f.State == rotatord.FleetHalted {
		s.kickAlerts()
	}
	if ended {
		s.kickKeys() // the key rotation it re-issues for moves on
	}
	if f.State != rotatord.FleetRunning {
		return changed, nil
	}
	started, err := s.startWave(ctx, f, f.Wave)
	return changed || started > 0, err
}

// advanceWaves starts the first wave, ends the current one once every
// rotation of it ended (starting the next, or completing f), or halts f
// when the current wave failed too often. It reports whether f changed and
// whether it completed.
func (s *Service) advanceWaves(ctx context.Context, f *rotatord.FleetRotation) (changed, ended bool, err error) {
	now, err := s.store.DBNow(ctx)
	if err != nil {
		return false, false, err
	}
	if f.Wave == 0 {
		if err := s.firstWave(ctx, f, now); err != nil {
			return false, false, err
		}
		changed = true
	}
	for {
		l := waveLog(f, f.Wave)
		counts, err := s.store.FleetProgress(ctx, f.ID, f.Wave, authFailureKinds, map[int]time.Time{f.Wave: *l.StartedAt})
		if err != nil {
			return false, false, err
		}
		w := counts[f.Wave]
		w.Wave, w.Percent = f.Wave, f.Waves[f.Wave-1]
		if l.Failed != w.Failed || l.AuthFailures != w.AuthFailures {
			l.Failed, l.AuthFailures, changed = w.Failed, w.AuthFailures, true
		}
		if !l.Resumed && w.FailureRate() > f.HaltOnFailureRate {
			return true, false, s.haltFleet(ctx, f, w)
		}
		if !w.Ended() {
			return changed, false, nil
		}
		l.EndedAt, changed = &now, true
		if f.Wave == len(f.Waves) {
			f.State, f.FinishedAt = rotatord.FleetCompleted, &now
			return true, true, s.audit(ctx, SystemActor, "fleet_rotation.complete", rotatord.AuditEvent{Account: f.Account,
				Details: map[string]any{"fleet_rotation": f.ID, "waves": f.WaveLog}})
		}
		f.Wave++
		f.WaveLog = append(f.WaveLog, rotatord.FleetWaveLog{Wave: f.Wave, StartedAt: &now})
		if err := s.audit(ctx, SystemActor, "fleet_rotation.wave", rotatord.AuditEvent{Account: f.Account,
			Details: map[string]any{"fleet_rotation": f.ID, "wave": f.Wave, "percent": f.Waves[f.Wave-1]}}); err != nil {
			return false, false, err
		}
	}
}

// firstWave starts wave 1. A key rotation's fleet rotation takes its agents
// now, once the new key signs: those holding a credential signed by a key
// being replaced.
func (s *Service) firstWave(ctx context.Context, f *rotatord.FleetRotation, now time.Time) error {
	if f.KeyRotation != "" {
		ids, _, err := s.store.KeyHolders(ctx, f.Replacing, s.now(), 0)
		if err != nil {
			return err
		}
		if err := s.store.AddFleetMembers(ctx, f.ID, ids, assignWaves(len(ids), f.Waves)); err != nil {
			return err
		}
	}
	f.Wave = 1
	f.WaveLog = append(f.WaveLog, rotatord.FleetWaveLog{Wave: 1, StartedAt: &now})
	return s.audit(ctx, SystemActor, "fleet_rotation.wave", rotatord.AuditEvent{Account: f.Account,
		Details: map[string]any{"fleet_rotation": f.ID, "wave": 1, "percent": f.Waves[0]}})
}

// haltFleet halts f because wave w failed too often, with an alert.
func (s *Service) haltFleet(ctx context.Context, f *rotatord.FleetRotation, w rotatord.FleetWave) error {
	f.State = rotatord.FleetHalted
	f.Reason = fmt.Sprintf("wave %d of %d (%d%%, %d agents): %d rolled back and %d with auth-failure alerts, "+
		"a failure rate of %.2f, above halt_on_failure_rate %.2f; resume (POST /v1/fleet-rotations/%s/resume) "+
		"accepts it and goes on, abort (.../abort) stops", w.Wave, len(f.Waves), w.Percent, w.Agents, w.Failed, w.AuthFailures,
		w.FailureRate(), f.HaltOnFailureRate, f.ID)
	what := "fleet rotation"
	if f.KeyRotation != "" {
		what = "the re-issue of key rotation " + f.KeyRotation
	}
	if err := s.store.AddAlert(ctx, &rotatord.Alert{Kind: AlertFleetHalted, Severity: rotatord.SeverityCritical,
		Account: f.Account, Reason: what + " " + f.ID + " halted: " + f.Reason}); err != nil {
		return err
	}
	return s.audit(ctx, SystemActor, "fleet_rotation.halt", rotatord.AuditEvent{Account: f.Account,
		Details: map[string]any{"fleet_rotation": f.ID, "wave": w.Wave, "agents": w.Agents, "failed": w.Failed,
			"auth_failures": w.AuthFailures, "rate": f.HaltOnFailureRate}})
}

// startWave starts the rotations of a wave's waiting agents, a batch per
// transaction, and then hands out those whose delivery calls out of the
// database (Vault, files). It returns how many it started.
func (s *Service) startWave(ctx context.Context, f *rotatord.FleetRotation, wave int) (int, error) {
	ids, err := s.store.WaitingMembers(ctx, f.ID, wave)
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	return s.reissue(ctx, reissueSpec{fleet: f, replacing: f.Replacing, trigger: f.Trigger, actor: Actor(f.Actor)}, ids)
}

// reissueSpec says how reissue starts rotations: for the agents of a fleet
// rotation (fleet set: its members are updated) or for agents a key
// rotation sweeps up.
type reissueSpec struct {
	fleet     *rotatord.FleetRotation
	replacing []string
	trigger   string
	actor     Actor
	// wait waits for fleet members another transaction holds (an agent
	// asking for its own re-issue) instead of skipping them.
	wait bool
}

// reissue starts rotations of the given agents (see startBatch) and hands
// out those that are not polled. It returns how many it started.
func (s *Service) reissue(ctx context.Context, spec reissueSpec, ids []int64) (int, error) {
	var (
		mu      sync.Mutex
		started int
		deliver []string
		errs    []error
	)
	forEachN(ctx, s.log, fleetWorkers, slices.Collect(slices.Chunk(ids, batchSize)), func(ctx context.Context, batch []int64) error {
		n, out, err := s.startBatch(ctx, spec, batch)
		mu.Lock()
		defer mu.Unlock()
		started += n
		deliver = append(deliver, out...)
		if err != nil {
			errs = append(errs, err)
			return errSkip // reported once, below
		}
		return nil
	})
	for range started {
		s.metrics.started(spec.trigger)
	}
	forEach(ctx, s.log, deliver, func(ctx context.Context, id string) error {
		_, err := s.advance(ctx, id, false)
		return err
	})
	return started, errors.Join(errs...)
}

// startBatch starts, in one transaction, the rotations of a batch of
// agents. For each agent (locked): a revoked one is skipped, and so is one
// that no longer depends on a replaced key; a rotation in flight is adopted
// when its new credentials do not depend on a replaced key either, is
// superseded when they were signed by a key already retired (they would
// never work), and is waited for otherwise; the others get a new rotation.
// It returns how many it started and the IDs of those to hand out.
func (s *Service) startBatch(ctx context.Context, spec reissueSpec, batch []int64) (started int, deliver []string, err error) {
	err = s.inTx(ctx, func(ctx context.Context) error {
		started, deliver = 0, nil
		ids := batch
		if spec.fleet != nil {
			var err error
			if ids, err = s.store.LockWaitingMembers(ctx, spec.fleet.ID, batch, !spec.wait); err != nil || len(ids) == 0 {
				return err
			}
		}
		agents, err := s.store.LockAgentsByID(ctx, ids)
		if err != nil {
			return err
		}
		inflight, err := s.store.InFlightByAgents(ctx, ids)
		if err != nil {
			return err
		}
		var credIDs []int64
		for _, r := range inflight {
			credIDs = append(credIDs, r.NewCredentialID)
		}
		creds, err := s.store.FindCredentials(ctx, credIDs)
		if err != nil {
			return err
		}
		var keys []string
		for _, c := range creds {
			keys = append(keys, c.SigningKey)
		}
		retired, err := s.store.RetiredSigningKeys(ctx, keys)
		if err != nil {
			return err
		}
		replacing := map[string]bool{}
		for _, k := range spec.replacing {
			replacing[k] = true
		}
		now := s.now()
		var (
			members []rotatord.FleetMember
			start   []*rotatord.Agent
		)
		for _, id := range ids {
			g := agents[id]
			if g == nil || g.State != rotatord.AgentActive {
				members = append(members, rotatord.FleetMember{AgentID: id, State: rotatord.MemberSkipped, Reason: "revoked"})
				continue
			}
			r := inflight[id]
			var pending *rotatord.Credential
			if r != nil {
				pending = creds[r.NewCredentialID]
			}
			if len(replacing) > 0 {
				holds := g.Active != nil && replacing[g.Active.SigningKey] || pending != nil && replacing[pending.SigningKey]
				if !holds {
					members = append(members, rotatord.FleetMember{AgentID: id, State: rotatord.MemberSkipped, Reason: "on the new key already"})
					continue
				}
			}
			if r != nil {
				switch {
				case pending != nil && retired[pending.SigningKey]:
					if err := s.supersede(ctx, spec.actor, g, r, pending, now); err != nil {
						return err
					}
				case pending == nil || !replacing[pending.SigningKey]:
					members = append(members, rotatord.FleetMember{AgentID: id, State: rotatord.MemberRotating, RotationID: r.ID, Reason: "adopted"})
					continue
				default:
					continue // waits for the rotation in flight to end
				}
			}
			start = append(start, g)
		}
		if len(start) > 0 {
			rs, err := s.start(ctx, spec.actor, start, spec.trigger, "", now)
			if err != nil {
				return err
			}
			for i, r := range rs {
				members = append(members, rotatord.FleetMember{AgentID: start[i].ID, State: rotatord.MemberRotating, RotationID: r.ID})
				if r.State == rotatord.RotationIssued {
					deliver = append(deliver, r.ID)
				}
			}
			started = len(rs)
		}
		if spec.fleet == nil {
			return nil
		}
		return s.store.SetFleetMembers(ctx, spec.fleet.ID, members)
	})
	if err != nil {
		return 0, nil, fmt.Errorf("start rotations of %d agents: %w", len(batch), err)
	}
	return started, deliver, nil
}

// startOwnReissue starts at once the rotation of an agent that asks for new
// credentials while the current wave of a running fleet rotation holds it,
// still waiting: when a fleet is dropped at once (an emergency rotation of
// its signing key), every agent polls at the same moment, and each finds its
// new credentials on its first poll instead of waiting for the batches to
// reach it. Agents asking at the same time are started together, in one
// transaction (ownBatch). It returns the agent's rotation in flight, or nil
// when it has none (no fleet rotation waits for it, or it was skipped).
// Waves are kept: an agent of a later wave is not started.
func (s *Service) startOwnReissue(ctx context.Context, g *rotatord.Agent) (*rotatord.Rotation, error) {
	f, err := s.store.WaitingFleetOf(ctx, g.ID)
	if err != nil || f == nil {
		return nil, err
	}
	b := s.joinOwnBatch(f, g.ID)
	select {
	case <-b.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if b.err != nil {
		return nil, b.err
	}
	return s.store.InFlightRotation(ctx, g.ID)
}

// Agents' own re-issues are gathered for ownBatchWait, or until
// batchSize of them, and started in one transaction.
const ownBatchWait = 5 * time.Millisecond

// ownBatch is the agents of one fleet rotation asking for their re-issue
// together.
type ownBatch struct {
	fleet *rotatord.FleetRotation
	ids   []int64
	full  chan struct{} // closed at batchSize agents
	done  chan struct{} // closed once started (err says how it went)
	err   error
}

// ownBatches gathers the agents' own re-issues by fleet rotation.
type ownBatches struct {
	mu      sync.Mutex
	pending map[string]*ownBatch
}

// joinOwnBatch adds an agent to the batch being gathered for its fleet
// rotation; the first to join starts it once it is full or has waited.
func (s *Service) joinOwnBatch(f *rotatord.FleetRotation, agentID int64) *ownBatch {
	s.own.mu.Lock()
	defer s.own.mu.Unlock()
	if s.own.pending == nil {
		s.own.pending = map[string]*ownBatch{}
	}
	b := s.own.pending[f.ID]
	if b == nil {
		b = &ownBatch{fleet: f, full: make(chan struct{}), done: make(chan struct{})}
		s.own.pending[f.ID] = b
		go s.runOwnBatch(b)
	}
	b.ids = append(b.ids, agentID)
	if len(b.ids) == batchSize {
		delete(s.own.pending, f.ID) // the next agent starts another
		close(b.full)
	}
	return b
}

func (s *Service) runOwnBatch(b *ownBatch) {
	t := time.NewTimer(ownBatchWait)
	select {
	case <-b.full:
		t.Stop()
	case <-t.C:
		s.own.mu.Lock()
		if s.own.pending[b.fleet.ID] == b {
			delete(s.own.pending, b.fleet.ID)
		}
		s.own.mu.Unlock()
	}
	// Not any one agent's request: they share the outcome.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := b.fleet
	n, _, err := s.startBatch(ctx, reissueSpec{fleet: f, replacing: f.Replacing, trigger: f.Trigger, actor: Actor(f.Actor), wait: true}, b.ids)
	for range n {
		s.metrics.started(f.Trigger)
	}
	b.err = err
	close(b.done)
}

// supersede ends a rotation in flight whose new credentials were signed by
// a key that was retired since (an emergency rotation removed it): they
// would never be accepted. Its pending key needs no revocation entry, as
// nothing its signing key signed is accepted any more.
func (s *Service) supersede(ctx context.Context, actor Actor, g *rotatord.Agent, r *rotatord.Rotation, pending *rotatord.Credential, now time.Time) error {
	r.State, r.FinishedAt = rotatord.RotationRolledBack, &now
	r.Reason = "superseded: its new credentials were signed by signing key " + pending.SigningKey + ", which was removed"
	if err := s.store.UpdateRotation(ctx, r); err != nil {
		return err
	}
	if err := s.store.SetCredentialState(ctx, pending.ID, rotatord.CredentialRevoked, now); err != nil {
		return err
	}
	return s.audit(ctx, actor, "rotation.rollback", rotatord.AuditEvent{Account: g.Account, Agent: g.Name,
		PublicKey: r.NewKey, Rotation: r.ID, Details: map[string]any{"reason": r.Reason}})
}
