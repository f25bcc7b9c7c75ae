package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/rotatord/rotatord/internal/natsrun"
)

// natsChildEnv makes the test binary run only a nats-server: benchmarks
// with thousands of agents put the server's sockets in another process
// than the agents' (one process may not hold both ends).
const natsChildEnv = "ROTATORD_TEST_NATS_CHILD"

func runNATSChild() {
	if conf := os.Getenv("NATS_CONFIG_FILE"); conf != "" {
		runNATSChildFromConfig(conf)
		return
	}
	// ROTATORD_BENCH_NATS_CPUPROFILE profiles the server from SIGUSR1 to
	// SIGUSR2 (profileNATS: a benchmark's timed part).
	if path := os.Getenv("ROTATORD_BENCH_NATS_CPUPROFILE"); path != "" {
		sigs := make(chan os.Signal, 2)
		signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
		go func() {
			var f *os.File
			for sig := range sigs {
				switch {
				case sig == syscall.SIGUSR1 && f == nil:
					if g, err := os.Create(path); err == nil && pprof.StartCPUProfile(g) == nil {
						f = g
					}
				case sig == syscall.SIGUSR2 && f != nil:
					pprof.StopCPUProfile()
					f.Close()
					f = nil
				}
			}
		}()
	}
	port, _ := strconv.Atoi(os.Getenv("NATS_PORT"))
	ns, err := natsrun.Start(natsrun.Options{OperatorJWT: os.Getenv("NATS_OPERATOR_JWT"), SystemAccount: os.Getenv("NATS_SYSTEM_ACCOUNT"),
		ResolverURL: os.Getenv("NATS_RESOLVER_URL"), Port: port, Name: os.Getenv("NATS_SERVER_NAME"), Configure: clusterFromEnv})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	// In a cluster, ready means the routes this server waits for are up.
	want, _ := strconv.Atoi(os.Getenv("NATS_WAIT_ROUTES"))
	for deadline := time.Now().Add(30 * time.Second); ns.NumRoutes() < want; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			fmt.Printf("error: %d routes after 30s, want %d\n", ns.NumRoutes(), want)
			os.Exit(1)
		}
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin) //nolint:errcheck // returns when the parent closes stdin or dies
	ns.Shutdown()
}

// runNATSChildFromConfig runs a nats-server from a configuration file, as
// an operator runs one: the block of `rotatord nats-config` pasted in.
func runNATSChildFromConfig(path string) {
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	opts.NoSigs, opts.NoLog = true, os.Getenv("NATS_LOGS") == ""
	ns, err := server.NewServer(opts)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if !opts.NoLog {
		ns.ConfigureLogger()
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		fmt.Println("error: not ready")
		os.Exit(1)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin) //nolint:errcheck // returns when the parent closes stdin or dies
	ns.Shutdown()
	ns.WaitForShutdown()
	os.Exit(0)
}

// clusterFromEnv makes the child a member of a cluster when
// NATS_CLUSTER_PORT is set: routes to NATS_ROUTES (comma-separated
// host:port), advertising NATS_CLUSTER_ADVERTISE (host:port) to the others,
// without route pooling.
func clusterFromEnv(o *server.Options) {
	port, _ := strconv.Atoi(os.Getenv("NATS_CLUSTER_PORT"))
	if port == 0 {
		return
	}
	o.Cluster.Name = "rotatord-test"
	o.Cluster.Host = "127.0.0.1"
	o.Cluster.Port = port
	o.Cluster.Advertise = os.Getenv("NATS_CLUSTER_ADVERTISE")
	o.Cluster.PoolSize = -1
	var routes []string
	for _, r := range strings.Split(os.Getenv("NATS_ROUTES"), ",") {
		if r != "" {
			routes = append(routes, "nats-route://"+r)
		}
	}
	o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
}

// profileNATS starts the CPU profile of the child nats-server pid when
// ROTATORD_BENCH_NATS_CPUPROFILE names its file, and returns what stops it.
func profileNATS(tb testing.TB, pid int) (stop func()) {
	if os.Getenv("ROTATORD_BENCH_NATS_CPUPROFILE") == "" {
		return func() {}
	}
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		tb.Fatalf("start the profile of nats-server: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			syscall.Kill(pid, syscall.SIGUSR2) //nolint:errcheck // the child may be gone
			time.Sleep(200 * time.Millisecond) // it writes the profile
		})
	}
	tb.Cleanup(stop)
	return stop
}

// natsChild is how to run one child nats-server.
type natsChild struct {
	Name        string
	Port        int // client port
	ClusterPort int // 0: no cluster
	Advertise   string
	Routes      []string // host:port
	WaitRoutes  int
}

// cpuSeconds returns the CPU time (user + system) used so far by the
// processes with these PIDs, from /proc.
func cpuSeconds(pids ...int) float64 {
	var ticks float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		if len(f) > 12 {
			u, _ := strconv.ParseFloat(f[11], 64)
			s, _ := strconv.ParseFloat(f[12], 64)
			ticks += u + s
		}
	}
	return ticks / 100 // USER_HZ
}

// startNATSProcess starts a nats-server in a child process, using the
// resolver of e.main, and returns its client URL and the child's PID.
func (e *env) startNATSProcess() (string, int) {
	e.t.Helper()
	return e.startNATSChild(natsChild{Port: e.natsPort})
}

// startNATSChild starts a nats-server in a child process as c says, using
// the resolver of e.main, and returns its client URL and the child's PID
// once it is ready (with the routes it waits for). It is stopped in cleanup.
func (e *env) startNATSChild(c natsChild) (string, int) {
	e.t.Helper()
	op, err := e.main.Store.Operator(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), natsChildEnv+"=1", "NATS_OPERATOR_JWT="+op.JWT, "NATS_SYSTEM_ACCOUNT="+op.SystemAccount,
		"NATS_RESOLVER_URL="+e.main.URL()+"/jwt/v1/accounts/", fmt.Sprintf("NATS_PORT=%d", c.Port),
		"NATS_SERVER_NAME="+c.Name, fmt.Sprintf("NATS_CLUSTER_PORT=%d", c.ClusterPort), "NATS_CLUSTER_ADVERTISE="+c.Advertise,
		"NATS_ROUTES="+strings.Join(c.Routes, ","), fmt.Sprintf("NATS_WAIT_ROUTES=%d", c.WaitRoutes))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		e.t.Fatalf("nats child: %q, %v", line, err)
	}
	return fmt.Sprintf("nats://127.0.0.1:%d", c.Port), cmd.Process.Pid
}
