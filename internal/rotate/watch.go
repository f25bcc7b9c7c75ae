package rotate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// connzEvery is how often the servers are asked who is connected while
// rotations wait for a reconnect, events or not.
const connzEvery = 30 * time.Second

// ErrNoNATS means there is no NATS connection to ask the servers over.
var ErrNoNATS = errors.New("not connected to nats")

// ConnChecker asks the servers who is connected to an account: user public
// key to the ID of the JWT it connected with.
type ConnChecker interface {
	Connected(ctx context.Context, accountPub string) (map[string]string, error)
}

// SetConnChecker sets the CONNZ checker used by Tick.
func (s *Service) SetConnChecker(c ConnChecker) { s.checker = c }

// MarkEventsMissed makes the next Tick ask the servers who is connected:
// call it after the watcher (re)connects.
func (s *Service) MarkEventsMissed() { kick(s.watchKick) }

// checkConnected confirms rotations waiting for a reconnect by listing the
// servers' connections: always for rotations past their deadline (before
// rolling them back), and for all of them after events may have been missed.
func (s *Service) checkConnected(ctx context.Context) (int, error) {
	all := false
	select {
	case <-s.watchKick:
		all = true
	default:
	}
	// Events can be lost in ways no one notices (a server restart, a
	// network blip): every so often, ask anyway while rotations wait.
	now := s.now()
	s.mu.Lock()
	if now.Sub(s.lastConnz) >= connzEvery {
		all = true
	}
	if all {
		s.lastConnz = now
	}
	s.mu.Unlock()
	// Otherwise only accounts whose rotations reached their deadline, before
	// they are rolled back.
	deadlineBefore := now
	if all {
		deadlineBefore = time.Time{}
	}
	accounts, err := s.store.DistributedAccounts(ctx, deadlineBefore)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, acc := range accounts {
		conns, err := s.checker.Connected(ctx, acc)
		if errors.Is(err, ErrNoNATS) {
			// Nothing to ask; deadlines roll back what cannot be confirmed.
			s.log.Debug("cannot list connections: nats not connected")
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("list connections of %s: %w", acc, err)
		}
		done, err := s.confirmAll(ctx, conns, "connz")
		n += done
		if err != nil {
			return n, err
		}
	}
	return n, nil
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

// NATSChecker lists connections with $SYS.REQ.ACCOUNT.<acc>.CONNZ.
type NATSChecker struct {
	Conn    func() *nats.Conn
	Timeout time.Duration // per request; default 2s
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

// Connected implements ConnChecker. Every server answers; pages of 256
// connections are fetched until no server has more.
func (c NATSChecker) Connected(ctx context.Context, accountPub string) (map[string]string, error) {
	nc := c.Conn()
	if nc == nil || !nc.IsConnected() {
		return nil, ErrNoNATS
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	// Each connection carries its JWT (about 1 KB): 256 keep a reply far
	// below the 1 MB max payload.
	const limit = 256
	out := map[string]string{}
	for offset := 0; ; offset += limit {
		req, _ := json.Marshal(map[string]any{"auth": true, "limit": limit, "offset": offset})
		inbox := nc.NewInbox()
		replies := make(chan *nats.Msg, 64)
		sub, err := nc.ChanSubscribe(inbox, replies)
		if err != nil {
			return nil, fmt.Errorf("connz: %w", err)
		}
		if err := nc.PublishRequest("$SYS.REQ.ACCOUNT."+accountPub+".CONNZ", inbox, req); err != nil {
			sub.Unsubscribe() //nolint:errcheck // unique inbox
			return nil, fmt.Errorf("connz: %w", err)
		}
		more, answered := false, 0
		deadline := time.After(timeout)
		quiet := (<-chan time.Time)(nil)
	collect:
		for {
			select {
			case <-ctx.Done():
				sub.Unsubscribe() //nolint:errcheck // unique inbox
				return nil, ctx.Err()
			case <-deadline:
				break collect
			case <-quiet:
				break collect
			case m := <-replies:
				answered++
				if n, ok := parseConnz(m.Data, out); ok {
					more = more || n == limit
				}
				quiet = time.After(100 * time.Millisecond)
			}
		}
		sub.Unsubscribe() //nolint:errcheck // unique inbox
		if answered == 0 {
			return nil, fmt.Errorf("connz of %s: no server answered", accountPub)
		}
		if !more {
			return out, nil
		}
	}
}
