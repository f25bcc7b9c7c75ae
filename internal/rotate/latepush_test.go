package rotate_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/resolver"
	"github.com/rotatord/rotatord/internal/rotate"
)

// latePusher answers no push in time, as a server busy re-checking the
// users of a big account would not; the test delivers its late replies.
type latePusher struct {
	mu     sync.Mutex
	late   func(accountPub, accountJWT string, r resolver.ServerReply)
	pushes int
	last   string // the JWT of the latest push
}

func (p *latePusher) Push(_ context.Context, _, token string, _ []string) (resolver.PushResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pushes++
	p.last = token
	return resolver.PushResult{}, resolver.ErrNoAck
}

func (p *latePusher) OnLateReply(f func(accountPub, accountJWT string, r resolver.ServerReply)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.late = f
}

func (p *latePusher) state() (int, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pushes, p.last
}

// A server's reply that comes after the push gave up counts as the push's:
// the account is pushed, and the owed-push retry sends nothing again. A
// late reply to a JWT that was replaced since settles nothing.
func TestLatePushReplyIsRecorded(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	p := &latePusher{}
	svc, _ := newServiceWith(t, clk, rotate.Config{NoJitter: true, Pusher: p})
	ctx := context.Background()
	if p.late == nil {
		t.Fatal("the service did not ask the pusher for late replies")
	}
	acc, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		if _, _, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: name, Account: "fleet"}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := svc.RevokeAgent(ctx, "test", "a", "compromised")
	if err != nil || res.Pushed {
		t.Fatalf("revoke: %+v, %v; want not pushed (no server answered in time)", res, err)
	}
	n, aJWT := p.state()
	// A second revocation replaces the JWT before the late reply to the
	// first comes: that reply settles nothing.
	if _, err := svc.RevokeAgent(ctx, "test", "b", "compromised"); err != nil {
		t.Fatal(err)
	}
	server := rotatord.Server{ID: "NSERVER1", Name: "n1"}
	p.late(acc.PublicKey, aJWT, resolver.ServerReply{Server: server, Status: rotatord.ServerUpdated})
	got, err := svc.Account(ctx, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	if got.PushedVersion >= got.JWTVersion {
		t.Fatalf("a late reply to an older JWT settled version %d (stored %d)", got.PushedVersion, got.JWTVersion)
	}

	n, bJWT := p.state()
	p.late(acc.PublicKey, bJWT, resolver.ServerReply{Server: server, Status: rotatord.ServerUpdated})
	got, err = svc.Account(ctx, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	if got.PushedVersion != got.JWTVersion {
		t.Fatalf("after the late reply: pushed version %d, stored %d", got.PushedVersion, got.JWTVersion)
	}
	owed, err := svc.PushOwed(ctx)
	if err != nil || owed != 0 {
		t.Fatalf("owed pushes after the late reply: %d, %v", owed, err)
	}
	if again, _ := p.state(); again != n {
		t.Fatalf("%d more pushes of a JWT a server had acknowledged late", again-n)
	}
}
