package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/internal/rotate"
)

// scrape reads the registry gauges now (they are read in the background
// every 15s), GETs /metrics and returns every sample by
// `name{label="value",...}` (labels sorted; no braces without labels).
// Histograms give _count and _sum.
func (e *env) scrape() map[string]float64 {
	e.t.Helper()
	e.main.stats.refresh(context.Background())
	return e.scrapeAt(e.main)
}

// scrapeAt reads the metrics of replica m as they are.
func (e *env) scrapeAt(m *Main) map[string]float64 {
	e.t.Helper()
	resp, err := e.http.Get(m.URL() + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("GET /metrics = %d %s", resp.StatusCode, body)
	}
	return parseMetrics(e.t, resp.Body)
}

func parseMetrics(t testing.TB, r io.Reader) map[string]float64 {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]float64{}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := sampleKey(m.GetLabel())
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[name+key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[name+key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[name+"_count"+key] = float64(m.GetHistogram().GetSampleCount())
				out[name+"_sum"+key] = m.GetHistogram().GetSampleSum()
			case dto.MetricType_UNTYPED:
				out[name+key] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}

func sampleKey(labels []*dto.LabelPair) string {
	if len(labels) == 0 {
		return ""
	}
	parts := make([]string, len(labels))
	for i, l := range labels {
		parts[i] = l.GetName() + `="` + l.GetValue() + `"`
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

// After one completed and one rolled-back rotation, /metrics says so, with
// the alert, the agents by state, the resolver's cache hits and misses, the
// pushes and the account JWT's size.
func TestMetrics(t *testing.T) {
	t.Parallel()
	e, clk := newClockedEnv(t)
	e.startNATS()
	e.waitNATS()
	ctx := context.Background()
	tick := func() {
		t.Helper()
		if _, err := e.main.Service.Tick(ctx); err != nil {
			t.Fatalf("tick: %v", err)
		}
	}

	// kate rotates and reconnects: completed.
	kate, _, _ := fleetAgent(e, "kate")
	done := e.must(202, "POST", "/v1/agents/kate/rotate", nil)["id"].(string)
	if got, err := kate.Refresh(ctx); err != nil || !got {
		t.Fatalf("kate refresh = %v, %v; want new creds", got, err)
	}
	eventually(t, 15*time.Second, "kate's rotation to complete", func() bool {
		tick()
		return e.rotation(done)["state"] == "completed"
	})
	// bob never reconnects: rolled back once the deadline passed.
	fleetAgent(e, "bob")
	failed := e.must(202, "POST", "/v1/agents/bob/rotate", nil)["id"].(string)
	clk.Advance(31 * time.Minute)
	tick()
	if r := e.rotation(failed); r["state"] != "rolled_back" {
		t.Fatalf("bob's rotation = %v, want rolled_back", r)
	}
	if _, err := e.main.Alerts.Dispatch(ctx); err != nil {
		t.Fatal(err)
	}
	// carl is revoked.
	createAgent(e, "carl", "fleet")
	e.must(200, "POST", "/v1/agents/carl/revoke", map[string]any{"reason": "decommissioned"})
	// One lookup of an account rotatord does not know.
	if status, _ := e.do("GET", "/jwt/v1/accounts/"+newPublicKey(t, nkeys.PrefixByteAccount), "", nil); status != 404 {
		t.Fatalf("unknown account = %d, want 404", status)
	}
	// The re-signs of kate's and bob's rotations are pushed in the
	// background, coalesced (both revocations may go in one re-sign): wait
	// until nothing is owed rather than race them.
	eventually(t, 20*time.Second, "the re-signs to be pushed", func() bool {
		owed, err := e.main.Store.ListPushOwed(ctx)
		return err == nil && len(owed) == 0 && e.scrape()[`rotatord_pushes_total{outcome="acked"}`] >= 2
	})
	fleetKey := e.must(200, "GET", "/v1/accounts/fleet", nil)["public_key"].(string)
	_, fleetJWT := e.do("GET", "/jwt/v1/accounts/"+fleetKey, "", nil)

	got := e.scrape()
	for name, want := range map[string]float64{
		`rotatord_rotations_total{outcome="completed"}`:                         1,
		`rotatord_rotations_total{outcome="rolled_back"}`:                       1,
		`rotatord_rotation_duration_seconds_count{outcome="completed"}`:         1,
		`rotatord_rotation_duration_seconds_count{outcome="rolled_back"}`:       1,
		`rotatord_rotations_started_total{trigger="manual"}`:                    2,
		`rotatord_alerts_total{kind="rotation_rolled_back",severity="warning"}`: 1,
		`rotatord_agents{state="active"}`:                                       2,
		`rotatord_agents{state="revoked"}`:                                      1,
		`rotatord_rotations_in_flight{state="distributed"}`:                     0,
		`rotatord_resolver_cache_misses_total`:                                  1,
		`rotatord_resolver_requests_total{status="404"}`:                        1,
		`rotatord_account_jwt_bytes{account="fleet"}`:                           float64(len(fleetJWT)),
		`rotatord_stats_up`:                                  1,
		`rotatord_accounts`:                                  2,
		`rotatord_credentials_expiring`:                      0,
		`rotatord_auth_failures_total{reason="revoked_key"}`: 0,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	for name, atLeast := range map[string]float64{
		// nats-server fetched the fleet and system accounts; the test one.
		`rotatord_resolver_cache_hits_total`:             2,
		`rotatord_resolver_requests_total{status="200"}`: 2,
		// The old key's revocation and the new key's (one re-sign or
		// two), and carl's.
		`rotatord_pushes_total{outcome="acked"}`:        2,
		`rotatord_account_revocations{account="fleet"}`: 1,
		`rotatord_account_resigns_total`:                1,
	} {
		if v := got[name]; v < atLeast {
			t.Errorf("%s = %v, want at least %v", name, v, atLeast)
		}
	}
	for name := range got {
		// Agent names and addresses are never labels.
		if strings.Contains(name, `"kate"`) || strings.Contains(name, "127.0.0.1") {
			t.Errorf("sample %s has an unbounded label value", name)
		}
	}
}

// /readyz follows NATS while rotatord runs: 503 once the server is gone,
// 200 when it is back. (NATS down at start and PostgreSQL down are in
// failure_test.go.)
func TestReadyzFollowsNATS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ns := e.startNATS()
	e.waitNATS()
	if status, body := e.do("GET", "/readyz", "", nil); status != 200 {
		t.Fatalf("readyz = %d %s, want 200", status, body)
	}
	ns.Shutdown()
	eventually(t, 10*time.Second, "readyz to report nats down", func() bool {
		status, body := e.do("GET", "/readyz", "", nil)
		return status == 503 && strings.Contains(string(body), "nats not connected")
	})
	e.startNATS()
	eventually(t, 10*time.Second, "readyz to recover with nats", func() bool {
		status, _ := e.do("GET", "/readyz", "", nil)
		return status == 200
	})
}

type failingStats struct{ err error }

func (f failingStats) Stats(context.Context, time.Time, int) (*registry.Stats, error) {
	return nil, f.err
}

// Without the database the counts read from it are left out and
// rotatord_stats_up says why; the scrape still succeeds.
func TestStatsReaderDatabaseDown(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	r := newStatsReader(failingStats{errors.New("dial tcp: connection refused")}, time.Hour, time.Second, nil, discardLogger())
	reg.MustRegister(r)
	r.refresh(context.Background())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather with the database down: %v", err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "rotatord_stats_up" || mfs[0].GetMetric()[0].GetGauge().GetValue() != 0 {
		t.Fatalf("gathered %v, want only rotatord_stats_up 0", mfs)
	}
	// The same holds through the HTTP handler, once the reader saw it.
	e := newEnv(t)
	e.main.Store.Close()
	got := e.scrape()
	if up, ok := got["rotatord_stats_up"]; !ok || up != 0 {
		t.Fatalf("rotatord_stats_up = %v (present %v), want 0", up, ok)
	}
	if age, ok := got["rotatord_stats_age_seconds"]; !ok || age < 0 {
		t.Fatalf("rotatord_stats_age_seconds = %v (present %v), want the age of the last good reading", age, ok)
	}
	if _, ok := got[`rotatord_agents{state="active"}`]; ok {
		t.Fatal("agents by state reported without a database")
	}
	if _, ok := got[`rotatord_resolver_requests_total{status="200"}`]; !ok {
		t.Fatal("the other metrics are missing")
	}
}

// countingStats counts the reads of the registry gauges.
type countingStats struct {
	statsStore
	n atomic.Int64
}

func (c *countingStats) Stats(ctx context.Context, now time.Time, top int) (*registry.Stats, error) {
	c.n.Add(1)
	return c.statsStore.Stats(ctx, now, top)
}

// A scrape flood reads nothing from the database: the registry gauges are
// read once at start and then every 15s, whatever the scrapes.
func TestMetricsScrapeFloodNoQueries(t *testing.T) {
	t.Parallel()
	var reads *countingStats
	e := newEnvWith(t, func(*Config) {})
	// A replica whose reader is counted (the env's own Main started before
	// the hook could be set).
	m := NewMain()
	m.Config = e.config()
	m.Log = discardLogger()
	m.statsSource = func(s statsStore) statsStore { reads = &countingStats{statsStore: s}; return reads }
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	start := time.Now()
	if n := reads.n.Load(); n != 1 {
		t.Fatalf("reads at start = %d, want 1", n)
	}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				resp, err := http.Get(m.URL() + "/metrics")
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body) //nolint:errcheck // only the count matters
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d scrapes failed", failed.Load())
	}
	// At most the reads of the ticker meanwhile.
	allowed := 1 + int64(time.Since(start)/statsEvery)
	if n := reads.n.Load(); n > allowed {
		t.Fatalf("400 scrapes in %s made %d reads of the database, want at most %d", time.Since(start), n, allowed)
	}
	got := e.scrapeAt(m)
	if got["rotatord_stats_up"] != 1 || got[`rotatord_agents{state="active"}`] != 0 || got["rotatord_accounts"] != 1 {
		t.Fatalf("gauges after the flood: up %v, agents %v, accounts %v", got["rotatord_stats_up"], got[`rotatord_agents{state="active"}`], got["rotatord_accounts"])
	}
}

// Per-account series only for the 100 largest account JWTs; every account
// is in the totals.
func TestMetricsBoundedAccounts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	for i := range 104 {
		if _, err := e.main.Service.CreateAccount(ctx, "test", rotate.AccountInput{Name: fmt.Sprintf("acc-%03d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	// Two accounts grow: a revocation each, and a long description.
	for _, name := range []string{"acc-000", "acc-001"} {
		createAgent(e, name+"-agent", name)
		e.must(200, "POST", "/v1/agents/"+name+"-agent/revoke", nil)
	}
	e.must(200, "PATCH", "/v1/accounts/acc-002", map[string]any{"description": strings.Repeat("long ", 100)})

	got := e.scrape()
	series := 0
	for k := range got {
		if strings.HasPrefix(k, "rotatord_account_jwt_bytes{") {
			series++
		}
	}
	if series != 100 {
		t.Fatalf("%d rotatord_account_jwt_bytes series, want 100", series)
	}
	for _, name := range []string{"acc-000", "acc-001", "acc-002"} {
		if got[`rotatord_account_jwt_bytes{account="`+name+`"}`] == 0 {
			t.Errorf("account %s, one of the largest, has no series", name)
		}
	}
	if got[`rotatord_account_revocations{account="acc-000"}`] != 1 {
		t.Errorf("acc-000 revocations = %v, want 1", got[`rotatord_account_revocations{account="acc-000"}`])
	}
	var total, n int64
	if err := e.main.Store.Pool().QueryRow(ctx, `SELECT sum(octet_length(jwt)), count(*) FROM accounts`).Scan(&total, &n); err != nil {
		t.Fatal(err)
	}
	if got["rotatord_accounts"] != float64(n) || n != 105 || got["rotatord_accounts_jwt_bytes"] != float64(total) ||
		got["rotatord_accounts_revocations"] != 2 {
		t.Fatalf("totals: accounts %v (want %d), jwt bytes %v (want %d), revocations %v (want 2)",
			got["rotatord_accounts"], n, got["rotatord_accounts_jwt_bytes"], total, got["rotatord_accounts_revocations"])
	}
}

// rotatord_credentials_expiring counts the active credentials of active
// agents that expire within the hour (or have), by rotatord's clock.
func TestMetricsCredentialsExpiring(t *testing.T) {
	t.Parallel()
	e, clk := newClockedEnv(t) // no rotation while the clock moves
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	for _, name := range []string{"kate", "bob", "carl"} {
		// Lifetime: 1h interval + 30m grace + 1h margin.
		e.must(201, "POST", "/v1/agents", map[string]any{"name": name, "account": "fleet",
			"permissions": map[string]any{"pub": map[string]any{"allow": []string{"a"}}},
			"rotation":    map[string]any{"schedule": "@every 1h", "grace": "30m"}})
	}
	e.createToken("unused", "read", "") // not a credential
	if got := e.scrape()["rotatord_credentials_expiring"]; got != 0 {
		t.Fatalf("expiring now = %v, want 0", got)
	}
	e.must(200, "POST", "/v1/agents/carl/revoke", nil) // revoked agents do not count
	clk.Advance(90*time.Minute + time.Minute)
	if got := e.scrape()["rotatord_credentials_expiring"]; got != 2 {
		t.Fatalf("expiring within the hour = %v, want 2 (kate, bob)", got)
	}
	clk.Advance(2 * time.Hour)
	if got := e.scrape()["rotatord_credentials_expiring"]; got != 2 {
		t.Fatalf("expired = %v, want 2 still", got)
	}
}
