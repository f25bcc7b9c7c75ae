package rotatord

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
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

// Proof of possession, version 2: an agent proves it holds a user seed by
// signing
//
//	rotatord-v2\n<METHOD>\n<path, with ?query when there is one>\n<unix seconds>\n<lowercase hex SHA-256 of the body>
//
// and sending "Authorization: NKey <user public key>:<unix seconds>:<base64url
// signature>". An own-key POST also proves possession of the new key with a
// key proof: the new key's signature over
//
//	rotatord-v2-key\n<agent name>\n<new public key>\n<unix seconds of the header>
const (
	ProofScheme = "NKey"
	ProofWindow = 60 * time.Second
	// ProofVersion starts every message an agent signs.
	ProofVersion = "rotatord-v2"
	// KeyProofVersion starts the message a new key signs.
	KeyProofVersion = "rotatord-v2-key"
	// ProofReplayMargin is how long a used proof is remembered past its
	// acceptance window, by the database's clock: replicas whose clocks are
	// within this of the database's never accept a proof twice.
	ProofReplayMargin = 5 * time.Minute
	// maxProofHeader bounds what ParseProof reads: a user key (56), a time
	// (up to 20) and a signature (86), with separators.
	maxProofHeader = 200
)

// ReconnectAfterHeader is the header of an agent's creds answer that tells
// it when to reconnect with them: a number of seconds (with a fraction),
// absent for at once. rotatord paces a fleet's reconnects with it (after an
// emergency rotation, every agent fetches its creds at the same moment).
const ReconnectAfterHeader = "Rotatord-Reconnect-After"

// EmptyBodyHash is BodyHash of an empty body.
const EmptyBodyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// BodyHash returns the lowercase hex SHA-256 of a request body.
func BodyHash(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// ProofMessage returns the bytes an agent signs for a request: target is
// the escaped path with "?query" when the request has one, bodyHash is
// BodyHash of the body.
func ProofMessage(method, target string, unix int64, bodyHash string) []byte {
	return []byte(ProofVersion + "\n" + method + "\n" + target + "\n" + strconv.FormatInt(unix, 10) + "\n" + bodyHash)
}

// ProofMessageV1 is what version 1 proofs signed. rotatord refuses them;
// it recognises one only to say why.
func ProofMessageV1(method, path string, unix int64) []byte {
	return []byte("rotatord-v1\n" + method + "\n" + path + "\n" + strconv.FormatInt(unix, 10))
}

// KeyProofMessage returns the bytes a new key signs in an own-key POST:
// unix is the time of the request's proof.
func KeyProofMessage(agent, newKey string, unix int64) []byte {
	return []byte(KeyProofVersion + "\n" + agent + "\n" + newKey + "\n" + strconv.FormatInt(unix, 10))
}

// FormatProof returns the Authorization header value for a signature.
func FormatProof(pub string, unix int64, sig []byte) string {
	return fmt.Sprintf("%s %s:%d:%s", ProofScheme, pub, unix, base64.RawURLEncoding.EncodeToString(sig))
}

// EncodeSignature is the base64url (unpadded) form of a signature, as
// proofs and key proofs carry it.
func EncodeSignature(sig []byte) string { return base64.RawURLEncoding.EncodeToString(sig) }

// DecodeSignature reads a base64url ed25519 signature (64 bytes, padding
// tolerated). It returns EUNAUTHORIZED for anything else.
func DecodeSignature(s string) ([]byte, error) {
	if len(s) > 90 {
		return nil, Errorf(EUNAUTHORIZED, "malformed signature: too long")
	}
	sig, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(sig) != 64 {
		return nil, Errorf(EUNAUTHORIZED, "malformed signature: want 64 bytes in base64url")
	}
	return sig, nil
}

// ParseProof splits an Authorization header of the NKey scheme. It checks
// the form only; the caller verifies key, time and signature. Its errors
// are EUNAUTHORIZED and never quote the header.
func ParseProof(header string) (pub string, unix int64, sig []byte, err error) {
	rest, ok := strings.CutPrefix(header, ProofScheme+" ")
	if !ok {
		return "", 0, nil, Errorf(EUNAUTHORIZED, "missing NKey proof of possession")
	}
	if len(rest) > maxProofHeader {
		return "", 0, nil, Errorf(EUNAUTHORIZED, "malformed NKey proof: too long")
	}
	parts := strings.Split(rest, ":")
	if len(parts) != 3 {
		return "", 0, nil, Errorf(EUNAUTHORIZED, "malformed NKey proof: want <public key>:<unix seconds>:<signature>")
	}
	unix, err = strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return "", 0, nil, Errorf(EUNAUTHORIZED, "malformed NKey proof: bad timestamp")
	}
	sig, err = DecodeSignature(parts[2])
	if err != nil {
		return "", 0, nil, Errorf(EUNAUTHORIZED, "malformed NKey proof: bad signature encoding")
	}
	return parts[0], unix, sig, nil
}
