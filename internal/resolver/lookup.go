package resolver

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// LookupSubject is where nats-servers ask for account JWTs over NATS
// ($SYS.REQ.ACCOUNT.<account public key>.CLAIMS.LOOKUP, in the system
// account): servers in `resolver: {type: cache}` mode send it for every
// account they do not hold, and take the first non-empty reply. An empty
// reply means "no such account"; the server then refuses the client.
const LookupSubject = "$SYS.REQ.ACCOUNT.*.CLAIMS.LOOKUP"

// LookupQueue is the queue group of rotatord's lookup responders, so that
// one replica answers each lookup. Every replica's cache follows
// PostgreSQL (LISTEN/NOTIFY), so any of them answers the same.
const LookupQueue = "rotatord.claims.lookup"

// Lookup answers account lookups from a Cache, never from the database: a
// server waits for the answer while a client's CONNECT is held. Close
// stops it.
type Lookup struct {
	sub                        *nats.Subscription
	cache                      *Cache
	log                        *slog.Logger
	found, notFound, notLoaded prometheus.Counter
}

// ServeLookups answers $SYS.REQ.ACCOUNT.*.CLAIMS.LOOKUP on nc, which must
// be a connection of a system account user (it may still be connecting:
// the subscription is made when it comes up). reg may be nil; otherwise
// the lookup counter is registered there.
func ServeLookups(nc *nats.Conn, cache *Cache, log *slog.Logger, reg prometheus.Registerer) (*Lookup, error) {
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rotatord_claims_lookups_total",
		Help: "Account JWT lookups over NATS ($SYS.REQ.ACCOUNT.*.CLAIMS.LOOKUP) by status (found, not_found, not_loaded).",
	}, []string{"status"})
	if reg != nil {
		if err := reg.Register(lookups); err != nil {
			return nil, fmt.Errorf("register lookup metrics: %w", err)
		}
	}
	l := &Lookup{cache: cache, log: log,
		found: lookups.WithLabelValues("found"), notFound: lookups.WithLabelValues("not_found"),
		notLoaded: lookups.WithLabelValues("not_loaded")}
	sub, err := nc.QueueSubscribe(LookupSubject, LookupQueue, l.handle)
	if err != nil {
		return nil, fmt.Errorf("subscribe to account lookups: %w", err)
	}
	l.sub = sub
	return l, nil
}

func (l *Lookup) handle(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	// $SYS.REQ.ACCOUNT.<account>.CLAIMS.LOOKUP
	tokens := strings.Split(m.Subject, ".")
	if len(tokens) != 6 {
		return
	}
	pub := tokens[3]
	if !l.cache.Loaded() {
		// Unknown is not "not found": stay silent, and the server's fetch
		// times out and is retried by the client's next connect.
		l.notLoaded.Inc()
		return
	}
	var body []byte
	if e := l.cache.get(pub); e != nil {
		body = e.body
		l.found.Inc()
	} else {
		l.notFound.Inc()
	}
	if err := m.Respond(body); err != nil {
		l.log.Warn("answer account lookup", "account", pub, "err", err)
	}
}

// Close stops answering lookups.
func (l *Lookup) Close() error {
	err := l.sub.Unsubscribe()
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		return fmt.Errorf("stop answering account lookups: %w", err)
	}
	return nil
}
