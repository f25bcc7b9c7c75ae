package rotate

import (
	"time"

	"github.com/robfig/cron/v3"

	"github.com/rotatord/rotatord"
)

var scheduleParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a rotation schedule: a five-field cron expression or
// a descriptor such as "@every 24h" or "@daily". Intervals under a minute
// are refused: a rotation needs time for the agent to reconnect.
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

// MaxInterval returns the longest gap between consecutive runs of sched
// over the next few runs after now; a user JWT must outlive it.
func MaxInterval(sched cron.Schedule, now time.Time) time.Duration {
	var longest time.Duration
	prev := sched.Next(now)
	for range 16 {
		next := sched.Next(prev)
		if d := next.Sub(prev); d > longest {
			longest = d
		}
		prev = next
	}
	return longest
}

// CredentialLifetime is how long a user JWT issued under policy p at now
// stays valid: the longest interval, the grace period and a margin.
func CredentialLifetime(p rotatord.RotationPolicy, now time.Time) (time.Duration, error) {
	sched, err := ParseSchedule(p.Schedule)
	if err != nil {
		return 0, err
	}
	return MaxInterval(sched, now) + p.Grace + rotatord.ExpiryMargin, nil
}
