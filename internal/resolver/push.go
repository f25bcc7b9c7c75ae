package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rotatord/rotatord"
)

// ErrNotConnected means there is no NATS connection to push over; the push
// is owed and will be retried.
var ErrNotConnected = errors.New("not connected to nats")

// ErrNoAck means no server answered a push.
var ErrNoAck = errors.New("no nats-server acknowledged the push")

// ServerReply is one server's reply to a push.
type ServerReply struct {
	Server rotatord.Server // ID, Name and Cluster
	// Status is rotatord.ServerUpdated, rotatord.ServerSkipped or
	// rotatord.ServerFailed.
	Status string
	// Error is the server's reason when it refused the JWT.
	Error string
}

// PushResult counts the servers' replies to one push.
type PushResult struct {
	Updated int // "jwt updated": the server had the account loaded and applied it
	Skipped int // "jwt update [cache] skipped": the server had not loaded the account
	Failed  int // the server refused the JWT
	// Replies are the replies, one per server, in the order they came.
	Replies []ServerReply
}

// Acked reports whether any server answered.
func (r PushResult) Acked() bool { return r.Updated+r.Skipped+r.Failed > 0 }

// Pusher publishes account JWTs to every nats-server as a system-account
// user and collects one reply per server. It also asks the servers who
// they are and what they hold (servers.go).
type Pusher struct {
	conn    func() *nats.Conn
	timeout time.Duration
	quiet   time.Duration
	log     *slog.Logger
	pushes  *prometheus.CounterVec
	late    atomic.Pointer[func(accountPub, accountJWT string, r ServerReply)]
}

// lateFor is how long past its timeout a push still listens for the
// replies of servers that did not answer in time.
const lateFor = 3

// OnLateReply sets what gets the replies that come after a push gave up
// waiting (a server busy re-checking thousands of connected users answers
// late): the push is applied all the same, and recording it saves sending
// the same JWT again. Replies come from a goroutine of their own, for up
// to three push timeouts after the push returned.
func (p *Pusher) OnLateReply(f func(accountPub, accountJWT string, r ServerReply)) {
	p.late.Store(&f)
}

// NewPusher returns a Pusher over the connection that conn returns (nil
// while there is none). timeout bounds a push; once every expected server
// replied (or, expecting none, after the first reply) it waits quiet for
// servers it does not know yet. reg may be nil.
func NewPusher(conn func() *nats.Conn, timeout, quiet time.Duration, log *slog.Logger, reg prometheus.Registerer) *Pusher {
	p := &Pusher{conn: conn, timeout: timeout, quiet: quiet, log: log,
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rotatord_pushes_total",
			Help: "Account JWT pushes to NATS by outcome (acked, no_ack, not_connected, error; late_ack: a push that was no_ack or partly answered, answered later).",
		}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(p.pushes)
	}
	return p
}

// serverInfo is the "server" object of $SYS replies and events.
type serverInfo struct {
	Name    string `json:"name"`
	ID      string `json:"id"`
	Cluster string `json:"cluster"`
}

func (si serverInfo) server() rotatord.Server {
	return rotatord.Server{ID: si.ID, Name: si.Name, Cluster: si.Cluster}
}

type claimUpdateReply struct {
	Server serverInfo `json:"server"`
	Data   *struct {
		Message string `json:"message"`
	} `json:"data"`
	Error *struct {
		Description string `json:"description"`
	} `json:"error"`
}

// Push sends an account JWT on $SYS.REQ.ACCOUNT.<acc>.CLAIMS.UPDATE and
// gathers the servers' replies until every server in expect (server IDs)
// replied or the timeout passed. It returns ErrNotConnected or ErrNoAck
// when no server could be told; the caller keeps the push owed and retries.
func (p *Pusher) Push(ctx context.Context, accountPub, accountJWT string, expect []string) (PushResult, error) {
	var res PushResult
	nc := p.conn()
	if nc == nil || !nc.IsConnected() {
		p.pushes.WithLabelValues("not_connected").Inc()
		return res, ErrNotConnected
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	inbox := nc.NewInbox()
	replies := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		p.pushes.WithLabelValues("error").Inc()
		return res, fmt.Errorf("push %s: subscribe: %w", accountPub, err)
	}
	handedOff := false
	defer func() {
		if !handedOff {
			sub.Unsubscribe() //nolint:errcheck // the inbox is unique
		}
	}()
	// Up to 64 replies wait in the channel; more servers than that must not
	// be dropped as a slow consumer.
	sub.SetPendingLimits(-1, -1) //nolint:errcheck // only fails on a closed subscription
	subject := "$SYS.REQ.ACCOUNT." + accountPub + ".CLAIMS.UPDATE"
	if err := nc.PublishRequest(subject, inbox, []byte(accountJWT)); err != nil {
		p.pushes.WithLabelValues("error").Inc()
		return res, fmt.Errorf("push %s: publish: %w", accountPub, err)
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		// Flush is a round trip to the server; failing it means the
		// connection is gone or too slow.
		p.pushes.WithLabelValues("error").Inc()
		return res, fmt.Errorf("push %s: flush: %w", accountPub, err)
	}
	waiting := make(map[string]bool, len(expect))
	for _, id := range expect {
		waiting[id] = true
	}
	seen := map[string]bool{}
	var quiet <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			if late := p.late.Load(); late != nil && (len(waiting) > 0 || !res.Acked()) {
				handedOff = true
				go p.lateReplies(sub, replies, accountPub, accountJWT, seen, *late)
			}
			return p.done(accountPub, res)
		case <-quiet:
			return p.done(accountPub, res)
		case m := <-replies:
			reply, ok := p.reply(accountPub, m, seen)
			if !ok {
				continue
			}
			switch reply.Status {
			case rotatord.ServerFailed:
				res.Failed++
			case rotatord.ServerSkipped:
				res.Skipped++
			default:
				res.Updated++
			}
			res.Replies = append(res.Replies, reply)
			delete(waiting, reply.Server.ID)
			if len(waiting) == 0 {
				quiet = time.After(p.quiet)
			}
		}
	}
}

// reply reads a server's answer to a push; ok is false for an unreadable
// one or a second one of the same server.
func (p *Pusher) reply(accountPub string, m *nats.Msg, seen map[string]bool) (ServerReply, bool) {
	var r claimUpdateReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		p.log.Warn("unreadable push reply", "account", accountPub, "err", err)
		return ServerReply{}, false
	}
	if seen[r.Server.ID] {
		return ServerReply{}, false // both subjects reach a server only once, but be sure
	}
	seen[r.Server.ID] = true
	reply := ServerReply{Server: r.Server.server()}
	switch {
	case r.Error != nil:
		reply.Status, reply.Error = rotatord.ServerFailed, r.Error.Description
		p.log.Warn("nats-server refused account jwt", "account", accountPub, "server", r.Server.Name, "reason", r.Error.Description)
	case r.Data != nil && (r.Data.Message == "jwt update skipped" || r.Data.Message == "jwt update cache skipped"):
		// Full-resolver servers say the first, cache-mode servers the
		// second, when they do not hold the account.
		reply.Status = rotatord.ServerSkipped
	default:
		// "jwt updated" (or "jwt updated cache"): applied.
		reply.Status = rotatord.ServerUpdated
	}
	return reply, true
}

// lateReplies hands the replies that come after the push returned to late,
// for lateFor push timeouts, then unsubscribes.
func (p *Pusher) lateReplies(sub *nats.Subscription, replies <-chan *nats.Msg, accountPub, accountJWT string,
	seen map[string]bool, late func(accountPub, accountJWT string, r ServerReply)) {
	defer sub.Unsubscribe() //nolint:errcheck // the inbox is unique
	t := time.NewTimer(lateFor * p.timeout)
	defer t.Stop()
	counted := false
	for {
		select {
		case <-t.C:
			return
		case m := <-replies:
			if reply, ok := p.reply(accountPub, m, seen); ok {
				if !counted {
					counted = true
					p.pushes.WithLabelValues("late_ack").Inc()
				}
				p.log.Info("late reply to an account push", "account", accountPub, "server", reply.Server.Name, "status", reply.Status)
				late(accountPub, accountJWT, reply)
			}
		}
	}
}

func (p *Pusher) done(accountPub string, res PushResult) (PushResult, error) {
	if !res.Acked() {
		p.pushes.WithLabelValues("no_ack").Inc()
		return res, ErrNoAck
	}
	p.pushes.WithLabelValues("acked").Inc()
	p.log.Debug("pushed account jwt", "account", accountPub, "updated", res.Updated, "skipped", res.Skipped, "failed", res.Failed)
	return res, nil
}
