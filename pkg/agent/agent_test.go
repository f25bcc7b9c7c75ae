package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/pkg/agent"
)

func TestRefreshSwitchesKeyAndKeepsSubscription(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	credsA, pubA := f.user(t, f.acc)
	credsB, pubB := f.user(t, f.acc)
	rd := newFakeRotatord(t, f, "agent-kate", pubA)
	a, w := newClient(t, rd, credsA)
	nc := connect(t, a, f)
	sub, err := nc.SubscribeSync("demo.>")
	if err != nil {
		t.Fatal(err)
	}
	// The server must hold the subscription before a peer publishes.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	peer := f.peer(t)
	roundTrip(t, peer, sub, "demo.before", "before")

	ctx := t.Context()
	if switched, err := a.Refresh(ctx); err != nil || switched {
		t.Fatalf("Refresh with nothing new: got %v, %v; want false, nil", switched, err)
	}
	rd.setOffer(credsB, pubB)
	if switched, err := a.Refresh(ctx); err != nil || !switched {
		t.Fatalf("Refresh: got %v, %v; want true, nil", switched, err)
	}
	eventually(t, "the connection to move to the new key", func() bool {
		st := a.Status()
		return st.State == agent.StateConnected && st.PublicKey == pubB && st.Rotations == 1
	})
	if got := f.connectedKeys(t); !slices.Contains(got, pubB) || slices.Contains(got, pubA) {
		t.Fatalf("server sees keys %v; want %s and not %s", got, pubB, pubA)
	}
	if _, rotated := w.seen(); !slices.Equal(rotated, []string{pubB}) {
		t.Fatalf("OnRotate got %v; want [%s]", rotated, pubB)
	}
	if !bytes.Equal(a.CredsFile(), credsB) {
		t.Fatal("CredsFile is not the new creds file")
	}
	// The subscription came along: a peer's message reaches it, and the
	// agent can publish.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, peer, sub, "demo.after", "after")
	peerSub, err := peer.SubscribeSync("demo.from-agent")
	if err != nil {
		t.Fatal(err)
	}
	// The server must hold the subscription before a peer publishes.
	if err := peer.Flush(); err != nil {
		t.Fatal(err)
	}
	peer.Flush()
	roundTrip(t, nc, peerSub, "demo.from-agent", "hello")

	// Now the new key is the newest: rotatord answers 304.
	if switched, err := a.Refresh(ctx); err != nil || switched {
		t.Fatalf("Refresh after the switch: got %v, %v; want false, nil", switched, err)
	}
	states, _ := w.seen()
	if slices.Contains(states, agent.StateRejected) {
		t.Fatalf("states %v; a working rotation never opens the circuit", states)
	}
}

func TestRotateOwnKeySendsOnlyThePublicKey(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	credsA, pubA := f.user(t, f.acc)
	rd := newFakeRotatord(t, f, "agent-kate", pubA)
	a, _ := newClient(t, rd, credsA)
	nc := connect(t, a, f)
	sub, err := nc.SubscribeSync("demo.>")
	if err != nil {
		t.Fatal(err)
	}
	// The server must hold the subscription before a peer publishes.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	if err := a.RotateOwnKey(t.Context()); err != nil {
		t.Fatalf("RotateOwnKey: %v", err)
	}
	newKey := a.PublicKey()
	if newKey == pubA {
		t.Fatal("PublicKey did not change")
	}
	posts := rd.postBodies()
	if len(posts) != 1 {
		t.Fatalf("rotatord got %d POSTs; want 1", len(posts))
	}
	var body map[string]any
	if err := json.Unmarshal(posts[0], &body); err != nil {
		t.Fatalf("POST body is not JSON: %v", err)
	}
	if len(body) != 2 || body["public_key"] != newKey || body["key_proof"] == "" {
		t.Fatalf("POST body %s; want only {\"public_key\": %q, \"key_proof\": ...}", posts[0], newKey)
	}
	seedKP, err := jwt.ParseDecoratedUserNKey(a.CredsFile())
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := seedKP.Seed()
	if bytes.Contains(posts[0], seed) || bytes.Contains(posts[0], []byte("SEED")) {
		t.Fatal("the POST body carries the seed")
	}

	eventually(t, "the connection to move to the agent's own key", func() bool {
		st := a.Status()
		return st.State == agent.StateConnected && st.Rotations == 1
	})
	if got := f.connectedKeys(t); !slices.Contains(got, newKey) {
		t.Fatalf("server sees keys %v; want %s", got, newKey)
	}
	nc.Flush()
	roundTrip(t, f.peer(t), sub, "demo.own-key", "own key")
}

func TestRotateOwnKeyRefused(t *testing.T) {
	t.Parallel()
	f := &fleet{acc: must(nkeys.CreateAccount())} // no nats-server needed
	credsA, pubA := f.user(t, f.acc)
	rd := newFakeRotatord(t, f, "agent-kate", pubA)
	rd.postStatus = http.StatusConflict
	a, _ := newClient(t, rd, credsA)

	err := a.RotateOwnKey(t.Context())
	var apiErr *agent.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusConflict || apiErr.Code != rotatord.ECONFLICT {
		t.Fatalf("RotateOwnKey: got %v; want an APIError 409 conflict", err)
	}
	if !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), "a rotation is in flight") {
		t.Fatalf("error %q; want the status and rotatord's message", err)
	}
	if got := a.PublicKey(); got != pubA {
		t.Fatalf("PublicKey %s after a refusal; want %s", got, pubA)
	}
}

func TestWatchFilePicksUpNewCreds(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	credsA, _ := f.user(t, f.acc)
	credsB, pubB := f.user(t, f.acc)
	path := filepath.Join(t.TempDir(), "agent.creds")
	if err := os.WriteFile(path, credsA, 0o600); err != nil {
		t.Fatal(err)
	}
	a, _ := newClient(t, nil, credsA)
	nc := connect(t, a, f)
	sub, err := nc.SubscribeSync("demo.>")
	if err != nil {
		t.Fatal(err)
	}
	// The server must hold the subscription before a peer publishes.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.WatchFile(ctx, path, 10*time.Millisecond)
	}()
	t.Cleanup(func() { cancel(); <-done })

	// A half-written file is not used, and not fatal.
	if err := os.WriteFile(path, credsB[:len(credsB)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if st := a.Status(); st.PublicKey == pubB || st.Rotations != 0 {
		t.Fatalf("status %+v after a half-written file; want the old key", st)
	}
	if err := os.WriteFile(path, credsB, 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the client to use the file's new creds", func() bool {
		st := a.Status()
		return st.State == agent.StateConnected && st.PublicKey == pubB && st.Rotations == 1
	})
	nc.Flush()
	roundTrip(t, f.peer(t), sub, "demo.file", "from file")
}

func TestFallbackWhenNewKeyIsRefused(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	credsA, pubA := f.user(t, f.acc)
	// A JWT for the new key signed by an account the servers do not know:
	// they refuse it with an authorization violation.
	credsB, pubB := f.user(t, must(nkeys.CreateAccount()))
	a, w := newClient(t, nil, credsA)
	nc := connect(t, a, f)
	sub, err := nc.SubscribeSync("demo.>")
	if err != nil {
		t.Fatal(err)
	}
	// The server must hold the subscription before a peer publishes.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	if err := a.Use(credsB); err != nil {
		t.Fatalf("Use: %v", err)
	}
	eventually(t, "the fallback to the previous key", func() bool {
		st := a.Status()
		return st.State == agent.StateConnected && st.Fallbacks == 1
	})
	st := a.Status()
	if st.PublicKey != pubA || st.Rotations != 0 {
		t.Fatalf("status %+v; want key %s and no rotation", st, pubA)
	}
	if !strings.Contains(st.LastError, pubB) || !strings.Contains(st.LastError, "falling back") || st.LastErrorAt.IsZero() {
		t.Fatalf("LastError %q; want the refusal of %s and the fallback", st.LastError, pubB)
	}
	if got := f.connectedKeys(t); !slices.Equal(got, []string{pubA}) {
		t.Fatalf("server sees keys %v; want [%s]", got, pubA)
	}
	if !bytes.Equal(a.CredsFile(), credsA) {
		t.Fatal("CredsFile is not the previous creds file")
	}
	states, rotated := w.seen()
	if slices.Contains(states, agent.StateRejected) || len(rotated) != 0 {
		t.Fatalf("states %v, rotations %v; a fallback is neither an open circuit nor a rotation", states, rotated)
	}
	nc.Flush()
	roundTrip(t, f.peer(t), sub, "demo.fallback", "still here")

	// The refused creds are not tried again at once.
	if err := a.Use(credsB); !errors.Is(err, agent.ErrRefused) {
		t.Fatalf("Use of refused creds: got %v; want ErrRefused", err)
	}
}

func TestConnectFallsBackAtStart(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	credsA, pubA := f.user(t, f.acc)
	credsB, _ := f.user(t, must(nkeys.CreateAccount()))
	a, _ := newClient(t, nil, credsA)
	if err := a.Use(credsB); err != nil {
		t.Fatal(err)
	}
	connect(t, a, f)
	if st := a.Status(); st.State != agent.StateConnected || st.PublicKey != pubA || st.Fallbacks != 1 {
		t.Fatalf("status %+v; want connected with %s after one fallback", st, pubA)
	}
}

func TestRejectedWhenEveryKeyIsRefused(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	credsA, pubA := f.user(t, f.acc)
	a, w := newClient(t, nil, credsA)
	nc := connect(t, a, f)
	sub, err := nc.SubscribeSync("demo.>")
	if err != nil {
		t.Fatal(err)
	}
	// The server must hold the subscription before a peer publishes.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// The only key is revoked: the circuit opens.
	f.revoke(t, pubA)
	eventually(t, "the open circuit", func() bool { return a.State() == agent.StateRejected })
	if st := a.Status(); !strings.Contains(st.LastError, pubA) || st.PublicKey != pubA {
		t.Fatalf("status %+v; want the refusal of %s", st, pubA)
	}

	// New creds the servers refuse too: still open.
	credsB, pubB := f.user(t, must(nkeys.CreateAccount()))
	if err := a.Use(credsB); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the refusal of the second key", func() bool {
		st := a.Status()
		return st.State == agent.StateRejected && strings.Contains(st.LastError, pubB)
	})

	// Good creds close it again, and the subscription comes along.
	credsC, pubC := f.user(t, f.acc)
	if err := a.Use(credsC); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the closed circuit", func() bool {
		st := a.Status()
		return st.State == agent.StateConnected && st.PublicKey == pubC
	})
	states, rotated := w.seen()
	if i := slices.Index(states, agent.StateRejected); i < 0 || states[len(states)-1] != agent.StateConnected {
		t.Fatalf("states %v; want rejected, then connected at the end", states)
	}
	if !slices.Equal(rotated, []string{pubC}) {
		t.Fatalf("OnRotate got %v; want [%s]", rotated, pubC)
	}
	nc.Flush()
	roundTrip(t, f.peer(t), sub, "demo.back", "back")
}

// fakeVault answers KV v2 reads of one secret.
type fakeVault struct {
	mu      sync.Mutex
	version int
	data    map[string]any
}

func (v *fakeVault) put(data map[string]any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.version++
	v.data = data
}

func (v *fakeVault) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Vault-Token") != "test-token" {
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"errors":["permission denied"]}`))
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if r.URL.Path != "/v1/secret/data/agents/agent-kate" || v.version == 0 {
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"errors":[]}`))
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{
		"data": v.data,
		"metadata": map[string]any{
			"version": v.version, "created_time": time.Now().UTC().Format(time.RFC3339Nano),
			"deletion_time": "", "destroyed": false,
		},
	}})
}

func TestWatchVault(t *testing.T) {
	t.Parallel()
	f := &fleet{acc: must(nkeys.CreateAccount())}
	credsA, pubA := f.user(t, f.acc)
	credsB, pubB := f.user(t, f.acc)
	rd := newFakeRotatord(t, f, "agent-kate", pubA)
	rd.postStatus = http.StatusServiceUnavailable
	a, _ := newClient(t, rd, credsA)

	v := &fakeVault{}
	srv := httptest.NewServer(http.HandlerFunc(v.serve))
	t.Cleanup(srv.Close)
	cfg := vaultapi.DefaultConfig()
	cfg.Address = srv.URL
	vc, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	vc.SetToken("test-token")

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.WatchVault(ctx, vc, "secret", "agents/agent-kate", 10*time.Millisecond)
	}()
	t.Cleanup(func() { cancel(); <-done })
	settle := func() { time.Sleep(60 * time.Millisecond) }

	// The current creds, then a JWT for a key pair the client never made:
	// nothing changes.
	v.put(map[string]any{"creds": string(credsA), "public_key": pubA})
	settle()
	strangerKey := must(must(nkeys.CreateUser()).PublicKey())
	v.put(map[string]any{"jwt": f.userJWT(t, strangerKey, f.acc), "public_key": strangerKey})
	settle()
	if got := a.PublicKey(); got != pubA {
		t.Fatalf("PublicKey %s; want %s", got, pubA)
	}

	// The agent sends its own key but the answer is lost (503); rotatord
	// delivers the JWT through Vault, and the client combines it with the
	// seed it kept.
	if err := a.RotateOwnKey(ctx); err == nil {
		t.Fatal("RotateOwnKey succeeded against a 503")
	}
	var posted struct {
		PublicKey string `json:"public_key"`
	}
	if err := json.Unmarshal(rd.postBodies()[0], &posted); err != nil {
		t.Fatal(err)
	}
	v.put(map[string]any{"jwt": f.userJWT(t, posted.PublicKey, f.acc), "public_key": posted.PublicKey})
	eventually(t, "the agent's own key from Vault", func() bool { return a.PublicKey() == posted.PublicKey })
	if _, err := jwt.ParseDecoratedUserNKey(a.CredsFile()); err != nil {
		t.Fatalf("combined creds file: %v", err)
	}

	// A creds file delivered by rotatord.
	v.put(map[string]any{"creds": string(credsB), "public_key": pubB})
	eventually(t, "the creds from Vault", func() bool { return a.PublicKey() == pubB })

	// A JWT and a seed in separate fields.
	kpC := must(nkeys.CreateUser())
	pubC := must(kpC.PublicKey())
	v.put(map[string]any{"jwt": f.userJWT(t, pubC, f.acc), "seed": string(must(kpC.Seed())), "public_key": pubC})
	eventually(t, "the jwt and seed from Vault", func() bool { return a.PublicKey() == pubC })
}

func TestSignRequestIsAValidProof(t *testing.T) {
	t.Parallel()
	kp := must(nkeys.CreateUser())
	req := httptest.NewRequest(http.MethodGet, "http://rotatord/v1/agents/agent%20kate/creds", nil)
	now := time.Unix(1_700_000_000, 0)
	if err := agent.SignRequest(req, kp, now); err != nil {
		t.Fatal(err)
	}
	pub, unix, sig, err := rotatord.ParseProof(req.Header.Get("Authorization"))
	if err != nil {
		t.Fatal(err)
	}
	if want := must(kp.PublicKey()); pub != want || unix != now.Unix() {
		t.Fatalf("proof for %s at %d; want %s at %d", pub, unix, want, now.Unix())
	}
	if err := kp.Verify(rotatord.ProofMessage("GET", "/v1/agents/agent%20kate/creds", unix, rotatord.EmptyBodyHash), sig); err != nil {
		t.Fatalf("signature over the escaped path: %v", err)
	}
	// Version 2 covers the query and the body: exactly this message.
	body := `{"public_key":"U"}`
	req = httptest.NewRequest(http.MethodPost, "http://rotatord/v1/agents/kate/creds?x=1&y=%2F", strings.NewReader(body))
	if err := agent.SignRequest(req, kp, now); err != nil {
		t.Fatal(err)
	}
	_, _, sig, _ = rotatord.ParseProof(req.Header.Get("Authorization"))
	sum := sha256.Sum256([]byte(body))
	msg := "rotatord-v2\nPOST\n/v1/agents/kate/creds?x=1&y=%2F\n1700000000\n" + hex.EncodeToString(sum[:])
	if err := kp.Verify([]byte(msg), sig); err != nil {
		t.Fatalf("signature over %q: %v", msg, err)
	}
	if got, _ := io.ReadAll(req.Body); string(got) != body {
		t.Fatalf("body after signing = %q, want it intact", got)
	}
	// The key proof of an own-key POST.
	newKP := must(nkeys.CreateUser())
	raw, err := agent.OwnKeyBody(newKP, "kate", now.Unix())
	if err != nil {
		t.Fatal(err)
	}
	var in struct{ PublicKey, KeyProof string }
	json.Unmarshal(raw, &struct {
		PublicKey *string `json:"public_key"`
		KeyProof  *string `json:"key_proof"`
	}{&in.PublicKey, &in.KeyProof})
	ksig, err := base64.RawURLEncoding.DecodeString(in.KeyProof)
	if err != nil || in.PublicKey != must(newKP.PublicKey()) {
		t.Fatalf("own-key body %s", raw)
	}
	if err := newKP.Verify([]byte("rotatord-v2-key\nkate\n"+in.PublicKey+"\n1700000000"), ksig); err != nil {
		t.Fatalf("key proof: %v", err)
	}
}

func TestRolledBackKeyFallsBackToThePreviousOne(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	credsA, pubA := f.user(t, f.acc)
	credsB, pubB := f.user(t, f.acc)
	a, _ := newClient(t, nil, credsA)
	connect(t, a, f)
	if err := a.Use(credsB); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the move to the new key", func() bool {
		st := a.Status()
		return st.State == agent.StateConnected && st.PublicKey == pubB && st.Rotations == 1
	})

	// rotatord never saw the reconnect, rolled the rotation back and
	// revoked the new key: the client still holds the previous one.
	f.revoke(t, pubB)
	eventually(t, "the fallback to the previous key", func() bool {
		st := a.Status()
		return st.State == agent.StateConnected && st.PublicKey == pubA && st.Fallbacks == 1
	})
	if got := f.connectedKeys(t); !slices.Equal(got, []string{pubA}) {
		t.Fatalf("server sees keys %v; want [%s]", got, pubA)
	}
}

// A RotateOwnKey whose answer was lost (a 5xx) sends the same key again on
// the next call: rotatord answers a retry of the rotation in flight with
// the same 202, where a new key would be refused while it is in flight.
func TestRotateOwnKeyRetriesWithTheSameKey(t *testing.T) {
	t.Parallel()
	f := &fleet{acc: must(nkeys.CreateAccount())} // no nats-server needed
	credsA, pubA := f.user(t, f.acc)
	rd := newFakeRotatord(t, f, "agent-kate", pubA)
	rd.postStatus = http.StatusServiceUnavailable
	a, _ := newClient(t, rd, credsA)
	if err := a.RotateOwnKey(t.Context()); err == nil {
		t.Fatal("RotateOwnKey succeeded against a 503")
	}
	rd.mu.Lock()
	rd.postStatus = 0
	rd.mu.Unlock()
	if err := a.RotateOwnKey(t.Context()); err != nil {
		t.Fatalf("retry: %v", err)
	}
	posts := rd.postBodies()
	if len(posts) != 2 {
		t.Fatalf("%d POSTs, want 2", len(posts))
	}
	var first, second struct {
		PublicKey string `json:"public_key"`
		KeyProof  string `json:"key_proof"`
	}
	json.Unmarshal(posts[0], &first)
	json.Unmarshal(posts[1], &second)
	if first.PublicKey == "" || first.PublicKey != second.PublicKey {
		t.Fatalf("retry sent key %s after %s; want the same key", second.PublicKey, first.PublicKey)
	}
	if a.PublicKey() != second.PublicKey {
		t.Fatalf("client on %s, want the sent key %s", a.PublicKey(), second.PublicKey)
	}
}
