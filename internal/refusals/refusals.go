// Package refusals counts the requests the agent API refuses and writes
// them to the audit trail in aggregate: per source address and agent name,
// one event per window with the count and the reasons, never one row per
// request. Memory is bounded whatever the number of distinct sources, names
// and keys: a source that tries more than MaxAgentsPerSource names has the
// rest counted under one key, and past MaxKeys every new key is counted
// under a single overflow key. So a flood from one address costs
// O(MaxAgentsPerSource) rows per window, and any flood O(MaxKeys).
//
// Each replica counts the refusals it answered and writes its own events.
//
// Memo, in the same package, remembers recent outcomes (refused keys, used
// proofs) for a while with bounded memory, so a repeated refusal can be
// answered without the database.
package refusals

import (
	"context"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rotatord/rotatord"
)

// Action is the audit action of the aggregated events.
const Action = "agent.auth_failed"

// Reasons of a refusal, the keys of an event's "reasons".
const (
	ReasonInvalidName    = "invalid_name"       // the agent name in the path is not a valid name
	ReasonMissingProof   = "missing_proof"      // no NKey Authorization header
	ReasonMalformed      = "malformed_proof"    // the header does not parse, or its key is not a user key
	ReasonStale          = "stale_proof"        // its time is more than the window away
	ReasonBadSignature   = "bad_signature"      // the signature does not verify
	ReasonProofV1        = "proof_v1"           // a version 1 proof
	ReasonBadBody        = "bad_body"           // the own-key body is not valid
	ReasonBadKeyProof    = "bad_key_proof"      // the new key's proof does not verify
	ReasonReplay         = "replay"             // the proof was used before
	ReasonForeignKey     = "not_agent_key"      // a key rotatord does not know, or another agent's
	ReasonRevokedKey     = "revoked_key"        // a revoked or retired key, or a revoked agent
	ReasonExpired        = "credential_expired" // the key's JWT has expired
	ReasonRateLimited    = "rate_limited"       // refused by the source's bucket (429)
	ReasonOther          = "other"
	maxSampleKeys        = 3
	defaultWindow        = time.Minute
	defaultMaxKeys       = 10_000
	defaultMaxPerSource  = 16
	maxLoggedValueLength = 64
)

// Refusal is one refused request.
type Refusal struct {
	Source string // the client's address (host only)
	Agent  string // the agent name of the path; it need not be a valid name (it is cut and cleaned)
	Key    string // the proof's user public key, when it had a well-formed one
	Reason string
}

// Sink writes audit events; registry.Store is one.
type Sink interface {
	AuditBatch(ctx context.Context, events []*rotatord.AuditEvent) error
}

// Config configures a Counter; zero values take the defaults.
type Config struct {
	Sink Sink // nil: the counts are only logged
	Log  *slog.Logger
	Now  func() time.Time
	// Window is how often Run writes the counts (default 1m).
	Window time.Duration
	// MaxKeys bounds the (source, agent) keys counted per window (default 10,000).
	MaxKeys int
	// MaxAgentsPerSource bounds the agent names counted apart for one
	// source (default 16); the others are counted together.
	MaxAgentsPerSource int
	// Timeout bounds each write (default 5s).
	Timeout time.Duration
}

// Counter aggregates refusals. It is safe for concurrent use.
type Counter struct {
	cfg Config

	mu      sync.Mutex
	since   time.Time
	keys    map[key]*entry
	sources map[string]int // agent names counted apart, per source
	pending []*rotatord.AuditEvent
}

type key struct{ source, agent string }

// Agent values of the folded keys.
const (
	otherAgents = "*" // a source's names past MaxAgentsPerSource
	overflow    = "*" // with source "*": every key past MaxKeys
)

type entry struct {
	count      int
	reasons    map[string]int
	keys       []string
	invalid    bool // the name was not a valid agent name
	first, end time.Time
}

// New returns a Counter.
func New(cfg Config) *Counter {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Window <= 0 {
		cfg.Window = defaultWindow
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = defaultMaxKeys
	}
	if cfg.MaxAgentsPerSource <= 0 {
		cfg.MaxAgentsPerSource = defaultMaxPerSource
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	return &Counter{cfg: cfg, since: cfg.Now(), keys: map[key]*entry{}, sources: map[string]int{}}
}

// Add counts one refusal. It does no I/O.
func (c *Counter) Add(r Refusal) {
	if c == nil {
		return
	}
	now := c.cfg.Now()
	source := Clean(r.Source)
	agent, invalid := r.Agent, rotatord.ValidateName("agent", r.Agent) != nil
	if invalid {
		agent = Clean(r.Agent)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k := key{source, agent}
	e, ok := c.keys[k]
	if !ok {
		if c.sources[source] >= c.cfg.MaxAgentsPerSource {
			k = key{source, otherAgents}
		}
		if e, ok = c.keys[k]; !ok && len(c.keys) >= c.cfg.MaxKeys {
			k = key{overflow, overflow}
			e, ok = c.keys[k]
		}
		if !ok {
			e = &entry{reasons: map[string]int{}, first: now}
			c.keys[k] = e
			if k.agent != otherAgents && k.source != overflow {
				c.sources[source]++
			}
		}
	}
	e.count++
	e.end = now
	e.invalid = e.invalid || (invalid && k.agent == agent)
	reason := r.Reason
	if reason == "" {
		reason = ReasonOther
	}
	e.reasons[reason]++
	if r.Key != "" && len(e.keys) < maxSampleKeys && !contains(e.keys, r.Key) {
		e.keys = append(e.keys, Clean(r.Key))
	}
}

// Flush writes one audit event per key counted since the last flush (and
// those a failed flush left) and returns how many it wrote. When the write
// fails, the events are kept for the next flush (at most MaxKeys of them).
func (c *Counter) Flush(ctx context.Context) (int, error) {
	if c == nil {
		return 0, nil
	}
	now := c.cfg.Now()
	c.mu.Lock()
	keys, since := c.keys, c.since
	c.keys, c.sources, c.since = map[key]*entry{}, map[string]int{}, now
	events := c.pending
	c.pending = nil
	c.mu.Unlock()

	total, top, topCount := 0, key{}, 0
	fresh := make([]*rotatord.AuditEvent, 0, len(keys))
	for k, e := range keys {
		total += e.count
		if e.count > topCount {
			top, topCount = k, e.count
		}
		fresh = append(fresh, c.event(k, e, since, now))
	}
	// A stable order makes the trail easier to read.
	sort.Slice(fresh, func(i, j int) bool {
		a, b := fresh[i], fresh[j]
		if a.Details["source"] != b.Details["source"] {
			return a.Details["source"].(string) < b.Details["source"].(string)
		}
		return a.Agent < b.Agent
	})
	events = append(events, fresh...)
	if len(events) == 0 {
		return 0, nil
	}
	if total > 0 {
		c.cfg.Log.Warn("agent API refusals", "refused", total, "keys", len(keys), "top_source", top.source,
			"top_agent", top.agent, "top_count", topCount, "window", now.Sub(since).Round(time.Second).String())
	}
	if c.cfg.Sink == nil {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.Timeout)
	defer cancel()
	if err := c.cfg.Sink.AuditBatch(ctx, events); err != nil {
		c.mu.Lock()
		c.pending = append(events, c.pending...)
		if over := len(c.pending) - c.cfg.MaxKeys; over > 0 {
			c.pending = c.pending[over:]
		}
		c.mu.Unlock()
		c.cfg.Log.Error("write agent API refusals to the audit trail; will retry", "events", len(events), "err", err)
		return 0, err
	}
	return len(events), nil
}

func (c *Counter) event(k key, e *entry, since, now time.Time) *rotatord.AuditEvent {
	d := map[string]any{
		"source": k.source, "count": e.count, "reasons": e.reasons,
		"window_start": since.UTC(), "window_end": now.UTC(),
		"first_at": e.first.UTC(), "last_at": e.end.UTC(),
	}
	// The top reason under "reason", for a quick read.
	best, bestN := "", 0
	for r, n := range e.reasons {
		if n > bestN || (n == bestN && r < best) {
			best, bestN = r, n
		}
	}
	d["reason"] = best
	if len(e.keys) > 0 {
		d["keys"] = e.keys
	}
	ev := &rotatord.AuditEvent{Actor: "anonymous", Action: Action, Details: d}
	switch {
	case k.source == overflow && k.agent == overflow:
		d["overflow"] = true // more keys than this replica counts apart
	case k.agent == otherAgents:
		d["other_agents"] = true // the source's names past the ones counted apart
	case e.invalid:
		d["name"] = k.agent
	default:
		ev.Agent = k.agent
	}
	return ev
}

// Run flushes every Window until ctx ends, then flushes once more.
func (c *Counter) Run(ctx context.Context) {
	t := time.NewTicker(c.cfg.Window)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			c.Flush(context.WithoutCancel(ctx)) //nolint:errcheck // logged
			return
		case <-t.C:
			c.Flush(ctx) //nolint:errcheck // logged; kept for the next flush
		}
	}
}

// Len returns the number of keys counted in the current window.
func (c *Counter) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.keys)
}

// Clean makes a value from a request fit for logs and the audit trail:
// valid UTF-8 without control characters, at most 64 bytes (longer ones end
// with "..." and their length).
func Clean(s string) string { return CleanN(s, maxLoggedValueLength) }

// CleanN is Clean with a limit of n bytes.
func CleanN(s string, n int) string {
	if len(s) > n {
		total := len(s)
		s = s[:n]
		for !utf8.ValidString(s) && len(s) > n-utf8.UTFMax {
			s = s[:len(s)-1]
		}
		s = cleanRunes(s) + "...(" + strconv.Itoa(total) + " bytes)"
		return s
	}
	return cleanRunes(s)
}

func cleanRunes(s string) string {
	s = strings.ToValidUTF8(s, "?")
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
