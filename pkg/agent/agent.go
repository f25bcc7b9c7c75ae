// Package agent keeps an agent's NATS connection alive across rotatord's
// credential rotations.
//
// A Client holds the agent's creds and hands them to nats.go through
// callbacks (nats.UserJWT), so every connect attempt uses whatever creds are
// current then. New creds come from rotatord (Refresh and Run poll with a
// proof of possession of the current key), from a key pair the agent made
// itself (RotateOwnKey: only the public key leaves the process), or from a
// source the program already has: a mounted creds file (WatchFile), a Vault
// KV v2 secret (WatchVault), or any bytes (Use). Switching forces a
// reconnect; nats.go keeps the subscriptions and buffers publishes
// meanwhile.
//
// The client never locks the agent out on its own: while the servers have
// not accepted a new key, the previous one is kept, and if the servers
// refuse the new key the connection goes back to the previous one. When the
// servers refuse every key the client holds, the circuit is open
// (StateRejected): see Status.
//
//	a, _ := agent.New(agent.Config{Server: "https://rotatord:8080", Name: "agent-kate", Creds: credsFile})
//	nc, _ := a.Connect("tls://nats:4222")
//	go a.Run(ctx, time.Minute)
package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord/internal/jwtissue"
)

// State is the connection's health as the program sees it.
type State string

// States. The zero State ("") means Connect has not been called yet.
const (
	// StateConnected: the servers accepted the key in Status.PublicKey.
	StateConnected State = "connected"
	// StateReconnecting: the connection is down and nats.go is trying
	// again, or is moving to new creds. Publishes are buffered.
	StateReconnecting State = "reconnecting"
	// StateRejected is the open circuit: the servers refuse every key the
	// client holds (revoked, expired, or unknown to them). Retrying alone
	// will not help; new creds must come (Refresh, Use, a watched file or
	// Vault secret) or an operator must act. The client keeps probing with
	// a growing delay (up to 30 s) and leaves this state by itself when a
	// key is accepted again or new creds arrive.
	StateRejected State = "rejected"
	// StateClosed: the connection was closed; the client will not
	// reconnect.
	StateClosed State = "closed"
)

// ErrRefused is returned by Use (and so by Refresh, RotateOwnKey and the
// watchers) for creds whose key the servers refused a moment ago: the
// client does not switch to it again until Config.RetryRefused has passed.
var ErrRefused = errors.New("the servers refused this key")

// Config configures a Client.
type Config struct {
	Server string // rotatord base URL
	Name   string // the agent's name in rotatord
	Creds  []byte // the current creds file
	// HTTPClient talks to rotatord; default: 10s timeout.
	HTTPClient *http.Client
	// OnRotate is called after the connection moved to a new key.
	OnRotate func(publicKey string)
	// OnState is called when the state changes, with the error that caused
	// it when there is one. Callbacks run one at a time, in order, and
	// never with the client's lock held: they may call the client's
	// methods. They should return quickly.
	OnState func(state State, err error)
	Log     *slog.Logger
	// Now is the clock for proofs and Status; time.Now when nil.
	Now func() time.Time
	// RetryRefused is how long Use refuses creds whose key the servers
	// refused (ErrRefused), so a poll that keeps offering the same refused
	// key does not drop the connection every time; default 1 minute.
	RetryRefused time.Duration
}

// Status is a snapshot of the client's circuit breaker.
//
// StateConnected is the closed circuit. StateReconnecting is a connection
// that is down or moving to new creds; nats.go buffers publishes (up to its
// reconnect buffer) and replays subscriptions when it is back.
// StateRejected is the open circuit: the servers refuse every key the client
// holds, nothing the program publishes will get through, and only new creds
// or an operator can close it again. A program should then stop producing
// or buffer on its side (nats.go's own buffer is bounded and publishes fail
// once it is full), raise an alert with LastError, and keep the client
// running: it probes with a growing delay and connects as soon as a key is
// accepted or new creds arrive (Refresh, Use, WatchFile, WatchVault).
type Status struct {
	State State
	// PublicKey is the key the client connects with now.
	PublicKey string
	// LastError is the most recent failure (a key the servers refused, a
	// fallback, a lost connection); it stays after recovery, with
	// LastErrorAt saying when it happened. "" when there was none.
	LastError   string
	LastErrorAt time.Time
	// Since is when the client entered State.
	Since time.Time
	// Rotations counts the moves of the connection to a new key.
	Rotations int
	// Fallbacks counts the returns to a previous key after the servers
	// refused a newer one.
	Fallbacks int
}

type creds struct {
	file []byte
	jwt  string
	kp   nkeys.KeyPair
	pub  string
	// The fields below are guarded by Client.mu.
	accepted bool  // the servers accepted this key at least once
	refused  error // the servers refused it on the latest try; nil otherwise
}

func parseCreds(file []byte) (*creds, error) {
	// rotatord's (and nsc's) frame without regular expressions; any
	// other layout through the jwt library's parsers.
	token, seed, ok := jwtissue.SplitCreds(file)
	if !ok {
		var err error
		if token, err = jwt.ParseDecoratedJWT(file); err != nil {
			return nil, fmt.Errorf("parse creds jwt: %w", err)
		}
		nk, err := jwt.ParseDecoratedUserNKey(file)
		if err != nil {
			return nil, fmt.Errorf("parse creds seed: %w", err)
		}
		if seed, err = nk.Seed(); err != nil {
			return nil, fmt.Errorf("parse creds seed: %w", err)
		}
	}
	// Derived once: the key signs the server's nonce on every (re)connect
	// and a proof for every request to rotatord, and nkeys' own key pair
	// derives the key again for each.
	kp, err := jwtissue.FromSeed(seed, nkeys.PrefixByteUser)
	if err != nil {
		return nil, fmt.Errorf("parse creds seed: %w", err)
	}
	pub := jwtissue.Public(kp)
	// Not verified: the servers decide whether they trust the JWT, and
	// its signature would only show it was signed by the key its own
	// claims name (one ed25519 verify per creds a fleet receives).
	sub, err := jwtissue.UnverifiedUserSubject(token)
	if err != nil {
		return nil, fmt.Errorf("decode creds jwt: %w", err)
	}
	if sub != pub {
		return nil, errors.New("creds jwt and seed belong to different keys")
	}
	return &creds{file: file, jwt: token, kp: kp, pub: pub}, nil
}

// Reconnect pacing: quick while the servers accept us, backing off while
// they refuse every key (each refused attempt is an auth failure that
// rotatord counts and may alert on).
const (
	reconnectWait   = 100 * time.Millisecond
	reconnectJitter = 100 * time.Millisecond
	// maxReconnectWait caps the backoff while attempts fail for other
	// reasons than a refusal (a server too busy to finish handshakes, or
	// down): a fleet retrying every 100 ms would keep a busy server busy.
	maxReconnectWait = 2 * time.Second
	// connectTimeout is the default handshake timeout (nats.Timeout):
	// nats.go's 2 s is short for a server that a whole fleet reconnects
	// to at once, and each abandoned handshake makes it start over.
	connectTimeout  = 10 * time.Second
	rejectedWait    = 250 * time.Millisecond
	maxRejectedWait = 30 * time.Second
	// maxPacedWait bounds the wait rotatord may ask for before moving to
	// new creds (ReconnectAfterHeader).
	maxPacedWait = time.Minute
	// maxLookWait bounds how long a reconnect after a drop waits for the
	// pollers' look (lookFirst); the look ends it sooner, or the paced
	// reconnect rotatord asked for.
	maxLookWait = maxPacedWait + 5*time.Second
	// attempts whose outcome nats.go never reports (a timeout after
	// CONNECT) must not pile up.
	maxAttemptLog = 16
)

// Client is an agent's credentials and connection. It is safe for
// concurrent use.
//
// It holds at most two keys: cur, the newest one, which it wants to use, and
// fb, the fallback: the key the servers accepted before cur (kept after cur
// is accepted too, so that a rotation that rotatord rolls back finds it).
type Client struct {
	cfg Config

	mu        sync.Mutex
	cur       *creds
	fb        *creds
	presented *creds   // key of the latest connect attempt
	seq       uint64   // connect attempts so far
	attempts  []*creds // keys of attempts whose outcome is not known yet, oldest first
	refusedAt map[string]time.Time
	lastProof map[string]int64 // second of the latest proof per key, method and path
	pending   nkeys.KeyPair    // RotateOwnKey's key pair, until its JWT arrives
	nc        *nats.Conn

	state          State
	since          time.Time
	lastErr        string
	lastErrAt      time.Time
	rotations      int
	fallbacks      int
	rejectedRounds int
	pollers        int // Run and watchers looking for new creds (refresh.go)
	// paced is the reconnect rotatord scheduled for new creds (the
	// Rotatord-Reconnect-After of its answer), until it fires.
	paced *time.Timer
	// up: the servers accepted a key since the last reconnect began, so
	// the next one follows a drop; looking: a reconnect waits for the
	// pollers' look (lookFirst).
	up, looking bool

	events     []event // callbacks to make, in order
	delivering bool    // a goroutine is making them

	// wake is closed (and replaced) when the servers refuse a key the
	// client uses: Run and the watchers look for new creds at once
	// (refresh.go).
	wake chan struct{}
}

type event struct {
	state   State // "" for a rotation
	err     error
	rotated string
}

// New parses the current creds. It does not connect.
func New(cfg Config) (*Client, error) {
	c, err := parseCreds(cfg.Creds)
	if err != nil {
		return nil, err
	}
	// The program says these work; they are the fallback for the first
	// new key.
	c.accepted = true
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RetryRefused <= 0 {
		cfg.RetryRefused = time.Minute
	}
	return &Client{cfg: cfg, cur: c, refusedAt: map[string]time.Time{}, lastProof: map[string]int64{}, since: cfg.Now(),
		wake: make(chan struct{})}, nil
}

// PublicKey returns the key the client uses now.
func (c *Client) PublicKey() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inUseLocked().pub
}

// CredsFile returns the creds file of the key the client uses now (for
// saving it). It holds the seed: keep it secret.
func (c *Client) CredsFile() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inUseLocked().file
}

// State returns the current state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Status returns the circuit breaker's current status.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Status{
		State:       c.state,
		PublicKey:   c.inUseLocked().pub,
		LastError:   c.lastErr,
		LastErrorAt: c.lastErrAt,
		Since:       c.since,
		Rotations:   c.rotations,
		Fallbacks:   c.fallbacks,
	}
}

// inUseLocked is the key to connect and sign with: the newest one unless
// the servers refused it and the fallback is not known to be refused.
func (c *Client) inUseLocked() *creds {
	if c.cur.refused != nil && c.fb != nil && c.fb.refused == nil {
		return c.fb
	}
	return c.cur
}

func (c *Client) allRefusedLocked() bool {
	return c.cur.refused != nil && (c.fb == nil || c.fb.refused != nil)
}

func (c *Client) setStateLocked(s State, err error) {
	if c.state == s || c.state == StateClosed {
		return
	}
	c.state, c.since = s, c.cfg.Now()
	if s != StateRejected {
		c.rejectedRounds = 0
	}
	c.events = append(c.events, event{state: s, err: err})
}

func (c *Client) recordErrLocked(err error) {
	c.lastErr, c.lastErrAt = err.Error(), c.cfg.Now()
}

// flush makes the queued callbacks, in order, without the lock. If another
// goroutine is making them already (perhaps this one, from inside a
// callback), that one makes these too.
func (c *Client) flush() {
	c.mu.Lock()
	if c.delivering || len(c.events) == 0 {
		c.mu.Unlock()
		return
	}
	c.delivering = true
	c.mu.Unlock()
	done := false
	defer func() {
		if !done { // a callback panicked: let the next flush deliver the rest
			c.mu.Lock()
			c.delivering = false
			c.mu.Unlock()
		}
	}()
	for {
		c.mu.Lock()
		if len(c.events) == 0 {
			c.delivering = false
			c.mu.Unlock()
			done = true
			return
		}
		ev := c.events[0]
		c.events = c.events[1:]
		c.mu.Unlock()
		switch {
		case ev.state != "" && c.cfg.OnState != nil:
			c.cfg.OnState(ev.state, ev.err)
		case ev.rotated != "" && c.cfg.OnRotate != nil:
			c.cfg.OnRotate(ev.rotated)
		}
	}
}

// Connect connects to NATS with the current creds; later reconnects use
// whatever creds are current then. opts may add anything but credentials
// and the reconnect delay, which is the client's own (quick at first,
// doubling up to 2 s while attempts fail, and backing off further while the
// servers refuse every key); the handshake timeout is 10 s unless opts set
// one (nats.Timeout); handlers in opts (connect,
// reconnect, disconnect, closed, error) are called after the client's own.
// If the servers refuse the newest key at once and the client holds a
// previous one, Connect tries that one. A Client makes one connection.
func (c *Client) Connect(url string, opts ...nats.Option) (*nats.Conn, error) {
	c.mu.Lock()
	if c.nc != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("connect agent %s: already connected", c.cfg.Name)
	}
	c.mu.Unlock()
	var user nats.Options
	for _, opt := range opts {
		if err := opt(&user); err != nil {
			return nil, fmt.Errorf("connect agent %s: %w", c.cfg.Name, err)
		}
	}
	all := []nats.Option{nats.Name(c.cfg.Name), nats.MaxReconnects(-1), nats.Timeout(connectTimeout)}
	all = append(all, opts...)
	all = append(all,
		nats.CustomReconnectDelay(c.reconnectDelay),
		nats.ReconnectToServer(func(servers []nats.Server, info nats.ServerInfo) (*nats.Server, time.Duration) {
			if srv, wait, ok := c.lookFirst(servers); ok {
				return srv, wait
			}
			if user.ReconnectToServerCB != nil {
				return user.ReconnectToServerCB(servers, info)
			}
			return nil, 0
		}),
		nats.UserJWT(c.userJWT, c.sign),
		// Two refusals in a row of the same key must not end the
		// connection: the fallback, or creds that arrive later, need
		// another try.
		nats.IgnoreAuthErrorAbort(),
		nats.ConnectHandler(func(nc *nats.Conn) {
			c.connected(nc)
			if user.ConnectedCB != nil {
				user.ConnectedCB(nc)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			c.connected(nc)
			if user.ReconnectedCB != nil {
				user.ReconnectedCB(nc)
			}
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			c.disconnected(nc, err)
			if user.DisconnectedErrCB != nil {
				user.DisconnectedErrCB(nc, err)
			} else if user.DisconnectedCB != nil {
				user.DisconnectedCB(nc)
			}
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			c.closed(nc)
			if user.ClosedCB != nil {
				user.ClosedCB(nc)
			}
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			c.asyncError(nc, sub, err)
			if user.AsyncErrorCB != nil {
				user.AsyncErrorCB(nc, sub, err)
			}
		}),
	)
	for {
		nc, err := nats.Connect(url, all...)
		if err == nil {
			c.mu.Lock()
			c.nc = nc
			c.mu.Unlock()
			c.connected(nc)
			return nc, nil
		}
		c.mu.Lock()
		// nats.go reports no refusal during the first connect but returns
		// it: the key it refused is the last one presented.
		retry := false
		if isAuthError(err) && c.presented != nil {
			c.refuseLocked(c.presented, err)
			retry = !c.allRefusedLocked()
		}
		c.attempts = nil
		c.mu.Unlock()
		c.flush()
		if !retry {
			return nil, fmt.Errorf("connect agent %s: %w", c.cfg.Name, err)
		}
	}
}

func isAuthError(err error) bool {
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) {
		return true
	}
	// The first connect returns the server's -ERR as a plain error.
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "authorization violation") || strings.Contains(s, "authentication expired") ||
		strings.Contains(s, "authentication revoked")
}

// userJWT picks the key for a connect attempt; sign, called next in the
// same attempt, signs with that same key even if creds change in between.
func (c *Client) userJWT() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.inUseLocked()
	if c.allRefusedLocked() && c.fb != nil && c.presented == c.cur {
		// Open circuit: probe the keys in turn; a refusal may have been
		// temporary (an account the server had not loaded yet).
		k = c.fb
	}
	c.presented = k
	c.seq++
	c.attempts = append(c.attempts, k)
	if n := len(c.attempts); n > maxAttemptLog {
		c.attempts = append([]*creds(nil), c.attempts[n-maxAttemptLog:]...)
	}
	return k.jwt, nil
}

func (c *Client) sign(nonce []byte) ([]byte, error) {
	c.mu.Lock()
	k := c.presented
	c.mu.Unlock()
	return k.kp.Sign(nonce)
}

func (c *Client) reconnectDelay(attempts int) time.Duration {
	c.awaitRefusal()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paced != nil {
		// rotatord said when to reconnect with the new creds: the paced
		// reconnect ends this wait (reconnectIn).
		return maxRejectedWait
	}
	if c.state != StateRejected {
		// Quick at first, doubling (with jitter) while attempts fail.
		d := min(reconnectWait<<min(max(attempts-1, 0), 5), maxReconnectWait)
		return d + rand.N(max(d/2, reconnectJitter))
	}
	if c.pollers > 0 {
		// Run or a watcher looks for new creds at once and then with a
		// growing delay, and makes nats.go try after each look (probe):
		// trying the refused keys in between only costs the servers a
		// handshake and rotatord an auth failure.
		return maxRejectedWait
	}
	d := rejectedWait << min(c.rejectedRounds, 10)
	c.rejectedRounds++
	return min(d, maxRejectedWait)
}

// refusalReportWait bounds how long reconnectDelay waits for nats.go to
// report the refusal of the attempt that just failed.
const refusalReportWait = 100 * time.Millisecond

// awaitRefusal waits until the refusal of the attempt that just failed has
// been recorded. nats.go reports it through the error callback, from its
// callback goroutine, and asks for the delay before the next attempt at
// once: without the wait the client would not yet know the key was
// refused, would wait the short delay and present the same key again (a
// second refusal per agent when a fleet is dropped at once and the
// callbacks lag).
func (c *Client) awaitRefusal() {
	c.mu.Lock()
	nc := c.nc
	c.mu.Unlock()
	if nc == nil {
		return
	}
	if err := nc.LastError(); err == nil || !isAuthError(err) {
		return
	}
	deadline := time.Now().Add(refusalReportWait)
	for {
		c.mu.Lock()
		pending := len(c.attempts) > 0
		c.mu.Unlock()
		if !pending || time.Now().After(deadline) {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// connected runs after a connect or reconnect succeeded (nats.go calls it
// later, from its callback goroutine).
func (c *Client) connected(nc *nats.Conn) {
	c.mu.Lock()
	if c.nc == nil {
		c.nc = nc
	}
	seq := c.seq
	c.mu.Unlock()
	// Which key got in? The latest attempt's, if the connection is up and
	// no attempt began since: attempts run only while it is down. If that
	// cannot be told, a later callback will.
	if !nc.IsConnected() {
		return
	}
	c.mu.Lock()
	if c.seq != seq {
		c.mu.Unlock()
		return
	}
	moveOn := c.acceptLocked(c.presented)
	c.mu.Unlock()
	c.flush()
	if moveOn {
		// A newer key arrived while this attempt ran: move to it now.
		if err := nc.ForceReconnect(); err != nil {
			c.cfg.Log.Warn("reconnect with newer creds", "agent", c.cfg.Name, "err", err)
		}
	}
}

// acceptLocked records that the servers accepted k. It reports whether the
// client holds a newer key not tried yet.
func (c *Client) acceptLocked(k *creds) (moveOn bool) {
	c.attempts = nil
	k.refused = nil
	delete(c.refusedAt, k.pub)
	first := !k.accepted
	k.accepted = true
	switch k {
	case c.cur:
	case c.fb:
		if c.cur.refused == nil {
			moveOn = true
			break
		}
		c.cfg.Log.Warn("connected with the previous key; dropping the refused one",
			"agent", c.cfg.Name, "key", k.pub, "refused_key", c.cur.pub)
		c.cur, c.fb = k, nil
		c.fallbacks++
	default:
		// Replaced while its attempt ran, yet accepted: it is proven, so
		// it becomes the fallback for the newer key.
		c.fb = k
		moveOn = c.cur.refused == nil
	}
	// Connected: the next reconnect follows a drop, and none waits for
	// a look any more.
	c.up, c.looking = true, false
	if first {
		c.rotations++
		c.events = append(c.events, event{rotated: k.pub})
		c.cfg.Log.Info("connected with new credentials", "agent", c.cfg.Name, "key", k.pub)
	}
	c.setStateLocked(StateConnected, nil)
	return moveOn
}

// refuseLocked records that the servers refused k, falling back to the
// previous key or opening the circuit.
func (c *Client) refuseLocked(k *creds, err error) {
	now := c.cfg.Now()
	for pub, at := range c.refusedAt {
		if now.Sub(at) >= c.cfg.RetryRefused {
			delete(c.refusedAt, pub)
		}
	}
	c.refusedAt[k.pub] = now
	if k != c.cur && k != c.fb {
		c.recordErrLocked(fmt.Errorf("servers refused key %s, no longer in use: %w", k.pub, err))
		return
	}
	k.refused = err
	// New creds may be waiting (rotatord replaced the key, or its signing
	// key was removed): look at once, not at the next interval.
	c.wakeLocked()
	switch {
	case c.allRefusedLocked():
		c.recordErrLocked(fmt.Errorf("servers refuse every key held (last %s): %w", k.pub, err))
		if c.state == StateRejected {
			c.cfg.Log.Debug("servers refused a probe", "agent", c.cfg.Name, "key", k.pub, "err", err)
			return
		}
		c.cfg.Log.Error("servers refuse every key held; waiting for new creds",
			"agent", c.cfg.Name, "key", k.pub, "err", err)
		c.setStateLocked(StateRejected, err)
	case k == c.cur && c.fb != nil:
		c.recordErrLocked(fmt.Errorf("servers refused key %s, falling back to %s: %w", k.pub, c.fb.pub, err))
		c.cfg.Log.Warn("servers refused the key; falling back to the previous one",
			"agent", c.cfg.Name, "key", k.pub, "fallback_key", c.fb.pub, "err", err)
	default:
		c.recordErrLocked(fmt.Errorf("servers refused fallback key %s: %w", k.pub, err))
	}
}

func (c *Client) asyncError(_ *nats.Conn, _ *nats.Subscription, err error) {
	if !isAuthError(err) {
		c.cfg.Log.Warn("nats error", "agent", c.cfg.Name, "err", err)
		return
	}
	c.mu.Lock()
	// nats.go reports refusals in the order of the attempts; a refusal
	// with no attempt pending is of the live connection (revoked, expired),
	// which uses the key presented last.
	k := c.presented
	if len(c.attempts) > 0 {
		k = c.attempts[0]
		c.attempts = c.attempts[1:]
	}
	if k != nil {
		c.refuseLocked(k, err)
	}
	c.mu.Unlock()
	c.flush()
}

func (c *Client) disconnected(nc *nats.Conn, err error) {
	if nc.IsClosed() {
		return // closing, not reconnecting: the closed callback follows
	}
	c.mu.Lock()
	// After refusing the connection's key the server hangs up: the
	// refusal is the news.
	if err != nil && (c.presented == nil || c.presented.refused == nil) {
		c.recordErrLocked(fmt.Errorf("disconnected: %w", err))
	}
	if !c.allRefusedLocked() {
		c.setStateLocked(StateReconnecting, err)
	}
	c.mu.Unlock()
	c.flush()
}

func (c *Client) closed(*nats.Conn) {
	c.mu.Lock()
	c.setStateLocked(StateClosed, nil)
	c.mu.Unlock()
	c.flush()
}

// Use switches to a creds file obtained some other way (a file or Vault
// secret that changed) and moves the connection over to it. The key used
// so far stays as the fallback until the servers accept the new one. Creds
// for the key in use already only replace its JWT (used from the next
// connect on). Errors: creds that do not parse; ErrRefused for a key the
// servers refused less than Config.RetryRefused ago; a closed connection.
func (c *Client) Use(file []byte) error {
	_, err := c.use(file, 0)
	return err
}

// use switches to file; a new key moves the connection over after the
// given wait (0: at once).
func (c *Client) use(file []byte, after time.Duration) (bool, error) {
	next, err := parseCreds(file)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	if next.pub == c.cur.pub {
		reconnect := false
		if next.jwt != c.cur.jwt {
			// Reissued JWT for the same key: it may be accepted where
			// the old one was not.
			c.cur.jwt, c.cur.file = next.jwt, next.file
			if c.cur.refused != nil {
				c.cur.refused = nil
				delete(c.refusedAt, next.pub)
				if c.state == StateRejected {
					reconnect = true
					c.setStateLocked(StateReconnecting, nil)
				}
			}
		}
		nc := c.nc
		c.mu.Unlock()
		c.flush()
		if reconnect && nc != nil {
			return false, c.forceReconnect(nc)
		}
		return false, nil
	}
	if at, ok := c.refusedAt[next.pub]; ok {
		if c.cfg.Now().Sub(at) < c.cfg.RetryRefused {
			c.mu.Unlock()
			return false, fmt.Errorf("use creds for %s: %w at %s", next.pub, ErrRefused, at.UTC().Format(time.RFC3339))
		}
	}
	if c.fb != nil && c.fb.pub == next.pub {
		next.accepted = c.fb.accepted
	}
	// The fallback is the most recently accepted key, preferably one not
	// refused; a key never accepted is dropped.
	var fb *creds
	for _, h := range []*creds{c.cur, c.fb} {
		if h == nil || !h.accepted || h.pub == next.pub {
			continue
		}
		if h.refused == nil {
			fb = h
			break
		}
		if fb == nil {
			fb = h
		}
	}
	c.cur, c.fb = next, fb
	if c.state == StateRejected {
		c.setStateLocked(StateReconnecting, nil)
	}
	nc := c.nc
	c.mu.Unlock()
	c.flush()
	c.cfg.Log.Info("switching to new credentials", "agent", c.cfg.Name, "key", next.pub)
	if nc == nil {
		return true, nil
	}
	if after > 0 {
		c.reconnectIn(nc, min(after, maxPacedWait))
		return true, nil
	}
	return true, c.forceReconnect(nc)
}

// reconnectIn moves the connection over to the current creds after d, as
// rotatord asked: it paces the reconnects of a fleet it re-issued at once.
// Meanwhile a client the servers refuse waits (reconnectDelay), and one
// still connected stays on its key.
func (c *Client) reconnectIn(nc *nats.Conn, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paced != nil {
		c.paced.Stop()
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		c.mu.Lock()
		if c.paced == t {
			c.paced = nil
		}
		// Connected on the newest key already (an attempt that did not
		// wait): nothing to move.
		done := c.state == StateConnected && c.presented == c.cur
		c.mu.Unlock()
		if done && nc.IsConnected() {
			return
		}
		if err := c.forceReconnect(nc); err != nil {
			c.cfg.Log.Debug("paced reconnect", "agent", c.cfg.Name, "err", err)
		}
	})
	c.paced = t
}

func (c *Client) forceReconnect(nc *nats.Conn) error {
	c.mu.Lock()
	// A move to new creds: nothing to look for first, and a reconnect
	// waiting for a look goes now.
	c.up, c.looking = false, false
	c.mu.Unlock()
	if err := nc.ForceReconnect(); err != nil {
		return fmt.Errorf("reconnect with new creds: %w", err)
	}
	return nil
}

// lookFirst is nats.go's callback before each reconnect attempt. The first
// attempt after the servers dropped a connection that a poller (Run, a
// watcher) keeps fresh waits for the pollers to look for new creds: when
// rotatord removed the signing key that signed the current JWT (an
// emergency re-key), the servers would refuse it, and a fleet presenting
// its dropped keys costs the servers a handshake per agent while they are
// still dropping the others. The look ends the wait (lookDone): new creds
// reconnect at once or when rotatord asked (ReconnectAfterHeader), and
// nothing new, or a failed look, lets the attempt go with the key held.
// ok is false when there is nothing to wait for.
func (c *Client) lookFirst(servers []nats.Server) (*nats.Server, time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.up || c.pollers == 0 || len(servers) == 0 || c.state == StateClosed {
		return nil, 0, false
	}
	c.up, c.looking = false, true
	c.wakeLocked()
	return &servers[0], maxLookWait, true
}

// lookDone runs after each look of a poller: a reconnect waiting for it
// (lookFirst) goes now, unless the look scheduled a paced one, which ends
// the wait when it fires.
func (c *Client) lookDone() {
	c.mu.Lock()
	if !c.looking {
		c.mu.Unlock()
		return
	}
	c.looking = false
	nc, paced := c.nc, c.paced != nil
	c.mu.Unlock()
	if paced || nc == nil {
		return
	}
	if err := c.forceReconnect(nc); err != nil {
		c.cfg.Log.Debug("reconnect after looking for new creds", "agent", c.cfg.Name, "err", err)
	}
}
