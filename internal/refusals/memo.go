package refusals

import (
	"container/list"
	"sync"
	"time"
)

// Memo remembers values by key for a time to live, keeping at most a bound
// of them (the least recently stored goes first). It is safe for
// concurrent use.
type Memo[V any] struct {
	ttl time.Duration
	max int

	mu   sync.Mutex
	keys map[string]*list.Element
	lru  *list.List // of *memoEntry[V], most recently stored first
}

type memoEntry[V any] struct {
	key string
	val V
	at  time.Time
}

// NewMemo returns a Memo whose entries live ttl, at most max of them.
func NewMemo[V any](ttl time.Duration, max int) *Memo[V] {
	return &Memo[V]{ttl: ttl, max: max, keys: map[string]*list.Element{}, lru: list.New()}
}

// Get returns the value stored for key less than the TTL before now.
func (m *Memo[V]) Get(key string, now time.Time) (V, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var zero V
	e, ok := m.keys[key]
	if !ok {
		return zero, false
	}
	me := e.Value.(*memoEntry[V])
	if d := now.Sub(me.at); d >= m.ttl || d < 0 {
		m.removeLocked(e)
		return zero, false
	}
	return me.val, true
}

// Put stores v for key at now.
func (m *Memo[V]) Put(key string, v V, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for e := m.lru.Back(); e != nil; {
		if now.Sub(e.Value.(*memoEntry[V]).at) < m.ttl {
			break
		}
		prev := e.Prev()
		m.removeLocked(e)
		e = prev
	}
	if e, ok := m.keys[key]; ok {
		me := e.Value.(*memoEntry[V])
		me.val, me.at = v, now
		m.lru.MoveToFront(e)
		return
	}
	if m.lru.Len() >= m.max {
		m.removeLocked(m.lru.Back())
	}
	m.keys[key] = m.lru.PushFront(&memoEntry[V]{key: key, val: v, at: now})
}

// Delete forgets key.
func (m *Memo[V]) Delete(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.keys[key]; ok {
		m.removeLocked(e)
	}
}

// Len returns the number of entries kept.
func (m *Memo[V]) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lru.Len()
}

func (m *Memo[V]) removeLocked(e *list.Element) {
	delete(m.keys, e.Value.(*memoEntry[V]).key)
	m.lru.Remove(e)
}
