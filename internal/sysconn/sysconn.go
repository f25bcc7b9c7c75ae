// Package sysconn keeps rotatord's own connection to NATS as a user of the
// system account. rotatord mints that user itself (it holds the system
// account's signing key), so no extra credentials are configured. The
// connection is made in the background and retried forever: rotatord starts
// and serves the resolver while NATS is still down.
package sysconn

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Minter returns a fresh user JWT of the system account and its key pair.
type Minter func(ctx context.Context) (userJWT string, kp nkeys.KeyPair, err error)

// Config configures a Conn.
type Config struct {
	URL     string
	Name    string // client name shown by the servers
	Mint    Minter
	Log     *slog.Logger
	Options []nats.Option // extra options (TLS and such)
	// OnConnect runs after every (re)connect, in its own goroutine.
	OnConnect func(nc *nats.Conn)
	// While NATS cannot be reached, a warning is logged once the outage
	// has lasted WarnAfter (default 5s: at start, nats-server may be
	// starting after rotatord, as it must with a URL resolver), then every
	// WarnEvery (default a minute). A lost connection is logged at once.
	WarnAfter time.Duration
	WarnEvery time.Duration
	// Now is the clock of those warnings; time.Now when nil.
	Now func() time.Time
}

// Conn is the system-account connection.
type Conn struct {
	cfg  Config
	nc   *nats.Conn
	down outage

	mu sync.Mutex
	kp nkeys.KeyPair
}

// Connect starts connecting to cfg.URL. It returns at once; the connection
// comes up when a server does and reconnects forever.
func Connect(ctx context.Context, cfg Config) (*Conn, error) {
	if cfg.WarnEvery <= 0 {
		cfg.WarnEvery = time.Minute
	}
	if cfg.WarnAfter <= 0 {
		cfg.WarnAfter = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Conn{cfg: cfg}
	c.down.start(cfg.Now()).mu.Unlock()
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.UserJWT(c.userJWT, c.sign),
		nats.ConnectHandler(func(nc *nats.Conn) {
			c.up(nc)
			cfg.Log.Info("connected to nats", "server", nc.ConnectedUrlRedacted())
			if cfg.OnConnect != nil {
				go cfg.OnConnect(nc)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			c.up(nc)
			cfg.Log.Info("reconnected to nats", "server", nc.ConnectedUrlRedacted())
			if cfg.OnConnect != nil {
				go cfg.OnConnect(nc)
			}
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return
			}
			// This warning is the first of the outage.
			now := cfg.Now()
			o := c.down.start(now)
			o.warned = now
			o.mu.Unlock()
			if err != nil {
				cfg.Log.Warn("disconnected from nats", "err", err)
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { c.failed(err) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			cfg.Log.Warn("nats error", "subject", subj, "err", err)
		}),
	}
	opts = append(opts, cfg.Options...)
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats at %s: %w", cfg.URL, err)
	}
	c.nc = nc
	return c, nil
}

// outage is a time NATS could not be reached, for the warnings.
type outage struct {
	mu     sync.Mutex
	since  time.Time // zero while connected
	warned time.Time // the latest warning of this outage
}

// start notes that the connection is down from now, unless it was already,
// and returns the outage locked.
func (o *outage) start(now time.Time) *outage {
	o.mu.Lock()
	if o.since.IsZero() {
		o.since, o.warned = now, time.Time{}
	}
	return o
}

// failed runs after each failed connect attempt: it warns once the outage
// has lasted WarnAfter, then every WarnEvery.
func (c *Conn) failed(err error) {
	now := c.cfg.Now()
	o := c.down.start(now)
	warn := now.Sub(o.warned) >= c.cfg.WarnEvery
	if o.warned.IsZero() {
		warn = now.Sub(o.since) >= c.cfg.WarnAfter
	}
	since := o.since
	if warn {
		o.warned = now
	}
	o.mu.Unlock()
	if warn {
		c.cfg.Log.Warn("cannot reach nats; retrying", "url", redact(c.cfg.URL), "down_for", now.Sub(since).Round(time.Second).String(), "err", err)
	}
}

// up ends the outage, saying how long it lasted.
func (c *Conn) up(nc *nats.Conn) {
	now := c.cfg.Now()
	c.down.mu.Lock()
	since := c.down.since
	c.down.since = time.Time{}
	c.down.mu.Unlock()
	if !since.IsZero() && now.Sub(since) >= c.cfg.WarnEvery {
		c.cfg.Log.Info("nats reachable again", "server", nc.ConnectedUrlRedacted(), "down_for", now.Sub(since).Round(time.Second).String())
	}
}

// redact drops user info from a URL list.
func redact(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = nil
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

func (c *Conn) userJWT() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	token, kp, err := c.cfg.Mint(ctx)
	if err != nil {
		return "", fmt.Errorf("mint system user: %w", err)
	}
	c.mu.Lock()
	c.kp = kp
	c.mu.Unlock()
	return token, nil
}

func (c *Conn) sign(nonce []byte) ([]byte, error) {
	c.mu.Lock()
	kp := c.kp
	c.mu.Unlock()
	if kp == nil {
		return nil, fmt.Errorf("sign nonce: no system user minted")
	}
	return kp.Sign(nonce)
}

// NC returns the underlying connection; it may be disconnected.
func (c *Conn) NC() *nats.Conn { return c.nc }

// Connected reports whether the connection is up.
func (c *Conn) Connected() bool { return c.nc.IsConnected() }

// Close drains nothing and closes the connection.
func (c *Conn) Close() { c.nc.Close() }
