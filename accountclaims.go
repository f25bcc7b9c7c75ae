package rotatord

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The parts of an account JWT that rotatord models beyond its name,
// description, limits, signing keys and revocations: JetStream limits,
// exports and imports, default permissions, subject mappings, an info URL
// and tags. Field names are nats-io/jwt's, so that nsc users recognise
// them. This file checks what can be checked without the registry; the
// service checks references between accounts (internal/rotate).

// Export and import types, as nats-io/jwt writes them.
const (
	ExportStream  = "stream"
	ExportService = "service"
)

// Response types of a service export.
const (
	ResponseSingleton = "Singleton"
	ResponseStream    = "Stream"
	ResponseChunked   = "Chunked"
)

// Bounds that keep an account JWT (and a request) reasonable.
const (
	maxExports  = 1000
	maxImports  = 1000
	maxMappings = 1000
	// MaxInfoLength is nats-io/jwt's bound on descriptions and info URLs.
	MaxInfoLength = 8 * 1024
)

// AccountClaims are the modeled account claims besides name, description,
// limits, signing keys and revocations. The zero value is an account with
// JetStream off and nothing else.
type AccountClaims struct {
	// JetStream is nil when JetStream is off for the account.
	JetStream *JetStream `json:"jetstream"`
	Exports   []Export   `json:"exports"`
	Imports   []Import   `json:"imports"`
	// DefaultPermissions apply to the account's users whose JWT carries
	// no permissions of its own.
	DefaultPermissions Permissions `json:"default_permissions"`
	// Mappings map a subject that clients publish to onto weighted
	// destinations, by source subject.
	Mappings map[string][]WeightedMapping `json:"mappings"`
	InfoURL  string                       `json:"info_url"`
	Tags     []string                     `json:"tags"`
}

// JetStreamLimits are JetStream limits for the whole account or for one
// replication tier; -1 is unlimited. mem_storage and disk_storage are bytes
// of memory and file storage, streams and consumer counts,
// max_ack_pending the most unacknowledged messages of a consumer,
// mem_max_stream_bytes and disk_max_stream_bytes the largest stream, and
// max_bytes_required makes every stream declare its max_bytes.
type JetStreamLimits struct {
	MemStorage         int64 `json:"mem_storage"`
	DiskStorage        int64 `json:"disk_storage"`
	Streams            int64 `json:"streams"`
	Consumer           int64 `json:"consumer"`
	MaxAckPending      int64 `json:"max_ack_pending"`
	MemMaxStreamBytes  int64 `json:"mem_max_stream_bytes"`
	DiskMaxStreamBytes int64 `json:"disk_max_stream_bytes"`
	MaxBytesRequired   bool  `json:"max_bytes_required"`
}

// UnlimitedJetStream is JetStream on with every limit off: what an omitted
// field of a JetStream limit means.
var UnlimitedJetStream = JetStreamLimits{MemStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1,
	MaxAckPending: -1, MemMaxStreamBytes: -1, DiskMaxStreamBytes: -1}

// JetStream is an account's JetStream configuration: limits that apply to
// every stream (Limits), or limits per replication tier ("R1", "R3"...: a
// stream of N replicas counts against tier RN). Exactly one is set.
type JetStream struct {
	Limits *JetStreamLimits
	Tiers  map[string]JetStreamLimits
}

// MarshalJSON writes the limits' fields, or {"tiers": {...}}.
func (j JetStream) MarshalJSON() ([]byte, error) {
	if j.Tiers != nil {
		return json.Marshal(struct {
			Tiers map[string]JetStreamLimits `json:"tiers"`
		}{j.Tiers})
	}
	l := UnlimitedJetStream
	if j.Limits != nil {
		l = *j.Limits
	}
	return json.Marshal(l)
}

// UnmarshalJSON reads what MarshalJSON writes; omitted fields are unlimited.
func (j *JetStream) UnmarshalJSON(b []byte) error {
	var p JetStreamPatch
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	got, err := p.Apply(nil)
	if err != nil {
		return err
	}
	*j = *got
	return nil
}

// JetStreamLimitsPatch is JetStreamLimits with every field optional.
type JetStreamLimitsPatch struct {
	MemStorage         *int64 `json:"mem_storage"`
	DiskStorage        *int64 `json:"disk_storage"`
	Streams            *int64 `json:"streams"`
	Consumer           *int64 `json:"consumer"`
	MaxAckPending      *int64 `json:"max_ack_pending"`
	MemMaxStreamBytes  *int64 `json:"mem_max_stream_bytes"`
	DiskMaxStreamBytes *int64 `json:"disk_max_stream_bytes"`
	MaxBytesRequired   *bool  `json:"max_bytes_required"`
}

func (p JetStreamLimitsPatch) empty() bool { return p == JetStreamLimitsPatch{} }

// Apply returns l with p's fields set.
func (p JetStreamLimitsPatch) Apply(l JetStreamLimits) JetStreamLimits {
	for _, f := range []struct {
		src *int64
		dst *int64
	}{
		{p.MemStorage, &l.MemStorage}, {p.DiskStorage, &l.DiskStorage}, {p.Streams, &l.Streams},
		{p.Consumer, &l.Consumer}, {p.MaxAckPending, &l.MaxAckPending},
		{p.MemMaxStreamBytes, &l.MemMaxStreamBytes}, {p.DiskMaxStreamBytes, &l.DiskMaxStreamBytes},
	} {
		if f.src != nil {
			*f.dst = *f.src
		}
	}
	if p.MaxBytesRequired != nil {
		l.MaxBytesRequired = *p.MaxBytesRequired
	}
	return l
}

// JetStreamPatch is JetStream as a request gives it: the limits' fields, or
// "tiers" with the limits of each tier.
type JetStreamPatch struct {
	JetStreamLimitsPatch
	Tiers map[string]JetStreamLimitsPatch `json:"tiers"`
}

// Apply returns the JetStream configuration that p makes of cur (nil when
// JetStream is off). Given limit fields change those of cur's account-wide
// limits (or of unlimited ones when cur has none); given tiers replace cur's
// tiers, each tier keeping the fields it had that p leaves out. An empty p
// keeps cur, or turns JetStream on without limits. Limit fields and tiers
// together are EINVALID.
func (p JetStreamPatch) Apply(cur *JetStream) (*JetStream, error) {
	flat := !p.JetStreamLimitsPatch.empty()
	switch {
	case flat && p.Tiers != nil:
		return nil, Errorf(EINVALID, "jetstream: give either limits for the whole account (mem_storage, disk_storage...) or tiers, not both")
	case p.Tiers != nil:
		if len(p.Tiers) == 0 {
			return nil, Errorf(EINVALID, "jetstream.tiers is empty: give at least one tier (R1, R3...), or null to turn JetStream off")
		}
		out := &JetStream{Tiers: map[string]JetStreamLimits{}}
		for name, tp := range p.Tiers {
			base := UnlimitedJetStream
			if cur != nil {
				if old, ok := cur.Tiers[name]; ok {
					base = old
				}
			}
			out.Tiers[name] = tp.Apply(base)
		}
		return out, nil
	case !flat && cur != nil:
		return cur.clone(), nil
	}
	base := UnlimitedJetStream
	if cur != nil && cur.Limits != nil {
		base = *cur.Limits
	}
	l := p.JetStreamLimitsPatch.Apply(base)
	return &JetStream{Limits: &l}, nil
}

func (j *JetStream) clone() *JetStream {
	out := &JetStream{}
	if j.Limits != nil {
		l := *j.Limits
		out.Limits = &l
	}
	if j.Tiers != nil {
		out.Tiers = make(map[string]JetStreamLimits, len(j.Tiers))
		for k, v := range j.Tiers {
			out.Tiers[k] = v
		}
	}
	return out
}

var tierRE = regexp.MustCompile(`^R[1-5]$`)

// Validate checks the limits: counts of -1 or more, some storage, no stream
// limit above the storage, tiers named R1 to R5 (nats-server's tiers are
// the replica counts it allows).
func (j *JetStream) Validate() error {
	switch {
	case j.Tiers != nil && j.Limits != nil:
		return Errorf(EINVALID, "jetstream: give either limits for the whole account or tiers, not both")
	case j.Tiers != nil:
		if len(j.Tiers) == 0 {
			return Errorf(EINVALID, "jetstream.tiers is empty: give at least one tier (R1, R3...), or null to turn JetStream off")
		}
		storage := false
		for _, name := range sortedMapKeys(j.Tiers) {
			if !tierRE.MatchString(name) {
				return Errorf(EINVALID, "jetstream.tiers: %.40q is not a tier: use R1 to R5 (the number of replicas of a stream)", name)
			}
			// A tier without storage allows no stream of its replicas.
			l := j.Tiers[name]
			if err := l.validate("jetstream.tiers."+name, false); err != nil {
				return err
			}
			storage = storage || l.MemStorage != 0 || l.DiskStorage != 0
		}
		if !storage {
			return Errorf(EINVALID, "jetstream.tiers: every tier has mem_storage and disk_storage 0, which leaves JetStream off: give one of them (-1 for unlimited), or null to turn JetStream off")
		}
		return nil
	case j.Limits != nil:
		return j.Limits.validate("jetstream", true)
	}
	return Errorf(EINVALID, "jetstream: no limits given")
}

func (l JetStreamLimits) validate(where string, needStorage bool) error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"mem_storage", l.MemStorage}, {"disk_storage", l.DiskStorage}, {"streams", l.Streams},
		{"consumer", l.Consumer}, {"max_ack_pending", l.MaxAckPending},
		{"mem_max_stream_bytes", l.MemMaxStreamBytes}, {"disk_max_stream_bytes", l.DiskMaxStreamBytes},
	} {
		if f.v < -1 {
			return Errorf(EINVALID, "%s.%s is %d: use -1 for unlimited or a count", where, f.name, f.v)
		}
	}
	if needStorage && l.MemStorage == 0 && l.DiskStorage == 0 {
		return Errorf(EINVALID, "%s: mem_storage and disk_storage are both 0, which leaves JetStream off: give one of them (-1 for unlimited), or null to turn JetStream off", where)
	}
	if l.MemStorage >= 0 && l.MemMaxStreamBytes > l.MemStorage {
		return Errorf(EINVALID, "%s.mem_max_stream_bytes %d is more than mem_storage %d", where, l.MemMaxStreamBytes, l.MemStorage)
	}
	if l.DiskStorage >= 0 && l.DiskMaxStreamBytes > l.DiskStorage {
		return Errorf(EINVALID, "%s.disk_max_stream_bytes %d is more than disk_storage %d", where, l.DiskMaxStreamBytes, l.DiskStorage)
	}
	return nil
}

// Export makes subjects of the account available to other accounts: a
// stream (messages published in this account reach subscribers of the
// importing accounts) or a service (requests of the importing accounts
// reach responders in this account). With token_req, only accounts holding
// an activation token may import it.
type Export struct {
	Name     string `json:"name"`
	Subject  string `json:"subject"`
	Type     string `json:"type"`
	TokenReq bool   `json:"token_req"`
	// ResponseType (services only): Singleton (the default), Stream or Chunked.
	ResponseType string `json:"response_type,omitempty"`
	// ResponseThreshold (services only) is how long a responder may take,
	// as a duration such as "2s".
	ResponseThreshold string          `json:"response_threshold,omitempty"`
	Latency           *ServiceLatency `json:"service_latency,omitempty"`
	// AccountTokenPosition is the 1-based position of a '*' token of
	// Subject that must hold the importing account's public key.
	AccountTokenPosition uint   `json:"account_token_position,omitempty"`
	Advertise            bool   `json:"advertise,omitempty"`
	AllowTrace           bool   `json:"allow_trace,omitempty"`
	Description          string `json:"description,omitempty"`
	InfoURL              string `json:"info_url,omitempty"`
	// Revocations revoke activation tokens issued to importing accounts
	// (public key, or "*" for all) at or before a unix time.
	Revocations map[string]int64 `json:"revocations,omitempty"`
}

// ServiceLatency makes the servers publish latency measurements of a
// service export to Results, for a percentage of requests (Sampling 1 to
// 100), or for requests that carry a tracing header (Sampling 0, written
// "headers").
type ServiceLatency struct {
	Sampling LatencySampling `json:"sampling"`
	Results  string          `json:"results"`
}

// LatencySampling is a percentage from 1 to 100, or 0 for "headers".
type LatencySampling int

// MarshalJSON writes "headers" for 0 and the percentage otherwise.
func (s LatencySampling) MarshalJSON() ([]byte, error) {
	if s == 0 {
		return []byte(`"headers"`), nil
	}
	return []byte(strconv.Itoa(int(s))), nil
}

// UnmarshalJSON reads a percentage or "headers".
func (s *LatencySampling) UnmarshalJSON(b []byte) error {
	if strings.EqualFold(string(b), `"headers"`) {
		*s = 0
		return nil
	}
	var n int
	if err := json.Unmarshal(b, &n); err != nil {
		return Errorf(EINVALID, `service_latency.sampling must be a percentage from 1 to 100 or "headers"`)
	}
	*s = LatencySampling(n)
	return nil
}

// Import brings another account's export into this account. Account is
// the exporting account: the name of an account rotatord manages, or an
// account public key. Subject is the exported subject (or a part of it);
// LocalSubject, when set, is where this account's clients see it: they
// subscribe there to a stream, and publish requests there to a service.
// Token is the activation token of a token_req export of an account that
// rotatord does not hold; between its own accounts rotatord mints them.
type Import struct {
	Name         string `json:"name"`
	Account      string `json:"account"`
	Subject      string `json:"subject"`
	Type         string `json:"type"`
	LocalSubject string `json:"local_subject,omitempty"`
	Token        string `json:"token,omitempty"`
	// Share (services only) shares the importing client's information
	// with the exporter's latency measurements.
	Share      bool `json:"share,omitempty"`
	AllowTrace bool `json:"allow_trace,omitempty"`
}

// WeightedMapping is one destination of a subject mapping: Weight percent
// (1 to 100; the rest of a source's traffic keeps its subject) of the
// messages go to Subject, which may use nats-server's mapping functions
// ({{wildcard(1)}}, {{partition(n,1)}}...). Cluster limits the destination
// to the servers of one cluster.
type WeightedMapping struct {
	Subject string `json:"subject"`
	Weight  int    `json:"weight"`
	Cluster string `json:"cluster,omitempty"`
}

// Normalize fills the defaults nsc fills and orders what has no order, so
// that equal claims encode the same: export and import names default to
// their subject, a service's response type to Singleton, a mapping's
// weight to 100; tags are lowercased and deduplicated (as nats-io/jwt does);
// nil lists become empty ones.
func (c *AccountClaims) Normalize() {
	if c.Exports == nil {
		c.Exports = []Export{}
	}
	for i := range c.Exports {
		e := &c.Exports[i]
		if e.Name == "" {
			e.Name = e.Subject
		}
		if e.Type == ExportService && e.ResponseType == "" {
			e.ResponseType = ResponseSingleton
		}
		if d, err := time.ParseDuration(e.ResponseThreshold); err == nil && d > 0 {
			e.ResponseThreshold = FormatDuration(d)
		}
	}
	if c.Imports == nil {
		c.Imports = []Import{}
	}
	for i := range c.Imports {
		if c.Imports[i].Name == "" {
			c.Imports[i].Name = c.Imports[i].Subject
		}
	}
	c.DefaultPermissions = c.DefaultPermissions.Normalize()
	if c.Mappings == nil {
		c.Mappings = map[string][]WeightedMapping{}
	}
	for _, dests := range c.Mappings {
		for i := range dests {
			if dests[i].Weight == 0 {
				dests[i].Weight = 100
			}
		}
	}
	tags := []string{}
	seen := map[string]bool{}
	for _, t := range c.Tags {
		t = strings.ToLower(strings.TrimSpace(t))
		if !seen[t] {
			seen[t] = true
			tags = append(tags, t)
		}
	}
	c.Tags = tags
}

var accountKeyRE = regexp.MustCompile(`^A[A-Z2-7]{55}$`)

// Validate checks c on its own (call Normalize first): well-formed
// subjects, known types, no export that overlaps another of its type, no
// import listed twice or from the account itself (self is its public key,
// name its name), local subjects that fit their subject, mapping weights
// that add up, a valid info URL and tags. Whether an import matches an
// export of the other account is the service's to check.
func (c *AccountClaims) Validate(self, name string) error {
	if c.JetStream != nil {
		if err := c.JetStream.Validate(); err != nil {
			return err
		}
	}
	if err := c.validateExports(); err != nil {
		return err
	}
	if err := c.validateImports(self, name); err != nil {
		return err
	}
	if err := c.DefaultPermissions.Validate(); err != nil {
		return Errorf(EINVALID, "default_%s", err)
	}
	if err := c.validateMappings(); err != nil {
		return err
	}
	if err := ValidateInfoURL("info_url", c.InfoURL); err != nil {
		return err
	}
	// The same rules as an agent's tags.
	if _, err := NormalizeTags(c.Tags); err != nil {
		return err
	}
	return nil
}

// CheckLimits checks c against the account's limits: no more imports or
// exports than allowed, and no wildcard export unless wildcards are.
func (c *AccountClaims) CheckLimits(l Limits) error {
	if l.Imports >= 0 && int64(len(c.Imports)) > l.Imports {
		return Errorf(EINVALID, "the account has %d imports and limits.imports allows %d", len(c.Imports), l.Imports)
	}
	if l.Exports >= 0 && int64(len(c.Exports)) > l.Exports {
		return Errorf(EINVALID, "the account has %d exports and limits.exports allows %d", len(c.Exports), l.Exports)
	}
	if !l.Wildcards {
		for i, e := range c.Exports {
			if HasWildcard(e.Subject) {
				return Errorf(EINVALID, "exports[%d] subject %q has a wildcard and limits.wildcards is false", i, e.Subject)
			}
		}
	}
	return nil
}

// ValidateInfoURL checks an info URL: empty, or an http(s) URL with a host.
func ValidateInfoURL(field, u string) error {
	if u == "" {
		return nil
	}
	if len(u) > MaxInfoLength {
		return Errorf(EINVALID, "%s is longer than %d bytes", field, MaxInfoLength)
	}
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return Errorf(EINVALID, "%s %.80q is not an http or https URL", field, u)
	}
	return nil
}

func validText(field, s string) error {
	if len(s) > MaxInfoLength {
		return Errorf(EINVALID, "%s is longer than %d bytes", field, MaxInfoLength)
	}
	if strings.ContainsAny(s, "\x00") {
		return Errorf(EINVALID, "%s contains a NUL byte", field)
	}
	return nil
}

func (c *AccountClaims) validateExports() error {
	if len(c.Exports) > maxExports {
		return Errorf(EINVALID, "exports has %d entries, more than %d", len(c.Exports), maxExports)
	}
	for i, e := range c.Exports {
		at := fmt.Sprintf("exports[%d]", i)
		if err := validText(at+".name", e.Name); err != nil {
			return err
		}
		if err := ValidateSubject(e.Subject); err != nil {
			return Errorf(EINVALID, "%s.subject: %s", at, err)
		}
		switch e.Type {
		case ExportStream:
			if e.ResponseType != "" {
				return Errorf(EINVALID, "%s: response_type is for services; a stream has none", at)
			}
			if e.ResponseThreshold != "" || e.Latency != nil || e.AllowTrace {
				return Errorf(EINVALID, "%s: response_threshold, service_latency and allow_trace are for services", at)
			}
		case ExportService:
			switch e.ResponseType {
			case ResponseSingleton, ResponseStream, ResponseChunked:
			default:
				return Errorf(EINVALID, "%s.response_type %.40q is not one of Singleton, Stream, Chunked", at, e.ResponseType)
			}
			if e.ResponseThreshold != "" {
				if d, err := time.ParseDuration(e.ResponseThreshold); err != nil || d <= 0 {
					return Errorf(EINVALID, "%s.response_threshold %.40q is not a positive duration such as 2s", at, e.ResponseThreshold)
				}
			}
			if l := e.Latency; l != nil {
				if l.Sampling < 0 || l.Sampling > 100 {
					return Errorf(EINVALID, `%s.service_latency.sampling %d is not a percentage from 1 to 100 (or "headers")`, at, l.Sampling)
				}
				if err := ValidateSubject(l.Results); err != nil {
					return Errorf(EINVALID, "%s.service_latency.results: %s", at, err)
				}
				if HasWildcard(l.Results) {
					return Errorf(EINVALID, "%s.service_latency.results %q must not have wildcards: the servers publish there", at, l.Results)
				}
			}
		default:
			return Errorf(EINVALID, "%s.type %.40q is not stream or service", at, e.Type)
		}
		if p := e.AccountTokenPosition; p > 0 {
			tokens := strings.Split(e.Subject, ".")
			if int(p) > len(tokens) || tokens[p-1] != "*" {
				return Errorf(EINVALID, "%s.account_token_position %d must point at a '*' token of %q", at, p, e.Subject)
			}
		}
		if err := validText(at+".description", e.Description); err != nil {
			return err
		}
		if err := ValidateInfoURL(at+".info_url", e.InfoURL); err != nil {
			return err
		}
		for k := range e.Revocations {
			if k != "*" && !accountKeyRE.MatchString(k) {
				return Errorf(EINVALID, "%s.revocations: %.60q is not an account public key or *", at, k)
			}
		}
		for j, o := range c.Exports[:i] {
			if o.Type == e.Type && (SubjectContainedIn(e.Subject, o.Subject) || SubjectContainedIn(o.Subject, e.Subject)) {
				return Errorf(EINVALID, "%s (%s %s) overlaps exports[%d] (%s): a subject is exported once per type", at, e.Type, e.Subject, j, o.Subject)
			}
		}
	}
	return nil
}

func (c *AccountClaims) validateImports(self, name string) error {
	if len(c.Imports) > maxImports {
		return Errorf(EINVALID, "imports has %d entries, more than %d", len(c.Imports), maxImports)
	}
	for i, im := range c.Imports {
		at := fmt.Sprintf("imports[%d]", i)
		if err := validText(at+".name", im.Name); err != nil {
			return err
		}
		switch {
		case im.Account == "":
			return Errorf(EINVALID, "%s.account is required: the name or public key of the exporting account", at)
		case im.Account == self || (name != "" && im.Account == name):
			return Errorf(EINVALID, "%s: an account cannot import from itself", at)
		}
		if err := ValidateSubject(im.Subject); err != nil {
			return Errorf(EINVALID, "%s.subject: %s", at, err)
		}
		switch im.Type {
		case ExportStream:
			if im.Share {
				return Errorf(EINVALID, "%s: share is for service imports", at)
			}
		case ExportService:
			if im.AllowTrace {
				return Errorf(EINVALID, "%s: allow_trace is for stream imports", at)
			}
		default:
			return Errorf(EINVALID, "%s.type %.40q is not stream or service", at, im.Type)
		}
		if im.LocalSubject != "" {
			if err := validateLocalSubject(im.Subject, im.LocalSubject); err != nil {
				return Errorf(EINVALID, "%s.local_subject: %s", at, err)
			}
		}
		if im.Token != "" && (len(im.Token) > 16*1024 || strings.Count(im.Token, ".") != 2) {
			return Errorf(EINVALID, "%s.token is not an activation token (a JWT)", at)
		}
		for j, o := range c.Imports[:i] {
			if o.Account != im.Account || o.Type != im.Type {
				continue
			}
			if o.Subject == im.Subject {
				return Errorf(EINVALID, "%s imports %s %s from %s again (imports[%d])", at, im.Type, im.Subject, im.Account, j)
			}
			if im.Type == ExportService {
				a, b := im.localSubject(), o.localSubject()
				if SubjectContainedIn(a, b) || SubjectContainedIn(b, a) {
					return Errorf(EINVALID, "%s (%s) overlaps imports[%d] (%s) of the same account %s", at, a, j, b, im.Account)
				}
			}
		}
	}
	return nil
}

// localSubject is where the import is seen in the importing account, with
// $N references as '*'.
func (im Import) localSubject() string {
	if im.LocalSubject == "" {
		return im.Subject
	}
	tokens := strings.Split(im.LocalSubject, ".")
	for i, t := range tokens {
		if isReference(t) {
			tokens[i] = "*"
		}
	}
	return strings.Join(tokens, ".")
}

func isReference(t string) bool {
	if len(t) < 2 || t[0] != '$' {
		return false
	}
	_, err := strconv.Atoi(t[1:])
	return err == nil
}

// validateLocalSubject checks a renaming subject the way nats-io/jwt does:
// it ends in '>' when the subject does, and its '*' tokens and $N references
// (to the Nth '*' of the subject) account for every '*' of the subject.
func validateLocalSubject(subject, local string) error {
	plain := Import{Subject: subject, LocalSubject: local}.localSubject()
	if err := ValidateSubject(plain); err != nil {
		return err
	}
	endsFWC := func(s string) bool { return s == ">" || strings.HasSuffix(s, ".>") }
	if endsFWC(subject) != endsFWC(local) {
		return Errorf(EINVALID, "%q and subject %q must both end in '>' or neither", local, subject)
	}
	stars := 0
	for _, t := range strings.Split(subject, ".") {
		if t == "*" {
			stars++
		}
	}
	refs := 0
	for _, t := range strings.Split(local, ".") {
		switch {
		case t == "*":
			refs++
		case isReference(t):
			n, _ := strconv.Atoi(t[1:])
			if n < 1 || n > stars {
				return Errorf(EINVALID, "%q: %s refers to a '*' that subject %q does not have", local, t, subject)
			}
			refs++
		}
	}
	if refs != stars {
		return Errorf(EINVALID, "%q must use each of the %d '*' of subject %q once (as '*' or $N)", local, stars, subject)
	}
	return nil
}

func (c *AccountClaims) validateMappings() error {
	if len(c.Mappings) > maxMappings {
		return Errorf(EINVALID, "mappings has %d sources, more than %d", len(c.Mappings), maxMappings)
	}
	for _, src := range sortedMapKeys(c.Mappings) {
		if err := ValidateSubject(src); err != nil {
			return Errorf(EINVALID, "mappings: source %s", err)
		}
		dests := c.Mappings[src]
		if len(dests) == 0 {
			return Errorf(EINVALID, "mappings[%q] has no destination", src)
		}
		total := map[string]int{}
		seen := map[string]bool{}
		for _, d := range dests {
			switch {
			case d.Subject == "" || len(d.Subject) > 512:
				return Errorf(EINVALID, "mappings[%q]: a destination subject is empty or longer than 512 bytes", src)
			case seen[d.Subject]:
				return Errorf(EINVALID, "mappings[%q] lists destination %q twice", src, d.Subject)
			case d.Weight < 1 || d.Weight > 100:
				return Errorf(EINVALID, "mappings[%q]: weight %d of %q is not a percentage from 1 to 100", src, d.Weight, d.Subject)
			case strings.ContainsAny(d.Cluster, " \t\r\n\x00") || len(d.Cluster) > 256:
				return Errorf(EINVALID, "mappings[%q]: cluster %.40q is not a cluster name", src, d.Cluster)
			}
			seen[d.Subject] = true
			total[d.Cluster] += d.Weight
			if total[d.Cluster] > 100 {
				if d.Cluster != "" {
					return Errorf(EINVALID, "mappings[%q]: the weights of cluster %q add up to more than 100", src, d.Cluster)
				}
				return Errorf(EINVALID, "mappings[%q]: the weights add up to more than 100", src)
			}
		}
	}
	return nil
}

// SubjectContainedIn reports whether every subject that s matches is
// matched by other too, as nats-server decides whether an export covers an
// import (a '>' of s is held only by a '>' of other).
func SubjectContainedIn(s, other string) bool {
	mine := strings.Split(s, ".")
	theirs := strings.Split(other, ".")
	for i, t := range theirs {
		if t == ">" {
			return len(mine) > i
		}
		if i >= len(mine) {
			return false
		}
		switch m := mine[i]; {
		case m == ">":
			return false
		case t == "*":
		case m != t:
			return false
		}
	}
	return len(mine) == len(theirs)
}

// SubjectsCollide reports whether some subject matches both a and b.
func SubjectsCollide(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(at) && i < len(bt); i++ {
		x, y := at[i], bt[i]
		if x == ">" || y == ">" {
			return true
		}
		if x != y && x != "*" && y != "*" {
			return false
		}
	}
	return len(at) == len(bt)
}

// HasWildcard reports whether subject s has a '*' or '>' token.
func HasWildcard(s string) bool {
	for _, t := range strings.Split(s, ".") {
		if t == "*" || t == ">" {
			return true
		}
	}
	return false
}

func sortedMapKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Activation is an activation token rotatord minted for an import between
// two of its accounts: Exporter lets Importer import Subject (of type
// Type) until ExpiresAt. Signer is the exporter's key that signed it.
type Activation struct {
	Importer  string
	Exporter  string
	Subject   string
	Type      string
	Token     string
	Signer    string
	ExpiresAt time.Time
}
