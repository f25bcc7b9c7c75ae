package ratelimit_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/ratelimit"
)

func TestParseRate(t *testing.T) {
	for _, c := range []struct {
		in        string
		perSecond float64
		burst     int
		err       string
	}{
		{in: "10/s:20", perSecond: 10, burst: 20},
		{in: "5/s", perSecond: 5, burst: 10},
		{in: "300/m", perSecond: 5, burst: 10},
		{in: "30/m", perSecond: 0.5, burst: 1},
		{in: "1/h", perSecond: 1.0 / 3600, burst: 1},
		{in: "0.5/s:3", perSecond: 0.5, burst: 3},
		{in: " 10/s:20 ", perSecond: 10, burst: 20},
		{in: "", err: "no /UNIT"},
		{in: "10", err: "no /UNIT"},
		{in: "10/d", err: "UNIT must be"},
		{in: "0/s", err: "positive"},
		{in: "-1/s", err: "positive"},
		{in: "NaN/s", err: "positive"},
		{in: "x/s", err: "positive"},
		{in: "10/s:0", err: "BURST"},
		{in: "10/s:x", err: "BURST"},
		{in: "10/s:", err: "BURST"},
	} {
		r, err := ratelimit.ParseRate(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), fmt.Sprintf("%q", c.in)) {
				t.Errorf("ParseRate(%q) = %v, %v; want an error naming the value with %q", c.in, r, err, c.err)
			}
			continue
		}
		if err != nil || r.PerSecond != c.perSecond || r.Burst != c.burst {
			t.Errorf("ParseRate(%q) = %v/s burst %d, %v; want %v/s burst %d", c.in, r.PerSecond, r.Burst, err, c.perSecond, c.burst)
		}
		if r.String() != strings.TrimSpace(c.in) {
			t.Errorf("ParseRate(%q).String() = %q", c.in, r.String())
		}
	}
}

func TestLimiterBurstRefillAndRetryAfter(t *testing.T) {
	l := ratelimit.New(ratelimit.MustParseRate("2/s:3"), 10)
	now := time.Unix(1_700_000_000, 0)
	for i := range 3 {
		if ok, _ := l.Allow("a", now); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := l.Allow("a", now)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("past the burst: ok %v, retry after %s; want refused, 500ms", ok, wait)
	}
	// Check peeks without taking.
	if ok, wait := l.Check("a", now); ok || wait != 500*time.Millisecond {
		t.Fatalf("check past the burst = %v %s", ok, wait)
	}
	// Other keys are not affected.
	if ok, _ := l.Allow("b", now); !ok {
		t.Fatal("another key was refused")
	}
	if ok, _ := l.Check("never-seen", now); !ok {
		t.Fatal("check of an unknown key refused")
	}
	now = now.Add(500 * time.Millisecond)
	if ok, _ := l.Check("a", now); !ok {
		t.Fatal("no token after the wait")
	}
	if ok, _ := l.Allow("a", now); !ok {
		t.Fatal("refused after the wait")
	}
	if ok, _ := l.Allow("a", now); ok {
		t.Fatal("a second request after one token came back was allowed")
	}
}

func TestLimiterMemoryIsBounded(t *testing.T) {
	l := ratelimit.New(ratelimit.MustParseRate("1/s:2"), 100)
	now := time.Unix(1_700_000_000, 0)
	for i := range 10_000 {
		l.Allow(fmt.Sprint("key-", i), now)
	}
	if n := l.Len(); n != 100 {
		t.Fatalf("%d buckets kept, want the bound 100", n)
	}
	// A bucket that is full again is forgotten: nothing is lost by that.
	l.Allow("x", now)
	l.Allow("x", now)
	if ok, _ := l.Allow("x", now); ok {
		t.Fatal("burst of 2 allowed a third")
	}
	now = now.Add(2 * time.Second)
	l.Allow("y", now)
	if n := l.Len(); n != 1 {
		t.Fatalf("%d buckets after every one refilled, want 1 (the new one)", n)
	}
	if ok, _ := l.Allow("x", now); !ok {
		t.Fatal("a refilled key was refused")
	}
}

func TestRateFlagValue(t *testing.T) {
	var r ratelimit.Rate
	if err := r.Set("300/m"); err != nil || r.Burst != 10 || r.String() != "300/m" {
		t.Fatalf("Set(300/m) = %v, %v", r, err)
	}
	if err := r.Set("fast"); err == nil {
		t.Fatal("Set(fast) took it")
	}
	if got := ratelimit.NewRate(10, time.Second, 20).String(); got != "10/s:20" {
		t.Fatalf("NewRate.String() = %q", got)
	}
}
