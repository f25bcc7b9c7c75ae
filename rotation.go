package rotatord

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Rotation states, in order; RotationRolledBack ends a failed one.
const (
	RotationIssued      = "issued"      // new key and JWT exist; old and new are both valid
	RotationDistributed = "distributed" // the agent can fetch the new creds; the deadline runs
	RotationConfirmed   = "confirmed"   // the agent connected with the new key; the old key's revocation is recorded
	RotationCompleted   = "completed"   // the account JWT that revokes the old key is stored and every server answering holds it
	RotationRolledBack  = "rolled_back" // the new key is revoked, the old one kept
)

// Rotation triggers.
const (
	TriggerSchedule = "schedule"
	TriggerManual   = "manual"
	TriggerAgent    = "agent" // the agent sent its own new public key
)

// Rotation is one replacement of an agent's key.
type Rotation struct {
	ID              string
	AgentID         int64
	Agent           string
	Account         string
	AccountID       int64
	AccountKey      string
	State           string
	Trigger         string
	OldKey          string
	NewKey          string
	OldCredentialID int64
	NewCredentialID int64
	Deadline        *time.Time
	DistributedAt   *time.Time
	ConfirmedAt     *time.Time
	ConfirmedBy     string // how: "event" or "connz"
	DeliveryRef     string // e.g. the Vault version written
	Reason          string
	CreatedAt       time.Time
	UpdatedAt       time.Time
	FinishedAt      *time.Time
	// OldRevokedAt is when the old key's revocation entry was recorded (at
	// confirmation); ResignVersion is the account JWT version that first
	// carries it (0 until the re-signer stored one). The rotation is
	// completed once that version is pushed.
	OldRevokedAt  *time.Time
	ResignVersion int64
}

// ValidRotationState reports whether s is one of the rotation states.
func ValidRotationState(s string) bool {
	switch s {
	case RotationIssued, RotationDistributed, RotationConfirmed, RotationCompleted, RotationRolledBack:
		return true
	}
	return false
}

// RotationFilter selects rotations; zero fields match everything.
type RotationFilter struct {
	Agent   string // agent name
	AgentID int64  // set by the service from Agent
	Account string // account name
	State   string
	After   string // the ID of the last rotation of the previous page
	Limit   int
}

// InFlight reports whether r has not ended yet.
func (r *Rotation) InFlight() bool {
	return r.State == RotationIssued || r.State == RotationDistributed || r.State == RotationConfirmed
}

// Handoff is what a distributor hands to an agent: its new credentials.
// Seed and Creds are secret; a Handoff is never logged.
type Handoff struct {
	Account    string
	Agent      string
	RotationID string
	PublicKey  string
	JWT        string
	Seed       []byte // nil when the agent generated its own key
	Creds      []byte // creds file; nil without a seed
	IssuedAt   time.Time
	ExpiresAt  time.Time
}

// Alert severities.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Alert is something an operator must hear about.
type Alert struct {
	ID        int64     `json:"id"`
	Kind      string    `json:"kind"`
	Severity  string    `json:"severity"`
	Account   string    `json:"account,omitempty"`
	Agent     string    `json:"agent,omitempty"`
	Rotation  string    `json:"rotation,omitempty"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
}

// OutboxAlert is an alert with the channels it has reached so far.
type OutboxAlert struct {
	Alert
	Logged, WebhookDone, NATSDone bool
	Attempts                      int
}

// Proof of possession: an agent proves it holds a user seed by signing
// "rotatord-v1\n<METHOD>\n<path>\n<unix seconds>" and sending
// "Authorization: NKey <user public key>:<unix seconds>:<base64url signature>".
const (
	ProofScheme = "NKey"
	ProofWindow = 60 * time.Second
)

// ProofMessage returns the bytes an agent signs.
func ProofMessage(method, path string, unix int64) []byte {
	return []byte("rotatord-v1\n" + method + "\n" + path + "\n" + strconv.FormatInt(unix, 10))
}

// FormatProof returns the Authorization header value for a signature.
func FormatProof(pub string, unix int64, sig []byte) string {
	return fmt.Sprintf("%s %s:%d:%s", ProofScheme, pub, unix, base64.RawURLEncoding.EncodeToString(sig))
}

// ParseProof splits an Authorization header of the NKey scheme. It checks
// the form only; the caller verifies key, time and signature.
func ParseProof(header string) (pub string, unix int64, sig []byte, err error) {
	rest, ok := strings.CutPrefix(header, ProofScheme+" ")
	if !ok {
		return "", 0, nil, Errorf(EUNAUTHORIZED, "missing NKey proof of possession")
	}
	parts := strings.Split(rest, ":")
	if len(parts) != 3 {
		return "", 0, nil, Errorf(EUNAUTHORIZED, "malformed NKey proof: want <public key>:<unix seconds>:<signature>")
	}
	unix, err = strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return "", 0, nil, Errorf(EUNAUTHORIZED, "malformed NKey proof: bad timestamp")
	}
	sig, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[2], "="))
	if err != nil || len(sig) != 64 {
		return "", 0, nil, Errorf(EUNAUTHORIZED, "malformed NKey proof: bad signature encoding")
	}
	return parts[0], unix, sig, nil
}
