package rotate

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord"
)

func TestSchedule(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		spec     string
		interval time.Duration
	}{
		{"@every 24h", 24 * time.Hour},
		{"@every 90m", 90 * time.Minute},
		{"@daily", 24 * time.Hour},
		{"0 */6 * * *", 6 * time.Hour},
		{"0 9 * * 1-5", 3 * 24 * time.Hour}, // Friday to Monday
	}
	for _, c := range cases {
		sched, err := ParseSchedule(c.spec)
		if err != nil {
			t.Fatalf("ParseSchedule(%q): %v", c.spec, err)
		}
		if got := MaxInterval(sched, now); got != c.interval {
			t.Errorf("MaxInterval(%q) = %s, want %s", c.spec, got, c.interval)
		}
	}
	for _, spec := range []string{"", "sometimes", "@every 30s", "61 * * * *", "* * * * * *"} {
		if _, err := ParseSchedule(spec); !errors.Is(err, rotatord.ErrInvalid) {
			t.Errorf("ParseSchedule(%q) = %v, want ErrInvalid", spec, err)
		}
	}
	life, err := CredentialLifetime(rotatord.RotationPolicy{Schedule: "@every 24h", Grace: 30 * time.Minute}, now)
	if err != nil || life != 24*time.Hour+30*time.Minute+rotatord.ExpiryMargin {
		t.Fatalf("CredentialLifetime = %s, %v", life, err)
	}
}

// CheckSchedule refuses schedules that never run or leave more than 90
// days between two runs anywhere in the coming years, dense ones included,
// and takes the others.
func TestCheckSchedule(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for _, spec := range []string{
		"@every 24h", "@every 2160h", "@daily", "@weekly", "@monthly", "*/5 * * * *", "* * * * *",
		"0 9 * * 1-5", "0 0 1 */2 *", "0 0 1,15 * *", "0 0 31 * *", "0 3 * * 0",
		"* * 1 * *",     // every minute of the 1st: at most a month apart
		"0 0 28-31 * *", // the end of every month
	} {
		if _, err := CheckSchedule(spec, now); err != nil {
			t.Errorf("CheckSchedule(%q) = %v, want it accepted", spec, err)
		}
	}
	for _, c := range []struct{ spec, want string }{
		{"0 0 30 2 *", "never runs"},
		{"0 0 31 4 *", "never runs"},
		{"@every 2161h", "runs every 90 days"},
		{"@yearly", "leaves 365 days without a run"},
		{"0 0 1 1 *", "leaves 365 days without a run"},
		{"0 0 1 1,4,7,10 *", "leaves 91 days without a run"}, // quarterly: three quarters have 91 or 92 days
		{"0 0 29 2 *", "first runs"},                         // leap days only
		{"* * 1 1 *", "leaves 364 days without a run"},       // a minute-by-minute day, then a year
		{"*/10 * * 1-6 *", "without a run, from 2027-06-30"}, // dense half years
		{"0 0 * 1-6 *", "leaves 185 days without a run"},
		{"sometimes", "expected"},
	} {
		_, err := CheckSchedule(c.spec, now)
		if !errors.Is(err, rotatord.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CheckSchedule(%q) = %v, want EINVALID with %q", c.spec, err, c.want)
		}
	}
}

// No user JWT outlives what the re-signer assumes: the bound of
// CredentialLifetime is below resign.go's maxCredentialLifetime, and holds
// for every schedule CheckSchedule accepts, at any time, with the longest
// grace, and for a stored schedule that was never checked.
func TestCredentialLifetimeWithinResignBound(t *testing.T) {
	if MaxCredentialLifetime >= maxCredentialLifetime {
		t.Fatalf("MaxCredentialLifetime %s is not below the re-signer's bound %s", MaxCredentialLifetime, maxCredentialLifetime)
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, spec := range []string{"@every 2160h", "0 0 1 */3 *", "0 0 1 1,3,5,7,9,11 *", "0 0 31 * *", "@monthly", "0 9 * * 1-5",
		"0 0 30 2 *", "@yearly", "* * 1 1 *"} {
		checked := true
		if _, err := CheckSchedule(spec, start); err != nil {
			checked = false // stored before the limits: capped anyway
		}
		for d := 0; d < 4*366; d += 17 {
			now := start.Add(time.Duration(d) * 24 * time.Hour)
			life, err := CredentialLifetime(rotatord.RotationPolicy{Schedule: spec, Grace: rotatord.MaxGrace}, now)
			if err != nil {
				t.Fatal(err)
			}
			if life > MaxCredentialLifetime {
				t.Fatalf("CredentialLifetime(%q at %s) = %s, over %s (checked %v)", spec, now, life, MaxCredentialLifetime, checked)
			}
			sched, _ := ParseSchedule(spec)
			if next := sched.Next(now); checked && !next.IsZero() && next.Sub(now) > life-rotatord.MaxGrace-rotatord.ExpiryMargin {
				t.Fatalf("%q at %s: the next run %s comes after the JWT's interval %s", spec, now, next, life)
			}
		}
	}
}

// A stored schedule that never runs again is still rotated, 90 days on,
// never at once in a loop (next_rotation_at was 0001-01-01).
func TestNextRotationOfAStoredBadSchedule(t *testing.T) {
	s := &Service{}
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	for _, spec := range []string{"0 0 30 2 *", "@yearly"} {
		g := &rotatord.Agent{Rotation: rotatord.RotationPolicy{Schedule: spec, Grace: time.Hour}}
		next := s.nextRotation(g, now)
		if !next.Equal(now.Add(MaxScheduleInterval)) {
			t.Errorf("nextRotation(%q) = %s, want %s", spec, next, now.Add(MaxScheduleInterval))
		}
		life, _ := CredentialLifetime(g.Rotation, now)
		if !now.Add(life).After(next.Add(g.Rotation.Grace)) {
			t.Errorf("%q: the JWT (%s) expires before the next rotation and its grace", spec, life)
		}
	}
}

func BenchmarkCheckSchedule(b *testing.B) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for _, spec := range []string{"* * * * *", "0 0 1 */2 *", "@every 24h"} {
		b.Run(spec, func(b *testing.B) {
			for b.Loop() {
				if _, err := CheckSchedule(spec, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
