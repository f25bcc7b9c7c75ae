package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/natsrun"
	"github.com/rotatord/rotatord/pkg/agent"
)

// confServer is a nats-server in a child process, run from a configuration
// file that holds the block of `rotatord nats-config`, as operators run
// them, in a cluster of two.
type confServer struct {
	t                   testing.TB
	name                string
	port, cluster, peer int
	stdin               io.WriteCloser
	done                chan struct{}
}

// start runs the server with the given nats-config block.
func (s *confServer) start(block string) {
	s.t.Helper()
	conf := fmt.Sprintf("server_name: %s\nhost: 127.0.0.1\nport: %d\nmax_control_line: 4096\n"+
		"cluster {\n  name: rotatord-test\n  host: 127.0.0.1\n  port: %d\n  routes: [\"nats-route://127.0.0.1:%d\"]\n}\n%s",
		s.name, s.port, s.cluster, s.peer, block)
	path := filepath.Join(s.t.TempDir(), s.name+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), natsChildEnv+"=1", "NATS_CONFIG_FILE="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }() //nolint:errcheck // the exit status says nothing more
	s.stdin, s.done = stdin, done
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		s.stop()
		s.t.Fatalf("nats-server %s: %q, %v", s.name, line, err)
	}
	go io.Copy(io.Discard, stdout) //nolint:errcheck // drain
	s.t.Cleanup(s.stop)
}

// stop shuts the server down (its clients reconnect elsewhere).
func (s *confServer) stop() {
	if s.stdin == nil {
		return
	}
	s.stdin.Close()
	s.stdin = nil
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		s.t.Errorf("nats-server %s did not stop", s.name)
	}
}

func (s *confServer) restart(block string) {
	s.t.Helper()
	s.stop()
	s.start(block)
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		p, err := natsrun.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	return ports
}

// authErrors collects the agents' NATS errors that are refusals of their
// credentials.
type authErrors struct {
	mu   sync.Mutex
	errs []string
}

func (a *authErrors) handler(name string) nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if s := strings.ToLower(err.Error()); strings.Contains(s, "authoriz") || strings.Contains(s, "authentication") || strings.Contains(s, "revoked") {
			a.mu.Lock()
			a.errs = append(a.errs, name+": "+err.Error())
			a.mu.Unlock()
		}
	})
}

func (a *authErrors) list() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.errs)
}

// The operator signing-key rotation with two nats-servers run from their
// configuration: rotatord adds the new key and waits until both servers
// run the new block (one is restarted late: it waits for it), re-signs the
// accounts with the new key, removes the old key and waits again for both
// restarts. The agents keep an accepted credential throughout: each one
// reconnects to the other server when its own restarts, and none is ever
// refused.
func TestOperatorKeyRotationWithTwoServers(t *testing.T) {
	t.Parallel()
	ports := freePorts(t, 4)
	urls := fmt.Sprintf("nats://127.0.0.1:%d,nats://127.0.0.1:%d", ports[0], ports[1])
	e := newEnvWith(t, func(c *Config) { c.NATSURL = urls })
	a := &confServer{t: t, name: "nats-a", port: ports[0], cluster: ports[2], peer: ports[3]}
	b := &confServer{t: t, name: "nats-b", port: ports[1], cluster: ports[3], peer: ports[2]}
	db := []string{"--database-url", e.dbURL}
	block := func() string {
		t.Helper()
		return runCLIWith(t, append([]string{"nats-config", "--public-url", e.main.URL()}, db...)...).ok(t).stdout
	}
	signingKeys := func(block string) []string {
		t.Helper()
		for _, line := range strings.Split(block, "\n") {
			if token, ok := strings.CutPrefix(line, "operator: "); ok {
				oc, err := jwt.DecodeOperatorClaims(token)
				if err != nil {
					t.Fatal(err)
				}
				return oc.SigningKeys
			}
		}
		t.Fatalf("no operator line in %q", block)
		return nil
	}
	original := block()
	a.start(original)
	b.start(original)
	e.waitNATS()

	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	refusals := &authErrors{}
	type member struct {
		name string
		nc   *nats.Conn
		sub  *nats.Subscription
	}
	var fleet []member
	for i := range 4 {
		name := fmt.Sprintf("agent-%d", i)
		_, creds := createAgent(e, name, "fleet")
		ag, err := agent.New(agent.Config{Server: e.main.URL(), Name: name, Creds: []byte(creds)})
		if err != nil {
			t.Fatal(err)
		}
		nc, err := ag.Connect(urls, refusals.handler(name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		sub, err := nc.SubscribeSync("orders." + name)
		if err != nil {
			t.Fatal(err)
		}
		fleet = append(fleet, member{name, nc, sub})
	}
	// Every agent gets a message from every other, whichever server each is on.
	traffic := func(when string) {
		t.Helper()
		for i, m := range fleet {
			from := fleet[(i+1)%len(fleet)]
			eventually(t, 20*time.Second, when+": "+m.name+" reached", func() bool {
				if !m.nc.IsConnected() || !from.nc.IsConnected() {
					return false
				}
				from.nc.Publish("orders."+m.name, []byte(when))
				for {
					msg, err := m.sub.NextMsg(300 * time.Millisecond)
					if err != nil {
						return false
					}
					if string(msg.Data) == when {
						return true
					}
				}
			})
		}
		if errs := refusals.list(); len(errs) > 0 {
			t.Fatalf("%s: agents were refused: %v", when, errs)
		}
	}
	traffic("before")

	r := e.runCLI("operator", "rotate-key", "-o", "json").ok(t)
	id := decodeJSON(t, r.stdout)["id"].(string)
	if !strings.Contains(r.stderr, "rotatord nats-config") {
		t.Fatalf("rotate-key stderr: %s", r.stderr)
	}
	kr := func() map[string]any { t.Helper(); return e.must(200, "GET", "/v1/key-rotations/"+id, nil) }
	waitFor := func(what string, ok func(k map[string]any) bool) map[string]any {
		t.Helper()
		var k map[string]any
		eventually(t, 60*time.Second, what, func() bool { k = kr(); return ok(k) })
		return k
	}
	behind := func(k map[string]any) string {
		var n []string
		for _, s := range k["waiting_for"].([]any) {
			n = append(n, s.(string))
		}
		return strings.Join(n, ",")
	}
	// holdsOn asserts that the rotation, polling the servers twice more,
	// still waits in state for exactly the servers named.
	holdsOn := func(state, waitingFor string) {
		t.Helper()
		k := waitFor(state+" waiting for "+waitingFor, func(k map[string]any) bool { return k["state"] == state && behind(k) == waitingFor })
		for range 2 {
			seen := k["updated_at"]
			k = waitFor("another poll of the servers", func(k map[string]any) bool { return k["updated_at"] != seen })
			if k["state"] != state || behind(k) != waitingFor || !strings.Contains(k["waiting"].(string), waitingFor) {
				t.Fatalf("rotation went on without %s: %v", waitingFor, k)
			}
		}
	}
	k := waitFor("both servers seen", func(k map[string]any) bool { return len(k["servers"].([]any)) == 2 })
	if k["state"] != "adding_key" || behind(k) != "nats-a,nats-b" {
		t.Fatalf("key rotation = %v", k)
	}
	newKey, oldKey := k["new_key"].(string), k["old_keys"].([]any)[0].(string)

	// Step 1: the block now carries both keys. a restarts at once, b late.
	withBoth := block()
	if keys := signingKeys(withBoth); !slices.Contains(keys, newKey) || !slices.Contains(keys, oldKey) {
		t.Fatalf("the block while adding lists %v", keys)
	}
	if _, op := e.do("GET", "/jwt/v1/operator", "", nil); !strings.Contains(withBoth, "operator: "+string(op)+"\n") {
		t.Fatal("GET /jwt/v1/operator does not serve the operator jwt of the block")
	}
	a.restart(withBoth)
	holdsOn("adding_key", "nats-b")
	show := e.runCLI("key-rotations", "show", id).ok(t)
	if !strings.Contains(show.stdout, "nats-b") || !strings.Contains(show.stdout, "rotatord nats-config") {
		t.Fatalf("key-rotations show:\n%s", show.stdout)
	}
	traffic("a restarted")
	b.restart(withBoth)

	// Step 2 and 3: accounts re-signed with the new key, the old key removed.
	waitFor("removing_key", func(k map[string]any) bool { return k["state"] == "removing_key" })
	pub := e.must(200, "GET", "/v1/accounts/fleet", nil)["public_key"].(string)
	_, accJWT := e.do("GET", "/jwt/v1/accounts/"+pub, "", nil)
	if ac, err := jwt.DecodeAccountClaims(string(accJWT)); err != nil || ac.Issuer != newKey {
		t.Fatalf("account jwt after re-signing: issuer %v, %v; want the new key", ac, err)
	}
	traffic("re-signed")
	withNew := block()
	if keys := signingKeys(withNew); len(keys) != 1 || keys[0] != newKey {
		t.Fatalf("the block while removing lists %v", keys)
	}
	a.restart(withNew)
	holdsOn("removing_key", "nats-b")
	traffic("a restarted again")

	// The CLI waits for the end while b restarts.
	waited := make(chan cliResult, 1)
	go func() { waited <- e.runCLI("key-rotations", "show", id, "--wait", "--wait-timeout", "60s") }()
	b.restart(withNew)
	r = <-waited
	r.ok(t)
	if !strings.Contains(r.stderr, "removing_key") || !strings.Contains(r.stderr, "completed") || !strings.Contains(r.stdout, "completed") {
		t.Fatalf("key-rotations show --wait:\n%s\n%s", r.stdout, r.stderr)
	}
	k = kr()
	if k["finished_at"] == nil || len(k["waiting_for"].([]any)) != 0 {
		t.Fatalf("completed rotation = %v", k)
	}
	for _, s := range k["servers"].([]any) {
		s := s.(map[string]any)
		if s["trusts_new_key"] != true || s["trusts_old_key"] != false {
			t.Fatalf("server after the rotation: %v", s)
		}
	}
	traffic("completed")

	// New accounts and agents work on servers that trust only the new key.
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "later"})
	_, creds := createAgent(e, "late", "later")
	nc, err := nats.Connect(urls, nats.UserCredentials(writeCreds(t, creds)))
	if err != nil {
		t.Fatalf("agent of an account made after the rotation: %v", err)
	}
	nc.Close()
	if errs := refusals.list(); len(errs) > 0 {
		t.Fatalf("agents were refused: %v", errs)
	}
}

// The API of operator key rotations: scopes, bad bodies, one at a time,
// a rotatord without NATS, and unknown IDs; every answer is checked
// against api/openapi.yaml.
func TestOperatorKeyRotationAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // a NATS URL where no server listens yet
	ctx := context.Background()
	reader, _, err := e.main.Service.CreateToken(ctx, "test", "reader", rotatord.ScopeRead)
	if err != nil {
		t.Fatal(err)
	}
	rotator, _, err := e.main.Service.CreateToken(ctx, "test", "rotator", rotatord.ScopeRotate)
	if err != nil {
		t.Fatal(err)
	}
	const path = "/v1/operator/signing-keys/rotate"
	for _, tok := range []string{reader, rotator} {
		if status, body := e.do("POST", path, tok, nil); status != 403 {
			t.Fatalf("rotate with a lower scope = %d %s", status, body)
		}
	}
	if status, _ := e.do("POST", path, "", nil); status != 401 {
		t.Fatalf("rotate without a token = %d", status)
	}
	for _, body := range []string{`{"mode":"emergency"}`, `[]`, `{`} {
		if status, out := e.do("POST", path, e.admin, body); status != 400 {
			t.Fatalf("rotate with body %s = %d %s", body, status, out)
		}
	}
	other := e.startMain(e.config()) // a second replica, to serve the new operator jwt too
	started := e.must(202, "POST", path, "{}")
	id := started["id"].(string)
	if started["state"] != "adding_key" {
		t.Fatalf("started = %v", started)
	}
	status, body := e.do("POST", path, e.admin, nil)
	if status != 409 || !strings.Contains(string(body), id) {
		t.Fatalf("second rotate = %d %s", status, body)
	}
	eventually(t, 20*time.Second, "the rotation to say NATS is unreachable", func() bool {
		status, body := e.do("GET", "/v1/key-rotations/"+id, reader, nil)
		return status == 200 && strings.Contains(string(body), "not connected to NATS")
	})
	k := e.must(200, "GET", "/v1/key-rotations/"+id, nil)
	if k["kind"] != "operator" || k["state"] != "adding_key" || len(k["old_keys"].([]any)) != 1 || k["finished_at"] != nil {
		t.Fatalf("key rotation = %v", k)
	}
	op, _ := e.main.Store.Operator(ctx)
	oc, _ := jwt.DecodeOperatorClaims(op.JWT)
	if !oc.SigningKeys.Contains(k["new_key"].(string)) {
		t.Fatal("the stored operator jwt lacks the new key")
	}
	// Both replicas' resolvers serve the operator jwt that lists the new key.
	for _, m := range []*Main{e.main, other} {
		eventually(t, 10*time.Second, "the resolver to serve the new operator jwt", func() bool {
			_, body := e.doAt(m, "GET", "/jwt/v1/operator", "", nil)
			return string(body) == op.JWT
		})
	}
	for _, bad := range []string{"6f1c2b9e-4d3a-4f5e-9a7b-2c8d1e0f3a45", "not-a-uuid"} {
		e.must(404, "GET", "/v1/key-rotations/"+bad, nil)
	}

	// Without NATS, no rotation can start: it could never see the servers.
	solo := newEnvWith(t, func(c *Config) { c.NATSURL = "" })
	status, body = solo.do("POST", path, solo.admin, nil)
	if status != 422 || !strings.Contains(string(body), "ROTATORD_NATS_URL") {
		t.Fatalf("rotate without NATS = %d %s", status, body)
	}
}
