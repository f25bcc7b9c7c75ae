package rotate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/resolver"
)

// The servers of the cluster.
//
// rotatord learns the nats-servers from their STATSZ heartbeats (every
// 10 s), their answers to $SYS.REQ.SERVER.PING (at start, on every
// reconnect and every PingEvery) and their replies to pushes, and records
// per server and account the newest account-JWT version the server
// acknowledged. A server that did not get a version (its routes were down
// during the push, it refused it) is behind: the sync loop asks it every
// SyncEvery what it holds ($SYS.REQ.SERVER.<id>.ACCOUNTZ) and, once it
// answers with an older JWT, pushes the stored one again, so a server is
// brought up to date within a couple of seconds of being reachable again.
// Servers behind are counted (rotatord_servers_behind) and alerted
// (server_behind, once per server and AlertWindow, after AlertAfter).
//
// A server is forgotten when it announces its shutdown, or when it was not
// heard from for ForgetAfter: a nats-server takes a new ID at every start, so
// a restarted server comes back as a new one, and one that is gone for good
// stops counting as behind (and stops holding back revocation waits) then.

// Alert kinds raised here.
const KindServerBehind = "server_behind"

// ClusterConfig tunes the tracking of the cluster's servers. Zero fields
// take the defaults.
type ClusterConfig struct {
	// Live is how recently a server must have been heard from for pushes
	// to wait for it and for a push to count as complete only once it holds
	// the JWT: three heartbeats, 30 s.
	Live time.Duration
	// ForgetAfter is how long a silent server is remembered: 15 min.
	ForgetAfter time.Duration
	// AlertAfter is how long a server may be behind before a
	// server_behind alert (30 s); AlertWindow is how long after one no other
	// goes out for that server (1 h).
	AlertAfter  time.Duration
	AlertWindow time.Duration
	// SyncEvery is how often servers behind are checked (1 s); PingEvery
	// how often every server is asked who it is (30 s).
	SyncEvery time.Duration
	PingEvery time.Duration
	// ProbeTimeout is how long a server behind has to answer (1 s).
	ProbeTimeout time.Duration
	// PushBudget bounds one push with its database work (30 s).
	PushBudget time.Duration
}

// Defaults of ClusterConfig.
const (
	DefaultServerLive         = 30 * time.Second
	DefaultServerForgetAfter  = 15 * time.Minute
	DefaultServerAlertAfter   = 30 * time.Second
	DefaultServerAlertWindow  = time.Hour
	DefaultServerSyncEvery    = time.Second
	DefaultServerPingEvery    = 30 * time.Second
	DefaultServerProbeTimeout = time.Second
	DefaultPushBudget         = 30 * time.Second
)

func (c ClusterConfig) withDefaults() ClusterConfig {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Live, DefaultServerLive)
	def(&c.ForgetAfter, DefaultServerForgetAfter)
	def(&c.AlertAfter, DefaultServerAlertAfter)
	def(&c.AlertWindow, DefaultServerAlertWindow)
	def(&c.SyncEvery, DefaultServerSyncEvery)
	def(&c.PingEvery, DefaultServerPingEvery)
	def(&c.ProbeTimeout, DefaultServerProbeTimeout)
	def(&c.PushBudget, DefaultPushBudget)
	return c
}

type propagationMetrics struct {
	behind      prometheus.Gauge
	known       prometheus.Gauge
	propagation prometheus.Histogram
}

func newPropagationMetrics(reg prometheus.Registerer) *propagationMetrics {
	m := &propagationMetrics{
		behind: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rotatord_servers_behind",
			Help: "Known nats-servers that do not hold the stored JWT of at least one account (they missed or refused a push).",
		}),
		known: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rotatord_servers_known",
			Help: "nats-servers rotatord knows (heard from within the forget interval).",
		}),
		propagation: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rotatord_revocation_propagation_seconds",
			Help: "Time from an operator revocation request to the last known nats-server's acknowledgement of the account JWT that carries it.",
			// 5 ms to about 12 minutes: a partitioned server's catch-up too.
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.behind, m.known, m.propagation)
	}
	return m
}

func (s *Service) kickSync() { kick(s.syncKick) }

// ServerSeen records that a server was heard from (a heartbeat). It only
// notes it; the sync loop writes it down. It is safe to call from a NATS
// callback.
func (s *Service) ServerSeen(sv rotatord.Server) {
	s.seenMu.Lock()
	if _, down := s.shutDown[sv.ID]; down {
		// A heartbeat sent before its shutdown, handled after it: a server
		// never comes back under the same ID.
		s.seenMu.Unlock()
		return
	}
	_, behind := s.behindIDs[sv.ID]
	// When it was heard, not when it is written down: a push that found it
	// silent meanwhile must not see it as answering again.
	sv.LastSeen = s.now()
	s.seen[sv.ID] = sv
	s.seenMu.Unlock()
	if behind {
		// A server behind is reachable again: check it now.
		s.kickSync()
	}
}

// ServerGone records that a server announced its shutdown: it is
// forgotten at the next sync.
func (s *Service) ServerGone(id string) {
	s.seenMu.Lock()
	s.gone = append(s.gone, id)
	delete(s.seen, id)
	if s.shutDown == nil {
		s.shutDown = map[string]time.Time{}
	}
	now := s.now()
	for gid, at := range s.shutDown {
		if now.Sub(at) > time.Hour {
			delete(s.shutDown, gid)
		}
	}
	s.shutDown[id] = now
	s.seenMu.Unlock()
	s.kickSync()
}

// DiscoverServers asks every server who it is and records those that
// answer (call it when the NATS connection comes up).
func (s *Service) DiscoverServers(ctx context.Context) error {
	if s.prober == nil {
		return nil
	}
	servers, err := s.prober.Ping(ctx, time.Second)
	if err != nil {
		return fmt.Errorf("ping nats-servers: %w", err)
	}
	s.mu.Lock()
	s.lastPing = s.now()
	s.mu.Unlock()
	return s.store.TouchServers(ctx, servers, s.now())
}

// RunServerSync keeps the servers' state current every SyncEvery (and at
// once when kicked) until ctx ends: it writes down heartbeats, forgets
// silent servers, checks the servers behind and brings them up to date,
// counts and alerts them.
func (s *Service) RunServerSync(ctx context.Context) {
	t := time.NewTicker(s.cluster.SyncEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.syncKick:
		}
		if err := s.SyncServers(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("sync nats-servers", "err", err)
		}
	}
}

// SyncServers does one round of RunServerSync.
func (s *Service) SyncServers(ctx context.Context) error {
	now := s.now()
	if err := s.flushSeen(ctx, now); err != nil {
		return err
	}
	s.mu.Lock()
	ping := s.prober != nil && now.Sub(s.lastPing) >= s.cluster.PingEvery
	s.mu.Unlock()
	if ping {
		if err := s.DiscoverServers(ctx); err != nil && !errors.Is(err, resolver.ErrNotConnected) {
			s.log.Debug("discover nats-servers", "err", err)
		}
	}
	forgotten, err := s.store.ForgetServersSilentSince(ctx, now.Add(-s.cluster.ForgetAfter))
	if err != nil {
		return err
	}
	for _, sv := range forgotten {
		s.log.Warn("forgot a silent nats-server", "server", sv.Name, "server_id", sv.ID, "last_seen", sv.LastSeen)
	}
	behind, err := s.store.ServersBehind(ctx)
	if err != nil {
		return err
	}
	byServer := map[string][]rotatord.ServerCheck{}
	var order []string
	for _, c := range behind {
		if byServer[c.ID] == nil {
			order = append(order, c.ID)
		}
		byServer[c.ID] = append(byServer[c.ID], c)
	}
	s.propagation.behind.Set(float64(len(order)))
	ids := make(map[string]struct{}, len(order))
	for _, id := range order {
		ids[id] = struct{}{}
	}
	s.seenMu.Lock()
	s.behindIDs = ids
	s.seenMu.Unlock()

	var errs []error
	for _, id := range order {
		checks := byServer[id]
		if err := s.alertBehind(ctx, checks, now); err != nil {
			errs = append(errs, err)
		}
		if s.pusher != nil && s.prober != nil {
			if err := s.catchUp(ctx, checks); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if s.pusher != nil {
		// Revocations whose last server was forgotten have landed too.
		requested, err := s.store.PopRevocationWaits(ctx, 0)
		if err != nil {
			errs = append(errs, err)
		}
		for _, t := range requested {
			s.propagation.propagation.Observe(s.now().Sub(t).Seconds())
		}
	}
	if s.prober != nil {
		if err := s.verifyUnknown(ctx, now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// flushSeen writes down the heartbeats and shutdowns noted since the last
// flush, and updates the count of known servers.
func (s *Service) flushSeen(ctx context.Context, now time.Time) error {
	s.seenMu.Lock()
	seen := make([]rotatord.Server, 0, len(s.seen))
	for _, sv := range s.seen {
		seen = append(seen, sv)
	}
	gone := s.gone
	s.seen, s.gone = map[string]rotatord.Server{}, nil
	s.seenMu.Unlock()
	err := s.store.TouchServers(ctx, seen, now)
	for _, id := range gone {
		if err == nil {
			err = s.store.ForgetServer(ctx, id)
			s.log.Info("forgot a nats-server that shut down", "server_id", id)
		}
	}
	if err != nil {
		// Try again at the next round.
		s.seenMu.Lock()
		for _, sv := range seen {
			if _, ok := s.seen[sv.ID]; !ok {
				s.seen[sv.ID] = sv
			}
		}
		s.gone = append(s.gone, gone...)
		s.seenMu.Unlock()
		return fmt.Errorf("record nats-servers seen: %w", err)
	}
	all, err := s.store.Servers(ctx)
	if err != nil {
		return err
	}
	s.propagation.known.Set(float64(len(all)))
	return nil
}

// catchUp asks a server behind what it holds of each account it is
// behind on, and pushes the stored JWT again where it holds an older one.
// A server that does not answer is left for the next round.
func (s *Service) catchUp(ctx context.Context, checks []rotatord.ServerCheck) error {
	for _, c := range checks {
		token, loaded, err := s.prober.AccountJWT(ctx, c.ID, c.AccountKey, s.cluster.ProbeTimeout)
		if errors.Is(err, resolver.ErrNoReply) || errors.Is(err, resolver.ErrNotConnected) {
			return nil // not reachable from here now
		}
		if err != nil {
			s.log.Debug("ask nats-server what it holds", "server", c.Name, "account", c.AccountName, "err", err)
			continue
		}
		// It answered: it is reachable, and pushes wait for it again.
		sv := c.Server
		sv.LastSeen = s.now()
		if err := s.store.TouchServers(ctx, []rotatord.Server{sv}, sv.LastSeen); err != nil {
			return err
		}
		if !loaded || token == c.JWT {
			if err := s.recordVerified(ctx, c, loaded); err != nil {
				return err
			}
			continue
		}
		s.log.Info("nats-server holds an old account jwt; pushing again", "server", c.Name, "server_id", c.ID, "account", c.AccountName)
		out, err := s.pushAccount(ctx, c.AccountID, true)
		if err != nil {
			return err
		}
		if out.Behind == 0 {
			s.log.Info("nats-server caught up", "server", c.Name, "server_id", c.ID, "account", c.AccountName, "version", out.Version)
		}
	}
	return nil
}

// recordVerified records that a server holds an account's stored JWT (or
// does not hold the account at all), found by asking it, and settles the
// account if it was the last live server holding it back.
func (s *Service) recordVerified(ctx context.Context, c rotatord.ServerCheck, loaded bool) error {
	var (
		done []*rotatord.Rotation
		took []time.Duration
	)
	ctx, cancel := context.WithTimeout(ctx, s.cluster.PushBudget)
	defer cancel()
	err := s.store.WithAccountLock(ctx, c.AccountID, func(ctx context.Context) error {
		acc, err := s.store.FindAccount(ctx, c.AccountID)
		if err != nil {
			return err
		}
		if acc.JWTVersion != c.JWTVersion {
			return nil // a newer JWT was stored meanwhile: its push takes care of this server
		}
		now := s.now()
		row := c.AccountServer
		row.Version, row.Status, row.AckedAt, row.BehindSince = acc.JWTVersion, rotatord.ServerVerified, &now, nil
		if !loaded {
			row.Status = rotatord.ServerNotLoaded
		}
		if err := s.store.SetServerAccounts(ctx, acc.ID, []rotatord.AccountServer{row}); err != nil {
			return err
		}
		if acc.PushedVersion >= acc.JWTVersion {
			done, took, err = s.settle(ctx, acc, acc.PushedVersion, now)
			return err
		}
		servers, err := s.store.AccountServers(ctx, acc.ID)
		if err != nil {
			return err
		}
		acked := false
		for i := range servers {
			sv := &servers[i]
			if sv.Holds(acc.JWTVersion) && (sv.Status == rotatord.ServerUpdated || sv.Status == rotatord.ServerSkipped) {
				acked = true
			}
			if sv.Live(now, s.cluster.Live) && !sv.Holds(acc.JWTVersion) {
				return nil // others still hold it back; the owed push goes on
			}
		}
		if !acked {
			return nil
		}
		done, took, err = s.settle(ctx, acc, acc.JWTVersion, now)
		return err
	})
	for _, r := range done {
		s.metrics.finished(rotatord.RotationCompleted, r.FinishedAt.Sub(r.CreatedAt))
	}
	for _, d := range took {
		s.propagation.propagation.Observe(d.Seconds())
	}
	if err != nil {
		return fmt.Errorf("record what nats-server %s holds of account %s: %w", c.Name, c.AccountName, err)
	}
	return nil
}

// unknownPerSync bounds how many (server, account) pairs one sync asks
// about, so a new server with many accounts is learned over a few rounds.
const unknownPerSync = 20

// verifyUnknown asks live servers about accounts they never answered for
// (a server that joined, accounts that were never pushed), so that what
// each server holds is known for every account.
func (s *Service) verifyUnknown(ctx context.Context, now time.Time) error {
	pairs, err := s.store.UnverifiedServerAccounts(ctx, now.Add(-s.cluster.Live), unknownPerSync)
	if err != nil {
		return err
	}
	unreachable := map[string]bool{}
	for _, c := range pairs {
		if unreachable[c.ID] {
			continue
		}
		token, loaded, err := s.prober.AccountJWT(ctx, c.ID, c.AccountKey, s.cluster.ProbeTimeout)
		if errors.Is(err, resolver.ErrNoReply) || errors.Is(err, resolver.ErrNotConnected) {
			unreachable[c.ID] = true
			continue
		}
		if err != nil {
			s.log.Debug("ask nats-server what it holds", "server", c.Name, "account", c.AccountName, "err", err)
			continue
		}
		if !loaded || token == c.JWT {
			if err := s.recordVerified(ctx, c, loaded); err != nil {
				return err
			}
			continue
		}
		// It holds an older JWT than the stored one: behind.
		if err := s.recordStale(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// recordStale records that a server holds an older JWT of an account
// than the stored one; the next sync round brings it up to date.
func (s *Service) recordStale(ctx context.Context, c rotatord.ServerCheck) error {
	s.log.Warn("nats-server holds an old account jwt", "server", c.Name, "server_id", c.ID, "account", c.AccountName)
	err := s.store.WithAccountLock(ctx, c.AccountID, func(ctx context.Context) error {
		now := s.now()
		row := c.AccountServer
		row.Status, row.BehindSince = rotatord.ServerStale, &now
		return s.store.SetServerAccounts(ctx, c.AccountID, []rotatord.AccountServer{row})
	})
	if err != nil {
		return fmt.Errorf("record that nats-server %s is behind on account %s: %w", c.Name, c.AccountName, err)
	}
	s.kickSync()
	return nil
}

// alertBehind raises a server_behind alert for a server behind for longer
// than AlertAfter, at most once per server and AlertWindow across replicas.
func (s *Service) alertBehind(ctx context.Context, checks []rotatord.ServerCheck, now time.Time) error {
	since := *checks[0].BehindSince
	for _, c := range checks {
		if c.BehindSince.Before(since) {
			since = *c.BehindSince
		}
	}
	if now.Sub(since) < s.cluster.AlertAfter {
		return nil
	}
	sv := checks[0].Server
	names := make([]string, 0, len(checks))
	for _, c := range checks {
		names = append(names, c.AccountName)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	list := strings.Join(names, ", ")
	if len(names) > 5 {
		list = strings.Join(names[:5], ", ") + fmt.Sprintf(" and %d more", len(names)-5)
	}
	name := sv.Name
	if name == "" {
		name = sv.ID
	}
	a := &rotatord.Alert{Kind: KindServerBehind, Severity: rotatord.SeverityCritical, Account: checks[0].AccountName,
		Reason: fmt.Sprintf("nats-server %s (%s) has not applied the current JWT of account %s for %s (last heard from %s ago): "+
			"clients whose keys were revoked since may still be connected there",
			name, sv.ID, list, now.Sub(since).Round(time.Second), now.Sub(sv.LastSeen).Round(time.Second))}
	wrote, err := s.store.AddAlertOnce(ctx, a, sv.ID, now, now.Add(s.cluster.AlertWindow))
	if err != nil {
		return fmt.Errorf("alert nats-server %s behind: %w", sv.ID, err)
	}
	if wrote {
		s.log.Warn("nats-server behind", "server", name, "server_id", sv.ID, "accounts", list, "since", since)
		s.kickAlerts()
	}
	return nil
}

// AccountServers returns what every known server holds of an account's
// JWT, for GET /v1/accounts/{name}.
func (s *Service) AccountServers(ctx context.Context, acc *rotatord.Account) ([]rotatord.AccountServer, error) {
	servers, err := s.store.AccountServers(ctx, acc.ID)
	if err != nil {
		return nil, fmt.Errorf("list nats-servers of account %s: %w", acc.Name, err)
	}
	return servers, nil
}
