package rotatord

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Signing keys rotate like agents' keys: the new key is trusted first,
// every agent is moved to it in waves and confirmed by its reconnect, and
// only then is the old key removed.

// Rotation triggers of the key lifecycle.
const (
	TriggerFleet       = "fleet"        // a fleet-wide rotation (rotate-all)
	TriggerKeyRotation = "key_rotation" // the re-issue of a signing-key rotation
)

// Kinds of key rotations: what key is replaced.
const (
	KeyKindAccount  = "account"  // an account's signing key
	KeyKindRole     = "role"     // a role's scoped signing key
	KeyKindOperator = "operator" // the operator's signing key
)

// Modes of key rotations.
const (
	// KeyModeStaged adds the new key, moves every agent to it in waves and
	// removes the old key only once every agent is on the new one.
	KeyModeStaged = "staged"
	// KeyModeEmergency removes the old key at once (the servers drop every
	// user it signed) and re-issues every agent under the new key at once.
	KeyModeEmergency = "emergency"
)

// Key rotation states of accounts' and roles' signing keys (the operator's
// have their own, below).
const (
	KeyRotationAdding    = "adding"    // the new key is in the account JWT (staged); waiting for the servers to acknowledge it
	KeyRotationReissuing = "reissuing" // agents are re-issued under the new key (a fleet rotation)
	KeyRotationWaiting   = "waiting"   // some agents still hold credentials signed by an old key
	KeyRotationRemoving  = "removing"  // the old keys are out of the account JWT; waiting for the servers
	KeyRotationAbandoned = "abandoned" // stopped by an operator; both keys stay
)

// KeyRotation is the rotation of a signing key: the operator's (kind
// operator), an account's or a role's. Fields below Actor are those of
// account and role rotations; Servers those of the operator's.
type KeyRotation struct {
	ID    string
	Kind  string
	State string
	// OldKeys are the signing keys the new one replaces, NewKey the new one.
	OldKeys []string
	NewKey  string
	Actor   string
	// Servers are the nats-servers the rotation knows of, by name, with
	// what each reported last (operator kind).
	Servers []KeyServer
	// Waiting says what the rotation waits for, and what to do about it;
	// "" when it is not waiting for anything.
	Waiting    string
	CreatedAt  time.Time
	UpdatedAt  time.Time
	StepAt     time.Time // when the current state began
	FinishedAt *time.Time

	AccountID  int64
	Account    string // account name
	AccountKey string // account public key
	RoleID     int64
	Role       string // role name, for kind role
	Mode       string
	Trigger    string // TriggerManual or TriggerSchedule
	// AddedVersion is the account JWT version that first carried NewKey;
	// RemovedVersion the first one without the old keys.
	AddedVersion   int64
	RemovedVersion int64
	// RemovedAt is when the old keys were retired (the database's clock).
	RemovedAt *time.Time
	// Stragglers counts the agents still holding credentials signed by an
	// old key when last checked (or dropped, for one an operator completed).
	Stragglers int
	// StragglerAgents names some of them (reads fill it).
	StragglerAgents []string
	FleetRotation   string // the ID of the fleet rotation that re-issues the agents
	// Reason says how an operator ended it (complete, abandon).
	Reason string
}

// InFlight reports whether the rotation has not ended.
func (k *KeyRotation) InFlight() bool { return k.FinishedAt == nil }

// Kinds of signing-key rotation. Operator key rotations are described
// here; account and role key rotations share the table and the API
// (GET /v1/key-rotations/{id}).
const (
	KeyRotationOperator = "operator"
)

// States of an operator signing-key rotation, in order. Each is a committed
// step that any replica resumes.
const (
	// The new key was added to the operator JWT (both keys valid): the
	// servers must be given that JWT (`rotatord nats-config`) and restarted.
	KeyRotationAddingKey = "adding_key"
	// Every server trusts the new key: accounts are re-signed with it and
	// pushed.
	KeyRotationResigning = "resigning"
	// The old keys were removed from the operator JWT: the servers must be
	// given it and restarted again.
	KeyRotationRemovingKey = "removing_key"
	// No server trusts the old keys any more.
	KeyRotationCompleted = "completed"
)

// KeyServer is a nats-server as an operator signing-key rotation saw it in
// its VARZ: whether the operator JWT it runs trusts the new key and any of
// the old ones. Times are those of the replica that asked.
type KeyServer struct {
	Name      string    `json:"name"`
	ID        string    `json:"id"`
	TrustsNew bool      `json:"trusts_new_key"`
	TrustsOld bool      `json:"trusts_old_key"`
	LastSeen  time.Time `json:"last_seen"`
}

// Ready reports whether the server runs an operator JWT that lets the
// rotation past state: one that trusts the new key (adding_key), and no
// old one any more (removing_key).
func (s KeyServer) Ready(state string) bool {
	if state == KeyRotationRemovingKey {
		return s.TrustsNew && !s.TrustsOld
	}
	return s.TrustsNew
}

// Behind returns the servers that do not run the operator JWT this state
// needs yet, by name.
func (k *KeyRotation) Behind() []KeyServer {
	var out []KeyServer
	for _, s := range k.Servers {
		if !s.Ready(k.State) {
			out = append(out, s)
		}
	}
	return out
}

// ServerTrust is what one nats-server reports of the operators it trusts
// (VARZ): each trusted operator's public key with its signing keys.
type ServerTrust struct {
	ServerID   string
	ServerName string
	Operators  map[string][]string
}

// Trusts reports whether the server trusts signing key key of operator op.
func (t ServerTrust) Trusts(op, key string) bool {
	return slices.Contains(t.Operators[op], key)
}

// KeyRotationPolicy schedules staged rotations of an account's signing key.
type KeyRotationPolicy struct {
	Schedule string
	NextAt   time.Time
}

// PendingKey is a new signing key that a staged key rotation put in the
// account JWT before it signs anything.
type PendingKey struct {
	PublicKey string
	RoleID    int64 // 0 for an account signing key
}

// KeySchedule is an account's key rotation schedule, as the scheduler
// claims it.
type KeySchedule struct {
	AccountID int64
	Account   string
	Schedule  string
	NextAt    time.Time
}

// KeyRotationFilter selects key rotations, newest first.
type KeyRotationFilter struct {
	Account string // account name
	After   string // the ID of the last one of the previous page
	Limit   int
}

// Fleet rotation states.
const (
	FleetRunning   = "running"   // a wave is in progress
	FleetHalted    = "halted"    // a wave failed too often: resume or abort decides
	FleetCompleted = "completed" // every wave ended
	FleetAborted   = "aborted"   // an operator stopped it
)

// Fleet member states.
const (
	MemberWaiting  = "waiting"  // its wave has not started, or a rotation it cannot adopt is in flight
	MemberRotating = "rotating" // its rotation started; the rotation's state says how it ended
	MemberSkipped  = "skipped"  // revoked, or no longer on a replaced key
)

// FleetRotation re-keys every agent of an account (or of a role) in waves.
type FleetRotation struct {
	ID        string
	AccountID int64
	Account   string
	RoleID    int64
	Role      string
	// Waves are cumulative percents of the agents, the last one 100.
	Waves             []int
	HaltOnFailureRate float64
	State             string
	// Wave is the current wave, 1-based; 0 before the first started.
	Wave    int
	WaveLog []FleetWaveLog
	// Replacing are the signing keys a key rotation replaces: an agent
	// whose credentials are not signed by one of them is done.
	Replacing   []string
	KeyRotation string // the key rotation this re-issues for, or ""
	Trigger     string // TriggerFleet or TriggerKeyRotation
	Actor       string
	Reason      string // why it halted or was aborted
	CreatedAt   time.Time
	UpdatedAt   time.Time
	FinishedAt  *time.Time
	// Progress counts each wave's agents (reads fill it).
	Progress []FleetWave
}

// FleetMember is what a fleet rotation records of one agent.
type FleetMember struct {
	AgentID    int64
	State      string
	RotationID string // set when rotating
	Reason     string
}

// FleetWaveLog is what a fleet rotation records of a wave.
type FleetWaveLog struct {
	Wave      int        `json:"wave"`
	StartedAt *time.Time `json:"started_at,omitempty"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	// AuthFailures and Failed are the counts when the wave ended.
	AuthFailures int `json:"auth_failures"`
	Failed       int `json:"failed"`
	// Resumed: an operator accepted the wave's failures (resume).
	Resumed bool `json:"resumed,omitempty"`
}

// FleetWave is one wave's progress.
type FleetWave struct {
	Wave    int
	Percent int
	Agents  int
	Done    int // rotated (completed), or skipped
	Failed  int // rotation rolled back
	// Waiting are not started yet or in flight; InFlight those in flight.
	Waiting  int
	InFlight int
	// AuthFailures counts the agents of the wave (not rolled back) with an
	// auth-failure alert since the wave started.
	AuthFailures int
	StartedAt    *time.Time
	EndedAt      *time.Time
}

// Ended reports whether every agent of the wave is done or failed.
func (w FleetWave) Ended() bool { return w.Waiting == 0 }

// FailureRate is the wave's failed agents (rolled back, or with an
// auth-failure alert) as a fraction of its agents; 0 for an empty wave.
func (w FleetWave) FailureRate() float64 {
	if w.Agents == 0 {
		return 0
	}
	return float64(w.Failed+w.AuthFailures) / float64(w.Agents)
}

// FleetFilter selects fleet rotations, newest first.
type FleetFilter struct {
	Account string // account name
	After   string // the ID of the last one of the previous page
	Limit   int
}

// MaxWaves bounds the waves of a fleet rotation.
const MaxWaves = 20

// ValidateWaves checks cumulative wave percents: 1 to MaxWaves of them,
// each from 1 to 100, strictly increasing, the last one 100 (every agent).
func ValidateWaves(waves []int) error {
	if len(waves) == 0 || len(waves) > MaxWaves {
		return Errorf(EINVALID, "waves: give 1 to %d cumulative percents of the agents, such as [1, 10, 100]", MaxWaves)
	}
	prev := 0
	for i, p := range waves {
		if p < 1 || p > 100 {
			return Errorf(EINVALID, "waves[%d] is %d: each wave is a cumulative percent from 1 to 100", i, p)
		}
		if p <= prev {
			return Errorf(EINVALID, "waves[%d] is %d, not more than the wave before (%d): waves are cumulative percents, increasing", i, p, prev)
		}
		prev = p
	}
	if prev != 100 {
		return Errorf(EINVALID, "the last wave is %d%%: it must be 100, so that every agent is rotated", prev)
	}
	return nil
}

// ValidateHaltRate checks a halt_on_failure_rate: a fraction from 0 to 1.
func ValidateHaltRate(rate float64) error {
	if math.IsNaN(rate) || rate < 0 || rate > 1 {
		return Errorf(EINVALID, "halt_on_failure_rate %s: give a fraction of a wave's agents from 0 to 1, such as 0.05", fmt.Sprint(rate))
	}
	return nil
}

// WaveEnds returns, for n agents in order, the index after the last agent
// of each wave: wave i holds agents [ends[i-1], ends[i]). Each wave's end
// is its cumulative percent of n, rounded up, so the first wave of a
// non-empty fleet holds at least one agent.
func WaveEnds(n int, waves []int) []int {
	ends := make([]int, len(waves))
	for i, p := range waves {
		ends[i] = (n*p + 99) / 100
	}
	return ends
}
