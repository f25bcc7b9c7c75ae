package rotate_test

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkRotateMasterKey re-seals a database holding 10,000 pending user
// seeds (a fleet of poll agents all in the middle of a rotation, the most
// there can be) plus the operator's and accounts' keys, in one transaction,
// flipping between two master keys. Run:
//
//	go test -run '^$' -bench RotateMasterKey -benchtime 5x ./internal/rotate/
func BenchmarkRotateMasterKey(b *testing.B) {
	const seeds = 10_000
	f := newMasterKeyFixture(b)
	ctx := context.Background()
	old := mustSealer(b, f.old)
	owners := make([]string, seeds)
	sealed := make([][]byte, seeds)
	for i := range owners {
		owners[i] = fmt.Sprintf("UBENCH%050d", i)
		sealed[i] = old.Seal([]byte(fmt.Sprintf("SUBENCHSEED%045d", i)), []byte(owners[i]))
	}
	_, err := f.store.Pool().Exec(ctx, `
		WITH g AS (
			INSERT INTO agents (account_id, name, permissions, schedule, grace_seconds, delivery)
			SELECT a.id, 'bench-' || n, '{}', '@every 24h', 1800, 'poll'
			FROM accounts a, generate_series(1, $3::int) n WHERE a.name = 'fleet'
			RETURNING id, name)
		INSERT INTO credentials (agent_id, public_key, jwt, jwt_id, issued_at, expires_at, state, seed_enc)
		SELECT g.id, u.owner, 'jwt', 'jti', now(), now() + interval '1 day', 'pending', u.sealed
		FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS u(owner, sealed, n)
		JOIN g ON g.name = 'bench-' || u.n`, owners, sealed, seeds)
	if err != nil {
		b.Fatal(err)
	}
	keys := [][]byte{newKey(b), f.old}
	b.ResetTimer()
	for i := range b.N {
		next, prev := keys[i%2], keys[(i+1)%2]
		svc := f.service(b, next, prev)
		res, err := svc.RotateMasterKey(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		if res.Resealed["pending user seed"] != seeds+1 {
			b.Fatalf("re-sealed %v", res.Resealed)
		}
	}
	b.ReportMetric(float64(seeds+5)*float64(b.N)/b.Elapsed().Seconds(), "values/s")
}
