package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/rotatord/rotatord/internal/varz"
)

// Server is one nats-server as its VARZ describes it.
type Server struct {
	ID      string
	Name    string
	Version string
	// TrustedOperators are the operators the server trusts.
	TrustedOperators []*jwt.OperatorClaims
	SystemAccount    string
	MaxPayload       int
	// Now is the server's time in its VARZ; Sent and Received are
	// rotatord's clock when the request went out and the reply came back.
	Now, Sent, Received time.Time
	// Err is why VARZ could not be had.
	Err error
}

func (s Server) label() string {
	if s.Name != "" && s.Name != s.ID {
		return s.Name
	}
	return s.ID
}

// URLProbe is one NATS URL and why rotatord could not connect to it.
type URLProbe struct {
	URL string
	Err error
}

// NATSProbe is what ProbeNATS found.
type NATSProbe struct {
	URLs      []URLProbe
	Connected bool // to at least one URL
	Servers   []Server
	PingErr   error
}

// ProbeNATS connects to each of the comma-separated urls with connect (as
// rotatord's own user), then through the first connection asks every
// server of the cluster who it is ($SYS.REQ.SERVER.PING) and for its VARZ.
// It waits up to timeout for each answer; the servers' replies to the ping
// are gathered until none came for a second. now is rotatord's clock.
func ProbeNATS(ctx context.Context, urls string, connect func(url string) (*nats.Conn, error), now func() time.Time, timeout time.Duration) NATSProbe {
	var p NATSProbe
	var nc *nats.Conn
	for _, u := range strings.Split(urls, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		c, err := connect(u)
		p.URLs = append(p.URLs, URLProbe{URL: u, Err: err})
		if err != nil {
			continue
		}
		if nc == nil {
			nc = c
		} else {
			c.Close()
		}
	}
	if nc == nil {
		return p
	}
	defer nc.Close()
	p.Connected = true
	ids, err := pingServers(ctx, nc, timeout)
	if err != nil {
		p.PingErr = err
		return p
	}
	for _, s := range ids {
		p.Servers = append(p.Servers, serverVarz(ctx, nc, s, now, timeout))
	}
	return p
}

// pingServers asks every server for its ID; the answers are STATSZ
// messages, each naming its server.
func pingServers(ctx context.Context, nc *nats.Conn, timeout time.Duration) ([]Server, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // the connection closes next
	if err := nc.PublishRequest("$SYS.REQ.SERVER.PING", inbox, nil); err != nil {
		return nil, fmt.Errorf("ping: %w", err)
	}
	var out []Server
	seen := map[string]bool{}
	wait := timeout
	for {
		wctx, cancel := context.WithTimeout(ctx, wait)
		m, err := sub.NextMsgWithContext(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			return out, nil
		}
		var reply struct {
			Server struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"server"`
		}
		if json.Unmarshal(m.Data, &reply) == nil && reply.Server.ID != "" && !seen[reply.Server.ID] {
			seen[reply.Server.ID] = true
			out = append(out, Server{ID: reply.Server.ID, Name: reply.Server.Name})
		}
		// The servers of a cluster answer within milliseconds of each other.
		wait = min(timeout, time.Second)
	}
}

// serverVarz asks one server for its VARZ.
func serverVarz(ctx context.Context, nc *nats.Conn, s Server, now func() time.Time, timeout time.Duration) Server {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s.Sent = now()
	m, err := nc.RequestWithContext(rctx, "$SYS.REQ.SERVER."+s.ID+".VARZ", []byte("{}"))
	s.Received = now()
	if err != nil {
		s.Err = err
		return s
	}
	reply, err := varz.Parse(m.Data)
	if err != nil {
		s.Err = err
		return s
	}
	d := reply.Data
	s.Version, s.Now, s.MaxPayload, s.SystemAccount = d.Version, d.Now, d.MaxPayload, d.SystemAccount
	if d.Name != "" {
		s.Name = d.Name
	}
	s.TrustedOperators = d.TrustedOperators()
	return s
}

// ResolverProbe is what ProbeResolver found.
type ResolverProbe struct {
	URL           string // the resolver's base, ".../jwt/v1/accounts/"
	BaseStatus    int
	Account       string
	AccountStatus int
	AccountJWT    string
	// Elapsed is the longer of the two requests.
	Elapsed time.Duration
	Err     error
}

// maxJWT bounds what the probe reads of an account JWT.
const maxJWT = 4 << 20

// ProbeResolver asks the resolver at base (".../jwt/v1/accounts/") as a
// nats-server does at start (the base, which must answer 200) and when it
// loads an account (base + account public key).
func ProbeResolver(ctx context.Context, client *http.Client, base, account string, now func() time.Time) ResolverProbe {
	p := ResolverProbe{URL: base, Account: account}
	get := func(target string) (int, []byte, time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return 0, nil, 0, err
		}
		start := now()
		resp, err := client.Do(req)
		if err != nil {
			// Not the url.Error's text: it repeats the URL.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return 0, nil, now().Sub(start), err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWT))
		return resp.StatusCode, body, now().Sub(start), err
	}
	status, _, d, err := get(base)
	if err != nil {
		p.Err = err
		return p
	}
	p.BaseStatus, p.Elapsed = status, d
	if account == "" {
		return p
	}
	status, body, d, err := get(base + account)
	if err != nil {
		p.Err = err
		return p
	}
	p.AccountStatus, p.AccountJWT, p.Elapsed = status, string(body), max(p.Elapsed, d)
	return p
}

func isAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization violation")
}
