package rotatord

import (
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"
)

// The claims of a user JWT beyond its identity, as nats-io/jwt names them:
// permissions (with allow_responses), limits, source networks, connect
// times and connection types. An agent carries its own, or gets them from
// its role (a scoped signing key whose template the account JWT holds).

// Bounds on a user's claims, so that a user JWT (and a role's template in
// the account JWT) stays small and every list is checked quickly.
const (
	maxSrc             = 64
	maxTimes           = 24
	maxTags            = 64
	maxTagLen          = 255
	maxConnectionTypes = 16
	maxResponseTTL     = 7 * 24 * time.Hour
	// maxTemplateExpansions is nats-server's bound on the subjects one
	// permission list of a role may expand to for one user (templates with
	// tags multiply); beyond it the server refuses the user.
	maxTemplateExpansions = 4096
)

// ResponsePermission lets a user publish replies to the reply subjects of
// the requests it received, without a publish permission on them
// (nats-io/jwt's "resp", nsc's --allow-pub-response): at most Max replies
// per request (-1 for no limit, 0 for nats-server's default of one), within
// TTL of the request (0 for nats-server's default of two minutes).
type ResponsePermission struct {
	Max int
	TTL time.Duration
}

type responsePermissionJSON struct {
	Max int             `json:"max"`
	TTL json.RawMessage `json:"ttl,omitempty"`
}

// MarshalJSON writes {"max": N, "ttl": "5s"}.
func (r ResponsePermission) MarshalJSON() ([]byte, error) {
	ttl, _ := json.Marshal(FormatDuration(r.TTL))
	return json.Marshal(responsePermissionJSON{Max: r.Max, TTL: ttl})
}

// UnmarshalJSON reads {"max": N, "ttl": ...} where ttl is a duration such
// as "5s", or a number of nanoseconds as in the JWT.
func (r *ResponsePermission) UnmarshalJSON(b []byte) error {
	var in responsePermissionJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return Errorf(EINVALID, "permissions.resp must be {\"max\": N, \"ttl\": \"5s\"}")
	}
	r.Max, r.TTL = in.Max, 0
	if len(in.TTL) == 0 || string(in.TTL) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(in.TTL, &s); err == nil {
		d, err := time.ParseDuration(s)
		if err != nil {
			return Errorf(EINVALID, "permissions.resp.ttl %.40q is not a duration such as 5s", s)
		}
		r.TTL = d
		return nil
	}
	var n int64
	if err := json.Unmarshal(in.TTL, &n); err != nil {
		return Errorf(EINVALID, "permissions.resp.ttl must be a duration such as \"5s\"")
	}
	r.TTL = time.Duration(n)
	return nil
}

// Validate checks the bounds of r.
func (r ResponsePermission) Validate() error {
	if r.Max < -1 {
		return Errorf(EINVALID, "permissions.resp.max is %d: use -1 for no limit, 0 for the server's default (1), or a count", r.Max)
	}
	if r.TTL < 0 || r.TTL > maxResponseTTL {
		return Errorf(EINVALID, "permissions.resp.ttl %s is out of range: use 0 (the server's default, 2m) to %s", r.TTL, FormatDuration(maxResponseTTL))
	}
	return nil
}

// UserLimits are a user's own limits (nats-io/jwt's NatsLimits); -1 is
// unlimited. nats-server reads 0 as zero: no subscription at all, or no
// payload.
type UserLimits struct {
	Subs    int64 `json:"subs"`
	Data    int64 `json:"data"`
	Payload int64 `json:"payload"`
}

// NoUserLimits is every user limit off, what an agent gets by default.
var NoUserLimits = UserLimits{Subs: -1, Data: -1, Payload: -1}

// UserLimitsPatch changes some user limits; nil fields stay as they are.
type UserLimitsPatch struct {
	Subs    *int64 `json:"subs"`
	Data    *int64 `json:"data"`
	Payload *int64 `json:"payload"`
}

// Apply returns l with p's fields set.
func (p UserLimitsPatch) Apply(l UserLimits) UserLimits {
	for _, f := range []struct {
		src *int64
		dst *int64
	}{{p.Subs, &l.Subs}, {p.Data, &l.Data}, {p.Payload, &l.Payload}} {
		if f.src != nil {
			*f.dst = *f.src
		}
	}
	return l
}

// Validate checks that every limit is -1 or a count.
func (l UserLimits) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{{"subs", l.Subs}, {"data", l.Data}, {"payload", l.Payload}} {
		if f.v < -1 {
			return Errorf(EINVALID, "limits.%s is %d: use -1 for unlimited or a count", f.name, f.v)
		}
	}
	return nil
}

// TimeRange is a daily window in which a user may connect, "HH:MM:SS" to
// "HH:MM:SS" in the user's times_location (the server's local time when
// that is empty). A window whose end is before its start crosses midnight.
// nats-server closes a connection when its window ends.
type TimeRange struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

var clockRE = regexp.MustCompile(`^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$`)

// UserTemplate is what a user JWT may restrict: permissions, limits,
// source networks, connect times and connection types. An agent holds its
// own; a role holds one for every agent of the role, in which subjects may
// use nats-server's templates ({{name()}}, {{tag(key)}}...).
type UserTemplate struct {
	Permissions     Permissions `json:"permissions"`
	Limits          UserLimits  `json:"limits"`
	Src             []string    `json:"src"`
	Times           []TimeRange `json:"times"`
	TimesLocation   string      `json:"times_location"`
	ConnectionTypes []string    `json:"connection_types"`
}

// Normalize returns t with nil lists replaced by empty ones, CIDRs and
// connection types in nats-server's spelling (lower and upper case).
func (t UserTemplate) Normalize() UserTemplate {
	t.Permissions = t.Permissions.Normalize()
	t.Src = normalizeList(t.Src, strings.ToLower)
	t.ConnectionTypes = normalizeList(t.ConnectionTypes, strings.ToUpper)
	if t.Times == nil {
		t.Times = []TimeRange{}
	}
	return t
}

func normalizeList(l []string, f func(string) string) []string {
	out := make([]string, 0, len(l))
	for _, s := range l {
		out = append(out, f(strings.TrimSpace(s)))
	}
	return out
}

// IsEmpty reports whether t restricts nothing beyond the defaults: no
// subject, no response permission, no limit, no source network, no time
// window, no connection type.
func (t UserTemplate) IsEmpty() bool {
	p := t.Permissions
	return len(p.Pub.Allow)+len(p.Pub.Deny)+len(p.Sub.Allow)+len(p.Sub.Deny) == 0 && p.Resp == nil &&
		t.Limits == NoUserLimits && len(t.Src) == 0 && len(t.Times) == 0 && t.TimesLocation == "" && len(t.ConnectionTypes) == 0
}

// Validate checks t; templates says whether subjects may use nats-server's
// templates (a role's may, an agent's own may not). Connection types are
// checked against nats-io/jwt's list by the caller (package jwtissue).
func (t UserTemplate) Validate(templates bool) error {
	if err := t.Permissions.validate(templates); err != nil {
		return err
	}
	if err := t.Limits.Validate(); err != nil {
		return err
	}
	if len(t.Src) > maxSrc {
		return Errorf(EINVALID, "src has %d networks, more than %d", len(t.Src), maxSrc)
	}
	for i, c := range t.Src {
		if _, _, err := net.ParseCIDR(c); err != nil {
			return Errorf(EINVALID, "src[%d] %.60q is not a network in CIDR notation such as 10.0.0.0/8 or 192.0.2.7/32", i, c)
		}
	}
	if len(t.Times) > maxTimes {
		return Errorf(EINVALID, "times has %d windows, more than %d", len(t.Times), maxTimes)
	}
	for i, r := range t.Times {
		if !clockRE.MatchString(r.Start) {
			return Errorf(EINVALID, "times[%d].start %.20q is not a time of day HH:MM:SS such as 08:00:00", i, r.Start)
		}
		if !clockRE.MatchString(r.End) {
			return Errorf(EINVALID, "times[%d].end %.20q is not a time of day HH:MM:SS such as 17:30:00", i, r.End)
		}
		if r.Start == r.End {
			return Errorf(EINVALID, "times[%d] starts and ends at %s: the window is empty", i, r.Start)
		}
	}
	if err := ValidateTimesLocation(t.TimesLocation); err != nil {
		return err
	}
	if len(t.ConnectionTypes) > maxConnectionTypes {
		return Errorf(EINVALID, "connection_types has %d entries, more than %d", len(t.ConnectionTypes), maxConnectionTypes)
	}
	return nil
}

// ValidateTimesLocation checks an IANA time zone name such as Europe/Paris;
// empty is the servers' local time.
func ValidateTimesLocation(loc string) error {
	if loc == "" {
		return nil
	}
	if loc == "Local" || len(loc) > 64 {
		return Errorf(EINVALID, "times_location %.70q is not an IANA time zone such as Europe/Paris or UTC", loc)
	}
	if _, err := time.LoadLocation(loc); err != nil {
		return Errorf(EINVALID, "times_location %q is not a known IANA time zone such as Europe/Paris or UTC", loc)
	}
	return nil
}

// NormalizeTags checks an agent's tags and returns them lower-cased, as
// nats-io/jwt stores them: at most 64, each 1 to 255 printable characters
// without spaces. A tag "key:value" is what a role's {{tag(key)}} reads.
func NormalizeTags(tags []string) ([]string, error) {
	if len(tags) > maxTags {
		return nil, Errorf(EINVALID, "tags has %d entries, more than %d", len(tags), maxTags)
	}
	out := make([]string, 0, len(tags))
	seen := map[string]bool{}
	for i, tag := range tags {
		if tag == "" || len(tag) > maxTagLen {
			return nil, Errorf(EINVALID, "tags[%d] must be 1 to %d characters", i, maxTagLen)
		}
		for _, r := range tag {
			if r <= ' ' || r == 0x7f {
				return nil, Errorf(EINVALID, "tags[%d] %.40q holds a space or a control character", i, tag)
			}
		}
		tag = strings.ToLower(tag)
		if !seen[tag] {
			seen[tag] = true
			out = append(out, tag)
		}
	}
	return out, nil
}

// templateRE finds nats-server's templates in a subject (its mustacheRE).
var templateRE = regexp.MustCompile(`{{2}([^}]+)}{2}`)

// templateOp is one template of a subject: its function and, for tags,
// the tag's key (lower-cased, as nats-server compares it).
type templateOp struct {
	fn  string // name, subject, account-name, account-subject, tag, account-tag
	key string
}

var tagKeyRE = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// parseTemplates returns the templates of subject s, or an error naming
// what nats-server would not understand.
func parseTemplates(s string) ([]templateOp, error) {
	var ops []templateOp
	for _, m := range templateRE.FindAllStringSubmatch(s, -1) {
		op := strings.ToLower(strings.TrimSpace(m[1]))
		switch op {
		case "name()", "subject()", "account-name()", "account-subject()":
			ops = append(ops, templateOp{fn: strings.TrimSuffix(op, "()")})
			continue
		}
		fn, arg, ok := strings.Cut(op, "(")
		arg, closed := strings.CutSuffix(arg, ")")
		if !ok || !closed || (fn != "tag" && fn != "account-tag") {
			return nil, Errorf(EINVALID, "subject %q: template %q is not one of {{name()}}, {{subject()}}, {{account-name()}}, {{account-subject()}}, {{tag(key)}}, {{account-tag(key)}}", s, m[0])
		}
		if !tagKeyRE.MatchString(arg) {
			return nil, Errorf(EINVALID, "subject %q: the key of %q must be 1-64 letters, digits, '_' or '-'", s, m[0])
		}
		ops = append(ops, templateOp{fn: fn, key: arg})
	}
	rest := templateRE.ReplaceAllString(s, "")
	if strings.Contains(rest, "{{") || strings.Contains(rest, "}}") {
		return nil, Errorf(EINVALID, "subject %q has an unclosed template: write {{name()}} or {{tag(key)}}", s)
	}
	return ops, nil
}

// validateTemplateSubject checks a subject of a role: its templates must
// be nats-server's, and it must be a valid subject once they are replaced.
func validateTemplateSubject(s string) error {
	if _, err := parseTemplates(s); err != nil {
		return err
	}
	if len(s) > 512 {
		return Errorf(EINVALID, "subject %.32q... is longer than 512 bytes", s)
	}
	if err := ValidateSubject(templateRE.ReplaceAllString(s, "x")); err != nil {
		return Errorf(EINVALID, "subject %q: %s", s, ErrorMessage(err))
	}
	return nil
}

// HasTemplates reports whether subject s uses a template such as {{name()}}.
func HasTemplates(s string) bool { return strings.Contains(s, "{{") || strings.Contains(s, "}}") }

// CheckAgent checks that a role's template works for an agent with this
// name and these (normalized) tags, as nats-server will expand it when the
// agent connects, and that the expansion cannot reach another agent's
// subjects:
//   - {{name()}} needs a name without '.', or agent "a" would reach agent
//     "a.b"'s subjects (a name is pasted in as it is, one token or more);
//   - every value of a tag a template reads must be one subject token (no
//     '.', '*' or '>'), for the same reason;
//   - a tag that a deny subject reads must be present: nats-server refuses
//     the user otherwise (allow subjects without it are left out);
//   - at most 4096 subjects per list after expansion.
func (t UserTemplate) CheckAgent(name string, tags []string) error {
	values := map[string][]string{}
	for _, tag := range tags {
		if k, v, ok := strings.Cut(tag, ":"); ok {
			values[k] = append(values[k], v)
		}
	}
	p := t.Permissions
	for _, l := range []struct {
		name string
		subs []string
		deny bool
	}{{"pub.allow", p.Pub.Allow, false}, {"pub.deny", p.Pub.Deny, true}, {"sub.allow", p.Sub.Allow, false}, {"sub.deny", p.Sub.Deny, true}} {
		total := 0
		for _, s := range l.subs {
			ops, err := parseTemplates(s)
			if err != nil {
				return err
			}
			n := 1
			for _, op := range ops {
				switch op.fn {
				case "name":
					if strings.ContainsAny(name, ".*>") {
						return Errorf(EINVALID, "agent name %q has a '.': the role's subject %q pastes the name in as it is, and it would span several tokens (agent \"a\" would reach agent \"a.b\"'s subjects)", name, s)
					}
				case "tag":
					vs := values[op.key]
					if len(vs) == 0 && l.deny {
						return Errorf(EINVALID, "the role's %s subject %q reads tag %q, which the agent lacks: nats-server would refuse it; add a tag %q", l.name, s, op.key, op.key+":VALUE")
					}
					for _, v := range vs {
						if v == "" || strings.ContainsAny(v, ".*>") {
							return Errorf(EINVALID, "tag %q: a value that the role's subject %q reads must be one subject token, without '.', '*' or '>'", op.key+":"+v, s)
						}
					}
					if len(vs) > 0 {
						n *= len(vs)
					}
				}
			}
			if total += n; total > maxTemplateExpansions {
				return Errorf(EINVALID, "the role's %s expands to more than %d subjects with the agent's tags: nats-server would refuse it", l.name, maxTemplateExpansions)
			}
		}
	}
	return nil
}

// AccountTagsNeeded returns the keys of account tags that t's deny subjects
// read ({{account-tag(key)}}): nats-server refuses every user of the role
// while the account lacks one.
func (t UserTemplate) AccountTagsNeeded() []string {
	var keys []string
	for _, s := range append(append([]string{}, t.Permissions.Pub.Deny...), t.Permissions.Sub.Deny...) {
		ops, _ := parseTemplates(s)
		for _, op := range ops {
			if op.fn == "account-tag" {
				keys = append(keys, op.key)
			}
		}
	}
	return keys
}

// Role is a scoped signing key of an account: the agents of the role get
// user JWTs signed by its key that carry no permissions, and nats-server
// applies the role's template (held in the account JWT) to them.
type Role struct {
	ID          int64
	AccountID   int64
	Account     string // account name
	AccountKey  string // account public key
	Name        string
	Description string
	Template    UserTemplate
	// SigningKeys are the role's live scoped keys (not a staged one, which
	// signs nothing yet), oldest first; new
	// credentials are signed with the newest (SigningKey). More than one
	// while a key is being replaced.
	SigningKeys []string
	Agents      int
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// SigningKey is the key new credentials of the role's agents are signed with.
func (r *Role) SigningKey() string {
	if len(r.SigningKeys) == 0 {
		return ""
	}
	return r.SigningKeys[len(r.SigningKeys)-1]
}

// FormatDuration writes d the way operators write it: 30m, not 30m0s.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Template returns the agent's own claims.
func (g *Agent) Template() UserTemplate {
	return UserTemplate{Permissions: g.Permissions, Limits: g.Limits, Src: g.Src, Times: g.Times,
		TimesLocation: g.TimesLocation, ConnectionTypes: g.ConnectionTypes}
}

// SetTemplate replaces the agent's own claims.
func (g *Agent) SetTemplate(t UserTemplate) {
	g.Permissions, g.Limits, g.Src, g.Times = t.Permissions, t.Limits, t.Src, t.Times
	g.TimesLocation, g.ConnectionTypes = t.TimesLocation, t.ConnectionTypes
}

// String is for logs and error messages.
func (r TimeRange) String() string { return fmt.Sprintf("%s-%s", r.Start, r.End) }

// AllowAllWhereEmpty returns p with ">" allowed in each direction that has
// no allow entry. That is what NATS grants a user JWT without allow
// entries, and what rotatord's default deny would take away from a user it
// takes over as it is (rotatord import).
func (p Permissions) AllowAllWhereEmpty() Permissions {
	p = p.Normalize()
	if len(p.Pub.Allow) == 0 {
		p.Pub.Allow = []string{">"}
	}
	if len(p.Sub.Allow) == 0 {
		p.Sub.Allow = []string{">"}
	}
	return p
}

// UserTemplatePatch changes some user claims; nil fields stay as they are,
// and an empty list clears one.
type UserTemplatePatch struct {
	Permissions     *Permissions
	Limits          *UserLimitsPatch
	Src             *[]string
	Times           *[]TimeRange
	TimesLocation   *string
	ConnectionTypes *[]string
}

// IsEmpty reports whether p changes nothing.
func (p UserTemplatePatch) IsEmpty() bool {
	return p.Permissions == nil && p.Limits == nil && p.Src == nil && p.Times == nil && p.TimesLocation == nil && p.ConnectionTypes == nil
}

// Apply returns t with p's fields set.
func (p UserTemplatePatch) Apply(t UserTemplate) UserTemplate {
	if p.Permissions != nil {
		t.Permissions = *p.Permissions
	}
	if p.Limits != nil {
		t.Limits = p.Limits.Apply(t.Limits)
	}
	if p.Src != nil {
		t.Src = *p.Src
	}
	if p.Times != nil {
		t.Times = *p.Times
	}
	if p.TimesLocation != nil {
		t.TimesLocation = *p.TimesLocation
	}
	if p.ConnectionTypes != nil {
		t.ConnectionTypes = *p.ConnectionTypes
	}
	return t
}
