package rotate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// connzEvery is how often the servers are asked about every rotation
// waiting for a reconnect, events or not.
const connzEvery = 30 * time.Second

// connzKeysPerSecond bounds how many keys the Ticks ask the servers about
// (a burst of as many in one Tick). A server answers a question about one
// key by comparing it with each connection of the account (about 1 ms for
// 10,000), without decoding their JWTs; a listing of the account's
// connections decoded and verified the JWT of every one of them for every
// page of it (about 28 s of a server's CPU for a page-by-page listing of
// 10,000 connections), which is what rotatord asked before.
const connzKeysPerSecond = 128

// ErrNoNATS means there is no NATS connection to ask the servers over.
var ErrNoNATS = errors.New("not connected to nats")

// ConnChecker asks the servers which of keys (user public keys of the
// account accountPub) are connected: key to the ID of the JWT it connected
// with ("" when unknown). An error leaves the keys without an answer
// unknown; the map still holds those found connected.
type ConnChecker interface {
	Connected(ctx context.Context, accountPub string, keys []string) (map[string]string, error)
}

// SetConnChecker sets the CONNZ checker used by Tick.
func (s *Service) SetConnChecker(c ConnChecker) { s.checker = c }

// MarkEventsMissed makes the next Ticks ask the servers about every
// rotation waiting for a reconnect: call it after the watcher (re)connects.
func (s *Service) MarkEventsMissed() { kick(s.watchKick) }

// connzCheck is what checkConnected did: rotations it confirmed, and the
// IDs of the rotations past their deadline that the servers said are not
// connected, which may be rolled back (all of them when expired is nil:
// there was no one to ask).
type connzCheck struct {
	confirmed int
	expired   []string
}

// checkConnected asks the servers about rotations waiting for a reconnect
// and confirms those whose new key is connected: first those past their
// deadline (before they are rolled back), then all the others after events
// may have been missed, and every connzEvery anyway those that have waited
// connzEvery or longer (a younger one's connect event may still be on its
// way), at most connzKeysPerSecond keys a second in all.
func (s *Service) checkConnected(ctx context.Context) (connzCheck, error) {
	now := s.now()
	res := connzCheck{expired: []string{}}
	s.mu.Lock()
	if s.connzKeys == nil {
		s.connzKeys = rate.NewLimiter(connzKeysPerSecond, connzKeysPerSecond)
	}
	budget := int(s.connzKeys.TokensAt(now))
	s.mu.Unlock()
	if budget <= 0 {
		return res, nil
	}
	expired, err := s.store.ExpiredRotations(ctx, now, budget)
	if err != nil {
		return res, err
	}
	ask := expired
	// Events can be lost in ways no one notices (a server restart, a
	// network blip, a server too busy to send them): every so often, ask
	// about every rotation anyway.
	s.mu.Lock()
	select {
	case <-s.watchKick:
		// Every rotation's event may be lost, however young.
		s.connzSweep, s.connzAfter, s.connzBefore = true, "", now
	default:
	}
	if now.Sub(s.lastConnz) >= connzEvery && !s.connzSweep {
		// A younger rotation's connect event may still be on its way.
		s.connzSweep, s.connzAfter, s.connzBefore = true, "", now.Add(-connzEvery)
	}
	sweep, after, before := s.connzSweep, s.connzAfter, s.connzBefore
	s.mu.Unlock()
	if budget := budget - len(ask); sweep && budget > 0 {
		waiting, err := s.store.WaitingRotations(ctx, before, after, budget)
		if err != nil {
			return res, err
		}
		s.mu.Lock()
		if len(waiting) < budget {
			s.connzSweep, s.lastConnz = false, now
		} else {
			s.connzAfter = waiting[len(waiting)-1].NewKey
		}
		s.mu.Unlock()
		ask = append(ask, waiting...)
	}
	s.mu.Lock()
	s.connzKeys.AllowN(now, len(ask))
	s.mu.Unlock()
	byAccount := map[string][]string{}
	for _, r := range ask {
		byAccount[r.AccountKey] = append(byAccount[r.AccountKey], r.NewKey)
	}
	answered := map[string]bool{} // accounts whose keys all got an answer
	var errs []error
	for _, acc := range slices.Sorted(maps.Keys(byAccount)) {
		keys := byAccount[acc]
		conns, err := s.checker.Connected(ctx, acc, keys)
		if errors.Is(err, ErrNoNATS) {
			// Nothing to ask; deadlines roll back what cannot be confirmed.
			s.log.Debug("cannot ask the servers who is connected: nats not connected")
			return connzCheck{confirmed: res.confirmed}, nil
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("ask the servers about %d keys of %s: %w", len(keys), acc, err))
		} else {
			answered[acc] = true
		}
		if len(conns) > 0 {
			done, err := s.confirmAll(ctx, conns, "connz")
			res.confirmed += done
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, r := range expired {
		if answered[r.AccountKey] {
			res.expired = append(res.expired, r.ID)
		}
	}
	return res, errors.Join(errs...)
}

// connectEvent is the part of $SYS.ACCOUNT.<acc>.CONNECT that matters.
type connectEvent struct {
	Client struct {
		User    string `json:"user"`
		Account string `json:"acc"`
		JWT     string `json:"jwt"`
	} `json:"client"`
}

// parseConnectEvent returns the user key of a connect event and the ID of
// the JWT it connected with ("" when unknown); ok is false for an event
// that names no user.
//
// The JWT's signature is not checked here (it was, with jwt.Decode, at
// about 55 µs an event, once per reconnect of every agent of a fleet
// rotation). It need not be: connect events reach rotatord on $SYS
// subjects of the system account, which only nats-servers and
// system-account users (rotatord's own) can publish, and a server sends one
// only after it authenticated the client with this very JWT, verifying its
// signature and the account's trust in its issuer, and the client's
// signature of the server's nonce. Checking the signature again would only
// prove that the JWT was signed by the key its own claims name, which
// anyone can arrange; it proves nothing about the connection. The ID only
// narrows a confirmation: it must equal the ID rotatord stored for the
// pending key.
func parseConnectEvent(data []byte) (user, jwtID string, ok bool) {
	var ev connectEvent
	if err := json.Unmarshal(data, &ev); err != nil || ev.Client.User == "" {
		return "", "", false
	}
	if ev.Client.JWT != "" {
		jwtID, _ = jwtissue.UnverifiedID(ev.Client.JWT) // "" when unreadable: the key alone decides
	}
	return ev.Client.User, jwtID, true
}

// Watch subscribes nc to connect events of every account and confirms
// rotations whose new key connects. Replicas share the events through a
// queue group. The returned function stops watching.
func (s *Service) Watch(nc *nats.Conn) (stop func(), err error) {
	events := make(chan *nats.Msg, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	// nats.go buffers behind this callback without limit, so a burst of
	// reconnects never drops events as a slow consumer; the callback hands
	// them to the batching loop.
	sub, err := nc.QueueSubscribe("$SYS.ACCOUNT.*.CONNECT", "rotatord-watch", func(m *nats.Msg) {
		select {
		case events <- m:
		case <-ctx.Done():
		}
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch connect events: %w", err)
	}
	sub.SetPendingLimits(-1, -1) //nolint:errcheck // only fails on a closed subscription
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.handleEvents(ctx, events)
	}()
	return func() {
		sub.Unsubscribe() //nolint:errcheck // closing anyway
		cancel()
		<-done
	}, nil
}

// handleEvents confirms in batches: one query finds which of many
// connecting keys a rotation waits for.
func (s *Service) handleEvents(ctx context.Context, events <-chan *nats.Msg) {
	for {
		var batch []*nats.Msg
		select {
		case <-ctx.Done():
			return
		case m := <-events:
			batch = append(batch, m)
		}
	drain:
		for len(batch) < 512 {
			select {
			case m := <-events:
				batch = append(batch, m)
			default:
				break drain
			}
		}
		jwtIDs := map[string]string{}
		for _, m := range batch {
			if user, id, ok := parseConnectEvent(m.Data); ok {
				jwtIDs[user] = id
			}
		}
		if len(jwtIDs) == 0 {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if _, err := s.confirmAll(qctx, jwtIDs, "event"); err != nil {
			// The events are gone; the next tick asks the servers instead.
			s.log.Warn("confirm from connect events; the scheduler will ask the servers", "err", err)
			s.MarkEventsMissed()
		}
		cancel()
	}
}

// confirmAll confirms the rotations waiting for any of the connected keys
// (user key to JWT ID), a batch per transaction, and returns how many it
// completed and the errors of batches that failed.
func (s *Service) confirmAll(ctx context.Context, conns map[string]string, how string) (int, error) {
	// Most connects are not rotations: one query finds those that are.
	waiting, err := s.waitingFor(ctx, conns)
	if err != nil {
		return 0, err
	}
	var (
		mu   sync.Mutex
		n    int
		errs []error
	)
	forEach(ctx, s.log, slices.Collect(slices.Chunk(waiting, batchSize)), func(ctx context.Context, batch []*rotatord.Rotation) error {
		done, err := s.confirm(ctx, batch, conns, how)
		if err != nil {
			// One bad rotation must not hold up the others: one by one.
			s.log.Warn("batch confirm failed; confirming one by one", "rotations", len(batch), "err", err)
			done, err = nil, nil
			for _, r := range batch {
				one, rerr := s.confirm(ctx, []*rotatord.Rotation{r}, conns, how)
				done = append(done, one...)
				err = errors.Join(err, rerr)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		n += len(done)
		if err != nil {
			errs = append(errs, err)
			return errSkip // reported once, by the caller
		}
		return nil
	})
	return n, errors.Join(errs...)
}

// NATSChecker asks the servers with $SYS.REQ.ACCOUNT.<acc>.CONNZ.
type NATSChecker struct {
	Conn    func() *nats.Conn
	Timeout time.Duration // for one call of Connected; default 2s
}

type connzReply struct {
	Data *struct {
		Conns []struct {
			AuthorizedUser string `json:"authorized_user"`
			JWT            string `json:"jwt"`
		} `json:"connections"`
	} `json:"data"`
}

// parseConnz adds the connections of one server's CONNZ reply to out (user
// key to the ID of the JWT it connected with, "" when unknown) and returns
// how many the reply listed; ok is false for a reply without data.
func parseConnz(data []byte, out map[string]string) (n int, ok bool) {
	var r connzReply
	if json.Unmarshal(data, &r) != nil || r.Data == nil {
		return 0, false
	}
	for _, ci := range r.Data.Conns {
		// Unverified for the reason given at parseConnectEvent: the reply
		// comes from a server, on rotatord's system-account inbox, and
		// lists clients it authenticated with these JWTs.
		id, _ := jwtissue.UnverifiedID(ci.JWT)
		out[ci.AuthorizedUser] = id
	}
	return len(r.Data.Conns), true
}

// Connected implements ConnChecker: one CONNZ request for each key, filtered
// by that user, all at once on one inbox; every server answers each. It
// returns once every key has an answer and no more came for a moment, or
// at the timeout with an error naming how many keys got none.
func (c NATSChecker) Connected(ctx context.Context, accountPub string, keys []string) (map[string]string, error) {
	nc := c.Conn()
	if nc == nil || !nc.IsConnected() {
		return nil, ErrNoNATS
	}
	out := map[string]string{}
	if len(keys) == 0 {
		return out, nil
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	inbox := nc.NewInbox()
	replies := make(chan *nats.Msg, 2*len(keys)+16)
	sub, err := nc.ChanSubscribe(inbox+".*", replies)
	if err != nil {
		return nil, fmt.Errorf("connz: %w", err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // unique inbox
	subject := "$SYS.REQ.ACCOUNT." + accountPub + ".CONNZ"
	for i, key := range keys {
		// A user connects a few times at most; the filter keeps the
		// server from decoding the JWTs of everyone else.
		req, _ := json.Marshal(map[string]any{"user": key, "auth": true, "limit": 16})
		if err := nc.PublishRequest(subject, inbox+"."+strconv.Itoa(i), req); err != nil {
			return out, fmt.Errorf("connz: %w", err)
		}
	}
	answered := make([]bool, len(keys))
	left := len(keys)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var quiet <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-deadline.C:
			return out, fmt.Errorf("connz of %s: %d of %d keys without an answer after %s", accountPub, left, len(keys), timeout)
		case <-quiet:
			return out, nil
		case m := <-replies:
			i, err := strconv.Atoi(m.Subject[len(inbox)+1:])
			if err != nil || i < 0 || i >= len(keys) {
				continue
			}
			// An error reply (an account the server has not loaded) is an
			// answer too: nobody of that account is connected there.
			parseConnz(m.Data, out)
			if !answered[i] {
				answered[i] = true
				left--
			}
			if left == 0 {
				// Other servers answer too: wait until they are done.
				quiet = time.After(100 * time.Millisecond)
			}
		}
	}
}
