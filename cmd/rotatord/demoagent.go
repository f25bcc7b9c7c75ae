package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rotatord/rotatord/pkg/agent"
)

// runDemoAgent is `rotatord demo-agent`, the demo agent that `rotatord dev`
// runs in a child process (not in the usage: dev is its user). Built on
// pkg/agent's public API, like any agent: it connects with its creds
// file, subscribes to its subject's heartbeats, publishes its own, polls
// rotatord for new creds and saves those the servers accepted back to its
// creds file. With --exit-with-stdin it stops when stdin ends, so it never
// outlives dev.
func runDemoAgent(ctx context.Context, args []string, stdin io.Reader, stderr io.Writer) error {
	fs := newFlags("demo-agent", stderr)
	server := fs.String("rotatord", "http://"+devListen, "rotatord's URL")
	natsURL := fs.String("nats", nats.DefaultURL, "NATS URL")
	name := fs.String("name", devAgentName, "the agent's name")
	credsFile := fs.String("creds", devDirName+"/"+devCredsFile, "creds file; new creds are saved back to it")
	subject := fs.String("subject", devSubject, "heartbeats go to SUBJECT.<name>; the agent listens on SUBJECT.>")
	poll := fs.Duration("poll", 5*time.Second, "how often to ask rotatord for new creds")
	every := fs.Duration("heartbeat", 2*time.Second, "how often to publish a heartbeat")
	withStdin := fs.Bool("exit-with-stdin", false, "stop when stdin ends (dev closes it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *poll <= 0 || *every <= 0 {
		return errors.New("--poll and --heartbeat must be positive")
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("agent", *name)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if *withStdin {
		go func() {
			io.Copy(io.Discard, stdin) //nolint:errcheck // returns when dev closes stdin or dies
			cancel()
		}()
	}
	creds, err := os.ReadFile(*credsFile)
	if err != nil {
		return fmt.Errorf("read creds: %w", err)
	}
	var s *agent.CredsSaver
	var a *agent.Client
	a, err = agent.New(agent.Config{
		Server: *server, Name: *name, Creds: creds,
		Log: slog.New(slog.NewTextHandler(stderr, nil)),
		OnState: func(state agent.State, err error) {
			st := a.Status()
			switch state {
			case agent.StateRejected:
				log.Error("the servers refuse every key we hold; waiting for new creds", "key", st.PublicKey, "last_error", st.LastError)
			case agent.StateConnected:
				log.Info("connected", "key", st.PublicKey, "rotations", st.Rotations)
				s.Save(a) //nolint:errcheck // logged; the next connect tries again
			default:
				log.Info("state", "state", state, "err", err)
			}
		},
		OnRotate: func(pub string) { log.Info("moved to a new key", "key", pub) },
	})
	if err != nil {
		return fmt.Errorf("creds file %s: %w", *credsFile, err)
	}
	s = agent.NewCredsSaver(*credsFile, a, log)
	closed := make(chan struct{})
	nc, err := a.Connect(*natsURL, nats.DrainTimeout(5*time.Second),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		return err
	}
	var received atomic.Int64
	if _, err := nc.Subscribe(*subject+".>", func(*nats.Msg) { received.Add(1) }); err != nil {
		nc.Close()
		return fmt.Errorf("subscribe: %w", err)
	}
	log.Info("subscribed", "subject", *subject+".>")

	var wg sync.WaitGroup
	wg.Go(func() { a.Run(ctx, *poll) })
	t := time.NewTicker(*every)
	defer t.Stop()
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			log.Info("stopping", "heartbeats_sent", seq, "heartbeats_received", received.Load())
			if err := nc.Drain(); err != nil {
				nc.Close()
			}
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				nc.Close()
			}
			return nil
		case now := <-t.C:
			if a.State() == agent.StateRejected {
				continue // nothing gets through
			}
			seq++
			data, _ := json.Marshal(map[string]any{"agent": *name, "seq": seq, "key": a.PublicKey(), "time": now.UTC()})
			if err := nc.Publish(*subject+"."+*name, data); err != nil {
				log.Warn("publish heartbeat", "seq", seq, "err", err)
			}
			if seq%30 == 0 {
				log.Info("heartbeats", "sent", seq, "received", received.Load(), "key", a.PublicKey())
			}
		}
	}
}
