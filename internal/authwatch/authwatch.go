// Package authwatch watches the authentication failures that nats-servers
// report on $SYS.SERVER.<id>.CLIENT.AUTH.ERR. It attributes each failure to
// an agent (from the user key in the presented JWT), counts failures per
// source address and per agent in a sliding window, and writes an alert to
// the outbox when a key has more than Threshold failures within Window: one
// alert per key per window, not one per failure. A failure with a key that
// rotatord revoked or replaced raises an alert at once (again at most once
// per key per window).
//
// Every replica watches every failure, so each counts full windows, and
// an alert is written by whichever replica first claims the key's window in
// PostgreSQL: one alert per key and window however many replicas run.
// rotatord_auth_failures_total of each replica counts every failure
// (aggregate replicas with max, not sum).
package authwatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rotatord/rotatord"
)

// Subject is where nats-servers publish authentication failures.
const Subject = "$SYS.SERVER.*.CLIENT.AUTH.ERR"

// Alert kinds.
const (
	KindAuthFailures   = "auth_failures"
	KindRevokedKeyUsed = "revoked_key_used"
)

// Reasons of a failure, the label values of rotatord_auth_failures_total.
// nats-server reports every failure as "Authentication Failure"; these are
// rotatord's own reading of the presented JWT.
const (
	ReasonRevokedKey = "revoked_key" // a key rotatord revoked or replaced
	ReasonForgedJWT  = "forged_jwt"  // a key rotatord issued, in a JWT it did not issue
	ReasonExpired    = "expired"     // the JWT had expired
	ReasonUnknownKey = "unknown_key" // a key rotatord never issued
	ReasonBadJWT     = "bad_jwt"     // a JWT that does not decode or verify
	ReasonNoJWT      = "no_jwt"      // no JWT presented
	ReasonOther      = "other"       // a current credential refused (bad nonce signature, account trouble)
)

var allReasons = []string{ReasonRevokedKey, ReasonForgedJWT, ReasonExpired, ReasonUnknownKey, ReasonBadJWT, ReasonNoJWT, ReasonOther}

// Defaults.
const (
	DefaultThreshold = 10
	DefaultWindow    = 5 * time.Minute
	DefaultMaxKeys   = 10000
	// MaxThreshold bounds the per-key memory (threshold+1 timestamps).
	MaxThreshold = 1000
)

// ownerTTL is how long a key's owner is cached: a flood of failures with
// one key costs one query per TTL, and a revocation shows within it.
const ownerTTL = 10 * time.Second

// Store is what the watcher needs from the registry.
type Store interface {
	// FindKeyOwner returns the agent and credential of a user key, or
	// rotatord.ENOTFOUND.
	FindKeyOwner(ctx context.Context, pub, accountKey string) (*rotatord.Agent, *rotatord.Credential, error)
	// AddAlertOnce writes a unless an alert of its kind for key was
	// written (by any replica) in a window still running at now, and
	// reports whether it did; the new window runs until until.
	AddAlertOnce(ctx context.Context, a *rotatord.Alert, key string, now, until time.Time) (bool, error)
}

// Config configures a Watcher. Zero values take the defaults.
type Config struct {
	Store   Store
	Log     *slog.Logger
	Metrics prometheus.Registerer // may be nil
	Now     func() time.Time      // the clock of the window decisions
	// Threshold: an alert when a key has more than Threshold failures
	// within Window.
	Threshold int
	Window    time.Duration
	// MaxKeys bounds the keys tracked (sources plus agents, and revoked
	// keys separately) and the owners cached.
	MaxKeys int
	// Timeout bounds each database call.
	Timeout time.Duration
}

// Watcher counts authentication failures and raises alerts. Handle is safe
// for concurrent use.
type Watcher struct {
	cfg      Config
	byReason map[string]prometheus.Counter
	kick     chan struct{}

	mu       sync.Mutex
	failures *window // "source:<host>" and "agent:<account>/<agent>"
	revoked  *window // "key:<user public key>", threshold 0
	owners   map[string]ownerEntry
}

type ownerEntry struct {
	agent *rotatord.Agent
	cred  *rotatord.Credential // nil: unknown key
	at    time.Time
}

// New returns a watcher and registers rotatord_auth_failures_total on
// cfg.Metrics.
func New(cfg Config) *Watcher {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Threshold <= 0 {
		cfg.Threshold = DefaultThreshold
	}
	cfg.Threshold = min(cfg.Threshold, MaxThreshold)
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	w := &Watcher{
		cfg:      cfg,
		byReason: map[string]prometheus.Counter{},
		kick:     make(chan struct{}, 1),
		failures: newWindow(cfg.Threshold, cfg.Window, cfg.MaxKeys),
		revoked:  newWindow(0, cfg.Window, cfg.MaxKeys),
		owners:   map[string]ownerEntry{},
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rotatord_auth_failures_total",
		Help: "Authentication failures reported by nats-servers, by reason (revoked_key, forged_jwt, expired, unknown_key, bad_jwt, no_jwt, other).",
	}, []string{"reason"})
	for _, r := range allReasons {
		w.byReason[r] = vec.WithLabelValues(r)
	}
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(vec)
	}
	return w
}

// AlertKicks receives when an alert was written to the outbox.
func (w *Watcher) AlertKicks() <-chan struct{} { return w.kick }

// Subscribe handles the events nc receives: all of them, on every replica
// (see the package comment). The returned function stops and waits for the
// event being handled.
func (w *Watcher) Subscribe(nc *nats.Conn) (stop func(), err error) {
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu      sync.Mutex
		stopped bool
	)
	sub, err := nc.Subscribe(Subject, func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			w.Handle(ctx, m.Data)
		}
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch auth failures: %w", err)
	}
	// A flood must not grow the client's buffer without bound: past this
	// nats.go drops events and reports a slow consumer to the error handler.
	if err := sub.SetPendingLimits(10000, 16<<20); err != nil {
		cancel()
		sub.Unsubscribe() //nolint:errcheck // failing anyway
		return nil, fmt.Errorf("watch auth failures: %w", err)
	}
	return func() {
		sub.Unsubscribe() //nolint:errcheck // the connection may be closed already
		cancel()
		mu.Lock()
		stopped = true
		mu.Unlock()
	}, nil
}

// event is the part of a server.DisconnectEventMsg that matters.
type event struct {
	Server struct {
		Name string `json:"name"`
	} `json:"server"`
	Client struct {
		Host string `json:"host"`
		User string `json:"user"`
		Name string `json:"name"`
		JWT  string `json:"jwt"`
	} `json:"client"`
	Reason string `json:"reason"`
}

// failure is one authentication failure as rotatord reads it.
type failure struct {
	source  string
	server  string
	user    string // user public key; "" when unknown
	agent   string // "" when no agent is known
	account string // account name, or the JWT's account key when rotatord does not know it
	reason  string
	// For revoked keys: whether the use is flagged at once, how, and how
	// and when the key came to be revoked.
	flag     bool
	severity string
	how      string
}

// Handle reads one $SYS.SERVER.<id>.CLIENT.AUTH.ERR event, counts it and
// raises the alerts that are due.
func (w *Watcher) Handle(ctx context.Context, data []byte) {
	var ev event
	if err := json.Unmarshal(data, &ev); err != nil {
		w.cfg.Log.Warn("unreadable auth failure event", "err", err)
		return
	}
	f := w.classify(ctx, &ev)
	w.byReason[f.reason].Inc()
	w.cfg.Log.Debug("nats authentication failure", "source", f.source, "agent", f.agent, "account", f.account,
		"key", f.user, "reason", f.reason, "server", f.server)
	for _, a := range w.decide(f) {
		w.raise(ctx, a)
	}
}

// classify finds the key and its owner. For JWT failures the event names
// no user: the key is the subject of the presented JWT.
func (w *Watcher) classify(ctx context.Context, ev *event) failure {
	f := failure{source: ev.Client.Host, server: ev.Server.Name}
	if nkeys.IsValidPublicUserKey(ev.Client.User) {
		f.user = ev.Client.User
	}
	if ev.Client.JWT == "" {
		f.reason = ReasonNoJWT
		return f
	}
	uc, err := jwt.DecodeUserClaims(ev.Client.JWT)
	if err != nil {
		// Garbled or forged past verifying: only what the event says is left.
		f.reason = ReasonBadJWT
		if f.user != "" {
			if g, _, err := w.owner(ctx, f.user, ""); err == nil {
				f.agent, f.account = g.Name, g.Account
			}
		}
		return f
	}
	f.user = uc.Subject
	accKey := uc.IssuerAccount
	if accKey == "" {
		accKey = uc.Issuer
	}
	if !nkeys.IsValidPublicAccountKey(accKey) {
		accKey = ""
	}
	now := w.cfg.Now()
	expired := uc.Expires != 0 && now.Unix() > uc.Expires
	g, c, err := w.owner(ctx, f.user, accKey)
	switch {
	case err == nil:
		f.agent, f.account = g.Name, g.Account
		switch {
		case c.JWTID != "" && c.JWTID != uc.ID:
			f.reason = ReasonForgedJWT
		case c.State == rotatord.CredentialRevoked || c.State == rotatord.CredentialRetired || g.State == rotatord.AgentRevoked:
			f.reason = ReasonRevokedKey
			f.flag, f.severity, f.how = revokedHow(g, c)
		case expired:
			f.reason = ReasonExpired
		default:
			f.reason = ReasonOther
		}
	case errors.Is(err, rotatord.ErrNotFound):
		f.account = accKey
		f.reason = ReasonUnknownKey
		if expired {
			f.reason = ReasonExpired
		}
	default:
		// Count it anyway, by source; the registry is back soon enough.
		w.cfg.Log.Warn("find owner of failed key", "key", f.user, "err", err)
		f.account = accKey
		f.reason = ReasonOther
		if expired {
			f.reason = ReasonExpired
		}
	}
	return f
}

// owner looks a key up, through a short-lived cache that also remembers
// unknown keys.
func (w *Watcher) owner(ctx context.Context, pub, accKey string) (*rotatord.Agent, *rotatord.Credential, error) {
	k := pub + "/" + accKey
	now := w.cfg.Now()
	w.mu.Lock()
	e, ok := w.owners[k]
	w.mu.Unlock()
	if ok && now.Sub(e.at) < ownerTTL && now.Sub(e.at) >= 0 {
		if e.cred == nil {
			return nil, nil, rotatord.Errorf(rotatord.ENOTFOUND, "key %q not found", pub)
		}
		return e.agent, e.cred, nil
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	g, c, err := w.cfg.Store.FindKeyOwner(ctx, pub, accKey)
	if err != nil && !errors.Is(err, rotatord.ErrNotFound) {
		return nil, nil, err
	}
	w.mu.Lock()
	if len(w.owners) >= w.cfg.MaxKeys {
		// Crude but bounded: entries live seconds anyway.
		clear(w.owners)
	}
	w.owners[k] = ownerEntry{agent: g, cred: c, at: now}
	w.mu.Unlock()
	return g, c, err
}

// pending is an alert decided on and the window keys it covers; the first
// is the one replicas claim.
type pending struct {
	alert *rotatord.Alert
	marks []mark
}

func (p pending) key() string { return p.marks[0].key }

type mark struct {
	w    *window
	key  string
	prev time.Time
}

// decide counts f and returns the alerts that are due.
func (w *Watcher) decide(f failure) []pending {
	now := w.cfg.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []pending
	if f.flag && f.user != "" {
		key := "key:" + f.user
		if _, due, prev := w.revoked.add(key, now); due {
			out = append(out, pending{alert: w.revokedAlert(f), marks: []mark{{w.revoked, key, prev}}})
		}
	}
	var (
		src, agt         *tracker
		srcDue, agtDue   bool
		srcPrev, agtPrev time.Time
		srcKey, agtKey   string
	)
	if f.source != "" {
		// A source's alert lists who it tried to be: agents, or unknown keys.
		who := f.agent
		if who == "" && f.user != "" {
			who = "key " + f.user
		}
		srcKey = "source:" + f.source
		src, srcDue, srcPrev = w.failures.add(srcKey, now)
		src.note(f.reason, who, f.account)
	}
	if f.agent != "" {
		agtKey = "agent:" + f.account + "/" + f.agent
		agt, agtDue, agtPrev = w.failures.add(agtKey, now)
		agt.note(f.reason, f.source, f.account)
	}
	switch {
	case agtDue:
		// One alert names both when the agent's and the source's counts
		// cross together (one agent failing from one host).
		p := pending{alert: w.agentAlert(f, agt), marks: []mark{{w.failures, agtKey, agtPrev}}}
		agt.reset()
		if srcDue {
			p.marks = append(p.marks, mark{w.failures, srcKey, srcPrev})
			src.reset()
		}
		out = append(out, p)
	case srcDue:
		out = append(out, pending{alert: w.sourceAlert(f, src), marks: []mark{{w.failures, srcKey, srcPrev}}})
		src.reset()
	}
	return out
}

// revokedHow says whether the use of a revoked key is flagged at once, at
// which severity, and how and when the key was revoked. A key whose agent
// was revoked, a key replaced by a completed rotation, and a key of a
// deleted agent were all once in the agent's hands and deliberately taken
// away: whoever still presents one holds a stale or stolen copy. A key
// revoked by a rollback was never seen in use, and its late use is the
// expected sign of an agent that fetched it too late, which the
// rotation_rolled_back alert already reported: it counts toward the bursts
// only.
//
// The time is the key's own revocation: a key replaced by a rotation was
// revoked then, even when its agent was revoked or deleted later.
func revokedHow(g *rotatord.Agent, c *rotatord.Credential) (flag bool, severity, how string) {
	at := ""
	if c.RevokedAt != nil {
		at = " at " + c.RevokedAt.UTC().Format(time.RFC3339)
	}
	replaced := c.State == rotatord.CredentialRetired
	switch {
	case replaced && g.State == rotatord.AgentRevoked:
		return true, rotatord.SeverityCritical, "replaced by a rotation" + at + "; its agent has been revoked since"
	case replaced && g.ID == 0:
		return true, rotatord.SeverityWarning, "replaced by a rotation" + at + "; its agent has been deleted since"
	case g.State == rotatord.AgentRevoked:
		return true, rotatord.SeverityCritical, "revoked with its agent" + at
	case replaced:
		return true, rotatord.SeverityWarning, "replaced by a rotation" + at
	case g.ID == 0:
		return true, rotatord.SeverityWarning, "revoked" + at + "; its agent was deleted"
	}
	return false, "", "revoked when its rotation was rolled back" + at
}

func (w *Watcher) revokedAlert(f failure) *rotatord.Alert {
	who := "a deleted agent"
	if f.agent != "" {
		who = "agent " + f.agent
	}
	return &rotatord.Alert{Kind: KindRevokedKeyUsed, Severity: f.severity, Account: f.account, Agent: f.agent,
		Reason: fmt.Sprintf("connection attempt from %s with key %s of %s (account %s), %s",
			orUnknown(f.source), f.user, who, f.account, f.how)}
}

func (w *Watcher) agentAlert(f failure, t *tracker) *rotatord.Alert {
	return &rotatord.Alert{Kind: KindAuthFailures, Severity: rotatord.SeverityWarning, Account: t.account, Agent: f.agent,
		Reason: fmt.Sprintf("more than %d authentication failures within %s by agent %s (account %s) from %s (%d since the last alert: %s)",
			w.cfg.Threshold, w.cfg.Window, f.agent, t.account, peers(t), t.n, reasonCounts(t))}
}

func (w *Watcher) sourceAlert(f failure, t *tracker) *rotatord.Alert {
	a := &rotatord.Alert{Kind: KindAuthFailures, Severity: rotatord.SeverityWarning,
		Reason: fmt.Sprintf("more than %d authentication failures within %s from %s, as %s (%d since the last alert: %s)",
			w.cfg.Threshold, w.cfg.Window, f.source, peers(t), t.n, reasonCounts(t))}
	// Name the agent when the source failed as that agent only.
	if len(t.peers) == 1 && !t.morePeers && t.peers[0] == f.agent && f.agent != "" {
		a.Agent, a.Account = f.agent, f.account
	}
	return a
}

// raise writes a to the outbox; when it cannot, the keys are unmarked so
// that the next failure tries again.
func (w *Watcher) raise(ctx context.Context, p pending) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	now := w.cfg.Now()
	wrote, err := w.cfg.Store.AddAlertOnce(ctx, p.alert, p.key(), now, now.Add(w.cfg.Window))
	if err != nil {
		w.cfg.Log.Error("raise auth failure alert", "kind", p.alert.Kind, "agent", p.alert.Agent,
			"account", p.alert.Account, "err", err)
		w.mu.Lock()
		for _, m := range p.marks {
			m.w.unmark(m.key, m.prev)
		}
		w.mu.Unlock()
		return
	}
	if !wrote {
		w.cfg.Log.Debug("auth failure alert raised by another replica", "kind", p.alert.Kind, "key", p.key())
		return
	}
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func peers(t *tracker) string {
	if len(t.peers) == 0 {
		return "unknown"
	}
	s := strings.Join(t.peers, ", ")
	if t.morePeers {
		s += " and others"
	}
	return s
}

func reasonCounts(t *tracker) string {
	rs := make([]string, 0, len(t.reasons))
	for r, n := range t.reasons {
		rs = append(rs, fmt.Sprintf("%s %d", r, n))
	}
	sort.Strings(rs)
	return strings.Join(rs, ", ")
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown address"
	}
	return s
}
