package main

import "github.com/prometheus/client_golang/prometheus"

// newJWTGuardGauge exports the account JWT size guard
// (ROTATORD_MAX_ACCOUNT_JWT_BYTES), so that alert rules can compare each
// account's rotatord_account_jwt_bytes with it.
func newJWTGuardGauge(maxBytes int64) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "rotatord_account_jwt_max_bytes",
		Help: "Largest account JWT rotatord stores or pushes, in bytes (ROTATORD_MAX_ACCOUNT_JWT_BYTES).",
	})
	g.Set(float64(maxBytes))
	return g
}
