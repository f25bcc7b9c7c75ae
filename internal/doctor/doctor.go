// Package doctor checks a rotatord deployment end to end and says what to
// fix: the database is reachable and migrated, the master key opens the
// signing keys, NATS is reachable with rotatord's own user, every server
// trusts rotatord's operator and its clock agrees with rotatord's, the
// resolver answers as nats-servers call it, account JWTs stay under the
// guard, no rotation is stuck or rolling back, and the audit chain
// verifies.
//
// Each check is a function of the facts it looks at (a clock, VARZ
// replies, what the database holds) and returns Results; Run gathers the
// facts through Sources and runs every check. The probes that gather NATS
// and HTTP facts are in probe.go.
package doctor

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/auditchain"
)

// Status is a check's outcome.
type Status string

// Statuses, from best to worst.
const (
	StatusOK   Status = "ok"
	StatusSkip Status = "skip" // not checked: something it needs failed
	StatusWarn Status = "warn" // works, but needs a look
	StatusFail Status = "fail" // broken: what Fix says needs doing
)

func (s Status) rank() int {
	switch s {
	case StatusSkip:
		return 1
	case StatusWarn:
		return 2
	case StatusFail:
		return 3
	}
	return 0
}

// Result is the outcome of one check.
type Result struct {
	Check   string `json:"check"`
	Subject string `json:"subject,omitempty"` // the server, account or URL checked
	Status  Status `json:"status"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// Report is every result, and the worst status among them (skips count as
// ok: the check they depend on failed already).
type Report struct {
	Status  Status   `json:"status"`
	Results []Result `json:"checks"`
}

func (r *Report) add(res ...Result) {
	for _, x := range res {
		r.Results = append(r.Results, x)
		if x.Status != StatusSkip && x.Status.rank() > r.Status.rank() {
			r.Status = x.Status
		}
	}
}

// Counts returns how many checks failed and warned.
func (r *Report) Counts() (fail, warn int) {
	for _, x := range r.Results {
		switch x.Status {
		case StatusFail:
			fail++
		case StatusWarn:
			warn++
		}
	}
	return fail, warn
}

// Thresholds of the checks.
const (
	// ClockWarn and ClockFail bound the skew between rotatord and a
	// server: JWT expiry and not-before have no leeway in nats-server.
	ClockWarn = time.Second
	ClockFail = 30 * time.Second
	// ResolverTimeout is nats-server's hard timeout on a resolver request.
	ResolverTimeout = 1900 * time.Millisecond
	// JWTWarnShare is the share of the guard at which an account JWT warns.
	JWTWarnShare = 0.8
	// sample is how many rotations, problems or accounts a message names.
	sample = 5
)

// Database checks that PostgreSQL answered and that its schema is the one
// this binary expects.
func Database(err error, current, latest int64) Result {
	r := Result{Check: "database"}
	switch {
	case err != nil:
		return fail(r, "cannot read the database: "+err.Error(),
			"check ROTATORD_DATABASE_URL and that PostgreSQL runs and lets rotatord in")
	case current < latest:
		return fail(r, fmt.Sprintf("reachable, but the schema is at version %d and this rotatord needs %d", current, latest),
			"run `rotatord migrate` (serve migrates at start unless ROTATORD_NO_MIGRATE=1)")
	case current > latest:
		return warn(r, fmt.Sprintf("reachable; the schema is at version %d, newer than this binary's %d: an older rotatord reads a newer database", current, latest),
			"upgrade this rotatord to the version that migrated the database")
	}
	return ok(r, fmt.Sprintf("reachable; schema at version %d, the latest", current))
}

// KeyProblem is a signing key the master key does not open.
type KeyProblem struct {
	Owner string // "operator" or an account's name
	Key   string
	Err   string
}

// MasterKey checks that the master key loaded and opens every signing key.
func MasterKey(loadErr error, checked int, problems []KeyProblem) Result {
	r := Result{Check: "master key"}
	if loadErr != nil {
		return fail(r, loadErr.Error(), "ROTATORD_MASTER_KEY_FILE must name the file with the key the signing keys were sealed with")
	}
	if len(problems) > 0 {
		var names []string
		for _, p := range problems[:min(len(problems), sample)] {
			name := p.Owner
			if p.Key != "" {
				name += " (" + p.Key + ")"
			}
			names = append(names, name+": "+p.Err)
		}
		return fail(r, fmt.Sprintf("does not open %d of %d signing keys: %s", len(problems), checked, strings.Join(names, "; ")),
			"give rotatord the master key these signing keys were sealed with (ROTATORD_MASTER_KEY_FILE)")
	}
	return ok(r, fmt.Sprintf("opens the signing keys of the operator and %d accounts", checked-1))
}

// SealedValues checks that every sealed value of the database opens:
// problems are values sealed by a master key that no live replica holds
// (rotate.Service.MasterKeyStatus); notes (values of the first format,
// replicas sealing with different keys while the master key rotates)
// break nothing and go into the message.
func SealedValues(problems, notes []string) Result {
	r := Result{Check: "sealed values"}
	if len(problems) > 0 {
		return fail(r, strings.Join(problems[:min(len(problems), sample)], "; "),
			"put the master key back as a line of ROTATORD_MASTER_KEY_FILE on every replica and restart them one by one; `rotatord master-key status` lists the replicas and keys")
	}
	msg := "every sealed value is sealed by a master key that a live replica (or, with none live, the key file) holds"
	if len(notes) > 0 {
		msg += "; " + strings.Join(notes, "; ")
	}
	return ok(r, msg)
}

// Operator is what the servers must trust: rotatord's operator, the signing
// key rotatord signs account JWTs with, and the system account.
type Operator struct {
	Name          string
	PublicKey     string
	SigningKey    string
	SystemAccount string
}

// Trust checks that a server trusts rotatord's operator, with the signing
// key rotatord signs account JWTs with, and uses its system account.
func Trust(s Server, op Operator) Result {
	r := Result{Check: "server trust", Subject: s.label()}
	fix := fmt.Sprintf("put the block that `rotatord nats-config` prints into %s's configuration (operator, system_account, resolver) and restart it", s.label())
	var others []string
	for _, oc := range s.TrustedOperators {
		if oc.Subject != op.PublicKey {
			others = append(others, fmt.Sprintf("%s (%s)", oc.Name, oc.Subject))
			continue
		}
		if op.SigningKey != "" && op.SigningKey != op.PublicKey && !oc.SigningKeys.Contains(op.SigningKey) {
			return fail(r, fmt.Sprintf("trusts operator %s from a JWT without rotatord's signing key %s: it refuses the account JWTs signed with it", op.Name, op.SigningKey), fix)
		}
		if s.SystemAccount != "" && s.SystemAccount != op.SystemAccount {
			return fail(r, fmt.Sprintf("trusts operator %s, but its system account is %s, not rotatord's %s: rotatord's pushes and event watch do not reach it", op.Name, s.SystemAccount, op.SystemAccount), fix)
		}
		msg := fmt.Sprintf("trusts operator %s (%s)", op.Name, op.PublicKey)
		if len(others) > 0 {
			msg += " and also " + strings.Join(others, ", ")
		}
		return ok(r, msg)
	}
	if len(others) == 0 {
		return fail(r, "trusts no operator: it does not run in operator mode", fix)
	}
	return fail(r, fmt.Sprintf("trusts operator %s, not rotatord's operator %s (%s)", strings.Join(others, ", "), op.Name, op.PublicKey), fix)
}

// Clock checks a server's clock against rotatord's: serverNow is the time
// the server reported in a reply to a request sent at sent and answered at
// received, both by rotatord's clock. The server's time is compared with
// the midpoint; half the round trip is the uncertainty, and only skew
// beyond it counts.
func Clock(s Server, serverNow, sent, received time.Time) Result {
	r := Result{Check: "clock", Subject: s.label()}
	half := received.Sub(sent) / 2
	skew := serverNow.Sub(sent.Add(half))
	abs := skew
	if abs < 0 {
		abs = -abs
	}
	way := "ahead of"
	if skew < 0 {
		way = "behind"
	}
	msg := fmt.Sprintf("%s %s rotatord's (±%s)", abs.Round(time.Millisecond), way, half.Round(time.Millisecond))
	if abs < time.Millisecond {
		msg = fmt.Sprintf("agrees with rotatord's within 1ms (±%s)", half.Round(time.Millisecond))
	}
	fix := "synchronize the clocks of rotatord's and the server's machines (NTP): nats-server checks JWT expiry with no leeway"
	switch beyond := abs - half; {
	case serverNow.IsZero():
		return warn(r, "the server reported no time", "")
	case beyond > ClockFail:
		return fail(r, msg, fix)
	case beyond > ClockWarn:
		return warn(r, msg, fix)
	}
	return ok(r, msg)
}

// Resolver checks rotatord's resolver as nats-servers call it: the base URL
// answers 200 (a server refuses to start otherwise), an account's JWT is
// the stored one, and both come within the servers' 1.9 s timeout.
func Resolver(p ResolverProbe, wantJWT string) Result {
	r := Result{Check: "resolver", Subject: p.URL}
	fix := "nats-servers fetch account JWTs from ROTATORD_PUBLIC_URL + /jwt/v1/accounts/: set ROTATORD_PUBLIC_URL to a URL that reaches rotatord from the servers, and the servers' resolver to it (`rotatord nats-config`)"
	switch {
	case p.Err != nil:
		return fail(r, "does not answer: "+p.Err.Error(), fix)
	case p.BaseStatus != 200:
		return fail(r, fmt.Sprintf("GET %s answered %d, not 200: nats-server refuses to start", p.URL, p.BaseStatus), fix)
	case p.Account != "" && p.AccountStatus != 200:
		return fail(r, fmt.Sprintf("GET %s%s answered %d, not 200", p.URL, p.Account, p.AccountStatus), fix)
	case p.Elapsed > ResolverTimeout:
		return fail(r, fmt.Sprintf("answered after %s; nats-server gives up after %s", p.Elapsed.Round(time.Millisecond), ResolverTimeout),
			"find why rotatord answers slowly (its load, the network, a proxy in between)")
	case p.Account != "" && wantJWT != "" && p.AccountJWT != wantJWT:
		return warn(r, fmt.Sprintf("answers, but serves a JWT of account %s other than the stored one: this replica has not caught up", p.Account),
			"check that every rotatord replica listens to the database's notifications (its log)")
	case p.Account == "":
		return ok(r, fmt.Sprintf("answers in %s", p.Elapsed.Round(time.Millisecond)))
	}
	return ok(r, fmt.Sprintf("answers in %s, with the stored JWT of the system account", p.Elapsed.Round(time.Millisecond)))
}

// AccountSize is an account JWT's size.
type AccountSize struct {
	Name  string
	Bytes int
}

// AccountJWTs checks the account JWTs against the guard (an account JWT is
// never stored or pushed above it) and against the servers' max payload
// (a push of a larger one is refused); maxPayload 0 is unknown.
func AccountJWTs(accounts []AccountSize, guard, maxPayload int) []Result {
	var out []Result
	largest := AccountSize{}
	for _, a := range accounts {
		if a.Bytes > largest.Bytes {
			largest = a
		}
		r := Result{Check: "account jwt", Subject: a.Name}
		switch {
		case maxPayload > 0 && a.Bytes > maxPayload:
			out = append(out, fail(r, fmt.Sprintf("%d bytes, more than the servers' max_payload of %d: pushes of it are refused", a.Bytes, maxPayload),
				"raise max_payload on the servers, or fold or prune the account's revocations"))
		case a.Bytes > guard:
			out = append(out, fail(r, fmt.Sprintf("%d bytes, above the guard of %d (ROTATORD_MAX_ACCOUNT_JWT_BYTES)", a.Bytes, guard),
				"make room: fold the account's revocations (`keep_revocations: false`), or raise the guard below the servers' max_payload"))
		case float64(a.Bytes) >= JWTWarnShare*float64(guard):
			out = append(out, warn(r, fmt.Sprintf("%d bytes, %.0f%% of the guard of %d", a.Bytes, 100*float64(a.Bytes)/float64(guard), guard),
				"look at its revocation entries: fold them (`keep_revocations: false`) or rotate less often"))
		}
	}
	if len(out) == 0 {
		msg := fmt.Sprintf("%d accounts, all under %.0f%% of the guard of %d bytes", len(accounts), 100*JWTWarnShare, guard)
		if largest.Name != "" {
			msg += fmt.Sprintf("; the largest, %s, has %d", largest.Name, largest.Bytes)
		}
		out = append(out, ok(Result{Check: "account jwt"}, msg))
	}
	return out
}

// Rotations checks that no rotation is stuck (in flight past its deadline
// by more than StuckAfter, or in a step that should have moved on) and
// that none rolled back recently.
func Rotations(stuck []*rotatord.Rotation, nStuck int, rolled []*rotatord.Rotation, nRolled int, since time.Duration) []Result {
	var out []Result
	if nStuck > 0 {
		out = append(out, fail(Result{Check: "rotations stuck"},
			fmt.Sprintf("%d rotations in flight should have moved on: %s", nStuck, rotationList(stuck, nStuck, func(r *rotatord.Rotation) string {
				if r.Deadline != nil {
					return fmt.Sprintf("%s, deadline %s", r.State, r.Deadline.UTC().Format(time.RFC3339))
				}
				return fmt.Sprintf("%s since %s", r.State, r.UpdatedAt.UTC().Format(time.RFC3339))
			})),
			"the scheduler moves them on at its next tick: check that a rotatord replica runs and what its log says; `rotatord rotations show ID`"))
	} else {
		out = append(out, ok(Result{Check: "rotations stuck"}, "none"))
	}
	if nRolled > 0 {
		out = append(out, warn(Result{Check: "rollbacks"},
			fmt.Sprintf("%d rotations rolled back in the last %s: %s", nRolled, rotatord.FormatDuration(since), rotationList(rolled, nRolled, func(r *rotatord.Rotation) string { return r.Reason })),
			"the agents did not take their new keys in time: check that they poll or read their delivery and reconnect (`rotatord rotations list --state rolled_back`)"))
	} else {
		out = append(out, ok(Result{Check: "rollbacks"}, fmt.Sprintf("none in the last %s", rotatord.FormatDuration(since))))
	}
	return out
}

func rotationList(rs []*rotatord.Rotation, n int, detail func(*rotatord.Rotation) string) string {
	var parts []string
	for _, r := range rs[:min(len(rs), sample)] {
		parts = append(parts, fmt.Sprintf("%s (%s, %s)", r.Agent, r.ID, detail(r)))
	}
	if n > len(parts) {
		parts = append(parts, fmt.Sprintf("and %d more", n-len(parts)))
	}
	return strings.Join(parts, "; ")
}

// Audit checks the audit trail's hash chain.
func Audit(rep *auditchain.Report, err error, unsealed int) Result {
	r := Result{Check: "audit chain"}
	if err != nil {
		return fail(r, "cannot verify: "+err.Error(), "see `rotatord audit verify`")
	}
	if !rep.OK() {
		var ps []string
		for _, p := range rep.Problems[:min(len(rep.Problems), sample)] {
			ps = append(ps, p.String())
		}
		n := len(rep.Problems) + rep.MoreProblems
		return fail(r, fmt.Sprintf("%d problems in %d events: %s", n, rep.Events, strings.Join(ps, "; ")),
			"someone changed or deleted audit events: `rotatord audit verify` names each; compare with a chain head recorded earlier (--anchor)")
	}
	head := fmt.Sprintf("%d events verify; head %s (record it: `rotatord audit verify --anchor` checks it later)", rep.Events, rep.Head)
	if unsealed > 0 {
		return warn(r, fmt.Sprintf("%s; %d events older than 5m are not sealed", head, unsealed),
			"a serving rotatord seals events every second: check that one runs; events written around the queue stay unprotected")
	}
	return ok(r, head)
}

// NATS checks rotatord's own connection: each URL, and the servers that
// answered the ping.
func NATS(p NATSProbe, op Operator) []Result {
	var out []Result
	for _, u := range p.URLs {
		r := Result{Check: "nats", Subject: u.URL}
		switch {
		case u.Err == nil:
			out = append(out, ok(r, "connects as rotatord's system user"))
		case isAuthError(u.Err):
			out = append(out, fail(r, fmt.Sprintf("refuses rotatord's system user (%v): the server does not trust operator %s (%s) or its system account %s",
				u.Err, op.Name, op.PublicKey, op.SystemAccount),
				"put the block that `rotatord nats-config` prints into that server's configuration and restart it"))
		default:
			out = append(out, fail(r, "cannot connect: "+u.Err.Error(), "check ROTATORD_NATS_URL, that the server runs, and TLS (ROTATORD_NATS_CA_FILE...)"))
		}
	}
	switch {
	case p.PingErr != nil:
		out = append(out, fail(Result{Check: "servers"}, "cannot ask the servers: "+p.PingErr.Error(), ""))
	case p.Connected && len(p.Servers) == 0:
		out = append(out, fail(Result{Check: "servers"}, "no server answered $SYS.REQ.SERVER.PING",
			"rotatord's user must be in the servers' system account: check system_account in their configuration"))
	case p.Connected:
		var names []string
		for _, s := range p.Servers {
			names = append(names, s.label())
		}
		out = append(out, ok(Result{Check: "servers"}, fmt.Sprintf("%d answered: %s", len(p.Servers), strings.Join(names, ", "))))
	}
	for _, s := range p.Servers {
		if s.Err != nil {
			out = append(out, fail(Result{Check: "server varz", Subject: s.label()}, "VARZ: "+s.Err.Error(), ""))
			continue
		}
		out = append(out, Trust(s, op), Clock(s, s.Now, s.Sent, s.Received))
	}
	return out
}

// MaxPayload is the smallest max_payload of the servers, 0 when none said.
func (p NATSProbe) MaxPayload() int {
	least := 0
	for _, s := range p.Servers {
		if s.MaxPayload > 0 && (least == 0 || s.MaxPayload < least) {
			least = s.MaxPayload
		}
	}
	return least
}

func ok(r Result, msg string) Result { r.Status, r.Message = StatusOK, msg; return r }

func warn(r Result, msg, fix string) Result {
	r.Status, r.Message, r.Fix = StatusWarn, msg, fix
	return r
}

func fail(r Result, msg, fix string) Result {
	r.Status, r.Message, r.Fix = StatusFail, msg, fix
	return r
}

// Skip is a check not done because what it needs failed.
func Skip(check, why string) Result { return Result{Check: check, Status: StatusSkip, Message: why} }

// Sources are where Run gets the facts. A nil function skips the checks
// that need it.
type Sources struct {
	// Now is rotatord's clock; time.Now when nil.
	Now func() time.Time
	// Database pings PostgreSQL and reads the schema version.
	Database func(ctx context.Context) (current, latest int64, err error)
	// MasterKey loads the master key and opens the signing keys with it.
	MasterKey func(ctx context.Context) (checked int, problems []KeyProblem, loadErr error, err error)
	// Sealed reports the sealed values no live replica can open, and notes
	// (SealedValues).
	Sealed func(ctx context.Context) (problems, notes []string, err error)
	// Operator is rotatord's operator as the servers must trust it.
	Operator func(ctx context.Context) (Operator, error)
	// SystemAccountJWT is the stored JWT of the system account.
	SystemAccountJWT func(ctx context.Context) (string, error)
	// NATS connects as rotatord's user and asks the servers (ProbeNATS).
	NATS func(ctx context.Context) NATSProbe
	// Resolver asks the resolver as the servers do (ProbeResolver).
	Resolver func(ctx context.Context) ResolverProbe
	// Accounts are the account JWTs' sizes.
	Accounts func(ctx context.Context) ([]AccountSize, error)
	// Rotations are the stuck rotations and the rollbacks since now -
	// RollbacksWithin (each: a sample and the count).
	Rotations func(ctx context.Context, now time.Time) (stuck []*rotatord.Rotation, nStuck int, rolled []*rotatord.Rotation, nRolled int, err error)
	// Audit verifies the audit chain, and counts events left unsealed.
	Audit func(ctx context.Context) (*auditchain.Report, int, error)
	// MaxAccountJWTBytes is the guard (default rotatord.DefaultMaxAccountJWTBytes).
	MaxAccountJWTBytes int
	// RollbacksWithin is how far back rollbacks count (default 24h).
	RollbacksWithin time.Duration
}

// Run runs every check and returns the report. A check whose inputs could
// not be had (the database is down: nothing in it can be checked) is
// skipped.
func Run(ctx context.Context, src Sources) *Report {
	rep := &Report{Status: StatusOK}
	if src.Now == nil {
		src.Now = time.Now
	}
	if src.MaxAccountJWTBytes <= 0 {
		src.MaxAccountJWTBytes = rotatord.DefaultMaxAccountJWTBytes
	}
	if src.RollbacksWithin <= 0 {
		src.RollbacksWithin = 24 * time.Hour
	}
	dbOK := false
	if src.Database != nil {
		cur, latest, err := src.Database(ctx)
		r := Database(err, cur, latest)
		rep.add(r)
		dbOK = err == nil
	}
	const noDB = "needs the database"
	keysOK := false
	if src.MasterKey != nil {
		if !dbOK {
			rep.add(Skip("master key", noDB))
		} else {
			checked, problems, loadErr, err := src.MasterKey(ctx)
			if err != nil {
				rep.add(fail(Result{Check: "master key"}, "cannot read the signing keys: "+err.Error(), ""))
			} else {
				r := MasterKey(loadErr, checked, problems)
				rep.add(r)
				keysOK = r.Status == StatusOK
			}
		}
	}
	if src.Sealed != nil {
		if !dbOK {
			rep.add(Skip("sealed values", noDB))
		} else if problems, notes, err := src.Sealed(ctx); err != nil {
			rep.add(fail(Result{Check: "sealed values"}, "cannot read the sealed values: "+err.Error(),
				"check that rotatord's database user may read the operator, signing_keys, credentials and replicas tables"))
		} else {
			rep.add(SealedValues(problems, notes))
		}
	}
	var op Operator
	opOK := false
	if src.Operator != nil && dbOK {
		var err error
		if op, err = src.Operator(ctx); err != nil {
			rep.add(fail(Result{Check: "operator"}, err.Error(), "run `rotatord init --operator NAME`"))
		} else {
			opOK = true
		}
	}
	maxPayload := 0
	if src.NATS != nil {
		switch {
		case !opOK || !keysOK:
			rep.add(Skip("nats", "needs the operator, and a master key that opens the signing keys, to mint rotatord's system user"))
		default:
			p := src.NATS(ctx)
			rep.add(NATS(p, op)...)
			maxPayload = p.MaxPayload()
		}
	}
	if src.Resolver != nil {
		want := ""
		if src.SystemAccountJWT != nil && dbOK {
			want, _ = src.SystemAccountJWT(ctx)
		}
		rep.add(Resolver(src.Resolver(ctx), want))
	}
	if src.Accounts != nil {
		if !dbOK {
			rep.add(Skip("account jwt", noDB))
		} else if sizes, err := src.Accounts(ctx); err != nil {
			rep.add(fail(Result{Check: "account jwt"}, "cannot read the accounts: "+err.Error(), ""))
		} else {
			rep.add(AccountJWTs(sizes, src.MaxAccountJWTBytes, maxPayload)...)
		}
	}
	if src.Rotations != nil {
		if !dbOK {
			rep.add(Skip("rotations", noDB))
		} else if stuck, nStuck, rolled, nRolled, err := src.Rotations(ctx, src.Now()); err != nil {
			rep.add(fail(Result{Check: "rotations"}, "cannot read the rotations: "+err.Error(), ""))
		} else {
			rep.add(Rotations(stuck, nStuck, rolled, nRolled, src.RollbacksWithin)...)
		}
	}
	if src.Audit != nil {
		if !dbOK {
			rep.add(Skip("audit chain", noDB))
		} else {
			r, unsealed, err := src.Audit(ctx)
			rep.add(Audit(r, err, unsealed))
		}
	}
	return rep
}
