package rotate

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord"
)

// compactionMargin keeps the '*' entry clear of credentials being issued
// right now by another replica (not committed yet, so not seen as valid),
// whose clock may be somewhat behind this one's. Entries are also pruned,
// and credentials stop holding folding back, only this long after their
// JWT's expiry: a server whose clock is behind still accepts the JWT until
// its own clock gets there.
const compactionMargin = 30 * time.Second

// ResignQueued re-signs every account whose revocations changed, each once
// however many revocations queued it, and pushes the result. It returns how
// many accounts it re-signed.
func (s *Service) ResignQueued(ctx context.Context) (int, error) {
	n := 0
	for ctx.Err() == nil {
		var (
			acc       *rotatord.Account
			unchanged bool
		)
		err := s.store.InTx(ctx, func(ctx context.Context) error {
			id, err := s.store.ClaimResign(ctx)
			if err != nil || id == 0 {
				return err
			}
			if acc, err = s.store.LockAccount(ctx, id); err != nil {
				return err
			}
			if err := s.pruneRevocations(ctx, acc); err != nil {
				return err
			}
			revs, err := s.store.Revocations(ctx, acc.ID)
			if err != nil {
				return err
			}
			if jwtHasRevocations(acc.JWT, revs) && len(acc.JWT) <= s.maxJWT {
				unchanged = true // a sweep found nothing to fold: keep the JWT
				// Rotations queued it too: the stored JWT may carry their
				// old keys' revocations already.
				if err := s.stampResigned(ctx, acc); err != nil {
					return err
				}
				return s.watchSize(ctx, acc, revs)
			}
			return s.resignRevoking(ctx, acc)
		})
		if err != nil {
			return n, fmt.Errorf("re-sign queued account: %w", err)
		}
		if acc == nil {
			return n, nil // the queue is empty, or other replicas hold the rest
		}
		if !unchanged {
			n++
			s.metrics.resigns.Inc()
			s.changed(ctx, acc.PublicKey)
		}
		// The push completes the rotations whose old keys it revokes.
		s.PushAccount(ctx, acc.ID) //nolint:errcheck // logged; the push stays owed
	}
	return n, ctx.Err()
}

// pruneRevocations keeps an account JWT small: entries whose revoked JWT
// has expired go, and entries whose revoked JWT was issued before every
// credential still valid in the account fold into one '*' entry, which
// revokes nothing in use. Every entry records the iat of the JWT it
// revokes (or, when that is unknown, its own revocation time), so every
// kind of entry folds: rotations, rollbacks, operator revocations, deletes
// and imports.
func (s *Service) pruneRevocations(ctx context.Context, acc *rotatord.Account) error {
	now := s.now()
	if _, err := s.store.DeleteRevocationsExpiredBefore(ctx, acc.ID, now.Add(-compactionMargin)); err != nil {
		return err
	}
	if acc.KeepRevocations {
		return nil
	}
	cutoff := now.Add(-compactionMargin)
	if oldest, ok, err := s.store.OldestValidIssuedAt(ctx, acc.ID, now.Add(-compactionMargin)); err != nil {
		return err
	} else if ok && oldest.Before(cutoff) {
		cutoff = oldest
	}
	// nats-server refuses JWTs with iat <= t, at one-second granularity.
	t := cutoff.Truncate(time.Second).Add(-time.Second)
	// The '*' entry must outlive every JWT it replaces; no user JWT rotatord
	// issues lives longer than this.
	expires := now.Add(maxCredentialLifetime)
	_, err := s.store.CompactRevocations(ctx, acc.ID, t, expires)
	return err
}

// maxCredentialLifetime bounds any user JWT: the longest schedule interval
// rotatord accepts is far below it.
const maxCredentialLifetime = 400 * 24 * time.Hour

// RunResigner re-signs queued accounts whenever a revocation is recorded on
// this replica, and every interval for those queued by other replicas,
// until ctx ends. Re-signs are at least the resign interval apart (5s by
// default): every push of an account JWT makes each nats-server re-verify
// every connected user of the account (10,000 users cost about half a core
// second), so a burst of rotations must cost one push every few seconds,
// not one per rotation. A replaced key is revoked within that interval. Operator revocations
// (RevokeAgent) do not wait for this: they re-sign and push at once.
func (s *Service) RunResigner(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.resignKick:
		}
		s.mu.Lock()
		wait := max(s.resignDelay, s.lastResign.Add(s.resignEvery).Sub(s.now()))
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if _, err := s.resignIfDue(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("re-sign accounts", "err", err)
		}
	}
}

// resignIfDue runs ResignQueued unless this replica re-signed less than
// the resign interval ago.
func (s *Service) resignIfDue(ctx context.Context) (int, error) {
	if !s.due(&s.lastResign, s.resignEvery, s.now()) {
		return 0, nil
	}
	return s.ResignQueued(ctx)
}

// jwtHasRevocations reports whether an account JWT already carries exactly
// the given revocation entries.
func jwtHasRevocations(token string, revs []rotatord.Revocation) bool {
	ac, err := jwt.DecodeAccountClaims(token)
	if err != nil || len(ac.Revocations) != len(revs) {
		return false
	}
	for _, r := range revs {
		if t, ok := ac.Revocations[r.PublicKey]; !ok || t != r.RevokedAt.Unix() {
			return false
		}
	}
	return true
}

// sweepEvery is how often Tick looks for accounts whose revocations can be
// pruned or folded although no new revocation queued them.
const sweepEvery = time.Minute

// sweepRevocations queues the accounts that have entries to prune or fold.
func (s *Service) sweepRevocations(ctx context.Context, now time.Time) error {
	if !s.due(&s.lastSweep, sweepEvery, now) {
		return nil
	}
	if err := s.store.QueueCompactable(ctx, now.Add(-compactionMargin), now.Add(-compactionMargin)); err != nil {
		return err
	}
	// Accounts past half the guard are looked at again each time, so that
	// the agents holding folding back keep being rotated (guard.go).
	return s.store.QueueLargeAccounts(ctx, s.maxJWT/2)
}
