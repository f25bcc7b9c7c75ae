package httpapi

import (
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/ratelimit"
)

// Past the burst, creds handed out at the same moment are scheduled one
// rate interval apart; a delay is never longer than maxReconnectAfter, and
// the slots given up that way are not used up.
func TestReconnectPacer(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	p := newReconnectPacer(ratelimit.MustParseRate("2/s:2"), false)
	var got []time.Duration
	for range 5 {
		got = append(got, p.delay(t0))
	}
	want := []time.Duration{0, 0, 500 * time.Millisecond, time.Second, 1500 * time.Millisecond}
	for i := range want {
		if d := got[i] - want[i]; d < -time.Millisecond || d > time.Millisecond {
			t.Fatalf("delays %v; want %v", got, want)
		}
	}
	// Two seconds later the schedule has caught up: 1.5 s of slots are
	// taken, and the bucket has refilled by one.
	if d := p.delay(t0.Add(2 * time.Second)); d != 0 {
		t.Fatalf("delay after the schedule caught up = %s; want 0", d)
	}

	slow := newReconnectPacer(ratelimit.MustParseRate("1/s:1"), false)
	for i := range 40 {
		d := slow.delay(t0)
		if d > maxReconnectAfter {
			t.Fatalf("delay %d = %s, over %s", i, d, maxReconnectAfter)
		}
		if i >= 31 && d != maxReconnectAfter {
			t.Fatalf("delay %d = %s; want the cap %s", i, d, maxReconnectAfter)
		}
	}
	// The capped ones gave their slots back: 31 s later, one is free.
	if d := slow.delay(t0.Add(31 * time.Second)); d != 0 {
		t.Fatalf("delay 31 s later = %s; want 0", d)
	}

	if d := newReconnectPacer(ratelimit.Rate{}, true).delay(t0); d != 0 {
		t.Fatalf("off: delay %s", d)
	}
	if p := newReconnectPacer(ratelimit.Rate{}, false); p.lim == nil || float64(p.lim.Limit()) != DefaultAgentReconnectRate.PerSecond {
		t.Fatalf("zero rate: want the default %v", DefaultAgentReconnectRate)
	}
}
