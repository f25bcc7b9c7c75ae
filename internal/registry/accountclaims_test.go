package registry_test

import (
	"context"
	"database/sql"
	"reflect"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver for goose
	"github.com/pressly/goose/v3"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/pgtest"
	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/migrations"
)

// The account model migration gives existing accounts their new limits
// (nsc's defaults for accounts rotatord made, what the JWT said for
// imported ones) and leaves the claims of imported accounts in their base
// claims, where the service reads them.
func TestMigrationAccountModel(t *testing.T) {
	ctx := context.Background()
	url := pgtest.New(t)
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	var mine, before int64
	for _, s := range p.ListSources() {
		if strings.HasSuffix(s.Path, "_account_model.sql") {
			mine = s.Version
			break
		}
		before = s.Version
	}
	if mine == 0 {
		t.Fatal("no account model migration")
	}
	if _, err := p.DownTo(ctx, before); err != nil {
		t.Fatalf("migrate down to %d: %v", before, err)
	}
	for _, q := range []string{
		`INSERT INTO accounts (name, public_key, limits, jwt, jwt_id) VALUES ('made', 'AMADE', '{"conn": 5, "subs": -1, "payload": -1, "data": -1}', 'j', 'i')`,
		`INSERT INTO accounts (name, public_key, limits, jwt, jwt_id, base_claims) VALUES ('imported', 'AIMPORTED',
			'{"conn": -1, "subs": -1, "payload": -1, "data": -1}', 'j', 'i',
			'{"limits": {"conn": -1, "imports": 3, "wildcards": true}, "exports": [{"subject": "a.>", "type": "stream"}]}')`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("migrate up: %v", err)
	}
	s, err := registry.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	made, err := s.FindAccountByName(ctx, "made")
	if err != nil {
		t.Fatal(err)
	}
	want := rotatord.NoLimits
	want.Conn = 5
	if made.Limits != want || made.Claims == nil || !reflect.DeepEqual(*made.Claims, rotatord.AccountClaims{}) {
		t.Errorf("made: limits %+v, claims %+v; want %+v and empty claims", made.Limits, made.Claims, want)
	}
	imported, err := s.FindAccountByName(ctx, "imported")
	if err != nil {
		t.Fatal(err)
	}
	want = rotatord.Limits{Conn: -1, Subs: -1, Payload: -1, Data: -1, Imports: 3, Wildcards: true}
	if imported.Limits != want || imported.Claims != nil {
		t.Errorf("imported: limits %+v, claims %+v; want %+v and none (they are in base_claims)", imported.Limits, imported.Claims, want)
	}
}

// Activation tokens: stored per importing account, replaced as a set, and
// an account holding one that expires soon is claimed by one transaction at
// a time.
func TestActivations(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	for _, n := range []string{"exp", "imp"} {
		if err := s.CreateAccount(ctx, account(n)); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC().Truncate(time.Second)
	acts := []rotatord.Activation{
		{Importer: "AIMP", Exporter: "AEXP", Subject: "svc.a", Type: "service", Token: "t1", Signer: "AS", ExpiresAt: now.Add(time.Hour)},
		{Importer: "AIMP", Exporter: "AEXP", Subject: "svc.b", Type: "service", Token: "t2", Signer: "AS", ExpiresAt: now.Add(48 * time.Hour)},
	}
	err := s.InTx(ctx, func(ctx context.Context) error { return s.ReplaceActivations(ctx, "AIMP", acts) })
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Activations(ctx, "AIMP")
	if err != nil || len(got) != 2 || got[0].Token != "t1" || !got[1].ExpiresAt.Equal(acts[1].ExpiresAt) {
		t.Fatalf("activations = %+v, %v", got, err)
	}
	imp, _ := s.FindAccountByName(ctx, "imp")

	// Nothing expires before now + 30 minutes; the first one does before
	// now + 2 hours, and while one transaction holds it, another finds none.
	claim := func(ctx context.Context, before time.Time) int64 {
		t.Helper()
		id, err := s.ClaimActivationRenewal(ctx, before)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	if err := s.InTx(ctx, func(ctx context.Context) error {
		if id := claim(ctx, now.Add(30*time.Minute)); id != 0 {
			t.Errorf("claimed %d with nothing due", id)
		}
		if id := claim(ctx, now.Add(2*time.Hour)); id != imp.ID {
			t.Errorf("claimed %d, want %d", id, imp.ID)
		}
		done := make(chan int64)
		go func() {
			var other int64
			err := s.InTx(context.Background(), func(ctx context.Context) error {
				var err error
				other, err = s.ClaimActivationRenewal(ctx, now.Add(2*time.Hour))
				return err
			})
			if err != nil {
				other = -1
			}
			done <- other
		}()
		if other := <-done; other != 0 {
			t.Errorf("a second transaction claimed %d while the first held it", other)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimActivationRenewal(ctx, now); err == nil {
		t.Error("claim outside a transaction succeeded")
	}

	// Importers: found by name or key, through claims or, for accounts
	// imported before, base claims.
	byName := account("by-name")
	byName.Claims = &rotatord.AccountClaims{Imports: []rotatord.Import{{Account: "exp", Subject: "a", Type: "stream"}}}
	byKey := account("by-key")
	byKey.Claims = &rotatord.AccountClaims{Imports: []rotatord.Import{{Account: "AEXP", Subject: "a", Type: "stream"}}}
	legacy := account("legacy")
	legacy.BaseClaims = []byte(`{"imports": [{"account": "AEXP", "subject": "a", "type": "stream"}]}`)
	for _, a := range []*rotatord.Account{byName, byKey, legacy} {
		if err := s.CreateAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	importers, err := s.ImportersOf(ctx, "exp", "AEXP")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range importers {
		names = append(names, a.Name)
	}
	if !reflect.DeepEqual(names, []string{"by-name", "by-key", "legacy"}) {
		t.Errorf("importers of exp = %v", names)
	}

	// Deleting the importer drops its tokens.
	if err := s.DeleteAccount(ctx, imp.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Activations(ctx, "AIMP"); len(got) != 0 {
		t.Errorf("activations of a deleted account = %v", got)
	}
}
