package sysconn

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord/internal/natsrun"
)

// syncBuffer is a log sink safe for the connection's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(msg string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), msg)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// clock is a test clock that counts how often it is read: each failed
// connect attempt reads it.
type clock struct {
	mu    sync.Mutex
	now   time.Time
	reads int
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *clock) readCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// While NATS cannot be reached, rotatord says so after WarnAfter and again
// every WarnEvery, not at every attempt; when it comes back, it says so.
func TestWarnsWhileNATSIsUnreachable(t *testing.T) {
	port, err := natsrun.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	c, err := Connect(context.Background(), Config{
		URL:  fmt.Sprintf("nats://rotatord:secret@127.0.0.1:%d", port),
		Name: "test", Log: slog.New(slog.NewTextHandler(logs, nil)),
		Mint: func(context.Context) (string, nkeys.KeyPair, error) {
			kp, err := nkeys.CreateUser()
			return "not-checked-by-this-server", kp, err
		},
		WarnAfter: 5 * time.Second, WarnEvery: time.Minute, Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Not at once: at start, nats-server may come up just after rotatord.
	const warning = "cannot reach nats; retrying"
	reads := clk.readCount()
	eventually(t, "failed attempts", func() bool { return clk.readCount() >= reads+3 })
	if n := logs.count(warning); n != 0 {
		t.Fatalf("%d warnings within WarnAfter, want none:\n%s", n, logs)
	}
	clk.advance(5 * time.Second)
	eventually(t, "the first warning", func() bool { return logs.count(warning) == 1 })
	if out := logs.String(); !strings.Contains(out, fmt.Sprintf("127.0.0.1:%d", port)) || strings.Contains(out, "secret") {
		t.Fatalf("warning should name the URL without its password:\n%s", out)
	}
	// More failed attempts within the minute: still one warning.
	reads = clk.readCount()
	eventually(t, "more failed attempts", func() bool { return clk.readCount() >= reads+4 })
	if n := logs.count(warning); n != 1 {
		t.Fatalf("%d warnings within a minute, want 1:\n%s", n, logs)
	}
	clk.advance(61 * time.Second)
	eventually(t, "the warning a minute later", func() bool { return logs.count(warning) == 2 })
	if !strings.Contains(logs.String(), "down_for=1m6s") {
		t.Errorf("the second warning should say how long NATS has been down:\n%s", logs)
	}

	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	eventually(t, "the connection", c.Connected)
	eventually(t, "the all-clear", func() bool { return logs.count("nats reachable again") == 1 })
}
