package rotate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rotatord/rotatord/internal/resolver"
)

// PushAccount pushes the stored latest JWT of an account to the servers, if
// no server acknowledged it yet. It holds the account's row lock while it
// pushes, like every write of that JWT, so across all replicas the servers
// see an account's JWTs in the order they were stored. A push that no server
// acknowledged stays owed (PushOwed retries it); its error is logged here.
func (s *Service) PushAccount(ctx context.Context, accountID int64) (resolver.PushResult, error) {
	var res resolver.PushResult
	if s.pusher == nil {
		return res, nil
	}
	var name string
	err := s.store.InTx(ctx, func(ctx context.Context) error {
		acc, err := s.store.LockAccount(ctx, accountID)
		if err != nil {
			return err
		}
		name = acc.Name
		if acc.PushedVersion >= acc.JWTVersion {
			return nil
		}
		res, err = s.pusher.Push(ctx, acc.PublicKey, acc.JWT)
		if err != nil {
			return err
		}
		return s.store.MarkPushed(ctx, acc.ID, acc.JWTVersion)
	})
	if err != nil {
		if errors.Is(err, resolver.ErrNotConnected) {
			s.log.Info("account push owed: nats not connected", "account", name)
		} else {
			s.log.Warn("account push failed; will retry", "account", name, "err", err)
		}
		return res, fmt.Errorf("push account %s: %w", name, err)
	}
	return res, nil
}

// PushOwed pushes every account whose newest JWT no server acknowledged.
// It returns how many are still owed.
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
		if _, err := s.PushAccount(ctx, id); err != nil {
			owed++
			if errors.Is(err, resolver.ErrNotConnected) || ctx.Err() != nil {
				return len(ids), nil
			}
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
