package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/ratelimit"
	"github.com/rotatord/rotatord/internal/refusals"
	"github.com/rotatord/rotatord/pkg/agent"
)

// agentAnswer is an answer of the agent API.
type agentAnswer struct {
	status int
	body   string
	header http.Header
}

func (a agentAnswer) code() string {
	var b struct{ Code string }
	json.Unmarshal([]byte(a.body), &b)
	return b.Code
}

// agentCall sends an agent API request with the given Authorization and body.
func agentCall(t testing.TB, e *env, m *Main, method, path, auth, body string) agentAnswer {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, m.URL()+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return agentAnswer{resp.StatusCode, string(b), resp.Header}
}

// proofFor is the v2 Authorization header for a request.
func proofFor(t testing.TB, kp nkeys.KeyPair, method, target, body string, at time.Time) string {
	t.Helper()
	h, err := agent.Proof(kp, method, target, []byte(body), at)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func userKey(t testing.TB, creds string) nkeys.KeyPair {
	t.Helper()
	kp, err := jwt.ParseDecoratedUserNKey([]byte(creds))
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// ownKeyBody is an own-key POST body for a new key, signed for unix.
func ownKeyBody(t testing.TB, kp nkeys.KeyPair, name string, unix int64) string {
	t.Helper()
	b, err := agent.OwnKeyBody(kp, name, unix)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// refusalEvents flushes the replica's refusal counts and returns the
// aggregated audit events.
func refusalEvents(t testing.TB, m *Main) []*rotatord.AuditEvent {
	t.Helper()
	if _, err := m.Refusals.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	events, err := m.Store.ListAudit(context.Background(), rotatord.AuditFilter{Action: refusals.Action, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return events
}

func TestAgentAPIRefusals(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *Config) { c.TickSpec = ""; c.AgentFailRate = mustRate(t, "100/s:100") })
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	_, kateCreds := createAgent(e, "kate", "fleet")
	_, bobCreds := createAgent(e, "bob", "fleet")
	_, goneCreds := createAgent(e, "gone", "fleet")
	kate, bob, gone := userKey(t, kateCreds), userKey(t, bobCreds), userKey(t, goneCreds)
	e.must(200, "POST", "/v1/agents/gone/revoke", nil)
	stranger, _ := nkeys.CreateUser()

	const path = "/v1/agents/kate/creds"
	now := time.Now()
	get := func(p, auth string) agentAnswer { t.Helper(); return agentCall(t, e, e.main, "GET", p, auth, "") }

	// A good proof works: no rotation in flight, so the caller is current.
	if a := get(path, proofFor(t, kate, "GET", path, "", now)); a.status != 304 {
		t.Fatalf("good proof = %d %s, want 304", a.status, a.body)
	}
	replayed := proofFor(t, kate, "GET", path, "", now.Add(-time.Second))
	if a := get(path, replayed); a.status != 304 {
		t.Fatalf("first use = %d %s", a.status, a.body)
	}
	// The query is signed too.
	if a := get(path+"?x=1", proofFor(t, kate, "GET", path+"?x=1", "", now.Add(-2*time.Second))); a.status != 304 {
		t.Fatalf("proof over the path with its query = %d %s, want 304", a.status, a.body)
	}
	badSig := func() string {
		h := proofFor(t, kate, "GET", path, "", now.Add(-3*time.Second))
		i := strings.LastIndex(h, ":")
		sig, _ := base64.RawURLEncoding.DecodeString(h[i+1:])
		sig[0] ^= 0xff
		return h[:i+1] + base64.RawURLEncoding.EncodeToString(sig)
	}()
	v1 := func() string {
		unix := now.Unix()
		sig, _ := kate.Sign(rotatord.ProofMessageV1("GET", path, unix))
		return rotatord.FormatProof(must(kate.PublicKey()), unix, sig)
	}()
	cases := []struct {
		name, path, auth string
		status           int
		code, msg        string
	}{
		{"no proof", path, "", 401, "unauthorized", "missing NKey proof"},
		{"bearer instead", path, "Bearer rtd_x", 401, "unauthorized", "missing NKey proof"},
		{"malformed", path, "NKey garbage", 401, "unauthorized", "malformed"},
		{"garbage", path, "NKey x", 401, "unauthorized", "malformed"},
		{"bad signature", path, badSig, 401, "unauthorized", "bad proof signature"},
		{"version 1", path, v1, 401, "unauthorized", "version 1 proofs are no longer accepted"},
		{"signed for another path", path, proofFor(t, kate, "GET", "/v1/agents/bob/creds", "", now), 401, "unauthorized", "bad proof signature"},
		{"signed without the query", path + "?x=2", proofFor(t, kate, "GET", path, "", now.Add(-4*time.Second)), 401, "unauthorized", "bad proof signature"},
		{"signed for another method", path, proofFor(t, kate, "POST", path, "", now), 401, "unauthorized", "bad proof signature"},
		{"signed for a body", path, proofFor(t, kate, "GET", path, "{}", now), 401, "unauthorized", "bad proof signature"},
		{"stale", path, proofFor(t, kate, "GET", path, "", now.Add(-2*time.Minute)), 401, "unauthorized", "more than 60s"},
		{"from the future", path, proofFor(t, kate, "GET", path, "", now.Add(2*time.Minute)), 401, "unauthorized", "more than 60s"},
		{"replayed", path, replayed, 401, "unauthorized", "replay"},
		{"another agent's key", path, proofFor(t, bob, "GET", path, "", now), 403, "forbidden", "not a key of this agent"},
		{"unknown key", path, proofFor(t, stranger, "GET", path, "", now), 403, "forbidden", "not a key of this agent"},
		{"unknown agent", "/v1/agents/nobody/creds", proofFor(t, kate, "GET", "/v1/agents/nobody/creds", "", now), 403, "forbidden", "not a key of this agent"},
		{"revoked key", "/v1/agents/gone/creds", proofFor(t, gone, "GET", "/v1/agents/gone/creds", "", now), 403, "forbidden", "revoked"},
		{"invalid name", "/v1/agents/" + strings.Repeat("x", 100) + "/creds", "NKey x", 400, "invalid", "agent name is invalid"},
		{"NUL in the name", "/v1/agents/a%00b/creds", "NKey x", 400, "invalid", "agent name is invalid"},
		{"invalid UTF-8 in the name", "/v1/agents/a%ffb/creds", "NKey x", 400, "invalid", "agent name is invalid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := get(c.path, c.auth)
			if a.status != c.status || a.code() != c.code || !strings.Contains(a.body, c.msg) {
				t.Fatalf("= %d %s; want %d %s with %q", a.status, a.body, c.status, c.code, c.msg)
			}
			if a.status == 401 && a.header.Get("WWW-Authenticate") != `NKey realm="rotatord"` {
				t.Fatalf("WWW-Authenticate = %q", a.header.Get("WWW-Authenticate"))
			}
			if strings.Contains(a.body, "xxxxxxxxxx") {
				t.Fatalf("the answer echoes the name: %s", a.body)
			}
		})
	}
	// A refused request that names a key costs a database read once: the
	// same refusal again comes from memory, with the same answer.
	if a := get(path, proofFor(t, stranger, "GET", path, "", now.Add(time.Second))); a.status != 403 {
		t.Fatalf("unknown key again = %d %s", a.status, a.body)
	}

	// Refusals are in the audit trail in aggregate: one event per source and
	// agent name, with the count and the reasons; none per request.
	events := refusalEvents(t, e.main)
	byAgent := map[string]*rotatord.AuditEvent{}
	for _, ev := range events {
		if ev.Details["source"] != "127.0.0.1" {
			t.Errorf("event source %v, want 127.0.0.1", ev.Details["source"])
		}
		key := ev.Agent
		if key == "" {
			key = fmt.Sprint(ev.Details["name"])
		}
		if byAgent[key] != nil {
			t.Errorf("two events for %q in one window", key)
		}
		byAgent[key] = ev
		raw, _ := json.Marshal(ev)
		if len(raw) > 1500 {
			t.Errorf("audit event of %d bytes: %s", len(raw), raw)
		}
	}
	kateEv := byAgent["kate"]
	if kateEv == nil {
		t.Fatalf("no aggregated event for kate: %v", byAgent)
	}
	reasons := map[string]float64{}
	raw, _ := json.Marshal(kateEv.Details["reasons"])
	json.Unmarshal(raw, &reasons)
	for reason, want := range map[string]float64{
		refusals.ReasonMissingProof: 2, refusals.ReasonMalformed: 2, refusals.ReasonBadSignature: 5,
		refusals.ReasonProofV1: 1, refusals.ReasonStale: 2, refusals.ReasonReplay: 1, refusals.ReasonForeignKey: 3,
	} {
		if reasons[reason] != want {
			t.Errorf("kate's refusals for %s = %v, want %v (all: %v)", reason, reasons[reason], want, reasons)
		}
	}
	if n, _ := kateEv.Details["count"].(float64); n != 16 {
		t.Errorf("kate's count = %v, want 16", kateEv.Details["count"])
	}
	if byAgent["gone"] == nil || byAgent["nobody"] == nil {
		t.Errorf("no events for gone and nobody: %v", byAgent)
	}
	// The refusals are not logged one by one, and no long name is logged.
	logs := e.logs.String()
	if strings.Count(logs, "path=/v1/agents/kate/creds") != 3 {
		t.Errorf("the request log has %d lines for kate's creds, want the 3 answered ones", strings.Count(logs, "path=/v1/agents/kate/creds"))
	}
	if strings.Contains(logs, strings.Repeat("x", 100)) {
		t.Error("the log holds the 100-byte name")
	}
}

// A flood of garbage from one address costs no database work, O(1) audit
// rows and no log line per request; past its burst it gets 429. Agents
// behind the same address keep working meanwhile.
func TestAgentAPIFloodFromOneAddress(t *testing.T) {
	e := newEnvWith(t, func(c *Config) {
		c.TickSpec = ""
		c.AgentFailRate = mustRate(t, "1/m:20")
	})
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	_, creds := createAgent(e, "kate", "fleet")
	kate := userKey(t, creds)
	countRows := func() int {
		var n int
		if err := e.main.Store.Pool().QueryRow(context.Background(), `SELECT count(*) FROM audit_events`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := countRows()
	logBefore := len(e.logs.String())
	name := strings.Repeat("n", 2048)
	var tooMany int
	for i := range 300 {
		p := "/v1/agents/" + name + strconv.Itoa(i) + "/creds"
		a := agentCall(t, e, e.main, "GET", p, "NKey x", "")
		switch {
		case i < 20 && a.status != 400:
			t.Fatalf("request %d of the burst = %d %s, want 400", i, a.status, a.body)
		case i >= 20:
			if a.status != 429 || a.code() != rotatord.ETOOMANYREQUESTS {
				t.Fatalf("request %d past the burst = %d %s, want 429", i, a.status, a.body)
			}
			if s, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || s < 1 || s > 60 {
				t.Fatalf("Retry-After = %q, want whole seconds up to a minute", a.header.Get("Retry-After"))
			}
			tooMany++
		}
		if i%50 == 0 {
			// An agent behind the same address is not held back.
			target := "/v1/agents/kate/creds"
			if a := agentCall(t, e, e.main, "GET", target, proofFor(t, kate, "GET", target, "", time.Now().Add(time.Duration(i/50)*time.Second)), ""); a.status != 304 {
				t.Fatalf("the agent while its address is refused = %d %s, want 304", a.status, a.body)
			}
		}
	}
	if n := countRows(); n != before {
		t.Fatalf("the flood wrote %d audit rows before the window closed, want none", n-before)
	}
	if got := len(e.logs.String()) - logBefore; got > 4096 {
		t.Fatalf("the flood wrote %d bytes of log", got)
	}
	events := refusalEvents(t, e.main)
	if len(events) > 17 {
		t.Fatalf("%d audit events for one address, want at most 16 names + 1 for the rest", len(events))
	}
	total := 0
	for _, ev := range events {
		total += int(ev.Details["count"].(float64))
		if ev.Agent != "" {
			t.Errorf("an invalid name became the event's agent: %.80q", ev.Agent)
		}
	}
	if total != 300 || tooMany != 280 {
		t.Fatalf("counted %d refusals (%d answered 429), want 300 (280)", total, tooMany)
	}
}

func mustRate(t testing.TB, s string) (r ratelimit.Rate) {
	t.Helper()
	if err := r.Set(s); err != nil {
		t.Fatal(err)
	}
	return r
}

// Authenticated requests are limited per agent, never per address.
func TestAgentAPIRateLimitPerAgent(t *testing.T) {
	e := newEnvWith(t, func(c *Config) {
		c.TickSpec = ""
		c.AgentRate = mustRate(t, "1/m:2")
	})
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	_, kateCreds := createAgent(e, "kate", "fleet")
	_, bobCreds := createAgent(e, "bob", "fleet")
	kate, bob := userKey(t, kateCreds), userKey(t, bobCreds)
	poll := func(kp nkeys.KeyPair, name string, at time.Time) agentAnswer {
		target := "/v1/agents/" + name + "/creds"
		return agentCall(t, e, e.main, "GET", target, proofFor(t, kp, "GET", target, "", at), "")
	}
	now := time.Now()
	for i := range 2 {
		if a := poll(kate, "kate", now.Add(time.Duration(-i)*time.Second)); a.status != 304 {
			t.Fatalf("kate's request %d = %d %s", i, a.status, a.body)
		}
	}
	a := poll(kate, "kate", now.Add(-2*time.Second))
	if a.status != 429 || a.code() != rotatord.ETOOMANYREQUESTS || a.header.Get("Retry-After") == "" {
		t.Fatalf("kate past her rate = %d %s (Retry-After %q), want 429", a.status, a.body, a.header.Get("Retry-After"))
	}
	if s, _ := strconv.Atoi(a.header.Get("Retry-After")); s < 1 || s > 60 {
		t.Fatalf("Retry-After = %q, want up to 60 s (one token per minute)", a.header.Get("Retry-After"))
	}
	// Bob, from the same address, is not affected.
	if a := poll(bob, "bob", now); a.status != 304 {
		t.Fatalf("bob = %d %s, want 304", a.status, a.body)
	}
	// Someone else's refused attempts do not use up kate's bucket: bob's
	// bucket stays as it is while a stranger fails as bob.
	stranger, _ := nkeys.CreateUser()
	for i := range 5 {
		if a := poll(stranger, "bob", now.Add(time.Duration(-i)*time.Second)); a.status != 403 && a.status != 429 {
			t.Fatalf("a stranger as bob = %d %s", a.status, a.body)
		}
	}
	if a := poll(bob, "bob", now.Add(-time.Second)); a.status != 304 {
		t.Fatalf("bob after a stranger's attempts = %d %s, want 304", a.status, a.body)
	}
}

// The own-key POST proves possession of the new key, is covered by the
// proof (a tampered copy is refused without burning the genuine request),
// answers a retry with the same 202, and starts at most one rotation per
// interval.
func TestAgentOwnKey(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *Config) { c.TickSpec = "" })
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	_, creds := createAgent(e, "kate", "fleet")
	kate := userKey(t, creds)
	const path = "/v1/agents/kate/creds"
	now := time.Now()
	at := func(i int) time.Time { return now.Add(time.Duration(-i) * time.Second) }
	post := func(auth, body string) agentAnswer {
		t.Helper()
		return agentCall(t, e, e.main, "POST", path, auth, body)
	}

	newKey, _ := nkeys.CreateUser()
	newPub := must(newKey.PublicKey())
	genuine := ownKeyBody(t, newKey, "kate", at(0).Unix())
	auth := proofFor(t, kate, "POST", path, genuine, at(0))

	// An attacker who saw the header swaps in its own key: refused, and the
	// proof is not recorded.
	evil, _ := nkeys.CreateUser()
	if a := post(auth, ownKeyBody(t, evil, "kate", at(0).Unix())); a.status != 401 || !strings.Contains(a.body, "bad proof signature") {
		t.Fatalf("tampered body = %d %s, want 401 bad proof signature", a.status, a.body)
	}
	// Proofs of the new key that do not hold.
	for _, c := range []struct {
		name, body, msg string
		status          int
	}{
		{"no key proof", fmt.Sprintf(`{"public_key":%q}`, newPub), "missing key_proof", 401},
		{"key proof by the old key", func() string {
			sig, _ := kate.Sign(rotatord.KeyProofMessage("kate", newPub, at(1).Unix()))
			return fmt.Sprintf(`{"public_key":%q,"key_proof":%q}`, newPub, rotatord.EncodeSignature(sig))
		}(), "bad key_proof", 401},
		{"key proof for another time", ownKeyBody(t, newKey, "kate", at(30).Unix()), "bad key_proof", 401},
		{"key proof for another agent", func() string {
			k, _ := agent.KeyProof(newKey, "bob", at(1).Unix())
			return fmt.Sprintf(`{"public_key":%q,"key_proof":%q}`, newPub, k)
		}(), "bad key_proof", 401},
		{"a seed as public key", fmt.Sprintf(`{"public_key":%q,"key_proof":"x"}`, string(must(newKey.Seed()))), "not a user public key", 400},
		{"unknown field", fmt.Sprintf(`{"public_key":%q,"key_proof":"x","x":1}`, newPub), "unknown field", 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := post(proofFor(t, kate, "POST", path, c.body, at(1)), c.body)
			if a.status != c.status || !strings.Contains(a.body, c.msg) {
				t.Fatalf("= %d %s; want %d with %q", a.status, a.body, c.status, c.msg)
			}
			if strings.Contains(a.body, "SU") && strings.Contains(a.body, string(must(newKey.Seed()))[:20]) {
				t.Fatalf("the answer echoes the seed: %s", a.body)
			}
		})
	}
	// The genuine request still works: nothing above burned its proof.
	a := post(auth, genuine)
	if a.status != 202 {
		t.Fatalf("genuine own-key POST = %d %s, want 202", a.status, a.body)
	}
	var first map[string]any
	json.Unmarshal([]byte(a.body), &first)
	if first["public_key"] != newPub {
		t.Fatalf("answer for %v, want %s", first["public_key"], newPub)
	}
	// A retry after a lost answer (a new proof, the same key): the same answer.
	retry := ownKeyBody(t, newKey, "kate", at(2).Unix())
	a = post(proofFor(t, kate, "POST", path, retry, at(2)), retry)
	var second map[string]any
	json.Unmarshal([]byte(a.body), &second)
	if a.status != 202 || second["id"] != first["id"] || second["jwt"] != first["jwt"] {
		t.Fatalf("retry = %d %s; want 202 with the same rotation and JWT", a.status, a.body)
	}
	// Another key within the interval: 429 with Retry-After, from the
	// database, so a second replica says the same.
	other, _ := nkeys.CreateUser()
	b := ownKeyBody(t, other, "kate", at(3).Unix())
	for _, m := range []*Main{e.main, e.startMain(e.config())} {
		a = agentCall(t, e, m, "POST", path, proofFor(t, kate, "POST", path, b, at(3)), b)
		if m != e.main {
			b = ownKeyBody(t, other, "kate", at(4).Unix())
			a = agentCall(t, e, m, "POST", path, proofFor(t, kate, "POST", path, b, at(4)), b)
		}
		s, _ := strconv.Atoi(a.header.Get("Retry-After"))
		if a.status != 429 || a.code() != rotatord.ETOOMANYREQUESTS || s < 500 || s > 600 {
			t.Fatalf("a second own key = %d %s (Retry-After %q); want 429 with about 600 s", a.status, a.body, a.header.Get("Retry-After"))
		}
	}
}

// GET creds serves poll agents only, and rotatord keeps no seed of a
// rotation delivered elsewhere; a rollback still restores the old file.
func TestAgentCredsDeliveryMismatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clk := &clock{}
	e := newEnvWith(t, func(c *Config) { c.FileDeliveryDir = dir; c.TickSpec = ""; c.Now = clk.Now })
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	e.must(201, "POST", "/v1/agents", map[string]any{"name": "kate", "account": "fleet", "delivery": "file"})
	path := filepath.Join(dir, "fleet", "kate.creds")
	first, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kate := userKey(t, string(first))
	id := e.must(202, "POST", "/v1/agents/kate/rotate", nil)["id"].(string)
	var seeds int
	if err := e.main.Store.Pool().QueryRow(context.Background(),
		`SELECT count(*) FROM credentials c JOIN agents g ON g.id = c.agent_id WHERE g.name = 'kate' AND c.seed_enc IS NOT NULL`).Scan(&seeds); err != nil {
		t.Fatal(err)
	}
	if seeds != 0 {
		t.Fatalf("%d sealed seeds kept for a file agent after delivery, want 0", seeds)
	}
	const target = "/v1/agents/kate/creds"
	a := agentCall(t, e, e.main, "GET", target, proofFor(t, kate, "GET", target, "", clk.Now()), "")
	if a.status != 409 || a.code() != rotatord.EDELIVERYMISMATCH || hasSeed(a.body) {
		t.Fatalf("GET creds of a file agent = %d %s, want 409 delivery_mismatch", a.status, a.body)
	}
	// The agent never reconnects: the rollback puts the first creds back,
	// without a seed to rebuild them from.
	clk.Advance(time.Hour)
	if _, err := e.main.Service.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.waitRotation(id, "rolled_back")
	if got, _ := os.ReadFile(path); string(got) != string(first) {
		t.Fatal("the rollback did not restore the first creds file")
	}
}

// A key whose JWT expired is refused; an operator reissues the agent, which
// revokes every key and hands out new creds; a revoked agent comes back.
func TestExpiredCredentialsAndReissue(t *testing.T) {
	t.Parallel()
	e, clk := newClockedEnv(t)
	e.startNATS()
	e.waitNATS()
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	_, creds := createAgent(e, "kate", "fleet")
	old := userKey(t, creds)
	const target = "/v1/agents/kate/creds"
	clk.Advance(90 * 24 * time.Hour)
	a := agentCall(t, e, e.main, "GET", target, proofFor(t, old, "GET", target, "", clk.Now()), "")
	if a.status != 401 || a.code() != rotatord.ECREDEXPIRED || !strings.Contains(a.body, "reissue") {
		t.Fatalf("expired key = %d %s, want 401 credential_expired", a.status, a.body)
	}
	// A rotation is in flight when the operator steps in: it ends.
	rot := e.must(202, "POST", "/v1/agents/kate/rotate", nil)
	res := e.must(200, "POST", "/v1/agents/kate/reissue", nil)
	ag := res["agent"].(map[string]any)
	newCreds, _ := ag["creds"].(string)
	if ag["state"] != "active" || !strings.Contains(newCreds, "USER NKEY SEED") || res["was_revoked"] != false ||
		res["ended_rotation"] != rot["id"] || len(res["revoked_keys"].([]any)) != 2 || res["pushed"] != true {
		t.Fatalf("reissue = %v", res)
	}
	if r := e.must(200, "GET", "/v1/rotations/"+rot["id"].(string), nil); r["state"] != "rolled_back" {
		t.Fatalf("rotation in flight after reissue = %v, want rolled_back", r["state"])
	}
	// The new creds work (the agent's time is the servers' real time: the
	// JWT's expiry is from the fake clock, 90 days on, so NATS accepts it).
	nc, err := connectCreds(e, newCreds)
	if err != nil {
		t.Fatalf("connect with the reissued creds: %v", err)
	}
	nc.Close()
	fresh := userKey(t, newCreds)
	if a := agentCall(t, e, e.main, "GET", target, proofFor(t, fresh, "GET", target, "", clk.Now()), ""); a.status != 304 {
		t.Fatalf("the reissued key = %d %s, want 304", a.status, a.body)
	}
	// (Expired and now revoked too: either refusal will do.)
	if a := agentCall(t, e, e.main, "GET", target, proofFor(t, old, "GET", target, "", clk.Now().Add(time.Second)), ""); a.status != 403 && a.code() != rotatord.ECREDEXPIRED {
		t.Fatalf("the old key after reissue = %d %s, want 403 or credential_expired", a.status, a.body)
	}
	// A revoked agent is re-enrolled: active again, with new creds.
	e.must(200, "POST", "/v1/agents/kate/revoke", map[string]any{"reason": "lost laptop"})
	res = e.must(200, "POST", "/v1/agents/kate/reissue", nil)
	if res["was_revoked"] != true || res["agent"].(map[string]any)["state"] != "active" || len(res["revoked_keys"].([]any)) != 0 {
		t.Fatalf("reissue of a revoked agent = %v", res)
	}
	events := e.must(200, "GET", "/v1/audit?agent=kate&action=agent.reissue", nil)["events"].([]any)
	if len(events) != 2 {
		t.Fatalf("%d agent.reissue events, want 2", len(events))
	}
	if status, _ := e.do("POST", "/v1/agents/nobody/reissue", e.admin, nil); status != 404 {
		t.Fatalf("reissue of an unknown agent = %d, want 404", status)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Creds answers pace the agents' reconnects: past the burst of
// ROTATORD_AGENT_RECONNECT_RATE, each answer with new creds says how long
// to wait (Rotatord-Reconnect-After), one rate interval after the last;
// "not modified" answers take no slot.
func TestAgentCredsPaceReconnects(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *Config) { c.TickSpec = ""; c.AgentReconnectRate = mustRate(t, "6/m:1") })
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	var keys []nkeys.KeyPair
	for _, name := range []string{"ann", "bob", "cid"} {
		_, creds := createAgent(e, name, "fleet")
		keys = append(keys, userKey(t, creds))
	}
	now := time.Now()
	get := func(name string, kp nkeys.KeyPair) agentAnswer {
		t.Helper()
		p := "/v1/agents/" + name + "/creds"
		now = now.Add(-time.Second) // a proof of its own
		return agentCall(t, e, e.main, "GET", p, proofFor(t, kp, "GET", p, "", now), "")
	}
	if a := get("ann", keys[0]); a.status != 304 || a.header.Get(rotatord.ReconnectAfterHeader) != "" {
		t.Fatalf("nothing new = %d, %q", a.status, a.header.Get(rotatord.ReconnectAfterHeader))
	}
	var first time.Time
	for i, name := range []string{"ann", "bob", "cid"} {
		e.must(202, "POST", "/v1/agents/"+name+"/rotate", nil)
		a := get(name, keys[i])
		answered := time.Now()
		if a.status != 200 {
			t.Fatalf("creds of %s = %d %s", name, a.status, a.body)
		}
		v := a.header.Get(rotatord.ReconnectAfterHeader)
		if i == 0 {
			if v != "" {
				t.Fatalf("first creds carry %s %q; want none (the burst)", rotatord.ReconnectAfterHeader, v)
			}
			first = answered
			continue
		}
		sec, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("creds of %s: %s %q", name, rotatord.ReconnectAfterHeader, v)
		}
		// At 6 a minute, reconnects are 10 s apart from the first one.
		at := answered.Add(time.Duration(sec * float64(time.Second)))
		if want := first.Add(time.Duration(i) * 10 * time.Second); at.Sub(want).Abs() > time.Second {
			t.Fatalf("%s reconnects %s after the first; want %s", name, at.Sub(first), want.Sub(first))
		}
	}
}
