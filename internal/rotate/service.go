// Package rotate is rotatord's core: it creates accounts and agents, issues
// their credentials, revokes them, and keeps account JWTs in step between
// PostgreSQL and the nats-servers. It declares the small interfaces it needs
// (Store, Pusher) and is wired to PostgreSQL and NATS by cmd/rotatord.
package rotate

import (
	"cmp"
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/resolver"
	"github.com/rotatord/rotatord/internal/seal"
)

// Store is what the service needs from the registry. Methods take the
// transaction from ctx when run inside InTx.
type Store interface {
	InTx(ctx context.Context, fn func(ctx context.Context) error) error

	Operator(ctx context.Context) (*rotatord.Operator, error)
	CreateOperator(ctx context.Context, op *rotatord.Operator, seedEnc []byte) error
	LockOperator(ctx context.Context) error
	OperatorSeed(ctx context.Context) ([]byte, error)
	UpdateOperator(ctx context.Context, op *rotatord.Operator) error
	AddSigningKey(ctx context.Context, accountID int64, pub string, seedEnc []byte) error
	SigningKey(ctx context.Context, accountID int64) (pub string, seedEnc []byte, err error)
	SigningKeys(ctx context.Context, accountID int64) ([]string, error)

	CreateAccount(ctx context.Context, a *rotatord.Account) error
	FindAccountByName(ctx context.Context, name string) (*rotatord.Account, error)
	FindAccountByPublicKey(ctx context.Context, pub string) (*rotatord.Account, error)
	LockAccount(ctx context.Context, id int64) (*rotatord.Account, error)
	ListAccounts(ctx context.Context) ([]*rotatord.Account, error)
	UpdateAccount(ctx context.Context, a *rotatord.Account) error
	DeleteAccount(ctx context.Context, id int64) error
	MarkPushed(ctx context.Context, id, version int64) error
	ListPushOwed(ctx context.Context) ([]int64, error)
	Revocations(ctx context.Context, accountID int64) ([]rotatord.Revocation, error)
	AddRevocations(ctx context.Context, accountID int64, rs []rotatord.Revocation) error
	DeleteRevocationsExpiredBefore(ctx context.Context, accountID int64, t time.Time) (int64, error)

	CreateAgent(ctx context.Context, g *rotatord.Agent) error
	FindAgentByName(ctx context.Context, name string) (*rotatord.Agent, error)
	LockAgent(ctx context.Context, name string) (*rotatord.Agent, error)
	ListAgents(ctx context.Context, f rotatord.AgentFilter) ([]*rotatord.Agent, error)
	UpdateAgent(ctx context.Context, g *rotatord.Agent) error
	DeleteAgent(ctx context.Context, id int64) error
	CreateCredential(ctx context.Context, c *rotatord.Credential) error
	CreateCredentials(ctx context.Context, cs []*rotatord.Credential) error
	FindCredentials(ctx context.Context, ids []int64) (map[int64]*rotatord.Credential, error)
	SetCredentialStates(ctx context.Context, ids []int64, state string, at time.Time) error
	SetSchedules(ctx context.Context, gs []*rotatord.Agent) error
	LockDueAgents(ctx context.Context, names []string, now time.Time) ([]*rotatord.Agent, error)
	LockAgentsByID(ctx context.Context, ids []int64) (map[int64]*rotatord.Agent, error)
	Credentials(ctx context.Context, agentID int64, states ...string) ([]*rotatord.Credential, error)
	SetCredentialState(ctx context.Context, id int64, state string, at time.Time) error

	CreateRotations(ctx context.Context, rs []*rotatord.Rotation) error
	UpdateRotations(ctx context.Context, rs []*rotatord.Rotation) error
	LockRotations(ctx context.Context, ids []string) ([]*rotatord.Rotation, error)
	UpdateRotation(ctx context.Context, r *rotatord.Rotation) error
	FindRotation(ctx context.Context, id string) (*rotatord.Rotation, error)
	LockRotation(ctx context.Context, id string) (*rotatord.Rotation, bool, error)
	InFlightRotation(ctx context.Context, agentID int64) (*rotatord.Rotation, error)
	ListRotations(ctx context.Context, f rotatord.RotationFilter) ([]*rotatord.Rotation, error)
	ListRotationsToAdvance(ctx context.Context, now time.Time, limit int, expired []string) ([]string, error)
	PendingRotationsByKey(ctx context.Context, keys []string) (map[string]*rotatord.Rotation, error)
	ExpiredRotations(ctx context.Context, now time.Time, limit int) ([]*rotatord.Rotation, error)
	WaitingRotations(ctx context.Context, before time.Time, afterKey string, limit int) ([]*rotatord.Rotation, error)
	ClaimDueAgents(ctx context.Context, now time.Time, limit int) ([]string, error)
	FindCredential(ctx context.Context, id int64) (*rotatord.Credential, error)
	FindCredentialByPublicKey(ctx context.Context, pub string) (*rotatord.Credential, error)
	FindAgentKey(ctx context.Context, name, pub string) (*rotatord.AgentKey, error)
	QueueResign(ctx context.Context, accountID int64) error
	ClaimResign(ctx context.Context) (int64, error)
	QueueCompactable(ctx context.Context, now, cutoff time.Time) error
	CompactRevocations(ctx context.Context, accountID int64, t, expires time.Time) (int64, error)
	OldestValidIssuedAt(ctx context.Context, accountID int64, notExpiredAt time.Time) (time.Time, bool, error)
	UseProof(ctx context.Context, sig []byte, expires time.Time) error
	UseProofFor(ctx context.Context, sig []byte, expires time.Time, e *rotatord.AuditEvent) error
	PruneProofs(ctx context.Context, margin time.Duration) error
	PruneAlerts(ctx context.Context, olderThan time.Duration) (int64, error)
	AgentRotationWait(ctx context.Context, agentID int64, every time.Duration) (time.Duration, error)
	ForgetSeed(ctx context.Context, credentialID int64) error
	AddAlert(ctx context.Context, a *rotatord.Alert) error

	Audit(ctx context.Context, e *rotatord.AuditEvent) error
	AuditBatch(ctx context.Context, events []*rotatord.AuditEvent) error
	ListAudit(ctx context.Context, f rotatord.AuditFilter) ([]*rotatord.AuditEvent, error)
	CreateToken(ctx context.Context, t *rotatord.Token, hash []byte) error
	UseToken(ctx context.Context, hash []byte, now time.Time) (*rotatord.Token, error)
	ListTokens(ctx context.Context) ([]*rotatord.Token, error)
	LockToken(ctx context.Context, name string) (*rotatord.Token, error)
	LockLiveTokens(ctx context.Context, scope rotatord.Scope, now time.Time) ([]string, error)
	RevokeToken(ctx context.Context, name string, at time.Time) error

	RoleStore
	// Fleet and signing-key rotations (keystore.go).
	KeyLifecycleStore
	// The fleet console's reads (console.go).
	LastRotations(ctx context.Context, agentIDs []int64) (map[int64]*rotatord.Rotation, error)
	ListAlertsBy(ctx context.Context, f rotatord.AlertFilter) ([]*rotatord.Alert, error)
	ListRevocationsPage(ctx context.Context, accountID int64, f rotatord.PageFilter) ([]rotatord.Revocation, error)
	ListKeys(ctx context.Context, agentID int64, f rotatord.PageFilter) ([]*rotatord.KeyInfo, error)

	PropagationStore

	MasterKeyStore
	KeyRotationStore
	// The account JWT size guard (guard.go).
	QueueLargeAccounts(ctx context.Context, bytes int) error
	HastenRotations(ctx context.Context, accountID int64, issuedBy, now time.Time, failing bool) (holders, moved int64, err error)
	RevocationRoom(ctx context.Context, accountID int64) (keep bool, entries, inFlight int, err error)
	AddAlertOnce(ctx context.Context, a *rotatord.Alert, key string, now, until time.Time) (bool, error)

	// Exports, imports and activation tokens between accounts (accountclaims.go).
	AccountGraphStore
}

// PropagationStore is what pushes and the tracking of the cluster's
// servers need from the registry (push.go, servers.go).
type PropagationStore interface {
	WithAccountLock(ctx context.Context, accountID int64, fn func(ctx context.Context) error) error
	FindAccount(ctx context.Context, id int64) (*rotatord.Account, error)
	AccountVersion(ctx context.Context, id int64) (int64, error)
	TouchServers(ctx context.Context, servers []rotatord.Server, at time.Time) error
	MarkServersMissed(ctx context.Context, ids []string, at time.Time) error
	ForgetServer(ctx context.Context, id string) error
	ForgetServersSilentSince(ctx context.Context, t time.Time) ([]rotatord.Server, error)
	Servers(ctx context.Context) ([]rotatord.Server, error)
	AccountServers(ctx context.Context, accountID int64) ([]rotatord.AccountServer, error)
	SetServerAccounts(ctx context.Context, accountID int64, list []rotatord.AccountServer) error
	ServersBehind(ctx context.Context) ([]rotatord.ServerCheck, error)
	UnverifiedServerAccounts(ctx context.Context, t time.Time, limit int) ([]rotatord.ServerCheck, error)
	AddRevocationWait(ctx context.Context, accountID, version int64, at time.Time) error
	PopRevocationWaits(ctx context.Context, accountID int64) ([]time.Time, error)
	RotationsAwaitingResign(ctx context.Context, accountID int64) ([]rotatord.RetiredKey, error)
	SetResignVersion(ctx context.Context, ids []string, version int64) error
	CompleteRotations(ctx context.Context, accountID, version int64, at time.Time) ([]*rotatord.Rotation, error)
	AddAlertOnce(ctx context.Context, a *rotatord.Alert, key string, now, until time.Time) (bool, error)
}

// Pusher sends an account JWT to the nats-servers: it waits for the
// servers in expect (IDs) to reply, up to its timeout.
type Pusher interface {
	Push(ctx context.Context, accountPub, accountJWT string, expect []string) (resolver.PushResult, error)
}

// latePusher is a Pusher that hands over the replies that come after a
// push gave up waiting (resolver.Pusher does).
type latePusher interface {
	OnLateReply(func(accountPub, accountJWT string, r resolver.ServerReply))
}

// Prober asks the nats-servers who they are and what they hold.
type Prober interface {
	// Ping returns the servers that answer $SYS.REQ.SERVER.PING within wait.
	Ping(ctx context.Context, wait time.Duration) ([]rotatord.Server, error)
	// AccountJWT returns the JWT of the account that one server holds, or
	// loaded false when it has not loaded the account; resolver.ErrNoReply
	// when the server did not answer within timeout.
	AccountJWT(ctx context.Context, serverID, accountPub string, timeout time.Duration) (token string, loaded bool, err error)
}

// Config configures a Service.
type Config struct {
	Store  Store
	Sealer *seal.Sealer
	// Pusher may be nil when rotatord runs without NATS; account changes
	// then reach servers only through the resolver.
	Pusher Pusher
	// Prober, set with Pusher, asks the servers who they are and what they
	// hold; without it servers are learned from push replies and
	// heartbeats only, and those behind are not checked.
	Prober Prober
	Log    *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// PublicURL is where nats-servers reach rotatord's resolver.
	PublicURL string
	// Distributors deliver credentials for deliveries other than poll,
	// which is built in.
	Distributors map[rotatord.Delivery]Distributor
	// Metrics, when set, receives the rotation metrics.
	Metrics prometheus.Registerer
	// NoJitter schedules rotations exactly on the schedule (for tests).
	NoJitter bool
	// ResignDelay is how long the re-signer waits after a revocation to
	// gather more of the same account into one re-sign (default 50ms), and
	// ResignEvery the least time between two re-signs (default 5s).
	ResignDelay time.Duration
	ResignEvery time.Duration
	// AccountChanged, when set, is called after a commit that changed an
	// account's JWT, so this replica's resolver cache follows at once (other
	// replicas learn of it through LISTEN/NOTIFY).
	AccountChanged func(ctx context.Context, accountPub string)
	// AgentRotateMinInterval is the least time between two rotations an
	// agent starts itself (own-key POST); DefaultAgentRotateMinInterval
	// when zero.
	AgentRotateMinInterval time.Duration
	// MaxControlLine is the servers' max_control_line (4096 when 0): no
	// user JWT is issued whose CONNECT line would not fit it.
	MaxControlLine int
	// Cluster configures the tracking of the cluster's servers (servers.go);
	// zero fields take the defaults.
	Cluster ClusterConfig
	// ActivationLifetime is how long the activation tokens rotatord mints
	// between its accounts are valid (default 30 days); Tick renews them
	// when a third of it is left.
	ActivationLifetime time.Duration

	// OperatorProber asks the nats-servers which operator JWT they run;
	// without it the operator's signing key cannot be rotated.
	OperatorProber OperatorProber
	// KeyRotationServerLive is how long an operator key rotation waits for
	// a server that stopped answering; DefaultKeyRotationServerLive when
	// zero.
	KeyRotationServerLive time.Duration
	// MaxAccountJWTBytes is the size guard of account JWTs
	// (rotatord.DefaultMaxAccountJWTBytes when 0): rotatord never stores a larger
	// one, and makes room when a revocation would cross it (guard.go).
	MaxAccountJWTBytes int
	// AlertRetention is how long alerts are kept (DefaultAlertRetention
	// when 0); Tick deletes older ones every alertPruneEvery.
	AlertRetention time.Duration
}

// DefaultAlertRetention is Config.AlertRetention's default.
const DefaultAlertRetention = 30 * 24 * time.Hour

// alertPruneEvery is how often Tick deletes the alerts past their retention.
const alertPruneEvery = 10 * time.Minute

// DefaultAgentRotateMinInterval is Config.AgentRotateMinInterval's default:
// every own-key rotation adds a revocation entry to the account JWT, so an
// agent must not be able to start them in a loop.
const DefaultAgentRotateMinInterval = 10 * time.Minute

// Service implements rotatord's operations. It is safe for concurrent use.
type Service struct {
	store   Store
	sealer  *seal.Sealer
	pusher  Pusher
	log     *slog.Logger
	now     func() time.Time
	public  string
	changed func(ctx context.Context, accountPub string)

	distributors map[rotatord.Delivery]Distributor
	metrics      *metrics
	jitter       bool
	resignDelay  time.Duration
	resignEvery  time.Duration
	resignKick   chan struct{}
	alertKick    chan struct{}
	watchKick    chan struct{}
	checker      ConnChecker
	// agentRotateEvery: see Config.AgentRotateMinInterval.
	agentRotateEvery time.Duration
	maxControl       int
	maxJWT           int // the account JWT size guard, in bytes
	// activations: see Config.ActivationLifetime.
	activations time.Duration

	// Pushes and the cluster's servers (push.go, servers.go).
	prober      Prober
	cluster     ClusterConfig
	pushGroups  sync.Map // account ID -> *pushGroup
	propagation *propagationMetrics
	seenMu      sync.Mutex
	seen        map[string]rotatord.Server // heard from since the last flush
	gone        []string                   // announced their shutdown since the last flush
	behindIDs   map[string]struct{}        // behind at the last sync
	shutDown    map[string]time.Time       // IDs of servers that shut down, for an hour
	syncKick    chan struct{}

	mu        sync.Mutex
	lastSweep time.Time
	lastConnz time.Time
	// connzSweep is set while the servers are asked about every rotation
	// waiting for a reconnect, a budget a tick; connzAfter is the new key
	// the sweep has reached (watch.go).
	connzSweep  bool
	connzAfter  string
	connzBefore time.Time     // the sweep asks about rotations handed out before
	connzKeys   *rate.Limiter // keys asked about (connzKeysPerSecond)
	lastResign  time.Time
	lastPing    time.Time
	lastRenew   time.Time
	lastPrune   time.Time // of alerts
	// alertRetention: see Config.AlertRetention.
	alertRetention time.Duration
	signers        sync.Map // signing key's public key (string) -> nkeys.KeyPair of accounts and roles (signers.go)

	// Operator signing-key rotation (operatorkey.go): the prober, how long
	// a silent server is waited for, the kick of RunKeyRotations, and the
	// opened operator signing key, by public key.
	opProber   OperatorProber
	serverLive time.Duration
	keyKick    chan struct{}
	opSigner   opSigner

	// lifecycleKick wakes RunKeyLifecycle (keyrotation.go).
	lifecycleKick     chan struct{}
	lifecycleKickOnce sync.Once
	// own gathers agents' own re-issues during a fleet rotation (fleet.go).
	own ownBatches
}

// New returns a Service.
func New(cfg Config) *Service {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	changed := cfg.AccountChanged
	if changed == nil {
		changed = func(context.Context, string) {}
	}
	delay := cfg.ResignDelay
	if delay == 0 {
		delay = 50 * time.Millisecond
	}
	every := cfg.ResignEvery
	if every == 0 {
		every = 5 * time.Second
	}
	agentEvery := cfg.AgentRotateMinInterval
	if agentEvery <= 0 {
		agentEvery = DefaultAgentRotateMinInterval
	}
	activations := cfg.ActivationLifetime
	if activations <= 0 {
		activations = DefaultActivationLifetime
	}
	serverLive := cfg.KeyRotationServerLive
	if serverLive <= 0 {
		serverLive = DefaultKeyRotationServerLive
	}
	s := &Service{opProber: cfg.OperatorProber, serverLive: serverLive, keyKick: make(chan struct{}, 1), activations: activations,
		agentRotateEvery: agentEvery, store: cfg.Store, sealer: cfg.Sealer, pusher: cfg.Pusher, log: log, now: now,
		public: cfg.PublicURL, changed: changed, distributors: cfg.Distributors, metrics: newMetrics(cfg.Metrics),
		jitter: !cfg.NoJitter, resignDelay: delay, resignEvery: every,
		resignKick: make(chan struct{}, 1), alertKick: make(chan struct{}, 1), watchKick: make(chan struct{}, 1),
		maxControl: cmp.Or(cfg.MaxControlLine, DefaultMaxControlLine),
		prober:     cfg.Prober, cluster: cfg.Cluster.withDefaults(), propagation: newPropagationMetrics(cfg.Metrics),
		seen: map[string]rotatord.Server{}, syncKick: make(chan struct{}, 1),
		maxJWT:         cmp.Or(max(cfg.MaxAccountJWTBytes, 0), rotatord.DefaultMaxAccountJWTBytes),
		alertRetention: cmp.Or(max(cfg.AlertRetention, 0), DefaultAlertRetention)}
	if lp, ok := cfg.Pusher.(latePusher); ok {
		lp.OnLateReply(s.lateReply)
	}
	return s
}

// Actor names who asked for a change, for the audit trail.
type Actor string

// SystemActor is rotatord itself (the scheduler, the watcher).
const SystemActor Actor = "system"

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (s *Service) kickResign() { kick(s.resignKick) }
func (s *Service) kickAlerts() { kick(s.alertKick) }

// AlertKicks receives when a new alert is waiting in the outbox.
func (s *Service) AlertKicks() <-chan struct{} { return s.alertKick }

// audit records an event: at once, or with the others of its transaction
// when that was opened by inTx.
func (s *Service) audit(ctx context.Context, actor Actor, action string, e rotatord.AuditEvent) error {
	e.Actor = string(actor)
	e.Action = action
	if buf, ok := ctx.Value(auditBufKey{}).(*auditBuf); ok {
		buf.events = append(buf.events, &e)
		return nil
	}
	return s.store.Audit(ctx, &e)
}

type auditBufKey struct{}

type auditBuf struct{ events []*rotatord.AuditEvent }

// inTx runs fn in a transaction (the one in ctx, if any) and writes the
// audit events fn records with one statement before it commits: a
// rotation step records three or four.
func (s *Service) inTx(ctx context.Context, fn func(ctx context.Context) error) error {
	if _, ok := ctx.Value(auditBufKey{}).(*auditBuf); ok {
		return s.store.InTx(ctx, fn)
	}
	buf := &auditBuf{}
	err := s.store.InTx(ctx, func(ctx context.Context) error {
		buf.events = buf.events[:0]
		if err := fn(context.WithValue(ctx, auditBufKey{}, buf)); err != nil {
			return err
		}
		return s.store.AuditBatch(ctx, buf.events)
	})
	if err == nil {
		s.logChanges(buf.events)
	}
	return err
}
