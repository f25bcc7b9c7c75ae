package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/pkg/agent"
)

// BenchmarkEmergencyKeyRotation re-keys an account with n connected agents
// after its signing key leaked: from the request (POST .../signing-keys/rotate
// {"mode":"emergency"}) to every agent connected with credentials signed by
// the new key and every rotation completed. Each simulated agent is a real
// nats.go connection on pkg/agent running Run with an interval of an hour:
// it comes back only because the servers drop it, it polls rotatord at once
// (proof of possession of its old key) and reconnects. The nats-server runs
// in a child process; rotatord, PostgreSQL and the agents share the cores.
//
//	go test -run '^$' -bench 'EmergencyKeyRotation/agents=1000$' -benchtime 1x -timeout 30m ./cmd/rotatord
//	ROTATORD_BENCH_CPUPROFILE=/tmp/rekey.pprof go test -run '^$' -bench 'EmergencyKeyRotation/agents=10000$' -benchtime 1x -timeout 30m ./cmd/rotatord
//
// ROTATORD_BENCH_CPUPROFILE profiles rotatord's process (with the simulated
// agents) during the timed part only, from the request to the last agent
// confirmed; -cpuprofile would include creating and connecting the agents.
// ROTATORD_BENCH_NATS_CPUPROFILE profiles the nats-server's over the same
// part, ROTATORD_AGENT_RECONNECT_RATE tries another pace of the fleet's
// return, and ROTATORD_BENCH_TICK another scheduler tick (benchTick).
func BenchmarkEmergencyKeyRotation(b *testing.B) {
	for _, n := range []int{200, 1000, 10000} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			raiseFileLimit(b, uint64(n+4096)) // one NATS socket per agent; HTTP is capped at 256 connections
			for range b.N {
				emergencyRekey(b, n)
			}
		})
	}
}

func emergencyRekey(b *testing.B, n int) {
	b.StopTimer()
	e, natsURL, natsPID := newBenchFleet(b)
	ctx := context.Background()
	svc := e.main.Service
	start := time.Now()
	dropped := make([]atomic.Int64, n) // unix nanos of the first drop
	// Agents are separate processes in a real fleet; here they share one
	// transport, bounded like a listener's backlog would be.
	answers := &countingTransport{base: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}
	httpc := &http.Client{Timeout: 30 * time.Second, Transport: answers}
	// An agent is back when it connected on a key other than the one it
	// held at the start (its OnRotate): watching must not take the CPU the
	// run is measured on, so no agent is polled.
	oldKeys := make([]string, n)
	var (
		timing    atomic.Bool
		backAt    = make([]atomic.Int64, n) // unix nanos
		backCount atomic.Int64
	)
	onRotate := func(i int, key string) {
		if timing.Load() && key != oldKeys[i] && backAt[i].CompareAndSwap(0, time.Now().UnixNano()) {
			backCount.Add(1)
		}
	}
	clients, _ := connectAgents(b, e, natsURL, n, httpc, func(i int) []nats.Option {
		return []nats.Option{nats.DisconnectErrHandler(func(*nats.Conn, error) {
			dropped[i].CompareAndSwap(0, time.Now().UnixNano())
		})}
	}, onRotate)
	startAgentRuns(b, clients, answers)
	time.Sleep(500 * time.Millisecond)
	for i := range dropped {
		dropped[i].Store(0)
	}
	b.Logf("created and connected %d agents in %s", n, time.Since(start).Round(time.Millisecond))

	postmaster := postmasterPID(b, e.main.Store.Pool())
	cpu0 := [3]float64{cpuSeconds(os.Getpid()), cpuSeconds(natsPID), clusterCPUSeconds(postmaster)}
	stopProfile := startTimedProfile(b)
	answers.reset()
	agentLogs.take()
	stopNATSProfile := profileNATS(b, natsPID)
	for i, a := range clients {
		oldKeys[i] = a.PublicKey()
	}
	b.StartTimer()
	t0 := time.Now()
	timing.Store(true)
	_, stopTicks := driveBench(b, e, fmt.Sprintf("emergency re-key of %d agents", n), nil)
	k, err := svc.RotateSigningKey(ctx, "bench", "fleet", rotate.KeyRotationInput{Mode: rotatord.KeyModeEmergency})
	if err != nil {
		b.Fatal(err)
	}
	tRequest := time.Since(t0)
	for deadline := t0.Add(5 * time.Minute); backCount.Load() < int64(n); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d agents not back on a new key after 5m", int64(n)-backCount.Load(), n)
		}
	}
	tAgents := time.Since(t0)
	var done int
	for {
		err := e.main.Store.Pool().QueryRow(ctx, `SELECT count(*) FROM rotations WHERE state = 'completed' AND trigger = 'key_rotation'`).Scan(&done)
		if err != nil {
			b.Fatal(err)
		}
		if done == n {
			break
		}
		if time.Since(t0) > 5*time.Minute {
			b.Fatalf("only %d of %d rotations completed after 5m", done, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tConfirmed := time.Since(t0)
	b.StopTimer()
	stopProfile()
	stopNATSProfile()
	cpu1 := [3]float64{cpuSeconds(os.Getpid()), cpuSeconds(natsPID), clusterCPUSeconds(postmaster)}
	stopTicks()

	drops := make([]time.Duration, n)
	for i := range dropped {
		at := dropped[i].Load()
		if at == 0 {
			b.Fatalf("agent %d was never dropped by the servers", i)
		}
		drops[i] = time.Unix(0, at).Sub(t0)
	}
	slices.Sort(drops)
	lastDrop := drops[n-1]
	var lastStart time.Time
	e.main.Store.Pool().QueryRow(ctx, `SELECT max(created_at) FROM rotations`).Scan(&lastStart)
	// Back on a key the new signing key signed, as the servers had it.
	back := make([]time.Duration, n)
	for i, a := range clients {
		token, err := jwt.ParseDecoratedJWT(a.CredsFile())
		if err != nil {
			b.Fatalf("agent %d: creds: %v", i, err)
		}
		if iss := unverifiedIssuer(token); iss != k.NewKey {
			b.Fatalf("agent %d is back on a JWT signed by %s, not the new key %s", i, iss, k.NewKey)
		}
		back[i] = time.Unix(0, backAt[i].Load()).Sub(t0)
	}
	sort.Slice(back, func(i, j int) bool { return back[i] < back[j] })
	total := max(tAgents, tConfirmed)
	b.ReportMetric(total.Seconds(), "s_total")
	b.ReportMetric(lastDrop.Seconds(), "s_all_dropped")
	b.ReportMetric(float64(n)/total.Seconds(), "agents/s")
	b.Logf("%d agents: request answered %s; old-key users dropped: first %s, median %s, last %s; all re-issues started %s; agents back on the new key: median %s, last %s; all rotations completed %s",
		n, tRequest.Round(time.Millisecond), drops[0].Round(time.Millisecond), drops[n/2].Round(time.Millisecond),
		lastDrop.Round(time.Millisecond), lastStart.Sub(t0).Round(time.Millisecond),
		back[n/2].Round(time.Millisecond), tAgents.Round(time.Millisecond), tConfirmed.Round(time.Millisecond))
	b.Logf("CPU seconds during the run (2 cores = %.0f available): rotatord and the simulated agents %.1f, nats-server %.1f, postgresql %.1f",
		2*total.Seconds(), cpu1[0]-cpu0[0], cpu1[1]-cpu0[1], cpu1[2]-cpu0[2])
	// The work per agent, which does not depend on how busy the machine is.
	var actions string
	e.main.Store.Pool().QueryRow(ctx, `SELECT string_agg(action || ' ' || to_char(c::float / $2, 'FM990.00'), ', ' ORDER BY action)
		FROM (SELECT action, count(*) c FROM audit_events WHERE at >= $1 GROUP BY action) x`, t0.Add(-time.Second), n).Scan(&actions)
	b.Logf("agents' log lines: %s", agentLogs.take())
	b.Logf("per agent: %.2f refused reconnects; agent API answers %s; audit events %s",
		float64(authFailures(b, e.main))/float64(n), answers.perAgent(n), actions)
	var versions int64
	e.main.Store.Pool().QueryRow(ctx, `SELECT jwt_version FROM accounts WHERE name = 'fleet'`).Scan(&versions)
	b.Logf("account jwt version at the end %d; pushes %v", versions, metricsWith(b, e.main, "rotatord_pushes_total"))
}

// startAgentRuns makes each agent follow rotatord as a deployed one would, with
// Run and a long interval (only the servers dropping it makes it look),
// until the benchmark ends, and returns once every agent did its first
// (empty) refresh, which answers counts: at 10,000 agents they take
// seconds, and must be over before the timed part.
func startAgentRuns(b *testing.B, clients []*agent.Client, answers *countingTransport) {
	b.Helper()
	ctx, stopAgents := context.WithCancel(context.Background())
	// Reset before the first Run starts: an agent's first refresh can be
	// over before the last Run is started.
	answers.reset()
	var wg sync.WaitGroup
	for _, a := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); a.Run(ctx, time.Hour) }()
	}
	b.Cleanup(func() { stopAgents(); wg.Wait() })
	n := len(clients)
	for deadline := time.Now().Add(2 * time.Minute); answers.total() < n; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d agents did their first refresh after 2m", answers.total(), n)
		}
	}
}

// authFailures is the authentication failures the servers reported to this
// rotatord (rotatord_auth_failures_total).
func authFailures(b *testing.B, m *Main) int {
	total := 0.0
	for _, v := range metricsWith(b, m, "rotatord_auth_failures_total") {
		total += v
	}
	return int(total)
}

// metricsWith is the samples of this rotatord's /metrics whose series
// starts with prefix (name and labels, as exposed).
func metricsWith(b *testing.B, m *Main, prefix string) map[string]float64 {
	req, _ := http.NewRequest("GET", m.URL()+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	for name, v := range parseMetrics(b, resp.Body) {
		if strings.HasPrefix(name, prefix) {
			out[name] = v
		}
	}
	return out
}

// unverifiedIssuer is the iss claim of a JWT, "" when it is unreadable.
func unverifiedIssuer(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Issuer string `json:"iss"`
	}
	if json.Unmarshal(payload, &c) != nil {
		return ""
	}
	return c.Issuer
}

// countingTransport counts the agents' HTTP answers by status.
type countingTransport struct {
	base   http.RoundTripper
	mu     sync.Mutex
	status map[string]int
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	key := "error"
	if err == nil {
		key = strconv.Itoa(resp.StatusCode)
	}
	t.mu.Lock()
	if t.status == nil {
		t.status = map[string]int{}
	}
	t.status[req.Method+" "+key]++
	t.mu.Unlock()
	return resp, err
}

// total is how many answers (and errors) were counted.
func (t *countingTransport) total() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, c := range t.status {
		n += c
	}
	return n
}

func (t *countingTransport) reset() {
	t.mu.Lock()
	t.status = nil
	t.mu.Unlock()
}

// perAgent lists the counts divided by n, in key order.
func (t *countingTransport) perAgent(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := make([]string, 0, len(t.status))
	for k := range t.status {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%s %.2f", k, float64(t.status[k])/float64(n)))
	}
	return strings.Join(out, ", ")
}
