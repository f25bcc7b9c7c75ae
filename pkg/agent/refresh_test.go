package agent_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord/pkg/agent"
)

// setSigningKeys gives the fleet's account exactly these signing keys,
// serves the JWT from the resolver and pushes it to the server, as rotatord
// does; a removed key's users are dropped.
func (f *fleet) setSigningKeys(t *testing.T, push bool, keys ...nkeys.KeyPair) {
	t.Helper()
	ac := jwt.NewAccountClaims(f.accPub)
	for _, k := range keys {
		ac.SigningKeys.Add(must(k.PublicKey()))
	}
	token := must(ac.Encode(f.op))
	f.mu.Lock()
	f.accounts[f.accPub] = token
	f.mu.Unlock()
	if !push {
		return
	}
	sys := must(nkeys.CreateUser())
	nc := must(natsConnectJWT(f.url, f.userJWT(t, must(sys.PublicKey()), f.sys), sys))
	defer nc.Close()
	msg, err := nc.Request("$SYS.REQ.ACCOUNT."+f.accPub+".CLAIMS.UPDATE", []byte(token), 5*time.Second)
	if err != nil || !strings.Contains(string(msg.Data), "jwt updated") {
		t.Fatalf("push account jwt: %v %v", msg, err)
	}
}

// signedUser returns a creds file for a new user key, its JWT signed by one
// of the account's signing keys.
func (f *fleet) signedUser(t *testing.T, sk nkeys.KeyPair) ([]byte, string) {
	t.Helper()
	kp := must(nkeys.CreateUser())
	pub := must(kp.PublicKey())
	uc := jwt.NewUserClaims(pub)
	uc.Name = "agent-kate"
	uc.IssuerAccount = f.accPub
	uc.Expires = time.Now().Add(time.Hour).Unix()
	return userCreds(t, kp, must(uc.Encode(sk))), pub
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 20s waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// When its signing key is removed, the servers drop the agent; Run does not
// wait for its interval (an hour here) to look for new creds, and keeps
// looking quickly while rotatord has none yet.
func TestRunRefreshesAtOnceWhenRefused(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	sk1, sk2 := must(nkeys.CreateAccount()), must(nkeys.CreateAccount())
	f.setSigningKeys(t, false, sk1)
	credsA, pubA := f.signedUser(t, sk1)
	credsB, pubB := f.signedUser(t, sk2)
	rd := newFakeRotatord(t, f, "agent-kate", pubA)
	a, w := newClient(t, rd, credsA)
	connect(t, a, f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx, time.Hour) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "the first refresh", func() bool { return a.Status().State == agent.StateConnected })

	// The emergency: the new key is trusted, the old one removed at once;
	// rotatord has no new creds for the agent yet.
	f.setSigningKeys(t, true, sk2)
	waitFor(t, "the servers to refuse the old key", func() bool { return a.Status().State == agent.StateRejected })
	time.Sleep(300 * time.Millisecond) // Run looked at once and found nothing
	rd.setOffer(credsB, pubB)
	waitFor(t, "the agent back on the new key", func() bool {
		st := a.Status()
		return st.State == agent.StateConnected && st.PublicKey == pubB
	})
	if _, rotated := w.seen(); len(rotated) != 1 || rotated[0] != pubB {
		t.Fatalf("OnRotate got %v, want [%s]", rotated, pubB)
	}
}

// The watchers look at once too: a Vault or file agent's new delivery is
// picked up without waiting for the interval.
func TestWatchFileLooksAtOnceWhenRefused(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	sk1, sk2 := must(nkeys.CreateAccount()), must(nkeys.CreateAccount())
	f.setSigningKeys(t, false, sk1)
	credsA, _ := f.signedUser(t, sk1)
	credsB, pubB := f.signedUser(t, sk2)
	path := t.TempDir() + "/agent.creds"
	writeFile(t, path, credsA)
	a, _ := newClient(t, nil, credsA)
	connect(t, a, f)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.WatchFile(ctx, path, time.Hour) }()
	defer func() { cancel(); <-done }()
	time.Sleep(100 * time.Millisecond) // the first read
	writeFile(t, path, credsB)         // delivered, but the interval is an hour
	f.setSigningKeys(t, true, sk2)
	waitFor(t, "the agent on the delivered creds", func() bool {
		st := a.Status()
		return st.State == agent.StateConnected && st.PublicKey == pubB
	})
}

func natsConnectJWT(url, token string, kp nkeys.KeyPair) (*nats.Conn, error) {
	return nats.Connect(url, nats.UserJWTAndSeed(token, string(must(kp.Seed()))))
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// authFailures counts the servers' reports of refused connects.
func (f *fleet) authFailures(t *testing.T) *atomic.Int64 {
	t.Helper()
	sys := must(nkeys.CreateUser())
	nc := must(natsConnectJWT(f.url, f.userJWT(t, must(sys.PublicKey()), f.sys), sys))
	t.Cleanup(nc.Close)
	var n atomic.Int64
	if _, err := nc.Subscribe("$SYS.SERVER.*.CLIENT.AUTH.ERR", func(*nats.Msg) { n.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &n
}

// running is an agent connected on creds signed by the fleet's signing key
// sk1 (sk2 is not trusted yet), running Run with an interval of an hour
// until the test ends, and the servers' refusals counted from then on.
type running struct {
	f        *fleet
	sk1, sk2 nkeys.KeyPair
	pubA     string
	rd       *fakeRotatord
	a        *agent.Client
	refused  *atomic.Int64
}

// startRunning starts one; setup, when not nil, tunes the fake rotatord
// before the agent's first look.
func startRunning(t *testing.T, setup func(*fakeRotatord)) *running {
	t.Helper()
	r := &running{f: newFleet(t), sk1: must(nkeys.CreateAccount()), sk2: must(nkeys.CreateAccount())}
	r.f.setSigningKeys(t, false, r.sk1)
	var credsA []byte
	credsA, r.pubA = r.f.signedUser(t, r.sk1)
	r.rd = newFakeRotatord(t, r.f, "agent-kate", r.pubA)
	if setup != nil {
		setup(r.rd)
	}
	r.a, _ = newClient(t, r.rd, credsA)
	connect(t, r.a, r.f)
	r.refused = r.f.authFailures(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.a.Run(ctx, time.Hour) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// While every key it holds is refused, an agent on Run tries the servers
// after each look for new creds, not in between: when rotatord is slow to
// answer (a whole fleet asks at once), retrying the refused key only costs
// the servers handshakes and rotatord auth failures. A refusal that was
// temporary is still found out: after a look that found nothing, the
// client tries again.
func TestRunTriesTheServersAfterEachLook(t *testing.T) {
	t.Parallel()
	r := startRunning(t, nil)
	f, sk1, sk2, rd, a, refused, pubA := r.f, r.sk1, r.sk2, r.rd, r.a, r.refused, r.pubA
	waitFor(t, "the first refresh", func() bool { return a.Status().State == agent.StateConnected })

	rd.mu.Lock()
	rd.getDelay = 1500 * time.Millisecond
	rd.gets = 0
	rd.mu.Unlock()
	f.setSigningKeys(t, true, sk2) // the agent's key is no longer trusted
	waitFor(t, "the servers to refuse the old key", func() bool { return a.Status().State == agent.StateRejected })
	time.Sleep(4 * time.Second)
	rd.mu.Lock()
	looks := rd.gets
	rd.mu.Unlock()
	// One refusal after the drop, then at most one per look (the last
	// look may be under way). The reconnect backoff alone would have
	// tried about five times in these 4 s.
	if n := refused.Load(); n < 1 || n > int64(looks)+1 {
		t.Fatalf("%d refused connects with %d looks in 4s; want 1 to %d", n, looks, looks+1)
	}
	if looks < 2 {
		t.Fatalf("%d looks in 4s while refused; want at least 2", looks)
	}

	// The refusal turns out temporary: the key is trusted again and
	// rotatord has nothing new. The next look's probe gets the agent in.
	f.setSigningKeys(t, true, sk1, sk2)
	waitFor(t, "the agent back on its key", func() bool {
		st := a.Status()
		return st.State == agent.StateConnected && st.PublicKey == pubA
	})
}

// rotatord paces a fleet's return: creds it answers with
// Rotatord-Reconnect-After are used that long after, both by an agent the
// servers refuse (it does not try the refused key meanwhile) and by a
// connected one (its connection moves over then).
func TestAgentReconnectsWhenRotatordSays(t *testing.T) {
	t.Parallel()
	r := startRunning(t, func(rd *fakeRotatord) { rd.reconnectAfter = "1.500" })
	f, sk2, rd, a, refused := r.f, r.sk2, r.rd, r.a, r.refused
	waitFor(t, "the first look", func() bool {
		rd.mu.Lock()
		defer rd.mu.Unlock()
		return rd.gets == 1
	})

	// Dropped: the agent looks before reconnecting, gets creds to use in
	// 1.5 s, and waits.
	credsB, pubB := f.signedUser(t, sk2)
	rd.setOffer(credsB, pubB)
	f.setSigningKeys(t, true, sk2)
	waitFor(t, "the agent on its new key", func() bool {
		st := a.Status()
		return st.State == agent.StateConnected && st.PublicKey == pubB
	})
	rd.mu.Lock()
	waited := time.Since(rd.offeredAt)
	rd.mu.Unlock()
	if waited < 1400*time.Millisecond {
		t.Fatalf("reconnected %s after the creds came; rotatord said 1.5 s", waited)
	}
	if n := refused.Load(); n != 0 {
		t.Fatalf("%d refused connects; want none: the agent looks before it reconnects after a drop", n)
	}

	// Connected: a poll finds new creds; the connection moves after 1.5 s.
	credsC, pubC := f.signedUser(t, sk2)
	rd.setOffer(credsC, pubC)
	if _, err := a.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if k := f.connectedKeys(t); !slices.Contains(k, pubB) || slices.Contains(k, pubC) {
		t.Fatalf("connected keys half a second after the creds came: %v; want still %s", k, pubB)
	}
	waitFor(t, "the agent on the next key", func() bool {
		st := a.Status()
		return st.State == agent.StateConnected && st.PublicKey == pubC
	})
}

// kick makes the server drop the connections of user pub, as a server
// restart or a network blip would: no key changed.
func (f *fleet) kick(t *testing.T, pub string) {
	t.Helper()
	cz, err := f.ns.Connz(&server.ConnzOptions{Username: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cz.Conns {
		if c.AuthorizedUser == pub {
			if err := f.ns.DisconnectClientByID(c.Cid); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("%s is not connected", pub)
}

// After the servers drop an agent on Run, it looks for new creds before it
// reconnects: when rotatord re-issued it (an emergency re-key removed the
// signing key of its JWT, which is why the servers dropped it), the servers
// never see the dropped key again. When the look finds nothing new (a
// server kicked it) or rotatord does not answer, it reconnects with the key
// it holds as soon as the look is over.
func TestAgentLooksBeforeReconnectingAfterADrop(t *testing.T) {
	t.Parallel()
	r := startRunning(t, nil)
	f, sk2, rd, a, refused := r.f, r.sk2, r.rd, r.a, r.refused
	looks := func() int {
		rd.mu.Lock()
		defer rd.mu.Unlock()
		return rd.gets
	}
	waitFor(t, "the first look", func() bool { return looks() == 1 })
	onKey := func(what, pub string) {
		t.Helper()
		waitFor(t, what, func() bool {
			st := a.Status()
			return st.State == agent.StateConnected && st.PublicKey == pub && slices.Contains(f.connectedKeys(t), pub)
		})
	}

	credsB, pubB := f.signedUser(t, sk2)
	rd.setOffer(credsB, pubB)
	f.setSigningKeys(t, true, sk2) // drops the agent: its JWT's signer is gone
	onKey("the agent on its new key", pubB)
	if n := refused.Load(); n != 0 {
		t.Fatalf("%d refused connects after the drop; want none: the agent looks before it reconnects", n)
	}
	if n := looks(); n != 2 {
		t.Fatalf("%d looks; want 2 (the first, the one after the drop)", n)
	}

	// Nothing new: one look, then back on the same key.
	f.kick(t, pubB)
	waitFor(t, "the look after the kick", func() bool { return looks() == 3 })
	onKey("the agent back on its key after the kick", pubB)

	// rotatord down: the look fails, the agent reconnects all the same
	// (well within waitFor's 20 s: the wait for a look is bounded by 65 s).
	rd.srv.Close()
	f.kick(t, pubB)
	onKey("the agent back on its key with rotatord down", pubB)
	if n := refused.Load(); n != 0 {
		t.Fatalf("%d refused connects; want none", n)
	}
}
