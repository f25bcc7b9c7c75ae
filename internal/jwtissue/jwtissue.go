// Package jwtissue creates NKeys and encodes the operator, account and user
// JWTs that nats-server trusts. It does no I/O: callers load and store keys.
package jwtissue

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
)

// NewKey creates a key pair of the given kind (nkeys.PrefixByteOperator,
// PrefixByteAccount or PrefixByteUser, each a *Key whose public key and
// private key are derived once; other kinds are nkeys' own).
func NewKey(kind nkeys.PrefixByte) (nkeys.KeyPair, error) {
	if !knownKind(kind) {
		kp, err := nkeys.CreatePair(kind)
		if err != nil {
			return nil, fmt.Errorf("create %s key: %w", kind, err)
		}
		return kp, nil
	}
	kp, err := generateKey(kind, nil)
	if err != nil {
		return nil, fmt.Errorf("create %s key: %w", kind, err)
	}
	return kp, nil
}

// FromSeed parses a seed and checks that it is of the wanted kind. The key
// pair is a *Key, ready to sign many times.
func FromSeed(seed []byte, kind nkeys.PrefixByte) (nkeys.KeyPair, error) {
	kp, err := parseSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("parse %s seed: %w", kind, err)
	}
	if kp.prefix != kind || !knownKind(kind) {
		kp.Wipe()
		return nil, fmt.Errorf("seed is not a %s key", kind)
	}
	return kp, nil
}

func knownKind(kind nkeys.PrefixByte) bool {
	return kind == nkeys.PrefixByteOperator || kind == nkeys.PrefixByteAccount || kind == nkeys.PrefixByteUser
}

// Seed returns kp's seed.
func Seed(kp nkeys.KeyPair) []byte {
	seed, err := kp.Seed()
	if err != nil {
		// Only a public-only key pair has no seed; every caller holds a full one.
		panic(fmt.Sprintf("jwtissue: key pair without seed: %v", err))
	}
	return seed
}

// Public returns kp's public key.
func Public(kp nkeys.KeyPair) string {
	pub, err := kp.PublicKey()
	if err != nil {
		panic(fmt.Sprintf("jwtissue: key pair without public key: %v", err))
	}
	return pub
}

// ValidateAccountKey returns an EINVALID error unless pub is an account public key.
func ValidateAccountKey(pub string) error {
	if len(pub) != 56 || !nkeys.IsValidPublicAccountKey(pub) {
		return rotatord.Errorf(rotatord.EINVALID, "%.60q is not an account public key", pub)
	}
	return nil
}

// ValidateUserKey returns an EINVALID error unless pub is a user public key.
func ValidateUserKey(pub string) error {
	if len(pub) != 56 || !nkeys.IsValidPublicUserKey(pub) {
		return rotatord.Errorf(rotatord.EINVALID, "%.60q is not a user public key", pub)
	}
	return nil
}

// OperatorSpec describes an operator JWT.
type OperatorSpec struct {
	Name             string
	SigningKeys      []string
	SystemAccount    string
	AccountServerURL string
}

// EncodeOperator returns the operator JWT, self-signed by its identity key.
func EncodeOperator(identity nkeys.KeyPair, spec OperatorSpec) (string, error) {
	oc := jwt.NewOperatorClaims(Public(identity))
	oc.Name = spec.Name
	oc.SystemAccount = spec.SystemAccount
	oc.AccountServerURL = spec.AccountServerURL
	oc.SigningKeys.Add(spec.SigningKeys...)
	token, err := oc.Encode(identity)
	if err != nil {
		return "", fmt.Errorf("encode operator jwt for %s: %w", spec.Name, err)
	}
	return token, nil
}

// AccountSpec describes an account JWT.
type AccountSpec struct {
	Name        string
	PublicKey   string
	Description string
	SigningKeys []string
	Limits      rotatord.Limits
	// Claims are the modeled claims (JetStream, exports, default
	// permissions, mappings, info URL, tags); its Imports are ignored:
	// Imports holds them resolved.
	Claims      rotatord.AccountClaims
	Imports     []ImportSpec
	Revocations []rotatord.Revocation
	// ScopedKeys are the account's roles: signing keys whose users get
	// their permissions from the account JWT.
	ScopedKeys []ScopedKey
	// Base, when set, is the account claims (a JWT's "nats" object) to
	// start from: everything the fields above do not set is kept from it.
	Base json.RawMessage
}

// EncodeAccount returns the account JWT signed by the operator's signing key,
// and the JWT's ID.
func EncodeAccount(operatorSigner nkeys.KeyPair, spec AccountSpec) (token, id string, err error) {
	ac, err := AccountClaimsOf(spec)
	if err != nil {
		return "", "", err
	}
	token, err = ac.Encode(operatorSigner)
	if err != nil {
		return "", "", fmt.Errorf("encode account jwt for %s: %w", spec.Name, err)
	}
	return token, ac.ID, nil
}

// UserSpec describes a user JWT.
type UserSpec struct {
	Name       string
	PublicKey  string
	AccountKey string
	// Claims are the user's permissions and limits. A direction (pub, sub)
	// without an allow entry denies ">": NATS would allow everything.
	Claims rotatord.UserTemplate
	// Scoped is for a user of a role: the JWT is signed by the role's
	// scoped key and carries no permissions or limits (Claims is ignored);
	// nats-server applies the role's template from the account JWT.
	Scoped bool
	// Tags go into the JWT either way; a role's {{tag(key)}} reads them.
	Tags    []string
	Expires time.Time
}

// EncodeUser returns a user JWT signed by signer (the account's signing
// key, or a role's scoped key when spec.Scoped), and its decoded claims (ID
// and IssuedAt are set by the encoder). NotBefore is left unset on purpose:
// jwt/v2 checks it without leeway, and a server whose clock is behind would
// refuse a JWT that is valid "from now".
func EncodeUser(signer nkeys.KeyPair, spec UserSpec) (string, *jwt.UserClaims, error) {
	uc := jwt.NewUserClaims(spec.PublicKey)
	uc.Name = spec.Name
	uc.IssuerAccount = spec.AccountKey
	uc.Expires = spec.Expires.Unix()
	uc.Tags.Add(spec.Tags...)
	if spec.Scoped {
		uc.SetScoped(true)
	} else {
		uc.UserPermissionLimits = PermissionLimits(spec.Claims)
	}
	token, err := uc.Encode(signer)
	if err != nil {
		return "", nil, fmt.Errorf("encode user jwt for %s: %w", spec.Name, err)
	}
	return token, uc, nil
}

// SortRevocations orders entries by key so that encoding is deterministic.
func SortRevocations(rs []rotatord.Revocation) {
	sort.Slice(rs, func(i, j int) bool { return rs[i].PublicKey < rs[j].PublicKey })
}
