package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
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
	port, _ := strconv.Atoi(os.Getenv("NATS_PORT"))
	ns, err := natsrun.Start(natsrun.Options{OperatorJWT: os.Getenv("NATS_OPERATOR_JWT"), SystemAccount: os.Getenv("NATS_SYSTEM_ACCOUNT"),
		ResolverURL: os.Getenv("NATS_RESOLVER_URL"), Port: port})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin) //nolint:errcheck // returns when the parent closes stdin or dies
	ns.Shutdown()
	os.Exit(0)
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

// postgresPIDs lists the running postgres processes.
func postgresPIDs() []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(b)) == "postgres" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// startNATSProcess starts a nats-server in a child process, using the
// resolver of e.main, and returns its client URL and the child's PID.
func (e *env) startNATSProcess() (string, int) {
	e.t.Helper()
	op, err := e.main.Store.Operator(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), natsChildEnv+"=1", "NATS_OPERATOR_JWT="+op.JWT, "NATS_SYSTEM_ACCOUNT="+op.SystemAccount,
		"NATS_RESOLVER_URL="+e.main.URL()+"/jwt/v1/accounts/", fmt.Sprintf("NATS_PORT=%d", e.natsPort))
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
	return fmt.Sprintf("nats://127.0.0.1:%d", e.natsPort), cmd.Process.Pid
}
