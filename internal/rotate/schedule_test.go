package rotate

import (
	"errors"
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
