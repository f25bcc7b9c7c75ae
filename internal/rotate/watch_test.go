package rotate

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
	"github.com/rotatord/rotatord/internal/natsrun"
)

// watchFleet is a real nats-server in operator mode with a system account
// and one application account whose users are signed by the account's
// signing key, as rotatord issues them.
type watchFleet struct {
	url            string
	accPub         string
	signer, sysKey nkeys.KeyPair
	sysPub         string
}

func newWatchFleet(t *testing.T) *watchFleet {
	t.Helper()
	key := func(kind nkeys.PrefixByte) nkeys.KeyPair {
		kp, err := jwtissue.NewKey(kind)
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	op, opSigner := key(nkeys.PrefixByteOperator), key(nkeys.PrefixByteOperator)
	sys, acc, signer := key(nkeys.PrefixByteAccount), key(nkeys.PrefixByteAccount), key(nkeys.PrefixByteAccount)
	f := &watchFleet{accPub: jwtissue.Public(acc), signer: signer, sysKey: sys, sysPub: jwtissue.Public(sys)}
	opJWT, err := jwtissue.EncodeOperator(op, jwtissue.OperatorSpec{Name: "op", SigningKeys: []string{jwtissue.Public(opSigner)}, SystemAccount: f.sysPub})
	if err != nil {
		t.Fatal(err)
	}
	accounts := map[string]string{}
	for name, a := range map[string]nkeys.KeyPair{"SYS": sys, "app": acc} {
		spec := jwtissue.AccountSpec{Name: name, PublicKey: jwtissue.Public(a), Limits: rotatord.NoLimits}
		if a == acc {
			spec.SigningKeys = []string{jwtissue.Public(signer)}
		}
		token, _, err := jwtissue.EncodeAccount(opSigner, spec)
		if err != nil {
			t.Fatal(err)
		}
		accounts[jwtissue.Public(a)] = token
	}
	const base = "/jwt/v1/accounts/"
	res := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k, _ := strings.CutPrefix(r.URL.Path, base)
		if k == "" {
			return
		}
		token, ok := accounts[k]
		if !ok {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, token)
	}))
	t.Cleanup(res.Close)
	ns, err := natsrun.Start(natsrun.Options{OperatorJWT: opJWT, SystemAccount: f.sysPub, ResolverURL: res.URL + base})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	f.url = ns.ClientURL()
	return f
}

// user issues a JWT for kp as rotatord does and returns it with its ID.
func (f *watchFleet) user(t *testing.T, kp nkeys.KeyPair, name string) (token, id string) {
	t.Helper()
	token, uc, err := jwtissue.EncodeUser(f.signer, jwtissue.UserSpec{Name: name, PublicKey: jwtissue.Public(kp), AccountKey: f.accPub,
		Claims: rotatord.UserTemplate{Permissions: rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"x"}}}.Normalize(),
			Limits: rotatord.NoUserLimits}, Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return token, uc.ID
}

func (f *watchFleet) connect(t *testing.T, token string, kp nkeys.KeyPair) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(f.url, nats.UserJWT(func() (string, error) { return token, nil }, kp.Sign))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// The watcher and the CONNZ checker read, from what a real nats-server
// sends, the user key and the ID of the very JWT each client connected
// with (no longer decoding and verifying it): a second JWT for the same
// key is told apart from the first, which is what keeps a rotation from
// being confirmed by a connection with some other JWT of the new key.
func TestConnectEventsAndConnzFromServer(t *testing.T) {
	t.Parallel()
	f := newWatchFleet(t)
	sysUser, err := jwtissue.NewKey(nkeys.PrefixByteUser)
	if err != nil {
		t.Fatal(err)
	}
	all := rotatord.PermissionList{Allow: []string{">"}}
	sysJWT, _, err := jwtissue.EncodeUser(f.sysKey, jwtissue.UserSpec{Name: "rotatord", PublicKey: jwtissue.Public(sysUser), AccountKey: f.sysPub,
		Claims: rotatord.UserTemplate{Permissions: rotatord.Permissions{Pub: all, Sub: all}, Limits: rotatord.NoUserLimits}, Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	sys := f.connect(t, sysJWT, sysUser)
	events := make(chan *nats.Msg, 16)
	if _, err := sys.ChanSubscribe("$SYS.ACCOUNT."+f.accPub+".CONNECT", events); err != nil {
		t.Fatal(err)
	}
	if err := sys.Flush(); err != nil {
		t.Fatal(err)
	}
	kp, err := jwtissue.NewKey(nkeys.PrefixByteUser)
	if err != nil {
		t.Fatal(err)
	}
	pub := jwtissue.Public(kp)
	checker := NATSChecker{Conn: func() *nats.Conn { return sys }, Timeout: 10 * time.Second}
	// Another agent stays connected throughout; a third key never connects.
	otherKP, err := jwtissue.NewKey(nkeys.PrefixByteUser)
	if err != nil {
		t.Fatal(err)
	}
	other := jwtissue.Public(otherKP)
	otherJWT, otherID := f.user(t, otherKP, "agent-b")
	f.connect(t, otherJWT, otherKP)
	select {
	case <-events:
	case <-time.After(20 * time.Second):
		t.Fatal("no connect event for agent-b")
	}
	anotherKP, err := jwtissue.NewKey(nkeys.PrefixByteUser)
	if err != nil {
		t.Fatal(err)
	}
	another := jwtissue.Public(anotherKP)
	if conns, err := checker.Connected(context.Background(), f.accPub, []string{another}); err != nil || len(conns) != 0 {
		t.Fatalf("connz for a key that never connected: %v, %v; want none, no error", conns, err)
	}
	var ids []string
	for i, name := range []string{"agent-a", "agent-a-reissued"} {
		token, id := f.user(t, kp, name)
		ids = append(ids, id)
		nc := f.connect(t, token, kp)
		select {
		case m := <-events:
			user, got, ok := parseConnectEvent(m.Data)
			if !ok || user != pub || got != id {
				t.Fatalf("JWT %d: connect event gives %q, %q, %v; want %q, %q", i, user, got, ok, pub, id)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("JWT %d: no connect event", i)
		}
		conns, err := checker.Connected(context.Background(), f.accPub, []string{pub, other, another})
		if err != nil {
			t.Fatal(err)
		}
		if len(conns) != 2 || conns[pub] != id || conns[other] != otherID {
			t.Fatalf("JWT %d: connz gives %v, want %s: %s", i, conns, pub, id)
		}
		nc.Close()
		// The next connection must be the only one CONNZ lists.
		deadline := time.Now().Add(20 * time.Second)
		for {
			conns, err := checker.Connected(context.Background(), f.accPub, []string{pub, another})
			if err == nil && len(conns) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("connz still lists %v after close (%v)", conns, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if ids[0] == ids[1] {
		t.Fatal("test fixture: both JWTs have the same ID")
	}
}

// What an event or reply does not give is not made up: no user, no event;
// a JWT that is not one gives no ID (the key alone then decides, as it did
// when verification failed).
func TestParseConnectEvent(t *testing.T) {
	t.Parallel()
	signer, _ := jwtissue.NewKey(nkeys.PrefixByteAccount)
	acc, _ := jwtissue.NewKey(nkeys.PrefixByteAccount)
	pub, token, id := eventUser(t, signer, jwtissue.Public(acc))
	for name, c := range map[string]struct {
		data     []byte
		user, id string
		ok       bool
	}{
		"event":       {connectEventJSON(t, pub, jwtissue.Public(acc), token), pub, id, true},
		"no jwt":      {connectEventJSON(t, pub, jwtissue.Public(acc), ""), pub, "", true},
		"garbled jwt": {connectEventJSON(t, pub, jwtissue.Public(acc), "not.a.jwt!"), pub, "", true},
		"no user":     {connectEventJSON(t, "", jwtissue.Public(acc), token), "", "", false},
		"not json":    {[]byte("{"), "", "", false},
	} {
		user, got, ok := parseConnectEvent(c.data)
		if user != c.user || got != c.id || ok != c.ok {
			t.Errorf("%s: parseConnectEvent = %q, %q, %v; want %q, %q, %v", name, user, got, ok, c.user, c.id, c.ok)
		}
	}
	reply := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	out := map[string]string{}
	n, ok := parseConnz(reply(map[string]any{"data": map[string]any{"connections": []map[string]string{
		{"authorized_user": pub, "jwt": token}, {"authorized_user": "UOTHER", "jwt": "garbage"}}}}), out)
	if !ok || n != 2 || out[pub] != id || out["UOTHER"] != "" || len(out) != 2 {
		t.Errorf("parseConnz = %d, %v, %v", n, ok, out)
	}
	for _, bad := range [][]byte{[]byte(`{"error":{"code":500}}`), []byte("{")} {
		if n, ok := parseConnz(bad, map[string]string{}); ok || n != 0 {
			t.Errorf("parseConnz(%s) = %d, %v; want no data", bad, n, ok)
		}
	}
}
