// Package nscimport reads an existing NATS deployment, an nsc store or
// loose JWT, creds and seed files, into rotatord's domain values (a
// rotatord.ImportSet) that the service then applies (rotate.Service.Import).
// It decodes and checks every JWT, finds the seeds of the operator's and
// accounts' keys (never a user's), and converts nats-io/jwt claims into
// rotatord's model: accounts with their limits, JetStream, exports,
// imports (with their activation tokens), mappings and the other claims;
// users with their permissions. What the model has no place for is listed
// as unmodeled, for the service to refuse or drop.
//
// Scoped signing keys become roles (their templates with them), and users
// they signed agents of those roles.
package nscimport

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// File is one JWT (or creds file) to read; Path names it in messages.
type File struct {
	Path    string
	Content []byte
}

// SeedLookup returns the seed of a public key and where it was read from,
// or a nil seed when there is none. Read calls it only for operator and
// account keys, never for user keys, and wipes the returned bytes.
type SeedLookup func(pub string) (seed []byte, from string, err error)

// Source is what an import reads: the operator JWT, account JWTs, user
// JWTs (or creds files: only their JWT is read), and where to find the
// seeds of the operator's and accounts' keys.
type Source struct {
	Operator File
	Accounts []File
	Users    []File
	Seeds    SeedLookup
}

// problems collects what is wrong with a source, to report it all at once.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return rotatord.Errorf(rotatord.EINVALID, "import refused:\n  - %s", strings.Join(p, "\n  - "))
}

// Read decodes and checks every file of src into an ImportSet. Problems (a
// malformed JWT, a JWT signed by a key that does not belong, a missing or
// wrong seed) fail it with one EINVALID error that lists them all, each
// naming its file. The caller must Wipe the returned set.
func Read(src Source) (*rotatord.ImportSet, error) {
	set := &rotatord.ImportSet{}
	var bad problems
	opJWT := readJWT(src.Operator)
	oc, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		return nil, rotatord.Errorf(rotatord.EINVALID, "%s: not a valid operator JWT: %s", src.Operator.Path, err)
	}
	if err := validate(oc); err != nil {
		return nil, rotatord.Errorf(rotatord.EINVALID, "%s: operator JWT: %s", src.Operator.Path, err)
	}
	op := &set.Operator
	op.File = src.Operator.Path
	op.Operator = rotatord.Operator{Name: oc.Name, PublicKey: oc.Subject, JWT: opJWT, SystemAccount: oc.SystemAccount}
	op.SigningKeys = slices.Clone([]string(oc.SigningKeys))
	sort.Strings(op.SigningKeys)
	if oc.SystemAccount == "" {
		bad.add("%s: operator %s names no system account: rotatord connects to NATS as a user of it; add one with nsc first", src.Operator.Path, oc.Name)
	}
	seed := func(pub string, kind nkeys.PrefixByte) (*rotatord.KeySeed, error) {
		return lookupSeed(src.Seeds, pub, kind)
	}

	// The operator: its signing keys sign account JWTs. Its identity
	// signs them too (servers accept both) unless the operator demands
	// signing keys.
	if op.Identity, err = seed(oc.Subject, nkeys.PrefixByteOperator); err != nil {
		bad.add("%s", err)
	}
	for _, k := range op.SigningKeys {
		ks, err := seed(k, nkeys.PrefixByteOperator)
		if err != nil {
			bad.add("%s", err)
		} else if ks != nil {
			op.Signers = append(op.Signers, *ks)
		}
	}
	switch {
	case len(op.Signers) > 0:
	case op.Identity != nil && !oc.StrictSigningKeyUsage:
		op.Signers = []rotatord.KeySeed{{PublicKey: op.Identity.PublicKey, Seed: slices.Clone(op.Identity.Seed)}}
	case op.Identity != nil:
		bad.add("operator %s (%s) requires signing keys (strict_signing_key_usage) but none of their seeds is in the keystore (%s): rotatord must hold one to sign account JWTs",
			oc.Name, oc.Subject, strings.Join(op.SigningKeys, ", "))
	default:
		bad.add("operator %s (%s): neither the operator's seed nor the seed of any of its signing keys (%s) is in the keystore: rotatord must hold one to sign account JWTs; point --keys at the nsc keystore that holds them, or pass the seed with --operator-seed",
			oc.Name, oc.Subject, orNone(op.SigningKeys))
	}

	seen := map[string]string{}
	for _, f := range src.Accounts {
		a, err := readAccount(f, oc, seed, &bad)
		if err != nil {
			bad.add("%s", err)
			continue
		}
		if a == nil {
			continue
		}
		if prev, dup := seen[a.Account.PublicKey]; dup {
			bad.add("%s: account %s is also in %s", f.Path, a.Account.PublicKey, prev)
			wipeAccount(a)
			continue
		}
		seen[a.Account.PublicKey] = f.Path
		set.Accounts = append(set.Accounts, a)
	}

	seenUsers := map[string]bool{}
	for _, f := range src.Users {
		u := &rotatord.ImportedUser{File: f.Path, JWT: readJWT(f)}
		uc, err := jwt.DecodeUserClaims(u.JWT)
		if err != nil {
			bad.add("%s: not a valid user JWT: %s", f.Path, err)
			continue
		}
		if seenUsers[uc.Subject] {
			continue // the same user in the store and as a creds file: one is enough
		}
		seenUsers[uc.Subject] = true
		if err := validateUser(uc); err != nil {
			bad.add("%s: user JWT of %s: %s", f.Path, uc.Name, err)
			continue
		}
		readUser(u, uc)
		set.Users = append(set.Users, u)
	}
	if err := bad.err(); err != nil {
		set.Wipe()
		return nil, err
	}
	return set, nil
}

// readAccount reads one account JWT; a nil account with a nil error means
// the file was refused and its problems added to bad.
func readAccount(f File, oc *jwt.OperatorClaims, seed func(string, nkeys.PrefixByte) (*rotatord.KeySeed, error), bad *problems) (*rotatord.ImportedAccount, error) {
	raw := readJWT(f)
	ac, err := jwt.DecodeAccountClaims(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: not a valid account JWT: %w", f.Path, err)
	}
	if err := validate(ac); err != nil {
		return nil, fmt.Errorf("%s: account JWT of %s: %w", f.Path, ac.Name, err)
	}
	if ac.Issuer != oc.Subject && !oc.SigningKeys.Contains(ac.Issuer) {
		return nil, fmt.Errorf("%s: account %s is signed by %s, which is neither operator %s nor one of its signing keys", f.Path, ac.Name, ac.Issuer, oc.Name)
	}
	a := &rotatord.ImportedAccount{File: f.Path, Issuer: ac.Issuer, Dropped: map[string]string{}, Revocations: map[string]int64{}}
	// What rotatord does not model of the account claims is kept from
	// them each time it re-signs.
	base, err := json.Marshal(&ac.Account) // a pointer: SigningKeys marshals itself through one
	if err != nil {
		return nil, fmt.Errorf("%s: account claims of %s: %w", f.Path, ac.Name, err)
	}
	limits, claims := jwtissue.AccountModel(&ac.Account)
	a.Account = rotatord.Account{Name: ac.Name, PublicKey: ac.Subject, Description: ac.Description, Limits: limits,
		Claims: &claims, BaseClaims: base, JWT: raw, JWTID: ac.ID}
	for k, t := range ac.Revocations {
		a.Revocations[k] = t
	}
	for _, k := range slices.Sorted(maps.Keys(ac.SigningKeys)) {
		a.SigningKeys = append(a.SigningKeys, k)
		held, role, why, err := signingKey(k, ac.SigningKeys[k], seed)
		switch {
		case err != nil:
			bad.add("%s", err)
		case why != "":
			a.Dropped[k] = why
		case role != nil:
			a.Roles = append(a.Roles, *role)
		default:
			a.Held = append(a.Held, *held)
		}
	}
	if len(a.Held) == 0 {
		// rotatord issues user JWTs with a signing key; it makes one
		// when it holds the account's own seed, which it then forgets.
		ks, err := seed(ac.Subject, nkeys.PrefixByteAccount)
		switch {
		case err != nil:
			bad.add("%s", err)
		case ks == nil:
			bad.add("account %s (%s): neither the account's seed nor the seed of any of its signing keys (%s) is in the keystore: rotatord must hold one to issue user JWTs",
				ac.Name, ac.Subject, orNone(slices.Sorted(maps.Keys(ac.SigningKeys))))
		default:
			a.IdentityHeld = true
			clear(ks.Seed)
		}
	}
	a.Unmodeled = unmodeledAccount(ac)
	return a, nil
}

// signingKey reads one signing key of an account: a plain one whose seed
// the source holds, a scoped one (a role) whose seed it holds, or why
// rotatord cannot keep it.
func signingKey(pub string, scope jwt.Scope, seed func(string, nkeys.PrefixByte) (*rotatord.KeySeed, error)) (*rotatord.KeySeed, *rotatord.ImportedRole, string, error) {
	ks, err := seed(pub, nkeys.PrefixByteAccount)
	if err != nil {
		return nil, nil, "", err
	}
	if scope == nil {
		if ks == nil {
			return nil, nil, "has no seed in the keystore", nil
		}
		return ks, nil, "", nil
	}
	us, ok := scope.(*jwt.UserScope)
	if !ok {
		if ks != nil {
			clear(ks.Seed)
		}
		return nil, nil, fmt.Sprintf("is a scoped signing key of a kind rotatord does not know (%T)", scope), nil
	}
	if ks == nil {
		return nil, nil, fmt.Sprintf("is a scoped signing key (role %q) whose seed is not in the keystore: rotatord could not sign its users' JWTs", us.Role), nil
	}
	t := jwtissue.UserTemplateOf(us.Template)
	return nil, &rotatord.ImportedRole{Name: us.Role, Key: *ks, Template: t, Unmodeled: unmodeledTemplate(us.Template, t)}, "", nil
}

func readUser(u *rotatord.ImportedUser, uc *jwt.UserClaims) {
	u.PublicKey, u.Issuer, u.JWTID = uc.Subject, uc.Issuer, uc.ID
	u.Account = uc.Issuer
	if uc.IssuerAccount != "" {
		u.Account = uc.IssuerAccount
	}
	u.IssuedAt = time.Unix(uc.IssuedAt, 0)
	if uc.Expires != 0 {
		u.ExpiresAt = time.Unix(uc.Expires, 0)
	}
	u.Name = uc.Name
	if u.Name == "" || u.Name == uc.Subject {
		u.Name = strings.TrimSuffix(baseName(u.File), ".jwt")
		u.Name = strings.TrimSuffix(u.Name, ".creds")
	}
	// An empty allow list lets a NATS user reach everything; rotatord's
	// default deny would take that away at the first rotation: the
	// template allows ">" there.
	u.Template = jwtissue.UserTemplateOf(uc.UserPermissionLimits)
	u.Tags = append([]string(nil), uc.Tags...)
	u.Unmodeled = unmodeledUser(uc, u.Template)
}

func wipeAccount(a *rotatord.ImportedAccount) {
	for _, k := range a.Held {
		clear(k.Seed)
	}
	for _, r := range a.Roles {
		clear(r.Key.Seed)
	}
}

// readJWT returns the JWT of a file that holds a bare JWT or a decorated
// one (a creds file); the seed of a creds file is never read.
func readJWT(f File) string {
	raw, _ := jwt.ParseDecoratedJWT(f.Content) // never fails
	return strings.TrimSpace(raw)
}

// validate reports a JWT's blocking validation issues (expiry among them).
func validate(c interface{ Validate(*jwt.ValidationResults) }) error {
	vr := jwt.CreateValidationResults()
	c.Validate(vr)
	if errs := vr.Errors(); len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}

// validateUser reports a user JWT's blocking issues other than time: an
// expired user is skipped, not refused.
func validateUser(uc *jwt.UserClaims) error {
	vr := jwt.CreateValidationResults()
	uc.Validate(vr)
	var errs []error
	for _, i := range vr.Issues {
		if i.Blocking && !i.TimeCheck {
			errs = append(errs, errors.New(i.Description))
		}
	}
	return errors.Join(errs...)
}

// lookupSeed reads the seed of pub, if the source has it, and checks it.
func lookupSeed(lookup SeedLookup, pub string, kind nkeys.PrefixByte) (*rotatord.KeySeed, error) {
	if lookup == nil {
		return nil, nil
	}
	raw, from, err := lookup(pub)
	if err != nil {
		return nil, fmt.Errorf("read seed of %s: %w", pub, err)
	}
	if raw == nil {
		return nil, nil
	}
	defer clear(raw)
	kp, err := jwt.ParseDecoratedNKey(raw)
	if err != nil {
		// The nkeys errors never hold the seed.
		return nil, fmt.Errorf("%s: not a seed: %w", from, err)
	}
	defer kp.Wipe()
	if got, _ := kp.PublicKey(); got != pub {
		return nil, fmt.Errorf("%s: the seed is of key %s, not %s", from, got, pub)
	}
	if nkeys.Prefix(pub) != kind {
		return nil, fmt.Errorf("%s: %s is not a %s key", from, pub, kind)
	}
	s, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	return &rotatord.KeySeed{PublicKey: pub, Seed: slices.Clone(s)}, nil
}

func orNone(keys []string) string {
	if len(keys) == 0 {
		return "it has none"
	}
	return strings.Join(keys, ", ")
}

func baseName(path string) string {
	if i := strings.LastIndexAny(path, `/\`); i >= 0 {
		return path[i+1:]
	}
	return path
}
