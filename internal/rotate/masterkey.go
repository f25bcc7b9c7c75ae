package rotate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/seal"
)

// MasterKeyStore is what master-key rotation needs from the registry: the
// replicas' records of the keys they hold, and the sealed values.
type MasterKeyStore interface {
	RecordReplica(ctx context.Context, r *rotatord.Replica) error
	DeleteReplica(ctx context.Context, id string) error
	PruneReplicas(ctx context.Context, silent time.Duration) (int64, error)
	LockReplicas(ctx context.Context) error
	Replicas(ctx context.Context, live time.Duration) ([]*rotatord.Replica, error)
	Reseal(ctx context.Context, fn func(v rotatord.SealedValue) ([]byte, error)) (map[string]int, error)
	SealedCounts(ctx context.Context) ([]rotatord.SealedCount, error)
	UnnamedSealed(ctx context.Context) ([]rotatord.SealedValue, error)
}

// forgetReplicasAfter is how long the record of a replica that stopped
// without deleting it (a crash) is kept, for `master-key status`.
const forgetReplicasAfter = 24 * time.Hour

// NewReplica returns the record of this process as a replica: a new ID,
// the host and process, and the master keys of the service's sealer.
func (s *Service) NewReplica() *rotatord.Replica {
	host, _ := os.Hostname()
	b := make([]byte, 8)
	rand.Read(b) //nolint:errcheck // crypto/rand does not fail
	return &rotatord.Replica{ID: hex.EncodeToString(b), Host: host, PID: os.Getpid(),
		KeyIDs: s.sealer.KeyIDs(), SealKeyID: s.sealer.KeyID()}
}

// RecordReplica records r (see NewReplica) in the database. Serve does it
// before it opens any sealed value, so that a master-key rotation either
// sees this replica or has committed before this replica reads anything.
func (s *Service) RecordReplica(ctx context.Context, r *rotatord.Replica) error {
	return s.store.RecordReplica(ctx, r)
}

// ForgetReplica deletes r's record (serve does when it stops).
func (s *Service) ForgetReplica(ctx context.Context, r *rotatord.Replica) error {
	return s.store.DeleteReplica(ctx, r.ID)
}

// RunReplicaHeartbeat renews r's record every interval until ctx ends, and
// forgets the records of replicas that stopped long ago. Failures are
// logged (once until the heartbeat works again): a replica that cannot
// renew its record is not live, and master-key rotations go on without it.
func (s *Service) RunReplicaHeartbeat(ctx context.Context, r *rotatord.Replica, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := s.store.RecordReplica(ctx, r)
		if err == nil && n%60 == 0 {
			_, err = s.store.PruneReplicas(ctx, forgetReplicasAfter)
		}
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil && !failing:
			s.log.Warn("replica heartbeat failed; retrying", "replica", r.ID, "err", err)
			failing = true
		case err == nil && failing:
			s.log.Info("replica heartbeat works again", "replica", r.ID)
			failing = false
		}
	}
}

// MasterKeyRotation is what RotateMasterKey did.
type MasterKeyRotation struct {
	KeyID    string         // the master key every value is sealed by now
	Resealed map[string]int // values re-sealed, by kind
	Replicas int            // live replicas, each holding and sealing with KeyID
}

// RotateMasterKey re-seals every sealed value of the database under the
// service's sealing key (the first of its sealer), in one transaction. The
// sealer must also hold the keys the values are sealed by now.
//
// It refuses (ECONFLICT, changing nothing) while a live replica does not
// hold that key or does not seal with it: such a replica could not open the
// re-sealed values, or would go on sealing under the old key. It refuses as
// well when a value does not open with the sealer's keys, naming the key
// it is sealed by. Replicas keep serving meanwhile: readers are not
// blocked, and a replica that starts meanwhile is recorded after the
// commit, so it finds the values re-sealed.
func (s *Service) RotateMasterKey(ctx context.Context, actor Actor) (*MasterKeyRotation, error) {
	out := &MasterKeyRotation{KeyID: s.sealer.KeyID()}
	err := s.inTx(ctx, func(ctx context.Context) error {
		if err := s.store.LockReplicas(ctx); err != nil {
			return err
		}
		reps, err := s.store.Replicas(ctx, rotatord.ReplicaLive)
		if err != nil {
			return err
		}
		var refusals []string
		for _, r := range reps {
			switch {
			case !r.Live:
			case !r.Holds(out.KeyID):
				refusals = append(refusals, fmt.Sprintf("replica %s does not hold master key %s", describeReplica(r), out.KeyID))
			case r.SealKeyID != out.KeyID:
				refusals = append(refusals, fmt.Sprintf("replica %s holds master key %s but seals with %s (the new key must be the first line)",
					describeReplica(r), out.KeyID, r.SealKeyID))
			default:
				out.Replicas++
			}
		}
		if len(refusals) > 0 {
			return rotatord.Errorf(rotatord.ECONFLICT, "refusing to re-seal: %s. Give every replica a ROTATORD_MASTER_KEY_FILE with the new key on the first line and the old one on the second, restart them one by one, then run this again",
				strings.Join(refusals, "; "))
		}
		missing := map[string]int{} // "kind sealed by key" -> count
		out.Resealed, err = s.store.Reseal(ctx, func(v rotatord.SealedValue) ([]byte, error) {
			if id, ok := seal.SealedBy(v.Sealed); ok && id == out.KeyID {
				return nil, nil
			}
			pt, err := s.sealer.Open(v.Sealed, []byte(v.Owner))
			if err != nil {
				missing[sealedByText(v.Kind, v.Sealed)]++
				return nil, nil
			}
			defer clear(pt)
			return s.sealer.Seal(pt, []byte(v.Owner)), nil
		})
		if err != nil {
			return err
		}
		if len(missing) > 0 {
			return rotatord.Errorf(rotatord.ECONFLICT, "refusing to re-seal: %s do not open with the keys given; add the key(s) they are sealed by to the key files and run this again",
				countsText(missing))
		}
		details := map[string]any{"key_id": out.KeyID, "replicas": out.Replicas}
		for kind, n := range out.Resealed {
			details[strings.ReplaceAll(kind, " ", "_")+"s"] = n
		}
		return s.audit(ctx, actor, "master_key.rotate", rotatord.AuditEvent{Details: details})
	})
	if err != nil {
		return nil, fmt.Errorf("rotate master key: %w", err)
	}
	s.log.Info("master key rotated", "key", out.KeyID, "resealed", out.Resealed, "replicas", out.Replicas)
	return out, nil
}

func describeReplica(r *rotatord.Replica) string {
	return fmt.Sprintf("%s (host %s, pid %d, seen %s ago)", r.ID, r.Host, r.PID, r.Silent)
}

// sealedByText is "signing key seed sealed by master key ID" or, for a
// value of the first format, "... sealed in the first format".
func sealedByText(kind string, sealed []byte) string {
	if id, ok := seal.SealedBy(sealed); ok {
		return kind + "(s) sealed by master key " + id
	}
	return kind + "(s) sealed in the first format (no key ID)"
}

// countsText writes {"x": 2, "y": 1} as "2 x, 1 y", sorted by key.
func countsText(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d %s", m[k], k)
	}
	return strings.Join(parts, ", ")
}

// MasterKeyStatus is the state of the master keys across the deployment.
type MasterKeyStatus struct {
	Replicas []*rotatord.Replica
	Sealed   []rotatord.SealedCount
	// Problems are values that cannot be opened: sealed by a key no live
	// replica holds (nor, without live replicas, the local key file).
	Problems []string
	// Notes are worth knowing but break nothing.
	Notes []string
}

// MasterKeyStatus reports which replicas hold which master keys and which
// keys seal the database's values. The service's sealer, when it has one,
// is the local key file: it checks the values that do not name their key,
// and stands in for the replicas when none is live.
func (s *Service) MasterKeyStatus(ctx context.Context) (*MasterKeyStatus, error) {
	st := &MasterKeyStatus{}
	var err error
	if st.Replicas, err = s.store.Replicas(ctx, rotatord.ReplicaLive); err != nil {
		return nil, fmt.Errorf("master key status: %w", err)
	}
	if st.Sealed, err = s.store.SealedCounts(ctx); err != nil {
		return nil, fmt.Errorf("master key status: %w", err)
	}
	var live []*rotatord.Replica
	sealWith := map[string]bool{}
	for _, r := range st.Replicas {
		if r.Live {
			live = append(live, r)
			sealWith[r.SealKeyID] = true
		}
	}
	held := func(id string) bool {
		for _, r := range live {
			if r.Holds(id) {
				return true
			}
		}
		return len(live) == 0 && s.sealer != nil && s.sealer.Holds(id)
	}
	holder := "no live replica holds"
	if len(live) == 0 {
		holder = "the local key file does not hold (and no replica is live)"
		if s.sealer == nil {
			st.Notes = append(st.Notes, "no replica is live: give --master-key-file to check the sealed values against a key file")
		}
	}
	unnamed := 0
	for _, c := range st.Sealed {
		switch {
		case c.KeyID == "":
			unnamed += c.Count
		case len(live) == 0 && s.sealer == nil:
		case !held(c.KeyID):
			st.Problems = append(st.Problems, fmt.Sprintf("%d %s(s) sealed by master key %s, which %s: they cannot be opened; put that key back as a line of ROTATORD_MASTER_KEY_FILE on every replica and restart them one by one",
				c.Count, c.Kind, c.KeyID, holder))
		}
	}
	if unnamed > 0 {
		if err := s.checkUnnamed(ctx, st, unnamed); err != nil {
			return nil, err
		}
	}
	if len(sealWith) > 1 {
		ids := make([]string, 0, len(sealWith))
		for id := range sealWith {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		st.Notes = append(st.Notes, "live replicas seal with different master keys ("+strings.Join(ids, ", ")+"): finish restarting them with the same key file")
	}
	return st, nil
}

// checkUnnamed opens the values of the first format with the local key
// file, when there is one.
func (s *Service) checkUnnamed(ctx context.Context, st *MasterKeyStatus, n int) error {
	if s.sealer == nil {
		st.Notes = append(st.Notes, fmt.Sprintf("%d value(s) are sealed in the first format, which does not name its key: give --master-key-file to check that they open; rotatord master-key rotate re-seals them", n))
		return nil
	}
	values, err := s.store.UnnamedSealed(ctx)
	if err != nil {
		return fmt.Errorf("master key status: %w", err)
	}
	failed := map[string]int{}
	for _, v := range values {
		pt, err := s.sealer.Open(v.Sealed, []byte(v.Owner))
		if err != nil {
			failed[v.Kind+"(s)"]++
			continue
		}
		clear(pt)
	}
	if len(failed) > 0 {
		st.Problems = append(st.Problems, "values sealed in the first format (no key ID) do not open with the local key file: "+countsText(failed))
	}
	st.Notes = append(st.Notes, fmt.Sprintf("%d value(s) are sealed in the first format, which does not name its key: rotatord master-key rotate re-seals them", n))
	return nil
}
