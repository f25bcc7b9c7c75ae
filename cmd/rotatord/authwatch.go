package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rotatord/rotatord/internal/authwatch"
)

// startAuthWatch counts the NATS authentication failures that the servers
// report to the system account, and alerts on bursts and on revoked keys.
func (m *Main) startAuthWatch(reg prometheus.Registerer) error {
	m.authWatch = authwatch.New(authwatch.Config{
		Store: m.Store, Log: m.Log, Metrics: reg, Now: m.Config.Now,
		Threshold: m.Config.AuthFailThreshold, Window: m.Config.AuthFailWindow,
	})
	stop, err := m.authWatch.Subscribe(m.NATS.NC())
	if err != nil {
		return err
	}
	m.stopAuthWatch = stop
	return nil
}
