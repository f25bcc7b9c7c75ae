package main

import (
	"context"
	"errors"
	"time"

	"github.com/rotatord/rotatord/internal/resolver"
	"github.com/rotatord/rotatord/internal/rotate"
)

// clusterConfig is the tracking of the cluster's servers as configured.
func (m *Main) clusterConfig() rotate.ClusterConfig {
	c := m.Config.Cluster
	if c.ForgetAfter == 0 {
		c.ForgetAfter = m.Config.ServerForgetAfter
	}
	if c.PushBudget == 0 {
		// A push waits up to the push timeout for the servers, and a second
		// one follows when a newer JWT was stored meanwhile.
		c.PushBudget = 3*m.Config.PushTimeout + 2*m.Config.DBTimeout
	}
	return c
}

// startServerWatch learns the cluster's servers from their heartbeats and
// shutdowns, and keeps what each holds current (rotate/servers.go).
func (m *Main) startServerWatch(bg context.Context) error {
	stop, err := resolver.WatchServers(m.NATS.NC(), m.Service.ServerSeen, m.Service.ServerGone)
	if err != nil {
		return err
	}
	m.stopServers = stop
	m.goBackground(func() { m.Service.RunServerSync(bg) })
	return nil
}

// discoverServers asks every server who it is, after a (re)connect.
func (m *Main) discoverServers(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := m.Service.DiscoverServers(ctx); err != nil && !errors.Is(err, context.Canceled) {
		m.Log.Warn("discover nats-servers", "err", err)
	}
}
