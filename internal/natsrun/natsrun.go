// Package natsrun starts a real nats-server in-process for tests and for
// `rotatord dev`: operator mode, trusting rotatord's operator, resolving
// accounts through rotatord's URL resolver.
package natsrun

import (
	"fmt"
	"net"
	"strings"
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

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
