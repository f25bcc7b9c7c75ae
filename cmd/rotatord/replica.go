package main

import (
	"context"
	"time"

	"github.com/rotatord/rotatord"
)

// recordReplica records this replica and the master keys it holds, before
// anything sealed is opened (see rotate.Service.RecordReplica).
func (m *Main) recordReplica(ctx context.Context) error {
	m.replica = m.Service.NewReplica()
	if err := m.Service.RecordReplica(ctx, m.replica); err != nil {
		return err
	}
	m.Log.Info("replica recorded", "replica", m.replica.ID, "master_keys", m.replica.KeyIDs, "seal_key", m.replica.SealKeyID)
	return nil
}

// warnSealed logs the sealed values this replica's key file cannot open
// (sealed by a key dropped from it too early, or by another key file):
// serve starts, since the operator's signing key opens, but whatever needs
// those values fails until the key is back.
func (m *Main) warnSealed(ctx context.Context) {
	counts, err := m.Store.SealedCounts(ctx)
	if err != nil {
		m.Log.Warn("count sealed values", "err", err)
		return
	}
	for _, c := range counts {
		if c.KeyID != "" && !m.replica.Holds(c.KeyID) {
			m.Log.Warn("values sealed by a master key this replica does not hold: they cannot be opened until that key is back in ROTATORD_MASTER_KEY_FILE",
				"kind", c.Kind, "count", c.Count, "key", c.KeyID)
		}
	}
}

// forgetReplica deletes this replica's record when it stops.
func (m *Main) forgetReplica() {
	if m.replica == nil || m.Store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := m.Service.ForgetReplica(ctx, m.replica); err != nil {
		m.Log.Warn("forget replica record; it stops being live within "+rotatord.ReplicaLive.String(), "replica", m.replica.ID, "err", err)
	}
}
