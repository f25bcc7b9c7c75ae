package migrations_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"github.com/pressly/goose/v3"

	"github.com/rotatord/rotatord/internal/pgtest"
	"github.com/rotatord/rotatord/migrations"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// migratedTo returns a database migrated up to just before the migration
// whose file name ends in suffix, and a provider to migrate it further.
func migratedBefore(t *testing.T, suffix string) (*sql.DB, *goose.Provider, int64) {
	t.Helper()
	db, err := sql.Open("pgx", pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	var v int64
	for _, src := range p.ListSources() {
		if strings.HasSuffix(src.Path, suffix) {
			v = src.Version
		}
	}
	if v == 0 {
		t.Fatalf("no migration *%s", suffix)
	}
	if _, err := p.DownTo(context.Background(), v-1); err != nil {
		t.Fatal(err)
	}
	return db, p, v
}

// Revocation entries written before every entry recorded its JWT's iat get
// one: the credential's iat where rotatord still has the credential and
// issued its only JWT, else the entry's own time (never anything that could
// fold it before the entry itself would let the JWT in).
func TestRevocationIssuedAtBackfill(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, p, v := migratedBefore(t, "_revocation_issued_at.sql")
	t0 := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`INSERT INTO accounts (id, name, public_key, jwt, jwt_id) VALUES (1, 'fleet', 'AFLEET', 'jwt', 'id'), (2, 'other', 'AOTHER', 'jwt', 'id')`)
	exec(`INSERT INTO agents (id, account_id, name, permissions, schedule, grace_seconds, delivery) VALUES
		(1, 1, 'revoked', '{}', '@every 24h', 1800, 'poll'), (2, 2, 'elsewhere', '{}', '@every 24h', 1800, 'poll')`)
	exec(`INSERT INTO credentials (agent_id, public_key, jwt, jwt_id, issued_at, expires_at, state) VALUES
		(1, 'UKNOWN', 'jwt', 'id', $1, $2, 'revoked'),
		(1, 'UIMPORTED', 'jwt', 'id', $1, $2, 'revoked'),
		(2, 'UOTHERACCOUNT', 'jwt', 'id', $1, $2, 'active')`, t0, t0.Add(25*time.Hour))
	revoked := t0.Add(5 * time.Hour)
	exec(`INSERT INTO revocations (account_id, public_key, revoked_at, expires_at, agent_name, reason, jwt_issued_at) VALUES
		(1, 'UKNOWN', $1, $2, 'revoked', 'operator', NULL),
		(1, 'UIMPORTED', $1, $2, 'revoked', 'imported', NULL),
		(1, 'UGONE', $1, $2, 'deleted', 'agent deleted', NULL),
		(1, 'UOTHERACCOUNT', $1, $2, NULL, 'operator', NULL),
		(1, 'UROTATED', $1, $2, 'revoked', 'rotated', $3),
		(1, '*', $1, $2, NULL, 'compacted', NULL)`, revoked, t0.Add(25*time.Hour), t0.Add(-time.Hour))

	if _, err := p.UpTo(ctx, v); err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Time{
		"UKNOWN":        t0,                 // the credential's iat
		"UIMPORTED":     revoked,            // imported: the key may have JWTs rotatord never saw
		"UGONE":         revoked,            // credential gone with its agent
		"UOTHERACCOUNT": revoked,            // a key of another account is not this entry's credential
		"UROTATED":      t0.Add(-time.Hour), // already known: unchanged
		"*":             revoked,            // the fold entry itself
	}
	rows, err := db.QueryContext(ctx, `SELECT public_key, jwt_issued_at FROM revocations`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var key string
		var at time.Time
		if err := rows.Scan(&key, &at); err != nil {
			t.Fatal(err)
		}
		if !at.Equal(want[key]) {
			t.Errorf("%s: jwt_issued_at = %s, want %s", key, at, want[key])
		}
		n++
	}
	if n != len(want) {
		t.Fatalf("%d rows, want %d", n, len(want))
	}
	// From now on every entry must say.
	if _, err := db.ExecContext(ctx, `INSERT INTO revocations (account_id, public_key, revoked_at, expires_at) VALUES (1, 'UNEW', now(), now())`); err == nil {
		t.Fatal("an entry without jwt_issued_at was accepted")
	}
	// And the migration goes down and up again.
	if _, err := p.DownTo(ctx, v-1); err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, v); err != nil {
		t.Fatal(err)
	}
}
