package httpapi

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rotatord/rotatord"
)

// At most n agent requests are in at once; the next waits its turn, and
// gives up with 503 (retry after a second) after the queue wait or when
// its client goes away.
func TestAgentSlots(t *testing.T) {
	s := newAgentSlots(2, 200*time.Millisecond)
	ctx := context.Background()
	r1, err := s.enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := s.enter(ctx); !errors.Is(err, rotatord.ErrUnavailable) {
		t.Fatalf("third request while two are in = %v, want unavailable", err)
	} else if after, ok := rotatord.RetryAfter(err); !ok || after != time.Second {
		t.Fatalf("retry after %v, %v; want 1s", after, ok)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Fatalf("gave up after %s, want after the queue wait", waited)
	}
	got := make(chan error, 1)
	go func() {
		release, err := s.enter(ctx)
		if err == nil {
			release()
		}
		got <- err
	}()
	r1()
	if err := <-got; err != nil {
		t.Fatalf("a request waiting its turn = %v, want in once one left", err)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	r3, err := s.enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.enter(gone); !errors.Is(err, rotatord.ErrUnavailable) {
		t.Fatalf("a request whose client left = %v, want unavailable", err)
	}
	r2()
	r3()
	if d := newAgentSlots(0, 0); cap(d.slots) != DefaultAgentMaxInFlight || d.wait != DefaultAgentQueueWait {
		t.Fatalf("defaults = %d, %s", cap(d.slots), d.wait)
	}
}
