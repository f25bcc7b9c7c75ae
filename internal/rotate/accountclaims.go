package rotate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// AccountGraphStore is what the service needs from the registry for
// exports, imports and the activation tokens it mints between its accounts.
type AccountGraphStore interface {
	LockAccountGraph(ctx context.Context) error
	FindAccountByRef(ctx context.Context, ref string) (*rotatord.Account, error)
	ImportersOf(ctx context.Context, name, pub string) ([]*rotatord.Account, error)
	Activations(ctx context.Context, importer string) ([]rotatord.Activation, error)
	ReplaceActivations(ctx context.Context, importer string, acts []rotatord.Activation) error
	ClaimActivationRenewal(ctx context.Context, t time.Time) (int64, error)
}

// DefaultActivationLifetime is how long an activation token rotatord mints
// is valid. Tick renews a token when a third of it is left (10 days by
// default), so a scheduler that stops for days does not break an import;
// a token is not renewed more often, because every renewal re-signs and
// pushes the importing account.
const DefaultActivationLifetime = 30 * 24 * time.Hour

// renewEvery is how often Tick looks for activation tokens to renew: they
// are renewed days before they expire.
const renewEvery = time.Minute

// ClaimsPatch changes an account's modeled claims. Nil fields stay as they
// are (on create: absent). A list or map given replaces the old one.
type ClaimsPatch struct {
	// JetStream turns JetStream on or changes its limits (see
	// rotatord.JetStreamPatch.Apply); JetStreamOff turns it off.
	JetStream          *rotatord.JetStreamPatch
	JetStreamOff       bool
	Exports            *[]rotatord.Export
	Imports            *[]rotatord.Import
	DefaultPermissions *rotatord.Permissions
	Mappings           *map[string][]rotatord.WeightedMapping
	InfoURL            *string
	Tags               *[]string
}

func (p ClaimsPatch) empty() bool { return reflect.DeepEqual(p, ClaimsPatch{}) }

// apply returns cur changed by p.
func (p ClaimsPatch) apply(cur rotatord.AccountClaims) (rotatord.AccountClaims, error) {
	next := cur
	switch {
	case p.JetStreamOff && p.JetStream != nil:
		return next, rotatord.Errorf(rotatord.EINVALID, "jetstream: cannot both change and turn off JetStream")
	case p.JetStreamOff:
		next.JetStream = nil
	case p.JetStream != nil:
		js, err := p.JetStream.Apply(cur.JetStream)
		if err != nil {
			return next, err
		}
		next.JetStream = js
	}
	if p.Exports != nil {
		next.Exports = append([]rotatord.Export{}, *p.Exports...)
	}
	if p.Imports != nil {
		next.Imports = append([]rotatord.Import{}, *p.Imports...)
	}
	if p.DefaultPermissions != nil {
		next.DefaultPermissions = *p.DefaultPermissions
	}
	if p.Mappings != nil {
		next.Mappings = map[string][]rotatord.WeightedMapping{}
		for k, v := range *p.Mappings {
			next.Mappings[k] = append([]rotatord.WeightedMapping{}, v...)
		}
	}
	if p.InfoURL != nil {
		next.InfoURL = *p.InfoURL
	}
	if p.Tags != nil {
		next.Tags = append([]string{}, *p.Tags...)
	}
	return next, nil
}

// claimsOf returns acc's modeled claims, normalized. An account imported
// before rotatord modeled them has them in its base claims: they are read
// from there and kept on acc, so that the next store of acc records them.
func claimsOf(acc *rotatord.Account) (*rotatord.AccountClaims, error) {
	if acc.Claims == nil {
		c := &rotatord.AccountClaims{}
		if len(acc.BaseClaims) > 0 {
			_, model, err := jwtissue.AccountModelFromBase(acc.BaseClaims)
			if err != nil {
				return nil, fmt.Errorf("claims of account %s: %w", acc.Name, err)
			}
			*c = model
		}
		acc.Claims = c
	}
	acc.Claims.Normalize()
	return acc.Claims, nil
}

// errNoAccount: an import names neither an account of rotatord nor an
// account public key.
var errNoAccount = errors.New("no such account")

// exporter finds the account an import names: an account of rotatord, by
// name or public key; nil for the public key of an account rotatord does
// not hold; errNoAccount otherwise.
func (s *Service) exporter(ctx context.Context, ref string) (*rotatord.Account, error) {
	acc, err := s.store.FindAccountByRef(ctx, ref)
	if err == nil || !errors.Is(err, rotatord.ErrNotFound) {
		return acc, err
	}
	if jwtissue.ValidateAccountKey(ref) != nil {
		return nil, errNoAccount
	}
	return nil, nil
}

// matchExport returns the export of c that im imports: of its type, with a
// subject that holds im's; nil when there is none.
func matchExport(c *rotatord.AccountClaims, im rotatord.Import) *rotatord.Export {
	for i, e := range c.Exports {
		if e.Type == im.Type && rotatord.SubjectContainedIn(im.Subject, e.Subject) {
			return &c.Exports[i]
		}
	}
	return nil
}

// checkTokenPosition checks that an import of an export with an account
// token position carries the importing account's key in that token.
func checkTokenPosition(e *rotatord.Export, im rotatord.Import, importer string) error {
	if e.AccountTokenPosition == 0 {
		return nil
	}
	tokens := strings.Split(im.Subject, ".")
	p := int(e.AccountTokenPosition)
	if p > len(tokens) || tokens[p-1] != importer {
		return rotatord.Errorf(rotatord.EINVALID, "subject %q must hold the importing account's public key (%s) as token %d, as export %q asks",
			im.Subject, importer, p, e.Name)
	}
	return nil
}

// checkOwnClaims normalizes c, the claims acc is to be signed with, and
// checks them on their own: their fields, acc's limits, the mappings'
// destinations (as nats-server parses them). Every failure is EINVALID.
func checkOwnClaims(acc *rotatord.Account, c *rotatord.AccountClaims) error {
	c.Normalize()
	if err := c.Validate(acc.PublicKey, acc.Name); err != nil {
		return err
	}
	if err := c.CheckLimits(acc.Limits); err != nil {
		return err
	}
	for _, src := range slices.Sorted(maps.Keys(c.Mappings)) {
		for _, d := range c.Mappings[src] {
			if err := server.ValidateMapping(src, d.Subject); err != nil {
				return rotatord.Errorf(rotatord.EINVALID, "mappings[%q]: destination %q: %v", src, d.Subject, err)
			}
		}
	}
	return nil
}

// checkClaims normalizes and checks the claims acc is to be signed with
// (acc carries the name, public key, limits and system flag they go with):
// each on its own, then against the other accounts: every import of an
// account rotatord holds must match one of its exports, carry no token
// (rotatord mints those) and form no cycle; a token given for another
// account must activate the import. Every failure is EINVALID.
func (s *Service) checkClaims(ctx context.Context, acc *rotatord.Account, c *rotatord.AccountClaims) error {
	if err := checkOwnClaims(acc, c); err != nil {
		return err
	}
	if acc.System {
		// rotatord's own connection is a user of the system account
		// without permissions of its own: default permissions or
		// mappings would cut it off, and nats-server gives the system
		// account no JetStream (see system.go).
		what := ""
		switch {
		case c.JetStream != nil:
			what = "JetStream (nats-server gives the system account none)"
		case !emptyPermissions(c.DefaultPermissions) || c.DefaultPermissions.Resp != nil:
			what = "default_permissions (they would restrict rotatord's own connection)"
		case len(c.Mappings) > 0:
			what = "mappings (they would redirect the subjects rotatord and the servers talk on)"
		case len(c.Imports) > 0:
			what = "imports"
		}
		if what != "" {
			return rotatord.Errorf(rotatord.ECONFLICT, "the system account cannot have %s: rotatord's own NATS connection runs in it; its description, exports, info URL and tags may change", what)
		}
	}
	g := &graph{s: s, self: acc, selfClaims: c, nodes: map[string]*graphNode{}}
	for i, im := range c.Imports {
		at := fmt.Sprintf("imports[%d]", i)
		n, err := g.resolve(ctx, im.Account)
		if errors.Is(err, errNoAccount) {
			return rotatord.Errorf(rotatord.EINVALID, "%s.account %.64q is neither an account of rotatord nor an account public key", at, im.Account)
		}
		if err != nil {
			return err
		}
		if n == nil {
			// An account rotatord does not hold: only its token can be checked.
			if im.Token != "" {
				if err := jwtissue.CheckImportToken(im.Token, acc.PublicKey, im.Account, im, s.now()); err != nil {
					return rotatord.Errorf(rotatord.EINVALID, "%s.token: %s", at, rotatord.ErrorMessage(err))
				}
			}
			continue
		}
		if n.acc.PublicKey == acc.PublicKey {
			return rotatord.Errorf(rotatord.EINVALID, "%s: an account cannot import from itself", at)
		}
		if im.Token != "" {
			return rotatord.Errorf(rotatord.EINVALID, "%s.token: rotatord mints the activation tokens of its own accounts' exports (%s): leave token out", at, n.acc.Name)
		}
		e := matchExport(n.claims, im)
		if e == nil {
			return rotatord.Errorf(rotatord.EINVALID, "%s: account %s has no %s export that holds %q", at, n.acc.Name, im.Type, im.Subject)
		}
		if err := checkTokenPosition(e, im, acc.PublicKey); err != nil {
			return rotatord.Errorf(rotatord.EINVALID, "%s: %s", at, rotatord.ErrorMessage(err))
		}
		cycle, err := g.formsCycle(ctx, n, im)
		if err != nil {
			return err
		}
		if cycle != "" {
			return rotatord.Errorf(rotatord.EINVALID, "%s (%s %s from %s) forms a cycle: %s; nats-server refuses such an import", at, im.Type, im.Subject, n.acc.Name, cycle)
		}
	}
	return nil
}

func emptyPermissions(p rotatord.Permissions) bool {
	return len(p.Pub.Allow)+len(p.Pub.Deny)+len(p.Sub.Allow)+len(p.Sub.Deny) == 0
}

// graph reads accounts and their claims while imports are checked; the
// account being changed is seen with its new claims.
type graph struct {
	s          *Service
	self       *rotatord.Account
	selfClaims *rotatord.AccountClaims
	nodes      map[string]*graphNode // by public key, and by name
}

type graphNode struct {
	acc    *rotatord.Account
	claims *rotatord.AccountClaims
}

// resolve returns the account an import names, nil for an account
// rotatord does not hold, or errNoAccount.
func (g *graph) resolve(ctx context.Context, ref string) (*graphNode, error) {
	if ref == g.self.PublicKey || ref == g.self.Name {
		return &graphNode{acc: g.self, claims: g.selfClaims}, nil
	}
	if n, ok := g.nodes[ref]; ok {
		return n, nil
	}
	acc, err := g.s.exporter(ctx, ref)
	if err != nil || acc == nil {
		return nil, err
	}
	if acc.PublicKey == g.self.PublicKey {
		return &graphNode{acc: g.self, claims: g.selfClaims}, nil
	}
	c, err := claimsOf(acc)
	if err != nil {
		return nil, err
	}
	n := &graphNode{acc: acc, claims: c}
	g.nodes[acc.PublicKey], g.nodes[acc.Name] = n, n
	return n, nil
}

// maxCycleSearch bounds the accounts a cycle search visits.
const maxCycleSearch = 256

// formsCycle reports how self's import im from account n would loop back
// to self, the way nats-server checks it when it adds the import (its
// checkServiceImportsForCycles and checkStreamImportsForCycles); "" when it
// does not.
func (g *graph) formsCycle(ctx context.Context, n *graphNode, im rotatord.Import) (string, error) {
	visited := map[string]bool{g.self.PublicKey: true}
	path := []string{g.self.Name, n.acc.Name}
	if im.Type == rotatord.ExportService {
		return g.importCycle(ctx, n, rotatord.ExportService, localOf(im), visited, path)
	}
	for _, subj := range []string{localOf(im), im.Subject} {
		if c, err := g.importCycle(ctx, n, rotatord.ExportStream, subj, map[string]bool{g.self.PublicKey: true}, path); c != "" || err != nil {
			return c, err
		}
	}
	return "", nil
}

// localOf is the subject of an import in the importing account, with $N
// references as '*'.
func localOf(im rotatord.Import) string {
	if im.LocalSubject == "" {
		return im.Subject
	}
	tokens := strings.Split(im.LocalSubject, ".")
	for i, t := range tokens {
		if len(t) > 1 && t[0] == '$' && strings.Trim(t[1:], "0123456789") == "" {
			tokens[i] = "*"
		}
	}
	return strings.Join(tokens, ".")
}

// importCycle follows n's imports of kind whose subject meets subj (a
// service import's remote subject, a stream import's local one), as
// nats-server does; a stream is followed only through an account that
// exports it. It returns the path back to an account already visited.
func (g *graph) importCycle(ctx context.Context, n *graphNode, kind, subj string, visited map[string]bool, path []string) (string, error) {
	if len(visited) >= maxCycleSearch {
		return "the search for a cycle goes through too many accounts", nil
	}
	if kind == rotatord.ExportStream && !slices.ContainsFunc(n.claims.Exports, func(e rotatord.Export) bool {
		return e.Type == rotatord.ExportStream && rotatord.SubjectContainedIn(subj, e.Subject)
	}) {
		return "", nil
	}
	for _, si := range n.claims.Imports {
		meets := si.Subject
		if kind == rotatord.ExportStream {
			meets = localOf(si)
		}
		if si.Type != kind || !rotatord.SubjectsCollide(subj, meets) {
			continue
		}
		next, err := g.resolve(ctx, si.Account)
		if errors.Is(err, errNoAccount) || (err == nil && next == nil) {
			continue
		}
		if err != nil {
			return "", err
		}
		p := append(append([]string(nil), path...), next.acc.Name)
		if visited[next.acc.PublicKey] {
			return strings.Join(p, " → "), nil
		}
		visited[n.acc.PublicKey] = true
		s := subj
		if l := localOf(si); rotatord.SubjectContainedIn(l, s) {
			s = l
		}
		if c, err := g.importCycle(ctx, next, kind, s, visited, p); c != "" || err != nil {
			return c, err
		}
	}
	return "", nil
}

// importSpecs resolves acc's imports for its JWT: the exporting account's
// public key and, for a token_req export of an account rotatord holds, an
// activation token signed by that account's signing key: the one minted
// before while it has more than a third of its lifetime left and its
// signer is still the exporter's, a new one otherwise. The tokens the JWT
// carries are stored with acc (run it in the transaction that stores acc).
func (s *Service) importSpecs(ctx context.Context, acc *rotatord.Account, c *rotatord.AccountClaims) ([]jwtissue.ImportSpec, error) {
	if len(c.Imports) == 0 {
		// Nothing to mint; drop what an earlier version of the account had.
		if acc.ID != 0 {
			return nil, s.dropActivations(ctx, acc)
		}
		return nil, nil
	}
	stored, err := s.store.Activations(ctx, acc.PublicKey)
	if err != nil {
		return nil, err
	}
	byKey := map[string]rotatord.Activation{}
	for _, a := range stored {
		byKey[a.Exporter+" "+a.Subject+" "+a.Type] = a
	}
	now := s.now()
	var (
		specs []jwtissue.ImportSpec
		acts  []rotatord.Activation
	)
	for _, im := range c.Imports {
		spec := jwtissue.ImportSpec{Import: im, AccountKey: im.Account}
		exp, err := s.exporter(ctx, im.Account)
		if errors.Is(err, errNoAccount) {
			return nil, rotatord.Errorf(rotatord.EINVALID, "import %s of account %s: %.64q is neither an account of rotatord nor an account public key", im.Name, acc.Name, im.Account)
		}
		if err != nil {
			return nil, err
		}
		if exp == nil || exp.PublicKey == acc.PublicKey {
			specs = append(specs, spec)
			continue
		}
		spec.AccountKey, spec.Token = exp.PublicKey, ""
		ec, err := claimsOf(exp)
		if err != nil {
			return nil, err
		}
		e := matchExport(ec, im)
		if e == nil || !e.TokenReq {
			specs = append(specs, spec)
			continue
		}
		if _, cut := e.Revocations[acc.PublicKey]; cut {
			// The exporter revoked this account's activation: rotatord
			// does not issue it another one (remove the revocation to
			// let the import work again).
			specs = append(specs, spec)
			continue
		}
		signer, err := s.signer(ctx, exp.ID)
		if err != nil {
			return nil, fmt.Errorf("activation for %s from %s: %w", acc.Name, exp.Name, err)
		}
		signerPub := jwtissue.Public(signer)
		a, ok := byKey[exp.PublicKey+" "+im.Subject+" "+im.Type]
		if !ok || a.Signer != signerPub || !a.ExpiresAt.After(now.Add(s.activations/3)) || revokedAll(e, a.Token) {
			waitPastRevocation(ctx, e)
			token, expires, err := jwtissue.EncodeActivation(signer, jwtissue.ActivationSpec{Importer: acc.PublicKey,
				Exporter: exp.PublicKey, Subject: im.Subject, Type: im.Type, Expires: now.Add(s.activations)})
			if err != nil {
				return nil, err
			}
			a = rotatord.Activation{Importer: acc.PublicKey, Exporter: exp.PublicKey, Subject: im.Subject, Type: im.Type,
				Token: token, Signer: signerPub, ExpiresAt: expires}
			if err := s.audit(ctx, SystemActor, "activation.issue", rotatord.AuditEvent{Account: acc.Name, PublicKey: acc.PublicKey,
				Details: map[string]any{"exporter": exp.Name, "exporter_key": exp.PublicKey, "subject": im.Subject, "type": im.Type,
					"signer": signerPub, "expires_at": expires.UTC()}}); err != nil {
				return nil, err
			}
		}
		spec.Token = a.Token
		acts = append(acts, a)
		specs = append(specs, spec)
	}
	if !sameActivations(stored, acts) {
		if err := s.store.ReplaceActivations(ctx, acc.PublicKey, acts); err != nil {
			return nil, err
		}
	}
	return specs, nil
}

// revokedAll reports whether an export's "*" revocation refuses a token
// (issued at or before it): a new one is then minted.
func revokedAll(e *rotatord.Export, token string) bool {
	t, ok := e.Revocations["*"]
	if !ok {
		return false
	}
	act, err := jwtissue.DecodeActivation(token)
	return err != nil || act.IssuedAt.Unix() <= t
}

// waitPastRevocation waits, at most two seconds, until a token minted now
// would be issued after the export's "*" revocation: nats-io/jwt sets a
// token's iat from the wall clock, to the second, and refuses tokens
// issued at or before the revocation.
func waitPastRevocation(ctx context.Context, e *rotatord.Export) {
	t, ok := e.Revocations["*"]
	if !ok {
		return
	}
	wait := time.Until(time.Unix(t+1, 0))
	if wait <= 0 || wait > 2*time.Second {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(wait):
	}
}

func (s *Service) dropActivations(ctx context.Context, acc *rotatord.Account) error {
	stored, err := s.store.Activations(ctx, acc.PublicKey)
	if err != nil || len(stored) == 0 {
		return err
	}
	return s.store.ReplaceActivations(ctx, acc.PublicKey, nil)
}

func sameActivations(a, b []rotatord.Activation) bool {
	if len(a) != len(b) {
		return false
	}
	key := func(x rotatord.Activation) string { return x.Exporter + " " + x.Subject + " " + x.Type + " " + x.Token }
	ka, kb := make([]string, len(a)), make([]string, len(b))
	for i := range a {
		ka[i], kb[i] = key(a[i]), key(b[i])
	}
	sort.Strings(ka)
	sort.Strings(kb)
	return reflect.DeepEqual(ka, kb)
}

// checkRoleTags refuses (ECONFLICT) account tags that lack one a role of
// the account reads ({{account-tag(key)}} in a deny subject): nats-server
// would refuse every agent of the role.
func (s *Service) checkRoleTags(ctx context.Context, acc *rotatord.Account, tags []string) error {
	roles, err := s.store.ListRoles(ctx, acc.ID)
	if err != nil {
		return err
	}
	for _, r := range roles {
		for _, k := range r.Template.AccountTagsNeeded() {
			if !slices.ContainsFunc(tags, func(t string) bool { return strings.HasPrefix(t, k+":") }) {
				return rotatord.Errorf(rotatord.ECONFLICT, "role %s of account %s reads account tag %q ({{account-tag(%s)}}): keep a tag %s:<value>, or change the role first",
					r.Name, acc.Name, k, k, k)
			}
		}
	}
	return nil
}

// resignImporters re-signs, inside the transaction that changed acc's
// exports (acc is stored with them), every account that imports from acc,
// so that activation tokens follow the exports. A change that leaves one
// of their imports without a matching export is ECONFLICT. It returns the
// re-signed accounts, to push after commit.
func (s *Service) resignImporters(ctx context.Context, acc *rotatord.Account) ([]*rotatord.Account, error) {
	importers, err := s.store.ImportersOf(ctx, acc.Name, acc.PublicKey)
	if err != nil {
		return nil, err
	}
	var (
		bad    []string
		locked []*rotatord.Account
	)
	for _, found := range importers {
		imp, err := s.store.LockAccount(ctx, found.ID)
		if err != nil {
			return nil, err
		}
		ic, err := claimsOf(imp)
		if err != nil {
			return nil, err
		}
		for i, im := range ic.Imports {
			if im.Account != acc.Name && im.Account != acc.PublicKey {
				continue
			}
			e := matchExport(acc.Claims, im)
			if e == nil {
				bad = append(bad, fmt.Sprintf("account %s imports %s %q from it (imports[%d])", imp.Name, im.Type, im.Subject, i))
			} else if err := checkTokenPosition(e, im, imp.PublicKey); err != nil {
				bad = append(bad, fmt.Sprintf("account %s, imports[%d]: %s", imp.Name, i, rotatord.ErrorMessage(err)))
			}
		}
		locked = append(locked, imp)
	}
	if len(bad) > 0 {
		return nil, rotatord.Errorf(rotatord.ECONFLICT, "the exports of account %s would no longer cover what other accounts import: %s; change or remove those imports first",
			acc.Name, strings.Join(bad, "; "))
	}
	for _, imp := range locked {
		if err := s.resignAccount(ctx, imp); err != nil {
			return nil, fmt.Errorf("re-sign importer %s: %w", imp.Name, err)
		}
	}
	return locked, nil
}

// RenewActivations re-signs, one account per transaction, every account
// that holds an activation token with less than a third of its lifetime
// left, which mints it a new one, and pushes it. Replicas share the work
// through row locks (FOR UPDATE SKIP LOCKED). It returns how many accounts
// it renewed.
func (s *Service) RenewActivations(ctx context.Context) (int, error) {
	n := 0
	for ctx.Err() == nil {
		var acc *rotatord.Account
		err := s.inTx(ctx, func(ctx context.Context) error {
			id, err := s.store.ClaimActivationRenewal(ctx, s.now().Add(s.activations/3))
			if err != nil || id == 0 {
				return err
			}
			if acc, err = s.store.LockAccount(ctx, id); err != nil {
				return err
			}
			if err := s.resignAccount(ctx, acc); err != nil {
				return err
			}
			return s.audit(ctx, SystemActor, "account.renew_activations", rotatord.AuditEvent{Account: acc.Name, PublicKey: acc.PublicKey,
				Details: map[string]any{"jwt_id": acc.JWTID}})
		})
		if err != nil {
			return n, fmt.Errorf("renew activation tokens: %w", err)
		}
		if acc == nil {
			return n, nil
		}
		n++
		s.changed(ctx, acc.PublicKey)
		s.PushAccount(ctx, acc.ID) //nolint:errcheck // logged; the push stays owed
	}
	return n, ctx.Err()
}
