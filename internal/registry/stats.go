package registry

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"
)

// ExpiringWithin is the window of Stats.CredentialsExpiring.
const ExpiringWithin = time.Hour

// Stats are counts for the metrics, read by a background reader (never per
// scrape): agents by state, rotations in flight by state, the accounts with
// their JWTs' total size and revocation entries, the largest accounts one by
// one, and the credentials about to expire.
type Stats struct {
	Agents          map[string]int64
	RotationsActive map[string]int64
	// Accounts counts every account; JWTBytes and Revocations are the sums
	// over all of them.
	Accounts    int64
	JWTBytes    int64
	Revocations int64
	// Largest are the accounts with the largest JWTs, largest first, at
	// most the top asked for.
	Largest []AccountStats
	// CredentialsExpiring counts the active credentials of active agents
	// whose JWT expires within ExpiringWithin of the time asked for, or has
	// expired already (an agent that will be, or is, cut off unless it
	// rotates or is reissued).
	CredentialsExpiring int64
}

// AccountStats is one account's JWT size and revocation entries.
type AccountStats struct {
	Name        string
	JWTBytes    int64
	Revocations int64
}

// Stats reads the counts in one round trip, with at most top accounts one by
// one and now as the time credentials are judged at. Each part is a small
// grouped table (agents, accounts), an index (rotations in flight, active
// credentials by expiry) or a count (revocations); the JWT sizes come from
// the row headers, not the JWTs.
func (s *Store) Stats(ctx context.Context, now time.Time, top int) (*Stats, error) {
	rows, err := s.q(ctx).Query(ctx, `
		SELECT 'agents', state, count(*), 0::bigint FROM agents GROUP BY state
		UNION ALL
		SELECT 'rotations', state, count(*), 0 FROM rotations
			WHERE state IN ('issued', 'distributed', 'confirmed') GROUP BY state
		UNION ALL
		SELECT 'accounts', '', count(*), coalesce(sum(octet_length(jwt)), 0)::bigint FROM accounts
		UNION ALL
		SELECT 'revocations', '', count(*), 0 FROM revocations
		UNION ALL
		SELECT 'expiring', '', count(*), 0 FROM credentials c JOIN agents g ON g.id = c.agent_id
			WHERE c.state = 'active' AND g.state = 'active' AND c.expires_at < $2
		UNION ALL
		(SELECT 'largest', a.name, octet_length(a.jwt)::bigint,
				(SELECT count(*) FROM revocations r WHERE r.account_id = a.id)
			FROM accounts a ORDER BY octet_length(a.jwt) DESC, a.name LIMIT $1)`,
		top, dbTime(now.Add(ExpiringWithin)))
	if err != nil {
		return nil, mapErr(fmt.Errorf("read stats: %w", err))
	}
	defer rows.Close()
	st := &Stats{Agents: map[string]int64{}, RotationsActive: map[string]int64{}}
	for rows.Next() {
		var (
			part, key string
			n, m      int64
		)
		if err := rows.Scan(&part, &key, &n, &m); err != nil {
			return nil, mapErr(fmt.Errorf("read stats: %w", err))
		}
		switch part {
		case "agents":
			st.Agents[key] = n
		case "rotations":
			st.RotationsActive[key] = n
		case "accounts":
			st.Accounts, st.JWTBytes = n, m
		case "revocations":
			st.Revocations = n
		case "expiring":
			st.CredentialsExpiring = n
		case "largest":
			st.Largest = append(st.Largest, AccountStats{Name: key, JWTBytes: n, Revocations: m})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(fmt.Errorf("read stats: %w", err))
	}
	// A UNION ALL does not promise to keep the subquery's order.
	slices.SortFunc(st.Largest, func(a, b AccountStats) int {
		if c := cmp.Compare(b.JWTBytes, a.JWTBytes); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return st, nil
}
