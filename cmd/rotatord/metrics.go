package main

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/registry"
)

// statsTimeout bounds the database query of one scrape: a slow or absent
// database must not hang /metrics.
const statsTimeout = 2 * time.Second

// statsStore is the query the collector runs.
type statsStore interface {
	Stats(ctx context.Context) (*registry.Stats, error)
}

// statsCollector reports counts read from PostgreSQL at each scrape: agents
// by state, rotations in flight by state, and each account's JWT size and
// revocation entries. Reading at scrape time (one cheap query, grouped on
// small or indexed tables) gives the same numbers on every replica, counts
// changes made by any replica, and needs no background loop. When the
// query fails, those series are left out and rotatord_stats_up is 0; the
// rest of /metrics is still served.
type statsCollector struct {
	store   statsStore
	timeout time.Duration
	log     *slog.Logger
	failing atomic.Bool

	up, agents, rotations, jwtBytes, revocations *prometheus.Desc
}

func newStatsCollector(store statsStore, timeout time.Duration, log *slog.Logger) *statsCollector {
	return &statsCollector{
		store: store, timeout: timeout, log: log,
		up: prometheus.NewDesc("rotatord_stats_up",
			"Whether the last read of the database counts (agents, rotations in flight, account JWTs) succeeded.", nil, nil),
		agents: prometheus.NewDesc("rotatord_agents",
			"Agents by state (active, revoked).", []string{"state"}, nil),
		rotations: prometheus.NewDesc("rotatord_rotations_in_flight",
			"Rotations not yet finished, by state (issued, distributed, confirmed).", []string{"state"}, nil),
		jwtBytes: prometheus.NewDesc("rotatord_account_jwt_bytes",
			"Size of each account's current JWT in bytes (nats-server's max payload is 1 MiB by default).", []string{"account"}, nil),
		revocations: prometheus.NewDesc("rotatord_account_revocations",
			"Revocation entries in each account's JWT.", []string{"account"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.agents, c.rotations, c.jwtBytes, c.revocations} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	st, err := c.store.Stats(ctx)
	if err != nil {
		// Log the change only: scrapes come every few seconds.
		if !c.failing.Swap(true) {
			c.log.Warn("metrics: read database counts", "err", err)
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	if c.failing.Swap(false) {
		c.log.Info("metrics: database counts readable again")
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	// Every known state is reported, zero included, so that queries and
	// alerts on a state see 0 rather than no data.
	for _, s := range []string{rotatord.AgentActive, rotatord.AgentRevoked} {
		if _, ok := st.Agents[s]; !ok {
			st.Agents[s] = 0
		}
	}
	for _, s := range []string{rotatord.RotationIssued, rotatord.RotationDistributed, rotatord.RotationConfirmed} {
		if _, ok := st.RotationsActive[s]; !ok {
			st.RotationsActive[s] = 0
		}
	}
	for s, n := range st.Agents {
		ch <- prometheus.MustNewConstMetric(c.agents, prometheus.GaugeValue, float64(n), s)
	}
	for s, n := range st.RotationsActive {
		ch <- prometheus.MustNewConstMetric(c.rotations, prometheus.GaugeValue, float64(n), s)
	}
	for acc, n := range st.JWTBytes {
		ch <- prometheus.MustNewConstMetric(c.jwtBytes, prometheus.GaugeValue, float64(n), acc)
	}
	for acc, n := range st.Revocations {
		ch <- prometheus.MustNewConstMetric(c.revocations, prometheus.GaugeValue, float64(n), acc)
	}
}
