package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rotatord/rotatord/internal/natsrun"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/tcpproxy"
	"github.com/rotatord/rotatord/pkg/agent"
)

// metric returns the value of an unlabelled series on m's /metrics.
func (e *env) metric(m *Main, name string) (float64, bool) {
	e.t.Helper()
	resp, err := e.http.Get(m.URL() + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// waitMetric waits until the series reads want.
func (e *env) waitMetric(m *Main, name string, want float64, within time.Duration) {
	e.t.Helper()
	eventually(e.t, within, fmt.Sprintf("%s to be %v", name, want), func() bool {
		v, ok := e.metric(m, name)
		return ok && v == want
	})
}

// freePort returns a free loopback port or fails the test.
func freePort(t testing.TB) int {
	t.Helper()
	p, err := natsrun.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// watchAt connects with creds to url and reports async errors and
// disconnects on the two channels (see watchedConnect).
func watchAt(t testing.TB, url, creds string) (nc *nats.Conn, violations, dropped chan error) {
	t.Helper()
	violations, dropped = make(chan error, 10), make(chan error, 10)
	nc, err := nats.Connect(url, nats.UserCredentials(writeCreds(t, creds)),
		nats.MaxReconnects(3), nats.ReconnectWait(50*time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				dropped <- err
			}
		}))
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc, violations, dropped
}

// waitRevoked waits up to within for a watched connection to be dropped
// with "authentication revoked".
func waitRevoked(t testing.TB, within time.Duration, violations <-chan error) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case err := <-violations:
			if errors.Is(err, nats.ErrAuthRevoked) {
				return
			}
		case <-deadline:
			t.Fatalf("the revoked agent was not dropped within %s", within)
		}
	}
}

// A cluster of three nats-servers (child processes, routes on loopback);
// the third one's routes go through TCP proxies. A revoke made while its
// routes are cut reaches the two others at once; the third, which keeps
// the revoked agent connected, is counted and alerted as behind, and gets
// the revoking JWT within seconds of its routes healing.
func TestClusterServerBehind(t *testing.T) {
	portA := freePort(t)
	e := newEnvWith(t, func(c *Config) {
		c.NATSURL = fmt.Sprintf("nats://127.0.0.1:%d", portA)
		// How long the revoke waits for nats-c; long enough for nats-a
		// and nats-b to answer on a busy machine.
		c.PushTimeout = 3 * time.Second
		c.Cluster.AlertAfter = time.Second
	})
	clusterA, clusterB, clusterC := freePort(t), freePort(t), freePort(t)
	// Every route of C goes through one of these: pxA and pxB carry C's
	// routes to A and B, pxC those to C (which C advertises, so that
	// servers that learn of it by gossip dial it there too).
	var proxies []*tcpproxy.Proxy
	proxy := func(port int) *tcpproxy.Proxy {
		p, err := tcpproxy.New(tcpproxy.To(fmt.Sprintf("127.0.0.1:%d", port)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		proxies = append(proxies, p)
		return p
	}
	pxA, pxB, pxC := proxy(clusterA), proxy(clusterB), proxy(clusterC)
	loop := func(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
	e.startNATSChild(natsChild{Name: "nats-a", Port: portA, ClusterPort: clusterA, Advertise: pxA.Addr(), Routes: []string{loop(clusterB)}})
	e.startNATSChild(natsChild{Name: "nats-b", Port: freePort(t), ClusterPort: clusterB, Advertise: pxB.Addr(),
		Routes: []string{loop(clusterA)}, WaitRoutes: 1})
	urlC, _ := e.startNATSChild(natsChild{Name: "nats-c", Port: freePort(t), ClusterPort: clusterC, Advertise: pxC.Addr(),
		Routes: []string{pxA.Addr(), pxB.Addr()}, WaitRoutes: 2})
	e.waitNATS()
	e.waitMetric(e.main, "rotatord_servers_known", 3, 20*time.Second)

	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	_, creds := createAgent(e, "kate", "fleet")
	nc, violations, _ := watchAt(t, urlC, creds)
	// Every server is asked what it holds of the new account.
	eventually(t, 20*time.Second, "every server known to hold the fleet account's jwt", func() bool {
		servers, _ := e.must(200, "GET", "/v1/accounts/fleet", nil)["servers"].([]any)
		current := 0
		for _, s := range servers {
			if s.(map[string]any)["current"] == true {
				current++
			}
		}
		return len(servers) == 3 && current == 3
	})

	for _, p := range proxies {
		p.Cut()
	}
	rev := e.must(200, "POST", "/v1/agents/kate/revoke", map[string]any{"reason": "compromised"})
	// nats-a and nats-b acknowledge it (they have not loaded the account:
	// "skipped"); nats-c, which holds it with the agent, does not answer.
	if rev["pushed"] != true || rev["servers"] != float64(0) || rev["servers_behind"] != float64(1) {
		t.Fatalf("revoke with nats-c cut off = %v; want pushed, 1 server behind", rev)
	}
	e.waitMetric(e.main, "rotatord_servers_behind", 1, 10*time.Second)
	acc := e.must(200, "GET", "/v1/accounts/fleet", nil)
	var behindID string
	for _, s := range acc["servers"].([]any) {
		s := s.(map[string]any)
		want := "current"
		if s["name"] == "nats-c" {
			want, behindID = "behind", s["id"].(string)
		}
		if s["state"] != want || (want == "current") != (s["current"] == true) {
			t.Errorf("server %v: state %v, current %v; want %s", s["name"], s["state"], s["current"], want)
		}
	}
	// The partitioned server still holds the old JWT: the agent is there.
	if !nc.IsConnected() {
		t.Fatal("the agent on nats-c was dropped while nats-c was cut off")
	}
	eventually(t, 10*time.Second, "a server_behind alert for nats-c", func() bool {
		alerts, _ := e.main.Store.ListAlerts(context.Background(), 50)
		for _, a := range alerts {
			if a.Kind == rotate.KindServerBehind && strings.Contains(a.Reason, behindID) {
				return true
			}
		}
		return false
	})
	if n, _ := e.metric(e.main, "rotatord_revocation_propagation_seconds_count"); n != 0 {
		t.Fatalf("propagation observed %v times while a server is behind, want 0", n)
	}

	healed := time.Now()
	for _, p := range proxies {
		p.Heal()
	}
	waitRevoked(t, 10*time.Second, violations)
	t.Logf("agent dropped by nats-c %s after its routes healed", time.Since(healed))
	e.waitMetric(e.main, "rotatord_servers_behind", 0, 10*time.Second)
	e.waitMetric(e.main, "rotatord_revocation_propagation_seconds_count", 1, 10*time.Second)
	for _, s := range e.must(200, "GET", "/v1/accounts/fleet", nil)["servers"].([]any) {
		if s := s.(map[string]any); s["current"] != true {
			t.Errorf("server %v after healing: %v, want current", s["name"], s)
		}
	}
	// One alert for the server and window, however many rounds saw it behind.
	alerts, _ := e.main.Store.ListAlerts(context.Background(), 50)
	n := 0
	for _, a := range alerts {
		if a.Kind == rotate.KindServerBehind {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d server_behind alerts, want 1", n)
	}
}

// Fifty rotations, each followed, the moment GET /v1/rotations/{id} says
// completed, by a connection with the old creds: refused every time.
// Rotations of ten agents run at once, so re-signs are coalesced.
func TestCompletedMeansRefused(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *Config) { c.ResignEvery = time.Second })
	e.startNATS()
	e.waitNATS()
	const agents, rounds = 10, 5
	clients := make([]*agent.Client, agents)
	for i := range clients {
		clients[i], _, _ = fleetAgent(e, fmt.Sprintf("agent-%d", i))
	}
	var sawConfirmed atomic.Int32
	for round := range rounds {
		start := time.Now()
		var wg sync.WaitGroup
		for i, a := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("agent-%d", i)
				old := string(a.CredsFile())
				status, body, err := e.try("POST", "/v1/agents/"+name+"/rotate", nil)
				if err != nil || status != 202 {
					t.Errorf("round %d: rotate %s = %d %s %v", round, name, status, body, err)
					return
				}
				id := decodeMap(t, body)["id"].(string)
				if got, err := a.Refresh(context.Background()); err != nil || !got {
					t.Errorf("round %d: %s refresh = %v, %v", round, name, got, err)
					return
				}
				deadline := time.Now().Add(20 * time.Second)
				for {
					status, body, err := e.try("GET", "/v1/rotations/"+id, nil)
					if err != nil || status != 200 {
						t.Errorf("round %d: rotation of %s = %d %s %v", round, name, status, body, err)
						return
					}
					state, _ := decodeMap(t, body)["state"].(string)
					if state == "rolled_back" || time.Now().After(deadline) {
						t.Errorf("round %d: rotation of %s = %s", round, name, body)
						return
					}
					if state == "confirmed" {
						sawConfirmed.Add(1)
					}
					if state == "completed" {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				if c, err := connectCreds(e, old); err == nil {
					c.Close()
					t.Errorf("round %d: %s's old creds connected after its rotation read completed", round, name)
				} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
					t.Errorf("round %d: %s's old creds: %v, want an authorization violation", round, name, err)
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		t.Logf("round %d: %d rotations completed and their old creds refused in %s", round, agents, time.Since(start))
	}
	// Confirmed comes before completed: the old key's revocation waits for
	// the re-sign and its push.
	if sawConfirmed.Load() == 0 {
		t.Fatal("no rotation was ever seen confirmed before completed")
	}
	resigns, _ := e.metric(e.main, "rotatord_account_resigns_total")
	if resigns >= agents*rounds {
		t.Fatalf("%v re-signs for %d rotations: they were not coalesced", resigns, agents*rounds)
	}
}

// A hung NATS (connected, but nothing comes back) does not hold the
// account's row lock: while a revoke's push waits for the servers, another
// write to the account goes through.
func TestAccountWritesWhilePushHangs(t *testing.T) {
	t.Parallel()
	var target atomic.Value
	target.Store("127.0.0.1:1")
	px, err := tcpproxy.New(func() string { return target.Load().(string) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Close)
	e := newEnvWith(t, func(c *Config) {
		c.NATSURL = "nats://" + px.Addr()
		c.PushTimeout = 8 * time.Second
	})
	target.Store(fmt.Sprintf("127.0.0.1:%d", e.natsPort))
	e.startNATS()
	e.waitNATS()
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	createAgent(e, "kate", "fleet")

	px.Freeze()
	revoked := make(chan map[string]any, 1)
	go func() {
		status, body, err := e.try("POST", "/v1/agents/kate/revoke", nil)
		if err != nil || status != 200 {
			t.Errorf("revoke = %d %s %v", status, body, err)
		}
		revoked <- decodeMap(t, body)
	}()
	// The revocation is stored; its push hangs.
	eventually(t, 10*time.Second, "the revocation to be stored", func() bool {
		return e.must(200, "GET", "/v1/agents/kate", nil)["state"] == "revoked"
	})
	patched := make(chan int, 1)
	go func() {
		status, _, _ := e.try("PATCH", "/v1/accounts/fleet", map[string]any{"description": "written during a hung push"})
		patched <- status
	}()
	eventually(t, 10*time.Second, "the account write to be stored", func() bool {
		return e.must(200, "GET", "/v1/accounts/fleet", nil)["description"] == "written during a hung push"
	})
	select {
	case <-revoked:
		t.Fatal("the revoke's push returned before the account write was stored: it did not hang, or the write waited for it")
	default:
	}
	px.Heal()
	rev := <-revoked
	if st := <-patched; st != 200 {
		t.Fatalf("PATCH = %d", st)
	}
	t.Logf("revoke after the hung push: %v", rev)
	eventually(t, 15*time.Second, "the account's pushes to catch up", func() bool {
		owed, _ := e.main.Store.ListPushOwed(context.Background())
		return len(owed) == 0
	})
}

// A revoke made while rotatord is cut off from NATS (the agent stays
// connected to its server) reaches the server within seconds of rotatord's
// connection coming back.
func TestRevokeWhileCutOffFromNATS(t *testing.T) {
	var target atomic.Value
	target.Store("127.0.0.1:1")
	px, err := tcpproxy.New(func() string { return target.Load().(string) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Close)
	e := newEnvWith(t, func(c *Config) { c.NATSURL = "nats://" + px.Addr() })
	target.Store(fmt.Sprintf("127.0.0.1:%d", e.natsPort))
	e.startNATS()
	e.waitNATS()
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	_, creds := createAgent(e, "kate", "fleet")
	nc, violations, _ := watchAt(t, e.ns.ClientURL(), creds)

	px.Cut()
	eventually(t, 10*time.Second, "rotatord to notice it is cut off", func() bool { return !e.main.NATS.Connected() })
	rev := e.must(200, "POST", "/v1/agents/kate/revoke", nil)
	if rev["pushed"] != false {
		t.Fatalf("revoke while cut off = %v, want pushed false", rev)
	}
	if !nc.IsConnected() {
		t.Fatal("the agent was dropped while rotatord was cut off from nats")
	}
	back := time.Now()
	px.Heal()
	waitRevoked(t, 10*time.Second, violations)
	t.Logf("agent dropped %s after rotatord's nats connection came back", time.Since(back))
}

// A rotation whose grace ends while NATS is down (for rotatord) rolls
// back: the new key is revoked once NATS is back, the old one keeps working.
func TestRollbackWhileNATSDown(t *testing.T) {
	t.Parallel()
	var target atomic.Value
	target.Store("127.0.0.1:1")
	px, err := tcpproxy.New(func() string { return target.Load().(string) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Close)
	clk := &clock{}
	e := newEnvWith(t, func(c *Config) {
		c.NATSURL = "nats://" + px.Addr()
		c.Now = clk.Now
		c.TickSpec = ""
	})
	target.Store(fmt.Sprintf("127.0.0.1:%d", e.natsPort))
	e.startNATS()
	e.waitNATS()
	a, _, oldCreds := fleetAgent(e, "kate")
	id := e.must(202, "POST", "/v1/agents/kate/rotate", nil)["id"].(string)
	newCreds := fetchCreds(t, e, a)

	px.Cut()
	eventually(t, 10*time.Second, "rotatord to notice it is cut off", func() bool { return !e.main.NATS.Connected() })
	clk.Advance(31 * time.Minute)
	if _, err := e.main.Service.Tick(context.Background()); err != nil {
		t.Logf("tick while nats is down: %v", err)
	}
	r := e.rotation(id)
	if r["state"] != "rolled_back" || !strings.Contains(r["reason"].(string), "did not reconnect") {
		t.Fatalf("rotation after its deadline with nats down = %v, want rolled back", r)
	}
	px.Heal()
	e.waitNATS()
	eventually(t, 15*time.Second, "the rolled-back key to be refused", func() bool {
		c, err := connectCreds(e, newCreds)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	mustConnect(t, e, oldCreds, "after the rollback")
}

func decodeMap(t testing.TB, body []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Errorf("decode %q: %v", body, err)
	}
	return m
}

// try sends a request with the admin token and returns the status and
// body, or the transport error; safe in goroutines (it never stops the test).
func (e *env) try(method, path string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.main.URL()+path, r)
	if err != nil {
		return 0, nil, err
	}
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+e.admin)
	resp, err := e.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// Two replicas revoking and changing one account at once: the server is
// never pushed an older JWT of the account than one it got before, and
// ends with the newest.
func TestPushesNeverGoBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.startMain(e.config())
	e.startNATS()
	e.waitNATS()
	eventually(t, 10*time.Second, "replica b connected to nats", func() bool { return b.NATS.Connected() })
	ctx := context.Background()
	acc := e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	const n = 16
	for i := range n {
		createAgent(e, fmt.Sprintf("agent-%02d", i), "fleet")
	}
	// Every stored JWT with its version, to name what the server is sent.
	_, err := e.main.Store.Pool().Exec(ctx, `
		CREATE TABLE jwt_history (version bigint, jwt text);
		CREATE FUNCTION keep_jwt() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN INSERT INTO jwt_history VALUES (NEW.jwt_version, NEW.jwt); RETURN NEW; END $$;
		CREATE TRIGGER keep_jwt AFTER UPDATE ON accounts FOR EACH ROW WHEN (NEW.jwt IS DISTINCT FROM OLD.jwt) EXECUTE FUNCTION keep_jwt();`)
	if err != nil {
		t.Fatal(err)
	}
	sysJWT, sysKey, err := e.main.Service.MintSystemUser(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sys, err := nats.Connect(e.ns.ClientURL(), nats.UserJWT(func() (string, error) { return sysJWT, nil }, sysKey.Sign))
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	var (
		mu     sync.Mutex
		pushed []string
	)
	sub, err := sys.Subscribe("$SYS.REQ.ACCOUNT."+acc["public_key"].(string)+".CLAIMS.UPDATE", func(m *nats.Msg) {
		mu.Lock()
		pushed = append(pushed, string(m.Data))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	sys.Flush()

	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := e.main
			if i%2 == 1 {
				m = b
			}
			path := fmt.Sprintf("/v1/agents/agent-%02d/revoke", i)
			if i%4 == 3 {
				path = "/v1/accounts/fleet"
			}
			req, _ := http.NewRequest("POST", m.URL()+path, nil)
			if i%4 == 3 {
				req, _ = http.NewRequest("PATCH", m.URL()+path, strings.NewReader(fmt.Sprintf(`{"description":"change %d"}`, i)))
				req.Header.Set("Content-Type", "application/json")
			}
			req.Header.Set("Authorization", "Bearer "+e.admin)
			resp, err := e.http.Do(req)
			if err != nil {
				t.Errorf("%s: %v", path, err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("%s = %d", path, resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	final := e.must(200, "GET", "/v1/accounts/fleet", nil)["jwt_version"].(float64)
	eventually(t, 15*time.Second, "the newest jwt to be pushed", func() bool {
		owed, _ := e.main.Store.ListPushOwed(ctx)
		return len(owed) == 0
	})
	sys.Flush()
	versions := map[string]int64{}
	rows, err := e.main.Store.Pool().Query(ctx, `SELECT version, jwt FROM jwt_history`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v int64
		var j string
		rows.Scan(&v, &j)
		versions[j] = v
	}
	rows.Close()
	mu.Lock()
	defer mu.Unlock()
	var seq []int64
	for _, j := range pushed {
		v, ok := versions[j]
		if !ok {
			t.Fatalf("the server was pushed a jwt that was never stored")
		}
		if len(seq) > 0 && v < seq[len(seq)-1] {
			t.Fatalf("pushed versions %v: version %d after %d", append(seq, v), v, seq[len(seq)-1])
		}
		seq = append(seq, v)
	}
	if len(seq) == 0 || seq[len(seq)-1] != int64(final) {
		t.Fatalf("pushed versions %v, want the last to be the stored %v", seq, final)
	}
	t.Logf("%d changes from two replicas, %d pushes: versions %v", n, len(seq), seq)
}
