package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/rotate"
)

// initPublicURL is init's part about the URL where nats-servers reach
// rotatord. With ROTATORD_PUBLIC_URL set, an operator JWT that names
// another URL is re-signed for it. It warns when that URL is loopback (the
// default without ROTATORD_PUBLIC_URL: only a nats-server on this machine
// reaches it), and when the operator JWT names a URL other than the one of
// the block printed next.
func initPublicURL(ctx context.Context, cfg Config, svc *rotate.Service, operator string, created bool, stderr io.Writer) error {
	public := cfg.publicURL()
	changed := false
	if cfg.PublicURL != "" {
		from, ok, err := svc.SetOperatorURL(ctx, rotate.Actor("cli:init"), public)
		switch {
		case errors.Is(err, rotatord.ErrUnsupported):
			fmt.Fprintf(stderr, "warning: %s\n", rotatord.ErrorMessage(err))
		case err != nil:
			return err
		case ok && !created:
			changed = true
			fmt.Fprintf(stderr, "updated the operator JWT: its resolver URL was %s, now %s; "+
				"put the block below into the nats-server configuration (running rotatord replicas serve the new operator JWT after a restart)\n",
				orNone(from), rotate.AccountServerURL(public))
		}
	}
	if !created && !changed {
		fmt.Fprintf(stderr, "operator %s already initialized; nothing changed\n", operator)
	}
	if isLoopbackURL(public) {
		how := "ROTATORD_PUBLIC_URL is not set, and"
		if cfg.PublicURL != "" {
			how = "ROTATORD_PUBLIC_URL is"
		}
		fmt.Fprintf(stderr, "warning: %s %s is a loopback address: the operator JWT and the resolver URL below point at it, "+
			"so only a nats-server on this machine reaches rotatord; set ROTATORD_PUBLIC_URL (or --public-url) to the URL "+
			"the servers reach rotatord at, and run init again: it updates the operator JWT\n", how, public)
	}
	if cfg.PublicURL == "" && !created {
		if named, err := svc.OperatorURL(ctx); err == nil && named != "" && named != rotate.AccountServerURL(public) {
			fmt.Fprintf(stderr, "warning: the operator JWT names the resolver URL %s, but the block below uses %s; "+
				"set ROTATORD_PUBLIC_URL=%s to print the block for it\n", named, rotate.AccountServerURL(public), strings.TrimSuffix(named, "/jwt/v1"))
		}
	}
	return nil
}

// isLoopbackURL reports whether u's host is this machine only.
func isLoopbackURL(u string) bool {
	parsed, err := url.Parse(u)
	if err != nil {
		return false
	}
	host := parsed.Hostname()
	if host == "" || strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
