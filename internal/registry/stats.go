package registry

import (
	"context"
	"fmt"
)

// Stats are counts for the metrics: agents by state, rotations in flight
// by state, and per account (by name) the current JWT's size in bytes and
// its number of revocation entries.
type Stats struct {
	Agents          map[string]int64
	RotationsActive map[string]int64
	JWTBytes        map[string]int64
	Revocations     map[string]int64
}

// Stats reads the counts in one round trip. Each part uses an index or a
// table that grows with the fleet only (agents, accounts, revocations).
func (s *Store) Stats(ctx context.Context) (*Stats, error) {
	rows, err := s.q(ctx).Query(ctx, `
		SELECT 'agents', state, count(*) FROM agents GROUP BY state
		UNION ALL
		SELECT 'rotations', state, count(*) FROM rotations
			WHERE state IN ('issued', 'distributed', 'confirmed') GROUP BY state
		UNION ALL
		SELECT 'jwt_bytes', name, octet_length(jwt) FROM accounts
		UNION ALL
		SELECT 'revocations', a.name, count(r.public_key) FROM accounts a
			LEFT JOIN revocations r ON r.account_id = a.id GROUP BY a.name`)
	if err != nil {
		return nil, mapErr(fmt.Errorf("read stats: %w", err))
	}
	defer rows.Close()
	st := &Stats{Agents: map[string]int64{}, RotationsActive: map[string]int64{},
		JWTBytes: map[string]int64{}, Revocations: map[string]int64{}}
	for rows.Next() {
		var (
			part, key string
			n         int64
		)
		if err := rows.Scan(&part, &key, &n); err != nil {
			return nil, mapErr(fmt.Errorf("read stats: %w", err))
		}
		switch part {
		case "agents":
			st.Agents[key] = n
		case "rotations":
			st.RotationsActive[key] = n
		case "jwt_bytes":
			st.JWTBytes[key] = n
		case "revocations":
			st.Revocations[key] = n
		}
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(fmt.Errorf("read stats: %w", err))
	}
	return st, nil
}
