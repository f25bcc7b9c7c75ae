package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// BenchmarkNATSRestart kills the nats-server under n connected agents and
// starts a new one on the same port: from the new server's start to every
// agent connected again. With "run", each agent follows rotatord with Run
// (interval an hour), so after the drop its first reconnect attempt waits
// for a look for new creds (a poll that finds nothing new, 304); with
// "connect", the agents only hold their connection, and nats.go
// reconnects them at once. The difference is what the look
// costs a fleet whose server restarts.
//
//	go test -run '^$' -bench 'NATSRestart/agents=10000/' -benchtime 1x -timeout 30m ./cmd/rotatord
func BenchmarkNATSRestart(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, run := range []bool{true, false} {
			mode := map[bool]string{true: "run", false: "connect"}[run]
			b.Run(fmt.Sprintf("agents=%d/%s", n, mode), func(b *testing.B) {
				raiseFileLimit(b, uint64(n+4096))
				for range b.N {
					natsRestart(b, n, run)
				}
			})
		}
	}
}

func natsRestart(b *testing.B, n int, run bool) {
	b.StopTimer()
	e, natsURL, natsPID := newBenchFleet(b)
	answers := &countingTransport{base: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}
	httpc := &http.Client{Timeout: 30 * time.Second, Transport: answers}
	var (
		timing  atomic.Bool
		backAt  = make([]atomic.Int64, n) // unix nanos of the reconnect after the restart
		back    atomic.Int64
		dropped atomic.Int64
	)
	clients, _ := connectAgents(b, e, natsURL, n, httpc, func(i int) []nats.Option {
		return []nats.Option{
			nats.DisconnectErrHandler(func(*nats.Conn, error) {
				if timing.Load() {
					dropped.Add(1)
				}
			}),
			nats.ReconnectHandler(func(*nats.Conn) {
				if timing.Load() && backAt[i].CompareAndSwap(0, time.Now().UnixNano()) {
					back.Add(1)
				}
			}),
		}
	}, nil)
	if run {
		startAgentRuns(b, clients, answers)
	}
	time.Sleep(500 * time.Millisecond)
	_, stopTicks := driveBench(b, e, fmt.Sprintf("nats-server restart under %d agents", n), nil)

	postmaster := postmasterPID(b, e.main.Store.Pool())
	cpu0 := [2]float64{cpuSeconds(os.Getpid()), clusterCPUSeconds(postmaster)}
	answers.reset()
	agentLogs.take()
	timing.Store(true)
	tKill := time.Now()
	if err := syscall.Kill(natsPID, syscall.SIGKILL); err != nil {
		b.Fatal(err)
	}
	// The port is free once the process is gone.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", e.natsPort)); err == nil {
			l.Close()
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the killed nats-server's port is still taken after 30s")
		}
	}
	tDown := time.Since(tKill)
	b.StartTimer()
	t0 := time.Now()
	_, newPID := e.startNATSProcess()
	tReady := time.Since(t0)
	for deadline := t0.Add(5 * time.Minute); back.Load() < int64(n); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d agents not reconnected 5m after the restart", int64(n)-back.Load(), n)
		}
	}
	total := time.Since(t0)
	b.StopTimer()
	cpu1 := [2]float64{cpuSeconds(os.Getpid()), clusterCPUSeconds(postmaster)}
	natsCPU := cpuSeconds(newPID)
	stopTicks()

	times := make([]time.Duration, n)
	for i := range backAt {
		times[i] = time.Unix(0, backAt[i].Load()).Sub(t0)
	}
	slices.Sort(times)
	b.ReportMetric(total.Seconds(), "s_total")
	b.ReportMetric(float64(n)/total.Seconds(), "agents/s")
	b.Logf("%d agents (%s): %d drops seen; port free %s after the kill; from the new server's start: ready %s, agents reconnected: first %s, median %s, last %s",
		n, map[bool]string{true: "on Run, look before reconnecting", false: "connection only"}[run], dropped.Load(),
		tDown.Round(time.Millisecond), tReady.Round(time.Millisecond), times[0].Round(time.Millisecond), times[n/2].Round(time.Millisecond),
		total.Round(time.Millisecond))
	b.Logf("CPU seconds from the kill to the last reconnect: rotatord and the simulated agents %.1f, new nats-server %.1f, postgresql %.1f",
		cpu1[0]-cpu0[0], natsCPU, cpu1[1]-cpu0[1])
	b.Logf("agents' log lines: %s", agentLogs.take())
	b.Logf("per agent: %.2f refused reconnects; agent API answers %s", float64(authFailures(b, e.main))/float64(n), answers.perAgent(n))
}
