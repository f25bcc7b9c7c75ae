// Command agent is a small agent that keeps its NATS connection across
// rotatord's credential rotations with package agent: it subscribes to the
// heartbeats of its fleet, publishes its own every second with a sequence
// number, polls rotatord for new creds, and saves them back to its creds
// file when the servers accepted them. See README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rotatord/rotatord/pkg/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

// Config is the agent's configuration: defaults, then environment, then flags.
type Config struct {
	Rotatord  string
	Name      string
	CredsFile string
	NATSURL   string
	Interval  time.Duration
	OwnKey    time.Duration
	Watch     bool
	Subject   string
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	envDuration := func(name string, def time.Duration) (time.Duration, error) {
		v := getenv(name)
		if v == "" {
			return def, nil
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		return d, nil
	}
	interval, err := envDuration("AGENT_POLL_INTERVAL", 10*time.Second)
	if err != nil {
		return Config{}, err
	}
	ownKey, err := envDuration("AGENT_OWN_KEY_EVERY", 0)
	if err != nil {
		return Config{}, err
	}

	var cfg Config
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Rotatord, "rotatord", env("ROTATORD_URL", "http://127.0.0.1:8080"), "rotatord base URL (ROTATORD_URL)")
	fs.StringVar(&cfg.Name, "name", env("AGENT_NAME", "demo-agent"), "the agent's name in rotatord (AGENT_NAME)")
	fs.StringVar(&cfg.CredsFile, "creds", env("AGENT_CREDS", ".rotatord-dev/demo-agent.creds"), "creds file; new creds are saved back to it (AGENT_CREDS)")
	fs.StringVar(&cfg.NATSURL, "nats", env("NATS_URL", nats.DefaultURL), "NATS server URL(s), comma separated (NATS_URL)")
	fs.DurationVar(&cfg.Interval, "interval", interval, "how often to ask rotatord for new creds (AGENT_POLL_INTERVAL)")
	fs.DurationVar(&cfg.OwnKey, "own-key-every", ownKey, "rotate to a key pair the agent makes itself this often; 0: never (AGENT_OWN_KEY_EVERY)")
	fs.BoolVar(&cfg.Watch, "watch", getenv("AGENT_WATCH_FILE") == "1", "also use creds that another process writes to the creds file (AGENT_WATCH_FILE=1)")
	fs.StringVar(&cfg.Subject, "subject", env("AGENT_SUBJECT", "demo.heartbeat"), "heartbeats go to SUBJECT.<name>; the agent listens on SUBJECT.> (AGENT_SUBJECT)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	var bad []error
	if cfg.Rotatord == "" {
		bad = append(bad, errors.New("-rotatord is empty"))
	}
	if cfg.Name == "" {
		bad = append(bad, errors.New("-name is empty"))
	}
	if cfg.CredsFile == "" {
		bad = append(bad, errors.New("-creds is empty"))
	}
	if cfg.Interval <= 0 {
		bad = append(bad, errors.New("-interval must be positive"))
	}
	if cfg.OwnKey < 0 {
		bad = append(bad, errors.New("-own-key-every must not be negative"))
	}
	return cfg, errors.Join(bad...)
}

// heartbeat is what the agent publishes every second.
type heartbeat struct {
	Agent string    `json:"agent"`
	Seq   uint64    `json:"seq"`
	Key   string    `json:"key"`
	Time  time.Time `json:"time"`
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	// The package's log lines carry the agent's name already; the
	// example's own ones get it here.
	pkgLog := slog.New(slog.NewTextHandler(stderr, nil))
	log := pkgLog.With("agent", cfg.Name)
	creds, err := os.ReadFile(cfg.CredsFile)
	if err != nil {
		return fmt.Errorf("read creds: %w", err)
	}

	var s *agent.CredsSaver
	var a *agent.Client
	a, err = agent.New(agent.Config{
		Server: cfg.Rotatord,
		Name:   cfg.Name,
		Creds:  creds,
		Log:    pkgLog,
		OnState: func(state agent.State, err error) {
			st := a.Status()
			switch state {
			case agent.StateRejected:
				// The open circuit: nothing gets through until new creds
				// come. A real agent would page someone here.
				log.Error("circuit open: the servers refuse every key we hold", "key", st.PublicKey, "last_error", st.LastError)
			case agent.StateConnected:
				log.Info("state", "state", state, "key", st.PublicKey, "rotations", st.Rotations, "fallbacks", st.Fallbacks)
				// After a rotation, or a fallback to the previous key,
				// the file must hold the key that works.
				s.Save(a) //nolint:errcheck // logged; the next connect tries again
			default:
				log.Info("state", "state", state, "err", err)
			}
		},
		OnRotate: func(pub string) { log.Info("rotated", "key", pub) },
	})
	if err != nil {
		return fmt.Errorf("creds file %s: %w", cfg.CredsFile, err)
	}
	s = agent.NewCredsSaver(cfg.CredsFile, a, log)

	closed := make(chan struct{})
	nc, err := a.Connect(cfg.NATSURL,
		nats.DrainTimeout(5*time.Second),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
	)
	if err != nil {
		return err
	}
	log.Info("connected", "url", nc.ConnectedUrlRedacted(), "key", a.PublicKey())

	_, err = nc.Subscribe(cfg.Subject+".>", func(m *nats.Msg) {
		var hb heartbeat
		if err := json.Unmarshal(m.Data, &hb); err != nil {
			log.Warn("not a heartbeat", "subject", m.Subject)
			return
		}
		log.Info("heartbeat received", "from", hb.Agent, "seq", hb.Seq, "key", hb.Key)
	})
	if err != nil {
		nc.Close()
		return fmt.Errorf("subscribe: %w", err)
	}

	var wg sync.WaitGroup
	wg.Go(func() { a.Run(ctx, cfg.Interval) })
	if cfg.Watch {
		wg.Go(func() { a.WatchFile(ctx, cfg.CredsFile, time.Second) })
	}
	if cfg.OwnKey > 0 {
		wg.Go(func() {
			t := time.NewTicker(cfg.OwnKey)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					err := a.RotateOwnKey(ctx)
					var apiErr *agent.APIError
					switch {
					case err == nil || ctx.Err() != nil:
					case errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusTooManyRequests:
						// rotatord allows one own-key rotation per
						// ROTATORD_AGENT_ROTATE_MIN_INTERVAL (10m by default).
						log.Info("rotatord asks to wait before the next own key", "retry_after", apiErr.RetryAfter)
					default:
						log.Warn("rotate to own key", "err", err)
					}
				}
			}
		})
	}

	subject := cfg.Subject + "." + cfg.Name
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			log.Info("stopping")
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
				// Publishing now would only fill nats.go's buffer.
				continue
			}
			seq++
			data, _ := json.Marshal(heartbeat{Agent: cfg.Name, Seq: seq, Key: a.PublicKey(), Time: now.UTC()})
			if err := nc.Publish(subject, data); err != nil {
				log.Warn("publish heartbeat", "seq", seq, "err", err)
			}
		}
	}
}
