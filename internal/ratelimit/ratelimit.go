// Package ratelimit is token buckets keyed by string (a source address, an
// agent name) with bounded memory, on golang.org/x/time/rate. A key's bucket
// is forgotten once it has been idle long enough to be full again, which
// loses nothing; past the key bound, the least recently used bucket is
// evicted (that key starts again with a full bucket).
package ratelimit

import (
	"container/list"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Rate is a token bucket's refill rate and size.
type Rate struct {
	// PerSecond is the number of tokens added per second.
	PerSecond float64
	// Burst is the bucket's size: how many requests may come at once.
	Burst int
	// spec is the text it was parsed from, for String.
	spec string
}

// NewRate returns n tokens per unit with the given burst.
func NewRate(n float64, unit time.Duration, burst int) Rate {
	return Rate{PerSecond: n / unit.Seconds(), Burst: burst}
}

// ParseRate reads RATE/UNIT[:BURST], for example "10/s:20" or "300/m": RATE
// is a positive number, UNIT one of s, m, h, and BURST a whole number of at
// least 1. Without BURST the burst is twice the rate per second, at least 1.
func ParseRate(s string) (Rate, error) {
	bad := func(why string) (Rate, error) {
		return Rate{}, fmt.Errorf("rate %q: %s (want RATE/UNIT[:BURST] such as 10/s:20 or 300/m)", s, why)
	}
	spec, burstText, hasBurst := strings.Cut(strings.TrimSpace(s), ":")
	nText, unitText, ok := strings.Cut(spec, "/")
	if !ok {
		return bad("no /UNIT")
	}
	n, err := strconv.ParseFloat(nText, 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) || n <= 0 || n > 1e6 {
		return bad("RATE must be a positive number")
	}
	var unit time.Duration
	switch unitText {
	case "s":
		unit = time.Second
	case "m":
		unit = time.Minute
	case "h":
		unit = time.Hour
	default:
		return bad("UNIT must be s, m or h")
	}
	r := Rate{PerSecond: n / unit.Seconds()}
	if hasBurst {
		b, err := strconv.Atoi(burstText)
		if err != nil || b < 1 || b > 1e6 {
			return bad("BURST must be a whole number from 1")
		}
		r.Burst = b
	} else {
		r.Burst = max(1, int(2*r.PerSecond))
	}
	r.spec = strings.TrimSpace(s)
	return r, nil
}

// MustParseRate is ParseRate for constants; it panics on a bad rate.
func MustParseRate(s string) Rate {
	r, err := ParseRate(s)
	if err != nil {
		panic(err)
	}
	return r
}

// String returns the rate as it was written, or as RATE/s:BURST.
func (r Rate) String() string {
	if r.spec != "" {
		return r.spec
	}
	return strconv.FormatFloat(r.PerSecond, 'g', -1, 64) + "/s:" + strconv.Itoa(r.Burst)
}

// Set parses s into r (flag.Value).
func (r *Rate) Set(s string) error {
	p, err := ParseRate(s)
	if err != nil {
		return err
	}
	*r = p
	return nil
}

// Valid reports whether r can make a bucket.
func (r Rate) Valid() bool { return r.PerSecond > 0 && r.Burst >= 1 }

// refill is how long an empty bucket takes to be full again.
func (r Rate) refill() time.Duration {
	return time.Duration(float64(r.Burst) / r.PerSecond * float64(time.Second))
}

// wait is how long a bucket holding tokens needs until it holds one.
func (r Rate) wait(tokens float64) time.Duration {
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) / r.PerSecond * float64(time.Second))
}

// DefaultMaxKeys bounds a Limiter's buckets when New is given no bound.
const DefaultMaxKeys = 100_000

// Limiter is one token bucket per key. It is safe for concurrent use.
type Limiter struct {
	rate Rate
	max  int

	mu   sync.Mutex
	keys map[string]*list.Element
	lru  *list.List // of *bucket, most recently used first
}

type bucket struct {
	key  string
	lim  *rate.Limiter
	last time.Time
}

// New returns a Limiter with buckets of rate r, keeping at most maxKeys of
// them (DefaultMaxKeys when maxKeys <= 0). r must be Valid.
func New(r Rate, maxKeys int) *Limiter {
	if !r.Valid() {
		panic(fmt.Sprintf("ratelimit: invalid rate %v", r))
	}
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	return &Limiter{rate: r, max: maxKeys, keys: map[string]*list.Element{}, lru: list.New()}
}

// Rate returns the limiter's rate.
func (l *Limiter) Rate() Rate { return l.rate }

// Allow takes a token from key's bucket at now. When there is none it takes
// nothing and returns false with the time until there is one.
func (l *Limiter) Allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketLocked(key, now, true)
	if b.lim.AllowN(now, 1) {
		return true, 0
	}
	return false, l.rate.wait(b.lim.TokensAt(now))
}

// Check reports whether key's bucket holds a token at now without taking
// it, and if not, the time until it does. An unknown key's bucket is full.
func (l *Limiter) Check(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketLocked(key, now, false)
	if b == nil {
		return true, 0
	}
	tokens := b.lim.TokensAt(now)
	return tokens >= 1, l.rate.wait(tokens)
}

// Len returns the number of buckets kept.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}

// bucketLocked finds key's bucket, making one when create is set. It first
// forgets buckets that are full again.
func (l *Limiter) bucketLocked(key string, now time.Time, create bool) *bucket {
	refill := l.rate.refill()
	for e := l.lru.Back(); e != nil; {
		b := e.Value.(*bucket)
		if now.Sub(b.last) < refill {
			break
		}
		prev := e.Prev()
		delete(l.keys, b.key)
		l.lru.Remove(e)
		e = prev
	}
	if e, ok := l.keys[key]; ok {
		b := e.Value.(*bucket)
		if create {
			b.last = now
			l.lru.MoveToFront(e)
		}
		return b
	}
	if !create {
		return nil
	}
	if l.lru.Len() >= l.max {
		old := l.lru.Back()
		delete(l.keys, old.Value.(*bucket).key)
		l.lru.Remove(old)
	}
	b := &bucket{key: key, lim: rate.NewLimiter(rate.Limit(l.rate.PerSecond), l.rate.Burst), last: now}
	// A new bucket is full as of now, not as of the zero time.
	b.lim.SetLimitAt(now, rate.Limit(l.rate.PerSecond))
	l.keys[key] = l.lru.PushFront(b)
	return b
}
