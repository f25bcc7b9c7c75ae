package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/distribute/vaulttest"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/seal"
	"github.com/rotatord/rotatord/pkg/agent"
)

// keyEnv is a rotatord with an injected clock, whose tick the test
// drives, with its nats-server and account "fleet", for poll and file
// agents; it leaves the environment alone (its tests may run in parallel).
func keyEnv(t *testing.T) (*env, *vaulttest.Server, *clock) {
	t.Helper()
	return newKeyEnv(t, nil)
}

// keyEnvVault is keyEnv with a fake Vault for Vault agents too (its token
// is in the environment: not in parallel).
func keyEnvVault(t *testing.T) (*env, *vaulttest.Server, *clock) {
	t.Helper()
	v := vaulttest.New(t, "root-token")
	t.Setenv("VAULT_TOKEN", "root-token")
	return newKeyEnv(t, v)
}

func newKeyEnv(t *testing.T, v *vaulttest.Server) (*env, *vaulttest.Server, *clock) {
	t.Helper()
	clk := &clock{}
	fileDir := t.TempDir()
	e := newEnvWith(t, func(c *Config) {
		if v != nil {
			c.VaultAddr = v.URL()
		}
		c.FileDeliveryDir = fileDir
		c.Now = clk.Now
		c.TickSpec = ""
		// A rotation completes with the push of the re-sign that refuses
		// its old key; a wave ends when its rotations did.
		c.ResignEvery = time.Second
	})
	e.startNATS()
	e.waitNATS()
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	return e, v, clk
}

// tickEvery runs e's scheduler tick until the test ends.
func tickEvery(t *testing.T, m *Main, d time.Duration) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if _, err := m.Service.Tick(ctx); err != nil && ctx.Err() == nil {
				t.Logf("tick: %v", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// fleetMember is an agent of account "fleet" on pkg/agent, connected.
type fleetMember struct {
	name     string
	delivery rotatord.Delivery
	file     string // its creds file, for file delivery
	a        *agent.Client
	nc       *nats.Conn

	mu       sync.Mutex
	drops    []time.Time // disconnects, when they happened
	rejected []time.Time // when the servers refused every key it held
}

// joinFleet creates an agent (poll, Vault or file delivery) and connects it.
func joinFleet(e *env, v *vaulttest.Server, clk *clock, name string, d rotatord.Delivery) *fleetMember {
	e.t.Helper()
	m, err := newFleetMember(e, v, clk, name, d)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// joinFleetN creates and connects n agents, a few at a time, with the
// delivery delivery says.
func joinFleetN(e *env, v *vaulttest.Server, clk *clock, n int, delivery func(i int) rotatord.Delivery) []*fleetMember {
	e.t.Helper()
	ms := make([]*fleetMember, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	work := make(chan int)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				ms[i], errs[i] = newFleetMember(e, v, clk, fmt.Sprintf("agent-%02d", i), delivery(i))
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			e.t.Fatal(err)
		}
	}
	return ms
}

func newFleetMember(e *env, v *vaulttest.Server, clk *clock, name string, d rotatord.Delivery) (*fleetMember, error) {
	in := rotate.AgentInput{Name: name, Account: "fleet", Grace: time.Minute, Delivery: d,
		Permissions: rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"orders.>"}}, Sub: rotatord.PermissionList{Allow: []string{"orders.>"}}}}
	_, creds, err := e.main.Service.CreateAgent(context.Background(), "test", in)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	m := &fleetMember{name: name, delivery: d}
	switch d {
	case rotatord.DeliveryVault:
		data, _, ok := v.Secret("nats/fleet/" + name)
		if !ok {
			return nil, fmt.Errorf("no vault secret for %s", name)
		}
		creds = []byte(data["creds"].(string))
	case rotatord.DeliveryFile:
		m.file = filepath.Join(e.main.Config.FileDeliveryDir, "fleet", name+".creds")
		if creds, err = os.ReadFile(m.file); err != nil {
			return nil, fmt.Errorf("creds file of %s: %w", name, err)
		}
	}
	a, err := agent.New(agent.Config{Server: e.main.URL(), Name: name, Creds: creds, Now: clk.Now,
		Log: discardLogger(), OnState: func(s agent.State, _ error) {
			if s == agent.StateRejected {
				m.mu.Lock()
				m.rejected = append(m.rejected, time.Now())
				m.mu.Unlock()
			}
		}})
	if err != nil {
		return nil, err
	}
	m.a = a
	m.nc, err = a.Connect(e.ns.ClientURL(), nats.DisconnectErrHandler(func(*nats.Conn, error) {
		m.mu.Lock()
		m.drops = append(m.drops, time.Now())
		m.mu.Unlock()
	}))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", name, err)
	}
	e.t.Cleanup(m.nc.Close)
	return m, nil
}

// follow makes the agent look for new creds every interval until the test
// ends: from rotatord (poll) or from its Vault secret.
func (m *fleetMember) follow(t *testing.T, v *vaulttest.Server, interval time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		switch m.delivery {
		case rotatord.DeliveryVault:
			m.a.WatchVault(ctx, v.Client(t), "secret", "nats/fleet/"+m.name, interval)
		case rotatord.DeliveryFile:
			m.a.WatchFile(ctx, m.file, interval)
		default:
			m.a.Run(ctx, interval)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

func (m *fleetMember) issuer(t testing.TB) string {
	t.Helper()
	token, err := jwt.ParseDecoratedJWT(m.a.CredsFile())
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		t.Fatal(err)
	}
	return uc.Issuer
}

func (m *fleetMember) events() (drops, rejected []time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.drops), slices.Clone(m.rejected)
}

// onKey reports whether the agent is connected with credentials signed by
// key.
func (m *fleetMember) onKey(t testing.TB, key string) bool {
	return m.a.Status().State == agent.StateConnected && m.nc.IsConnected() && m.issuer(t) == key
}

// accountClaimsOf reads the account JWT rotatord serves for an account.
func (e *env) accountClaimsOf(name string) *jwt.AccountClaims {
	e.t.Helper()
	pub := e.must(200, "GET", "/v1/accounts/"+name, nil)["public_key"].(string)
	j, err := e.main.Store.FindAccountJWT(context.Background(), pub)
	if err != nil {
		e.t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(j.JWT)
	if err != nil {
		e.t.Fatal(err)
	}
	return ac
}

// lockouts samples, until stop, that every agent but the excused ones
// holds credentials the servers accept: never rejected, signed by a key of
// the stored account JWT and not revoked by it.
type lockouts struct {
	mu      sync.Mutex
	found   []string
	excused map[string]bool
	decoded map[string]*jwt.UserClaims // by token
	samples int
	stop    func()
}

func sampleLockouts(e *env, ms []*fleetMember) *lockouts {
	l := &lockouts{excused: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	pub := e.must(200, "GET", "/v1/accounts/fleet", nil)["public_key"].(string)
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			j, err := e.main.Store.FindAccountJWT(ctx, pub)
			if err == nil {
				ac, _ := jwt.DecodeAccountClaims(j.JWT)
				l.check(ac, ms)
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	l.stop = func() { cancel(); <-done }
	e.t.Cleanup(l.stop)
	return l
}

func (l *lockouts) check(ac *jwt.AccountClaims, ms []*fleetMember) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.samples++
	if l.decoded == nil {
		l.decoded = map[string]*jwt.UserClaims{}
	}
	for _, m := range ms {
		if l.excused[m.name] {
			continue
		}
		if _, rejected := m.events(); len(rejected) > 0 {
			l.found = append(l.found, m.name+": the servers refused every key it held")
		}
		token, _ := jwt.ParseDecoratedJWT(m.a.CredsFile())
		uc, err := l.decoded[token], error(nil)
		if uc == nil {
			if uc, err = jwt.DecodeUserClaims(token); err == nil {
				l.decoded[token] = uc
			}
		}
		switch {
		case err != nil:
			l.found = append(l.found, m.name+": unreadable creds")
		case !ac.SigningKeys.Contains(uc.Issuer):
			l.found = append(l.found, fmt.Sprintf("%s: holds creds signed by %s, not trusted by the account jwt", m.name, uc.Issuer))
		case ac.IsClaimRevoked(uc):
			l.found = append(l.found, m.name+": holds revoked creds")
		}
	}
}

func (l *lockouts) excuse(name string) {
	l.mu.Lock()
	l.excused[name] = true
	l.mu.Unlock()
}

func (l *lockouts) report(t *testing.T) {
	t.Helper()
	l.stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.samples < 10 {
		t.Fatalf("only %d samples of the agents' credentials", l.samples)
	}
	if len(l.found) > 0 {
		t.Fatalf("lockouts in %d samples: %d, the first: %s", l.samples, len(l.found), strings.Join(l.found[:min(5, len(l.found))], "; "))
	}
	t.Logf("%d samples of every agent's credentials, no lockout", l.samples)
}

// getJSON GETs path with the admin token and decodes the answer.
func (e *env) getJSON(path string) map[string]any {
	e.t.Helper()
	return e.must(200, "GET", path, nil)
}

// settle polls ok every 200 ms until it holds, for checks that cost a
// request or more.
func settle(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func progressOf(f map[string]any, wave int) map[string]any {
	return f["progress"].([]any)[wave-1].(map[string]any)
}

func num(v any) int { f, _ := v.(float64); return int(f) }

// A staged rotation of an account's signing key with 50 connected agents,
// some polling rotatord, some reading Vault, one that never comes back:
// no agent is ever without accepted credentials, every returning agent
// ends on the new key, the old key stays until the straggler is resolved,
// then leaves the account JWT.
func TestStagedSigningKeyRotationEndToEnd(t *testing.T) {
	t0 := time.Now()
	e, v, clk := keyEnvVault(t)
	const n = 50
	ms := joinFleetN(e, v, clk, n-1, func(i int) rotatord.Delivery { // 10 Vault agents
		return map[bool]rotatord.Delivery{true: rotatord.DeliveryVault, false: rotatord.DeliveryPoll}[i%5 == 1]
	})
	// Created last, so in the last wave; it never looks for new creds.
	straggler := joinFleet(e, v, clk, fmt.Sprintf("agent-%02d", n-1), rotatord.DeliveryPoll)
	ms = append(ms, straggler)
	t.Logf("%s phase: %d agents created and connected", time.Since(t0), n)
	for _, m := range ms[:n-1] {
		m.follow(t, v, 500*time.Millisecond)
	}
	oldKeys := e.accountClaimsOf("fleet").SigningKeys.Keys()
	if len(oldKeys) != 1 {
		t.Fatalf("signing keys %v, want one", oldKeys)
	}
	old := oldKeys[0]
	l := sampleLockouts(e, ms)
	tickEvery(t, e.main, 100*time.Millisecond)

	started := e.must(202, "POST", "/v1/accounts/fleet/signing-keys/rotate", map[string]any{"mode": "staged"})
	id := started["id"].(string)
	k := e.getJSON("/v1/key-rotations/" + id)
	newKey := k["new_key"].(string)
	fleetID := k["fleet_rotation"].(string)
	var f map[string]any
	settle(t, 40*time.Second, "every agent but the straggler to be re-issued and confirmed", func() bool {
		f = e.getJSON("/v1/fleet-rotations/" + fleetID)
		w1, w2 := progressOf(f, 1), progressOf(f, 2)
		return num(w1["done"]) == 5 && num(w2["done"]) == 44 && num(w2["waiting"]) == 1
	})
	t.Logf("%s phase: every agent but the straggler re-issued", time.Since(t0))
	if w := progressOf(f, 1); w["ended_at"] == nil || num(w["agents"]) != 5 {
		t.Fatalf("the canary wave of 10%%: %v", w)
	}
	ac := e.accountClaimsOf("fleet")
	if !ac.SigningKeys.Contains(old) || !ac.SigningKeys.Contains(newKey) {
		t.Fatalf("account jwt signing keys %v during the re-issue, want old and new", ac.SigningKeys.Keys())
	}
	// The straggler's grace ends: its rotation rolls back, it keeps its
	// old-key credentials and holds the old key in place.
	clk.Advance(2 * time.Minute)
	settle(t, 20*time.Second, "the key rotation to wait for the straggler", func() bool {
		k = e.getJSON("/v1/key-rotations/" + id)
		return k["state"] == "waiting"
	})
	t.Logf("%s phase: waiting", time.Since(t0))
	if names := k["straggler_agents"].([]any); len(names) != 1 || names[0] != straggler.name || num(k["stragglers"]) != 1 {
		t.Fatalf("stragglers %v (%v), want [%s]", names, k["stragglers"], straggler.name)
	}
	if !e.accountClaimsOf("fleet").SigningKeys.Contains(old) {
		t.Fatal("the old key left the account jwt while the straggler depends on it")
	}
	if c, err := connectCreds(e, string(straggler.a.CredsFile())); err != nil {
		t.Fatalf("the straggler's old-key creds are refused while it waits: %v", err)
	} else {
		c.Close()
	}
	alerts := e.getJSON("/v1/alerts?kind=key_rotation_waiting")["alerts"].([]any)
	if len(alerts) != 1 || !strings.Contains(alerts[0].(map[string]any)["reason"].(string), straggler.name) {
		t.Fatalf("key_rotation_waiting alerts = %v", alerts)
	}
	for _, m := range ms[:n-1] {
		if !m.onKey(t, newKey) {
			t.Errorf("%s is on %s (%s), want connected on the new key", m.name, m.issuer(t), m.a.Status().State)
		}
	}

	// The operator resolves the straggler: its old-key creds stop working
	// and it is re-issued under the new key; it comes back by itself.
	l.excuse(straggler.name)
	e.must(200, "POST", "/v1/key-rotations/"+id+"/complete", nil)
	if e.accountClaimsOf("fleet").SigningKeys.Contains(old) {
		t.Fatal("the old key is still in the account jwt after complete")
	}
	eventually(t, 10*time.Second, "the servers to drop the straggler", func() bool {
		drops, _ := straggler.events()
		return len(drops) > 0
	})
	straggler.follow(t, v, time.Hour)
	eventually(t, 20*time.Second, "the straggler back on the new key", func() bool { return straggler.onKey(t, newKey) })
	settle(t, 20*time.Second, "the key rotation to complete", func() bool {
		return e.getJSON("/v1/key-rotations/" + id)["state"] == "completed"
	})
	if got := e.accountClaimsOf("fleet").SigningKeys.Keys(); !slices.Equal(got, []string{newKey}) {
		t.Fatalf("account jwt signing keys %v at the end, want only the new key", got)
	}
	t.Logf("%s phase: completed", time.Since(t0))
	l.report(t)
	for _, m := range ms[:n-1] {
		if !m.onKey(t, newKey) {
			t.Errorf("%s is not connected on the new key at the end", m.name)
		}
	}
}

// An emergency rotation: the servers drop the old key's users at once, and
// they are back on the new key within seconds, by themselves: poll agents
// authenticate to rotatord with their old user key (their interval here is
// an hour), Vault and file agents find new deliveries. A user JWT minted with the
// old ("leaked") key is refused from then on.
func TestEmergencySigningKeyRotationEndToEnd(t *testing.T) {
	e, v, clk := keyEnvVault(t)
	ms := joinFleetN(e, v, clk, 12, func(i int) rotatord.Delivery {
		return []rotatord.Delivery{rotatord.DeliveryVault, rotatord.DeliveryPoll, rotatord.DeliveryFile}[i%3]
	})
	for _, m := range ms {
		m.follow(t, v, time.Hour)
	}
	leaked := e.accountClaimsOf("fleet").SigningKeys.Keys()[0]
	minted := mintWithSigningKey(t, e, "fleet")
	if c, err := connectCreds(e, minted); err != nil {
		t.Fatalf("a user minted with the signing key is refused before the rotation: %v", err)
	} else {
		c.Close()
	}
	tickEvery(t, e.main, 100*time.Millisecond)

	sent := time.Now()
	started := e.must(202, "POST", "/v1/accounts/fleet/signing-keys/rotate", map[string]any{"mode": "emergency"})
	id := started["id"].(string)
	if started["state"] != "reissuing" {
		t.Fatalf("emergency rotation started %v, want reissuing", started["state"])
	}
	newKey := e.getJSON("/v1/key-rotations/" + id)["new_key"].(string)
	if got := e.accountClaimsOf("fleet").SigningKeys.Keys(); !slices.Equal(got, []string{newKey}) {
		t.Fatalf("signing keys %v right after the request, want only the new key", got)
	}
	eventually(t, 10*time.Second, "the servers to drop every user of the old key", func() bool {
		for _, m := range ms {
			if drops, _ := m.events(); len(drops) == 0 {
				return false
			}
		}
		return true
	})
	var last time.Duration
	for _, m := range ms {
		drops, _ := m.events()
		last = max(last, drops[0].Sub(sent))
	}
	t.Logf("every user of the old key dropped within %s of the request", last.Round(time.Millisecond))
	eventually(t, 30*time.Second, "every agent back on the new key", func() bool {
		for _, m := range ms {
			if !m.onKey(t, newKey) {
				return false
			}
		}
		return true
	})
	t.Logf("every agent back on the new key %s after the request", time.Since(sent).Round(time.Millisecond))
	if c, err := connectCreds(e, minted); err == nil {
		c.Close()
		t.Fatalf("a user minted with the removed key %s still connects", leaked)
	}
	settle(t, 20*time.Second, "the key rotation to complete", func() bool {
		return e.getJSON("/v1/key-rotations/" + id)["state"] == "completed"
	})
	for _, m := range ms {
		switch m.delivery {
		case rotatord.DeliveryVault:
			if _, version, _ := v.Secret("nats/fleet/" + m.name); version < 2 {
				t.Errorf("%s's vault secret is at version %d, want a new delivery", m.name, version)
			}
		case rotatord.DeliveryFile:
			if creds, err := os.ReadFile(m.file); err != nil || !strings.Contains(string(creds), "NATS USER JWT") {
				t.Errorf("%s's creds file after the rotation: %v", m.name, err)
			} else if uc := credsJWT(t, string(creds)); uc.Issuer != newKey {
				t.Errorf("%s's creds file is signed by %s, want the new key", m.name, uc.Issuer)
			}
		}
	}
	// The removed key's credentials need no revocation entries.
	settle(t, 20*time.Second, "the re-signs to settle", func() bool {
		return len(e.accountClaimsOf("fleet").Revocations) == 0
	})
}

// mintWithSigningKey makes a creds file for a new user of the account,
// signed by its current signing key's seed, as one who stole that seed
// would.
func mintWithSigningKey(t *testing.T, e *env, account string) string {
	t.Helper()
	ctx := context.Background()
	acc, err := e.main.Store.FindAccountByName(ctx, account)
	if err != nil {
		t.Fatal(err)
	}
	pub, enc, err := e.main.Store.SigningKey(ctx, acc.ID)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := seal.LoadFile(e.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := sealer.Open(enc, []byte(pub))
	if err != nil {
		t.Fatal(err)
	}
	sk, err := nkeys.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	user, _ := nkeys.CreateUser()
	upub, _ := user.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.IssuerAccount = acc.PublicKey
	uc.Expires = time.Now().Add(time.Hour).Unix()
	token, err := uc.Encode(sk)
	if err != nil {
		t.Fatal(err)
	}
	useed, _ := user.Seed()
	creds, err := jwt.FormatUserConfig(token, useed)
	if err != nil {
		t.Fatal(err)
	}
	return string(creds)
}

// A rotate-all whose canary never comes back halts with an alert, no later
// wave starts, and the agents keep working; the CLI's --wait shows the
// progress and exits non-zero; abort ends it.
func TestRotateAllCanaryHaltsEndToEnd(t *testing.T) {
	t.Parallel()
	e, v, clk := keyEnv(t)
	ms := joinFleetN(e, v, clk, 10, func(int) rotatord.Delivery { return rotatord.DeliveryPoll }) // none looks for new creds
	done := make(chan cliResult, 1)
	go func() {
		done <- e.runCLI("accounts", "rotate-all", "fleet", "--waves", "10,100", "--halt-on-failure-rate", "0.05", "--wait")
	}()
	var id string
	settle(t, 20*time.Second, "the canary's rotation", func() bool {
		e.main.Service.Tick(context.Background())
		list := e.getJSON("/v1/fleet-rotations?account=fleet")["fleet_rotations"].([]any)
		if len(list) == 0 {
			return false
		}
		f := list[0].(map[string]any)
		id = f["id"].(string)
		return num(progressOf(f, 1)["in_flight"]) == 1
	})
	clk.Advance(2 * time.Minute) // the canary's grace ends
	r := waitCLI(t, e, done)
	r.failed(t, "fleet rotation "+id+" halted", "wave 1 of 2")
	if !strings.Contains(r.stderr, "fleet rotation "+id+": running wave 1/2 (10%): 0/10 done") || !strings.Contains(r.stderr, "halted") {
		t.Errorf("rotate-all --wait printed no progress lines on stderr:\n%s", r.stderr)
	}
	f := e.getJSON("/v1/fleet-rotations/" + id)
	if f["state"] != "halted" || num(progressOf(f, 1)["failed"]) != 1 || progressOf(f, 2)["started_at"] != nil {
		t.Fatalf("fleet rotation = %v", f)
	}
	alerts := e.getJSON("/v1/alerts?kind=fleet_rotation_halted")["alerts"].([]any)
	if len(alerts) != 1 || alerts[0].(map[string]any)["severity"] != "critical" {
		t.Fatalf("halt alerts = %v", alerts)
	}
	rotated := 0
	for _, m := range ms {
		rots := e.getJSON("/v1/agents/" + m.name + "/rotations")["rotations"].([]any)
		rotated += len(rots)
		if !m.nc.IsConnected() {
			t.Errorf("%s lost its connection", m.name)
		}
	}
	if rotated != 1 {
		t.Errorf("%d rotations in all, want only the canary's", rotated)
	}
	// One fleet operation at a time: a key rotation waits too.
	if status, body := e.do("POST", "/v1/accounts/fleet/signing-keys/rotate", e.admin, nil); status != 409 || !strings.Contains(string(body), id) {
		t.Fatalf("key rotation while halted = %d %s, want 409 naming %s", status, body, id)
	}
	out := e.runCLI("fleet-rotations", "abort", id).ok(t)
	if !strings.Contains(out.stdout, "aborted") {
		t.Fatalf("abort printed:\n%s", out.stdout)
	}
	shown := decodeJSON(t, e.runCLI("fleet-rotations", "show", id, "-o", "json").ok(t).stdout)
	if shown["state"] != "aborted" || num(shown["failed"]) != 1 {
		t.Fatalf("fleet-rotations show -o json = %v", shown)
	}
}

// A key rotation a replica left half done is finished by another replica.
func TestKeyRotationResumedByAnotherReplica(t *testing.T) {
	t.Parallel()
	e, v, clk := keyEnv(t)
	b := e.startMain(e.config()) // the replica that survives
	ms := joinFleetN(e, v, clk, 6, func(int) rotatord.Delivery { return rotatord.DeliveryPoll })
	// The agents talk to the surviving replica.
	for _, m := range ms {
		a, err := agent.New(agent.Config{Server: b.URL(), Name: m.name, Creds: m.a.CredsFile(), Now: clk.Now, Log: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		m.nc.Close()
		if m.nc, err = a.Connect(e.ns.ClientURL()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.nc.Close)
		m.a = a
		m.follow(t, v, 300*time.Millisecond)
	}
	id := e.must(202, "POST", "/v1/accounts/fleet/signing-keys/rotate", nil)["id"].(string)
	fleetID := e.getJSON("/v1/key-rotations/" + id)["fleet_rotation"].(string)
	settle(t, 20*time.Second, "the first wave on the first replica", func() bool {
		e.main.Service.Tick(context.Background())
		f := e.getJSON("/v1/fleet-rotations/" + fleetID)
		return num(f["wave"]) >= 1 && num(progressOf(f, 1)["agents"]) == 1
	})
	// The first replica dies mid-operation.
	e.main.Close()
	e.main = b
	tickEvery(t, b, 100*time.Millisecond)
	var k map[string]any
	settle(t, 40*time.Second, "the other replica to finish the key rotation", func() bool {
		k = e.getJSON("/v1/key-rotations/" + id)
		return k["state"] == "completed"
	})
	newKey := k["new_key"].(string)
	for _, m := range ms {
		if !m.onKey(t, newKey) {
			t.Errorf("%s not on the new key", m.name)
		}
	}
	if got := e.accountClaimsOf("fleet").SigningKeys.Keys(); !slices.Equal(got, []string{newKey}) {
		t.Fatalf("signing keys %v, want only the new key", got)
	}
}

// The fleet rotation bar on a terminal, the plain lines otherwise.
func TestFleetProgressOutput(t *testing.T) {
	t.Parallel()
	var f fleetView
	if err := json.Unmarshal([]byte(`{"id":"f1","state":"running","waves":[1,10,100],"wave":2,"agents":200,"done":19,"failed":1,"waiting":180}`), &f); err != nil {
		t.Fatal(err)
	}
	var bar, lines strings.Builder
	pb := &progress{w: &bar, bar: true}
	pl := &progress{w: &lines}
	for range 2 {
		pb.fleet(f)
		pl.fleet(f)
	}
	f.Done = 199
	pb.fleet(f)
	pl.fleet(f)
	pb.done()
	if got := strings.Count(bar.String(), "\r"); got != 2 {
		t.Errorf("bar redrawn %d times, want 2 (once per change): %q", got, bar.String())
	}
	if !strings.Contains(bar.String(), "[###...........................]  10%  19/200 done  1 failed  wave 2/3  running") ||
		!strings.HasSuffix(bar.String(), "\n") {
		t.Errorf("bar = %q", bar.String())
	}
	want := "fleet rotation f1: running wave 2/3 (10%): 19/200 done, 1 failed, 180 waiting\n" +
		"fleet rotation f1: running wave 2/3 (10%): 199/200 done, 1 failed, 180 waiting\n"
	if lines.String() != want {
		t.Errorf("lines = %q, want %q", lines.String(), want)
	}
}
