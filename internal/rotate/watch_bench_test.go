package rotate

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// eventUser is a user JWT as rotatord issues it, and its key.
func eventUser(tb testing.TB, signer nkeys.KeyPair, account string) (pub, token, id string) {
	tb.Helper()
	kp, err := jwtissue.NewKey(nkeys.PrefixByteUser)
	if err != nil {
		tb.Fatal(err)
	}
	perms := rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"orders.>"}}}.Normalize()
	token, uc, err := jwtissue.EncodeUser(signer, jwtissue.UserSpec{Name: "agent-00042", PublicKey: jwtissue.Public(kp),
		AccountKey: account, Claims: rotatord.UserTemplate{Permissions: perms, Limits: rotatord.NoUserLimits},
		Expires: time.Now().Add(25 * time.Hour)})
	if err != nil {
		tb.Fatal(err)
	}
	return jwtissue.Public(kp), token, uc.ID
}

// connectEventJSON is a $SYS.ACCOUNT.<acc>.CONNECT event as nats-server
// sends it, for a user JWT.
func connectEventJSON(tb testing.TB, user, account, token string) []byte {
	tb.Helper()
	now := time.Now()
	ev := server.ConnectEventMsg{
		TypedEvent: server.TypedEvent{Type: server.ConnectEventMsgType, ID: "kP0YkpoDUQcn8xW8yWJw3C", Time: now},
		Server:     server.ServerInfo{Name: "nats-1", Host: "0.0.0.0", ID: "NDQ2LUKPXT6ZWN6XDJ6PYL5EHXYS6K4OT5S3B5YS6GUNJKKV3EZL2SAI", Version: "2.15.2", Seq: 42, Time: now},
		Client: server.ClientInfo{Start: &now, Host: "127.0.0.1", ID: 4242, Account: account, User: user, Name: "agent-00042",
			Lang: "go", Version: "1.55.0", RTT: 250 * time.Microsecond, Server: "nats-1", Jwt: token, IssuerKey: account, Kind: "Client", ClientType: "nats"},
	}
	b, err := json.Marshal(ev)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// BenchmarkConnectEvent is the watcher's work for each connect event: find
// the user key and the ID of the JWT it connected with.
//
//	go test -run '^$' -bench 'ConnectEvent|ConnzReply' -benchmem ./internal/rotate
func BenchmarkConnectEvent(b *testing.B) {
	signer, _ := jwtissue.NewKey(nkeys.PrefixByteAccount)
	acc, _ := jwtissue.NewKey(nkeys.PrefixByteAccount)
	pub, token, id := eventUser(b, signer, jwtissue.Public(acc))
	data := connectEventJSON(b, pub, jwtissue.Public(acc), token)
	for b.Loop() {
		if user, got, ok := parseConnectEvent(data); !ok || user != pub || got != id {
			b.Fatalf("parseConnectEvent = %q, %q, %v", user, got, ok)
		}
	}
}

// BenchmarkConnzReply is the work for one server's CONNZ reply: a page of
// 256 connections, each with its JWT.
func BenchmarkConnzReply(b *testing.B) {
	signer, _ := jwtissue.NewKey(nkeys.PrefixByteAccount)
	acc, _ := jwtissue.NewKey(nkeys.PrefixByteAccount)
	conns := make([]*server.ConnInfo, 256)
	for i := range conns {
		pub, token, _ := eventUser(b, signer, jwtissue.Public(acc))
		conns[i] = &server.ConnInfo{Cid: uint64(i), Kind: "Client", Type: "nats", IP: "127.0.0.1", Port: 40000 + i,
			Start: time.Now(), LastActivity: time.Now(), Name: "agent", Lang: "go", Version: "1.55.0",
			AuthorizedUser: pub, Account: jwtissue.Public(acc), JWT: token, IssuerKey: jwtissue.Public(acc)}
	}
	data, err := json.Marshal(server.ServerAPIResponse{Server: &server.ServerInfo{Name: "nats-1"},
		Data: &server.Connz{ID: "N1", Now: time.Now(), NumConns: len(conns), Total: len(conns), Limit: 256, Conns: conns}})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		out := make(map[string]string, len(conns))
		if n, ok := parseConnz(data, out); !ok || n != len(conns) || len(out) != len(conns) {
			b.Fatalf("parseConnz = %d, %v (%d keys)", n, ok, len(out))
		}
	}
}
