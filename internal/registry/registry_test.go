package registry_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/pgtest"
	"github.com/rotatord/rotatord/internal/registry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func open(t *testing.T) *registry.Store {
	t.Helper()
	s, err := registry.Open(context.Background(), pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func account(name string) *rotatord.Account {
	return &rotatord.Account{Name: name, PublicKey: "A" + strings.ToUpper(name), JWT: "jwt-" + name, JWTID: "id-" + name, Limits: rotatord.NoLimits}
}

func TestErrorsMapToDomain(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	if _, err := s.Operator(ctx); !errors.Is(err, rotatord.ErrNotFound) {
		t.Fatalf("Operator on empty db = %v, want ErrNotFound", err)
	}
	if err := s.CreateAccount(ctx, account("fleet")); err != nil {
		t.Fatal(err)
	}
	err := s.CreateAccount(ctx, account("fleet"))
	if !errors.Is(err, rotatord.ErrConflict) || rotatord.ErrorMessage(err) != "an account with this name exists" {
		t.Fatalf("duplicate account = %v (%s), want ErrConflict", err, rotatord.ErrorMessage(err))
	}
	if _, err := s.FindAgentByName(ctx, "nobody"); !errors.Is(err, rotatord.ErrNotFound) {
		t.Fatalf("FindAgentByName = %v, want ErrNotFound", err)
	}
	if _, err := s.LockAccount(ctx, 1); err == nil {
		t.Fatal("LockAccount outside a transaction succeeded")
	}
	// A transaction whose function fails leaves nothing behind.
	boom := errors.New("boom")
	err = s.InTx(ctx, func(ctx context.Context) error {
		if err := s.CreateAccount(ctx, account("ghost")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v, want boom", err)
	}
	if _, err := s.FindAccountByName(ctx, "ghost"); !errors.Is(err, rotatord.ErrNotFound) {
		t.Fatalf("rolled back account is there: %v", err)
	}
}

func TestAuditIsAppendOnly(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	for i, a := range []string{"agent.create", "credential.revoke", "agent.create"} {
		if err := s.Audit(ctx, &rotatord.AuditEvent{Actor: "test", Action: a, Agent: []string{"kate", "kate", "bob"}[i]}); err != nil {
			t.Fatal(err)
		}
	}
	for _, stmt := range []string{"UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events", "TRUNCATE audit_events"} {
		if _, err := s.Pool().Exec(ctx, stmt); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v, want refused as append-only", stmt, err)
		}
	}
	got, err := s.ListAudit(ctx, rotatord.AuditFilter{Agent: "kate"})
	if err != nil || len(got) != 2 {
		t.Fatalf("ListAudit(agent=kate) = %d events, %v", len(got), err)
	}
	got, _ = s.ListAudit(ctx, rotatord.AuditFilter{Action: "agent.create", Limit: 1})
	if len(got) != 1 || got[0].Agent != "kate" {
		t.Fatalf("ListAudit(action, limit 1) = %+v", got)
	}
	got, _ = s.ListAudit(ctx, rotatord.AuditFilter{Action: "agent.create", AfterID: got[0].ID})
	if len(got) != 1 || got[0].Agent != "bob" {
		t.Fatalf("ListAudit(after) = %+v", got)
	}
	got, _ = s.ListAudit(ctx, rotatord.AuditFilter{Since: time.Now().Add(time.Hour)})
	if len(got) != 0 {
		t.Fatalf("ListAudit(since future) = %d events", len(got))
	}
}

func TestRevocationsAndPushVersions(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	acc := account("fleet")
	if err := s.CreateAccount(ctx, acc); err != nil {
		t.Fatal(err)
	}
	if owed, _ := s.ListPushOwed(ctx); len(owed) != 0 {
		t.Fatalf("a new account owes a push: %v", owed)
	}
	t0 := time.Unix(1_800_000_000, 0)
	add := func(key string, at, exp time.Time) {
		t.Helper()
		if err := s.AddRevocations(ctx, acc.ID, []rotatord.Revocation{{PublicKey: key, RevokedAt: at, ExpiresAt: exp}}); err != nil {
			t.Fatal(err)
		}
	}
	add("UA", t0, t0.Add(time.Hour))
	add("UA", t0.Add(-time.Minute), t0.Add(2*time.Hour)) // keeps the later revocation time
	add("UB", t0, t0.Add(10*time.Hour))
	revs, err := s.Revocations(ctx, acc.ID)
	if err != nil || len(revs) != 2 || !revs[0].RevokedAt.Equal(t0) || !revs[0].ExpiresAt.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("revocations = %+v, %v", revs, err)
	}
	n, err := s.DeleteRevocationsExpiredBefore(ctx, acc.ID, t0.Add(3*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("pruned %d, %v; want 1", n, err)
	}
	err = s.InTx(ctx, func(ctx context.Context) error {
		locked, err := s.LockAccount(ctx, acc.ID)
		if err != nil {
			return err
		}
		locked.JWT, locked.JWTID = "jwt-2", "id-2"
		return s.UpdateAccount(ctx, locked)
	})
	if err != nil {
		t.Fatal(err)
	}
	owed, _ := s.ListPushOwed(ctx)
	if len(owed) != 1 || owed[0] != acc.ID {
		t.Fatalf("owed = %v, want the updated account", owed)
	}
	if err := s.MarkPushed(ctx, acc.ID, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkPushed(ctx, acc.ID, 1); err != nil { // an older ack never moves it back
		t.Fatal(err)
	}
	if owed, _ := s.ListPushOwed(ctx); len(owed) != 0 {
		t.Fatalf("owed after ack = %v", owed)
	}
	j, err := s.FindAccountJWT(ctx, acc.PublicKey)
	if err != nil || j.JWT != "jwt-2" || j.Version != 2 {
		t.Fatalf("FindAccountJWT = %+v, %v", j, err)
	}
}

func TestListenAccounts(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan string, 10)
	resynced := make(chan struct{}, 10)
	go s.ListenAccounts(ctx, discard(), func(context.Context) error { resynced <- struct{}{}; return nil },
		func(pub string) { changed <- pub })
	select {
	case <-resynced:
	case <-time.After(5 * time.Second):
		t.Fatal("no resync at start")
	}
	acc := account("fleet")
	if err := s.CreateAccount(context.Background(), acc); err != nil {
		t.Fatal(err)
	}
	select {
	case pub := <-changed:
		if pub != acc.PublicKey {
			t.Fatalf("notified %s, want %s", pub, acc.PublicKey)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notification for a new account")
	}
	// Killing the listening connection makes the listener reconnect and resync.
	if _, err := s.Pool().Exec(context.Background(),
		`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-resynced:
	case <-time.After(10 * time.Second):
		t.Fatal("no resync after the listening connection died")
	}
}
