package rotate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
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

// ImportOptions configures an import.
type ImportOptions struct {
	// DryRun computes and reports the import and changes nothing.
	DryRun bool
	// DropUnmodeled imports accounts and users whose JWTs hold claims
	// rotatord cannot keep (signing keys, plain or scoped, without a seed,
	// an account JWT's expiry, bearer-token users...), dropping them:
	// account JWTs are re-signed without them at once, and users lose
	// theirs at their first rotation. Without
	// it such an import is refused. Account claims rotatord does not model
	// (external authorization, tracing...) are kept: see
	// rotatord.Account.BaseClaims.
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

// Import takes over an existing NATS deployment, read into set (see
// internal/nscimport), without re-keying it: the same operator (its JWT is
// kept as it is, so servers keep trusting it), the same accounts and system
// account with their JetStream limits, exports, imports and other claims,
// their scoped signing keys as roles, and each user as an agent (of the
// role whose key signed it, or with every claim of its JWT) whose active
// credential is the user's own key and JWT, so every agent keeps its creds
// file until its first rotation.
// rotatord needs the seed of an operator signing key (or of the operator
// itself) to re-sign account JWTs, and for each account the seed of a
// signing key (or of the account, and then it creates a signing key). User
// seeds are never read nor stored: agents hold them. Imports between two
// imported accounts of a token_req export get activation tokens rotatord
// mints (and renews) from then on.
//
// Everything is done in one transaction: the import is whole or nothing.
// It is idempotent: what is already in rotatord is left alone (reported as
// ImportExists), so importing again changes nothing. Problems (an invalid
// name or claim, a name taken) fail the import with EINVALID or ECONFLICT
// listing every problem; the report is returned with the error so the
// caller can show the plan.
func (s *Service) Import(ctx context.Context, actor Actor, set *rotatord.ImportSet, opts ImportOptions) (*ImportReport, error) {
	is, ok := s.store.(ImportStore)
	if !ok {
		return nil, rotatord.Errorf(rotatord.EUNSUPPORTED, "this store cannot import")
	}
	policy, err := importPolicy(opts)
	if err != nil {
		return nil, err
	}
	im := &importer{s: s, is: is, actor: actor, in: set, opts: opts, policy: policy, now: s.now(),
		report: &ImportReport{DryRun: opts.DryRun}, created: map[string]*importedAccount{}}
	err = s.store.InTx(ctx, im.run)
	if errors.Is(err, errDryRun) {
		return im.report, nil
	}
	if err != nil {
		return im.report, fmt.Errorf("import operator %s: %w", set.Operator.Name, err)
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

// problems collects what is wrong with an import, to report it all at once.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func (p problems) err(code string) error {
	if len(p) == 0 {
		return nil
	}
	return rotatord.Errorf(code, "import refused:\n  - %s", strings.Join(p, "\n  - "))
}

// importer runs one import inside its transaction.
type importer struct {
	s      *Service
	is     ImportStore
	actor  Actor
	in     *rotatord.ImportSet
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

// importedAccount is what the users of an account need to know of it.
type importedAccount struct {
	acc         *rotatord.Account
	held        map[string]bool           // signing keys rotatord holds for it, its roles' too
	listed      map[string]bool           // signing keys its JWT lists
	roleOf      map[string]*rotatord.Role // roles by their keys
	revocations map[string]int64          // its JWT's revocations
	step        int                       // its line in the report
}

// importRole is a role to create: the scoped keys of one role name.
type importRole struct {
	name     string
	template rotatord.UserTemplate
	keys     []string
	seeds    []rotatord.KeySeed
}

// roles groups an account's scoped keys into roles by name (a key without
// one gets a name from its public key); keys of one name must share their
// template. Nil (with im.bad told why) when the account is refused.
func (im *importer) roles(a *rotatord.ImportedAccount) ([]*importRole, error) {
	out := []*importRole{}
	byName := map[string]*importRole{}
	for _, r := range a.Roles {
		name := r.Name
		if name == "" {
			name = "role-" + strings.ToLower(r.Key.PublicKey[1:9])
		}
		if err := rotatord.ValidateName("role", name); err != nil {
			im.bad.add("%s: account %s, scoped signing key %s: %s; rename the role in nsc first", a.File, a.Account.Name, r.Key.PublicKey, err)
			return nil, nil
		}
		if got := byName[name]; got != nil {
			if !reflect.DeepEqual(got.template, r.Template) {
				im.bad.add("%s: account %s has scoped signing keys %s and %s for role %q with different templates: a role of rotatord has one",
					a.File, a.Account.Name, got.keys[0], r.Key.PublicKey, name)
				return nil, nil
			}
			got.keys, got.seeds = append(got.keys, r.Key.PublicKey), append(got.seeds, r.Key)
			continue
		}
		ir := &importRole{name: name, template: r.Template, keys: []string{r.Key.PublicKey}, seeds: []rotatord.KeySeed{r.Key}}
		byName[name] = ir
		out = append(out, ir)
	}
	return out, nil
}

// createRole stores a role of a created account with its scoped keys.
func (im *importer) createRole(ctx context.Context, acc *rotatord.Account, ir *importRole, ia *importedAccount) error {
	t, err := checkRoleTemplate(ir.template, acc)
	if err != nil {
		im.bad.add("account %s, role %s: %s", acc.Name, ir.name, rotatord.ErrorMessage(err))
		return nil
	}
	r := &rotatord.Role{Name: ir.name, Template: t, AccountID: acc.ID, Account: acc.Name, AccountKey: acc.PublicKey}
	if err := im.s.store.CreateRole(ctx, r); err != nil {
		return err
	}
	for _, k := range ir.seeds {
		kp, err := jwtissue.FromSeed(k.Seed, nkeys.PrefixByteAccount)
		if err != nil {
			return err
		}
		err = im.s.store.AddRoleSigningKey(ctx, r, k.PublicKey, im.s.seal(kp))
		kp.Wipe()
		if err != nil {
			return err
		}
		ia.held[k.PublicKey] = true
		ia.roleOf[k.PublicKey] = r
	}
	return im.s.audit(ctx, im.actor, "role.import", rotatord.AuditEvent{Account: acc.Name, PublicKey: r.SigningKey(),
		Details: roleDetails(r, map[string]any{"signing_keys": r.SigningKeys})})
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
	if err := im.s.store.LockAccountGraph(ctx); err != nil {
		return err
	}
	if err := im.operator(ctx); err != nil {
		return err
	}
	for _, a := range im.in.Accounts {
		if err := im.account(ctx, a); err != nil {
			return fmt.Errorf("import account %s: %w", a.Account.Name, err)
		}
	}
	if _, err := im.s.store.FindAccountByPublicKey(ctx, im.sys); errors.Is(err, rotatord.ErrNotFound) {
		im.bad.add("the system account %s of operator %s is not among the accounts: import needs its JWT (rotatord connects to NATS as a user of it)",
			im.sys, im.in.Operator.Name)
	} else if err != nil {
		return err
	}
	if err := im.linkImports(ctx); err != nil {
		return err
	}
	for _, u := range im.in.Users {
		if err := im.user(ctx, u); err != nil {
			return fmt.Errorf("import user %s: %w", u.Name, err)
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
	in := &im.in.Operator
	existing, err := im.s.store.Operator(ctx)
	switch {
	case err == nil && existing.PublicKey != in.PublicKey:
		return rotatord.Errorf(rotatord.ECONFLICT, "rotatord already serves operator %s (%s), not %s (%s): import into a database of its own",
			existing.Name, existing.PublicKey, in.Name, in.PublicKey)
	case err == nil:
		detail := ""
		if existing.JWT != in.JWT {
			detail = "rotatord keeps its stored operator JWT"
		}
		im.sys = existing.SystemAccount
		im.step("operator", existing.Name, existing.PublicKey, ImportExists, detail)
		return nil
	case !errors.Is(err, rotatord.ErrNotFound):
		return err
	}
	im.sys = in.SystemAccount
	if err := rotatord.ValidateName("operator", in.Name); err != nil {
		im.bad.add("%s: %s", in.File, err)
		return nil
	}
	op := in.Operator
	var seedEnc []byte
	if in.Identity != nil {
		kp, err := jwtissue.FromSeed(in.Identity.Seed, nkeys.PrefixByteOperator)
		if err != nil {
			return err
		}
		seedEnc = im.s.seal(kp)
		kp.Wipe()
	}
	if err := im.s.store.CreateOperator(ctx, &op, seedEnc); err != nil {
		return err
	}
	var signers []string
	for _, k := range in.Signers {
		kp, err := jwtissue.FromSeed(k.Seed, nkeys.PrefixByteOperator)
		if err != nil {
			return err
		}
		err = im.s.store.AddSigningKey(ctx, 0, k.PublicKey, im.s.seal(kp))
		kp.Wipe()
		if err != nil {
			return err
		}
		signers = append(signers, k.PublicKey)
	}
	err = im.s.audit(ctx, im.actor, "operator.import", rotatord.AuditEvent{PublicKey: op.PublicKey, Details: map[string]any{
		"name": op.Name, "signing_keys": signers, "identity_seed": in.Identity != nil, "system_account": op.SystemAccount, "file": in.File}})
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

// managed reports whether rotatord holds (or this import brings) the
// account with that public key.
func (im *importer) managed(ctx context.Context, pub string) (bool, error) {
	if slices.ContainsFunc(im.in.Accounts, func(a *rotatord.ImportedAccount) bool { return a.Account.PublicKey == pub }) {
		return true, nil
	}
	_, err := im.s.store.FindAccountByPublicKey(ctx, pub)
	if errors.Is(err, rotatord.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (im *importer) account(ctx context.Context, a *rotatord.ImportedAccount) error {
	acc := a.Account // a copy: the set is the caller's
	existing, err := im.s.store.FindAccountByPublicKey(ctx, acc.PublicKey)
	if err == nil {
		var d []string
		if existing.Name != acc.Name {
			d = append(d, "as "+existing.Name)
		}
		if existing.JWT != acc.JWT {
			d = append(d, "rotatord keeps the JWT it has")
		}
		im.step("account", acc.Name, acc.PublicKey, ImportExists, strings.Join(d, "; "))
		return nil
	}
	if !errors.Is(err, rotatord.ErrNotFound) {
		return err
	}
	if other, err := im.s.store.FindAccountByName(ctx, acc.Name); err == nil {
		im.bad.add("%s: account name %q is taken in rotatord by %s", a.File, acc.Name, other.PublicKey)
		return nil
	} else if !errors.Is(err, rotatord.ErrNotFound) {
		return err
	}
	if err := rotatord.ValidateName("account", acc.Name); err != nil {
		im.bad.add("%s: %s", a.File, err)
		return nil
	}
	if err := validateDescription(acc.Description); err != nil {
		im.bad.add("%s: account %s: %s", a.File, acc.Name, err)
		return nil
	}

	// What rotatord cannot keep of this JWT.
	var lost []string
	for _, k := range slices.Sorted(maps.Keys(a.Dropped)) {
		lost = append(lost, fmt.Sprintf("account %s: signing key %s %s; it is dropped from the account JWT", acc.Name, k, a.Dropped[k]))
	}
	for _, path := range a.Unmodeled {
		lost = append(lost, fmt.Sprintf("account %s: %s", acc.Name, path))
	}
	for _, r := range a.Roles {
		for _, path := range r.Unmodeled {
			lost = append(lost, fmt.Sprintf("account %s: role %q (signing key %s): %s", acc.Name, r.Name, r.Key.PublicKey, path))
		}
	}
	im.report.Unmodeled = append(im.report.Unmodeled, lost...)

	acc.System = acc.PublicKey == im.sys
	acc.KeepRevocations = !im.opts.FoldRevocations
	claims := rotatord.AccountClaims{}
	if acc.Claims != nil {
		claims = *acc.Claims
	}
	// Between its own accounts rotatord mints the activation tokens.
	claims.Imports = slices.Clone(claims.Imports)
	for i, imp := range claims.Imports {
		ok, err := im.managed(ctx, imp.Account)
		if err != nil {
			return err
		}
		if ok {
			claims.Imports[i].Token = ""
		}
	}
	acc.Claims = &claims
	if err := im.checkClaims(&acc); err != nil {
		im.bad.add("%s: account %s: %s", a.File, acc.Name, rotatord.ErrorMessage(err))
		return nil
	}

	keys := map[string]nkeys.KeyPair{}
	defer func() {
		for _, kp := range keys {
			kp.Wipe()
		}
	}()
	for _, k := range a.Held {
		kp, err := jwtissue.FromSeed(k.Seed, nkeys.PrefixByteAccount)
		if err != nil {
			return err
		}
		keys[k.PublicKey] = kp
	}
	madePub := ""
	if a.IdentityHeld && len(keys) == 0 {
		made, err := jwtissue.NewKey(nkeys.PrefixByteAccount)
		if err != nil {
			return err
		}
		madePub = jwtissue.Public(made)
		keys[madePub] = made
	}
	acc.SigningKeys = slices.Sorted(maps.Keys(keys))
	roles, err := im.roles(a)
	if err != nil {
		return err
	}
	if roles == nil {
		return nil // refused: im.bad says why
	}
	all := slices.Clone(acc.SigningKeys)
	for _, r := range roles {
		all = append(all, r.keys...)
	}
	for _, k := range all {
		if owner, err := im.is.FindSigningKey(ctx, k); err == nil {
			im.bad.add("%s: signing key %s of account %s is already a key of rotatord's %s", a.File, k, acc.Name, ownerName(owner))
			return nil
		} else if !errors.Is(err, rotatord.ErrNotFound) {
			return err
		}
	}
	revs := importRevocations(a, im.in.Users)
	// The JWT is kept byte for byte when rotatord would sign the same
	// content: the servers already hold it. Otherwise it is re-signed now,
	// so what rotatord serves is what it will keep signing.
	resign := madePub != "" || len(lost) > 0
	if !resign {
		if err := im.s.checkJWTSize(&acc, acc.JWT); err != nil {
			im.bad.add("%s: account %s: %s", a.File, acc.Name, rotatord.ErrorMessage(err))
			return nil
		}
	}
	if err := im.s.store.CreateAccount(ctx, &acc); err != nil {
		return err
	}
	for _, k := range acc.SigningKeys {
		if err := im.s.store.AddSigningKey(ctx, acc.ID, k, im.s.seal(keys[k])); err != nil {
			return err
		}
	}
	ia := &importedAccount{acc: &acc, held: map[string]bool{}, listed: map[string]bool{}, revocations: a.Revocations,
		roleOf: map[string]*rotatord.Role{}}
	for _, r := range roles {
		if err := im.createRole(ctx, &acc, r, ia); err != nil {
			return err
		}
	}
	if err := im.s.store.AddRevocations(ctx, acc.ID, revs); err != nil {
		return err
	}
	if resign {
		// Signed once the signing keys and roles are stored: the JWT
		// lists them.
		if err := im.s.resignAccount(ctx, &acc); errors.Is(err, rotatord.ErrJWTFull) {
			im.bad.add("%s: account %s: %s", a.File, acc.Name, rotatord.ErrorMessage(err))
			return nil
		} else if err != nil {
			return err
		}
		if err := im.is.MarkPushOwed(ctx, acc.ID); err != nil {
			return err
		}
	}
	details := map[string]any{"jwt_id": acc.JWTID, "signing_keys": acc.SigningKeys, "revocations": len(revs),
		"system": acc.System, "resigned": resign, "file": a.File, "limits": acc.Limits, "claims": acc.Claims}
	if madePub != "" {
		details["new_signing_key"] = madePub
	}
	if len(lost) > 0 {
		details["dropped"] = lost
	}
	if err := im.s.audit(ctx, im.actor, "account.import", rotatord.AuditEvent{Account: acc.Name, PublicKey: acc.PublicKey, Details: details}); err != nil {
		return err
	}
	for _, k := range acc.SigningKeys {
		ia.held[k] = true
	}
	for _, k := range a.SigningKeys {
		ia.listed[k] = true
	}

	var d []string
	if acc.System {
		d = append(d, "system account")
	}
	if madePub != "" {
		// held is empty: a key is made only when no signing key seed is held
		d = append(d, "new signing key "+madePub+" (the keystore held only the account's own seed, which rotatord does not keep)")
	} else {
		d = append(d, "signing keys held: "+strings.Join(acc.SigningKeys, ", "))
	}
	for _, r := range roles {
		d = append(d, fmt.Sprintf("role %s (%d keys)", r.name, len(r.keys)))
	}
	d = append(d, describeClaims(acc.Claims)...)
	if len(revs) > 0 {
		d = append(d, fmt.Sprintf("%d revocations", len(revs)))
	}
	if resign {
		d = append(d, "JWT re-signed")
	} else {
		d = append(d, "JWT kept as is")
	}
	ia.step = len(im.report.Steps)
	im.created[acc.PublicKey] = ia
	im.step("account", acc.Name, acc.PublicKey, ImportCreate, strings.Join(d, "; "))
	return nil
}

// checkClaims checks an imported account's claims on their own, as the
// API checks them; references between accounts are checked once every
// account is in (linkImports).
func (im *importer) checkClaims(acc *rotatord.Account) error {
	if err := acc.Limits.Validate(); err != nil {
		return err
	}
	return checkOwnClaims(acc, acc.Claims)
}

// linkImports runs once every account is in: imports of an account of
// rotatord that match none of its exports are reported (nats-server does
// not apply them either), and the created accounts that import a token_req
// export of an account of rotatord are re-signed with the activation tokens
// rotatord mints for them.
func (im *importer) linkImports(ctx context.Context) error {
	for _, pub := range slices.Sorted(maps.Keys(im.created)) {
		ia := im.created[pub]
		acc := ia.acc
		mint := false
		for i, imp := range acc.Claims.Imports {
			exp, err := im.s.exporter(ctx, imp.Account)
			if errors.Is(err, errNoAccount) || (err == nil && exp == nil) {
				continue
			}
			if err != nil {
				return err
			}
			ec, err := claimsOf(exp)
			if err != nil {
				return err
			}
			e := matchExport(ec, imp)
			if e == nil {
				im.report.Warnings = append(im.report.Warnings, fmt.Sprintf("account %s, imports[%d] (%s %s from %s) matches no export of %s: nats-server does not apply it",
					acc.Name, i, imp.Type, imp.Subject, exp.Name, exp.Name))
				continue
			}
			if err := checkTokenPosition(e, imp, acc.PublicKey); err != nil {
				im.report.Warnings = append(im.report.Warnings, fmt.Sprintf("account %s, imports[%d]: %s", acc.Name, i, rotatord.ErrorMessage(err)))
			}
			mint = mint || e.TokenReq
		}
		if !mint {
			continue
		}
		locked, err := im.s.store.LockAccount(ctx, acc.ID)
		if err != nil {
			return err
		}
		locked.Claims = acc.Claims
		if err := im.s.resignAccount(ctx, locked); errors.Is(err, rotatord.ErrJWTFull) {
			im.bad.add("account %s: %s", acc.Name, rotatord.ErrorMessage(err))
			continue
		} else if err != nil {
			return err
		}
		if err := im.is.MarkPushOwed(ctx, acc.ID); err != nil {
			return err
		}
		acc.JWT, acc.JWTID = locked.JWT, locked.JWTID
		s := &im.report.Steps[ia.step]
		s.Detail = strings.Replace(s.Detail, "JWT kept as is", "JWT re-signed", 1)
		if !strings.Contains(s.Detail, "activation tokens minted") {
			s.Detail += "; activation tokens minted by rotatord"
		}
	}
	return nil
}

func describeClaims(c *rotatord.AccountClaims) []string {
	var d []string
	if js := c.JetStream; js != nil {
		if js.Tiers != nil {
			d = append(d, "JetStream tiers "+strings.Join(slices.Sorted(maps.Keys(js.Tiers)), ","))
		} else {
			d = append(d, "JetStream")
		}
	}
	for _, n := range []struct {
		n    int
		what string
	}{{len(c.Exports), "export"}, {len(c.Imports), "import"}, {len(c.Mappings), "mapping"}} {
		switch {
		case n.n == 1:
			d = append(d, "1 "+n.what)
		case n.n > 1:
			d = append(d, fmt.Sprintf("%d %ss", n.n, n.what))
		}
	}
	return d
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
func importRevocations(a *rotatord.ImportedAccount, users []*rotatord.ImportedUser) []rotatord.Revocation {
	exp := map[string]time.Time{}
	names := map[string]string{}
	for _, u := range users {
		if u.ExpiresAt.After(exp[u.PublicKey]) {
			exp[u.PublicKey] = u.ExpiresAt
		}
		names[u.PublicKey] = u.Name
	}
	var out []rotatord.Revocation
	for _, k := range slices.Sorted(maps.Keys(a.Revocations)) {
		r := rotatord.Revocation{PublicKey: k, RevokedAt: time.Unix(a.Revocations[k], 0), ExpiresAt: NeverExpires,
			Agent: names[k], Reason: "imported"}
		if e := exp[k]; !e.IsZero() {
			r.ExpiresAt = e
		}
		out = append(out, r)
	}
	return out
}

// revoked reports whether revocations refuse a JWT of key issued at iat
// (nats-io/jwt's RevocationList.IsRevoked; an unknown iat is revoked).
func revoked(revs map[string]int64, key string, iat time.Time) bool {
	if iat.Unix() <= 0 {
		return true
	}
	if t, ok := revs[jwt.All]; ok && t >= iat.Unix() {
		return true
	}
	t, ok := revs[key]
	return ok && t >= iat.Unix()
}

func (im *importer) user(ctx context.Context, u *rotatord.ImportedUser) error {
	if cred, err := im.s.store.FindCredentialByPublicKey(ctx, u.PublicKey); err == nil {
		g, err := im.s.store.FindAgentByName(ctx, u.Name)
		if err != nil && !errors.Is(err, rotatord.ErrNotFound) {
			return err
		}
		if g == nil || g.ID != cred.AgentID {
			im.bad.add("%s: user key %s is already a key of another agent in rotatord", u.File, u.PublicKey)
			return nil
		}
		detail := ""
		if cred.JWT != u.JWT {
			detail = "rotatord keeps the JWT it has"
		}
		if cred.State != rotatord.CredentialActive {
			detail = "this key is " + cred.State + "; agent " + g.Name + " has moved on"
		}
		im.step("agent", u.Name, u.PublicKey, ImportExists, detail)
		return nil
	} else if !errors.Is(err, rotatord.ErrNotFound) {
		return err
	}
	acc, err := im.s.store.FindAccountByPublicKey(ctx, u.Account)
	if errors.Is(err, rotatord.ErrNotFound) {
		im.bad.add("%s: user %s belongs to account %s, which is not imported: add the account's JWT", u.File, u.Name, u.Account)
		return nil
	}
	if err != nil {
		return err
	}
	ia, err := im.accountState(ctx, acc)
	if err != nil {
		return err
	}
	signed := u.Issuer == acc.PublicKey || (u.Account == acc.PublicKey && ia.listed[u.Issuer])
	switch {
	case acc.System:
		im.step("user", u.Name, u.PublicKey, ImportSkip,
			"a user of the system account: rotatord mints its own system users and does not rotate these; the creds keep working as they are")
		return nil
	case !signed:
		im.bad.add("%s: user %s is signed by %s, which is not account %s or one of its signing keys", u.File, u.Name, u.Issuer, acc.Name)
		return nil
	case u.Issuer != acc.PublicKey && !ia.held[u.Issuer]:
		im.bad.add("%s: user %s is signed by signing key %s of account %s, which rotatord cannot keep (%s): the user would be locked out at the account's first re-sign",
			u.File, u.Name, u.Issuer, acc.Name, droppedWhy(im.in, acc.PublicKey, u.Issuer))
		return nil
	case revoked(ia.revocations, u.PublicKey, u.IssuedAt):
		im.step("user", u.Name, u.PublicKey, ImportSkip, "revoked in the account JWT")
		return nil
	case !u.ExpiresAt.IsZero() && !u.ExpiresAt.After(im.now):
		im.step("user", u.Name, u.PublicKey, ImportSkip, "its JWT expired "+u.ExpiresAt.UTC().Format(time.RFC3339))
		return nil
	}
	if err := rotatord.ValidateName("agent", u.Name); err != nil {
		im.bad.add("%s: user %s: %s", u.File, u.Name, err)
		return nil
	}
	tags, err := rotatord.NormalizeTags(u.Tags)
	if err != nil {
		im.bad.add("%s: user %s: %s", u.File, u.Name, err)
		return nil
	}
	// A user of a role becomes an agent of that role, with no claims of
	// its own; any other keeps every claim of its JWT.
	role := ia.roleOf[u.Issuer]
	own := emptyTemplate()
	if role != nil {
		if err := role.Template.CheckAgent(u.Name, tags); err != nil {
			im.bad.add("%s: user %s of role %s: %s", u.File, u.Name, role.Name, rotatord.ErrorMessage(err))
			return nil
		}
	} else if own, err = checkTemplate(u.Template, false); err != nil {
		im.bad.add("%s: user %s: %s", u.File, u.Name, rotatord.ErrorMessage(err))
		return nil
	}
	if g, err := im.s.store.FindAgentByName(ctx, u.Name); err == nil {
		im.bad.add("%s: agent %q already exists in rotatord (account %s) with other keys", u.File, u.Name, g.Account)
		return nil
	} else if !errors.Is(err, rotatord.ErrNotFound) {
		return err
	}
	for _, path := range u.Unmodeled {
		im.report.Unmodeled = append(im.report.Unmodeled, fmt.Sprintf("user %s: %s (dropped at its first rotation)", u.Name, path))
	}

	cred := &rotatord.Credential{PublicKey: u.PublicKey, JWT: u.JWT, JWTID: u.JWTID, IssuedAt: u.IssuedAt,
		ExpiresAt: NeverExpires, State: rotatord.CredentialActive, SigningKey: u.Issuer}
	if !u.ExpiresAt.IsZero() {
		cred.ExpiresAt = u.ExpiresAt
	}
	delivery := im.opts.Delivery
	if delivery == "" {
		delivery = rotatord.DeliveryPoll
	}
	g := &rotatord.Agent{Name: u.Name, AccountID: acc.ID, Account: acc.Name, AccountKey: acc.PublicKey,
		Rotation: im.policy, Delivery: delivery, State: rotatord.AgentActive, Tags: tags}
	g.SetTemplate(own)
	if role != nil {
		g.RoleID, g.Role, g.RoleKey = role.ID, role.Name, role.SigningKey()
	}
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
		Details: claimsDetails(g, map[string]any{"schedule": g.Rotation.Schedule, "grace": g.Rotation.Grace.String(),
			"delivery": g.Delivery, "file": u.File})}); err != nil {
		return err
	}
	if err := im.s.audit(ctx, im.actor, "credential.import", rotatord.AuditEvent{Account: acc.Name, Agent: g.Name, PublicKey: cred.PublicKey,
		Details: map[string]any{"jwt_id": cred.JWTID, "issuer": u.Issuer, "expires_at": cred.ExpiresAt, "next_rotation_at": next}}); err != nil {
		return err
	}
	expires := "never expires"
	if !u.ExpiresAt.IsZero() {
		expires = "expires " + cred.ExpiresAt.UTC().Format(time.RFC3339)
	}
	im.step("agent", g.Name, cred.PublicKey, ImportCreate, fmt.Sprintf("account %s; %s; first rotation %s; %s",
		acc.Name, expires, next.UTC().Format(time.RFC3339), describeAgent(g)))
	return nil
}

// accountState returns what a user's checks need of its account: for an
// account this import created, what its JWT said; for one rotatord already
// had, its stored JWT and the signing keys rotatord holds.
func (im *importer) accountState(ctx context.Context, acc *rotatord.Account) (*importedAccount, error) {
	if c := im.created[acc.PublicKey]; c != nil {
		return c, nil
	}
	ac, err := jwt.DecodeAccountClaims(acc.JWT)
	if err != nil {
		return nil, fmt.Errorf("decode stored account jwt of %s: %w", acc.Name, err)
	}
	keys, err := im.s.store.SigningKeys(ctx, acc.ID)
	if err != nil {
		return nil, err
	}
	ia := &importedAccount{acc: acc, held: map[string]bool{}, listed: map[string]bool{}, revocations: map[string]int64{},
		roleOf: map[string]*rotatord.Role{}}
	for _, k := range keys {
		ia.held[k] = true
	}
	roles, err := im.s.store.ListRoles(ctx, acc.ID)
	if err != nil {
		return nil, err
	}
	for _, r := range roles {
		for _, k := range r.SigningKeys {
			ia.held[k] = true
			ia.roleOf[k] = r
		}
	}
	for k := range ac.SigningKeys {
		ia.listed[k] = true
	}
	for k, t := range ac.Revocations {
		ia.revocations[k] = t
	}
	return ia, nil
}

func droppedWhy(in *rotatord.ImportSet, accPub, key string) string {
	for _, a := range in.Accounts {
		if a.Account.PublicKey == accPub {
			if why, ok := a.Dropped[key]; ok {
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

// describeAgent says what an imported agent may do: its role, or its own
// permissions and the other claims it has.
func describeAgent(g *rotatord.Agent) string {
	if g.Role != "" {
		return "role " + g.Role
	}
	d := describePermissions(g.Permissions)
	if g.Permissions.Resp != nil {
		d += "; responses"
	}
	if len(g.Src) > 0 {
		d += "; src " + strings.Join(g.Src, ",")
	}
	if len(g.Times) > 0 {
		d += fmt.Sprintf("; %d connect time ranges", len(g.Times))
	}
	if len(g.ConnectionTypes) > 0 {
		d += "; connection types " + strings.Join(g.ConnectionTypes, ",")
	}
	return d
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
