package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/pkg/agent"
)

// raiseFileLimit makes room for one NATS socket per simulated agent (the
// nats-server runs in a child process, so its ends are not counted here;
// the agents' HTTP connections share one capped transport).
func raiseFileLimit(b *testing.B, need uint64) {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur >= need {
		return
	}
	lim.Cur = need
	if lim.Max < need {
		lim.Max = need
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatalf("need %d open files for the simulated agents (run as root or raise ulimit -n): %v", need, err)
	}
}

// agentsPerAddress is how many simulated agents dial from one loopback
// source address.
const agentsPerAddress = 100

// agentDialer dials agent i's NATS connections from a loopback address of
// its own group (127.1.0.0 on, agentsPerAddress agents each). Agents of a
// real fleet dial from their own hosts; from one address, every connect()
// of 10,000 agents to the one server port searches the kernel's ephemeral
// port range for a free port, and while thousands of reconnects run that
// search, not the service, took most of the process's CPU.
func agentDialer(i int) *net.Dialer {
	g := i / agentsPerAddress
	return &net.Dialer{
		Timeout:   10 * time.Second,
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 1, byte(g/256), byte(g%256))},
	}
}

// agentLogs counts the simulated agents' log lines by level and message
// (logged() lists them).
var agentLogs = &logCounter{}

type logCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (h *logCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *logCounter) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *logCounter) WithGroup(string) slog.Handler                { return h }
func (h *logCounter) Handle(_ context.Context, r slog.Record) error {
	key := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			msg := a.Value.String()
			if i := strings.Index(msg, ": "); i > 0 && i < len(msg)-2 {
				msg = msg[strings.LastIndex(msg, ": ")+2:]
			}
			key += " (" + msg + ")"
		}
		return true
	})
	h.mu.Lock()
	if h.n == nil {
		h.n = map[string]int{}
	}
	h.n[key]++
	h.mu.Unlock()
	return nil
}

// take returns the counts so far, most frequent first, and starts over.
func (h *logCounter) take() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	keys := make([]string, 0, len(h.n))
	for k := range h.n {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return h.n[keys[i]] > h.n[keys[j]] })
	var out []string
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%d× %s", h.n[k], k))
	}
	h.n = nil
	return strings.Join(out, "; ")
}

// connectAgents creates n agents (agent-00000 on) in account fleet, each a
// pkg/agent client with its own NATS connection (from its agentDialer, with
// the options of opts(i), and no reconnect buffer), 16 at a time; the
// connections close at the end. onRotate, when not nil, is agent i's
// Config.OnRotate.
func connectAgents(b *testing.B, e *env, natsURL string, n int, httpc *http.Client, opts func(i int) []nats.Option,
	onRotate func(i int, key string)) ([]*agent.Client, []*nats.Conn) {
	b.Helper()
	ctx := context.Background()
	clients := make([]*agent.Client, n)
	conns := make([]*nats.Conn, n)
	var wg sync.WaitGroup
	var failed atomic.Value
	work := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				name := fmt.Sprintf("agent-%05d", i)
				_, creds, err := e.main.Service.CreateAgent(ctx, "bench", rotate.AgentInput{Name: name, Account: "fleet"})
				if err != nil {
					failed.Store(err)
					continue
				}
				cfg := agent.Config{Server: e.main.URL(), Name: name, Creds: creds, HTTPClient: httpc, Log: slog.New(agentLogs)}
				if onRotate != nil {
					cfg.OnRotate = func(key string) { onRotate(i, key) }
				}
				a, err := agent.New(cfg)
				if err != nil {
					failed.Store(err)
					continue
				}
				nc, err := a.Connect(natsURL, append([]nats.Option{nats.ReconnectBufSize(-1), nats.SetCustomDialer(agentDialer(i))}, opts(i)...)...)
				if err != nil {
					failed.Store(err)
					continue
				}
				clients[i], conns[i] = a, nc
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatalf("set up agents: %v", err)
	}
	b.Cleanup(func() {
		for _, nc := range conns {
			nc.Close()
		}
	})
	return clients, conns
}

// BenchmarkFleetRotation rotates every agent of one account end to end:
// the scheduler starts the rotations, each simulated agent (a real nats.go
// connection on pkg/agent) fetches its creds with a proof of possession and
// reconnects, the watcher confirms from $SYS connect events, and the old
// keys are revoked in coalesced re-signs pushed to the server.
//
//	go test -run '^$' -bench FleetRotation -benchtime 1x -timeout 30m ./cmd/rotatord
func BenchmarkFleetRotation(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			raiseFileLimit(b, uint64(n+4096))
			for range b.N {
				fleetRotation(b, n)
			}
		})
	}
}

// postmasterPID returns the PID of the postmaster of the benchmark's
// PostgreSQL cluster: the parent of the backend serving this query; 0 when
// that is not a process of this machine (a remote
// ROTATORD_TEST_DATABASE_URL), and PostgreSQL's CPU is then not counted.
func postmasterPID(b *testing.B, pool *pgxpool.Pool) int {
	b.Helper()
	var backend int
	if err := pool.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		b.Fatal(err)
	}
	f := procStat(backend)
	if len(f) < 2 || !strings.HasPrefix(procComm(backend), "postgres") {
		b.Logf("postgres backend %d is not a local process: its CPU is not counted", backend)
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

func procComm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// clusterCPUSeconds is the CPU time (user + system) used so far by one
// PostgreSQL cluster: its postmaster, every live child, and the children
// that exited and were reaped (the postmaster's cutime and cstime). Adding
// up the postgres processes alive at the start instead goes down when a
// backend exits, and counts other clusters on the machine.
func clusterCPUSeconds(postmaster int) float64 {
	if postmaster == 0 {
		return 0
	}
	var ticks float64
	add := func(f []string, fields ...int) {
		for _, i := range fields {
			if i < len(f) {
				v, _ := strconv.ParseFloat(f[i], 64)
				ticks += v
			}
		}
	}
	// Fields after the command name: 1 ppid, 11 utime, 12 stime, 13 cutime, 14 cstime.
	add(procStat(postmaster), 11, 12, 13, 14)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == postmaster {
			continue
		}
		if f := procStat(pid); len(f) > 12 && f[1] == strconv.Itoa(postmaster) {
			add(f, 11, 12)
		}
	}
	return ticks / 100 // USER_HZ
}

// procStat returns the fields of /proc/<pid>/stat after the command name
// (nil when the process is gone).
func procStat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return nil
	}
	return strings.Fields(s[i+2:])
}

// benchConfig is the configuration of the fleet benchmarks: no scheduler
// (they tick it themselves, every benchTick), and the pacing of the
// fleet's return from ROTATORD_AGENT_RECONNECT_RATE when set, to try others.
func benchConfig(b *testing.B, c *Config) {
	c.TickSpec = ""
	if v := os.Getenv(envNames["agent-reconnect-rate"]); v != "" {
		if err := (reconnectRate{c}).Set(v); err != nil {
			b.Fatal(err)
		}
	}
}

// newBenchFleet starts rotatord (benchConfig), a nats-server in a child
// process, and the account fleet the benchmarks' agents belong to.
func newBenchFleet(b *testing.B) (e *env, natsURL string, natsPID int) {
	e = newEnvWith(b, func(c *Config) { benchConfig(b, c) })
	natsURL, natsPID = e.startNATSProcess()
	e.waitNATS()
	if _, err := e.main.Service.CreateAccount(context.Background(), "bench", rotate.AccountInput{Name: "fleet"}); err != nil {
		b.Fatal(err)
	}
	return e, natsURL, natsPID
}

// benchTick is how often the benchmarks tick the scheduler
// (ROTATORD_BENCH_TICK, default 100ms; rotatord's own default is 1s).
var benchTick = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("ROTATORD_BENCH_TICK")); err == nil && d > 0 {
		return d
	}
	return 100 * time.Millisecond
}()

// driveBench ticks the scheduler every benchTick and, for whoever watches
// a long run, writes the rotations' states to stderr every 5 s (after
// prefix, with extra() when set), until stop or the benchmark's end. ctx
// ends at stop.
func driveBench(b *testing.B, e *env, prefix string, extra func() string) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := e.main.Service.Tick(ctx); err != nil && ctx.Err() == nil {
				b.Logf("tick: %v", err)
			}
			time.Sleep(benchTick)
		}
	}()
	go func() {
		defer wg.Done()
		for t := time.NewTicker(5 * time.Second); ; {
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			var states string
			e.main.Store.Pool().QueryRow(ctx, `SELECT coalesce(string_agg(state || '=' || c, ' '), '') FROM (SELECT state, count(*) c FROM rotations GROUP BY state) x`).Scan(&states)
			more := ""
			if extra != nil {
				more = extra()
			}
			fmt.Fprintf(os.Stderr, "%s: %s: %s%s\n", prefix, time.Since(start).Round(time.Second), states, more)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	b.Cleanup(stop)
	return ctx, stop
}

// startTimedProfile writes a CPU profile of the timed part of a fleet
// rotation (rotatord and the simulated agents; the nats-server runs in its
// own process) to the file named by ROTATORD_BENCH_CPUPROFILE, when set.
// go test's -cpuprofile would also cover creating and connecting the
// agents. The returned function stops it.
//
//	ROTATORD_BENCH_CPUPROFILE=/tmp/fleet.prof go test -run '^$' -bench 'FleetRotation/agents=1000$' -benchtime 1x ./cmd/rotatord
//	go tool pprof -top rotatord.test /tmp/fleet.prof
func startTimedProfile(b *testing.B) (stop func()) {
	path := os.Getenv("ROTATORD_BENCH_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatalf("cpu profile (do not combine with -cpuprofile): %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			if err := f.Close(); err != nil {
				b.Errorf("cpu profile: %v", err)
			}
		})
	}
	b.Cleanup(stop) // a run that fails stops it too
	return stop
}

func fleetRotation(b *testing.B, n int) {
	b.StopTimer()
	e, natsURL, natsPID := newBenchFleet(b)
	ctx := context.Background()
	svc := e.main.Service
	// Create the agents and connect them (not timed).
	start := time.Now()
	httpc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	clients, conns := connectAgents(b, e, natsURL, n, httpc, func(int) []nats.Option { return nil }, nil)
	b.Logf("created and connected %d agents in %s", n, time.Since(start).Round(time.Millisecond))
	// The old credentials must be older than the compaction margin for the
	// folded '*' entry to cover them, as they would be after a day.
	time.Sleep(31*time.Second - time.Since(start))
	oldKeys := make([]string, n)
	oldIAT := make([]int64, n)
	for i, a := range clients {
		oldKeys[i] = a.PublicKey()
		token, _ := jwt.ParseDecoratedJWT(a.CredsFile())
		uc, err := jwt.DecodeUserClaims(token)
		if err != nil {
			b.Fatal(err)
		}
		oldIAT[i] = uc.IssuedAt
	}
	// Every agent is due now, in creation order.
	if _, err := e.main.Store.Pool().Exec(ctx, `UPDATE agents SET next_rotation_at = created_at - interval '1 day'`); err != nil {
		b.Fatal(err)
	}

	accBefore, err := svc.Account(ctx, "fleet")
	if err != nil {
		b.Fatal(err)
	}
	var remaining atomic.Int64
	remaining.Store(int64(n))
	postmaster := postmasterPID(b, e.main.Store.Pool())
	cpu0 := [3]float64{cpuSeconds(os.Getpid()), cpuSeconds(natsPID), clusterCPUSeconds(postmaster)}
	stopProfile := startTimedProfile(b)
	stopNATSProfile := profileNATS(b, natsPID)
	b.StartTimer()
	t0 := time.Now()
	tctx, stop := driveBench(b, e, fmt.Sprintf("fleet %d", n), func() string {
		return fmt.Sprintf("; agents left to refresh %d", remaining.Load())
	})
	// Each agent fetches its new creds once its rotation is out, as if its
	// poll came right then (a real fleet adds up to one poll interval), and
	// moves its connection over.
	index := make(map[string]int, n)
	for i := range n {
		index[fmt.Sprintf("agent-%05d", i)] = i
	}
	refreshed := make([]time.Duration, n)
	queue := make(chan int, n)
	var agentsWG sync.WaitGroup
	agentsWG.Add(1)
	go func() { // feeds the agents whose rotation was distributed
		defer agentsWG.Done()
		defer close(queue)
		fed := make([]bool, n)
		for left := n; left > 0 && tctx.Err() == nil; {
			rows, err := e.main.Store.Pool().Query(tctx, `SELECT g.name FROM rotations r JOIN agents g ON g.id = r.agent_id WHERE r.state = 'distributed'`)
			if err != nil {
				b.Logf("feed: %v", err)
				return
			}
			for rows.Next() {
				var name string
				rows.Scan(&name)
				if i := index[name]; !fed[i] {
					fed[i] = true
					left--
					queue <- i
				}
			}
			rows.Close()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	// Agents are independent processes; 64 at a time fetch and reconnect.
	var retries atomic.Int64
	for range 64 {
		agentsWG.Add(1)
		go func() {
			defer agentsWG.Done()
			for i := range queue {
				for {
					got, err := clients[i].Refresh(tctx)
					if err == nil && got {
						break
					}
					if tctx.Err() != nil {
						return
					}
					// A few are logged, all counted: thousands of lines
					// would push the summary out of the benchmark's log.
					if n := retries.Add(1); n <= 5 {
						b.Logf("agent %d refresh: %v, %v", i, got, err)
					}
					time.Sleep(100 * time.Millisecond)
				}
				refreshed[i] = time.Since(t0)
				remaining.Add(-1)
			}
		}()
	}
	agentsWG.Wait()
	tAgents := time.Since(t0)
	var done int
	for {
		err := e.main.Store.Pool().QueryRow(ctx, `SELECT count(*) FROM rotations WHERE state = 'completed'`).Scan(&done)
		if err != nil {
			b.Fatal(err)
		}
		if done == n {
			break
		}
		if time.Since(t0) > 5*time.Minute {
			var states string
			e.main.Store.Pool().QueryRow(ctx, `SELECT string_agg(state || '=' || c, ' ') FROM (SELECT state, count(*) c FROM rotations GROUP BY state) x`).Scan(&states)
			b.Fatalf("only %d of %d rotations completed after 5m (%s); agents refreshed by %s", done, n, states, tAgents)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tCompleted := time.Since(t0)
	// Revoked means: the stored account JWT revokes every old key and a
	// server acknowledged it.
	for {
		var queued, owed int
		e.main.Store.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM account_resign), (SELECT count(*) FROM accounts WHERE pushed_version < jwt_version)`).Scan(&queued, &owed)
		if queued == 0 && owed == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	tRevoked := time.Since(t0)
	b.StopTimer()
	stopProfile()
	stopNATSProfile()
	cpu1 := [3]float64{cpuSeconds(os.Getpid()), cpuSeconds(natsPID), clusterCPUSeconds(postmaster)}
	stop()

	acc, err := svc.Account(ctx, "fleet")
	if err != nil {
		b.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(acc.JWT)
	if err != nil {
		b.Fatal(err)
	}
	revoked := 0
	for i, k := range oldKeys {
		uc := jwt.NewUserClaims(k)
		uc.IssuedAt = oldIAT[i]
		if ac.IsClaimRevoked(uc) {
			revoked++
		}
	}
	if revoked != n {
		b.Fatalf("the account jwt revokes %d of %d old keys", revoked, n)
	}
	connected := 0
	for _, nc := range conns {
		if nc.IsConnected() {
			connected++
		}
	}
	sort.Slice(refreshed, func(i, j int) bool { return refreshed[i] < refreshed[j] })
	b.ReportMetric(tRevoked.Seconds(), "s_total")
	b.ReportMetric(float64(n)/tRevoked.Seconds(), "rotations/s")
	b.ReportMetric(float64(len(acc.JWT)), "account_jwt_bytes")
	b.ReportMetric(float64(len(ac.Revocations)), "revocation_entries")
	var lastStart time.Time
	e.main.Store.Pool().QueryRow(ctx, `SELECT max(created_at) FROM rotations`).Scan(&lastStart)
	b.Logf("%d agents: all rotations started %s; agents had fetched their creds %s (median agent %s); all completed %s; old keys revoked and pushed %s",
		n, lastStart.Sub(t0).Round(time.Millisecond), tAgents.Round(time.Millisecond),
		refreshed[n/2].Round(time.Millisecond), tCompleted.Round(time.Millisecond), tRevoked.Round(time.Millisecond))
	b.Logf("CPU seconds during the run (2 cores = %.0f available): rotatord and the simulated agents %.1f, nats-server %.1f, postgresql %.1f",
		2*tRevoked.Seconds(), cpu1[0]-cpu0[0], cpu1[1]-cpu0[1], cpu1[2]-cpu0[2])
	b.Logf("account jwt: %d bytes, %d revocation entries, %d versions stored during the run; %d of %d agents connected at the end; %d fetches retried",
		len(acc.JWT), len(ac.Revocations), acc.JWTVersion-accBefore.JWTVersion, connected, n, retries.Load())
	b.Logf("pushes %v; auth failures %d", metricsWith(b, e.main, "rotatord_pushes_total"), authFailures(b, e.main))
}

// BenchmarkRevokeToDrop measures the time from sending
// POST /v1/agents/{name}/revoke to the agent's connection being dropped by
// the server. With history=3000, 3,000 operator revocations are made in
// the account first, then the next sweep runs (past the compaction
// margin); the account JWT before and after it is reported, and the
// revocations measured after that must not be slower than without the
// history.
//
//	go test -run '^$' -bench RevokeToDrop -benchtime 300x -timeout 20m ./cmd/rotatord
func BenchmarkRevokeToDrop(b *testing.B) {
	for _, history := range []int{0, 3000} {
		// Set up here, once: a sub-benchmark runs twice (b.N = 1, then b.N).
		e, sizes := revokeEnv(b, history)
		b.Run(fmt.Sprintf("history=%d", history), func(b *testing.B) {
			for name, v := range sizes {
				b.ReportMetric(float64(v), name)
			}
			revokeToDrop(b, e)
		})
	}
}

// revokeEnv starts rotatord and a nats-server with account fleet, and
// makes history revocations in it. It returns the account JWT sizes it saw.
func revokeEnv(b *testing.B, history int) (*env, map[string]int) {
	b.Helper()
	e := newEnvWith(b, func(c *Config) { c.TickSpec = "" })
	e.startNATS()
	e.waitNATS()
	e.http = &http.Client{Timeout: 10 * time.Second}
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	if history == 0 {
		return e, nil
	}
	return e, revokeHistory(b, e, history)
}

func revokeToDrop(b *testing.B, e *env) {
	b.StopTimer()
	e.t = b
	lat := make([]time.Duration, 0, b.N)
	ans := make([]time.Duration, 0, b.N) // until the API answered
	for i := range b.N {
		name := fmt.Sprintf("agent-%d-%05d", b.N, i) // the b.N = 1 run made agent-1-00000
		_, creds := createAgent(e, name, "fleet")
		dropped := make(chan time.Time, 1)
		nc, err := nats.Connect(e.ns.ClientURL(), nats.UserCredentials(writeCreds(b, creds)), nats.NoReconnect(),
			nats.DisconnectErrHandler(func(*nats.Conn, error) {
				select {
				case dropped <- time.Now():
				default:
				}
			}))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		sent := time.Now()
		answered := make(chan time.Time, 1)
		go func() {
			e.do("POST", "/v1/agents/"+name+"/revoke", e.admin, nil)
			answered <- time.Now()
		}()
		select {
		case at := <-dropped:
			lat = append(lat, at.Sub(sent))
		case <-time.After(10 * time.Second):
			b.Fatalf("agent %s not dropped", name)
		}
		b.StopTimer()
		ans = append(ans, (<-answered).Sub(sent))
		nc.Close()
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	b.ReportMetric(float64(p(0.5).Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(p(0.99).Microseconds())/1000, "p99_ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max_ms")
	sort.Slice(ans, func(i, j int) bool { return ans[i] < ans[j] })
	b.Logf("the API answered: p50 %s, p99 %s", ans[len(ans)/2], ans[min(len(ans)-1, int(0.99*float64(len(ans))))])
	b.ReportMetric(float64(jwtBytes(b, e)), "jwt_bytes_at_end")
}

// revokeHistory makes n operator revocations in account fleet through the
// API (agents created and revoked, a few at a time), then runs the sweep
// once the compaction margin has passed and waits for the re-sign it
// queues. It returns the account JWT's size before and after.
func revokeHistory(b *testing.B, e *env, n int) map[string]int {
	b.Helper()
	start := time.Now()
	work := make(chan int)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				name := fmt.Sprintf("old-%05d", i)
				createAgent(e, name, "fleet")
				e.must(200, "POST", "/v1/agents/"+name+"/revoke", map[string]any{"reason": "history"})
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	before := jwtBytes(b, e)
	b.Logf("%d revocations in %s; account JWT %d bytes", n, time.Since(start).Round(time.Second), before)
	// The next sweep, once the last revoked JWT is older than the
	// compaction margin (30 s), as the scheduler's minute sweep finds it.
	time.Sleep(31 * time.Second)
	ctx := context.Background()
	if _, err := e.main.Service.Tick(ctx); err != nil {
		b.Fatal(err)
	}
	// The sweep queues the account; the re-signer (at most one re-sign
	// every 5 s) folds and pushes it.
	eventually(b, 30*time.Second, "the sweep's re-sign to be stored and pushed", func() bool {
		var queued, owed int
		e.main.Store.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM account_resign), (SELECT count(*) FROM accounts WHERE pushed_version < jwt_version)`).Scan(&queued, &owed)
		return queued == 0 && owed == 0
	})
	after := jwtBytes(b, e)
	b.Logf("after the next sweep: account JWT %d bytes, %d entries", after, len(e.servedJWT("fleet").Revocations))
	return map[string]int{"jwt_bytes_before_sweep": before, "jwt_bytes_after_sweep": after}
}

func jwtBytes(b *testing.B, e *env) int {
	b.Helper()
	var n int
	if err := e.main.Store.Pool().QueryRow(context.Background(), `SELECT octet_length(jwt) FROM accounts WHERE name = 'fleet'`).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}
