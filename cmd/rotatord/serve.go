package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/alert"
	"github.com/rotatord/rotatord/internal/auditchain"
	"github.com/rotatord/rotatord/internal/authwatch"
	"github.com/rotatord/rotatord/internal/console"
	"github.com/rotatord/rotatord/internal/httpapi"
	"github.com/rotatord/rotatord/internal/refusals"
	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/internal/resolver"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/seal"
	"github.com/rotatord/rotatord/internal/sysconn"
)

// vaultChecker is the part of Vault delivery readiness needs.
type vaultChecker interface {
	Check(ctx context.Context) error
}

// Main is a running rotatord: the resolver, the API, and the background
// work. Tests run the same Main on :0.
type Main struct {
	Config Config
	Log    *slog.Logger

	Store   *registry.Store
	Service *rotate.Service
	Cache   *resolver.Cache
	NATS    *sysconn.Conn

	Alerts *alert.Dispatcher
	// Distributors, when set before Run, deliver credentials for
	// deliveries other than poll (tests inject them).
	Distributors map[rotatord.Delivery]rotate.Distributor

	vault     vaultChecker
	vaultStop context.CancelFunc
	listener  net.Listener
	http      *http.Server
	scheduler *rotate.Scheduler
	stopWatch func()
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	kick      chan struct{}

	// authWatch counts NATS authentication failures (nil without NATS).
	authWatch     *authwatch.Watcher
	stopAuthWatch func()

	// lookups answers cache-mode servers' CLAIMS.LOOKUP (nil without NATS).
	lookups *resolver.Lookup

	// stats reads the registry gauges of /metrics in the background.
	stats *statsReader
	// statsSource, when set before Run, wraps what stats reads (tests
	// count the reads).
	statsSource func(statsStore) statsStore

	// Refusals counts the agent API's refusals for the audit trail.
	Refusals *refusals.Counter

	// stopServers stops watching the servers' heartbeats (propagation.go).
	stopServers func()

	// replica is this process's record of the master keys it holds.
	replica *rotatord.Replica
}

// NewMain returns a Main with the default configuration.
func NewMain() *Main {
	return &Main{Config: DefaultConfig(), kick: make(chan struct{}, 1)}
}

// URL is the base URL the HTTP server listens on (https when it serves TLS).
func (m *Main) URL() string {
	if m.listener == nil {
		return ""
	}
	return m.Config.scheme() + "://" + m.listener.Addr().String()
}

// Run starts rotatord and returns once it serves; Close stops it. It fails
// without a valid master key, a reachable database, or an operator.
func (m *Main) Run(ctx context.Context) (err error) {
	if err := m.Config.Validate("database-url", "master-key-file", "listen", "tls"); err != nil {
		return err
	}
	if m.Log == nil {
		m.Log = m.Config.logger()
	}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	sealer, err := seal.LoadFile(m.Config.MasterKeyFile)
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	if m.Store, err = registry.Open(ctx, m.Config.DatabaseURL); err != nil {
		return err
	}
	if err := m.Store.Ping(ctx); err != nil {
		return err
	}
	if !m.Config.NoMigrate {
		n, err := m.Store.Migrate(ctx)
		if err != nil {
			return err
		}
		if n > 0 {
			m.Log.Info("applied migrations", "count", n)
		}
	}
	op, err := m.Store.Operator(ctx)
	if err != nil {
		return err
	}

	m.Cache = resolver.NewCache()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var stats statsStore = m.Store
	if m.statsSource != nil {
		stats = m.statsSource(stats)
	}
	m.stats = newStatsReader(stats, statsEvery, statsTimeout, m.Config.Now, m.Log)
	reg.MustRegister(m.stats)
	reg.MustRegister(newJWTGuardGauge(m.Config.MaxAccountJWTBytes))

	if err := m.setupDistributors(ctx); err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	var (
		pusher rotate.Pusher
		prober rotate.Prober
	)
	if m.Config.NATSURL != "" {
		// A push waits for every server known to answer; after the last
		// one (or, knowing none, the first) it waits 5 ms for servers it
		// does not know yet: servers of a cluster answer within a few
		// milliseconds of each other.
		p := resolver.NewPusher(m.natsConn, m.Config.PushTimeout, 5*time.Millisecond, m.Log, reg)
		pusher, prober = p, p
	}
	m.Service = rotate.New(rotate.Config{
		Store: m.Store, Sealer: sealer, Pusher: pusher, Prober: prober, Log: m.Log, PublicURL: m.Config.publicURL(),
		AccountChanged: m.refreshAccount, Metrics: reg, Distributors: m.Distributors,
		NoJitter: m.Config.NoJitter, ResignDelay: m.Config.ResignDelay, Now: m.Config.Now,
		AgentRotateMinInterval: m.Config.AgentRotateMinInterval,
		MaxControlLine:         m.Config.MaxControlLine,
		ResignEvery:            m.Config.ResignEvery, Cluster: m.clusterConfig(),
		MaxAccountJWTBytes: int(m.Config.MaxAccountJWTBytes),
		AlertRetention:     m.Config.AlertRetention,
	})
	if err := m.recordReplica(ctx); err != nil {
		return err
	}
	if err := m.Service.CheckKeys(ctx); err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	m.warnSealed(ctx)

	// Fill the resolver cache before serving: nats-server must never get
	// a 404 for an account that exists.
	m.Cache.SetOperator(op.JWT)
	if err := m.loadAccounts(ctx); err != nil {
		return err
	}

	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.cancel = cancel
	m.goBackground(func() {
		m.Store.ListenAccounts(bg, m.Log, m.loadAccounts, func(pub string) { m.refreshAccount(bg, pub) })
	})

	if m.Config.NATSURL != "" {
		var natsTLS []nats.Option
		if natsTLS, err = natsTLSOptions(&m.Config, m.Log); err != nil {
			return fmt.Errorf("refusing to start: %w", err)
		}
		// The first connect's callback may run before Connect returns:
		// it waits until m.NATS is set (the pusher reads it).
		natsSet := make(chan struct{})
		m.NATS, err = sysconn.Connect(ctx, sysconn.Config{
			URL: m.Config.NATSURL, Name: "rotatord", Log: m.Log,
			Mint: m.Service.MintSystemUser, Options: natsTLS,
			OnConnect: func(*nats.Conn) {
				select {
				case <-natsSet:
				case <-bg.Done():
					return
				}
				// Connect events may have been missed while disconnected.
				m.Service.MarkEventsMissed()
				m.discoverServers(bg)
				m.kickPush()
			},
		})
		close(natsSet)
		if err != nil {
			return err
		}
		if m.stopWatch, err = m.Service.Watch(m.NATS.NC()); err != nil {
			return err
		}
		if err := m.startAuthWatch(reg); err != nil {
			return err
		}
		// Servers in `resolver: {type: cache}` mode fetch account JWTs
		// over NATS instead of HTTP.
		if m.lookups, err = resolver.ServeLookups(m.NATS.NC(), m.Cache, m.Log, reg); err != nil {
			return err
		}
		m.Service.SetConnChecker(rotate.NATSChecker{Conn: m.natsConn})
		if p, ok := pusher.(*resolver.Pusher); ok {
			m.startKeyRotations(bg, p)
		}
		m.goBackground(func() { m.Service.RunPushRetry(bg, 5*time.Second, m.kick) })
		if err := m.startServerWatch(bg); err != nil {
			return err
		}
	}
	m.Alerts = alert.New(alert.Dispatcher{Store: m.Store, Webhook: m.Config.AlertWebhook, Conn: m.natsConn, Log: m.Log, Now: m.Config.Now}, reg)
	m.goBackground(func() { m.Alerts.Run(bg, 2*time.Second, m.Service.AlertKicks()) })
	if m.authWatch != nil {
		// Auth failure alerts go out at once, not at the next tick.
		m.goBackground(func() { m.Alerts.Run(bg, time.Minute, m.authWatch.AlertKicks()) })
	}
	m.goBackground(func() { m.Service.RunResigner(bg, 2*time.Second) })
	// Fleet and signing-key rotations step at once when one changes here
	// (an emergency re-issue must not wait for the tick), and every few
	// seconds for those other replicas changed; Tick drives them too.
	m.goBackground(func() { m.Service.RunKeyLifecycle(bg, 5*time.Second) })
	m.goBackground(func() { m.Store.RunAuditSealer(bg, m.Log, auditSealInterval) })
	m.goBackground(func() { m.Service.RunReplicaHeartbeat(bg, m.replica, rotatord.ReplicaHeartbeat) })
	// The first reading before serving, so the first scrape has numbers.
	m.stats.refresh(ctx)
	m.goBackground(func() { m.stats.Run(bg) })
	if m.Config.TickSpec != "" {
		if m.scheduler, err = m.Service.StartScheduler(bg, m.Config.TickSpec); err != nil {
			return err
		}
	}

	// Agent API refusals go to the audit trail once per window, in aggregate.
	m.Refusals = refusals.New(refusals.Config{Sink: m.Store, Log: m.Log, Now: m.Config.Now})
	m.goBackground(func() { m.Refusals.Run(bg) })
	api := httpapi.New(httpapi.Config{
		Service:  m.Service,
		Resolver: resolver.NewHandler(m.Cache, reg),
		Metrics:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		Log:      m.Log,
		Ready:    m.ready,
		MaxBody:  m.Config.MaxBody,
		// Only with a client CA does the listener ask for certificates.
		RequireClientCert: m.Config.TLSClientCAFile != "",
		ClientAllowed:     m.Config.clientAllowed(),
		AgentLimits: httpapi.AgentLimits{FailRate: m.Config.AgentFailRate, Rate: m.Config.AgentRate,
			ReconnectRate: m.Config.AgentReconnectRate, NoReconnectPacing: m.Config.AgentReconnectOff},
		Refusals: m.Refusals,
		// The fleet console and what it reads.
		Console:            console.Handler(),
		MaxAccountJWTBytes: m.Config.MaxAccountJWTBytes,
		AuditVerify: func(ctx context.Context, anchors []auditchain.Head) (*auditchain.Report, error) {
			return m.Store.VerifyAudit(ctx, registry.VerifyAuditOptions{Anchors: anchors})
		},
		DBTimeout: m.Config.DBTimeout,
	})
	serverTLS, err := serverTLSConfig(&m.Config, m.Log)
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	if m.listener, err = net.Listen("tcp", m.Config.Listen); err != nil {
		return fmt.Errorf("listen on %s: %w", m.Config.Listen, err)
	}
	m.http = &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		// Above httpapi's own limit, so that rotatord answers oversized
		// headers with its JSON 431 before Go's plain-text one.
		MaxHeaderBytes: httpapi.ServerMaxHeaderBytes,
		TLSConfig:      serverTLS,
		// Failed TLS handshakes (a client certificate of another CA, a
		// client that does not trust ours) go to the structured log.
		ErrorLog: slog.NewLogLogger(m.Log.Handler(), slog.LevelWarn),
	}
	m.goBackground(func() {
		serve := m.http.Serve
		if serverTLS != nil {
			serve = func(l net.Listener) error { return m.http.ServeTLS(l, "", "") }
		}
		if err := serve(m.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.Log.Error("http server stopped", "err", err)
		}
	})
	m.Log.Info("rotatord serving", "listen", m.listener.Addr().String(), "public_url", m.Config.publicURL(),
		"tls", serverTLS != nil, "admin_client_certs", m.Config.TLSClientCAFile != "", "admin_client_identities", m.Config.clientAllowed(),
		"operator", op.Name, "accounts", m.Cache.Len(), "nats", redactURL(m.Config.NATSURL))
	return nil
}

func (m *Main) goBackground(fn func()) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		fn()
	}()
}

func (m *Main) natsConn() *nats.Conn {
	if m.NATS == nil {
		return nil
	}
	return m.NATS.NC()
}

func (m *Main) kickPush() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// loadAccounts replaces the resolver cache with every account JWT, and
// reloads the operator JWT.
func (m *Main) loadAccounts(ctx context.Context) error {
	m.refreshOperator(ctx, "")
	mark := m.Cache.Snapshot()
	all, err := m.Store.AccountJWTs(ctx)
	if err != nil {
		return err
	}
	out := make([]resolver.Account, len(all))
	for i, a := range all {
		out[i] = resolver.Account{PublicKey: a.PublicKey, JWT: a.JWT, Version: a.Version}
	}
	m.Cache.Replace(out, mark)
	return nil
}

// refreshAccount reloads one account after a change notification.
func (m *Main) refreshAccount(ctx context.Context, pub string) {
	if m.refreshOperator(ctx, pub) {
		return
	}
	a, err := m.Store.FindAccountJWT(ctx, pub)
	switch {
	case errors.Is(err, rotatord.ErrNotFound):
		m.Cache.Delete(pub)
	case err != nil:
		// Leave the entry as it is; the listener resyncs everything when
		// its connection comes back.
		m.Log.Warn("reload account jwt", "account", pub, "err", err)
	default:
		m.Cache.Set(resolver.Account{PublicKey: a.PublicKey, JWT: a.JWT, Version: a.Version})
	}
}

// ready reports whether PostgreSQL answers and, when configured, NATS is connected.
func (m *Main) ready(ctx context.Context) error {
	if err := m.Store.Ping(ctx); err != nil {
		return rotatord.Errorf(rotatord.EUNAVAILABLE, "database unreachable")
	}
	if m.NATS != nil && !m.NATS.Connected() {
		return rotatord.Errorf(rotatord.EUNAVAILABLE, "nats not connected")
	}
	if m.vault != nil {
		if err := m.vault.Check(ctx); err != nil {
			return rotatord.Errorf(rotatord.EUNAVAILABLE, "vault unavailable")
		}
	}
	return nil
}

// Close stops the background work, then the HTTP server (waiting for
// requests in flight up to the shutdown timeout), then NATS and the pool.
func (m *Main) Close() error {
	if m.scheduler != nil {
		m.scheduler.Stop()
	}
	if m.cancel != nil {
		m.cancel()
	}
	var err error
	if m.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), m.Config.ShutdownWait)
		err = m.http.Shutdown(ctx)
		cancel()
	}
	if m.stopWatch != nil {
		m.stopWatch()
	}
	if m.stopAuthWatch != nil {
		m.stopAuthWatch()
	}
	if m.stopServers != nil {
		m.stopServers()
	}
	if m.lookups != nil {
		if err := m.lookups.Close(); err != nil {
			m.Log.Warn("stop account lookups", "err", err)
		}
	}
	if m.NATS != nil {
		m.NATS.Close()
	}
	if m.vaultStop != nil {
		m.vaultStop()
	}
	m.wg.Wait()
	m.forgetReplica()
	if m.Store != nil {
		m.Store.Close()
	}
	return err
}

// redactURL drops user info from a URL list for logs.
func redactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			if scheme := strings.Index(p, "://"); scheme >= 0 && scheme < at {
				parts[i] = p[:scheme+3] + "redacted@" + p[at+1:]
			}
		}
	}
	return strings.Join(parts, ",")
}
