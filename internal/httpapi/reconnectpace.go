package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"golang.org/x/time/rate"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/ratelimit"
)

// Reconnect pacing. An emergency signing-key rotation makes the servers drop
// a whole fleet at once, and every agent looks for its new creds at once:
// if they all reconnected the moment they got them, the servers would take
// thousands of handshakes together, each slower than nats-server's first
// PING (2 s after a client's CONNECT), which nats.go takes for a failed
// handshake; the fleet would retry into the same overload. So the creds an
// agent fetches carry the time to reconnect at (rotatord.ReconnectAfterHeader):
// past a burst, creds handed out by this replica reconnect at most at
// AgentLimits.ReconnectRate. pkg/agent waits that long before it moves to
// the new creds.

// DefaultAgentReconnectRate is AgentLimits.ReconnectRate's default.
var DefaultAgentReconnectRate = ratelimit.MustParseRate("1000/s:1000")

// maxReconnectAfter bounds the delay one answer carries; a fleet too big
// for the rate reconnects in bursts after that.
const maxReconnectAfter = 30 * time.Second

// reconnectPacer schedules the reconnects of agents given new creds.
type reconnectPacer struct {
	lim *rate.Limiter // nil: no pacing
}

func newReconnectPacer(r ratelimit.Rate, off bool) reconnectPacer {
	if off {
		return reconnectPacer{}
	}
	if !r.Valid() {
		r = DefaultAgentReconnectRate
	}
	return reconnectPacer{lim: rate.NewLimiter(rate.Limit(r.PerSecond), r.Burst)}
}

// delay takes a reconnect slot at now and returns how long the agent
// should wait before it reconnects.
func (p reconnectPacer) delay(now time.Time) time.Duration {
	if p.lim == nil {
		return 0
	}
	res := p.lim.ReserveN(now, 1)
	d := res.DelayFrom(now)
	if d > maxReconnectAfter {
		res.CancelAt(now)
		return maxReconnectAfter
	}
	return d
}

// setReconnectAfter paces the reconnect of an agent answered new creds.
func (s *Server) setReconnectAfter(w http.ResponseWriter) {
	if d := s.agent.reconnects.delay(s.now()); d > 0 {
		w.Header().Set(rotatord.ReconnectAfterHeader, strconv.FormatFloat(d.Seconds(), 'f', 3, 64))
	}
}
