package refusals_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/refusals"
)

type sink struct {
	mu     sync.Mutex
	events []*rotatord.AuditEvent
	fail   error
}

func (s *sink) AuditBatch(_ context.Context, events []*rotatord.AuditEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.events = append(s.events, events...)
	return nil
}

func TestOneEventPerKeyAndWindow(t *testing.T) {
	s := &sink{}
	now := time.Unix(1_700_000_000, 0)
	c := refusals.New(refusals.Config{Sink: s, Now: func() time.Time { return now }})
	for range 500 {
		c.Add(refusals.Refusal{Source: "10.0.0.1", Agent: "kate", Reason: refusals.ReasonBadSignature})
	}
	for range 20 {
		c.Add(refusals.Refusal{Source: "10.0.0.1", Agent: "kate", Reason: refusals.ReasonReplay, Key: "UKEY"})
	}
	c.Add(refusals.Refusal{Source: "10.0.0.2", Agent: "kate", Reason: refusals.ReasonStale})
	n, err := c.Flush(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("flush = %d, %v; want 2 events (two sources)", n, err)
	}
	ev := s.events[0]
	if ev.Action != refusals.Action || ev.Agent != "kate" || ev.Details["source"] != "10.0.0.1" || ev.Details["count"] != 520 {
		t.Fatalf("event = %+v", ev)
	}
	reasons := ev.Details["reasons"].(map[string]int)
	if reasons[refusals.ReasonBadSignature] != 500 || reasons[refusals.ReasonReplay] != 20 || ev.Details["reason"] != refusals.ReasonBadSignature {
		t.Fatalf("reasons = %v, top %v", reasons, ev.Details["reason"])
	}
	if keys := ev.Details["keys"].([]string); len(keys) != 1 || keys[0] != "UKEY" {
		t.Fatalf("keys = %v", keys)
	}
	// The next window starts empty.
	if n, _ := c.Flush(context.Background()); n != 0 {
		t.Fatalf("second flush wrote %d events, want 0", n)
	}
}

func TestFloodFromOneSourceIsBounded(t *testing.T) {
	s := &sink{}
	c := refusals.New(refusals.Config{Sink: s, MaxAgentsPerSource: 4, MaxKeys: 50})
	long := strings.Repeat("\x00é\xff", 700) // NUL, UTF-8 and invalid bytes, 2 KB
	for i := range 3000 {
		c.Add(refusals.Refusal{Source: "192.0.2.7", Agent: fmt.Sprintf("%d-%s", i, long), Reason: refusals.ReasonInvalidName})
	}
	if n := c.Len(); n != 5 {
		t.Fatalf("%d keys for one source, want 4 apart + 1 for the rest", n)
	}
	// Many sources: bounded by MaxKeys plus one overflow key.
	for i := range 1000 {
		c.Add(refusals.Refusal{Source: fmt.Sprintf("198.51.100.%d", i), Agent: "x", Reason: refusals.ReasonMissingProof})
	}
	if n := c.Len(); n != 51 {
		t.Fatalf("%d keys, want MaxKeys 50 + 1 overflow", n)
	}
	if _, err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, ev := range s.events {
		total += ev.Details["count"].(int)
		raw, _ := json.Marshal(ev)
		if len(raw) > 1200 {
			t.Errorf("event of %d bytes: %s", len(raw), raw)
		}
		if strings.ContainsRune(string(raw), 0) || strings.Contains(string(raw), `\u0000`) {
			t.Errorf("event holds a NUL byte: %s", raw)
		}
		if name, ok := ev.Details["name"].(string); ok && (len(name) > 100 || !strings.Contains(name, "bytes)")) {
			t.Errorf("invalid name kept as %q", name)
		}
		if ev.Agent != "" && rotatord.ValidateName("agent", ev.Agent) != nil {
			t.Errorf("event agent %q is not a valid name", ev.Agent)
		}
	}
	if total != 4000 {
		t.Fatalf("counts add up to %d, want 4000", total)
	}
}

func TestFailedFlushIsRetried(t *testing.T) {
	s := &sink{fail: errors.New("database down")}
	c := refusals.New(refusals.Config{Sink: s})
	c.Add(refusals.Refusal{Source: "a", Agent: "kate", Reason: refusals.ReasonReplay})
	if _, err := c.Flush(context.Background()); err == nil {
		t.Fatal("flush did not report the failure")
	}
	s.fail = nil
	c.Add(refusals.Refusal{Source: "b", Agent: "kate", Reason: refusals.ReasonReplay})
	if n, err := c.Flush(context.Background()); err != nil || n != 2 {
		t.Fatalf("flush after recovery = %d, %v; want both windows' events", n, err)
	}
}

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"kate":                   "kate",
		"a\x00b\nc":              "a?b?c",
		"bad\xffutf":             "bad?utf",
		strings.Repeat("x", 100): strings.Repeat("x", 64) + "...(100 bytes)",
	} {
		if got := refusals.Clean(in); got != want {
			t.Errorf("Clean(%q) = %q, want %q", in, got, want)
		}
	}
	if got := refusals.Clean(strings.Repeat("é", 40)); len(got) > 90 || !strings.HasSuffix(got, "(80 bytes)") {
		t.Errorf("Clean of long UTF-8 = %q", got)
	}
}

func TestMemo(t *testing.T) {
	m := refusals.NewMemo[string](time.Minute, 3)
	now := time.Unix(1_700_000_000, 0)
	m.Put("a", "1", now)
	if v, ok := m.Get("a", now.Add(59*time.Second)); !ok || v != "1" {
		t.Fatalf("Get within the TTL = %q %v", v, ok)
	}
	if _, ok := m.Get("a", now.Add(time.Minute)); ok {
		t.Fatal("Get after the TTL found it")
	}
	for i := range 10 {
		m.Put(fmt.Sprint(i), "", now)
	}
	if m.Len() != 3 {
		t.Fatalf("Len = %d, want the bound 3", m.Len())
	}
	if _, ok := m.Get("9", now); !ok {
		t.Fatal("the newest entry was evicted")
	}
}
