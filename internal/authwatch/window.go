package authwatch

import (
	"container/list"
	"slices"
	"time"
)

// maxPeers bounds the sources (of an agent) or agents (of a source) that a
// tracker remembers for the alert's text.
const maxPeers = 5

// window counts failures per key in a sliding window. It keeps at most max
// keys: keys idle for a whole window are forgotten, and past max the least
// recently seen key is evicted (losing its count and its alert suppression).
// It is not safe for concurrent use.
type window struct {
	threshold int
	span      time.Duration
	max       int
	keys      map[string]*list.Element
	lru       *list.List // of *tracker, most recently seen first
}

// tracker is one key's recent failures.
type tracker struct {
	key string
	// times holds the threshold+1 most recent failures (a ring): enough to
	// tell whether more than threshold fell within the window.
	times   []time.Time
	next    int
	last    time.Time
	alerted time.Time // when the last alert for the key was raised; zero: never

	// Since the last alert, for its text.
	n         int
	reasons   map[string]int
	peers     []string
	morePeers bool
	account   string
}

func newWindow(threshold int, span time.Duration, max int) *window {
	return &window{threshold: threshold, span: span, max: max, keys: map[string]*list.Element{}, lru: list.New()}
}

// add records a failure of key at now. due reports that the key has more
// than threshold failures within the window ending at now and that no alert
// was raised for it within the last window; the key is then marked alerted
// at now, and prev is the mark to restore with unmark if the alert could not
// be raised.
func (w *window) add(key string, now time.Time) (t *tracker, due bool, prev time.Time) {
	w.expire(now)
	if e, ok := w.keys[key]; ok {
		t = e.Value.(*tracker)
		w.lru.MoveToFront(e)
	} else {
		if w.lru.Len() >= w.max {
			w.remove(w.lru.Back())
		}
		t = &tracker{key: key, times: make([]time.Time, 0, w.threshold+1), reasons: map[string]int{}}
		w.keys[key] = w.lru.PushFront(t)
	}
	t.record(now)
	if t.count(now, w.span) > w.threshold && (t.alerted.IsZero() || now.Sub(t.alerted) >= w.span) {
		prev, t.alerted = t.alerted, now
		return t, true, prev
	}
	return t, false, time.Time{}
}

// unmark restores key's alert mark after an alert failed to be raised, so
// the next failure tries again.
func (w *window) unmark(key string, prev time.Time) {
	if e, ok := w.keys[key]; ok {
		e.Value.(*tracker).alerted = prev
	}
}

// expire forgets keys whose last failure is a window old. A key still
// suppressing alerts has alerted <= last, so it is never forgotten early.
func (w *window) expire(now time.Time) {
	for e := w.lru.Back(); e != nil; {
		if now.Sub(e.Value.(*tracker).last) < w.span {
			return
		}
		prev := e.Prev()
		w.remove(e)
		e = prev
	}
}

func (w *window) remove(e *list.Element) {
	delete(w.keys, e.Value.(*tracker).key)
	w.lru.Remove(e)
}

// len is the number of keys tracked.
func (w *window) len() int { return w.lru.Len() }

func (t *tracker) record(now time.Time) {
	if len(t.times) < cap(t.times) {
		t.times = append(t.times, now)
	} else {
		t.times[t.next] = now
		t.next = (t.next + 1) % len(t.times)
	}
	t.last = now
	t.n++
}

// count is how many of the remembered failures fall within the window
// ending at now (a clock that stepped back counts its "future" ones in).
func (t *tracker) count(now time.Time, span time.Duration) int {
	n := 0
	for _, at := range t.times {
		if now.Sub(at) < span {
			n++
		}
	}
	return n
}

// note remembers a failure's reason and peer (a source for an agent's
// tracker, an agent or key for a source's tracker).
func (t *tracker) note(reason, peer, account string) {
	t.reasons[reason]++
	if account != "" {
		t.account = account
	}
	if peer == "" || slices.Contains(t.peers, peer) {
		return
	}
	if len(t.peers) < maxPeers {
		t.peers = append(t.peers, peer)
	} else {
		t.morePeers = true
	}
}

// reset starts the counts shown in the next alert.
func (t *tracker) reset() {
	t.n = 0
	clear(t.reasons)
	t.peers = t.peers[:0]
	t.morePeers = false
}
