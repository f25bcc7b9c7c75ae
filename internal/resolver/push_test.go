package resolver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rotatord/rotatord"
)

// A server that answers a push after the push gave up waiting (busy
// re-checking the users of a big account): the push reports no ack, and
// the reply reaches the late handler with what the server said.
func TestPushLateReply(t *testing.T) {
	ns := plainServer(t)
	// The fake servers: S1 answers at once, S2 after 300 ms, S3 after 5 s
	// (past the late window).
	fake := connectTo(t, ns)
	answer := func(id string, after time.Duration) {
		if _, err := fake.Subscribe("$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE", func(m *nats.Msg) {
			go func() {
				time.Sleep(after)
				m.Respond([]byte(`{"server":{"id":"` + id + `","name":"` + id + `"},"data":{"message":"jwt updated"}}`))
			}()
		}); err != nil {
			t.Fatal(err)
		}
	}
	answer("S1", 0)
	answer("S2", 300*time.Millisecond)
	answer("S3", 5*time.Second)
	if err := fake.Flush(); err != nil {
		t.Fatal(err)
	}
	nc := connectTo(t, ns)

	p := NewPusher(func() *nats.Conn { return nc }, 150*time.Millisecond, 5*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	var (
		mu   sync.Mutex
		late []ServerReply
		jwts []string
	)
	p.OnLateReply(func(accountPub, accountJWT string, r ServerReply) {
		mu.Lock()
		defer mu.Unlock()
		if accountPub != "AACC" {
			t.Errorf("late reply for %s", accountPub)
		}
		late, jwts = append(late, r), append(jwts, accountJWT)
	})
	res, err := p.Push(context.Background(), "AACC", "the.jwt.v2", []string{"S1", "S2", "S3"})
	if err != nil || res.Updated != 1 || len(res.Replies) != 1 || res.Replies[0].Server.ID != "S1" {
		t.Fatalf("push: %+v, %v; want S1's answer only", res, err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		mu.Lock()
		n := len(late)
		mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the late window (3 × 150 ms) is over: S3 is too late
	mu.Lock()
	defer mu.Unlock()
	if len(late) != 1 || late[0].Server.ID != "S2" || late[0].Status != rotatord.ServerUpdated || jwts[0] != "the.jwt.v2" {
		t.Fatalf("late replies %+v (jwts %v); want S2's update only", late, jwts)
	}
	if n := testutil.ToFloat64(p.pushes.WithLabelValues("late_ack")); n != 1 {
		t.Fatalf("late_ack pushes counted %v, want 1", n)
	}
}

// The late window ends: a push no server answers listens for its window,
// then unsubscribes.
func TestPushLateWindowEnds(t *testing.T) {
	ns := plainServer(t)
	nc := connectTo(t, ns)
	p := NewPusher(func() *nats.Conn { return nc }, 100*time.Millisecond, 5*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	called := make(chan ServerReply, 1)
	p.OnLateReply(func(_, _ string, r ServerReply) { called <- r })
	// No server at all: no ack, and nothing comes later either.
	if _, err := p.Push(context.Background(), "AACC", "the.jwt", nil); !errors.Is(err, ErrNoAck) {
		t.Fatalf("push to no server: %v, want ErrNoAck", err)
	}
	select {
	case r := <-called:
		t.Fatalf("late reply %+v from no server", r)
	case <-time.After(400 * time.Millisecond):
	}
	if n := nc.NumSubscriptions(); n != 0 {
		t.Fatalf("%d subscriptions left after the late window", n)
	}
}

// plainServer is a nats-server without accounts: the tests play its
// servers' part on $SYS subjects themselves.
func plainServer(t *testing.T) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return ns
}

func connectTo(t *testing.T, ns *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
