package rotate

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rotatord/rotatord"
)

type metrics struct {
	startedVec  *prometheus.CounterVec
	finishedVec *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	resigns     prometheus.Counter
	// Account JWT sizes are read from PostgreSQL at each scrape
	// (cmd/rotatord/metrics.go), so that every replica reports every account.
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		startedVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rotatord_rotations_started_total", Help: "Rotations started, by trigger.",
		}, []string{"trigger"}),
		finishedVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rotatord_rotations_total", Help: "Rotations finished, by outcome (completed, rolled_back).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rotatord_rotation_duration_seconds", Help: "Time from a rotation's start to its end, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 18),
		}, []string{"outcome"}),
		resigns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rotatord_account_resigns_total", Help: "Account JWTs re-signed for revocations.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.startedVec, m.finishedVec, m.duration, m.resigns)
	}
	// Every known label value is exported from the start, at zero: an
	// alert on increase(rotatord_rotations_total{outcome="rolled_back"})
	// then sees the first rollback after a restart, which a series that
	// appears at 1 would hide.
	for _, t := range []string{rotatord.TriggerSchedule, rotatord.TriggerManual, rotatord.TriggerAgent,
		rotatord.TriggerFleet, rotatord.TriggerKeyRotation} {
		m.startedVec.WithLabelValues(t)
	}
	for _, o := range []string{rotatord.RotationCompleted, rotatord.RotationRolledBack} {
		m.finishedVec.WithLabelValues(o)
		m.duration.WithLabelValues(o)
	}
	return m
}

func (m *metrics) started(trigger string) { m.startedVec.WithLabelValues(trigger).Inc() }

func (m *metrics) finished(outcome string, d time.Duration) {
	m.finishedVec.WithLabelValues(outcome).Inc()
	m.duration.WithLabelValues(outcome).Observe(d.Seconds())
}
