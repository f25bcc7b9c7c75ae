package rotatord

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Defaults for an agent's rotation policy.
const (
	DefaultSchedule = "@every 24h"
	DefaultGrace    = 30 * time.Minute
	// ExpiryMargin is added to a user JWT's lifetime beyond interval + grace,
	// so that a rotation that runs a little late never finds the agent expired.
	ExpiryMargin = time.Hour
	// MinGrace and MaxGrace bound a rotation's grace period.
	MinGrace = time.Minute
	MaxGrace = 7 * 24 * time.Hour
)

// Delivery says how an agent receives new credentials.
type Delivery string

// Deliveries.
const (
	DeliveryPoll  Delivery = "poll"  // the agent fetches them with proof of possession
	DeliveryVault Delivery = "vault" // rotatord writes them to Vault KV v2
	DeliveryFile  Delivery = "file"  // rotatord writes creds files into a folder (development, mounted secrets)
)

// Agent states.
const (
	AgentActive  = "active"
	AgentRevoked = "revoked"
)

// Credential states.
const (
	CredentialPending = "pending" // issued during a rotation, not yet confirmed
	CredentialActive  = "active"  // the key the agent is known to use
	CredentialRetired = "retired" // replaced by a newer key and revoked
	CredentialRevoked = "revoked" // revoked by an operator
)

// Operator is the NATS operator rotatord signs for.
type Operator struct {
	Name          string
	PublicKey     string
	JWT           string
	SystemAccount string // public key of the system account
	CreatedAt     time.Time
}

// Limits are the account limits written into the account JWT; -1 is
// unlimited. The names are nats-io/jwt's: conn (connections), subs
// (subscriptions), payload (bytes per message), data (bytes), imports and
// exports (how many the account may have), leaf (leaf node connections),
// wildcards (exports may use wildcards) and disallow_bearer (users may not
// be bearer tokens).
type Limits struct {
	Conn           int64 `json:"conn"`
	Subs           int64 `json:"subs"`
	Payload        int64 `json:"payload"`
	Data           int64 `json:"data"`
	Imports        int64 `json:"imports"`
	Exports        int64 `json:"exports"`
	Wildcards      bool  `json:"wildcards"`
	Leaf           int64 `json:"leaf"`
	DisallowBearer bool  `json:"disallow_bearer"`
}

// NoLimits is every limit off, as nsc makes a new account: everything
// unlimited, wildcard exports allowed, bearer tokens allowed.
var NoLimits = Limits{Conn: -1, Subs: -1, Payload: -1, Data: -1, Imports: -1, Exports: -1, Wildcards: true, Leaf: -1}

// LimitsPatch changes some limits; nil fields stay as they are.
type LimitsPatch struct {
	Conn           *int64 `json:"conn"`
	Subs           *int64 `json:"subs"`
	Payload        *int64 `json:"payload"`
	Data           *int64 `json:"data"`
	Imports        *int64 `json:"imports"`
	Exports        *int64 `json:"exports"`
	Wildcards      *bool  `json:"wildcards"`
	Leaf           *int64 `json:"leaf"`
	DisallowBearer *bool  `json:"disallow_bearer"`
}

// Apply returns l with p's fields set.
func (p LimitsPatch) Apply(l Limits) Limits {
	for _, f := range []struct {
		src *int64
		dst *int64
	}{
		{p.Conn, &l.Conn}, {p.Subs, &l.Subs}, {p.Payload, &l.Payload}, {p.Data, &l.Data},
		{p.Imports, &l.Imports}, {p.Exports, &l.Exports}, {p.Leaf, &l.Leaf},
	} {
		if f.src != nil {
			*f.dst = *f.src
		}
	}
	if p.Wildcards != nil {
		l.Wildcards = *p.Wildcards
	}
	if p.DisallowBearer != nil {
		l.DisallowBearer = *p.DisallowBearer
	}
	return l
}

// Validate checks that every count is -1 (unlimited) or more.
func (l Limits) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"conn", l.Conn}, {"subs", l.Subs}, {"payload", l.Payload}, {"data", l.Data},
		{"imports", l.Imports}, {"exports", l.Exports}, {"leaf", l.Leaf},
	} {
		if f.v < -1 {
			return Errorf(EINVALID, "limits.%s is %d: use -1 for unlimited or a count", f.name, f.v)
		}
	}
	return nil
}

// Account is a NATS account that rotatord signs.
type Account struct {
	ID            int64
	Name          string
	PublicKey     string
	System        bool
	Description   string
	Limits        Limits
	JWT           string
	JWTID         string
	JWTVersion    int64
	PushedVersion int64
	SigningKeys   []string
	// KeepRevocations: rotatord may not know every user of the account
	// (it was imported), so revocation entries are never folded into '*'
	// (which revokes every JWT issued before rotatord's oldest known
	// credential); they are only pruned once the revoked JWT expired.
	KeepRevocations bool
	// BaseClaims are the account claims (the JWT's "nats" object) of an
	// imported account: whatever rotatord does not model in them (external
	// authorization, tracing, cluster traffic...) is kept when it re-signs.
	// Nil for accounts rotatord made.
	BaseClaims json.RawMessage
	// Claims are the account's JetStream limits, exports, imports, default
	// permissions, mappings, info URL and tags. Nil only for an account
	// imported before rotatord modeled them: they are then in BaseClaims
	// (see jwtissue.AccountModel).
	Claims      *AccountClaims
	Revocations int
	Agents      int
	CreatedAt   time.Time
	UpdatedAt   time.Time
	// KeyRotation schedules staged rotations of the account's signing key;
	// nil when off (the default). Filled by the service's reads.
	KeyRotation *KeyRotationPolicy
}

// PermissionList is one direction's allow and deny subject lists.
type PermissionList struct {
	Allow []string `json:"allow"`
	Deny  []string `json:"deny"`
}

// Permissions are an agent's publish and subscribe permissions. A
// direction with no allow entry denies every subject (the user JWT denies
// ">"); allow [">"] reaches everything. Resp, when set, lets the agent
// reply to requests it received without a publish permission on the reply
// subjects.
type Permissions struct {
	Pub  PermissionList      `json:"pub"`
	Sub  PermissionList      `json:"sub"`
	Resp *ResponsePermission `json:"resp,omitempty"`
}

// RotationPolicy says when an agent's key is rotated and how long the agent
// has to reconnect with the new one.
type RotationPolicy struct {
	Schedule string
	Grace    time.Duration
}

// Agent is one member of the fleet with its own NATS identity.
type Agent struct {
	ID             int64
	AccountID      int64
	Account        string // account name
	AccountKey     string // account public key
	Name           string
	Permissions    Permissions
	Rotation       RotationPolicy
	Delivery       Delivery
	State          string
	NextRotationAt *time.Time
	Failures       int
	CreatedAt      time.Time
	UpdatedAt      time.Time
	// Active is the credential the agent is known to use, if any.
	Active *Credential

	// The agent's other user claims (see UserTemplate); left empty while
	// it has a role, whose template holds them.
	Limits          UserLimits
	Src             []string
	Times           []TimeRange
	TimesLocation   string
	ConnectionTypes []string
	// Tags go into every user JWT of the agent, role or not; a role's
	// templates read them ({{tag(key)}} for a tag "key:value").
	Tags []string
	// Role, when set, is the name of the agent's role in its account: its
	// user JWTs are signed by the role's key (RoleKey, the newest) and
	// carry no permissions.
	Role    string
	RoleID  int64
	RoleKey string
	// LastRotation is the agent's newest rotation, in flight or finished;
	// nil when it has had none. Filled by the reads that list agents.
	LastRotation *Rotation
}

// Credential is a user key of an agent with the JWT issued for it.
type Credential struct {
	ID        int64
	AgentID   int64
	PublicKey string
	JWT       string
	JWTID     string
	IssuedAt  time.Time
	ExpiresAt time.Time
	State     string
	// SigningKey is the public key that signed the JWT: the account's
	// signing key, a role's scoped key, or for an imported user whatever
	// key issued it.
	SigningKey string
	// SeedEnc is the user seed encrypted under the master key, kept only
	// until the agent is known to hold it.
	SeedEnc   []byte
	RevokedAt *time.Time
}

// AgentKey is what answering an agent that presents one of its keys needs:
// the agent, the credential of the key it presented, its rotation in
// flight (nil if none) and that rotation's new credential (nil if none, or
// not read with it).
type AgentKey struct {
	Agent     *Agent
	Presented *Credential
	InFlight  *Rotation
	Next      *Credential
}

// Revocation is one entry of an account JWT's revocations: user JWTs of
// PublicKey issued at or before RevokedAt are refused. ExpiresAt is when the
// newest JWT of that key expires; after it the entry can be pruned.
type Revocation struct {
	PublicKey string
	RevokedAt time.Time
	ExpiresAt time.Time
	Agent     string
	Reason    string
	// IssuedAt is the iat of the newest JWT of PublicKey that the entry
	// revokes: once no credential in use was issued at or before it, the
	// entry can be folded into a '*' entry. Zero means unknown, and the
	// registry records RevokedAt instead: a '*' entry at or after RevokedAt
	// refuses everything this entry refuses, so folding on it is always safe.
	IssuedAt time.Time
}

// RevocationRotated is the Reason of the revocation entry of a key that a
// completed rotation replaced.
const RevocationRotated = "rotated"

// AuditEvent is one entry of the append-only audit trail. It never holds a
// seed, token or creds file.
type AuditEvent struct {
	ID        int64
	At        time.Time
	Actor     string
	Action    string
	Account   string
	Agent     string
	PublicKey string
	Rotation  string
	Details   map[string]any
}

// AgentFilter selects agents; zero fields match everything.
type AgentFilter struct {
	Account string // account name
	After   string // names after this one, for paging
	Limit   int    // at most this many; 0 for all
	// State is an agent state (AgentActive, AgentRevoked).
	State string
	// Search matches agents whose name contains it, ignoring case.
	Search string
	// Outcomes match agents whose newest rotation is in one of these
	// rotation states, or OutcomeNone for agents without a rotation.
	Outcomes []string
}

// AuditFilter selects audit events; zero fields match everything.
type AuditFilter struct {
	Agent   string
	Action  string
	Since   time.Time
	AfterID int64
	Limit   int
	// Newest lists the newest events first; AfterID then means events
	// with a smaller ID.
	Newest bool
}

// Scope is what an API token may do. Each scope includes the ones below it:
// admin > rotate > read.
type Scope string

// Scopes.
const (
	ScopeRead   Scope = "read"
	ScopeRotate Scope = "rotate"
	ScopeAdmin  Scope = "admin"
)

func (s Scope) rank() int {
	switch s {
	case ScopeRead:
		return 1
	case ScopeRotate:
		return 2
	case ScopeAdmin:
		return 3
	}
	return 0
}

// Valid reports whether s is a known scope.
func (s Scope) Valid() bool { return s.rank() > 0 }

// Allows reports whether a token of scope s may do what needs scope need.
func (s Scope) Allows(need Scope) bool { return s.rank() > 0 && s.rank() >= need.rank() }

// Token is an API token; its secret is never stored, only its hash.
type Token struct {
	ID        int64
	Name      string
	Scope     Scope
	CreatedAt time.Time
	// CreatedBy is the actor that made the token (for the audit trail and
	// the token list).
	CreatedBy string
	// ExpiresAt is when the token stops authenticating; nil for never.
	ExpiresAt *time.Time
	// LastUsedAt is when it last authenticated a request, to the minute
	// (it is written at most once a minute); nil when never used.
	LastUsedAt *time.Time
	// RevokedAt is when it was revoked; nil while it is not.
	RevokedAt *time.Time
}

// Token states, as Token.State reports them.
const (
	TokenActive  = "active"
	TokenExpired = "expired"
	TokenRevoked = "revoked"
)

// State says whether t authenticates at now: revoked, expired or active.
func (t *Token) State(now time.Time) string {
	switch {
	case t.RevokedAt != nil:
		return TokenRevoked
	case t.ExpiresAt != nil && !now.Before(*t.ExpiresAt):
		return TokenExpired
	}
	return TokenActive
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidateName checks an account, agent or token name: 1 to 64 letters,
// digits, '.', '_' or '-', starting with a letter or digit.
func ValidateName(kind, name string) error {
	if !nameRE.MatchString(name) {
		return Errorf(EINVALID, "%s name %q is invalid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", kind, name)
	}
	return nil
}

// ValidateSubject checks a NATS subject used in a permission: dot-separated
// non-empty tokens without whitespace, '*' only as a whole token and '>' only
// as the whole last token.
func ValidateSubject(s string) error {
	if s == "" {
		return Errorf(EINVALID, "empty subject")
	}
	if len(s) > 512 {
		return Errorf(EINVALID, "subject %.32q... is longer than 512 bytes", s)
	}
	tokens := strings.Split(s, ".")
	for i, t := range tokens {
		switch {
		case t == "":
			return Errorf(EINVALID, "subject %q has an empty token", s)
		case strings.ContainsAny(t, " \t\r\n\x00"):
			return Errorf(EINVALID, "subject %q contains whitespace", s)
		case t == ">":
			if i != len(tokens)-1 {
				return Errorf(EINVALID, "subject %q: '>' must be the last token", s)
			}
		case strings.ContainsAny(t, "*>") && t != "*":
			return Errorf(EINVALID, "subject %q: wildcards must be whole tokens", s)
		}
	}
	return nil
}

// maxSubjects bounds each permission list so a user JWT stays small.
const maxSubjects = 256

// Validate checks every subject of p (templates are refused: only a
// role's subjects may use them) and its response permission.
func (p Permissions) Validate() error { return p.validate(false) }

func (p Permissions) validate(templates bool) error {
	lists := []struct {
		name string
		subs []string
	}{
		{"pub.allow", p.Pub.Allow}, {"pub.deny", p.Pub.Deny},
		{"sub.allow", p.Sub.Allow}, {"sub.deny", p.Sub.Deny},
	}
	for _, l := range lists {
		if len(l.subs) > maxSubjects {
			return Errorf(EINVALID, "permissions.%s has %d subjects, more than %d", l.name, len(l.subs), maxSubjects)
		}
		for _, s := range l.subs {
			var err error
			switch {
			case templates:
				err = validateTemplateSubject(s)
			case HasTemplates(s):
				err = Errorf(EINVALID, "subject %q: templates such as {{name()}} work only in a role's permissions", s)
			default:
				err = ValidateSubject(s)
			}
			if err != nil {
				return Errorf(EINVALID, "permissions.%s: %s", l.name, err)
			}
		}
	}
	if p.Resp != nil {
		return p.Resp.Validate()
	}
	return nil
}

// Normalize returns p with nil lists replaced by empty ones, so that it
// encodes as [] rather than null.
func (p Permissions) Normalize() Permissions {
	for _, l := range []*[]string{&p.Pub.Allow, &p.Pub.Deny, &p.Sub.Allow, &p.Sub.Deny} {
		if *l == nil {
			*l = []string{}
		}
	}
	return p
}

// Validate checks the grace period; the schedule is checked by the scheduler
// that parses it.
func (r RotationPolicy) Validate() error {
	if r.Grace < MinGrace || r.Grace > MaxGrace {
		return Errorf(EINVALID, "rotation.grace %s is out of range: use 1m to 168h", r.Grace)
	}
	return nil
}

// String is for logs.
func (r RotationPolicy) String() string {
	return fmt.Sprintf("%s grace %s", r.Schedule, r.Grace)
}

// DefaultMaxAccountJWTBytes is the default account JWT size guard
// (ROTATORD_MAX_ACCOUNT_JWT_BYTES): half of nats-server's default max
// payload (1 MiB), so that a push always fits with room to spare.
const DefaultMaxAccountJWTBytes = 512 << 10
