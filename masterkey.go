package rotatord

import "time"

// Replica is a running `rotatord serve` as it records itself in the
// database: which master keys it holds, so that a master-key rotation can
// tell whether every replica opens what it is about to seal.
type Replica struct {
	ID        string
	Host      string
	PID       int
	KeyIDs    []string // IDs of the master keys it holds (seal.KeyID), the sealing one first
	SealKeyID string   // ID of the master key it seals new values with
	StartedAt time.Time
	SeenAt    time.Time
	// Live is true when it was seen within ReplicaLive, and Silent is how
	// long ago it was seen; both by the database's clock, which every
	// replica shares.
	Live   bool
	Silent time.Duration
}

// Holds reports whether the replica holds the master key with this ID.
func (r Replica) Holds(keyID string) bool {
	for _, id := range r.KeyIDs {
		if id == keyID {
			return true
		}
	}
	return false
}

// A replica renews its record every ReplicaHeartbeat; one not seen for
// ReplicaLive is taken for stopped (crashed, or cut off from the database).
const (
	ReplicaHeartbeat = 10 * time.Second
	ReplicaLive      = 3 * ReplicaHeartbeat
)

// SealedCount is how many values of one kind (Kind, such as "signing key
// seed") the database holds sealed by one master key. KeyID is "" for
// values sealed in the first format, which does not name its key.
type SealedCount struct {
	Kind  string
	KeyID string
	Count int
}

// SealedValue is one sealed value: its kind, its owner (the public key it
// is bound to) and the ciphertext.
type SealedValue struct {
	Kind   string
	Owner  string
	Sealed []byte
}
