package agent_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/natsrun"
	"github.com/rotatord/rotatord/pkg/agent"
)

// fleet is an in-process nats-server in operator mode with one application
// account, resolved through a tiny URL resolver.
type fleet struct {
	op, sys, acc nkeys.KeyPair
	accPub       string
	sysPub       string
	ns           *server.Server
	url          string

	mu       sync.Mutex
	accounts map[string]string // account public key → JWT
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	f := &fleet{op: must(nkeys.CreateOperator()), sys: must(nkeys.CreateAccount()), acc: must(nkeys.CreateAccount())}
	opPub := must(f.op.PublicKey())
	f.sysPub, f.accPub = must(f.sys.PublicKey()), must(f.acc.PublicKey())
	oc := jwt.NewOperatorClaims(opPub)
	oc.SystemAccount = f.sysPub
	opJWT := must(oc.Encode(f.op))
	f.accounts = map[string]string{
		f.sysPub: must(jwt.NewAccountClaims(f.sysPub).Encode(f.op)),
		f.accPub: must(jwt.NewAccountClaims(f.accPub).Encode(f.op)),
	}
	const base = "/jwt/v1/accounts/"
	resolver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, ok := strings.CutPrefix(r.URL.Path, base)
		if !ok {
			http.NotFound(w, r)
			return
		}
		if key == "" {
			return // the server's start-up check
		}
		f.mu.Lock()
		token, ok := f.accounts[key]
		f.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/jwt")
		io.WriteString(w, token)
	}))
	t.Cleanup(resolver.Close)
	ns, err := natsrun.Start(natsrun.Options{OperatorJWT: opJWT, SystemAccount: f.sysPub, ResolverURL: resolver.URL + base})
	if err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	t.Cleanup(ns.Shutdown)
	f.ns, f.url = ns, ns.ClientURL()
	return f
}

// user returns a creds file for a new user key, its JWT signed by signer
// (the fleet's account key, or a stranger's the servers do not know).
func (f *fleet) user(t *testing.T, signer nkeys.KeyPair) ([]byte, string) {
	t.Helper()
	kp := must(nkeys.CreateUser())
	pub := must(kp.PublicKey())
	return userCreds(t, kp, f.userJWT(t, pub, signer)), pub
}

func (f *fleet) userJWT(t *testing.T, pub string, signer nkeys.KeyPair) string {
	t.Helper()
	uc := jwt.NewUserClaims(pub)
	uc.Name = "agent-test"
	uc.Expires = time.Now().Add(time.Hour).Unix()
	token, err := uc.Encode(signer)
	if err != nil {
		t.Fatalf("encode user jwt: %v", err)
	}
	return token
}

func userCreds(t *testing.T, kp nkeys.KeyPair, token string) []byte {
	t.Helper()
	file, err := jwt.FormatUserConfig(token, must(kp.Seed()))
	if err != nil {
		t.Fatalf("format creds: %v", err)
	}
	return file
}

// peer connects a plain client to the application account.
func (f *fleet) peer(t *testing.T) *nats.Conn {
	t.Helper()
	kp := must(nkeys.CreateUser())
	token := f.userJWT(t, must(kp.PublicKey()), f.acc)
	nc, err := nats.Connect(f.url, nats.UserJWTAndSeed(token, string(must(kp.Seed()))))
	if err != nil {
		t.Fatalf("connect peer: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// revoke revokes a user key in the account and pushes the account JWT to
// the server, as rotatord does; a connected user is dropped at once.
func (f *fleet) revoke(t *testing.T, userPub string) {
	t.Helper()
	ac := jwt.NewAccountClaims(f.accPub)
	ac.RevokeAt(userPub, time.Now())
	token := must(ac.Encode(f.op))
	f.mu.Lock()
	f.accounts[f.accPub] = token
	f.mu.Unlock()

	kp := must(nkeys.CreateUser())
	nc, err := nats.Connect(f.url, nats.UserJWTAndSeed(f.userJWT(t, must(kp.PublicKey()), f.sys), string(must(kp.Seed()))))
	if err != nil {
		t.Fatalf("connect system user: %v", err)
	}
	defer nc.Close()
	msg, err := nc.Request("$SYS.REQ.ACCOUNT."+f.accPub+".CLAIMS.UPDATE", []byte(token), 2*time.Second)
	if err != nil {
		t.Fatalf("push account jwt: %v", err)
	}
	if !strings.Contains(string(msg.Data), "jwt updated") {
		t.Fatalf("push account jwt: got %s", msg.Data)
	}
}

// connectedKeys returns the user keys connected to the server.
func (f *fleet) connectedKeys(t *testing.T) []string {
	t.Helper()
	cz, err := f.ns.Connz(&server.ConnzOptions{Username: true})
	if err != nil {
		t.Fatalf("connz: %v", err)
	}
	var keys []string
	for _, c := range cz.Conns {
		keys = append(keys, c.AuthorizedUser)
	}
	return keys
}

// fakeRotatord implements rotatord's two agent endpoints for one agent:
// GET creds offers the creds set with offer; POST creds issues a JWT for
// the posted key, signed by the fleet's account key.
type fakeRotatord struct {
	t    *testing.T
	f    *fleet
	name string
	srv  *httptest.Server

	mu         sync.Mutex
	keys       map[string]bool // keys accepted in proofs
	proofs     map[string]bool // signatures seen, to refuse replays
	offer      []byte
	offerPub   string
	posts      [][]byte      // POST bodies, as received
	postStatus int           // when not 0, POST answers this status with an error
	getDelay   time.Duration // how long a GET takes
	gets       int           // GETs answered
	// reconnectAfter, when set, is the Rotatord-Reconnect-After of the
	// answers with creds; offeredAt is when the last of them was sent.
	reconnectAfter string
	offeredAt      time.Time
}

func newFakeRotatord(t *testing.T, f *fleet, name string, keys ...string) *fakeRotatord {
	t.Helper()
	rd := &fakeRotatord{t: t, f: f, name: name, keys: map[string]bool{}, proofs: map[string]bool{}}
	for _, k := range keys {
		rd.keys[k] = true
	}
	rd.srv = httptest.NewServer(http.HandlerFunc(rd.serve))
	t.Cleanup(rd.srv.Close)
	return rd
}

func (rd *fakeRotatord) setOffer(file []byte, pub string) {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	rd.offer, rd.offerPub = file, pub
	rd.keys[pub] = true
}

func (rd *fakeRotatord) postBodies() [][]byte {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	return append([][]byte(nil), rd.posts...)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg, "code": code})
}

func (rd *fakeRotatord) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.EscapedPath() != "/v1/agents/"+rd.name+"/creds" {
		writeError(w, http.StatusNotFound, rotatord.ENOTFOUND, "no such route")
		return
	}
	pub, unix, sig, err := rotatord.ParseProof(r.Header.Get("Authorization"))
	if err != nil {
		writeError(w, http.StatusUnauthorized, rotatord.EUNAUTHORIZED, "missing or malformed proof")
		return
	}
	if d := time.Since(time.Unix(unix, 0)); d > rotatord.ProofWindow || d < -rotatord.ProofWindow {
		writeError(w, http.StatusUnauthorized, rotatord.EUNAUTHORIZED, "proof too old")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		writeError(w, http.StatusBadRequest, rotatord.EINVALID, "read body")
		return
	}
	target := r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	kp, err := nkeys.FromPublicKey(pub)
	if err != nil || kp.Verify(rotatord.ProofMessage(r.Method, target, unix, rotatord.BodyHash(body)), sig) != nil {
		writeError(w, http.StatusUnauthorized, rotatord.EUNAUTHORIZED, "bad proof signature")
		return
	}
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if rd.proofs[string(sig)] {
		writeError(w, http.StatusUnauthorized, rotatord.EUNAUTHORIZED, "proof already used (replay)")
		return
	}
	rd.proofs[string(sig)] = true
	if !rd.keys[pub] {
		writeError(w, http.StatusForbidden, rotatord.EFORBIDDEN, "key is not a key of this agent")
		return
	}
	switch r.Method {
	case http.MethodGet:
		rd.gets++
		if d := rd.getDelay; d > 0 {
			rd.mu.Unlock()
			time.Sleep(d)
			rd.mu.Lock()
		}
		if rd.offer == nil || rd.offerPub == pub {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if rd.reconnectAfter != "" {
			w.Header().Set(rotatord.ReconnectAfterHeader, rd.reconnectAfter)
		}
		rd.offeredAt = time.Now()
		w.Write(rd.offer)
	case http.MethodPost:
		rd.posts = append(rd.posts, body)
		var in struct {
			PublicKey string `json:"public_key"`
			KeyProof  string `json:"key_proof"`
		}
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil || !nkeys.IsValidPublicUserKey(in.PublicKey) {
			writeError(w, http.StatusBadRequest, rotatord.EINVALID, "body must be {\"public_key\", \"key_proof\"}")
			return
		}
		newKP, _ := nkeys.FromPublicKey(in.PublicKey)
		ksig, err := rotatord.DecodeSignature(in.KeyProof)
		if err != nil || newKP.Verify(rotatord.KeyProofMessage(rd.name, in.PublicKey, unix), ksig) != nil {
			writeError(w, http.StatusUnauthorized, rotatord.EUNAUTHORIZED, "bad key_proof")
			return
		}
		if rd.postStatus != 0 {
			writeError(w, rd.postStatus, rotatord.ECONFLICT, "a rotation is in flight")
			return
		}
		rd.keys[in.PublicKey] = true
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(map[string]any{
			"id": "rot-1", "state": rotatord.RotationDistributed, "public_key": in.PublicKey,
			"jwt": rd.f.userJWT(rd.t, in.PublicKey, rd.f.acc), "expires_at": time.Now().Add(time.Hour).UTC(),
		})
	default:
		writeError(w, http.StatusMethodNotAllowed, rotatord.EINVALID, "method not allowed")
	}
}

// watcher records a client's state callbacks, and calls the client from
// inside them, which would deadlock if the client held its lock then.
type watcher struct {
	client  atomic.Pointer[agent.Client]
	mu      sync.Mutex
	states  []agent.State
	rotated []string
}

func (w *watcher) onState(s agent.State, _ error) {
	if c := w.client.Load(); c != nil {
		_ = c.Status()
		_ = c.PublicKey()
	}
	w.mu.Lock()
	w.states = append(w.states, s)
	w.mu.Unlock()
}

func (w *watcher) onRotate(pub string) {
	if c := w.client.Load(); c != nil {
		_ = c.Status()
	}
	w.mu.Lock()
	w.rotated = append(w.rotated, pub)
	w.mu.Unlock()
}

func (w *watcher) seen() ([]agent.State, []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]agent.State(nil), w.states...), append([]string(nil), w.rotated...)
}

// newClient makes a client for the fake rotatord with a watcher and a log
// that goes to the test.
func newClient(t *testing.T, rd *fakeRotatord, creds []byte) (*agent.Client, *watcher) {
	t.Helper()
	w := &watcher{}
	cfg := agent.Config{
		Name: "agent-kate", Creds: creds, OnState: w.onState, OnRotate: w.onRotate,
		Log: slog.New(slog.NewTextHandler(newTestLog(t), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if rd != nil {
		cfg.Server, cfg.Name = rd.srv.URL, rd.name
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	w.client.Store(a)
	return a, w
}

// connect connects the client and closes the connection when the test ends.
func connect(t *testing.T, a *agent.Client, f *fleet) *nats.Conn {
	t.Helper()
	nc, err := a.Connect(f.url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// testLog writes to t.Log until the test ends; goroutines of nats.go may
// still log a moment after.
type testLog struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func newTestLog(t *testing.T) *testLog {
	l := &testLog{t: t}
	t.Cleanup(func() {
		l.mu.Lock()
		l.done = true
		l.mu.Unlock()
	})
	return l
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Helper()
		l.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// eventually waits up to 5 s for cond, and fails with what otherwise.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// roundTrip checks that a message published by from on subject reaches sub.
func roundTrip(t *testing.T, from *nats.Conn, sub *nats.Subscription, subject, data string) {
	t.Helper()
	if err := from.Publish(subject, []byte(data)); err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
	if err := from.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	for {
		msg, err := sub.NextMsg(3 * time.Second)
		if err != nil {
			t.Fatalf("receive %q on %s: %v", data, subject, err)
		}
		if string(msg.Data) == data {
			return
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
