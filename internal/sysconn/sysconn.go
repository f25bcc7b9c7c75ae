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
}

// Conn is the system-account connection.
type Conn struct {
	cfg Config
	nc  *nats.Conn

	mu sync.Mutex
	kp nkeys.KeyPair
}

// Connect starts connecting to cfg.URL. It returns at once; the connection
// comes up when a server does and reconnects forever.
func Connect(ctx context.Context, cfg Config) (*Conn, error) {
	c := &Conn{cfg: cfg}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.UserJWT(c.userJWT, c.sign),
		nats.ConnectHandler(func(nc *nats.Conn) {
			cfg.Log.Info("connected to nats", "server", nc.ConnectedUrlRedacted())
			if cfg.OnConnect != nil {
				go cfg.OnConnect(nc)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			cfg.Log.Info("reconnected to nats", "server", nc.ConnectedUrlRedacted())
			if cfg.OnConnect != nil {
				go cfg.OnConnect(nc)
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				cfg.Log.Warn("disconnected from nats", "err", err)
			}
		}),
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
