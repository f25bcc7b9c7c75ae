package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rotatord/rotatord"
)

// Subjects of the servers' own announcements, in the system account.
const (
	// HeartbeatSubject carries every server's STATSZ, every 10 s (more
	// often right after it starts).
	HeartbeatSubject = "$SYS.SERVER.*.STATSZ"
	// ShutdownSubject carries a server's last word before it stops.
	ShutdownSubject = "$SYS.SERVER.*.SHUTDOWN"
	// PingSubject asks every server for its STATSZ.
	PingSubject = "$SYS.REQ.SERVER.PING"
)

// ErrNoReply means the server asked did not answer in time: it is not
// reachable from here now.
var ErrNoReply = errors.New("nats-server did not answer")

type statszMsg struct {
	Server serverInfo `json:"server"`
}

// WatchServers calls seen for every heartbeat of a server (its STATSZ)
// and gone for every server that announces its shutdown, with its ID, until
// stop is called. The callbacks run on nats.go's delivery goroutine: they
// must return quickly. nc must be a system account user's connection (it
// may still be connecting).
func WatchServers(nc *nats.Conn, seen func(rotatord.Server), gone func(id string)) (stop func(), err error) {
	hb, err := nc.Subscribe(HeartbeatSubject, func(m *nats.Msg) {
		var s statszMsg
		if json.Unmarshal(m.Data, &s) == nil && s.Server.ID != "" {
			seen(s.Server.server())
		}
	})
	if err != nil {
		return nil, fmt.Errorf("watch nats-server heartbeats: %w", err)
	}
	down, err := nc.Subscribe(ShutdownSubject, func(m *nats.Msg) {
		// $SYS.SERVER.<id>.SHUTDOWN
		if t := strings.Split(m.Subject, "."); len(t) == 4 && t[2] != "" {
			gone(t[2])
		}
	})
	if err != nil {
		hb.Unsubscribe() //nolint:errcheck // giving up anyway
		return nil, fmt.Errorf("watch nats-server shutdowns: %w", err)
	}
	return func() {
		hb.Unsubscribe()   //nolint:errcheck // stopping
		down.Unsubscribe() //nolint:errcheck // stopping
	}, nil
}

// Ping asks every server for its STATSZ ($SYS.REQ.SERVER.PING) and returns
// those that answered within wait (it returns early once answers stop
// coming for a moment).
func (p *Pusher) Ping(ctx context.Context, wait time.Duration) ([]rotatord.Server, error) {
	// Servers of a cluster answer within milliseconds of each other.
	out, err := askAll(ctx, p.conn(), PingSubject, wait, 100*time.Millisecond, func(data []byte) (rotatord.Server, string, bool) {
		var s statszMsg
		if json.Unmarshal(data, &s) != nil || s.Server.ID == "" {
			return rotatord.Server{}, "", false
		}
		return s.Server.server(), s.Server.ID, true
	})
	if err != nil && err != ErrNotConnected {
		return nil, fmt.Errorf("ping nats-servers: %w", err)
	}
	return out, err
}

// askAll publishes a request on subject that every server answers (one of
// $SYS.REQ.SERVER.PING's) and collects the answers parse reads (once per
// server ID) until wait is over or none came for quiet. ErrNotConnected
// without a connection.
func askAll[T any](ctx context.Context, nc *nats.Conn, subject string, wait, quiet time.Duration,
	parse func([]byte) (T, string, bool)) ([]T, error) {
	if nc == nil || !nc.IsConnected() {
		return nil, ErrNotConnected
	}
	inbox := nc.NewInbox()
	replies := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()      //nolint:errcheck // unique inbox
	sub.SetPendingLimits(-1, -1) //nolint:errcheck // only fails on a closed subscription
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var (
		out     []T
		seen    = map[string]bool{}
		quietCh <-chan time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return out, nil
		case <-quietCh:
			return out, nil
		case m := <-replies:
			if v, id, ok := parse(m.Data); ok && !seen[id] {
				seen[id] = true
				out = append(out, v)
			}
			quietCh = time.After(quiet)
		}
	}
}

type accountzReply struct {
	Server serverInfo `json:"server"`
	Data   *struct {
		Account *struct {
			JWT string `json:"jwt"`
		} `json:"account_detail"`
	} `json:"data"`
	Error *struct {
		Description string `json:"description"`
	} `json:"error"`
}

// AccountJWT asks one server ($SYS.REQ.SERVER.<id>.ACCOUNTZ) which JWT of
// an account it holds. loaded is false when the server has not loaded the
// account (it then fetches the stored JWT when a client needs it).
// ErrNoReply means the server did not answer within timeout.
func (p *Pusher) AccountJWT(ctx context.Context, serverID, accountPub string, timeout time.Duration) (token string, loaded bool, err error) {
	nc := p.conn()
	if nc == nil || !nc.IsConnected() {
		return "", false, ErrNotConnected
	}
	req, _ := json.Marshal(map[string]string{"account": accountPub})
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, "$SYS.REQ.SERVER."+serverID+".ACCOUNTZ", req)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) {
		return "", false, ErrNoReply
	}
	if err != nil {
		return "", false, fmt.Errorf("ask nats-server %s about account %s: %w", serverID, accountPub, err)
	}
	var r accountzReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return "", false, fmt.Errorf("ask nats-server %s about account %s: unreadable reply: %w", serverID, accountPub, err)
	}
	switch {
	case r.Error != nil && strings.Contains(r.Error.Description, "does not exist"):
		return "", false, nil
	case r.Error != nil:
		return "", false, fmt.Errorf("ask nats-server %s about account %s: %s", serverID, accountPub, r.Error.Description)
	case r.Data == nil || r.Data.Account == nil:
		return "", false, nil
	}
	return r.Data.Account.JWT, true, nil
}
