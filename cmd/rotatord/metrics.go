package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/registry"
)

// Metrics read from PostgreSQL (the registry gauges) are read in the
// background, at most every statsEvery, and a scrape of /metrics only
// copies the last reading: a scrape does no database work, however often
// it comes and whoever sends it (/metrics is unauthenticated).
const (
	// statsEvery is how often the registry gauges are read.
	statsEvery = 15 * time.Second
	// statsTimeout bounds one reading: a slow or absent database must not
	// pile readings up.
	statsTimeout = 5 * time.Second
	// statsTopAccounts is how many accounts get series of their own (the
	// largest JWTs); every account counts in the totals.
	statsTopAccounts = 100
)

// statsStore is the query the reader runs.
type statsStore interface {
	Stats(ctx context.Context, now time.Time, top int) (*registry.Stats, error)
}

// statsReader keeps the last reading of the registry gauges and serves it
// as a prometheus.Collector: agents by state, rotations in flight by
// state, the accounts with their JWTs' total size and revocation entries,
// the 100 largest account JWTs one by one, and the credentials about to
// expire. Every replica reads the same database, so every replica reports
// the same numbers (up to statsEvery apart). When the last reading failed,
// its series are left out and rotatord_stats_up is 0; the rest of /metrics
// is still served, and rotatord_stats_age_seconds says how old the last
// good reading is.
type statsReader struct {
	store   statsStore
	every   time.Duration
	timeout time.Duration
	now     func() time.Time
	log     *slog.Logger

	mu      sync.Mutex
	last    *registry.Stats // nil when the last reading failed
	lastOK  time.Time       // when the last good reading was taken (wall clock)
	failing bool

	up, age, agents, rotations, accounts, accountsBytes, accountsRevs, jwtBytes, revocations, expiring *prometheus.Desc
}

func newStatsReader(store statsStore, every, timeout time.Duration, now func() time.Time, log *slog.Logger) *statsReader {
	if now == nil {
		now = time.Now
	}
	return &statsReader{
		store: store, every: every, timeout: timeout, now: now, log: log,
		up: prometheus.NewDesc("rotatord_stats_up",
			"Whether the last background read of the database counts (agents, rotations, accounts, credentials) succeeded.", nil, nil),
		age: prometheus.NewDesc("rotatord_stats_age_seconds",
			"Seconds since the database counts were last read successfully (they are read every 15s).", nil, nil),
		agents: prometheus.NewDesc("rotatord_agents",
			"Agents by state (active, revoked).", []string{"state"}, nil),
		rotations: prometheus.NewDesc("rotatord_rotations_in_flight",
			"Rotations not yet finished, by state (issued, distributed, confirmed).", []string{"state"}, nil),
		accounts: prometheus.NewDesc("rotatord_accounts",
			"Accounts rotatord signs, the system account included.", nil, nil),
		accountsBytes: prometheus.NewDesc("rotatord_accounts_jwt_bytes",
			"Size of all accounts' current JWTs together, in bytes.", nil, nil),
		accountsRevs: prometheus.NewDesc("rotatord_accounts_revocations",
			"Revocation entries in all accounts' JWTs together.", nil, nil),
		jwtBytes: prometheus.NewDesc("rotatord_account_jwt_bytes",
			"Size of the current JWT in bytes, for the 100 accounts with the largest ones (nats-server's max payload is 1 MiB by default).", []string{"account"}, nil),
		revocations: prometheus.NewDesc("rotatord_account_revocations",
			"Revocation entries in the JWT, for the 100 accounts with the largest ones.", []string{"account"}, nil),
		expiring: prometheus.NewDesc("rotatord_credentials_expiring",
			"Active credentials of active agents whose JWT expires within the next hour or has expired: agents cut off unless they rotate (or are reissued).", nil, nil),
	}
}

// Run reads the counts every r.every until ctx ends (the first reading is
// the caller's: refresh before serving).
func (r *statsReader) Run(ctx context.Context) {
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.refresh(ctx)
		}
	}
}

// refresh takes one reading.
func (r *statsReader) refresh(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	st, err := r.store.Stats(rctx, r.now(), statsTopAccounts)
	if ctx.Err() != nil {
		return // shutting down
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		// Log the change only.
		if !r.failing {
			r.log.Warn("metrics: read database counts", "err", err)
		}
		r.failing, r.last = true, nil
		return
	}
	if r.failing {
		r.log.Info("metrics: database counts readable again")
	}
	r.failing, r.last, r.lastOK = false, st, time.Now()
}

// Describe implements prometheus.Collector.
func (r *statsReader) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{r.up, r.age, r.agents, r.rotations, r.accounts, r.accountsBytes, r.accountsRevs,
		r.jwtBytes, r.revocations, r.expiring} {
		ch <- d
	}
}

// Collect implements prometheus.Collector from the last reading; it does
// no database work.
func (r *statsReader) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	st, lastOK := r.last, r.lastOK
	r.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if !lastOK.IsZero() {
		gauge(r.age, time.Since(lastOK).Seconds())
	}
	if st == nil {
		gauge(r.up, 0)
		return
	}
	gauge(r.up, 1)
	// Every known state is reported, zero included, so that queries and
	// alerts on a state see 0 rather than no data.
	for _, s := range []string{rotatord.AgentActive, rotatord.AgentRevoked} {
		gauge(r.agents, float64(st.Agents[s]), s)
	}
	for s, n := range st.Agents {
		if s != rotatord.AgentActive && s != rotatord.AgentRevoked {
			gauge(r.agents, float64(n), s)
		}
	}
	for _, s := range []string{rotatord.RotationIssued, rotatord.RotationDistributed, rotatord.RotationConfirmed} {
		gauge(r.rotations, float64(st.RotationsActive[s]), s)
	}
	gauge(r.accounts, float64(st.Accounts))
	gauge(r.accountsBytes, float64(st.JWTBytes))
	gauge(r.accountsRevs, float64(st.Revocations))
	for _, a := range st.Largest {
		gauge(r.jwtBytes, float64(a.JWTBytes), a.Name)
		gauge(r.revocations, float64(a.Revocations), a.Name)
	}
	gauge(r.expiring, float64(st.CredentialsExpiring))
}
