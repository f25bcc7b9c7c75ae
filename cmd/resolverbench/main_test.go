package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestThousands(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999.4: "999", 999.6: "1,000", 40123.2: "40,123", 1234567: "1,234,567"} {
		if got := thousands(v); got != want {
			t.Errorf("thousands(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestFlagBounds(t *testing.T) {
	for _, args := range [][]string{
		{"-accounts", "0"}, {"-accounts", "1000000"}, {"-workers", "0"}, {"-rounds", "11"}, {"-d", "0s"}, {"extra"},
	} {
		if _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("parseFlags(%q) accepted it", args)
		}
	}
	cfg, err := parseFlags(nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.accounts != 10_000 || cfg.c != 32 || cfg.d != 10*time.Second || cfg.warmup != 2*time.Second {
		t.Errorf("defaults %+v", cfg)
	}
}

type fakeChild struct{ user, sys time.Duration }

func (c fakeChild) UserTime() time.Duration   { return c.user }
func (c fakeChild) SystemTime() time.Duration { return c.sys }

func TestCPUShare(t *testing.T) {
	start := cpuSample{at: time.Unix(0, 0), busy: 10 * time.Second, idle: 5 * time.Second, self: time.Second, ok: true}
	end := cpuSample{at: time.Unix(10, 0), busy: 28 * time.Second, idle: 7 * time.Second, self: 9 * time.Second, ok: true}
	got := start.share(end, fakeChild{user: 6 * time.Second, sys: 3 * time.Second})
	want := cpuShare{self: 0.8, loadgen: 0.9, other: 0.1, idle: 0.2}
	near := func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
	if !near(got.self, want.self) || !near(got.loadgen, want.loadgen) || !near(got.other, want.other) || !near(got.idle, want.idle) {
		t.Errorf("share = %+v, want %+v", got, want)
	}
	if s := sampleCPU(); !s.ok || s.busy <= 0 {
		t.Errorf("sampleCPU() = %+v: cannot read /proc/stat", s)
	}
}

func TestReport(t *testing.T) {
	b := &bench{cfg: config{accounts: 10_000, c: 32, d: 10 * time.Second, warmup: 2 * time.Second, rounds: 1}}
	b.setup.createTime = time.Second
	bare, rot := &target{name: "bare", short: "bare"}, &target{name: "rotatord", short: "rotatord"}
	out := b.report([]*runResult{
		{target: bare, round: 1, res: loadResult{RPS: 40000, P99: 2, GOMAXPROCS: 2}},
		{target: rot, round: 1, res: loadResult{RPS: 30000, P99: 12}},
	})
	for _, want := range []string{"| bare | 1 | 40,000 |", "rotatord/bare requests/s: **0.75** (target ≥ 0.50: met)", "rotatord p99: **12.00 ms** (target < 10 ms: **missed**)"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
