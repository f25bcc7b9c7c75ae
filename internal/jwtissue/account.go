package jwtissue

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
)

// ImportSpec is an import of the account being encoded, with the
// exporting account resolved to its public key. Its Token is the
// activation token to carry (given by the operator, or minted by rotatord).
type ImportSpec struct {
	rotatord.Import
	AccountKey string
}

// AccountClaimsOf builds the claims EncodeAccount signs, without signing
// them: rotatord's model on top of spec.Base. A Base that does not decode
// is an error.
func AccountClaimsOf(spec AccountSpec) (*jwt.AccountClaims, error) {
	ac := jwt.NewAccountClaims(spec.PublicKey)
	if ac == nil {
		return nil, fmt.Errorf("account claims of %s: no public key", spec.Name)
	}
	if len(spec.Base) > 0 {
		if err := json.Unmarshal(spec.Base, &ac.Account); err != nil {
			return nil, fmt.Errorf("account claims of %s: %w", spec.Name, err)
		}
		// Signing keys and revocations are rotatord's, not the base's.
		ac.SigningKeys = jwt.SigningKeys{}
		ac.Revocations = nil
	}
	ac.Name = spec.Name
	ac.Description = spec.Description
	setLimits(&ac.Limits, spec.Limits, spec.Claims.JetStream)
	c := spec.Claims
	ac.Exports = jwt.Exports{}
	for _, e := range c.Exports {
		ac.Exports.Add(exportClaim(e))
	}
	ac.Imports = jwt.Imports{}
	for _, im := range spec.Imports {
		ac.Imports.Add(importClaim(im))
	}
	// Default permissions are as given: an empty allow list allows all
	// (no default deny here, unlike an agent's own permissions).
	ac.DefaultPermissions.Pub = jwt.Permission{Allow: jwt.StringList(c.DefaultPermissions.Pub.Allow), Deny: jwt.StringList(c.DefaultPermissions.Pub.Deny)}
	ac.DefaultPermissions.Sub = jwt.Permission{Allow: jwt.StringList(c.DefaultPermissions.Sub.Allow), Deny: jwt.StringList(c.DefaultPermissions.Sub.Deny)}
	ac.DefaultPermissions.Resp = nil
	if r := c.DefaultPermissions.Resp; r != nil {
		ac.DefaultPermissions.Resp = &jwt.ResponsePermission{MaxMsgs: r.Max, Expires: r.TTL}
	}
	ac.Mappings = jwt.Mapping{}
	for src, dests := range c.Mappings {
		wm := make([]jwt.WeightedMapping, 0, len(dests))
		for _, d := range dests {
			wm = append(wm, jwt.WeightedMapping{Subject: jwt.Subject(d.Subject), Weight: uint8(d.Weight), Cluster: d.Cluster})
		}
		ac.Mappings[jwt.Subject(src)] = wm
	}
	ac.InfoURL = c.InfoURL
	ac.Tags = jwt.TagList(append([]string(nil), c.Tags...))
	ac.SigningKeys.Add(spec.SigningKeys...)
	addScopedKeys(ac, spec.ScopedKeys)
	for _, r := range spec.Revocations {
		ac.RevokeAt(r.PublicKey, r.RevokedAt)
	}
	return ac, nil
}

func setLimits(l *jwt.OperatorLimits, lim rotatord.Limits, js *rotatord.JetStream) {
	l.Conn = lim.Conn
	l.Subs = lim.Subs
	l.Payload = lim.Payload
	l.Data = lim.Data
	l.Imports = lim.Imports
	l.Exports = lim.Exports
	l.WildcardExports = lim.Wildcards
	l.LeafNodeConn = lim.Leaf
	l.DisallowBearer = lim.DisallowBearer
	// JetStream is off unless the model turns it on: JetStream limits
	// with no storage, and no tiers.
	l.JetStreamLimits = jwt.JetStreamLimits{}
	l.JetStreamTieredLimits = nil
	switch {
	case js == nil:
	case js.Tiers != nil:
		l.JetStreamTieredLimits = jwt.JetStreamTieredLimits{}
		for name, t := range js.Tiers {
			l.JetStreamTieredLimits[name] = jsLimitsClaim(t)
		}
	case js.Limits != nil:
		l.JetStreamLimits = jsLimitsClaim(*js.Limits)
	}
}

func jsLimitsClaim(l rotatord.JetStreamLimits) jwt.JetStreamLimits {
	return jwt.JetStreamLimits{
		MemoryStorage: l.MemStorage, DiskStorage: l.DiskStorage, Streams: l.Streams, Consumer: l.Consumer,
		MaxAckPending: l.MaxAckPending, MemoryMaxStreamBytes: l.MemMaxStreamBytes,
		DiskMaxStreamBytes: l.DiskMaxStreamBytes, MaxBytesRequired: l.MaxBytesRequired,
	}
}

func jsLimitsModel(l jwt.JetStreamLimits) rotatord.JetStreamLimits {
	return rotatord.JetStreamLimits{
		MemStorage: l.MemoryStorage, DiskStorage: l.DiskStorage, Streams: l.Streams, Consumer: l.Consumer,
		MaxAckPending: l.MaxAckPending, MemMaxStreamBytes: l.MemoryMaxStreamBytes,
		DiskMaxStreamBytes: l.DiskMaxStreamBytes, MaxBytesRequired: l.MaxBytesRequired,
	}
}

func exportType(t string) jwt.ExportType {
	switch t {
	case rotatord.ExportStream:
		return jwt.Stream
	case rotatord.ExportService:
		return jwt.Service
	}
	return jwt.Unknown
}

func exportClaim(e rotatord.Export) *jwt.Export {
	out := &jwt.Export{
		Name: e.Name, Subject: jwt.Subject(e.Subject), Type: exportType(e.Type), TokenReq: e.TokenReq,
		ResponseType: jwt.ResponseType(e.ResponseType), AccountTokenPosition: e.AccountTokenPosition,
		Advertise: e.Advertise, AllowTrace: e.AllowTrace,
		Info: jwt.Info{Description: e.Description, InfoURL: e.InfoURL},
	}
	if e.ResponseThreshold != "" {
		// Checked by rotatord.AccountClaims.Validate.
		out.ResponseThreshold, _ = time.ParseDuration(e.ResponseThreshold)
	}
	if e.Latency != nil {
		out.Latency = &jwt.ServiceLatency{Sampling: jwt.SamplingRate(e.Latency.Sampling), Results: jwt.Subject(e.Latency.Results)}
	}
	if len(e.Revocations) > 0 {
		out.Revocations = jwt.RevocationList{}
		for k, t := range e.Revocations {
			out.Revocations[k] = t
		}
	}
	return out
}

func importClaim(im ImportSpec) *jwt.Import {
	return &jwt.Import{
		Name: im.Name, Subject: jwt.Subject(im.Subject), Account: im.AccountKey, Token: im.Token,
		LocalSubject: jwt.RenamingSubject(im.LocalSubject), Type: exportType(im.Type),
		Share: im.Share, AllowTrace: im.AllowTrace,
	}
}

// AccountModel reads rotatord's model out of an account JWT's claims (its
// "nats" object): the limits and the modeled claims, normalized. Imports
// name their exporting account by public key and keep their tokens. An
// import in the deprecated "to" form becomes its local_subject form, which
// nats-server treats the same.
func AccountModel(a *jwt.Account) (rotatord.Limits, rotatord.AccountClaims) {
	l := a.Limits
	lim := rotatord.Limits{Conn: l.Conn, Subs: l.Subs, Payload: l.Payload, Data: l.Data, Imports: l.Imports,
		Exports: l.Exports, Wildcards: l.WildcardExports, Leaf: l.LeafNodeConn, DisallowBearer: l.DisallowBearer}
	var c rotatord.AccountClaims
	switch {
	case len(l.JetStreamTieredLimits) > 0:
		if l.IsJSEnabled() {
			c.JetStream = &rotatord.JetStream{Tiers: map[string]rotatord.JetStreamLimits{}}
			for name, t := range l.JetStreamTieredLimits {
				c.JetStream.Tiers[name] = jsLimitsModel(t)
			}
		}
	case l.IsJSEnabled():
		js := jsLimitsModel(l.JetStreamLimits)
		c.JetStream = &rotatord.JetStream{Limits: &js}
	}
	for _, e := range a.Exports {
		if e == nil {
			continue
		}
		x := rotatord.Export{
			Name: e.Name, Subject: string(e.Subject), Type: e.Type.String(), TokenReq: e.TokenReq,
			ResponseType: string(e.ResponseType), AccountTokenPosition: e.AccountTokenPosition,
			Advertise: e.Advertise, AllowTrace: e.AllowTrace, Description: e.Description, InfoURL: e.InfoURL,
		}
		if e.ResponseThreshold > 0 {
			x.ResponseThreshold = rotatord.FormatDuration(e.ResponseThreshold)
		}
		if e.Latency != nil {
			x.Latency = &rotatord.ServiceLatency{Sampling: rotatord.LatencySampling(e.Latency.Sampling), Results: string(e.Latency.Results)}
		}
		if len(e.Revocations) > 0 {
			x.Revocations = map[string]int64{}
			for k, t := range e.Revocations {
				x.Revocations[k] = t
			}
		}
		c.Exports = append(c.Exports, x)
	}
	for _, im := range a.Imports {
		if im == nil {
			continue
		}
		x := rotatord.Import{
			Name: im.Name, Account: im.Account, Subject: string(im.Subject), Type: im.Type.String(),
			LocalSubject: string(im.LocalSubject), Token: im.Token, Share: im.Share, AllowTrace: im.AllowTrace,
		}
		if to := im.GetTo(); to != "" && x.LocalSubject == "" {
			if im.IsService() {
				// "to" is the exporter's subject, "subject" the local one.
				x.Subject, x.LocalSubject = to, string(im.Subject)
			} else {
				// "to" is a prefix of the local subject.
				x.LocalSubject = strings.TrimSuffix(to, ".") + "." + string(im.Subject)
			}
		}
		c.Imports = append(c.Imports, x)
	}
	c.DefaultPermissions = rotatord.Permissions{
		Pub: rotatord.PermissionList{Allow: a.DefaultPermissions.Pub.Allow, Deny: a.DefaultPermissions.Pub.Deny},
		Sub: rotatord.PermissionList{Allow: a.DefaultPermissions.Sub.Allow, Deny: a.DefaultPermissions.Sub.Deny},
	}
	if r := a.DefaultPermissions.Resp; r != nil {
		c.DefaultPermissions.Resp = &rotatord.ResponsePermission{Max: r.MaxMsgs, TTL: r.Expires}
	}
	if len(a.Mappings) > 0 {
		c.Mappings = map[string][]rotatord.WeightedMapping{}
		for src, dests := range a.Mappings {
			for _, d := range dests {
				c.Mappings[string(src)] = append(c.Mappings[string(src)],
					rotatord.WeightedMapping{Subject: string(d.Subject), Weight: int(d.GetWeight()), Cluster: d.Cluster})
			}
		}
	}
	c.InfoURL = a.InfoURL
	c.Tags = append([]string(nil), a.Tags...)
	c.Normalize()
	sort.SliceStable(c.Exports, func(i, j int) bool { return c.Exports[i].Subject < c.Exports[j].Subject })
	return lim, c
}

// AccountModelFromBase is AccountModel of stored base claims (a JWT's
// "nats" object, as Account.BaseClaims holds it).
func AccountModelFromBase(base json.RawMessage) (rotatord.Limits, rotatord.AccountClaims, error) {
	var a jwt.Account
	if err := json.Unmarshal(base, &a); err != nil {
		return rotatord.Limits{}, rotatord.AccountClaims{}, fmt.Errorf("decode base claims: %w", err)
	}
	lim, c := AccountModel(&a)
	return lim, c, nil
}

// ActivationSpec describes an activation token: the exporting account lets
// the importing account import Subject, of the export type Type, until
// Expires.
type ActivationSpec struct {
	Importer string // the importing account's public key (the token's subject)
	Exporter string // the exporting account's public key
	Subject  string
	Type     string
	Expires  time.Time
}

// EncodeActivation returns an activation token signed by a signing key of
// the exporting account (or by the account itself), and its expiry as
// written (whole seconds).
func EncodeActivation(exporterSigner nkeys.KeyPair, spec ActivationSpec) (string, time.Time, error) {
	act := jwt.NewActivationClaims(spec.Importer)
	if act == nil {
		return "", time.Time{}, errors.New("encode activation: no importing account")
	}
	act.Name = spec.Subject
	act.ImportSubject = jwt.Subject(spec.Subject)
	act.ImportType = exportType(spec.Type)
	act.Expires = spec.Expires.Unix()
	if Public(exporterSigner) != spec.Exporter {
		act.IssuerAccount = spec.Exporter
	}
	token, err := act.Encode(exporterSigner)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("encode activation of %s %s for %s: %w", spec.Type, spec.Subject, spec.Importer, err)
	}
	return token, time.Unix(act.Expires, 0), nil
}

// Activation is what an activation token says.
type Activation struct {
	Issuer    string // the key that signed it
	Exporter  string // the exporting account
	Importer  string
	Subject   string
	Type      string
	Expires   time.Time // zero when it never expires
	IssuedAt  time.Time
	SignedFor string // the account of a signing key, when a signing key signed it
}

// DecodeActivation decodes and verifies an activation token's signature.
// It does not say whether the exporter trusts the issuer: see CheckImport.
func DecodeActivation(token string) (*Activation, error) {
	act, err := jwt.DecodeActivationClaims(token)
	if err != nil {
		return nil, fmt.Errorf("not an activation token: %w", err)
	}
	out := &Activation{Issuer: act.Issuer, Exporter: act.Issuer, Importer: act.Subject, Subject: string(act.ImportSubject),
		Type: act.ImportType.String(), IssuedAt: time.Unix(act.IssuedAt, 0), SignedFor: act.IssuerAccount}
	if act.IssuerAccount != "" {
		out.Exporter = act.IssuerAccount
	}
	if act.Expires != 0 {
		out.Expires = time.Unix(act.Expires, 0)
	}
	return out, nil
}

// CheckImportToken checks that token activates import im (of the
// account importer, from the account exporter) at now, as nats-server
// will: it was issued for importer by exporter (or a signing key of it),
// for this type, for a subject that holds im's subject, and has not
// expired. The message of an error is safe to show.
func CheckImportToken(token, importer, exporter string, im rotatord.Import, now time.Time) error {
	act, err := DecodeActivation(token)
	if err != nil {
		return rotatord.Errorf(rotatord.EINVALID, "the token is not a valid activation token")
	}
	switch {
	case act.Exporter != exporter:
		return rotatord.Errorf(rotatord.EINVALID, "the token was issued by account %s, not by %s", act.Exporter, exporter)
	case act.Importer != importer:
		return rotatord.Errorf(rotatord.EINVALID, "the token was issued for account %s, not for this account (%s)", act.Importer, importer)
	case act.Type != im.Type:
		return rotatord.Errorf(rotatord.EINVALID, "the token activates a %s import, not a %s import", act.Type, im.Type)
	case !rotatord.SubjectContainedIn(im.Subject, act.Subject):
		return rotatord.Errorf(rotatord.EINVALID, "the token activates %q, which does not hold %q", act.Subject, im.Subject)
	case !act.Expires.IsZero() && !act.Expires.After(now):
		return rotatord.Errorf(rotatord.EINVALID, "the token expired at %s", act.Expires.UTC().Format(time.RFC3339))
	}
	return nil
}
