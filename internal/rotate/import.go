package rotate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// NeverExpires is the expiry rotatord records for an imported user JWT that
// has none (nsc issues those by default). The agent's first rotation
// replaces it with a JWT that expires.
var NeverExpires = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// ImportFile is one JWT (or creds file) read for an import; Path names it
// in messages.
type ImportFile struct {
	Path    string
	Content []byte
}

// SeedLookup returns the seed of a public key and where it was read from,
// or a nil seed when there is none. Import calls it only for operator and
// account keys, never for user keys, and wipes the returned bytes.
type SeedLookup func(pub string) (seed []byte, from string, err error)

// ImportSource is what an import reads: the operator JWT, account JWTs,
// user JWTs (or creds files: only their JWT is read), and where to find
// the seeds of the operator's and accounts' keys.
type ImportSource struct {
	Operator ImportFile
	Accounts []ImportFile
	Users    []ImportFile
	Seeds    SeedLookup
}

// ImportOptions configures an import.
type ImportOptions struct {
	// DryRun computes and reports the import and changes nothing.
	DryRun bool
	// DropUnmodeled imports accounts and users whose JWTs hold claims
	// rotatord cannot keep (scoped signing keys or ones without a seed, an
	// account JWT's expiry, users' source networks, response permissions,
	// time limits...), dropping them: account JWTs are re-signed without
	// them at once, and users lose theirs at their first rotation. Without
	// it such an import is refused. Other account claims (imports, exports,
	// JetStream limits...) are kept: see rotatord.Account.BaseClaims.
	DropUnmodeled bool
	// FoldRevocations says that rotatord now knows every user of the
	// imported accounts, so their revocations may be folded into one '*'
	// entry like those of accounts rotatord made. Without it they are kept
	// until the revoked JWTs expire: a '*' entry would lock out users that
	// were issued elsewhere (by a service holding a signing key, say).
	FoldRevocations bool
	// Schedule, Grace and Delivery are the rotation policy of the imported
	// agents; empty or zero take the defaults (delivery poll).
	Schedule string
	Grace    time.Duration
	Delivery rotatord.Delivery
}

// Import actions of an ImportStep.
const (
	ImportCreate = "import" // new in rotatord
	ImportExists = "exists" // already in rotatord; left as it is
	ImportSkip   = "skip"   // not imported (Detail says why)
)

// ImportStep is one line of an import plan.
type ImportStep struct {
	Kind   string // operator, account, agent or user (a user that is not imported)
	Name   string
	Key    string // public key
	Action string // ImportCreate, ImportExists or ImportSkip
	Detail string
}

// ImportReport says what an import did or, in a dry run, would do.
type ImportReport struct {
	DryRun bool
	Steps  []ImportStep
	// Unmodeled lists the claims rotatord does not keep; an import with
	// any is refused unless DropUnmodeled is set.
	Unmodeled []string
	// Warnings are things the operator should know; they do not stop the import.
	Warnings []string
	// Created counts what was (or would be) created: operator, accounts, agents.
	Created int
}

// ImportStore is what Import needs from the registry beyond Store.
type ImportStore interface {
	FindSigningKey(ctx context.Context, pub string) (accountID int64, err error)
	MarkPushOwed(ctx context.Context, accountID int64) error
}

// errDryRun rolls back a dry run's transaction.
var errDryRun = errors.New("dry run")

// Import takes over an existing NATS deployment (an nsc store, or JWT and
// creds files) without re-keying it: the same operator (its JWT is kept as
// it is, so servers keep trusting it), the same accounts and system
// account, and each user as an agent whose active credential is the user's
// own key and JWT, so every agent keeps its creds file until its first
// rotation. rotatord needs the seed of an operator signing key (or of the
// operator itself) to re-sign account JWTs, and for each account the seed
// of a signing key (or of the account, and then it creates a signing key).
// User seeds are never read nor stored: agents hold them.
//
// Everything is done in one transaction: the import is whole or nothing.
// It is idempotent: what is already in rotatord is left alone (reported as
// ImportExists), so importing again changes nothing. Problems (a missing
// seed, a malformed JWT, a name taken) fail the import with EINVALID or
// ECONFLICT listing every problem; the report is returned with the error so
// the caller can show the plan.
func (s *Service) Import(ctx context.Context, actor Actor, src ImportSource, opts ImportOptions) (*ImportReport, error) {
	is, ok := s.store.(ImportStore)
	if !ok {
		return nil, rotatord.Errorf(rotatord.EUNSUPPORTED, "this store cannot import")
	}
	policy, err := importPolicy(opts)
	if err != nil {
		return nil, err
	}
	in, err := parseImport(src)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer in.wipe()
	im := &importer{s: s, is: is, actor: actor, in: in, opts: opts, policy: policy, now: s.now(),
		report: &ImportReport{DryRun: opts.DryRun}, created: map[string]*importedAccount{}}
	err = s.store.InTx(ctx, im.run)
	if errors.Is(err, errDryRun) {
		return im.report, nil
	}
	if err != nil {
		return im.report, fmt.Errorf("import operator %s: %w", in.op.Name, err)
	}
	for pub := range im.created {
		s.changed(ctx, pub)
	}
	return im.report, nil
}

func importPolicy(opts ImportOptions) (rotatord.RotationPolicy, error) {
	p := rotatord.RotationPolicy{Schedule: opts.Schedule, Grace: opts.Grace}
	if p.Schedule == "" {
		p.Schedule = rotatord.DefaultSchedule
	}
	if p.Grace == 0 {
		p.Grace = rotatord.DefaultGrace
	}
	if _, err := CheckSchedule(p.Schedule, time.Now()); err != nil {
		return p, err
	}
	if err := p.Validate(); err != nil {
		return p, err
	}
	switch opts.Delivery {
	case "", rotatord.DeliveryPoll, rotatord.DeliveryVault, rotatord.DeliveryFile:
	default:
		return p, rotatord.Errorf(rotatord.EINVALID, "delivery %q is not one of poll, vault, file", opts.Delivery)
	}
	return p, nil
}

// importInput is the parsed source: every JWT decoded and checked, and the
// seeds of the operator's and accounts' keys that the source holds.
type importInput struct {
	opFile   string
	opJWT    string
	op       *jwt.OperatorClaims
	identity nkeys.KeyPair   // the operator's identity, when its seed is held
	signers  []nkeys.KeyPair // operator signing keys held (or the identity, when it is the only one)
	accounts []*importAccount
	users    []*importUser
}

type importAccount struct {
	file     string
	raw      string
	claims   *jwt.AccountClaims
	held     []nkeys.KeyPair   // plain signing keys whose seeds are held, by public key
	identity bool              // the account's own seed is held
	dropped  map[string]string // listed signing keys rotatord cannot keep, and why
	extra    []string          // claims rotatord cannot keep
}

type importUser struct {
	file   string
	raw    string
	claims *jwt.UserClaims
	name   string
	perms  rotatord.Permissions
	extra  []string
}

func (in *importInput) wipe() {
	for _, kp := range append(slices.Clone(in.signers), in.identity) {
		if kp != nil {
			kp.Wipe()
		}
	}
	for _, a := range in.accounts {
		for _, kp := range a.held {
			kp.Wipe()
		}
	}
}

// problems collects what is wrong with an import, to report it all at once.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func (p problems) err(code string) error {
	if len(p) == 0 {
		return nil
	}
	return rotatord.Errorf(code, "import refused:\n  - %s", strings.Join(p, "\n  - "))
}

// readJWT returns the JWT of a file that holds a bare JWT or a decorated
// one (a creds file); the seed of a creds file is never read.
func readJWT(f ImportFile) string {
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

func parseImport(src ImportSource) (*importInput, error) {
	in := &importInput{opFile: src.Operator.Path}
	var bad problems
	in.opJWT = readJWT(src.Operator)
	oc, err := jwt.DecodeOperatorClaims(in.opJWT)
	if err != nil {
		return nil, rotatord.Errorf(rotatord.EINVALID, "%s: not a valid operator JWT: %s", src.Operator.Path, err)
	}
	if err := validate(oc); err != nil {
		return nil, rotatord.Errorf(rotatord.EINVALID, "%s: operator JWT: %s", src.Operator.Path, err)
	}
	in.op = oc
	if err := rotatord.ValidateName("operator", oc.Name); err != nil {
		bad.add("%s: %s", src.Operator.Path, err)
	}
	if oc.SystemAccount == "" {
		bad.add("%s: operator %s names no system account: rotatord connects to NATS as a user of it; add one with nsc first", src.Operator.Path, oc.Name)
	}
	seed := func(pub string, kind nkeys.PrefixByte) (nkeys.KeyPair, error) {
		return lookupSeed(src.Seeds, pub, kind)
	}

	// The operator: its signing keys sign account JWTs. Its identity
	// signs them too (servers accept both) unless the operator demands
	// signing keys.
	if in.identity, err = seed(oc.Subject, nkeys.PrefixByteOperator); err != nil {
		bad.add("%s", err)
	}
	keys := slices.Clone([]string(oc.SigningKeys))
	sort.Strings(keys)
	for _, k := range keys {
		kp, err := seed(k, nkeys.PrefixByteOperator)
		if err != nil {
			bad.add("%s", err)
		} else if kp != nil {
			in.signers = append(in.signers, kp)
		}
	}
	switch {
	case len(in.signers) > 0:
	case in.identity != nil && !oc.StrictSigningKeyUsage:
		in.signers = []nkeys.KeyPair{in.identity}
	case in.identity != nil:
		bad.add("operator %s (%s) requires signing keys (strict_signing_key_usage) but none of their seeds is in the keystore (%s): rotatord must hold one to sign account JWTs",
			oc.Name, oc.Subject, strings.Join(keys, ", "))
	default:
		bad.add("operator %s (%s): neither the operator's seed nor the seed of any of its signing keys (%s) is in the keystore: rotatord must hold one to sign account JWTs; point --keys at the nsc keystore that holds them, or pass the seed with --operator-seed",
			oc.Name, oc.Subject, orNone(keys))
	}

	seen := map[string]string{}
	for _, f := range src.Accounts {
		a := &importAccount{file: f.Path, raw: readJWT(f), dropped: map[string]string{}}
		ac, err := jwt.DecodeAccountClaims(a.raw)
		if err != nil {
			bad.add("%s: not a valid account JWT: %s", f.Path, err)
			continue
		}
		a.claims = ac
		if prev, dup := seen[ac.Subject]; dup {
			bad.add("%s: account %s is also in %s", f.Path, ac.Subject, prev)
			continue
		}
		seen[ac.Subject] = f.Path
		if err := validate(ac); err != nil {
			bad.add("%s: account JWT of %s: %s", f.Path, ac.Name, err)
			continue
		}
		if ac.Issuer != oc.Subject && !oc.SigningKeys.Contains(ac.Issuer) {
			bad.add("%s: account %s is signed by %s, which is neither operator %s nor one of its signing keys", f.Path, ac.Name, ac.Issuer, oc.Name)
			continue
		}
		if err := rotatord.ValidateName("account", ac.Name); err != nil {
			bad.add("%s: %s", f.Path, err)
		}
		if err := validateDescription(ac.Description); err != nil {
			bad.add("%s: account %s: %s", f.Path, ac.Name, err)
		}
		for _, k := range sortedKeys(ac.SigningKeys) {
			if scope := ac.SigningKeys[k]; scope != nil {
				role := ""
				if us, ok := scope.(*jwt.UserScope); ok {
					role = us.Role
				}
				a.dropped[k] = fmt.Sprintf("is a scoped signing key (role %q): rotatord signs with plain signing keys only", role)
				continue
			}
			kp, err := seed(k, nkeys.PrefixByteAccount)
			switch {
			case err != nil:
				bad.add("%s", err)
			case kp == nil:
				a.dropped[k] = "has no seed in the keystore"
			default:
				a.held = append(a.held, kp)
			}
		}
		if len(a.held) == 0 {
			// rotatord issues user JWTs with a signing key; it makes one
			// when it holds the account's own seed, which it then forgets.
			kp, err := seed(ac.Subject, nkeys.PrefixByteAccount)
			if err != nil {
				bad.add("%s", err)
			} else if kp == nil {
				bad.add("account %s (%s): neither the account's seed nor the seed of any of its signing keys (%s) is in the keystore: rotatord must hold one to issue user JWTs",
					ac.Name, ac.Subject, orNone(sortedKeys(ac.SigningKeys)))
			} else {
				a.identity = true
				kp.Wipe()
			}
		}
		a.extra = unmodeledAccount(ac)
		in.accounts = append(in.accounts, a)
	}

	seenUsers := map[string]string{}
	for _, f := range src.Users {
		u := &importUser{file: f.Path, raw: readJWT(f)}
		uc, err := jwt.DecodeUserClaims(u.raw)
		if err != nil {
			bad.add("%s: not a valid user JWT: %s", f.Path, err)
			continue
		}
		if _, dup := seenUsers[uc.Subject]; dup {
			continue // the same user in the store and as a creds file: one is enough
		}
		seenUsers[uc.Subject] = f.Path
		if err := validateUser(uc); err != nil {
			bad.add("%s: user JWT of %s: %s", f.Path, uc.Name, err)
			continue
		}
		u.claims = uc
		u.name = uc.Name
		if u.name == "" || u.name == uc.Subject {
			u.name = strings.TrimSuffix(baseName(f.Path), ".jwt")
			u.name = strings.TrimSuffix(u.name, ".creds")
		}
		// An empty allow list lets a NATS user reach everything; rotatord's
		// default deny would take that away at the first rotation.
		u.perms = rotatord.Permissions{
			Pub: rotatord.PermissionList{Allow: uc.Pub.Allow, Deny: uc.Pub.Deny},
			Sub: rotatord.PermissionList{Allow: uc.Sub.Allow, Deny: uc.Sub.Deny},
		}.AllowAllWhereEmpty()
		u.extra = unmodeledUser(uc)
		in.users = append(in.users, u)
	}
	if err := bad.err(rotatord.EINVALID); err != nil {
		in.wipe()
		return nil, err
	}
	return in, nil
}

// lookupSeed reads the seed of pub, if the source has it, and checks it.
func lookupSeed(lookup SeedLookup, pub string, kind nkeys.PrefixByte) (nkeys.KeyPair, error) {
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
	if got, _ := kp.PublicKey(); got != pub {
		kp.Wipe()
		return nil, fmt.Errorf("%s: the seed is of key %s, not %s", from, got, pub)
	}
	if nkeys.Prefix(pub) != kind {
		kp.Wipe()
		return nil, fmt.Errorf("%s: %s is not a %s key", from, pub, kind)
	}
	return kp, nil
}

// importer runs one import inside its transaction.
type importer struct {
	s      *Service
	is     ImportStore
	actor  Actor
	in     *importInput
	opts   ImportOptions
	policy rotatord.RotationPolicy
	now    time.Time
	report *ImportReport
	bad    problems
	// sys is the system account's public key (the stored operator's, when
	// rotatord already serves it).
	sys string
	// created holds the accounts this import creates, by public key.
	created map[string]*importedAccount
}

type importedAccount struct {
	acc  *rotatord.Account
	held map[string]bool // signing keys rotatord holds for it
	ac   *jwt.AccountClaims
}

func (im *importer) step(kind, name, key, action, detail string) {
	im.report.Steps = append(im.report.Steps, ImportStep{Kind: kind, Name: name, Key: key, Action: action, Detail: detail})
	if action == ImportCreate {
		im.report.Created++
	}
}

func (im *importer) run(ctx context.Context) error {
	if err := im.s.store.LockOperator(ctx); err != nil {
		return err
	}
	if err := im.operator(ctx); err != nil {
		return err
	}
	for _, a := range im.in.accounts {
		if err := im.account(ctx, a); err != nil {
			return fmt.Errorf("import account %s: %w", a.claims.Name, err)
		}
	}
	if _, err := im.s.store.FindAccountByPublicKey(ctx, im.sys); errors.Is(err, rotatord.ErrNotFound) {
		im.bad.add("the system account %s of operator %s is not among the accounts: import needs its JWT (rotatord connects to NATS as a user of it)",
			im.sys, im.in.op.Name)
	} else if err != nil {
		return err
	}
	for _, u := range im.in.users {
		if err := im.user(ctx, u); err != nil {
			return fmt.Errorf("import user %s: %w", u.name, err)
		}
	}
	if slices.ContainsFunc(im.report.Steps, func(s ImportStep) bool { return s.Kind == "agent" && s.Action == ImportCreate }) {
		if im.opts.FoldRevocations {
			im.report.Warnings = append(im.report.Warnings,
				"--fold-revocations: every user of an imported account must be imported as an agent: when rotatord compacts an account's revocations, it revokes the JWTs issued before the oldest credential it knows in that account")
		} else {
			im.report.Warnings = append(im.report.Warnings,
				"imported accounts keep each revocation entry until the revoked JWT expires (about 94 bytes of account JWT per rotation): rotatord may not know every user, and folding entries into '*' would lock out the others; import with --fold-revocations when every user of these accounts is imported")
		}
	}
	if err := im.bad.err(rotatord.EINVALID); err != nil {
		return err
	}
	if len(im.report.Unmodeled) > 0 && !im.opts.DropUnmodeled {
		return rotatord.Errorf(rotatord.EINVALID, "import refused: rotatord does not model these claims and would drop them:\n  - %s\nremove them first, or rerun with --drop-unmodeled (account JWTs are then re-signed without them at once; users lose theirs at their first rotation)",
			strings.Join(im.report.Unmodeled, "\n  - "))
	}
	if im.opts.DryRun || im.report.Created == 0 {
		return errDryRun // nothing to keep
	}
	return nil
}

func (im *importer) operator(ctx context.Context) error {
	in := im.in
	existing, err := im.s.store.Operator(ctx)
	switch {
	case err == nil && existing.PublicKey != in.op.Subject:
		return rotatord.Errorf(rotatord.ECONFLICT, "rotatord already serves operator %s (%s), not %s (%s): import into a database of its own",
			existing.Name, existing.PublicKey, in.op.Name, in.op.Subject)
	case err == nil:
		detail := ""
		if existing.JWT != in.opJWT {
			detail = "rotatord keeps its stored operator JWT"
		}
		im.sys = existing.SystemAccount
		im.step("operator", existing.Name, existing.PublicKey, ImportExists, detail)
		return nil
	case !errors.Is(err, rotatord.ErrNotFound):
		return err
	}
	op := &rotatord.Operator{Name: in.op.Name, PublicKey: in.op.Subject, JWT: in.opJWT, SystemAccount: in.op.SystemAccount}
	im.sys = op.SystemAccount
	var seedEnc []byte
	if in.identity != nil {
		seedEnc = im.s.seal(in.identity)
	}
	if err := im.s.store.CreateOperator(ctx, op, seedEnc); err != nil {
		return err
	}
	var signers []string
	for _, kp := range in.signers {
		pub := jwtissue.Public(kp)
		if err := im.s.store.AddSigningKey(ctx, 0, pub, im.s.seal(kp)); err != nil {
			return err
		}
		signers = append(signers, pub)
	}
	err = im.s.audit(ctx, im.actor, "operator.import", rotatord.AuditEvent{PublicKey: op.PublicKey, Details: map[string]any{
		"name": op.Name, "signing_keys": signers, "identity_seed": in.identity != nil, "system_account": op.SystemAccount, "file": in.opFile}})
	if err != nil {
		return err
	}
	detail := "signs with " + strings.Join(signers, ", ")
	if len(signers) == 1 && signers[0] == op.PublicKey {
		detail = "signs with the operator key itself (no signing key seed held)"
	}
	im.step("operator", op.Name, op.PublicKey, ImportCreate, detail)
	return nil
}

func (im *importer) account(ctx context.Context, a *importAccount) error {
	ac := a.claims
	existing, err := im.s.store.FindAccountByPublicKey(ctx, ac.Subject)
	if err == nil {
		var d []string
		if existing.Name != ac.Name {
			d = append(d, "as "+existing.Name)
		}
		if existing.JWT != a.raw {
			d = append(d, "rotatord keeps the JWT it has")
		}
		im.step("account", ac.Name, ac.Subject, ImportExists, strings.Join(d, "; "))
		return nil
	}
	if !errors.Is(err, rotatord.ErrNotFound) {
		return err
	}
	if other, err := im.s.store.FindAccountByName(ctx, ac.Name); err == nil {
		im.bad.add("%s: account name %q is taken in rotatord by %s", a.file, ac.Name, other.PublicKey)
		return nil
	} else if !errors.Is(err, rotatord.ErrNotFound) {
		return err
	}

	// What rotatord cannot keep of this JWT.
	var lost []string
	for _, k := range sortedKeys(a.dropped) {
		lost = append(lost, fmt.Sprintf("account %s: signing key %s %s; it is dropped from the account JWT", ac.Name, k, a.dropped[k]))
	}
	for _, path := range a.extra {
		lost = append(lost, fmt.Sprintf("account %s: %s", ac.Name, path))
	}
	im.report.Unmodeled = append(im.report.Unmodeled, lost...)

	// What rotatord does not model of the account claims is kept from
	// them each time it re-signs.
	base, err := json.Marshal(&ac.Account) // a pointer: SigningKeys marshals itself through one
	if err != nil {
		return fmt.Errorf("account claims of %s: %w", ac.Name, err)
	}
	acc := &rotatord.Account{
		Name: ac.Name, PublicKey: ac.Subject, System: ac.Subject == im.sys, Description: ac.Description,
		KeepRevocations: !im.opts.FoldRevocations,
		BaseClaims:      base,
		Limits:          rotatord.Limits{Conn: ac.Limits.Conn, Subs: ac.Limits.Subs, Payload: ac.Limits.Payload, Data: ac.Limits.Data},
	}
	if err := validateLimits(acc.Limits); err != nil {
		im.bad.add("%s: account %s: %s", a.file, ac.Name, err)
		return nil
	}
	keys := map[string]nkeys.KeyPair{}
	for _, kp := range a.held {
		keys[jwtissue.Public(kp)] = kp
	}
	var made nkeys.KeyPair
	madePub := ""
	if a.identity {
		if made, err = jwtissue.NewKey(nkeys.PrefixByteAccount); err != nil {
			return err
		}
		defer made.Wipe()
		madePub = jwtissue.Public(made)
		keys[madePub] = made
	}
	acc.SigningKeys = sortedKeys(keys)
	for _, k := range acc.SigningKeys {
		if owner, err := im.is.FindSigningKey(ctx, k); err == nil {
			im.bad.add("%s: signing key %s of account %s is already a key of rotatord's %s", a.file, k, ac.Name, ownerName(owner))
			return nil
		} else if !errors.Is(err, rotatord.ErrNotFound) {
			return err
		}
	}
	revs := importRevocations(ac, im.in.users)
	// The JWT is kept byte for byte when rotatord would sign the same
	// content: the servers already hold it. Otherwise it is re-signed now,
	// so what rotatord serves is what it will keep signing.
	resign := made != nil || len(lost) > 0
	if resign {
		if err := im.s.signAccount(ctx, acc, revs); errors.Is(err, rotatord.ErrJWTFull) {
			im.bad.add("%s: account %s: %s", a.file, ac.Name, rotatord.ErrorMessage(err))
			return nil
		} else if err != nil {
			return err
		}
	} else {
		if err := im.s.checkJWTSize(acc, a.raw); err != nil {
			im.bad.add("%s: account %s: %s", a.file, ac.Name, rotatord.ErrorMessage(err))
			return nil
		}
		acc.JWT, acc.JWTID = a.raw, ac.ID
	}
	if err := im.s.store.CreateAccount(ctx, acc); err != nil {
		return err
	}
	for _, k := range acc.SigningKeys {
		if err := im.s.store.AddSigningKey(ctx, acc.ID, k, im.s.seal(keys[k])); err != nil {
			return err
		}
	}
	if err := im.s.store.AddRevocations(ctx, acc.ID, revs); err != nil {
		return err
	}
	if resign {
		if err := im.is.MarkPushOwed(ctx, acc.ID); err != nil {
			return err
		}
	}
	details := map[string]any{"jwt_id": acc.JWTID, "signing_keys": acc.SigningKeys, "revocations": len(revs),
		"system": acc.System, "resigned": resign, "file": a.file}
	if made != nil {
		details["new_signing_key"] = madePub
	}
	if len(lost) > 0 {
		details["dropped"] = lost
	}
	if err := im.s.audit(ctx, im.actor, "account.import", rotatord.AuditEvent{Account: acc.Name, PublicKey: acc.PublicKey, Details: details}); err != nil {
		return err
	}
	held := map[string]bool{}
	for _, k := range acc.SigningKeys {
		held[k] = true
	}
	im.created[acc.PublicKey] = &importedAccount{acc: acc, held: held, ac: ac}

	var d []string
	if acc.System {
		d = append(d, "system account")
	}
	if made != nil {
		// held is empty: a key is made only when no signing key seed is held
		d = append(d, "new signing key "+madePub+" (the keystore held only the account's own seed, which rotatord does not keep)")
	} else {
		d = append(d, "signing keys held: "+strings.Join(acc.SigningKeys, ", "))
	}
	if len(revs) > 0 {
		d = append(d, fmt.Sprintf("%d revocations", len(revs)))
	}
	if resign {
		d = append(d, "JWT re-signed")
	} else {
		d = append(d, "JWT kept as is")
	}
	im.step("account", acc.Name, acc.PublicKey, ImportCreate, strings.Join(d, "; "))
	return nil
}

func ownerName(accountID int64) string {
	if accountID == 0 {
		return "operator"
	}
	return fmt.Sprintf("account %d", accountID)
}

// importRevocations turns an account JWT's revocations into entries
// rotatord keeps re-signing. The iat of the revoked JWT is left unknown
// (the key may have JWTs rotatord never saw), so the registry records the
// entry's own time: it folds into '*' only once '*' reaches that time, in
// accounts that fold at all (not keep_revocations). It is pruned once the
// JWT it revokes expires, when that is known.
func importRevocations(ac *jwt.AccountClaims, users []*importUser) []rotatord.Revocation {
	exp := map[string]int64{}
	names := map[string]string{}
	for _, u := range users {
		if u.claims.Expires > exp[u.claims.Subject] {
			exp[u.claims.Subject] = u.claims.Expires
		}
		names[u.claims.Subject] = u.name
	}
	var out []rotatord.Revocation
	for _, k := range sortedKeys(ac.Revocations) {
		r := rotatord.Revocation{PublicKey: k, RevokedAt: time.Unix(ac.Revocations[k], 0), ExpiresAt: NeverExpires,
			Agent: names[k], Reason: "imported"}
		if e := exp[k]; e > 0 {
			r.ExpiresAt = time.Unix(e, 0)
		}
		out = append(out, r)
	}
	return out
}

func (im *importer) user(ctx context.Context, u *importUser) error {
	uc := u.claims
	accPub := uc.Issuer
	if uc.IssuerAccount != "" {
		accPub = uc.IssuerAccount
	}
	if cred, err := im.s.store.FindCredentialByPublicKey(ctx, uc.Subject); err == nil {
		g, err := im.s.store.FindAgentByName(ctx, u.name)
		if err != nil && !errors.Is(err, rotatord.ErrNotFound) {
			return err
		}
		if g == nil || g.ID != cred.AgentID {
			im.bad.add("%s: user key %s is already a key of another agent in rotatord", u.file, uc.Subject)
			return nil
		}
		detail := ""
		if cred.JWT != u.raw {
			detail = "rotatord keeps the JWT it has"
		}
		if cred.State != rotatord.CredentialActive {
			detail = "this key is " + cred.State + "; agent " + g.Name + " has moved on"
		}
		im.step("agent", u.name, uc.Subject, ImportExists, detail)
		return nil
	} else if !errors.Is(err, rotatord.ErrNotFound) {
		return err
	}
	acc, err := im.s.store.FindAccountByPublicKey(ctx, accPub)
	if errors.Is(err, rotatord.ErrNotFound) {
		im.bad.add("%s: user %s belongs to account %s, which is not imported: add the account's JWT", u.file, u.name, accPub)
		return nil
	}
	if err != nil {
		return err
	}
	ac, held, err := im.accountState(ctx, acc)
	if err != nil {
		return err
	}
	switch {
	case acc.System:
		im.step("user", u.name, uc.Subject, ImportSkip,
			"a user of the system account: rotatord mints its own system users and does not rotate these; the creds keep working as they are")
		return nil
	case !ac.DidSign(uc):
		im.bad.add("%s: user %s is signed by %s, which is not account %s or one of its signing keys", u.file, u.name, uc.Issuer, acc.Name)
		return nil
	case uc.Issuer != acc.PublicKey && !held[uc.Issuer]:
		im.bad.add("%s: user %s is signed by signing key %s of account %s, which rotatord cannot keep (%s): the user would be locked out at the account's first re-sign",
			u.file, u.name, uc.Issuer, acc.Name, droppedWhy(im.in, acc.PublicKey, uc.Issuer))
		return nil
	case ac.IsClaimRevoked(uc):
		im.step("user", u.name, uc.Subject, ImportSkip, "revoked in the account JWT")
		return nil
	case uc.Expires != 0 && uc.Expires <= im.now.Unix():
		im.step("user", u.name, uc.Subject, ImportSkip, "its JWT expired "+time.Unix(uc.Expires, 0).UTC().Format(time.RFC3339))
		return nil
	}
	if err := rotatord.ValidateName("agent", u.name); err != nil {
		im.bad.add("%s: user %s: %s", u.file, u.name, err)
		return nil
	}
	if err := u.perms.Validate(); err != nil {
		im.bad.add("%s: user %s: %s", u.file, u.name, err)
		return nil
	}
	if g, err := im.s.store.FindAgentByName(ctx, u.name); err == nil {
		im.bad.add("%s: agent %q already exists in rotatord (account %s) with other keys", u.file, u.name, g.Account)
		return nil
	} else if !errors.Is(err, rotatord.ErrNotFound) {
		return err
	}
	for _, path := range u.extra {
		im.report.Unmodeled = append(im.report.Unmodeled, fmt.Sprintf("user %s: %s (dropped at its first rotation)", u.name, path))
	}

	cred := &rotatord.Credential{PublicKey: uc.Subject, JWT: u.raw, JWTID: uc.ID, IssuedAt: time.Unix(uc.IssuedAt, 0),
		ExpiresAt: NeverExpires, State: rotatord.CredentialActive, SigningKey: uc.Issuer}
	if uc.Expires != 0 {
		cred.ExpiresAt = time.Unix(uc.Expires, 0)
	}
	delivery := im.opts.Delivery
	if delivery == "" {
		delivery = rotatord.DeliveryPoll
	}
	g := &rotatord.Agent{Name: u.name, AccountID: acc.ID, Account: acc.Name, AccountKey: acc.PublicKey,
		Permissions: u.perms, Rotation: im.policy, Delivery: delivery, State: rotatord.AgentActive,
		Limits: rotatord.NoUserLimits}
	next := im.nextRotation(cred.ExpiresAt)
	g.NextRotationAt = &next
	if err := im.s.store.CreateAgent(ctx, g); err != nil {
		return err
	}
	cred.AgentID = g.ID
	if err := im.s.store.CreateCredential(ctx, cred); err != nil {
		return err
	}
	g.Active = cred
	if err := im.s.audit(ctx, im.actor, "agent.import", rotatord.AuditEvent{Account: acc.Name, Agent: g.Name,
		Details: map[string]any{"permissions": g.Permissions, "schedule": g.Rotation.Schedule, "grace": g.Rotation.Grace.String(),
			"delivery": g.Delivery, "file": u.file}}); err != nil {
		return err
	}
	if err := im.s.audit(ctx, im.actor, "credential.import", rotatord.AuditEvent{Account: acc.Name, Agent: g.Name, PublicKey: cred.PublicKey,
		Details: map[string]any{"jwt_id": cred.JWTID, "issuer": uc.Issuer, "expires_at": cred.ExpiresAt, "next_rotation_at": next}}); err != nil {
		return err
	}
	expires := "never expires"
	if uc.Expires != 0 {
		expires = "expires " + cred.ExpiresAt.UTC().Format(time.RFC3339)
	}
	im.step("agent", g.Name, cred.PublicKey, ImportCreate, fmt.Sprintf("account %s; %s; first rotation %s; %s",
		acc.Name, expires, next.UTC().Format(time.RFC3339), describePermissions(g.Permissions)))
	return nil
}

// accountState returns an account's JWT claims and the signing keys
// rotatord holds for it, for an account this import created or one rotatord
// already had.
func (im *importer) accountState(ctx context.Context, acc *rotatord.Account) (*jwt.AccountClaims, map[string]bool, error) {
	if c := im.created[acc.PublicKey]; c != nil {
		return c.ac, c.held, nil
	}
	ac, err := jwt.DecodeAccountClaims(acc.JWT)
	if err != nil {
		return nil, nil, fmt.Errorf("decode stored account jwt of %s: %w", acc.Name, err)
	}
	keys, err := im.s.store.SigningKeys(ctx, acc.ID)
	if err != nil {
		return nil, nil, err
	}
	held := map[string]bool{}
	for _, k := range keys {
		held[k] = true
	}
	return ac, held, nil
}

func droppedWhy(in *importInput, accPub, key string) string {
	for _, a := range in.accounts {
		if a.claims.Subject == accPub {
			if why, ok := a.dropped[key]; ok {
				return "it " + why
			}
		}
	}
	return "rotatord does not hold it"
}

// nextRotation is an imported agent's first rotation: on its schedule,
// spread like later ones so that a fleet imported at once does not rotate in
// one second, but early enough to finish (grace and margin) before the
// imported JWT expires.
func (im *importer) nextRotation(expires time.Time) time.Time {
	sched, _ := ParseSchedule(im.policy.Schedule) // checked by importPolicy
	next := sched.Next(im.now)
	if spread := min(next.Sub(im.now)/10, 30*time.Minute); spread > 0 && im.s.jitter {
		next = next.Add(time.Duration(rand.Int64N(int64(spread))))
	}
	if latest := expires.Add(-im.policy.Grace - rotatord.ExpiryMargin); latest.Before(next) {
		next = latest
	}
	if next.Before(im.now) {
		next = im.now
	}
	return next
}

func describePermissions(p rotatord.Permissions) string {
	var parts []string
	for _, l := range []struct {
		name string
		subs []string
	}{{"pub allow", p.Pub.Allow}, {"pub deny", p.Pub.Deny}, {"sub allow", p.Sub.Allow}, {"sub deny", p.Sub.Deny}} {
		if len(l.subs) > 0 {
			parts = append(parts, l.name+" "+strings.Join(l.subs, ","))
		}
	}
	if len(parts) == 0 {
		return "no permission limits"
	}
	return strings.Join(parts, "; ")
}

// unmodeledAccount lists the claims of an account JWT that rotatord would
// not reproduce when it re-signs it (see signAccount). It keeps the whole
// "nats" object (imports, exports, limits, mappings...) and sets the
// signing keys (checked on their own) and revocations; only the standard
// claims beyond name and subject are its own.
func unmodeledAccount(ac *jwt.AccountClaims) []string {
	var out []string
	if ac.Expires != 0 {
		out = append(out, "exp (the account JWT expires "+time.Unix(ac.Expires, 0).UTC().Format(time.RFC3339)+"; rotatord's do not)")
	}
	return out
}

// unmodeledUser lists the claims of a user JWT that rotatord's next JWT for
// the agent would not carry: everything but the publish and subscribe
// allow and deny lists (see jwtissue.EncodeUser).
func unmodeledUser(uc *jwt.UserClaims) []string {
	want := jwt.NewUserClaims(uc.Subject)
	want.IssuerAccount = uc.IssuerAccount
	want.Pub, want.Sub = uc.Pub, uc.Sub
	want.Type, want.Version = uc.Type, uc.Version
	return jsonDiff(uc.User, want.User)
}

// jsonDiff returns the JSON paths (a.b.c) where got and want differ;
// absent, null and empty values count as equal.
func jsonDiff(got, want any) []string {
	var out []string
	diffValue("", asJSON(got), asJSON(want), &out)
	sort.Strings(out)
	return out
}

func asJSON(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("unencodable: %v", err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return fmt.Sprintf("undecodable: %v", err)
	}
	return out
}

func diffValue(path string, got, want any, out *[]string) {
	gm, gok := got.(map[string]any)
	wm, wok := want.(map[string]any)
	if gok && wok {
		keys := map[string]bool{}
		for k := range gm {
			keys[k] = true
		}
		for k := range wm {
			keys[k] = true
		}
		for _, k := range sortedKeys(keys) {
			p := k
			if path != "" {
				p = path + "." + k
			}
			diffValue(p, gm[k], wm[k], out)
		}
		return
	}
	if isEmpty(got) && isEmpty(want) {
		return
	}
	if !reflect.DeepEqual(got, want) {
		*out = append(*out, path)
	}
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case map[string]any:
		for _, e := range x {
			if !isEmpty(e) {
				return false
			}
		}
		return true
	case []any:
		return len(x) == 0
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
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
