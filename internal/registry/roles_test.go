package registry_test

import (
	"context"
	"errors"
	"io/fs"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nkeys"
	"github.com/pressly/goose/v3"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
	"github.com/rotatord/rotatord/migrations"
)

// Roles are stored with their template and keys; a role's keys are not
// the account's own signing keys; agents keep every claim and their role.
func TestRolesAndClaims(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	acc := account("fleet")
	if err := s.CreateAccount(ctx, acc); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSigningKey(ctx, acc.ID, "AOWN", []byte("sealed")); err != nil {
		t.Fatal(err)
	}
	tmpl := rotatord.UserTemplate{Permissions: rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"a.{{name()}}"}},
		Resp: &rotatord.ResponsePermission{Max: 1, TTL: time.Second}}, Limits: rotatord.UserLimits{Subs: 3, Data: -1, Payload: -1},
		Times: []rotatord.TimeRange{{Start: "01:00:00", End: "02:00:00"}}, TimesLocation: "UTC"}
	r := &rotatord.Role{AccountID: acc.ID, Name: "worker", Template: tmpl}
	if err := s.CreateRole(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := s.AddRoleSigningKey(ctx, r, "AROLE", []byte("sealed-role")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRole(ctx, &rotatord.Role{AccountID: acc.ID, Name: "worker", Template: tmpl}); !errors.Is(err, rotatord.ErrConflict) ||
		!strings.Contains(rotatord.ErrorMessage(err), "role with this name") {
		t.Fatalf("duplicate role = %v", err)
	}
	if keys, _ := s.SigningKeys(ctx, acc.ID); len(keys) != 1 || keys[0] != "AOWN" {
		t.Fatalf("account signing keys = %v, want only its own", keys)
	}
	if pub, _, _ := s.SigningKey(ctx, acc.ID); pub != "AOWN" {
		t.Fatalf("account signing key = %s, want AOWN (never a role's)", pub)
	}
	if enc, err := s.SigningKeySeed(ctx, "AROLE"); err != nil || string(enc) != "sealed-role" {
		t.Fatalf("role key seed = %q, %v", enc, err)
	}
	got, err := s.FindRole(ctx, acc.ID, "worker")
	if err != nil {
		t.Fatal(err)
	}
	if got.SigningKey() != "AROLE" || got.Account != "fleet" || got.Template.Limits.Subs != 3 || got.Template.Permissions.Resp.TTL != time.Second ||
		got.Template.TimesLocation != "UTC" || len(got.Template.Times) != 1 {
		t.Fatalf("stored role = %+v", got)
	}

	g := &rotatord.Agent{AccountID: acc.ID, Name: "kate", State: rotatord.AgentActive, Delivery: rotatord.DeliveryPoll,
		Rotation: rotatord.RotationPolicy{Schedule: "@every 1h", Grace: time.Minute}, Limits: rotatord.NoUserLimits,
		Tags: []string{"team:blue"}, RoleID: r.ID}
	if err := s.CreateAgent(ctx, g); err != nil {
		t.Fatal(err)
	}
	cred := &rotatord.Credential{AgentID: g.ID, PublicKey: "UKATE", JWT: "j", JWTID: "id", IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour),
		State: rotatord.CredentialActive, SigningKey: "AROLE"}
	if err := s.CreateCredential(ctx, cred); err != nil {
		t.Fatal(err)
	}
	stored, err := s.FindAgentByName(ctx, "kate")
	if err != nil {
		t.Fatal(err)
	}
	if stored.Role != "worker" || stored.RoleKey != "AROLE" || stored.Active.SigningKey != "AROLE" || stored.Tags[0] != "team:blue" ||
		stored.Limits != rotatord.NoUserLimits {
		t.Fatalf("stored agent: role %q key %q signer %q tags %v limits %+v", stored.Role, stored.RoleKey, stored.Active.SigningKey, stored.Tags, stored.Limits)
	}
	if n, err := s.CountValidSignedBy(ctx, []string{"AROLE"}); err != nil || n != 1 {
		t.Fatalf("agents signed by the role's key = %d, %v", n, err)
	}
	if err := s.DeleteRole(ctx, r.ID); !errors.Is(err, rotatord.ErrConflict) {
		t.Fatalf("delete a role an agent has = %v, want ErrConflict", err)
	}

	// Out of the role, with claims of its own.
	stored.RoleID = 0
	stored.Src, stored.ConnectionTypes = []string{"10.0.0.0/8"}, []string{"STANDARD"}
	stored.Limits.Payload = 512
	if err := s.UpdateAgent(ctx, stored); err != nil {
		t.Fatal(err)
	}
	stored, _ = s.FindAgentByName(ctx, "kate")
	if stored.Role != "" || stored.RoleKey != "" || stored.Src[0] != "10.0.0.0/8" || stored.ConnectionTypes[0] != "STANDARD" || stored.Limits.Payload != 512 {
		t.Fatalf("after leaving the role: %+v", stored)
	}
	if err := s.DeleteRole(ctx, r.ID); err != nil {
		t.Fatalf("delete an unused role: %v", err)
	}
	if _, err := s.SigningKeySeed(ctx, "AROLE"); !errors.Is(err, rotatord.ErrNotFound) {
		t.Fatalf("the deleted role's key is still stored: %v", err)
	}
}

// The migration records, for every credential issued before it, the key
// that signed it, read from its JWT.
func TestSigningKeyBackfill(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	version := userModelVersion(t)
	db := stdlib.OpenDBFromPool(s.Pool())
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	// Down to before the migration, through every later one (they may
	// reference what it made).
	if _, err := p.DownTo(ctx, version-1); err != nil {
		t.Fatalf("migrate down to %d: %v", version-1, err)
	}

	signer, _ := jwtissue.NewKey(nkeys.PrefixByteAccount)
	user, _ := jwtissue.NewKey(nkeys.PrefixByteUser)
	token, _, err := jwtissue.EncodeUser(signer, jwtissue.UserSpec{Name: "kate", PublicKey: jwtissue.Public(user),
		AccountKey: jwtissue.Public(signer), Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Pool().Exec(ctx, `
		WITH a AS (INSERT INTO accounts (name, public_key, jwt, jwt_id) VALUES ('fleet', 'AFLEET', 'j', 'i') RETURNING id),
		     g AS (INSERT INTO agents (account_id, name, permissions, schedule, grace_seconds, delivery)
		           SELECT id, 'kate', '{}', '@every 1h', 60, 'poll' FROM a RETURNING id)
		INSERT INTO credentials (agent_id, public_key, jwt, jwt_id, issued_at, expires_at, state)
		SELECT id, $1, $2, 'id', now(), now() + interval '1 hour', 'active' FROM g`, jwtissue.Public(user), token)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("migrate up from %d: %v", version-1, err)
	}
	c, err := s.FindCredentialByPublicKey(ctx, jwtissue.Public(user))
	if err != nil {
		t.Fatal(err)
	}
	if c.SigningKey != jwtissue.Public(signer) {
		t.Fatalf("backfilled signing key = %q, want the JWT's issuer %s", c.SigningKey, jwtissue.Public(signer))
	}
	g, err := s.FindAgentByName(ctx, "kate")
	if err != nil || g.Limits != rotatord.NoUserLimits || g.Role != "" {
		t.Fatalf("agent from before the migration: %+v, %v; want unlimited and no role", g, err)
	}
}

// userModelVersion is the version of the migration that added roles, found
// by its name (migrations are renumbered when branches merge).
func userModelVersion(t *testing.T) int64 {
	t.Helper()
	names, err := fs.Glob(migrations.FS, "*_user_model.sql")
	if err != nil || len(names) != 1 {
		t.Fatalf("find the user model migration: %v %v", names, err)
	}
	v, err := strconv.ParseInt(strings.SplitN(names[0], "_", 2)[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A batch that waited for an agent's lock while the agent moved to another
// role signs with the new role's key, not the one it joined before waiting.
func TestLockedAgentsReadTheirRoleFresh(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	acc := account("fleet")
	if err := s.CreateAccount(ctx, acc); err != nil {
		t.Fatal(err)
	}
	roles := map[string]*rotatord.Role{}
	for _, name := range []string{"a", "b"} {
		r := &rotatord.Role{AccountID: acc.ID, Name: name, Template: rotatord.UserTemplate{Limits: rotatord.NoUserLimits}}
		if err := s.CreateRole(ctx, r); err != nil {
			t.Fatal(err)
		}
		if err := s.AddRoleSigningKey(ctx, r, "AKEY"+strings.ToUpper(name), []byte("sealed")); err != nil {
			t.Fatal(err)
		}
		roles[name] = r
	}
	g := &rotatord.Agent{AccountID: acc.ID, Name: "kate", State: rotatord.AgentActive, Delivery: rotatord.DeliveryPoll,
		Rotation: rotatord.RotationPolicy{Schedule: "@every 1h", Grace: time.Minute}, Limits: rotatord.NoUserLimits, RoleID: roles["a"].ID}
	if err := s.CreateAgent(ctx, g); err != nil {
		t.Fatal(err)
	}
	got := make(chan *rotatord.Agent, 1)
	errs := make(chan error, 1)
	err := s.InTx(ctx, func(ctx context.Context) error {
		moved := *g
		moved.RoleID = roles["b"].ID
		if err := s.UpdateAgent(ctx, &moved); err != nil {
			return err
		}
		go func() {
			errs <- s.InTx(context.Background(), func(ctx context.Context) error {
				m, err := s.LockAgentsByID(ctx, []int64{g.ID})
				got <- m[g.ID]
				return err
			})
		}()
		deadline := time.Now().Add(20 * time.Second)
		for {
			var n int
			if err := s.Pool().QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FOR NO KEY UPDATE%'`).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil // the batch waits for kate's lock; commit the move
			}
			if time.Now().After(deadline) {
				return errors.New("the batch never waited for the agent's lock")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if a := <-got; a == nil || a.RoleID != roles["b"].ID || a.Role != "b" || a.RoleKey != "AKEYB" {
		t.Fatalf("locked agent = %+v; want role b with key AKEYB", a)
	}
}
