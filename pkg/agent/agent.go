// Package agent keeps a NATS connection alive across rotatord's credential
// rotations. It holds the agent's current creds, fetches newer ones from
// rotatord with a proof of possession of the current key, and moves the
// connection over to them with a forced reconnect; nats.go keeps the
// subscriptions and buffers publishes meanwhile. If the servers refuse the
// new creds, it falls back to the previous ones.
//
//	a, _ := agent.New(agent.Config{Server: "https://rotatord:8080", Name: "agent-kate", Creds: credsFile})
//	nc, _ := a.Connect("tls://nats:4222")
//	go a.Run(ctx, time.Minute)
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
)

// State is the connection's health as the program sees it.
type State string

// States. Rejected is the open circuit: the servers refuse every key the
// agent holds, and only an operator can help.
const (
	StateConnected    State = "connected"
	StateReconnecting State = "reconnecting"
	StateRejected     State = "rejected"
	StateClosed       State = "closed"
)

// Config configures a Client.
type Config struct {
	Server string // rotatord base URL
	Name   string // the agent's name in rotatord
	Creds  []byte // the current creds file
	// HTTPClient talks to rotatord; default: 10s timeout.
	HTTPClient *http.Client
	// OnRotate is called after the connection moved to a new key.
	OnRotate func(publicKey string)
	// OnState is called when the state changes.
	OnState func(state State, err error)
	Log     *slog.Logger
	// Now is the clock for proofs; time.Now when nil.
	Now func() time.Time
}

type creds struct {
	file []byte
	jwt  string
	kp   nkeys.KeyPair
	pub  string
}

func parseCreds(file []byte) (*creds, error) {
	token, err := jwt.ParseDecoratedJWT(file)
	if err != nil {
		return nil, fmt.Errorf("parse creds jwt: %w", err)
	}
	kp, err := jwt.ParseDecoratedUserNKey(file)
	if err != nil {
		return nil, fmt.Errorf("parse creds seed: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("parse creds seed: %w", err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return nil, fmt.Errorf("decode creds jwt: %w", err)
	}
	if uc.Subject != pub {
		return nil, errors.New("creds jwt and seed belong to different keys")
	}
	return &creds{file: file, jwt: token, kp: kp, pub: pub}, nil
}

// Client is an agent's credentials and connection. It is safe for
// concurrent use.
type Client struct {
	cfg Config

	mu       sync.Mutex
	cur      *creds
	prev     *creds // the key before the last switch, until the new one works
	nc       *nats.Conn
	state    State
	switched bool // a switch to cur is in progress
}

// New parses the current creds.
func New(cfg Config) (*Client, error) {
	c, err := parseCreds(cfg.Creds)
	if err != nil {
		return nil, err
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Client{cfg: cfg, cur: c}, nil
}

// PublicKey returns the key the client uses now.
func (c *Client) PublicKey() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur.pub
}

// CredsFile returns the current creds file (for saving it).
func (c *Client) CredsFile() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur.file
}

// State returns the current state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

func (c *Client) setState(s State, err error) {
	c.mu.Lock()
	changed := c.state != s
	c.state = s
	c.mu.Unlock()
	if changed && c.cfg.OnState != nil {
		c.cfg.OnState(s, err)
	}
}

// Connect connects to NATS with the current creds; later reconnects use
// whatever creds are current then. opts may add anything but credentials.
func (c *Client) Connect(url string, opts ...nats.Option) (*nats.Conn, error) {
	base := []nats.Option{
		nats.Name(c.cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond),
		nats.UserJWT(c.userJWT, c.sign),
		// Two refusals in a row of the same key must not end the
		// connection: the fallback needs another try.
		nats.IgnoreAuthErrorAbort(),
		nats.ConnectHandler(func(*nats.Conn) { c.connected() }),
		nats.ReconnectHandler(func(*nats.Conn) { c.connected() }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { c.setState(StateReconnecting, err) }),
		nats.ClosedHandler(func(*nats.Conn) { c.setState(StateClosed, nil) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { c.asyncError(err) }),
	}
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect agent %s: %w", c.cfg.Name, err)
	}
	c.mu.Lock()
	c.nc = nc
	c.mu.Unlock()
	return nc, nil
}

func (c *Client) userJWT() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur.jwt, nil
}

func (c *Client) sign(nonce []byte) ([]byte, error) {
	c.mu.Lock()
	kp := c.cur.kp
	c.mu.Unlock()
	return kp.Sign(nonce)
}

func (c *Client) connected() {
	c.mu.Lock()
	switched, pub := c.switched, c.cur.pub
	c.switched, c.prev = false, nil
	c.mu.Unlock()
	c.setState(StateConnected, nil)
	if switched && c.cfg.OnRotate != nil {
		c.cfg.OnRotate(pub)
	}
}

// asyncError falls back to the previous key when the servers refuse the
// new one, and opens the circuit when they refuse every key.
func (c *Client) asyncError(err error) {
	if !errors.Is(err, nats.ErrAuthorization) && !errors.Is(err, nats.ErrAuthExpired) && !errors.Is(err, nats.ErrAuthRevoked) {
		c.cfg.Log.Warn("nats error", "agent", c.cfg.Name, "err", err)
		return
	}
	c.mu.Lock()
	fallback := c.prev != nil
	if fallback {
		c.cfg.Log.Warn("servers refused the new key; falling back to the previous one", "agent", c.cfg.Name, "key", c.cur.pub, "err", err)
		c.cur, c.prev, c.switched = c.prev, nil, false
	}
	c.mu.Unlock()
	if !fallback {
		c.setState(StateRejected, err)
	}
}

// Refresh asks rotatord for newer creds once. When there are some, it moves
// the connection over to them and reports true.
func (c *Client) Refresh(ctx context.Context) (bool, error) {
	c.mu.Lock()
	cur := c.cur
	c.mu.Unlock()
	u, err := url.JoinPath(c.cfg.Server, "/v1/agents", c.cfg.Name, "creds")
	if err != nil {
		return false, fmt.Errorf("creds url: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, fmt.Errorf("creds request: %w", err)
	}
	if err := SignRequest(req, cur.kp, c.cfg.Now()); err != nil {
		return false, err
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return false, fmt.Errorf("fetch creds: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return false, fmt.Errorf("fetch creds: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusNotModified:
		return false, nil
	case http.StatusOK:
	default:
		return false, fmt.Errorf("fetch creds: %s: %s", resp.Status, body)
	}
	next, err := parseCreds(body)
	if err != nil {
		return false, fmt.Errorf("fetched creds: %w", err)
	}
	return true, c.Use(next.file)
}

// Use switches to a creds file obtained some other way (a file or Vault
// secret that changed) and moves the connection over to it.
func (c *Client) Use(file []byte) error {
	next, err := parseCreds(file)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if next.pub == c.cur.pub {
		c.mu.Unlock()
		return nil
	}
	c.prev, c.cur, c.switched = c.cur, next, true
	nc := c.nc
	c.mu.Unlock()
	c.cfg.Log.Info("switching to new credentials", "agent", c.cfg.Name, "key", next.pub)
	if nc == nil {
		return nil
	}
	if err := nc.ForceReconnect(); err != nil {
		return fmt.Errorf("reconnect with new creds: %w", err)
	}
	return nil
}

// Run calls Refresh every interval until ctx ends. Failures are logged and
// retried at the next interval.
func (c *Client) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := c.Refresh(ctx); err != nil && ctx.Err() == nil {
			c.cfg.Log.Warn("refresh creds", "agent", c.cfg.Name, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SignRequest adds rotatord's proof of possession of kp to req.
func SignRequest(req *http.Request, kp nkeys.KeyPair, now time.Time) error {
	pub, err := kp.PublicKey()
	if err != nil {
		return fmt.Errorf("sign request: %w", err)
	}
	unix := now.Unix()
	sig, err := kp.Sign(rotatord.ProofMessage(req.Method, req.URL.EscapedPath(), unix))
	if err != nil {
		return fmt.Errorf("sign request: %w", err)
	}
	req.Header.Set("Authorization", rotatord.FormatProof(pub, unix, sig))
	return nil
}
