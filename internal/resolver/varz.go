package resolver

import (
	"context"
	"fmt"
	"time"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/varz"
)

// VarzSubject asks every nats-server of the cluster for its VARZ.
const VarzSubject = "$SYS.REQ.SERVER.PING.VARZ"

// varzQuiet is how long TrustedOperators waits for more replies after the
// last one: the servers of a cluster answer within milliseconds of each
// other.
const varzQuiet = 200 * time.Millisecond

// TrustedOperators asks every server ($SYS.REQ.SERVER.PING.VARZ) which
// operators it trusts, with their signing keys, and returns the answers that
// came within wait (it returns early once answers stop coming for a moment).
// ErrNotConnected without a NATS connection.
func (p *Pusher) TrustedOperators(ctx context.Context, wait time.Duration) ([]rotatord.ServerTrust, error) {
	out, err := askAll(ctx, p.conn(), VarzSubject, wait, varzQuiet, func(data []byte) (rotatord.ServerTrust, string, bool) {
		t, ok := parseVarz(data)
		return t, t.ServerID, ok
	})
	if err != nil && err != ErrNotConnected {
		return nil, fmt.Errorf("ask nats-servers for varz: %w", err)
	}
	return out, err
}

// parseVarz reads a VARZ reply's trusted operators (varz.Data's
// TrustedOperators), with their signing keys.
func parseVarz(data []byte) (rotatord.ServerTrust, bool) {
	r, err := varz.Parse(data)
	if err != nil || r.Server.ID == "" {
		return rotatord.ServerTrust{}, false
	}
	t := rotatord.ServerTrust{ServerID: r.Server.ID, ServerName: r.Server.Name, Operators: map[string][]string{}}
	if t.ServerName == "" {
		t.ServerName = t.ServerID
	}
	for _, oc := range r.Data.TrustedOperators() {
		t.Operators[oc.Subject] = append(t.Operators[oc.Subject], oc.SigningKeys...)
	}
	return t, true
}
