package authwatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rotatord/rotatord"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func TestWindowThreshold(t *testing.T) {
	// Offsets of failures of one key, and whether each makes an alert due:
	// threshold 3 (more than 3), window 5m.
	for _, c := range []struct {
		name string
		at   []time.Duration
		due  []bool
	}{
		{"burst alerts once", []time.Duration{0, 1, 2, 3, 4, 5, 6}, []bool{false, false, false, true, false, false, false}},
		{"spread out never alerts", []time.Duration{0, 2 * time.Minute, 4 * time.Minute, 6 * time.Minute, 8 * time.Minute, 10 * time.Minute},
			[]bool{false, false, false, false, false, false}},
		{"sliding: the 4th within 5m of the 1st", []time.Duration{0, 2 * time.Minute, 4 * time.Minute, 4*time.Minute + 59*time.Second},
			[]bool{false, false, false, true}},
		{"sliding: the 1st fell out", []time.Duration{0, 2 * time.Minute, 4 * time.Minute, 5 * time.Minute},
			[]bool{false, false, false, false}},
		{"once per window, again after it", []time.Duration{0, 1, 2, 3, 4 * time.Minute, 4*time.Minute + 1, 4*time.Minute + 2, 5*time.Minute + 3},
			[]bool{false, false, false, true, false, false, false, true}},
		{"a quiet key starts over", []time.Duration{0, 1, 2, 3, time.Hour, time.Hour + 1, time.Hour + 2, time.Hour + 3},
			[]bool{false, false, false, true, false, false, false, true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWindow(3, 5*time.Minute, 100)
			for i, d := range c.at {
				_, due, _ := w.add("source:10.0.0.1", t0.Add(d))
				if due != c.due[i] {
					t.Fatalf("failure %d at +%s: due = %v, want %v", i+1, d, due, c.due[i])
				}
			}
		})
	}
}

func TestWindowRevokedThresholdZero(t *testing.T) {
	w := newWindow(0, 5*time.Minute, 100)
	for i, c := range []struct {
		at  time.Duration
		due bool
	}{{0, true}, {time.Second, false}, {4 * time.Minute, false}, {5 * time.Minute, true}} {
		if _, due, _ := w.add("key:U1", t0.Add(c.at)); due != c.due {
			t.Fatalf("attempt %d at +%s: due = %v, want %v", i+1, c.at, due, c.due)
		}
	}
}

func TestWindowUnmark(t *testing.T) {
	w := newWindow(1, time.Minute, 100)
	w.add("k", t0)
	_, due, prev := w.add("k", t0.Add(time.Second))
	if !due {
		t.Fatal("second failure over threshold 1: not due")
	}
	if _, due, _ := w.add("k", t0.Add(2*time.Second)); due {
		t.Fatal("due again within the window")
	}
	w.unmark("k", prev) // the alert could not be written
	if _, due, _ := w.add("k", t0.Add(3*time.Second)); !due {
		t.Fatal("not due after unmark")
	}
}

func TestWindowBounded(t *testing.T) {
	w := newWindow(2, time.Minute, 3)
	for i := range 5 {
		w.add(fmt.Sprintf("source:10.0.0.%d", i), t0.Add(time.Duration(i)*time.Second))
	}
	if got := w.len(); got != 3 {
		t.Fatalf("tracked keys = %d, want the cap 3", got)
	}
	if _, ok := w.keys["source:10.0.0.0"]; ok {
		t.Fatal("the least recently seen key was not evicted")
	}
	if _, ok := w.keys["source:10.0.0.4"]; !ok {
		t.Fatal("the newest key is missing")
	}
	// A window later, idle keys are forgotten.
	w.add("source:10.9.9.9", t0.Add(10*time.Minute))
	if got := w.len(); got != 1 {
		t.Fatalf("tracked keys after a quiet window = %d, want 1", got)
	}
	// Each key keeps threshold+1 timestamps, however many failures.
	for i := range 1000 {
		w.add("source:10.9.9.9", t0.Add(10*time.Minute+time.Duration(i)*time.Millisecond))
	}
	if tr := w.keys["source:10.9.9.9"].Value.(*tracker); len(tr.times) != 3 {
		t.Fatalf("timestamps kept = %d, want 3", len(tr.times))
	}
}

// fakeStore is an in-memory registry of keys and an outbox.
type fakeStore struct {
	mu      sync.Mutex
	owners  map[string]fakeOwner
	alerts  []*rotatord.Alert
	failAdd int // AddAlertOnce fails this many times first
	lookups int
	windows map[string]time.Time // kind and key to the end of its window
}

type fakeOwner struct {
	agent *rotatord.Agent
	cred  *rotatord.Credential
}

func (s *fakeStore) FindKeyOwner(_ context.Context, pub, _ string) (*rotatord.Agent, *rotatord.Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookups++
	o, ok := s.owners[pub]
	if !ok {
		return nil, nil, rotatord.Errorf(rotatord.ENOTFOUND, "key %q not found", pub)
	}
	return o.agent, o.cred, nil
}

func (s *fakeStore) AddAlertOnce(_ context.Context, a *rotatord.Alert, key string, now, until time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failAdd > 0 {
		s.failAdd--
		return false, errors.New("database unreachable")
	}
	if s.windows == nil {
		s.windows = map[string]time.Time{}
	}
	if end, ok := s.windows[a.Kind+" "+key]; ok && end.After(now) {
		return false, nil
	}
	s.windows[a.Kind+" "+key] = until
	s.alerts = append(s.alerts, a)
	return true, nil
}

func (s *fakeStore) taken() []*rotatord.Alert {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.alerts
	s.alerts = nil
	return out
}

type testClock struct{ now time.Time }

func (c *testClock) Now() time.Time { return c.now }

// fleet is an account with a signing key and users issued by it.
type fleet struct {
	t       *testing.T
	accPub  string
	signer  nkeys.KeyPair
	store   *fakeStore
	clock   *testClock
	watcher *Watcher
	reg     *prometheus.Registry
}

func newFleet(t *testing.T) *fleet {
	acc, _ := nkeys.CreateAccount()
	accPub, _ := acc.PublicKey()
	signer, _ := nkeys.CreateAccount()
	f := &fleet{t: t, accPub: accPub, signer: signer, store: &fakeStore{owners: map[string]fakeOwner{}},
		clock: &testClock{now: t0}, reg: prometheus.NewRegistry()}
	f.watcher = New(Config{Store: f.store, Metrics: f.reg, Now: f.clock.Now, Threshold: 3, Window: 5 * time.Minute})
	return f
}

// issue makes a user JWT for a new key, signed by signer for the account.
func (f *fleet) issue(signer nkeys.KeyPair, name string, exp time.Time) (pub, token, jti string) {
	f.t.Helper()
	kp, _ := nkeys.CreateUser()
	pub, _ = kp.PublicKey()
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	uc.IssuerAccount = f.accPub
	uc.Expires = exp.Unix()
	token, err := uc.Encode(signer)
	if err != nil {
		f.t.Fatal(err)
	}
	c, _ := jwt.DecodeUserClaims(token)
	return pub, token, c.ID
}

// agent registers an agent with a credential in state.
func (f *fleet) agent(name, agentState, credState string) (pub, token string) {
	pub, token, jti := f.issue(f.signer, name, f.clock.now.Add(24*time.Hour))
	revokedAt := t0.Add(-time.Minute)
	f.store.owners[pub] = fakeOwner{
		agent: &rotatord.Agent{ID: int64(len(f.store.owners) + 1), Name: name, Account: "fleet", AccountKey: f.accPub, State: agentState},
		cred:  &rotatord.Credential{PublicKey: pub, JWTID: jti, State: credState, RevokedAt: &revokedAt},
	}
	return pub, token
}

func (f *fleet) fail(host, token string) {
	f.t.Helper()
	ev := map[string]any{
		"type":   "io.nats.server.advisory.v1.client_disconnect",
		"server": map[string]any{"name": "n1", "id": "NSERVER"},
		"client": map[string]any{"host": host, "acc": "N/A", "jwt": token, "kind": "Client", "client_type": "nats"},
		"reason": "Authentication Failure",
	}
	b, _ := json.Marshal(ev)
	f.watcher.Handle(context.Background(), b)
}

func (f *fleet) count(reason string) float64 {
	var m dto.Metric
	if err := f.watcher.byReason[reason].Write(&m); err != nil {
		f.t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestRevokedKeyAlertsOnceAndBurstOnce(t *testing.T) {
	f := newFleet(t)
	_, token := f.agent("kate", rotatord.AgentRevoked, rotatord.CredentialRevoked)

	f.fail("10.0.0.7", token)
	got := f.store.taken()
	if len(got) != 1 || got[0].Kind != KindRevokedKeyUsed || got[0].Severity != rotatord.SeverityCritical ||
		got[0].Agent != "kate" || got[0].Account != "fleet" || !strings.Contains(got[0].Reason, "10.0.0.7") {
		t.Fatalf("first attempt with a revoked key: alerts = %+v, want one critical revoked_key_used for kate from 10.0.0.7", got)
	}
	for range 2 {
		f.fail("10.0.0.7", token)
	}
	if got := f.store.taken(); len(got) != 0 {
		t.Fatalf("3 failures (threshold 3): alerts = %+v, want none", got)
	}
	f.fail("10.0.0.7", token) // the 4th: over the threshold
	got = f.store.taken()
	if len(got) != 1 {
		t.Fatalf("4th failure: %d alerts %+v, want one naming agent and source", len(got), got)
	}
	if a := got[0]; a.Kind != KindAuthFailures || a.Agent != "kate" || a.Account != "fleet" ||
		!strings.Contains(a.Reason, "10.0.0.7") || !strings.Contains(a.Reason, "revoked_key 4") {
		t.Fatalf("burst alert = %+v", a)
	}
	for range 20 {
		f.clock.now = f.clock.now.Add(time.Second)
		f.fail("10.0.0.7", token)
	}
	if got := f.store.taken(); len(got) != 0 {
		t.Fatalf("more failures within the window: alerts = %+v, want none", got)
	}
	if n := f.count(ReasonRevokedKey); n != 24 {
		t.Fatalf("rotatord_auth_failures_total{reason=revoked_key} = %v, want 24", n)
	}
	// A window after the alerts, the still ongoing burst alerts again.
	f.clock.now = t0.Add(5 * time.Minute)
	f.fail("10.0.0.7", token)
	kinds := map[string]int{}
	for _, a := range f.store.taken() {
		kinds[a.Kind]++
	}
	if kinds[KindRevokedKeyUsed] != 1 || kinds[KindAuthFailures] != 1 {
		t.Fatalf("next window: alerts by kind = %v, want one of each", kinds)
	}
	// One lookup per owner TTL, not one per failure.
	if f.store.lookups > 4 {
		t.Fatalf("registry lookups = %d for 25 failures of one key", f.store.lookups)
	}
}

func TestRevokedKeyFlags(t *testing.T) {
	for _, c := range []struct {
		name       string
		agentState string
		credState  string
		deleted    bool
		severity   string // "": not flagged at once
		how        string
	}{
		// The key's revocation time is t0 - 1m (fleet.agent).
		{"agent revoked", rotatord.AgentRevoked, rotatord.CredentialRevoked, false, rotatord.SeverityCritical,
			"revoked with its agent at 2025-03-01T11:59:00Z"},
		{"replaced by a rotation", rotatord.AgentActive, rotatord.CredentialRetired, false, rotatord.SeverityWarning,
			"replaced by a rotation at 2025-03-01T11:59:00Z"},
		// A key replaced by a rotation was revoked then, not when its agent
		// was revoked or deleted later.
		{"replaced, then its agent revoked", rotatord.AgentRevoked, rotatord.CredentialRetired, false, rotatord.SeverityCritical,
			"replaced by a rotation at 2025-03-01T11:59:00Z; its agent has been revoked since"},
		{"replaced, then its agent deleted", "", rotatord.CredentialRetired, true, rotatord.SeverityWarning,
			"replaced by a rotation at 2025-03-01T11:59:00Z; its agent has been deleted since"},
		{"agent deleted", "", rotatord.CredentialRevoked, true, rotatord.SeverityWarning, "revoked at 2025-03-01T11:59:00Z; its agent was deleted"},
		{"rolled back", rotatord.AgentActive, rotatord.CredentialRevoked, false, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFleet(t)
			pub, token := f.agent("kate", c.agentState, c.credState)
			if c.deleted {
				f.store.owners[pub].agent.ID = 0
			}
			f.fail("10.0.0.7", token)
			got := f.store.taken()
			if n := f.count(ReasonRevokedKey); n != 1 {
				t.Fatalf("revoked_key failures = %v, want 1", n)
			}
			if c.severity == "" {
				if len(got) != 0 {
					t.Fatalf("alerts = %+v, want none for a key never seen in use", alertList(got))
				}
				return
			}
			if len(got) != 1 || got[0].Kind != KindRevokedKeyUsed || got[0].Severity != c.severity ||
				!strings.Contains(got[0].Reason, c.how) || !strings.Contains(got[0].Reason, pub) {
				t.Fatalf("alerts = %+v, want one %s revoked_key_used saying %q", alertList(got), c.severity, c.how)
			}
		})
	}
}

func TestForgedUnknownAndGarbled(t *testing.T) {
	f := newFleet(t)
	pub, _ := f.agent("bob", rotatord.AgentActive, rotatord.CredentialActive)
	// A JWT for bob's real key, signed by an account key rotatord never had.
	rogue, _ := nkeys.CreateAccount()
	uc := jwt.NewUserClaims(pub)
	rogueAcc, _ := rogue.PublicKey()
	uc.IssuerAccount = rogueAcc
	forged, err := uc.Encode(rogue)
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		f.fail("192.0.2.1", forged)
	}
	got := f.store.taken()
	if len(got) != 1 || got[0].Kind != KindAuthFailures || got[0].Agent != "bob" || got[0].Account != "fleet" ||
		!strings.Contains(got[0].Reason, "192.0.2.1") || !strings.Contains(got[0].Reason, "forged_jwt 4") {
		t.Fatalf("forged JWTs: alerts = %+v, want one naming bob and the source", got)
	}
	if n := f.count(ReasonForgedJWT); n != 4 {
		t.Fatalf("forged_jwt failures = %v, want 4", n)
	}

	// Unknown keys from one address: counted by source only.
	for range 4 {
		_, token, _ := f.issue(rogue, "", t0.Add(time.Hour))
		f.fail("198.51.100.9", token)
	}
	got = f.store.taken()
	if len(got) != 1 || got[0].Agent != "" || !strings.Contains(got[0].Reason, "198.51.100.9") ||
		!strings.Contains(got[0].Reason, "unknown_key 4") || strings.Count(got[0].Reason, "key U") != 4 {
		t.Fatalf("unknown keys: alerts = %+v, want one for the source", alertList(got))
	}

	// An expired JWT of a current key, a garbled JWT, and no JWT at all.
	_, old, jti := f.issue(f.signer, "carl", t0.Add(-time.Hour))
	carl, _ := jwt.DecodeUserClaims(old)
	f.store.owners[carl.Subject] = fakeOwner{agent: &rotatord.Agent{Name: "carl", Account: "fleet", State: rotatord.AgentActive},
		cred: &rotatord.Credential{PublicKey: carl.Subject, JWTID: jti, State: rotatord.CredentialActive}}
	f.fail("203.0.113.1", old)
	f.fail("203.0.113.1", old[:len(old)-5]+"AAAAA")
	f.fail("203.0.113.1", "")
	for reason, want := range map[string]float64{ReasonExpired: 1, ReasonBadJWT: 1, ReasonNoJWT: 1, ReasonUnknownKey: 4, ReasonRevokedKey: 0} {
		if n := f.count(reason); n != want {
			t.Errorf("failures with reason %s = %v, want %v", reason, n, want)
		}
	}
	// The metric's labels are reasons only: never agents or addresses.
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if len(mf.GetMetric()) != len(allReasons) {
			t.Fatalf("%s has %d series, want one per reason", mf.GetName(), len(mf.GetMetric()))
		}
	}
}

func TestAlertRetriedWhenOutboxFails(t *testing.T) {
	f := newFleet(t)
	_, token := f.agent("kate", rotatord.AgentRevoked, rotatord.CredentialRevoked)
	f.store.failAdd = 1
	f.fail("10.0.0.7", token)
	if got := f.store.taken(); len(got) != 0 {
		t.Fatalf("alerts = %+v, want none while the outbox fails", got)
	}
	f.fail("10.0.0.7", token)
	if got := f.store.taken(); len(got) != 1 || got[0].Kind != KindRevokedKeyUsed {
		t.Fatalf("alerts = %+v, want the revoked_key_used alert on the next attempt", got)
	}
	select {
	case <-f.watcher.AlertKicks():
	default:
		t.Fatal("no kick for the dispatcher after an alert was written")
	}
}

func alertList(as []*rotatord.Alert) []rotatord.Alert {
	out := make([]rotatord.Alert, len(as))
	for i, a := range as {
		out[i] = *a
	}
	return out
}
