// Package natsrun starts a real nats-server in-process for tests and for
// `rotatord dev`: operator mode, trusting rotatord's operator, resolving
// accounts through rotatord's URL resolver.
package natsrun

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
)

// Options configures a server.
type Options struct {
	OperatorJWT   string
	SystemAccount string
	// ResolverURL is rotatord's resolver base, ".../jwt/v1/accounts/".
	ResolverURL string
	// Port is the client port; 0 picks a free one.
	Port int
	// Name is the server name; a unique one is made when empty.
	Name string
	// Configure may change the options before the server starts (TLS, cluster).
	Configure func(*server.Options)
	// Logs turns the server's own log on (to stderr).
	Logs bool
}

// Start starts a nats-server and waits until it accepts connections.
// The resolver must be answering already: the server checks it at start.
func Start(o Options) (*server.Server, error) {
	oc, err := jwt.DecodeOperatorClaims(o.OperatorJWT)
	if err != nil {
		return nil, fmt.Errorf("decode operator jwt: %w", err)
	}
	res, err := server.NewURLAccResolver(strings.TrimSuffix(o.ResolverURL, "/") + "/")
	if err != nil {
		return nil, fmt.Errorf("url resolver: %w", err)
	}
	port := o.Port
	if port == 0 {
		port = -1
	}
	opts := &server.Options{
		ServerName:       o.Name,
		Host:             "127.0.0.1",
		Port:             port,
		NoLog:            !o.Logs,
		NoSigs:           true,
		TrustedOperators: []*jwt.OperatorClaims{oc},
		SystemAccount:    o.SystemAccount,
		AccountResolver:  res,
		MaxControlLine:   4096,
	}
	if o.Configure != nil {
		o.Configure(opts)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("new nats-server: %w", err)
	}
	if o.Logs {
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("nats-server did not become ready")
	}
	return s, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// that no other call in this process returned. It picks from below the
// kernel's ephemeral range, so a listener on port 0 (rotatord's own test
// listener, a client's source port) is never handed the same port before
// the caller binds it.
func FreePort() (int, error) {
	lo, hi := freePortRange()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 256 {
		p := lo + rand.IntN(hi-lo)
		if portsTaken[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		portsTaken[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("find free port: none free in %d-%d", lo, hi)
}

var (
	portsMu    sync.Mutex
	portsTaken = map[int]bool{}
)

// freePortRange is [lo, hi) below the ephemeral port range of
// /proc/sys/net/ipv4/ip_local_port_range (32768 by default).
func freePortRange() (lo, hi int) {
	hi = 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 12000 {
				hi = n
			}
		}
	}
	return hi - 10000, hi
}
