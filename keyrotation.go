package rotatord

import (
	"slices"
	"time"
)

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

// KeyRotation is the rotation of a signing key.
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
}

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

// InFlight reports whether the rotation has not ended.
func (k *KeyRotation) InFlight() bool { return k.FinishedAt == nil }

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
