package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/rotatord/rotatord/internal/natsrun"
)

// The user model end to end: a real nats-server holds agents to the claims
// rotatord wrote into their creds.

// addAgent creates an agent from body (name and account added) and returns
// its creds.
func addAgent(e *env, name string, body map[string]any) string {
	e.t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	body["name"], body["account"] = name, "fleet"
	creds, _ := e.must(201, "POST", "/v1/agents", body)["creds"].(string)
	if !strings.Contains(creds, "BEGIN NATS USER JWT") {
		e.t.Fatalf("agent %s: creds = %q", name, creds)
	}
	return creds
}

func credsJWT(t testing.TB, creds string) *jwt.UserClaims {
	t.Helper()
	token, err := jwt.ParseDecoratedJWT([]byte(creds))
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		t.Fatal(err)
	}
	return uc
}

// agentConn is a connection that reports its async errors.
type agentConn struct {
	*nats.Conn
	errs chan error
}

func connectAgent(e *env, creds string, opts ...nats.Option) (*agentConn, error) {
	c := &agentConn{errs: make(chan error, 64)}
	opts = append([]nats.Option{nats.UserCredentials(writeCreds(e.t, creds)), nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { c.errs <- err })}, opts...)
	nc, err := nats.Connect(e.ns.ClientURL(), opts...)
	if err != nil {
		return nil, err
	}
	c.Conn = nc
	e.t.Cleanup(nc.Close)
	return c, nil
}

func dialAgent(e *env, creds string, opts ...nats.Option) *agentConn {
	e.t.Helper()
	c, err := connectAgent(e, creds, opts...)
	if err != nil {
		e.t.Fatalf("connect: %v", err)
	}
	return c
}

// violation waits for the server's permissions violation naming subject.
func (c *agentConn) violation(t testing.TB, kind, subject string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case err := <-c.errs:
			if msg := err.Error(); strings.Contains(strings.ToLower(msg), "permissions violation for "+kind) && strings.Contains(msg, subject) {
				return
			}
		case <-deadline:
			t.Fatalf("no permissions violation for %s to %s", kind, subject)
		}
	}
}

// echo subscribes to subject and checks that a message published there by
// pub comes back.
func echo(t testing.TB, sub, pub *agentConn, subject string) {
	t.Helper()
	s, err := sub.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Unsubscribe() //nolint:errcheck // the test is done with it
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(subject, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if m, err := s.NextMsg(20 * time.Second); err != nil || string(m.Data) != "hi" {
		t.Fatalf("%s: got %v, %v; want the message", subject, m, err)
	}
}

func refused(t testing.TB, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: connected, want the server to refuse", what)
	}
	if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Fatalf("%s: %v, want an authorization violation", what, err)
	}
}

func newUserModelEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	e.startNATS()
	e.waitNATS()
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	return e
}

// An agent created without permissions can neither subscribe to ">" nor
// read another service's subject, nor publish anywhere: a direction with
// no allow entry denies ">". allow [">"] reaches everything.
func TestDefaultDenyEndToEnd(t *testing.T) {
	t.Parallel()
	e := newUserModelEnv(t)
	bare := addAgent(e, "bare", nil)
	all := map[string]any{"allow": []string{">"}}
	root := dialAgent(e, addAgent(e, "root", map[string]any{"permissions": map[string]any{"pub": all, "sub": all}}))
	cards := dialAgent(e, addAgent(e, "cards", map[string]any{"permissions": map[string]any{"pub": map[string]any{"allow": []string{"cards.>"}}}}))
	b := dialAgent(e, bare)

	wild, _ := b.SubscribeSync(">")
	b.violation(t, "subscription", ">")
	numbers, _ := b.SubscribeSync("cards.numbers")
	b.violation(t, "subscription", "cards.numbers")
	if err := b.Publish("cards.numbers", []byte("forged")); err != nil {
		t.Fatal(err)
	}
	b.violation(t, "publish", "cards.numbers")

	// The card service publishes; an agent allowed '>' gets it, the bare one does not.
	rootSub, _ := root.SubscribeSync("cards.numbers")
	root.Flush()
	if err := cards.Publish("cards.numbers", []byte("4111")); err != nil {
		t.Fatal(err)
	}
	if m, err := rootSub.NextMsg(20 * time.Second); err != nil || string(m.Data) != "4111" {
		t.Fatalf("agent allowed '>': %v, %v; want the card number", m, err)
	}
	// The server wrote the message to every subscriber when root got it; a
	// round trip on bare's connection after that would have carried it.
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*nats.Subscription{wild, numbers} {
		if n, _, _ := s.Pending(); n != 0 {
			t.Fatalf("the agent without permissions received %d messages on %s", n, s.Subject)
		}
	}
	if uc := credsJWT(t, bare); !uc.Pub.Deny.Contains(">") || !uc.Sub.Deny.Contains(">") {
		t.Fatalf("user JWT without permissions: pub %+v sub %+v, want '>' denied both ways", uc.Pub, uc.Sub)
	}
}

// A role with 200 templated subjects: its agents' JWTs stay small, they
// connect and are held to their own subjects. The same subjects given to an
// agent directly are refused with the size message.
func TestRoleTemplatesEndToEnd(t *testing.T) {
	t.Parallel()
	e := newUserModelEnv(t)
	var templated, literal []string
	for i := range 200 {
		templated = append(templated, fmt.Sprintf("svc.{{name()}}.s%03d", i))
		literal = append(literal, fmt.Sprintf("svc.bob.s%03d", i))
	}
	role := e.must(201, "POST", "/v1/accounts/fleet/roles", map[string]any{"name": "svc",
		"permissions": map[string]any{"pub": map[string]any{"allow": templated}, "sub": map[string]any{"allow": templated}}})
	alice, carol := addAgent(e, "alice", map[string]any{"role": "svc"}), addAgent(e, "carol", map[string]any{"role": "svc"})
	uc := credsJWT(t, alice)
	if uc.Issuer != role["signing_key"] || len(uc.Pub.Allow)+len(uc.Sub.Allow) != 0 {
		t.Fatalf("alice's JWT: issuer %s (role key %v), %d subjects", uc.Issuer, role["signing_key"], len(uc.Pub.Allow)+len(uc.Sub.Allow))
	}
	a, c := dialAgent(e, alice), dialAgent(e, carol)
	echo(t, a, a, "svc.alice.s000")
	echo(t, a, a, "svc.alice.s199")
	if err := a.Publish("svc.carol.s005", []byte("x")); err != nil {
		t.Fatal(err)
	}
	a.violation(t, "publish", "svc.carol.s005")
	a.SubscribeSync("svc.carol.s005")
	a.violation(t, "subscription", "svc.carol.s005")
	echo(t, c, c, "svc.carol.s005")

	status, body := e.do("POST", "/v1/agents", e.admin, map[string]any{"name": "bob", "account": "fleet",
		"permissions": map[string]any{"pub": map[string]any{"allow": literal}, "sub": map[string]any{"allow": literal}}})
	var apiErr struct{ Error, Code string }
	json.Unmarshal(body, &apiErr)
	if status != 400 || apiErr.Code != "invalid" {
		t.Fatalf("200 own subjects = %d %s, want 400", status, body)
	}
	for _, want := range []string{"CONNECT line of", "max_control_line of 4096", "role", "ROTATORD_MAX_CONTROL_LINE"} {
		if !strings.Contains(apiErr.Error, want) {
			t.Errorf("size message %q lacks %q", apiErr.Error, want)
		}
	}
}

// The largest set of own subjects rotatord accepts connects for real: the
// check is not looser than the server.
func TestControlLineBoundary(t *testing.T) {
	t.Parallel()
	e := newUserModelEnv(t)
	subjects := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("orders.region-%04d.>", i)
		}
		return out
	}
	lo, hi := 1, 200 // lo is accepted, hi refused
	if st, _ := e.do("POST", "/v1/agents", e.admin, map[string]any{"name": "probe-200", "account": "fleet",
		"permissions": map[string]any{"sub": map[string]any{"allow": subjects(hi)}}}); st != 400 {
		t.Fatalf("200 subjects = %d, want 400", st)
	}
	var creds string
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		st, body := e.do("POST", "/v1/agents", e.admin, map[string]any{"name": fmt.Sprintf("probe-%d", mid), "account": "fleet",
			"permissions": map[string]any{"sub": map[string]any{"allow": subjects(mid)}}})
		switch st {
		case 201:
			lo = mid
			var out struct{ Creds string }
			json.Unmarshal(body, &out)
			creds = out.Creds
		case 400:
			hi = mid
		default:
			t.Fatalf("probe %d = %d %s", mid, st, body)
		}
	}
	if creds == "" {
		t.Fatal("no probe was accepted")
	}
	t.Logf("the most own subjects accepted: %d", lo)
	c := dialAgent(e, creds)
	if err := c.Flush(); err != nil {
		t.Fatalf("the largest accepted agent cannot talk to the server: %v", err)
	}
}

// src and connection_types are enforced by the server.
func TestSrcAndConnectionTypes(t *testing.T) {
	t.Parallel()
	e := newUserModelEnv(t)
	_, err := connectAgent(e, addAgent(e, "far", map[string]any{"src": []string{"10.0.0.0/8"}}))
	refused(t, "src 10.0.0.0/8 from 127.0.0.1", err)
	dialAgent(e, addAgent(e, "near", map[string]any{"src": []string{"10.0.0.0/8", "127.0.0.0/8"}}))
	_, err = connectAgent(e, addAgent(e, "ws", map[string]any{"connection_types": []string{"WEBSOCKET"}}))
	refused(t, "connection_types [WEBSOCKET] over plain TCP", err)
	dialAgent(e, addAgent(e, "tcp", map[string]any{"connection_types": []string{"standard"}}))
	if got := e.must(200, "GET", "/v1/agents/tcp", nil)["connection_types"]; fmt.Sprint(got) != "[STANDARD]" {
		t.Fatalf("connection_types = %v, want [STANDARD]", got)
	}
}

// times is checked against the server's clock: a window around now
// connects, one an hour ahead is refused.
func TestConnectTimes(t *testing.T) {
	t.Parallel()
	e := newUserModelEnv(t)
	now := time.Now().UTC()
	window := func(from, to time.Duration) []map[string]string {
		return []map[string]string{{"start": now.Add(from).Format(time.TimeOnly), "end": now.Add(to).Format(time.TimeOnly)}}
	}
	dialAgent(e, addAgent(e, "day", map[string]any{"times": window(-time.Hour, time.Hour), "times_location": "UTC"}))
	_, err := connectAgent(e, addAgent(e, "night", map[string]any{"times": window(time.Hour, 2*time.Hour), "times_location": "UTC"}))
	refused(t, "outside its connect times", err)
}

// resp lets a responder answer a request without a publish permission on
// _INBOX.>; without it the reply is a violation.
func TestResponsePermission(t *testing.T) {
	t.Parallel()
	e := newUserModelEnv(t)
	requester := dialAgent(e, addAgent(e, "client", map[string]any{"permissions": map[string]any{
		"pub": map[string]any{"allow": []string{"svc.>"}}, "sub": map[string]any{"allow": []string{"_INBOX.>"}}}}))
	responder := dialAgent(e, addAgent(e, "clock", map[string]any{"permissions": map[string]any{
		"sub": map[string]any{"allow": []string{"svc.time"}}, "resp": map[string]any{"max": 1, "ttl": "10s"}}}))
	mute := dialAgent(e, addAgent(e, "mute", map[string]any{"permissions": map[string]any{
		"sub": map[string]any{"allow": []string{"svc.mute"}}}}))
	if got := e.must(200, "GET", "/v1/agents/clock", nil)["permissions"].(map[string]any)["resp"]; fmt.Sprint(got) != "map[max:1 ttl:10s]" {
		t.Fatalf("resp = %v", got)
	}
	for subject, r := range map[string]*agentConn{"svc.time": responder, "svc.mute": mute} {
		if _, err := r.Subscribe(subject, func(m *nats.Msg) { m.Respond([]byte("12:00")) }); err != nil { //nolint:errcheck // a refused reply is the test
			t.Fatal(err)
		}
		r.Flush()
	}
	if m, err := requester.Request("svc.time", nil, 20*time.Second); err != nil || string(m.Data) != "12:00" {
		t.Fatalf("request to a responder with resp: %v, %v", m, err)
	}
	requester.PublishRequest("svc.mute", requester.NewRespInbox(), nil) //nolint:errcheck // the violation is the test
	mute.violation(t, "publish", "_INBOX.")
}

// Changing a role's scope: the answer says the agents reconnect, the
// server drops them, they reconnect at once with the same creds and are
// held to the new scope. A description alone drops no one.
func TestRoleScopeChangeReconnects(t *testing.T) {
	t.Parallel()
	e := newUserModelEnv(t)
	e.must(201, "POST", "/v1/accounts/fleet/roles", map[string]any{"name": "reader",
		"permissions": map[string]any{"sub": map[string]any{"allow": []string{"feed.a"}}}})
	pub := dialAgent(e, addAgent(e, "feeder", map[string]any{"permissions": map[string]any{"pub": map[string]any{"allow": []string{"feed.>"}}}}))
	dropped, back := make(chan struct{}, 10), make(chan struct{}, 10)
	r := dialAgent(e, addAgent(e, "r1", map[string]any{"role": "reader"}), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { dropped <- struct{}{} }),
		nats.ReconnectHandler(func(*nats.Conn) { back <- struct{}{} }))
	echo(t, r, pub, "feed.a")
	r.SubscribeSync("feed.b")
	r.violation(t, "subscription", "feed.b")
	// The role allows no publish: default deny holds for its template too.
	r.Publish("feed.a", []byte("x")) //nolint:errcheck // the violation is the test
	r.violation(t, "publish", "feed.a")

	before := e.must(200, "GET", "/v1/accounts/fleet", nil)["updated_at"]
	desc := e.must(200, "PATCH", "/v1/accounts/fleet/roles/reader", map[string]any{"description": "readers"})
	if desc["scope_changed"] != false || desc["notice"] != nil {
		t.Fatalf("description change = %v; want scope_changed false, no notice", desc)
	}
	if after := e.must(200, "GET", "/v1/accounts/fleet", nil)["updated_at"]; after != before {
		t.Fatal("a description change re-signed the account JWT")
	}
	res := e.must(200, "PATCH", "/v1/accounts/fleet/roles/reader", map[string]any{
		"permissions": map[string]any{"sub": map[string]any{"allow": []string{"feed.a", "feed.b"}}}})
	if res["scope_changed"] != true || !strings.Contains(fmt.Sprint(res["notice"]), "reconnect") {
		t.Fatalf("scope change = %v; want scope_changed and a notice", res)
	}
	for what, ch := range map[string]chan struct{}{"dropped": dropped, "reconnected": back} {
		select {
		case <-ch:
		case <-time.After(20 * time.Second):
			t.Fatalf("the role's agent was not %s after the scope change", what)
		}
	}
	echo(t, r, pub, "feed.b")
}

// Bad claims are a 400 naming the field, on create and on change.
func TestUserClaimsBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	e.must(201, "POST", "/v1/accounts/fleet/roles", map[string]any{"name": "worker"})
	many := make([]string, 65)
	for i := range many {
		many[i] = fmt.Sprintf("10.%d.0.0/16", i)
	}
	for _, c := range []struct {
		field any
		name  string
		want  string
	}{
		{[]string{"10.0.0.0/33"}, "src", "src[0]"},
		{many, "src", "more than 64"},
		{[]map[string]string{{"start": "25:00:00", "end": "26:00:00"}}, "times", "times[0].start"},
		{[]map[string]string{{"start": "08:00", "end": "09:00:00"}}, "times", "HH:MM:SS"},
		{"Mars/Olympus_Mons", "times_location", "time zone"},
		{[]string{"CARRIER_PIGEON"}, "connection_types", "connection_types[0]"},
		{[]string{"STANDARD", "standard"}, "connection_types", "twice"},
		{map[string]any{"subs": -5}, "limits", "limits.subs"},
		{map[string]any{"pub": map[string]any{"allow": []string{"a.{{name()}}"}}}, "permissions", "only in a role"},
		{map[string]any{"resp": map[string]any{"max": 1, "ttl": "soon"}}, "permissions", "resp.ttl"},
		{[]string{"bad tag"}, "tags", "tags[0]"},
		{"ghost", "role", "does not exist"},
	} {
		body := map[string]any{"name": "x", "account": "fleet", c.name: c.field}
		for _, req := range []struct {
			method, path string
		}{{"POST", "/v1/agents"}, {"PATCH", "/v1/agents/ok"}} {
			if req.method == "PATCH" {
				delete(body, "name")
				delete(body, "account")
				e.do("POST", "/v1/agents", e.admin, map[string]any{"name": "ok", "account": "fleet"})
			}
			status, out := e.do(req.method, req.path, e.admin, body)
			if status != 400 || !strings.Contains(string(out), c.want) || !strings.Contains(string(out), `"code":"invalid"`) {
				t.Errorf("%s %s with %s %v = %d %s; want 400 with %q", req.method, req.path, c.name, c.field, status, out, c.want)
			}
		}
	}
	status, out := e.do("POST", "/v1/agents", e.admin, map[string]any{"name": "y", "account": "fleet", "role": "worker",
		"permissions": map[string]any{"pub": map[string]any{"allow": []string{"a"}}}})
	if status != 400 || !strings.Contains(string(out), "exclude each other") {
		t.Errorf("role and own permissions = %d %s, want 400", status, out)
	}
	status, out = e.do("POST", "/v1/accounts/fleet/roles", e.admin, map[string]any{"name": "bad",
		"permissions": map[string]any{"sub": map[string]any{"allow": []string{"a.{{bogus()}}"}}}})
	if status != 400 || !strings.Contains(string(out), "is not one of") {
		t.Errorf("role with an unknown template = %d %s, want 400", status, out)
	}
	e.must(201, "POST", "/v1/agents", map[string]any{"name": "w1", "account": "fleet", "role": "worker"})
	status, out = e.do("DELETE", "/v1/accounts/fleet/roles/worker", e.admin, nil)
	if status != 409 || !strings.Contains(string(out), "has 1 agents") {
		t.Errorf("delete a role in use = %d %s, want 409", status, out)
	}
	for _, path := range []string{"/v1/accounts/ghost/roles", "/v1/accounts/fleet/roles/ghost"} {
		if status, _ := e.do("GET", path, e.admin, nil); status != 404 {
			t.Errorf("GET %s = %d, want 404", path, status)
		}
	}
	if status, _ := e.do("GET", "/v1/accounts/SYS/roles", e.admin, nil); status != 400 {
		t.Errorf("roles of the system account = %d, want 400", status)
	}
	list := e.must(200, "GET", "/v1/accounts/fleet/roles", nil)["roles"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["agents"] != float64(1) {
		t.Errorf("roles = %v", list)
	}
	if r := e.must(200, "GET", "/v1/accounts/fleet/roles/worker", nil); r["agents"] != float64(1) || r["signing_key"] == "" {
		t.Errorf("role = %v", r)
	}
	e.must(201, "POST", "/v1/accounts/fleet/roles", map[string]any{"name": "spare", "limits": map[string]any{"subs": 1}})
	e.must(204, "DELETE", "/v1/accounts/fleet/roles/spare", nil)
	e.must(404, "GET", "/v1/accounts/fleet/roles/spare", nil)
}

// ROTATORD_MAX_CONTROL_LINE follows the servers' max_control_line: raised
// on both, an agent with 200 subjects of its own is accepted and connects.
func TestMaxControlLineSetting(t *testing.T) {
	t.Parallel()
	getenv := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	cfg := DefaultConfig()
	if cfg.MaxControlLine != 4096 {
		t.Fatalf("default = %d, want nats-server's 4096", cfg.MaxControlLine)
	}
	cfg.fromEnv(getenv(map[string]string{"ROTATORD_MAX_CONTROL_LINE": "16384"}))
	if cfg.MaxControlLine != 16384 || cfg.Validate() != nil {
		t.Fatalf("from env = %d, %v", cfg.MaxControlLine, cfg.Validate())
	}
	for v, want := range map[string]string{"big": "is not a whole number", "100": "between 1024"} {
		cfg := DefaultConfig()
		cfg.fromEnv(getenv(map[string]string{"ROTATORD_MAX_CONTROL_LINE": v}))
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ROTATORD_MAX_CONTROL_LINE=%s: Validate = %v, want %q", v, err, want)
		}
	}

	e := newEnvWith(t, func(c *Config) { c.MaxControlLine = 16384 })
	op, err := e.main.Store.Operator(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsrun.Start(natsrun.Options{OperatorJWT: op.JWT, SystemAccount: op.SystemAccount,
		ResolverURL: e.main.URL() + "/jwt/v1/accounts/", Port: e.natsPort,
		Configure: func(o *server.Options) { o.MaxControlLine = 16384 }})
	if err != nil {
		t.Fatal(err)
	}
	e.ns = ns
	t.Cleanup(ns.Shutdown)
	e.waitNATS()
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	var subjects []string
	for i := range 200 {
		subjects = append(subjects, fmt.Sprintf("svc.bob.s%03d", i))
	}
	bob := dialAgent(e, addAgent(e, "bob", map[string]any{"permissions": map[string]any{"pub": map[string]any{"allow": subjects},
		"sub": map[string]any{"allow": subjects}}}))
	echo(t, bob, bob, "svc.bob.s199")
}
