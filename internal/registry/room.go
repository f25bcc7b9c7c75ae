package registry

import (
	"context"
	"fmt"
	"time"
)

// The queries behind the account JWT size guard (internal/rotate/guard.go):
// finding large accounts, rotating early the agents whose credentials keep
// revocation entries from folding, and counting what a rotation in an
// account that keeps its entries would add.

// QueueLargeAccounts queues for a re-sign every account whose stored JWT is
// larger than bytes, so that the re-signer makes room in it.
func (s *Store) QueueLargeAccounts(ctx context.Context, bytes int) error {
	_, err := s.q(ctx).Exec(ctx, `INSERT INTO account_resign (account_id)
		SELECT id FROM accounts WHERE octet_length(jwt) > $1`, bytes)
	if err != nil {
		return mapErr(fmt.Errorf("queue large accounts: %w", err))
	}
	return nil
}

// HastenRotations finds the active agents of the account that hold a
// credential in use (pending or active, not expired before now) issued at
// or before issuedBy, and makes them due for rotation at now unless they
// are due already. Agents whose last rotation failed keep their backoff
// unless failing is set. Rows another transaction holds are skipped, never
// waited for: the caller may hold the account's row lock, and a skipped
// agent is busy (rotating, being revoked) or is caught by the next call.
// It returns how many agents hold such a credential and how many it made
// due.
func (s *Store) HastenRotations(ctx context.Context, accountID int64, issuedBy, now time.Time, failing bool) (holders, moved int64, err error) {
	err = s.q(ctx).QueryRow(ctx, `
		WITH holders AS (
			SELECT g.id FROM agents g
			WHERE g.account_id = $1 AND g.state = 'active'
			  AND EXISTS (SELECT 1 FROM credentials c WHERE c.agent_id = g.id AND c.state IN ('pending', 'active')
			              AND c.issued_at <= $2 AND c.expires_at >= $3)),
		due AS (
			SELECT g.id FROM agents g JOIN holders h ON h.id = g.id
			WHERE (g.next_rotation_at IS NULL OR g.next_rotation_at > $3) AND ($4 OR g.failures = 0)
			ORDER BY g.id FOR NO KEY UPDATE OF g SKIP LOCKED),
		moved AS (
			UPDATE agents g SET next_rotation_at = $3, updated_at = now() FROM due WHERE g.id = due.id RETURNING 1)
		SELECT (SELECT count(*) FROM holders), (SELECT count(*) FROM moved)`,
		accountID, dbTime(issuedBy), dbTime(now), failing).Scan(&holders, &moved)
	if err != nil {
		return 0, 0, mapErr(fmt.Errorf("hasten rotations in account %d: %w", accountID, err))
	}
	return holders, moved, nil
}

// RevocationRoom reports whether the account keeps its revocation entries
// (keep_revocations) and, when it does, how many entries it has and how
// many rotations of its agents are in flight (each adds one entry when it
// ends, completed or rolled back). Counts are zero for other accounts.
func (s *Store) RevocationRoom(ctx context.Context, accountID int64) (keep bool, entries, inFlight int, err error) {
	err = s.q(ctx).QueryRow(ctx, `SELECT a.keep_revocations,
			CASE WHEN a.keep_revocations THEN (SELECT count(*) FROM revocations r WHERE r.account_id = a.id) ELSE 0 END,
			CASE WHEN a.keep_revocations THEN (SELECT count(*) FROM rotations r JOIN agents g ON g.id = r.agent_id
				WHERE g.account_id = a.id AND r.state IN ('issued', 'distributed', 'confirmed')) ELSE 0 END
		FROM accounts a WHERE a.id = $1`, accountID).Scan(&keep, &entries, &inFlight)
	if err != nil {
		return false, 0, 0, mapErr(fmt.Errorf("revocation room of account %d: %w", accountID, err))
	}
	return keep, entries, inFlight, nil
}
