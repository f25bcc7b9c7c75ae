package rotate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/resolver"
)

// Pushing account JWTs to the servers.
//
// One pusher per account, across every replica: a push holds the account's
// push lock (a PostgreSQL advisory lock on one connection, never the
// account's row lock, so writes to the account go on while a push waits for
// a hung NATS), reads the newest stored version under it and pushes that.
// Versions only grow and every push reads the newest one under the lock, so
// no server is ever sent an older JWT than one it acknowledged. On one
// replica, calls made while a push of the account runs share the next one.
//
// A push of version V is complete when at least one server applied it and
// every server heard from within ClusterConfig.Live holds V or newer
// (servers that do not hold the account load the stored JWT when they need
// it). Only then is V recorded as pushed (accounts.pushed_version) and are
// the rotations whose old key V revokes completed. Servers that did not
// answer are marked missed (later pushes stop waiting for them) and behind;
// the server sync loop (servers.go) brings them up to date when they answer
// again.

// PushOutcome says what pushing an account did.
type PushOutcome struct {
	Version  int64 // the account JWT version pushed (or found pushed)
	Acked    bool  // at least one server applied or acknowledged it
	Complete bool  // every server heard from within the live window holds it
	Updated  int   // servers that applied it ("jwt updated")
	Behind   int   // known servers that do not hold it yet
}

// PushAccount pushes the stored latest JWT of an account to the servers
// unless the servers already hold it, and completes the rotations it
// carries. It waits for a push that is running for this account, then for
// the next one. A push that no server acknowledged stays owed (PushOwed
// retries it); its error is logged here.
func (s *Service) PushAccount(ctx context.Context, accountID int64) (PushOutcome, error) {
	return s.pushAccount(ctx, accountID, false)
}

// pushSoon starts pushing an account (or joins the next push of it)
// without waiting: for changes whose caller does not report the push.
func (s *Service) pushSoon(accountID int64) { s.joinPush(accountID, false) }

// pushAccount is PushAccount; force pushes even when every server heard
// from lately holds the stored version (one behind came back).
func (s *Service) pushAccount(ctx context.Context, accountID int64, force bool) (PushOutcome, error) {
	f := s.joinPush(accountID, force)
	select {
	case <-f.done:
		return f.out, f.err
	case <-ctx.Done():
		// The push goes on without this caller.
		return PushOutcome{}, fmt.Errorf("push account %d: %w", accountID, ctx.Err())
	}
}

// pushGroup runs the pushes of one account on this replica one at a time;
// calls made while one runs share the next.
type pushGroup struct {
	mu      sync.Mutex
	running bool
	next    *pushFlight
}

type pushFlight struct {
	force bool
	done  chan struct{}
	out   PushOutcome
	err   error
}

func (s *Service) joinPush(accountID int64, force bool) *pushFlight {
	v, _ := s.pushGroups.LoadOrStore(accountID, &pushGroup{})
	g := v.(*pushGroup)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.next == nil {
		g.next = &pushFlight{done: make(chan struct{})}
	}
	f := g.next
	f.force = f.force || force
	if !g.running {
		g.running, g.next = true, nil
		go s.runPushes(g, accountID, f)
	}
	return f
}

func (s *Service) runPushes(g *pushGroup, accountID int64, f *pushFlight) {
	for f != nil {
		f.out, f.err = s.pushOnce(accountID, f.force)
		close(f.done)
		g.mu.Lock()
		f, g.next = g.next, nil
		if f == nil {
			g.running = false
		}
		g.mu.Unlock()
	}
}

// pushOnce pushes an account under its push lock, with a budget of its
// own: callers that stop waiting do not cut it short.
func (s *Service) pushOnce(accountID int64, force bool) (PushOutcome, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cluster.PushBudget)
	defer cancel()
	var (
		out  PushOutcome
		name string
		done []*rotatord.Rotation
		took []time.Duration
	)
	err := s.store.WithAccountLock(ctx, accountID, func(ctx context.Context) error {
		for attempt := 0; attempt < 3; attempt++ {
			acc, err := s.store.FindAccount(ctx, accountID)
			if err != nil {
				return err
			}
			name = acc.Name
			servers, err := s.store.AccountServers(ctx, accountID)
			if err != nil {
				return err
			}
			now := s.now()
			if s.pusher == nil || (!force && acc.PushedVersion >= acc.JWTVersion) {
				// Nothing owed (or no NATS: servers load the stored JWT
				// from the resolver); complete what the stored JWT carries.
				out = s.outcome(acc, servers, nil)
				settled := acc.PushedVersion
				if s.pusher == nil {
					settled = acc.JWTVersion
				}
				d, t, err := s.settle(ctx, acc, settled, now)
				done, took = append(done, d...), append(took, t...)
				return err
			}
			expect := make([]string, 0, len(servers))
			for i := range servers {
				if servers[i].Answering(now, s.cluster.Live) {
					expect = append(expect, servers[i].ID)
				}
			}
			res, perr := s.pusher.Push(ctx, acc.PublicKey, acc.JWT, expect)
			if perr != nil && !res.Acked() {
				out = s.outcome(acc, servers, nil)
				return perr
			}
			var d []*rotatord.Rotation
			var t []time.Duration
			if out, d, t, err = s.recordPush(ctx, acc, servers, expect, res, now); err != nil {
				return err
			}
			done, took = append(done, d...), append(took, t...)
			// A version stored while this one was on its way is pushed too.
			if v, err := s.store.AccountVersion(ctx, accountID); err != nil || v <= acc.JWTVersion {
				return err
			}
			force = false
		}
		return nil
	})
	s.countSettled(done, took)
	if err != nil {
		switch {
		case errors.Is(err, resolver.ErrNotConnected):
			s.log.Info("account push owed: nats not connected", "account", name)
		case errors.Is(err, resolver.ErrNoAck):
			s.log.Warn("account push not acknowledged by any nats-server; will retry", "account", name)
		default:
			s.log.Warn("account push failed; will retry", "account", name, "err", err)
		}
		return out, fmt.Errorf("push account %s: %w", name, err)
	}
	if out.Behind > 0 {
		s.kickSync()
	}
	return out, nil
}

// recordPush stores what the servers answered to a push of acc's JWT and,
// when the push is complete, settles it. servers are the known servers as
// read before the push, expect those it waited for.
func (s *Service) recordPush(ctx context.Context, acc *rotatord.Account, servers []rotatord.AccountServer, expect []string,
	res resolver.PushResult, now time.Time) (out PushOutcome, done []*rotatord.Rotation, took []time.Duration, err error) {
	v := acc.JWTVersion
	known := make(map[string]rotatord.AccountServer, len(servers))
	for _, sv := range servers {
		known[sv.ID] = sv
	}
	after := make(map[string]rotatord.AccountServer, len(servers)+len(res.Replies))
	for id, sv := range known {
		after[id] = sv
	}
	var touched []rotatord.Server
	var rows []rotatord.AccountServer
	acked := 0
	for _, r := range res.Replies {
		touched = append(touched, r.Server)
		prev, ok := known[r.Server.ID]
		if !ok {
			prev = rotatord.AccountServer{Server: r.Server, AccountID: acc.ID}
		}
		prev.Server.Name, prev.Server.Cluster, prev.LastSeen, prev.MissedAt = r.Server.Name, r.Server.Cluster, now, nil
		row := prev
		switch r.Status {
		case rotatord.ServerUpdated, rotatord.ServerSkipped:
			acked++
			at := now
			row.Version, row.Status, row.AckedAt, row.BehindSince = max(prev.Version, v), r.Status, &at, nil
		default:
			row.Status = rotatord.ServerFailed
			if row.BehindSince == nil {
				row.BehindSince = &now
			}
			s.log.Warn("nats-server refused the account jwt", "account", acc.Name, "server", r.Server.Name, "server_id", r.Server.ID, "reason", r.Error)
		}
		rows = append(rows, row)
		after[r.Server.ID] = row
	}
	replied := make(map[string]bool, len(res.Replies))
	for _, r := range res.Replies {
		replied[r.Server.ID] = true
	}
	var missed []string
	for _, id := range expect {
		if !replied[id] {
			missed = append(missed, id)
		}
	}
	for _, sv := range servers {
		if replied[sv.ID] || sv.Holds(v) {
			continue
		}
		row := sv
		row.Status = rotatord.ServerMissed
		if row.BehindSince == nil {
			row.BehindSince = &now
		}
		rows = append(rows, row)
		after[sv.ID] = row
	}
	err = s.store.InTx(ctx, func(ctx context.Context) error {
		if err := s.store.TouchServers(ctx, touched, now); err != nil {
			return err
		}
		if acked > 0 && len(missed) > 0 {
			if err := s.store.MarkServersMissed(ctx, missed, now); err != nil {
				return err
			}
		}
		if err := s.store.SetServerAccounts(ctx, acc.ID, rows); err != nil {
			return err
		}
		complete := acked > 0
		for id, sv := range known {
			if sv.Live(now, s.cluster.Live) && !after[id].Holds(v) {
				complete = false
			}
		}
		if !complete {
			return nil
		}
		var err error
		done, took, err = s.settle(ctx, acc, v, now)
		return err
	})
	if err != nil {
		return PushOutcome{}, nil, nil, err
	}
	list := make([]rotatord.AccountServer, 0, len(after))
	for _, sv := range after {
		list = append(list, sv)
	}
	out = s.outcome(acc, list, &res)
	if len(missed) > 0 {
		s.log.Warn("nats-servers did not answer the account push", "account", acc.Name, "version", v, "servers", len(missed))
	}
	return out, done, took, nil
}

// lateReply records a server's reply that came after its push gave up
// waiting, as the push would have: a server busy re-checking the users of
// a big account (each push makes it verify every connected user again)
// answers after the push timeout, and sending the same JWT again would
// only double that work. A reply for a JWT that is no longer the stored
// one is left to the push of the newer one.
func (s *Service) lateReply(accountPub, accountJWT string, r resolver.ServerReply) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cluster.PushBudget)
	defer cancel()
	acc, err := s.store.FindAccountByPublicKey(ctx, accountPub)
	if err != nil {
		s.log.Warn("record a late push reply", "account", accountPub, "server", r.Server.Name, "err", err)
		return
	}
	var (
		done []*rotatord.Rotation
		took []time.Duration
	)
	err = s.store.WithAccountLock(ctx, acc.ID, func(ctx context.Context) error {
		acc, err := s.store.FindAccount(ctx, acc.ID)
		if err != nil || acc.JWT != accountJWT {
			return err
		}
		servers, err := s.store.AccountServers(ctx, acc.ID)
		if err != nil {
			return err
		}
		res := resolver.PushResult{Replies: []resolver.ServerReply{r}}
		switch r.Status {
		case rotatord.ServerFailed:
			res.Failed = 1
		case rotatord.ServerSkipped:
			res.Skipped = 1
		default:
			res.Updated = 1
		}
		_, done, took, err = s.recordPush(ctx, acc, servers, nil, res, s.now())
		return err
	})
	if err != nil {
		s.log.Warn("record a late push reply", "account", acc.Name, "server", r.Server.Name, "err", err)
		return
	}
	s.countSettled(done, took)
}

// countSettled counts the rotations a push completed and how long the
// revocations it landed took.
func (s *Service) countSettled(done []*rotatord.Rotation, took []time.Duration) {
	for _, r := range done {
		s.metrics.finished(rotatord.RotationCompleted, r.FinishedAt.Sub(r.CreatedAt))
	}
	for _, d := range took {
		s.propagation.propagation.Observe(d.Seconds())
	}
}

// settle records that version of acc's JWT is pushed, completes the
// rotations whose old key it revokes, and pops the operator revocations
// that have landed on every known server. It returns the rotations
// completed and how long each landed revocation took.
func (s *Service) settle(ctx context.Context, acc *rotatord.Account, version int64, now time.Time) ([]*rotatord.Rotation, []time.Duration, error) {
	var (
		done   []*rotatord.Rotation
		took   []time.Duration
		events []*rotatord.AuditEvent
	)
	err := s.store.InTx(ctx, func(ctx context.Context) error {
		if s.pusher != nil && version > acc.PushedVersion {
			if err := s.store.MarkPushed(ctx, acc.ID, version); err != nil {
				return err
			}
		}
		var err error
		if done, err = s.store.CompleteRotations(ctx, acc.ID, version, now); err != nil {
			return err
		}
		events = make([]*rotatord.AuditEvent, 0, len(done))
		for _, r := range done {
			events = append(events, &rotatord.AuditEvent{Actor: string(SystemActor), Action: "rotation.complete",
				Account: r.Account, Agent: r.Agent, PublicKey: r.NewKey, Rotation: r.ID,
				Details: map[string]any{"old_key": r.OldKey, "account_jwt_version": r.ResignVersion, "pushed_version": version}})
		}
		if err := s.store.AuditBatch(ctx, events); err != nil {
			return err
		}
		if s.pusher == nil {
			return nil
		}
		requested, err := s.store.PopRevocationWaits(ctx, acc.ID)
		for _, t := range requested {
			took = append(took, now.Sub(t))
		}
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("settle push of account %s version %d: %w", acc.Name, version, err)
	}
	s.logChanges(events)
	return done, took, nil
}

// outcome describes the servers' state for acc after a push (res, when
// one was made).
func (s *Service) outcome(acc *rotatord.Account, servers []rotatord.AccountServer, res *resolver.PushResult) PushOutcome {
	out := PushOutcome{Version: acc.JWTVersion}
	for i := range servers {
		// Servers that never answered for the account are not known to be
		// behind: the sync loop asks them.
		if servers[i].Status != "" && !servers[i].Holds(acc.JWTVersion) {
			out.Behind++
		}
	}
	if res != nil {
		out.Acked = res.Updated+res.Skipped > 0
		out.Updated = res.Updated
	} else {
		out.Acked = acc.PushedVersion >= acc.JWTVersion
	}
	out.Complete = out.Acked && acc.PushedVersion >= acc.JWTVersion
	return out
}

// PushOwed pushes every account whose newest JWT is not held by every
// server heard from lately. It returns how many are still owed.
func (s *Service) PushOwed(ctx context.Context) (int, error) {
	if s.pusher == nil {
		return 0, nil
	}
	ids, err := s.store.ListPushOwed(ctx)
	if err != nil {
		return 0, fmt.Errorf("list owed pushes: %w", err)
	}
	owed := 0
	for _, id := range ids {
		out, err := s.PushAccount(ctx, id)
		if err != nil || !out.Complete {
			owed++
		}
		if errors.Is(err, resolver.ErrNotConnected) || ctx.Err() != nil {
			return len(ids), nil
		}
	}
	return owed, nil
}

// RunPushRetry retries owed pushes every interval, and at once whenever
// kick receives, until ctx ends.
func (s *Service) RunPushRetry(ctx context.Context, interval time.Duration, kick <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
		if _, err := s.PushOwed(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("retry owed pushes", "err", err)
		}
	}
}

// stampResigned records, for the account's confirmed rotations waiting
// for a re-sign, that acc's stored JWT (its current version) is the first
// to refuse their old keys: it revokes them, or their JWTs have expired.
// The push of that version completes them. Call it with the account
// locked, after storing the JWT.
func (s *Service) stampResigned(ctx context.Context, acc *rotatord.Account) error {
	waiting, err := s.store.RotationsAwaitingResign(ctx, acc.ID)
	if err != nil || len(waiting) == 0 {
		return err
	}
	ac, err := jwt.DecodeAccountClaims(acc.JWT)
	if err != nil {
		return fmt.Errorf("decode account jwt of %s: %w", acc.Name, err)
	}
	now := s.now()
	ids := make([]string, 0, len(waiting))
	for _, w := range waiting {
		if w.PublicKey == "" || !w.ExpiresAt.After(now) || ac.Revocations.IsRevoked(w.PublicKey, w.IssuedAt) {
			ids = append(ids, w.Rotation)
		}
	}
	return s.store.SetResignVersion(ctx, ids, acc.JWTVersion)
}
