package main

import (
	"context"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord/internal/resolver"
)

// keyRotationEvery is how often a replica moves operator signing-key
// rotations along: each time it asks the servers for their VARZ.
const keyRotationEvery = 2 * time.Second

// startKeyRotations lets operator signing-key rotations ask the servers
// which operator JWT they run, and moves them along in the background.
func (m *Main) startKeyRotations(bg context.Context, pusher *resolver.Pusher) {
	m.Service.SetOperatorProber(pusher)
	m.goBackground(func() { m.Service.RunKeyRotations(bg, keyRotationEvery) })
}

// refreshOperator reloads the operator JWT that /jwt/v1/operator serves.
// It reports whether pub is the operator's key (a change notification on
// the accounts channel carries it when the operator JWT changes).
func (m *Main) refreshOperator(ctx context.Context, pub string) bool {
	if pub != "" && !nkeys.IsValidPublicOperatorKey(pub) {
		return false
	}
	op, err := m.Store.Operator(ctx)
	if err != nil {
		m.Log.Warn("reload operator jwt", "err", err)
		return true
	}
	m.Cache.SetOperator(op.JWT)
	return true
}
