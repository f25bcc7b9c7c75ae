package rotatord

import "time"

// ImportSet is what `rotatord import` takes over from an existing NATS
// deployment (an nsc store, or JWT and creds files), read and checked file
// by file: an operator, its accounts and their users, with the seeds of
// the operator's and accounts' keys that the source holds. User seeds are
// never part of it. Seeds are secret: Wipe clears them once applied.
type ImportSet struct {
	Operator ImportedOperator
	Accounts []*ImportedAccount
	Users    []*ImportedUser
}

// KeySeed is a key pair: its public key and its seed (secret).
type KeySeed struct {
	PublicKey string
	Seed      []byte
}

// ImportedOperator is the operator of an ImportSet. Operator holds its
// name, public key, JWT (kept as it is, so the servers keep trusting it)
// and system account.
type ImportedOperator struct {
	File string
	Operator
	// SigningKeys are the operator's signing keys its JWT lists.
	SigningKeys []string
	// Identity is the operator's own seed, nil unless the source holds it.
	Identity *KeySeed
	// Signers are the keys rotatord signs account JWTs with: the signing
	// keys whose seeds the source holds, or the identity when it holds none
	// and the operator allows it. Never empty in a set that Read returned.
	Signers []KeySeed
}

// ImportedAccount is one account of an ImportSet. Account holds what
// rotatord models of it (name, public key, description, limits, claims)
// with BaseClaims (the JWT's whole "nats" object, for what it does not
// model) and the JWT as read (JWT, JWTID).
type ImportedAccount struct {
	File    string
	Account Account
	// Issuer signed the account JWT.
	Issuer string
	// SigningKeys lists every signing key of the JWT, plain or scoped.
	SigningKeys []string
	// Held are the plain signing keys whose seeds the source holds.
	Held []KeySeed
	// IdentityHeld: the source holds the account's own seed and no
	// signing key's; rotatord then makes a signing key (and forgets the
	// identity).
	IdentityHeld bool
	// Roles are the scoped signing keys whose seeds the source holds, as
	// roles: their users become agents of the role.
	Roles []ImportedRole
	// Dropped are the listed signing keys rotatord cannot keep, and why.
	Dropped map[string]string
	// Unmodeled lists the claims rotatord cannot keep (JSON paths and why).
	Unmodeled []string
	// Revocations are the JWT's revocations: user key (or "*") to the
	// unix time at or before which its JWTs are refused.
	Revocations map[string]int64
}

// ImportedRole is a scoped signing key of an imported account: a role whose
// users get Template (nats-server expands its {{name()}}, {{tag(k)}}...).
type ImportedRole struct {
	// Name is the scope's role name (empty when nsc gave it none).
	Name     string
	Key      KeySeed
	Template UserTemplate
	// Unmodeled lists the template's claims rotatord cannot keep.
	Unmodeled []string
}

// ImportedUser is one user of an ImportSet, to become an agent whose
// active credential is its own key and JWT.
type ImportedUser struct {
	File      string
	Name      string
	PublicKey string
	// Account is the public key of the user's account; Issuer the key
	// that signed the JWT (the account or one of its signing keys).
	Account   string
	Issuer    string
	JWT       string
	JWTID     string
	IssuedAt  time.Time
	ExpiresAt time.Time // zero when the JWT never expires
	// Template is the user's permissions, limits, src, times and
	// connection types (empty for a user of a role: its JWT carries none).
	Template UserTemplate
	Tags     []string
	// Unmodeled lists the claims the agent's next JWT would not carry.
	Unmodeled []string
}

// Wipe clears every seed of the set.
func (s *ImportSet) Wipe() {
	if s == nil {
		return
	}
	if s.Operator.Identity != nil {
		clear(s.Operator.Identity.Seed)
	}
	for _, k := range s.Operator.Signers {
		clear(k.Seed)
	}
	for _, a := range s.Accounts {
		for _, k := range a.Held {
			clear(k.Seed)
		}
		for _, r := range a.Roles {
			clear(r.Key.Seed)
		}
	}
}
