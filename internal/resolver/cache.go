// Package resolver is nats-server's account resolver: an HTTP handler that
// answers `resolver: URL(...)` lookups from memory, and a Pusher that sends
// changed account JWTs to the servers on $SYS.REQ.ACCOUNT.<acc>.CLAIMS.UPDATE.
//
// The Cache is filled and kept current by the caller (from PostgreSQL with
// LISTEN/NOTIFY); a lookup never waits for the database.
package resolver

import (
	"crypto/sha512"
	"encoding/base32"
	"sync"
	"sync/atomic"
)

// Account is one account JWT as the resolver serves it.
type Account struct {
	PublicKey string
	JWT       string
	Version   int64 // grows with every re-signed JWT of the account
}

type entry struct {
	body    []byte
	etag    string // quoted, ready for the header
	version int64
	seq     uint64 // the cache's change counter when this entry was set
}

// Cache holds the account JWTs served by the Handler. It is safe for
// concurrent use; reads take a shared lock only.
type Cache struct {
	mu       sync.RWMutex
	accounts map[string]*entry
	deleted  map[string]uint64 // tombstones: key -> seq of the deletion
	seq      uint64            // counts Set and Delete calls
	operator atomic.Pointer[[]byte]
	loaded   atomic.Bool
}

// NewCache returns an empty cache. Until Replace is first called the
// Handler answers 503, so a server never mistakes "not loaded" for "unknown".
func NewCache() *Cache {
	return &Cache{accounts: make(map[string]*entry), deleted: make(map[string]uint64)}
}

func newEntry(a Account) *entry {
	return &entry{body: []byte(a.JWT), etag: ETag(a.JWT), version: a.Version}
}

// ETag is the quoted entity tag of an account JWT: a hash of the whole
// token. Not the JWT's ID (jti): nats-io/jwt hashes only the standard
// claims into it, so two JWTs of an account signed in the same second with
// different revocations share a jti.
func ETag(token string) string {
	sum := sha512.Sum512_256([]byte(token))
	return `"` + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]) + `"`
}

// Snapshot returns a mark to pass to Replace: take it before reading the
// complete set from the database.
func (c *Cache) Snapshot() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.seq
}

// Replace swaps in a complete set of accounts read after mark was taken.
// Changes made with Set and Delete since the mark win over the set, which
// may have been read before them.
func (c *Cache) Replace(all []Account, mark uint64) {
	m := make(map[string]*entry, len(all))
	for _, a := range all {
		m[a.PublicKey] = newEntry(a)
	}
	c.mu.Lock()
	for pub, e := range c.accounts {
		if e.seq > mark {
			if loaded, ok := m[pub]; !ok || loaded.version < e.version {
				m[pub] = e
			}
		}
	}
	for pub, seq := range c.deleted {
		if seq > mark {
			delete(m, pub)
		} else {
			delete(c.deleted, pub)
		}
	}
	c.accounts = m
	c.mu.Unlock()
	c.loaded.Store(true)
}

// Set adds or replaces one account, unless the cache has a newer version.
func (c *Cache) Set(a Account) {
	e := newEntry(a)
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.accounts[a.PublicKey]; ok && old.version > e.version {
		return
	}
	c.seq++
	e.seq = c.seq
	c.accounts[a.PublicKey] = e
	delete(c.deleted, a.PublicKey)
}

// Delete removes one account.
func (c *Cache) Delete(pub string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	delete(c.accounts, pub)
	c.deleted[pub] = c.seq
}

// SetOperator sets the operator JWT served at /jwt/v1/operator.
func (c *Cache) SetOperator(jwt string) {
	b := []byte(jwt)
	c.operator.Store(&b)
}

// Len returns how many accounts are cached.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.accounts)
}

// Loaded reports whether a complete set has been loaded.
func (c *Cache) Loaded() bool { return c.loaded.Load() }

func (c *Cache) get(pub string) *entry {
	c.mu.RLock()
	e := c.accounts[pub]
	c.mu.RUnlock()
	return e
}

// Lookup returns the cached JWT of an account.
func (c *Cache) Lookup(pub string) (string, bool) {
	e := c.get(pub)
	if e == nil {
		return "", false
	}
	return string(e.body), true
}
