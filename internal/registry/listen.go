package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// ListenAccounts calls changed with the public key of every account whose
// JWT changes, on any replica, until ctx ends. Notifications can be missed
// while the connection is down, so resync is called each time listening
// (re)starts; it should reload everything. Errors are logged and retried.
func (s *Store) ListenAccounts(ctx context.Context, log *slog.Logger, resync func(context.Context) error, changed func(pub string)) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, resync, changed)
		if ctx.Err() != nil {
			return
		}
		log.Warn("account change listener stopped; retrying", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (s *Store) listenOnce(ctx context.Context, resync func(context.Context) error, changed func(pub string)) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire listen connection: %w", err)
	}
	// The connection carries a LISTEN; take it out of the pool for good.
	pc := conn.Hijack()
	defer pc.Close(context.WithoutCancel(ctx))
	if _, err := pc.Exec(ctx, "LISTEN "+AccountsChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if err := resync(ctx); err != nil {
		return fmt.Errorf("resync after listen: %w", err)
	}
	for {
		n, err := pc.WaitForNotification(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return err
			}
			return fmt.Errorf("wait for notification: %w", err)
		}
		changed(n.Payload)
	}
}
