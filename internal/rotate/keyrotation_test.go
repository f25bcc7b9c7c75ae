package rotate_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/internal/rotate"
)

// accountJWT decodes the account's stored JWT.
func accountJWT(t *testing.T, svc *rotate.Service, name string) *jwt.AccountClaims {
	t.Helper()
	acc, err := svc.Account(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(acc.JWT)
	if err != nil {
		t.Fatal(err)
	}
	return ac
}

func keyRotation(t *testing.T, svc *rotate.Service, id string) *rotatord.KeyRotation {
	t.Helper()
	k, err := svc.KeyRotation(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signingKeysOf returns the keys in the account JWT's signing keys.
func signingKeysOf(ac *jwt.AccountClaims) []string {
	keys := ac.SigningKeys.Keys()
	slices.Sort(keys)
	return keys
}

// A staged rotation: the new key is trusted first and signs nothing until
// then; every agent moves to it in waves; the old key goes last, and with
// it the revocation entries of the credentials it signed.
func TestStagedKeyRotation(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	names := fleetOf(t, svc, 10)
	old := accountJWT(t, svc, "fleet").SigningKeys.Keys()
	if len(old) != 1 {
		t.Fatalf("signing keys %v, want one", old)
	}
	// A rotation before the key rotation leaves a revocation entry of a
	// credential signed by the old key.
	rotateAgent(t, svc, names[9])
	if _, err := svc.ResignQueued(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(accountJWT(t, svc, "fleet").Revocations); n != 1 {
		t.Fatalf("%d revocation entries, want 1", n)
	}

	k, err := svc.RotateSigningKey(ctx, "test", "fleet", rotate.KeyRotationInput{})
	if err != nil {
		t.Fatal(err)
	}
	if k.State != rotatord.KeyRotationAdding || k.Mode != rotatord.KeyModeStaged || !slices.Equal(k.OldKeys, old) || k.FleetRotation == "" {
		t.Fatalf("key rotation = %+v", k)
	}
	ac := accountJWT(t, svc, "fleet")
	if !ac.SigningKeys.Contains(old[0]) || !ac.SigningKeys.Contains(k.NewKey) {
		t.Fatalf("account jwt signing keys %v, want old and new", signingKeysOf(ac))
	}
	// Until the servers acknowledged that JWT, new credentials are signed
	// by the old key (the service has no pusher: the next step sees it
	// pushed).
	if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: "late", Account: "fleet", Grace: time.Minute}); err != nil {
		t.Fatal(err)
	}
	names = append(names, "late")
	if by := signedBy(t, store, []string{"late"}); by["late"] != old[0] {
		t.Fatalf("an agent created while adding is signed by %s, want the old key", by["late"])
	}
	if _, err := svc.RotateSigningKey(ctx, "test", "fleet", rotate.KeyRotationInput{}); !errors.Is(err, rotatord.ErrConflict) {
		t.Fatalf("second key rotation = %v, want a conflict", err)
	}
	if _, err := svc.RotateAll(ctx, "test", "fleet", rotate.FleetInput{}); !errors.Is(err, rotatord.ErrConflict) {
		t.Fatalf("rotate-all during a key rotation = %v, want a conflict", err)
	}

	tick(t, svc) // adding -> reissuing; wave 1 (10% of 11: 2 agents)
	if k = keyRotation(t, svc, k.ID); k.State != rotatord.KeyRotationReissuing || k.Stragglers != 11 {
		t.Fatalf("key rotation = %s with %d stragglers, want reissuing with 11", k.State, k.Stragglers)
	}
	// New credentials now sign with the new key.
	if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: "later", Account: "fleet", Grace: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if by := signedBy(t, store, []string{"later"}); by["later"] != k.NewKey {
		t.Fatalf("an agent created while reissuing is signed by %s, want the new key", by["later"])
	}
	for range 10 {
		tick(t, svc)
		rs := inFlight(t, store, names)
		if len(rs) == 0 {
			break
		}
		confirmAll(t, svc, rs)
	}
	tick(t, svc)
	tick(t, svc)
	if k = keyRotation(t, svc, k.ID); k.State != rotatord.KeyRotationCompleted || k.FinishedAt == nil {
		t.Fatalf("key rotation = %s (%s), want completed", k.State, k.Reason)
	}
	for n, by := range signedBy(t, store, append(names, "later")) {
		if by != k.NewKey {
			t.Errorf("%s is on %s, want the new key", n, by)
		}
	}
	ac = accountJWT(t, svc, "fleet")
	if got := signingKeysOf(ac); !slices.Equal(got, []string{k.NewKey}) {
		t.Fatalf("account jwt signing keys %v, want only the new key", got)
	}
	// Entries of credentials the old key signed are gone: the servers
	// refuse those anyway.
	if _, err := svc.ResignQueued(ctx); err != nil {
		t.Fatal(err)
	}
	if revs := accountJWT(t, svc, "fleet").Revocations; len(revs) != 0 {
		t.Fatalf("account jwt keeps %d revocation entries of the old key's credentials, want 0", len(revs))
	}
	f := fleetState(t, svc, k.FleetRotation)
	if f.State != rotatord.FleetCompleted || f.Progress[0].Agents != 2 || f.Progress[1].Agents != 9 {
		t.Fatalf("fleet rotation: %s %+v", f.State, f.Progress)
	}
	// The old key's seed left memory.
	if slices.Contains(svc.CachedSigners(), old[0]) {
		t.Fatal("the retired signing key is still held opened in memory")
	}
}

// An agent that does not come back holds the old key in place: the key
// rotation waits and alerts; completing drops the straggler and re-issues
// it under the new key, and its rotation is held, not rolled back to
// credentials that no longer work.
func TestStagedKeyRotationStraggler(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	names := fleetOf(t, svc, 5)
	straggler := names[4]
	k, err := svc.RotateSigningKey(ctx, "test", "fleet", rotate.KeyRotationInput{Mode: rotatord.KeyModeStaged})
	if err != nil {
		t.Fatal(err)
	}
	old := k.OldKeys[0]
	for range 6 {
		tick(t, svc)
		rs := inFlight(t, store, names)
		delete(rs, straggler)
		confirmAll(t, svc, rs)
	}
	if rs := inFlight(t, store, names); len(rs) != 1 || rs[straggler] == nil {
		t.Fatalf("in flight %v, want only the straggler", rs)
	}
	clk.Add(2 * time.Minute) // the straggler's grace ends: rolled back
	tick(t, svc)
	tick(t, svc)
	// 1 of the 4 agents of wave 2 failed, above the rate of 0.2: the
	// re-issue halts, and the key rotation waits for it.
	if f := fleetState(t, svc, k.FleetRotation); f.State != rotatord.FleetHalted || f.Progress[1].Failed != 1 {
		t.Fatalf("fleet rotation = %s %+v, want halted with 1 failed", f.State, f.Progress)
	}
	if k = keyRotation(t, svc, k.ID); k.State != rotatord.KeyRotationReissuing {
		t.Fatalf("key rotation = %s while its re-issue is halted, want reissuing", k.State)
	}
	if _, err := svc.ResumeFleetRotation(ctx, "test", k.FleetRotation); err != nil {
		t.Fatal(err)
	}
	tick(t, svc)
	k = keyRotation(t, svc, k.ID)
	if k.State != rotatord.KeyRotationWaiting || k.Stragglers != 1 || !slices.Equal(k.StragglerAgents, []string{straggler}) {
		t.Fatalf("key rotation = %s, stragglers %d %v; want waiting for %s", k.State, k.Stragglers, k.StragglerAgents, straggler)
	}
	if !accountJWT(t, svc, "fleet").SigningKeys.Contains(old) {
		t.Fatal("the old key left the account jwt while an agent still depends on it")
	}
	alerts, err := store.ListAlertsBy(ctx, rotatord.AlertFilter{Kind: rotate.AlertKeyRotationWaiting})
	if err != nil || len(alerts) != 1 {
		t.Fatalf("waiting alerts = %v, %v; want 1", alerts, err)
	}
	tick(t, svc)
	if alerts, _ := store.ListAlertsBy(ctx, rotatord.AlertFilter{Kind: rotate.AlertKeyRotationWaiting}); len(alerts) != 1 {
		t.Fatalf("%d waiting alerts after another tick, want still 1", len(alerts))
	}
	if _, err := svc.AbandonKeyRotation(ctx, "test", "not-an-id"); !errors.Is(err, rotatord.ErrNotFound) {
		t.Fatalf("abandon of a bad id = %v, want not found", err)
	}

	k, err = svc.CompleteKeyRotation(ctx, "test", k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if k.Stragglers != 1 {
		t.Fatalf("completed with %d stragglers, want 1", k.Stragglers)
	}
	if got := signingKeysOf(accountJWT(t, svc, "fleet")); !slices.Equal(got, []string{k.NewKey}) {
		t.Fatalf("signing keys after complete: %v, want only the new key", got)
	}
	// The straggler is re-issued under the new key at once.
	rs := inFlight(t, store, []string{straggler})
	if rs[straggler] == nil || rs[straggler].Trigger != rotatord.TriggerKeyRotation {
		t.Fatalf("straggler after complete: %v, want a key_rotation rotation in flight", rs)
	}
	cred, err := store.FindCredential(ctx, rs[straggler].NewCredentialID)
	if err != nil || cred.SigningKey != k.NewKey {
		t.Fatalf("straggler's new credentials signed by %s (%v), want the new key", cred.SigningKey, err)
	}
	tick(t, svc)
	if k = keyRotation(t, svc, k.ID); k.State != rotatord.KeyRotationCompleted {
		t.Fatalf("key rotation = %s, want completed", k.State)
	}
	// Past its deadline the straggler's rotation is held: its old
	// credentials no longer work, rolling back would leave it none.
	clk.Add(2 * time.Minute)
	tick(t, svc)
	r, err := store.FindRotation(ctx, rs[straggler].ID)
	if err != nil || r.State != rotatord.RotationDistributed || !r.Deadline.After(clk.Now()) {
		t.Fatalf("straggler's rotation past its deadline: %+v (%v), want held (distributed, a later deadline)", r, err)
	}
	if held, _ := store.ListAlertsBy(ctx, rotatord.AlertFilter{Kind: rotate.AlertRotationHeld}); len(held) != 1 || held[0].Agent != straggler {
		t.Fatalf("held alerts = %v, want one for %s", held, straggler)
	}
	// When it comes back, it completes like any rotation.
	confirmAll(t, svc, rs)
	if r, _ = store.FindRotation(ctx, rs[straggler].ID); r.State != rotatord.RotationCompleted {
		t.Fatalf("straggler's rotation = %s, want completed", r.State)
	}
	if _, err := svc.CompleteKeyRotation(ctx, "test", k.ID); !errors.Is(err, rotatord.ErrConflict) {
		t.Fatalf("complete of a completed key rotation = %v, want a conflict", err)
	}
}

// An emergency rotation removes the old key in the same commit that adds
// the new one and re-issues every agent at once, in one wave.
func TestEmergencyKeyRotation(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	names := fleetOf(t, svc, 12)
	// One agent has a rotation in flight signed by the old key.
	if _, err := svc.StartRotation(ctx, "test", names[0], rotatord.TriggerManual); err != nil {
		t.Fatal(err)
	}
	k, err := svc.RotateSigningKey(ctx, "test", "fleet", rotate.KeyRotationInput{Mode: rotatord.KeyModeEmergency})
	if err != nil {
		t.Fatal(err)
	}
	if k.State != rotatord.KeyRotationReissuing {
		t.Fatalf("emergency rotation = %s, want reissuing at once", k.State)
	}
	if got := signingKeysOf(accountJWT(t, svc, "fleet")); !slices.Equal(got, []string{k.NewKey}) {
		t.Fatalf("signing keys %v, want only the new key at once", got)
	}
	if slices.Contains(svc.CachedSigners(), k.OldKeys[0]) {
		t.Fatal("the removed key is still opened in memory")
	}
	if _, err := svc.AbandonKeyRotation(ctx, "test", k.ID); !errors.Is(err, rotatord.ErrConflict) {
		t.Fatalf("abandon of an emergency rotation = %v, want a conflict", err)
	}
	tick(t, svc)
	rs := inFlight(t, store, names)
	if len(rs) != len(names) {
		t.Fatalf("%d of %d agents re-issued at once", len(rs), len(names))
	}
	for n, r := range rs {
		cred, err := store.FindCredential(ctx, r.NewCredentialID)
		if err != nil || cred.SigningKey != k.NewKey {
			t.Fatalf("%s's new credentials signed by %s (%v), want the new key", n, cred.SigningKey, err)
		}
	}
	confirmAll(t, svc, rs)
	tick(t, svc)
	tick(t, svc)
	if k = keyRotation(t, svc, k.ID); k.State != rotatord.KeyRotationCompleted {
		t.Fatalf("key rotation = %s (%s), want completed", k.State, k.Reason)
	}
	// No revocation entry for the old keys: the servers refuse what the
	// removed key signed anyway.
	if _, err := svc.ResignQueued(ctx); err != nil {
		t.Fatal(err)
	}
	if revs := accountJWT(t, svc, "fleet").Revocations; len(revs) != 0 {
		t.Fatalf("%d revocation entries after an emergency rotation, want 0", len(revs))
	}
	for n, by := range signedBy(t, store, names) {
		if by != k.NewKey {
			t.Errorf("%s on %s, want the new key", n, by)
		}
	}
}

// Abandoning keeps both keys; new credentials sign with the new one.
func TestAbandonKeyRotation(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	names := fleetOf(t, svc, 4)
	k, err := svc.RotateSigningKey(ctx, "test", "fleet", rotate.KeyRotationInput{})
	if err != nil {
		t.Fatal(err)
	}
	k, err = svc.AbandonKeyRotation(ctx, "test", k.ID)
	if err != nil || k.State != rotatord.KeyRotationAbandoned {
		t.Fatalf("abandon = %v, %v", k, err)
	}
	ac := accountJWT(t, svc, "fleet")
	if !ac.SigningKeys.Contains(k.OldKeys[0]) || !ac.SigningKeys.Contains(k.NewKey) {
		t.Fatalf("signing keys %v, want both", signingKeysOf(ac))
	}
	if f := fleetState(t, svc, k.FleetRotation); f.State != rotatord.FleetAborted {
		t.Fatalf("fleet rotation = %s, want aborted", f.State)
	}
	tick(t, svc)
	if rs := inFlight(t, store, names); len(rs) != 0 {
		t.Fatalf("abandoned, yet %d rotations started", len(rs))
	}
	r := rotateAgent(t, svc, names[0])
	if cred, _ := store.FindCredential(ctx, r.NewCredentialID); cred.SigningKey != k.NewKey {
		t.Fatalf("a rotation after abandon signs with %s, want the new key", cred.SigningKey)
	}
	if _, err := svc.AbandonKeyRotation(ctx, "test", k.ID); !errors.Is(err, rotatord.ErrConflict) {
		t.Fatalf("second abandon = %v, want a conflict", err)
	}
	// A new rotation replaces both.
	k2, err := svc.RotateSigningKey(ctx, "test", "fleet", rotate.KeyRotationInput{Mode: rotatord.KeyModeEmergency})
	if err != nil {
		t.Fatal(err)
	}
	if len(k2.OldKeys) != 2 {
		t.Fatalf("next rotation replaces %v, want both keys", k2.OldKeys)
	}
}

// A role's key rotates the same way: only the role's agents are
// re-issued, and the new key carries the role's template.
func TestRoleKeyRotation(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	names := fleetOf(t, svc, 3) // agents of their own: not re-issued
	tmpl := rotatord.UserTemplate{Permissions: rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"jobs.>"}}}}
	role, err := svc.CreateRole(ctx, "test", "fleet", rotate.RoleInput{Name: "worker", Template: tmpl})
	if err != nil {
		t.Fatal(err)
	}
	workers := []string{"w1", "w2"}
	for _, w := range workers {
		if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: w, Account: "fleet", Role: "worker", Grace: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svc.RotateSigningKey(ctx, "test", "fleet", rotate.KeyRotationInput{Role: "nope"}); !errors.Is(err, rotatord.ErrNotFound) {
		t.Fatalf("rotate an unknown role's key = %v, want not found", err)
	}
	k, err := svc.RotateSigningKey(ctx, "test", "fleet", rotate.KeyRotationInput{Role: "worker"})
	if err != nil {
		t.Fatal(err)
	}
	if k.Kind != rotatord.KeyKindRole || k.Role != "worker" || !slices.Equal(k.OldKeys, role.SigningKeys) {
		t.Fatalf("key rotation = %+v", k)
	}
	scope, ok := accountJWT(t, svc, "fleet").SigningKeys.GetScope(k.NewKey)
	if !ok || scope == nil {
		t.Fatal("the role's new key is not a scoped key of the account jwt")
	}
	for range 5 {
		tick(t, svc)
		rs := inFlight(t, store, append(slices.Clone(names), workers...))
		for _, n := range names {
			if rs[n] != nil {
				t.Fatalf("%s (no role) re-issued by the role's key rotation", n)
			}
		}
		confirmAll(t, svc, rs)
	}
	if k = keyRotation(t, svc, k.ID); k.State != rotatord.KeyRotationCompleted {
		t.Fatalf("key rotation = %s, want completed", k.State)
	}
	for w, by := range signedBy(t, store, workers) {
		if by != k.NewKey {
			t.Errorf("%s on %s, want the role's new key", w, by)
		}
	}
	ac := accountJWT(t, svc, "fleet")
	if ac.SigningKeys.Contains(k.OldKeys[0]) || !ac.SigningKeys.Contains(k.NewKey) {
		t.Fatalf("signing keys after: %v", signingKeysOf(ac))
	}
	r, err := svc.Role(ctx, "fleet", "worker")
	if err != nil || !slices.Equal(r.SigningKeys, []string{k.NewKey}) {
		t.Fatalf("role keys %v (%v), want the new one", r.SigningKeys, err)
	}
}

// A replica that opened the old key signs with the new one as soon as the
// rotation moved on elsewhere, and drops the old one at its next tick.
func TestSignerCacheFollowsOtherReplicas(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store, sealer := newSealedService(t, clk)
	ctx := context.Background()
	fleetOf(t, svc, 1)
	other := rotate.New(rotate.Config{Store: store, Sealer: sealer, Now: clk.Now, NoJitter: true})
	if _, _, err := other.CreateAgent(ctx, "test", rotate.AgentInput{Name: "b1", Account: "fleet"}); err != nil {
		t.Fatal(err)
	}
	old := signedBy(t, store, []string{"b1"})["b1"]
	if !slices.Contains(other.CachedSigners(), old) {
		t.Fatal("the other replica did not keep the key it opened")
	}
	k, err := svc.RotateSigningKey(ctx, "test", "fleet", rotate.KeyRotationInput{Mode: rotatord.KeyModeEmergency})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.CreateAgent(ctx, "test", rotate.AgentInput{Name: "b2", Account: "fleet"}); err != nil {
		t.Fatal(err)
	}
	if by := signedBy(t, store, []string{"b2"})["b2"]; by != k.NewKey {
		t.Fatalf("the other replica signed with %s after the rotation, want the new key", by)
	}
	tick(t, other)
	if slices.Contains(other.CachedSigners(), old) {
		t.Fatal("the other replica still holds the retired key after its tick")
	}
}

// Retiring a key waits for every transaction signing with it, so no
// credential it signs can commit after it is gone.
func TestRetireWaitsForSigners(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	fleetOf(t, svc, 0)
	acc, err := store.FindAccountByName(ctx, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := store.SigningKeys(ctx, acc.ID)
	locked := make(chan struct{})
	release := make(chan struct{})
	signerDone := make(chan error, 1)
	go func() {
		signerDone <- store.InTx(ctx, func(ctx context.Context) error {
			if _, _, err := store.SigningKey(ctx, acc.ID); err != nil {
				return err
			}
			close(locked)
			<-release
			return nil
		})
	}()
	<-locked
	retired := make(chan error, 1)
	go func() {
		retired <- store.InTx(ctx, func(ctx context.Context) error { return store.RetireSigningKeys(ctx, keys, time.Now()) })
	}()
	select {
	case err := <-retired:
		t.Fatalf("retire returned (%v) while a transaction was signing with the key", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-signerDone; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-retired:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("retire did not go on after the signer committed")
	}
	live, _ := store.LiveSigningKeys(ctx, keys)
	if len(live) != 0 {
		t.Fatalf("live after retire: %v", live)
	}
}

// Scheduled staged rotations of an account's signing key.
func TestScheduledKeyRotation(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	fleetOf(t, svc, 2)
	for _, bad := range []string{"@every 30m", "nope", "* * * * *"} {
		if _, err := svc.UpdateAccount(ctx, "test", "fleet", rotate.AccountPatch{KeyRotationSchedule: &bad}); !errors.Is(err, rotatord.ErrInvalid) {
			t.Errorf("schedule %q = %v, want invalid", bad, err)
		}
	}
	sys := "@every 720h"
	if _, err := svc.UpdateAccount(ctx, "test", rotate.SystemAccountName, rotate.AccountPatch{KeyRotationSchedule: &sys}); !errors.Is(err, rotatord.ErrInvalid) {
		t.Errorf("a schedule on the system account = %v, want invalid", err)
	}
	spec := "@every 720h"
	if _, err := svc.UpdateAccount(ctx, "test", "fleet", rotate.AccountPatch{KeyRotationSchedule: &spec}); err != nil {
		t.Fatal(err)
	}
	acc, err := svc.Account(ctx, "fleet")
	if err != nil || acc.KeyRotation == nil || acc.KeyRotation.Schedule != spec {
		t.Fatalf("account key rotation = %+v (%v)", acc.KeyRotation, err)
	}
	tick(t, svc)
	if list, _ := svc.KeyRotations(ctx, rotatord.KeyRotationFilter{Account: "fleet"}); len(list) != 0 {
		t.Fatalf("%d key rotations before the schedule is due", len(list))
	}
	clk.Add(721 * time.Hour)
	tick(t, svc)
	list, err := svc.KeyRotations(ctx, rotatord.KeyRotationFilter{Account: "fleet"})
	if err != nil || len(list) != 1 || list[0].Trigger != rotatord.TriggerSchedule || list[0].Mode != rotatord.KeyModeStaged {
		t.Fatalf("key rotations after the schedule = %v (%v), want one staged from the schedule", list, err)
	}
	if acc, _ = svc.Account(ctx, "fleet"); !acc.KeyRotation.NextAt.After(clk.Now()) {
		t.Fatalf("next scheduled key rotation at %s, want after now", acc.KeyRotation.NextAt)
	}
	off := ""
	if _, err := svc.UpdateAccount(ctx, "test", "fleet", rotate.AccountPatch{KeyRotationSchedule: &off}); err != nil {
		t.Fatal(err)
	}
	if acc, _ = svc.Account(ctx, "fleet"); acc.KeyRotation != nil {
		t.Fatalf("key rotation after turning it off: %+v", acc.KeyRotation)
	}
	_ = store
}

// Keys only rotatord holds are rotated; an account without one refuses.
func TestKeyRotationRefusals(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	svc, store := newService(t, clk)
	ctx := context.Background()
	fleetOf(t, svc, 0)
	if _, err := svc.RotateSigningKey(ctx, "test", rotate.SystemAccountName, rotate.KeyRotationInput{}); !errors.Is(err, rotatord.ErrInvalid) {
		t.Errorf("system account = %v, want invalid", err)
	}
	if _, err := svc.RotateSigningKey(ctx, "test", "fleet", rotate.KeyRotationInput{Mode: "fast"}); !errors.Is(err, rotatord.ErrInvalid) {
		t.Errorf("mode fast = %v, want invalid", err)
	}
	if _, err := svc.RotateSigningKey(ctx, "test", "nope", rotate.KeyRotationInput{}); !errors.Is(err, rotatord.ErrNotFound) {
		t.Errorf("unknown account = %v, want not found", err)
	}
	if _, err := svc.KeyRotation(ctx, "8a1f2e3d-4c5b-4a69-8788-9a0b1c2d3e4f"); !errors.Is(err, rotatord.ErrNotFound) {
		t.Errorf("unknown key rotation = %v, want not found", err)
	}
	var _ *registry.Store = store
}
