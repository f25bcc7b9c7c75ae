package rotate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// Signing-key rotations of accounts and roles, with the same promise as an
// agent's rotation: the new key is trusted by the servers before anything is
// signed with it, every agent is moved to it (through a fleet rotation) and
// confirmed by its reconnect, and only then is the old key removed.
//
// A staged rotation goes through these states, each a committed step that
// any replica resumes (driven from Tick and RunKeyLifecycle):
//
//	adding     the new key is in the account JWT (pushed) as a staged
//	           signing key: nothing is signed with it until the servers
//	           acknowledged that JWT
//	reissuing  the new key signs; a fleet rotation re-issues every agent
//	           holding a credential signed by an old key, in waves
//	waiting    some agents still hold one (they did not come back within
//	           their grace): the old key stays, an alert went out, and each
//	           straggler's own retry (with backoff) signs with the new key;
//	           an operator may complete (drop them) or abandon
//	removing   the old keys are retired and out of the account JWT; done
//	           once the servers acknowledged it
//	completed
//
// An emergency rotation retires the old keys in the same transaction that
// adds the new one (the servers drop every user they signed when they get
// the JWT), and re-issues every agent at once: one wave, never halted.

// errKeyHeld rolls back a removal that found a credential signed by an old
// key committed meanwhile; the next drive looks again.
var errKeyHeld = errors.New("an old key signed a credential meanwhile")

// KeyRotationInput says which key to rotate and how: Role names a role of
// the account (its scoped key) or is empty (the account's signing key);
// Mode is rotatord.KeyModeStaged (the default) or KeyModeEmergency.
type KeyRotationInput struct {
	Role string
	Mode string
}

// RotateSigningKey starts the rotation of an account's signing key, or of
// one of its roles' scoped key. ECONFLICT while a key rotation or a fleet
// rotation of the account is in flight (naming it); EINVALID for the system
// account (its signing key signs rotatord's own NATS user) or a bad mode;
// ENOTFOUND for an unknown account or role.
func (s *Service) RotateSigningKey(ctx context.Context, actor Actor, account string, in KeyRotationInput) (*rotatord.KeyRotation, error) {
	mode := in.Mode
	if mode == "" {
		mode = rotatord.KeyModeStaged
	}
	if mode != rotatord.KeyModeStaged && mode != rotatord.KeyModeEmergency {
		return nil, rotatord.Errorf(rotatord.EINVALID, "mode %.20q is not staged or emergency", mode)
	}
	if in.Role != "" {
		if err := rotatord.ValidateName("role", in.Role); err != nil {
			return nil, err
		}
	}
	var (
		k        *rotatord.KeyRotation
		acc      *rotatord.Account
		resigned []*rotatord.Account
	)
	err := s.inTx(ctx, func(ctx context.Context) error {
		var err error
		k, acc, resigned, err = s.startKeyRotation(ctx, actor, account, in.Role, mode, rotatord.TriggerManual)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("rotate signing key of %s: %w", account, err)
	}
	// Only an emergency start re-signs importers: theirs go first.
	s.pushTokenHoldersFirst(ctx, resigned)
	s.afterKeyChange(ctx, k, acc, nil)
	return k, nil
}

// startKeyRotation records a key rotation and its fleet rotation, inside
// the caller's transaction. It returns the accounts re-signed for their
// activation tokens (an emergency rotation of an exporter's key), to push
// after commit.
func (s *Service) startKeyRotation(ctx context.Context, actor Actor, account, roleName, mode, trigger string) (
	k *rotatord.KeyRotation, acc *rotatord.Account, resigned []*rotatord.Account, err error) {
	found, err := s.store.FindAccountByName(ctx, account)
	if err != nil {
		return nil, nil, nil, err
	}
	if found.System {
		return nil, nil, nil, rotatord.Errorf(rotatord.EINVALID, "the system account's signing key signs rotatord's own NATS user: "+
			"rotating it is not supported")
	}
	if mode == rotatord.KeyModeEmergency && roleName == "" {
		// It re-signs the holders of activation tokens (keytokens.go).
		if err := s.store.LockAccountGraph(ctx); err != nil {
			return nil, nil, nil, err
		}
	}
	if acc, err = s.store.LockAccount(ctx, found.ID); err != nil {
		return nil, nil, nil, err
	}
	if inflight, err := s.store.InFlightKeyRotation(ctx, acc.ID); err != nil {
		return nil, nil, nil, err
	} else if inflight != nil {
		return nil, nil, nil, rotatord.Errorf(rotatord.ECONFLICT, "key rotation %s of account %s is %s: one at a time; "+
			"complete or abandon it first (POST /v1/key-rotations/%s/complete|abandon)", inflight.ID, acc.Name, inflight.State, inflight.ID)
	}
	if err := s.fleetSlotFree(ctx, acc); err != nil {
		return nil, nil, nil, err
	}
	k = &rotatord.KeyRotation{Kind: rotatord.KeyKindAccount, AccountID: acc.ID, Account: acc.Name, AccountKey: acc.PublicKey,
		Mode: mode, Trigger: trigger, Actor: string(actor)}
	var role *rotatord.Role
	if roleName != "" {
		if role, err = s.store.LockRole(ctx, acc.ID, roleName); err != nil {
			return nil, nil, nil, err
		}
		k.Kind, k.RoleID, k.Role, k.OldKeys = rotatord.KeyKindRole, role.ID, role.Name, slices.Clone(role.SigningKeys)
	} else if k.OldKeys, err = s.store.SigningKeys(ctx, acc.ID); err != nil {
		return nil, nil, nil, err
	}
	if len(k.OldKeys) == 0 {
		return nil, nil, nil, rotatord.Errorf(rotatord.ECONFLICT, "%s has no signing key of rotatord's to rotate", keyOwner(k))
	}
	kp, err := jwtissue.NewKey(nkeys.PrefixByteAccount)
	if err != nil {
		return nil, nil, nil, err
	}
	k.NewKey = jwtissue.Public(kp)
	now := s.now()
	waves, rate := KeyRotationWaves, KeyRotationHaltRate
	if mode == rotatord.KeyModeStaged {
		// Staged: trusted by the re-signed JWT below, signing nothing
		// before the servers trust it.
		k.State = rotatord.KeyRotationAdding
		if err := s.store.CreateKeyRotation(ctx, k); err != nil {
			return nil, nil, nil, err
		}
		if err := s.addSigningKey(ctx, k, role, s.seal(kp), true); err != nil {
			return nil, nil, nil, err
		}
		if err := s.resignAccount(ctx, acc); err != nil {
			return nil, nil, nil, err
		}
		k.AddedVersion = acc.JWTVersion
	} else {
		k.State = rotatord.KeyRotationReissuing
		if err := s.store.CreateKeyRotation(ctx, k); err != nil {
			return nil, nil, nil, err
		}
		if err := s.addSigningKey(ctx, k, role, s.seal(kp), false); err != nil {
			return nil, nil, nil, err
		}
		if resigned, err = s.retireOldKeys(ctx, actor, k, acc, now); err != nil {
			return nil, nil, nil, err
		}
		k.AddedVersion = acc.JWTVersion
		// Everyone at once: a leaked key gives no time for canaries.
		waves, rate = []int{100}, 1
	}
	f := &rotatord.FleetRotation{AccountID: acc.ID, Account: acc.Name, RoleID: k.RoleID, Role: k.Role, Waves: waves,
		HaltOnFailureRate: rate, State: rotatord.FleetRunning, Replacing: k.OldKeys, KeyRotation: k.ID,
		Trigger: rotatord.TriggerKeyRotation, Actor: string(actor)}
	if err := s.store.CreateFleetRotation(ctx, f); err != nil {
		return nil, nil, nil, err
	}
	k.FleetRotation = f.ID
	if err := s.store.UpdateKeyRotation(ctx, k); err != nil {
		return nil, nil, nil, err
	}
	if err := s.audit(ctx, actor, "key_rotation.start", rotatord.AuditEvent{Account: acc.Name, PublicKey: k.NewKey,
		Details: map[string]any{"key_rotation": k.ID, "kind": k.Kind, "role": k.Role, "mode": mode, "trigger": trigger,
			"old_keys": k.OldKeys, "new_key": k.NewKey, "fleet_rotation": f.ID, "account_jwt_id": acc.JWTID}}); err != nil {
		return nil, nil, nil, err
	}
	return k, acc, resigned, nil
}

// keyOwner names what k rotates the key of, for messages.
func keyOwner(k *rotatord.KeyRotation) string {
	if k.Kind == rotatord.KeyKindRole {
		return fmt.Sprintf("role %s of account %s", k.Role, k.Account)
	}
	return "account " + k.Account
}

// addSigningKey stores k's new key among the account's (the role's)
// signing keys: staged (trusted by the account JWT, signing nothing until
// activateSigningKey), or signing at once.
func (s *Service) addSigningKey(ctx context.Context, k *rotatord.KeyRotation, role *rotatord.Role, seedEnc []byte, staged bool) error {
	var err error
	if k.Kind == rotatord.KeyKindRole {
		if role == nil {
			if role, err = s.store.FindRole(ctx, k.AccountID, k.Role); err != nil {
				return err
			}
		}
		if staged {
			err = s.store.AddStagedRoleSigningKey(ctx, role, k.NewKey, seedEnc)
		} else {
			err = s.store.AddRoleSigningKey(ctx, role, k.NewKey, seedEnc)
		}
	} else if staged {
		err = s.store.AddStagedSigningKey(ctx, k.AccountID, k.NewKey, seedEnc)
	} else {
		err = s.store.AddSigningKey(ctx, k.AccountID, k.NewKey, seedEnc)
	}
	if err != nil {
		return err
	}
	return s.audit(ctx, Actor(k.Actor), "signing_key.add", rotatord.AuditEvent{Account: k.Account, PublicKey: k.NewKey,
		Details: map[string]any{"key_rotation": k.ID, "kind": k.Kind, "role": k.Role, "staged": staged}})
}

// activateSigningKey makes k's staged new key the one that signs: new
// agents and every rotation from then on use it, and so do the activation
// tokens of the accounts importing from acc (locked), re-signed now and
// returned, to push after commit.
func (s *Service) activateSigningKey(ctx context.Context, k *rotatord.KeyRotation, acc *rotatord.Account) ([]*rotatord.Account, error) {
	if err := s.store.ActivateSigningKey(ctx, k.NewKey); err != nil {
		return nil, err
	}
	resigned, err := s.moveTokens(ctx, k, acc)
	if err != nil {
		return nil, err
	}
	return resigned, s.audit(ctx, Actor(k.Actor), "signing_key.activate", rotatord.AuditEvent{Account: k.Account, PublicKey: k.NewKey,
		Details: map[string]any{"key_rotation": k.ID, "kind": k.Kind, "role": k.Role, "importers_resigned": accountNames(resigned)}})
}

// retireOldKeys retires k's old keys (waiting for transactions signing
// with them), drops the revocation entries of credentials they signed (the
// servers refuse those anyway once the keys are out of the account JWT) and
// re-signs the locked account without them, and the accounts holding
// activation tokens they signed (keytokens.go; the caller holds the account
// graph's lock), returned to push after commit.
func (s *Service) retireOldKeys(ctx context.Context, actor Actor, k *rotatord.KeyRotation, acc *rotatord.Account, now time.Time) ([]*rotatord.Account, error) {
	holders, err := s.lockTokenHolders(ctx, k, acc)
	if err != nil {
		return nil, err
	}
	if err := s.store.RetireSigningKeys(ctx, k.OldKeys, now); err != nil {
		return nil, err
	}
	pruned, err := s.store.PruneRevocationsSignedBy(ctx, acc.ID, k.OldKeys)
	if err != nil {
		return nil, err
	}
	if err := s.resignAccount(ctx, acc); err != nil {
		return nil, err
	}
	if err := s.resignTokenHolders(ctx, holders); err != nil {
		return nil, err
	}
	at, err := s.store.DBNow(ctx)
	if err != nil {
		return nil, err
	}
	k.RemovedVersion, k.RemovedAt = acc.JWTVersion, &at
	return holders, s.audit(ctx, actor, "signing_key.retire", rotatord.AuditEvent{Account: acc.Name, PublicKey: k.NewKey,
		Details: map[string]any{"key_rotation": k.ID, "keys": k.OldKeys, "revocations_pruned": pruned, "account_jwt_id": acc.JWTID,
			"importers_resigned": accountNames(holders)}})
}

// afterKeyChange follows a committed step that re-signed the account: the
// resolver's cache, the opened keys of retired ones, the push, and the next
// step.
func (s *Service) afterKeyChange(ctx context.Context, k *rotatord.KeyRotation, acc *rotatord.Account, resigned []*rotatord.Account) {
	if k.RemovedVersion != 0 {
		s.dropSigners(k.OldKeys)
	}
	s.changed(ctx, acc.PublicKey)
	// The answer does not wait for the servers; the key rotation does.
	s.pushSoon(acc.ID)
	s.pushResigned(ctx, resigned)
	s.kickKeys()
}

// KeyRotation returns a key rotation, with the agents still holding
// credentials signed by its old keys while it is in flight. An unknown ID
// is ENOTFOUND.
func (s *Service) KeyRotation(ctx context.Context, id string) (*rotatord.KeyRotation, error) {
	k, err := s.store.FindKeyRotation(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.fillStragglers(ctx, k); err != nil {
		return nil, err
	}
	return k, nil
}

// KeyRotations lists key rotations, newest first. An unknown account is
// ENOTFOUND.
func (s *Service) KeyRotations(ctx context.Context, f rotatord.KeyRotationFilter) ([]*rotatord.KeyRotation, error) {
	if f.Account != "" {
		if _, err := s.store.FindAccountByName(ctx, f.Account); err != nil {
			return nil, err
		}
	}
	list, err := s.store.ListKeyRotations(ctx, f)
	if err != nil {
		return nil, err
	}
	for _, k := range list {
		if err := s.fillStragglers(ctx, k); err != nil {
			return nil, err
		}
	}
	return list, nil
}

// maxStragglerNames bounds the agents a key rotation names.
const maxStragglerNames = 20

// fillStragglers counts and names, for a key rotation in flight, the agents
// still on an old key.
func (s *Service) fillStragglers(ctx context.Context, k *rotatord.KeyRotation) error {
	k.StragglerAgents = []string{}
	if !k.InFlight() || len(k.OldKeys) == 0 || k.Kind == rotatord.KeyKindOperator {
		return nil
	}
	ids, names, err := s.store.KeyHolders(ctx, k.OldKeys, s.now(), maxStragglerNames)
	if err != nil {
		return err
	}
	k.Stragglers, k.StragglerAgents = len(ids), names
	if names == nil {
		k.StragglerAgents = []string{}
	}
	return nil
}

// DriveKeyRotations moves every account and role key rotation in flight
// along and returns how many moved.
func (s *Service) DriveKeyRotations(ctx context.Context) (int, error) {
	var ids []string
	for _, kind := range []string{rotatord.KeyKindAccount, rotatord.KeyKindRole} {
		more, err := s.store.KeyRotationsInFlight(ctx, kind)
		if err != nil {
			return 0, err
		}
		ids = append(ids, more...)
	}
	var errs []error
	n := 0
	for _, id := range ids {
		moved, err := s.driveKeyRotation(ctx, id)
		if err != nil {
			errs = append(errs, err)
		}
		if moved {
			n++
		}
	}
	return n, errors.Join(errs...)
}

// keyStep is what one step of a key rotation leaves to do after its commit.
type keyStep struct {
	moved    bool
	resign   bool                // the account was re-signed: follow up (afterKeyChange)
	push     bool                // a push the step waits for is owed: try it now
	reissue  []int64             // agents to re-issue under the new key
	resigned []*rotatord.Account // importers re-signed for their activation tokens, to push
	alert    bool
}

// driveKeyRotation does the next step of a key rotation, under the
// account's lock and its own (skipped when another replica holds it).
func (s *Service) driveKeyRotation(ctx context.Context, id string) (bool, error) {
	found, err := s.store.FindKeyRotation(ctx, id)
	if err != nil || !found.InFlight() || found.Kind == rotatord.KeyKindOperator {
		return false, err
	}
	var (
		k    *rotatord.KeyRotation
		acc  *rotatord.Account
		step keyStep
	)
	// Leaving adding and removing the old keys of a staged rotation move
	// activation tokens (keytokens.go).
	graph := signsTokens(found) && (found.State == rotatord.KeyRotationAdding ||
		found.Mode == rotatord.KeyModeStaged && (found.State == rotatord.KeyRotationReissuing || found.State == rotatord.KeyRotationWaiting))
	err = s.inTx(ctx, func(ctx context.Context) error {
		step, k = keyStep{}, nil
		var err error
		if graph {
			if err := s.store.LockAccountGraph(ctx); err != nil {
				return err
			}
		}
		// Lock order: account, then key rotation, then fleet rotation.
		if acc, err = s.store.LockAccount(ctx, found.AccountID); err != nil {
			return err
		}
		var ok bool
		if k, ok, err = s.store.LockKeyRotation(ctx, id); err != nil || !ok || !k.InFlight() {
			k = nil
			return err
		}
		step, err = s.keyStepLocked(ctx, k, acc)
		return err
	})
	if errors.Is(err, errKeyHeld) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("drive key rotation %s: %w", id, err)
	}
	if k == nil {
		return false, nil
	}
	if step.alert {
		s.kickAlerts()
	}
	if step.resign {
		s.afterKeyChange(ctx, k, acc, step.resigned)
	} else {
		if step.push {
			s.pushSoon(acc.ID)
		}
		s.pushResigned(ctx, step.resigned)
	}
	if step.moved && k.State == rotatord.KeyRotationReissuing {
		s.kickKeys() // the fleet rotation may start
	}
	if len(step.reissue) > 0 {
		n, err := s.reissue(ctx, reissueSpec{replacing: k.OldKeys, trigger: rotatord.TriggerKeyRotation, actor: SystemActor}, step.reissue)
		if err != nil {
			return step.moved || n > 0, fmt.Errorf("drive key rotation %s: %w", id, err)
		}
		step.moved = step.moved || n > 0
	}
	return step.moved, nil
}

// keyStepLocked does one step of k (locked, with its account acc locked).
func (s *Service) keyStepLocked(ctx context.Context, k *rotatord.KeyRotation, acc *rotatord.Account) (keyStep, error) {
	now := s.now()
	switch k.State {
	case rotatord.KeyRotationAdding:
		if !s.pushed(acc, k.AddedVersion) {
			return keyStep{push: true}, nil
		}
		resigned, err := s.activateSigningKey(ctx, k, acc)
		if err != nil {
			return keyStep{}, err
		}
		k.State, k.Waiting = rotatord.KeyRotationReissuing, ""
		return keyStep{moved: true, resigned: resigned}, s.store.UpdateKeyRotation(ctx, k)
	case rotatord.KeyRotationReissuing:
		if k.FleetRotation != "" {
			f, err := s.store.FindFleetRotation(ctx, k.FleetRotation)
			if err != nil {
				return keyStep{}, err
			}
			if f.State == rotatord.FleetRunning || f.State == rotatord.FleetHalted {
				return keyStep{}, nil
			}
		}
		if k.Mode == rotatord.KeyModeEmergency {
			// The old keys are gone since the start: sweep up, then done.
			k.State = rotatord.KeyRotationRemoving
			if err := s.store.UpdateKeyRotation(ctx, k); err != nil {
				return keyStep{}, err
			}
			st, err := s.finishRemoval(ctx, k, acc, now)
			st.moved = true
			return st, err
		}
		return s.checkStragglers(ctx, k, acc, now)
	case rotatord.KeyRotationWaiting:
		return s.checkStragglers(ctx, k, acc, now)
	case rotatord.KeyRotationRemoving:
		return s.finishRemoval(ctx, k, acc, now)
	}
	return keyStep{}, nil
}

// pushed reports whether the servers acknowledged version v of acc's JWT
// (or newer). Without NATS there is no one to wait for: servers read the
// resolver.
func (s *Service) pushed(acc *rotatord.Account, v int64) bool {
	return s.pusher == nil || acc.PushedVersion >= v
}

// checkStragglers removes the old keys when no agent holds a credential
// they signed; otherwise the key rotation waits (with an alert the first
// time), and agents that hold one without having been in its fleet
// rotation (created or moved onto an old key meanwhile) are re-issued.
func (s *Service) checkStragglers(ctx context.Context, k *rotatord.KeyRotation, acc *rotatord.Account, now time.Time) (keyStep, error) {
	ids, names, err := s.store.KeyHolders(ctx, k.OldKeys, now, maxStragglerNames)
	if err != nil {
		return keyStep{}, err
	}
	if len(ids) == 0 {
		ready, waiting, resigned, err := s.tokensReady(ctx, k, acc)
		if err != nil {
			return keyStep{}, err
		}
		if !ready {
			// The importers' JWTs with tokens of the new key must be on
			// the servers before the old key leaves the exporter's.
			msg := fmt.Sprintf("waiting for the servers to acknowledge the JWTs of the accounts importing from %s, "+
				"whose activation tokens the new key signs: %s", acc.Name, listNames(waiting[:min(len(waiting), maxStragglerNames)], len(waiting)))
			step := keyStep{resigned: resigned}
			if k.Waiting != msg {
				k.Waiting, step.moved = msg, true
				err = s.store.UpdateKeyRotation(ctx, k)
			}
			return step, err
		}
		resigned, err = s.retireOldKeys(ctx, SystemActor, k, acc, now)
		if err != nil {
			return keyStep{}, err
		}
		// A signer that held an old key while it was being retired has
		// committed by now: look again.
		if again, _, err := s.store.KeyHolders(ctx, k.OldKeys, now, 0); err != nil {
			return keyStep{}, err
		} else if len(again) > 0 {
			return keyStep{}, errKeyHeld
		}
		k.State, k.Stragglers, k.Waiting = rotatord.KeyRotationRemoving, 0, ""
		return keyStep{moved: true, resign: true, resigned: resigned}, s.store.UpdateKeyRotation(ctx, k)
	}
	var step keyStep
	var members []int64
	if k.FleetRotation != "" {
		if members, err = s.store.FleetMemberIDs(ctx, k.FleetRotation); err != nil {
			return keyStep{}, err
		}
	}
	var outside []int64
	for _, id := range ids {
		if _, ok := slices.BinarySearch(members, id); !ok {
			outside = append(outside, id)
		}
	}
	if step.reissue, err = s.notRotatedSince(ctx, outside, k.CreatedAt); err != nil {
		return keyStep{}, err
	}
	if k.State == rotatord.KeyRotationWaiting && k.Stragglers == len(ids) {
		return step, nil
	}
	first := k.State != rotatord.KeyRotationWaiting
	k.State, k.Stragglers = rotatord.KeyRotationWaiting, len(ids)
	k.Waiting = fmt.Sprintf("%d agents still hold credentials signed by the old key (%s): it stays until they are on the new key "+
		"(each one's own retry signs with it) or revoked; complete (POST /v1/key-rotations/%s/complete) drops them, "+
		"abandon keeps both keys", len(ids), listNames(names, len(ids)), k.ID)
	step.moved = true
	if err := s.store.UpdateKeyRotation(ctx, k); err != nil {
		return keyStep{}, err
	}
	if !first {
		return step, nil
	}
	step.alert = true
	if err := s.store.AddAlert(ctx, &rotatord.Alert{Kind: AlertKeyRotationWaiting, Severity: rotatord.SeverityWarning,
		Account: acc.Name, Reason: "key rotation " + k.ID + " of " + keyOwner(k) + " waits: " + k.Waiting}); err != nil {
		return keyStep{}, err
	}
	return step, s.audit(ctx, SystemActor, "key_rotation.wait", rotatord.AuditEvent{Account: acc.Name, PublicKey: k.NewKey,
		Details: map[string]any{"key_rotation": k.ID, "stragglers": len(ids), "agents": names}})
}

// notRotatedSince returns those of the agents that had no rotation since t
// (the start of a key rotation, or the removal of its old keys): a rotation
// since then was signed by the new key, and one that failed is retried by
// the agent's own schedule.
func (s *Service) notRotatedSince(ctx context.Context, ids []int64, t time.Time) ([]int64, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	rotated, err := s.store.RotatedSince(ctx, ids, t)
	if err != nil {
		return nil, err
	}
	var out []int64
	for _, id := range ids {
		if !rotated[id] {
			out = append(out, id)
		}
	}
	return out, nil
}

// listNames lists some names of n, saying how many more there are.
func listNames(names []string, n int) string {
	s := strings.Join(names, ", ")
	if n > len(names) {
		s += fmt.Sprintf(" and %d more", n-len(names))
	}
	return s
}

// finishRemoval completes a removing key rotation once the servers
// acknowledged the JWT without its old keys and every agent still holding
// a credential they signed (now refused by the servers) was given new ones
// since the keys were removed; it hands those that were not to reissue.
// One whose re-issue failed (rolled back) is left to its own retry, which
// signs with the new key.
func (s *Service) finishRemoval(ctx context.Context, k *rotatord.KeyRotation, acc *rotatord.Account, now time.Time) (keyStep, error) {
	ids, _, err := s.store.KeyHolders(ctx, k.OldKeys, now, 0)
	if err != nil {
		return keyStep{}, err
	}
	since := k.CreatedAt
	if k.RemovedAt != nil {
		since = *k.RemovedAt
	}
	var step keyStep
	if step.reissue, err = s.notRotatedSince(ctx, ids, since); err != nil {
		return keyStep{}, err
	}
	if !s.pushed(acc, k.RemovedVersion) {
		step.push = true
		return step, nil
	}
	if len(step.reissue) > 0 {
		return step, nil
	}
	k.State, k.FinishedAt, step.moved = rotatord.KeyRotationCompleted, &now, true
	if err := s.store.UpdateKeyRotation(ctx, k); err != nil {
		return keyStep{}, err
	}
	return step, s.audit(ctx, SystemActor, "key_rotation.complete", rotatord.AuditEvent{Account: acc.Name, PublicKey: k.NewKey,
		Details: map[string]any{"key_rotation": k.ID, "old_keys": k.OldKeys, "account_jwt_id": acc.JWTID}})
}

// CompleteKeyRotation finishes a key rotation now, whatever agents still
// hold credentials signed by an old key (the stragglers): the old keys are
// retired and removed from the account JWT, so the servers drop the
// stragglers' connections and refuse their old-key JWTs; each straggler is
// re-issued under the new key at once (a poll agent fetches it with its old
// key's proof, which rotatord still accepts; Vault and file agents get a new
// delivery). A straggler that does not come back before its credentials
// expire must be reissued (POST /v1/agents/{name}/reissue). The fleet
// rotation, if still running or halted, is aborted. ECONFLICT for a key
// rotation that ended.
func (s *Service) CompleteKeyRotation(ctx context.Context, actor Actor, id string) (*rotatord.KeyRotation, error) {
	var resigned []*rotatord.Account
	k, acc, err := s.endKeyRotation(ctx, actor, id, "complete", func(ctx context.Context, k *rotatord.KeyRotation, acc *rotatord.Account, now time.Time) error {
		resigned = nil
		if k.State == rotatord.KeyRotationRemoving {
			return nil // removed already; it completes by itself
		}
		ids, names, err := s.store.KeyHolders(ctx, k.OldKeys, now, 100)
		if err != nil {
			return err
		}
		if k.State == rotatord.KeyRotationAdding {
			if resigned, err = s.activateSigningKey(ctx, k, acc); err != nil {
				return err
			}
		}
		if k.Mode == rotatord.KeyModeStaged {
			// Importers re-signed with tokens of the new key just now (or
			// earlier) are pushed right after; complete does not wait.
			more, err := s.retireOldKeys(ctx, actor, k, acc, now)
			if err != nil {
				return err
			}
			resigned = append(resigned, more...)
		}
		k.State, k.Stragglers, k.Waiting = rotatord.KeyRotationRemoving, len(ids), ""
		k.Reason = fmt.Sprintf("completed by %s with %d agents on the old key, re-issued under the new one", actor, len(ids))
		if len(ids) > 0 {
			k.Reason += ": " + listNames(names, len(ids))
		}
		return s.audit(ctx, actor, "key_rotation.force_complete", rotatord.AuditEvent{Account: acc.Name, PublicKey: k.NewKey,
			Details: map[string]any{"key_rotation": k.ID, "stragglers": len(ids), "agents": names}})
	})
	if err != nil {
		return nil, err
	}
	if k.RemovedVersion != 0 {
		s.afterKeyChange(ctx, k, acc, resigned)
	}
	if _, err := s.driveKeyRotation(ctx, k.ID); err != nil {
		// The drive retries from Tick; the operator's request succeeded.
		s.log.Warn("re-issue after completing a key rotation", "key_rotation", k.ID, "err", err)
	}
	return s.KeyRotation(ctx, k.ID)
}

// AbandonKeyRotation stops a staged key rotation and keeps both keys: the
// new one in the account JWT and signing new credentials, the old one still
// trusted for the agents not moved yet. The fleet rotation, if running or
// halted, is aborted. ECONFLICT for an emergency rotation (its old key was
// removed at once) and for one that is removing its old keys or ended.
func (s *Service) AbandonKeyRotation(ctx context.Context, actor Actor, id string) (*rotatord.KeyRotation, error) {
	var resigned []*rotatord.Account
	k, _, err := s.endKeyRotation(ctx, actor, id, "abandon", func(ctx context.Context, k *rotatord.KeyRotation, acc *rotatord.Account, now time.Time) error {
		resigned = nil
		if k.Mode == rotatord.KeyModeEmergency {
			return rotatord.Errorf(rotatord.ECONFLICT, "key rotation %s is an emergency rotation: its old key was removed at once, "+
				"there is nothing to keep; complete it instead", k.ID)
		}
		if k.State == rotatord.KeyRotationRemoving {
			return rotatord.Errorf(rotatord.ECONFLICT, "key rotation %s is removing its old keys already", k.ID)
		}
		if k.State == rotatord.KeyRotationAdding {
			// The new key is in the account JWT already; it stays, and signs.
			var err error
			if resigned, err = s.activateSigningKey(ctx, k, acc); err != nil {
				return err
			}
		}
		k.State, k.FinishedAt, k.Waiting = rotatord.KeyRotationAbandoned, &now, ""
		k.Reason = fmt.Sprintf("abandoned by %s: the old and the new key both stay", actor)
		return s.audit(ctx, actor, "key_rotation.abandon", rotatord.AuditEvent{Account: acc.Name, PublicKey: k.NewKey,
			Details: map[string]any{"key_rotation": k.ID, "old_keys": k.OldKeys}})
	})
	if err != nil {
		return nil, err
	}
	s.pushResigned(ctx, resigned)
	return s.KeyRotation(ctx, k.ID)
}

// endKeyRotation changes a key rotation in flight under the account's lock
// and its own (waiting for a driver that holds them), aborting its fleet
// rotation.
func (s *Service) endKeyRotation(ctx context.Context, actor Actor, id, action string,
	change func(context.Context, *rotatord.KeyRotation, *rotatord.Account, time.Time) error) (*rotatord.KeyRotation, *rotatord.Account, error) {
	found, err := s.store.FindKeyRotation(ctx, id)
	if err != nil {
		return nil, nil, fmt.Errorf("%s key rotation %s: %w", action, id, err)
	}
	if found.Kind == rotatord.KeyKindOperator {
		return nil, nil, rotatord.Errorf(rotatord.ECONFLICT, "key rotation %s is of the operator's signing key: it completes "+
			"once every nats-server runs the new operator JWT, and cannot be completed or abandoned", id)
	}
	var (
		k   *rotatord.KeyRotation
		acc *rotatord.Account
	)
	err = s.inTx(ctx, func(ctx context.Context) error {
		var err error
		if signsTokens(found) {
			// It may move activation tokens (keytokens.go).
			if err := s.store.LockAccountGraph(ctx); err != nil {
				return err
			}
		}
		if acc, err = s.store.LockAccount(ctx, found.AccountID); err != nil {
			return err
		}
		if k, err = s.store.WaitKeyRotation(ctx, id); err != nil {
			return err
		}
		if !k.InFlight() {
			return rotatord.Errorf(rotatord.ECONFLICT, "key rotation %s is %s already", k.ID, k.State)
		}
		now := s.now()
		if k.FleetRotation != "" {
			f, _, err := s.store.LockFleetRotation(ctx, k.FleetRotation, false)
			if err != nil {
				return err
			}
			if f.State == rotatord.FleetRunning || f.State == rotatord.FleetHalted {
				abortFleet(f, now, fmt.Sprintf("key rotation %s was %s by %s", k.ID, pastTense(action), actor))
				if err := s.store.UpdateFleetRotation(ctx, f); err != nil {
					return err
				}
			}
		}
		if err := change(ctx, k, acc, now); err != nil {
			return err
		}
		return s.store.UpdateKeyRotation(ctx, k)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%s key rotation %s: %w", action, id, err)
	}
	return k, acc, nil
}

func pastTense(action string) string {
	if action == "abandon" {
		return "abandoned"
	}
	return action + "d"
}

// keyScheduleMinInterval is the least time between two scheduled
// rotations of a signing key: each one re-issues every agent.
const keyScheduleMinInterval = time.Hour

// keyScheduleRetry is how long a scheduled key rotation that could not
// start (another operation was in flight) waits before trying again.
const keyScheduleRetry = 10 * time.Minute

// checkKeySchedule validates a key rotation schedule.
func checkKeySchedule(spec string) error {
	sched, err := scheduleParser.Parse(spec)
	if err != nil {
		return rotatord.Errorf(rotatord.EINVALID, "key_rotation.schedule %.100q: %v", spec, err)
	}
	prev := sched.Next(time.Now())
	for range 16 {
		next := sched.Next(prev)
		if next.IsZero() {
			return rotatord.Errorf(rotatord.EINVALID, "key_rotation.schedule %.100q never runs", spec)
		}
		if next.Sub(prev) < keyScheduleMinInterval {
			return rotatord.Errorf(rotatord.EINVALID, "key_rotation.schedule %.100q runs more often than every %s: "+
				"every rotation of a signing key re-issues every agent", spec, keyScheduleMinInterval)
		}
		prev = next
	}
	return nil
}

// setKeySchedule sets or (with "") turns off the key rotation schedule of
// the account, inside the caller's transaction.
func (s *Service) setKeySchedule(ctx context.Context, acc *rotatord.Account, spec string) error {
	if spec == "" {
		acc.KeyRotation = nil
		return s.store.SetKeySchedule(ctx, acc.ID, "", time.Time{})
	}
	if acc.System {
		return rotatord.Errorf(rotatord.EINVALID, "the system account's signing key is not rotated by rotatord")
	}
	if err := checkKeySchedule(spec); err != nil {
		return err
	}
	sched, _ := scheduleParser.Parse(spec)
	next := sched.Next(s.now())
	acc.KeyRotation = &rotatord.KeyRotationPolicy{Schedule: spec, NextAt: next}
	return s.store.SetKeySchedule(ctx, acc.ID, spec, next)
}

// withPendingKeys adds to an account's signing keys the new keys that
// staged key rotations of the account are adding (not a role's: scopedKeys
// adds those).
func (s *Service) withPendingKeys(ctx context.Context, accountID int64, keys []string) ([]string, error) {
	pending, err := s.store.PendingSigningKeys(ctx, accountID)
	if err != nil {
		return nil, err
	}
	for _, p := range pending {
		if p.RoleID == 0 && !slices.Contains(keys, p.PublicKey) {
			keys = append(keys, p.PublicKey)
		}
	}
	return keys, nil
}

// fillKeySchedules sets the KeyRotation of accounts from the store.
func (s *Service) fillKeySchedules(ctx context.Context, accs ...*rotatord.Account) error {
	ids := make([]int64, len(accs))
	for i, a := range accs {
		ids[i] = a.ID
	}
	m, err := s.store.KeySchedules(ctx, ids)
	if err != nil {
		return err
	}
	for _, a := range accs {
		if p, ok := m[a.ID]; ok {
			a.KeyRotation = &p
		}
	}
	return nil
}

// startScheduledKeyRotations starts the staged key rotations whose
// schedule is due, each claimed (SKIP LOCKED) and started in one
// transaction with its next run, so that a replica dying in between leaves
// either both or neither. One that cannot start now (a key or fleet
// rotation of the account is in flight) is tried again later.
func (s *Service) startScheduledKeyRotations(ctx context.Context) (int, error) {
	n := 0
	for range 10 {
		var (
			k   *rotatord.KeyRotation
			acc *rotatord.Account
			any bool
		)
		err := s.inTx(ctx, func(ctx context.Context) error {
			k, acc, any = nil, nil, false
			now := s.now()
			due, err := s.store.ClaimDueKeySchedules(ctx, now, 1)
			if err != nil || len(due) == 0 {
				return err
			}
			any = true
			d := due[0]
			next := now.Add(keyScheduleRetry)
			if sched, err := scheduleParser.Parse(d.Schedule); err == nil {
				next = sched.Next(now)
			}
			busy, err := s.keyRotationBusy(ctx, d.AccountID)
			if err != nil {
				return err
			}
			// A staged start re-signs no importer: nothing more to push.
			if busy {
				next = now.Add(keyScheduleRetry)
			} else if k, acc, _, err = s.startKeyRotation(ctx, SystemActor, d.Account, "", rotatord.KeyModeStaged, rotatord.TriggerSchedule); err != nil {
				return err
			}
			return s.store.SetKeySchedule(ctx, d.AccountID, d.Schedule, next)
		})
		if err != nil {
			return n, fmt.Errorf("start scheduled key rotation: %w", err)
		}
		if !any {
			break
		}
		if k != nil {
			n++
			s.log.Info("scheduled signing key rotation started", "account", acc.Name, "key_rotation", k.ID)
			s.afterKeyChange(ctx, k, acc, nil)
		}
	}
	return n, nil
}

// keyRotationBusy reports whether a key or fleet rotation of the account is
// in flight.
func (s *Service) keyRotationBusy(ctx context.Context, accountID int64) (bool, error) {
	if k, err := s.store.InFlightKeyRotation(ctx, accountID); err != nil || k != nil {
		return k != nil, err
	}
	f, err := s.store.ActiveFleetRotation(ctx, accountID)
	return f != nil, err
}

// RunKeyLifecycle drives fleet and key rotations whenever one of them
// changed on this replica (so that an emergency re-issue starts at once),
// and every interval, until ctx ends. Tick drives them too.
func (s *Service) RunKeyLifecycle(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.keyKicks():
		}
		if _, err := s.driveKeyLifecycle(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("drive fleet and key rotations", "err", err)
		}
	}
}

// driveKeyLifecycle starts due scheduled key rotations, moves key
// rotations and fleet rotations along, and drops retired keys from memory.
// It returns how many steps it made.
func (s *Service) driveKeyLifecycle(ctx context.Context) (int, error) {
	var errs []error
	total := 0
	// Key rotations first (a new key may start its re-issue), then fleet
	// rotations, then key rotations again (a fleet that ended moves its
	// key rotation on).
	for _, step := range []func(context.Context) (int, error){s.startScheduledKeyRotations, s.DriveKeyRotations, s.DriveFleets, s.DriveKeyRotations} {
		n, err := step(ctx)
		total += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.sweepSigners(ctx); err != nil {
		errs = append(errs, err)
	}
	return total, errors.Join(errs...)
}

// keyKicks receives when a fleet or key rotation changed on this replica.
func (s *Service) keyKicks() chan struct{} {
	s.lifecycleKickOnce.Do(func() { s.lifecycleKick = make(chan struct{}, 1) })
	return s.lifecycleKick
}

func (s *Service) kickKeys() { kick(s.keyKicks()) }
