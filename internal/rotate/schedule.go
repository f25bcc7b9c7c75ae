package rotate

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/rotatord/rotatord"
)

var scheduleParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Limits of rotation schedules and of the user JWTs issued under them.
const (
	// MaxScheduleInterval is the longest time between two runs of a
	// rotation schedule that rotatord accepts: rotate at least every 90
	// days. A longer one is refused with EINVALID, as is one that never
	// runs (February 30).
	MaxScheduleInterval = 90 * 24 * time.Hour
	// MaxCredentialLifetime bounds every user JWT rotatord issues for an
	// agent (CredentialLifetime): the longest interval, the longest grace
	// and the expiry margin. The re-signer relies on no JWT outliving its
	// own bound (maxCredentialLifetime in resign.go), which must stay above
	// this.
	MaxCredentialLifetime = MaxScheduleInterval + rotatord.MaxGrace + rotatord.ExpiryMargin
	// scheduleHorizon is how far ahead CheckSchedule looks for long gaps:
	// four years (a whole leap-year cycle, so February 29 and month lengths
	// all come round) and one more interval.
	scheduleHorizon = 4*366*24*time.Hour + MaxScheduleInterval
	// scheduleStep is the stride of CheckSchedule through runs closer
	// together than this.
	scheduleStep = 7 * 24 * time.Hour
)

// ParseSchedule parses a rotation schedule: a five-field cron expression or
// a descriptor such as "@every 24h" or "@daily". Intervals under a minute
// are refused: a rotation needs time for the agent to reconnect. It does
// not look at when the schedule runs; CheckSchedule does.
func ParseSchedule(spec string) (cron.Schedule, error) {
	sched, err := scheduleParser.Parse(spec)
	if err != nil {
		return nil, rotatord.Errorf(rotatord.EINVALID, "rotation.schedule %q: %v", spec, err)
	}
	if every, ok := sched.(cron.ConstantDelaySchedule); ok && every.Delay < time.Minute {
		return nil, rotatord.Errorf(rotatord.EINVALID, "rotation.schedule %q: interval under one minute", spec)
	}
	return sched, nil
}

// CheckSchedule parses spec (ParseSchedule) and checks, from now on, that it
// runs at all and never leaves more than MaxScheduleInterval between two
// runs, over the coming four years; EINVALID otherwise. It looks at every
// gap, dense runs too ("* * 1 1 *" runs every minute of January 1st and
// then not for a year), in a few hundred steps.
func CheckSchedule(spec string, now time.Time) (cron.Schedule, error) {
	sched, err := ParseSchedule(spec)
	if err != nil {
		return nil, err
	}
	refuse := func(format string, args ...any) error {
		return rotatord.Errorf(rotatord.EINVALID, "rotation.schedule %q %s: rotate at least every %s",
			spec, fmt.Sprintf(format, args...), days(MaxScheduleInterval))
	}
	if every, ok := sched.(cron.ConstantDelaySchedule); ok {
		if every.Delay > MaxScheduleInterval {
			return nil, refuse("runs every %s", days(every.Delay))
		}
		return sched, nil
	}
	first := sched.Next(now)
	if first.IsZero() {
		return nil, rotatord.Errorf(rotatord.EINVALID, "rotation.schedule %q never runs: no date matches it", spec)
	}
	if wait := first.Sub(now); wait > MaxScheduleInterval {
		return nil, refuse("first runs %s from now (%s)", days(wait), first.UTC().Format(time.DateOnly))
	}
	gap := func(from, to time.Time) error {
		return refuse("leaves %s without a run, from %s to %s", days(to.Sub(from)),
			from.UTC().Format(time.DateOnly), to.UTC().Format(time.DateOnly))
	}
	end := now.Add(scheduleHorizon)
	for r := first; r.Before(end); {
		n := sched.Next(r)
		if n.IsZero() {
			return nil, refuse("stops running after %s", r.UTC().Format(time.DateOnly))
		}
		if n.Sub(r) > MaxScheduleInterval {
			return nil, gap(r, n)
		}
		if n.Sub(r) >= scheduleStep {
			r = n
			continue
		}
		// Runs closer than a step: jump a step ahead. The runs skipped are
		// less than a step apart; the gap that ends at the first run after
		// the jump starts at the last run before it, which is found
		// exactly only when the gap might be too long.
		q := r.Add(scheduleStep)
		n2 := sched.Next(q)
		if n2.IsZero() {
			return nil, refuse("stops running after %s", q.UTC().Format(time.DateOnly))
		}
		if n2.Sub(r) > MaxScheduleInterval {
			if a := lastRunBefore(sched, r, q, n2); n2.Sub(a) > MaxScheduleInterval {
				return nil, gap(a, n2)
			}
		}
		r = n2
	}
	return sched, nil
}

// lastRunBefore returns the last run of sched at or before hi, given that lo
// (< hi) is a run whose next run comes before next, and next is the first
// run after hi: the earliest second x in (lo, hi] whose next run is next.
func lastRunBefore(sched cron.Schedule, lo, hi, next time.Time) time.Time {
	lo, hi = lo.Truncate(time.Second), hi.Truncate(time.Second)
	// Invariant: sched.Next(lo) is before next, sched.Next(hi) is next.
	for hi.Sub(lo) > time.Second {
		mid := lo.Add(hi.Sub(lo) / 2).Truncate(time.Second)
		if sched.Next(mid).Before(next) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

// days writes d in days (or hours under two days).
func days(d time.Duration) string {
	if d < 48*time.Hour {
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%d days", int((d+12*time.Hour)/(24*time.Hour)))
}

// MaxInterval returns the longest gap between consecutive runs of sched
// over the next runs after now, the wait for the first one included: a user
// JWT issued at now must outlive it. It is never more than
// MaxScheduleInterval (schedules are checked against it when set; an older
// stored one is capped, and so is its next rotation, see nextRotation).
func MaxInterval(sched cron.Schedule, now time.Time) time.Duration {
	var longest time.Duration
	prev := now
	for range 17 {
		next := sched.Next(prev)
		if next.IsZero() {
			return MaxScheduleInterval
		}
		longest = max(longest, next.Sub(prev))
		prev = next
	}
	return min(longest, MaxScheduleInterval)
}

// nextRun is sched's next run after now, but no later than
// MaxScheduleInterval from now: schedules are checked when set, but one
// stored before the limits may never run again (next run zero) or only in a
// year, and its agent must still be rotated before its JWT (capped the same
// way, see MaxInterval) expires.
func nextRun(sched cron.Schedule, now time.Time) time.Time {
	next := sched.Next(now)
	if next.IsZero() || next.Sub(now) > MaxScheduleInterval {
		return now.Add(MaxScheduleInterval)
	}
	return next
}

// CredentialLifetime is how long a user JWT issued under policy p at now
// stays valid: the longest interval, the grace period and a margin. It is
// never more than MaxCredentialLifetime.
func CredentialLifetime(p rotatord.RotationPolicy, now time.Time) (time.Duration, error) {
	sched, err := ParseSchedule(p.Schedule)
	if err != nil {
		return 0, err
	}
	return MaxInterval(sched, now) + min(p.Grace, rotatord.MaxGrace) + rotatord.ExpiryMargin, nil
}
