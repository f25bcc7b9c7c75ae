package registry_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rotatord/rotatord"
)

// What servers hold of an account: learned, recorded (never going back),
// listed as behind, forgotten; revocation waits pop once every known server
// holds their version.
func TestServerAccounts(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	acc := account("fleet")
	if err := s.CreateAccount(ctx, acc); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_800_000_000, 0).UTC()
	a, b := rotatord.Server{ID: "NA", Name: "nats-a", Cluster: "c"}, rotatord.Server{ID: "NB", Name: "nats-b"}
	if err := s.TouchServers(ctx, []rotatord.Server{a, b}, t0); err != nil {
		t.Fatal(err)
	}
	// A later heartbeat without a name keeps the name and moves last_seen.
	if err := s.TouchServers(ctx, []rotatord.Server{{ID: "NA"}}, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchServers(ctx, []rotatord.Server{{ID: "NA"}}, t0); err != nil { // older: ignored
		t.Fatal(err)
	}
	servers, err := s.AccountServers(ctx, acc.ID)
	if err != nil || len(servers) != 2 || servers[0].Name != "nats-a" || !servers[0].LastSeen.Equal(t0.Add(time.Minute)) ||
		servers[0].Cluster != "c" || servers[0].Status != "" || servers[0].Version != 0 {
		t.Fatalf("servers = %+v, %v", servers, err)
	}
	unknown, err := s.UnverifiedServerAccounts(ctx, t0, 10)
	if err != nil || len(unknown) != 2 || unknown[0].JWT != acc.JWT {
		t.Fatalf("unverified = %+v, %v; want both servers for the account", unknown, err)
	}

	if err := s.AddRevocationWait(ctx, acc.ID, 2, t0); err != nil {
		t.Fatal(err)
	}
	behind := t0.Add(2 * time.Minute)
	at := t0.Add(2 * time.Minute)
	err = s.SetServerAccounts(ctx, acc.ID, []rotatord.AccountServer{
		{Server: a, Version: 2, Status: rotatord.ServerUpdated, AckedAt: &at},
		{Server: b, Version: 1, Status: rotatord.ServerMissed, BehindSince: &behind},
		{Server: rotatord.Server{ID: "NGONE"}, Version: 2, Status: rotatord.ServerUpdated}, // unknown: skipped
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MarkPushed(ctx, acc.ID, 2); err != nil {
		t.Fatal(err)
	}
	if got, err := s.PopRevocationWaits(ctx, acc.ID); err != nil || len(got) != 0 {
		t.Fatalf("waits popped while nats-b is behind: %v, %v", got, err)
	}
	list, err := s.ServersBehind(ctx)
	if err != nil || len(list) != 1 || list[0].ID != "NB" || list[0].AccountName != "fleet" || list[0].JWT != acc.JWT || !list[0].BehindSince.Equal(behind) {
		t.Fatalf("behind = %+v, %v; want nats-b on fleet", list, err)
	}
	// An older version never moves a server back.
	if err := s.SetServerAccounts(ctx, acc.ID, []rotatord.AccountServer{{Server: a, Version: 1, Status: rotatord.ServerUpdated}}); err != nil {
		t.Fatal(err)
	}
	if servers, _ := s.AccountServers(ctx, acc.ID); servers[0].Version != 2 || !servers[0].AckedAt.Equal(at) {
		t.Fatalf("nats-a after an older ack = %+v", servers[0])
	}
	if err := s.MarkServersMissed(ctx, []string{"NB"}, t0.Add(3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Silent since before t0+30s: nats-b goes, with its state; the wait it
	// held back lands.
	gone, err := s.ForgetServersSilentSince(ctx, t0.Add(30*time.Second))
	if err != nil || len(gone) != 1 || gone[0].ID != "NB" || gone[0].MissedAt == nil {
		t.Fatalf("forgotten = %+v, %v; want nats-b", gone, err)
	}
	if list, _ := s.ServersBehind(ctx); len(list) != 0 {
		t.Fatalf("behind after forgetting = %+v", list)
	}
	if got, err := s.PopRevocationWaits(ctx, 0); err != nil || len(got) != 1 || !got[0].Equal(t0) {
		t.Fatalf("waits popped = %v, %v; want the one requested at t0", got, err)
	}
	if err := s.ForgetServer(ctx, "NA"); err != nil {
		t.Fatal(err)
	}
	if all, _ := s.Servers(ctx); len(all) != 0 {
		t.Fatalf("servers after forgetting = %+v", all)
	}
}

// One pusher per account: the push lock is held across connections (as
// across replicas), and released when the holder is done.
func TestAccountLock(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	acc := account("fleet")
	if err := s.CreateAccount(ctx, acc); err != nil {
		t.Fatal(err)
	}
	other := account("other")
	if err := s.CreateAccount(ctx, other); err != nil {
		t.Fatal(err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	go func() {
		s.WithAccountLock(ctx, acc.ID, func(ctx context.Context) error {
			close(held)
			<-release
			return nil
		})
	}()
	<-held
	// Another account's lock is free, and the account's row is not locked.
	if err := s.WithAccountLock(ctx, other.ID, func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.InTx(ctx, func(ctx context.Context) error {
		locked, err := s.LockAccount(ctx, acc.ID)
		if err != nil {
			return err
		}
		locked.Description = "written while a push holds the lock"
		return s.UpdateAccount(ctx, locked)
	}); err != nil {
		t.Fatal(err)
	}
	var second atomic.Bool
	done := make(chan error, 1)
	go func() {
		done <- s.WithAccountLock(ctx, acc.ID, func(ctx context.Context) error {
			second.Store(true)
			// Inside, the store works on the lock's connection.
			_, err := s.AccountVersion(ctx, acc.ID)
			return err
		})
	}()
	time.Sleep(200 * time.Millisecond)
	if second.Load() {
		t.Fatal("a second holder got the lock while the first held it")
	}
	close(release)
	if err := <-done; err != nil || !second.Load() {
		t.Fatalf("second holder: %v, ran %v", err, second.Load())
	}
}

// CompleteRotations completes exactly the confirmed rotations of the
// account whose re-sign version is pushed.
func TestCompleteRotations(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	acc := account("fleet")
	if err := s.CreateAccount(ctx, acc); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i, name := range []string{"a", "b", "c"} {
		g := &rotatord.Agent{AccountID: acc.ID, Name: name, Permissions: rotatord.Permissions{}.Normalize(),
			Rotation: rotatord.RotationPolicy{Schedule: "@every 24h", Grace: time.Hour}, Delivery: rotatord.DeliveryPoll, State: rotatord.AgentActive}
		if err := s.CreateAgent(ctx, g); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		c := &rotatord.Credential{AgentID: g.ID, PublicKey: "UNEW" + name, JWT: "jwt", JWTID: "id" + name, IssuedAt: now,
			ExpiresAt: now.Add(time.Hour), State: rotatord.CredentialActive}
		if err := s.CreateCredential(ctx, c); err != nil {
			t.Fatal(err)
		}
		r := &rotatord.Rotation{AgentID: g.ID, State: rotatord.RotationConfirmed, Trigger: rotatord.TriggerManual, NewKey: c.PublicKey, NewCredentialID: c.ID}
		if err := s.CreateRotations(ctx, []*rotatord.Rotation{r}); err != nil {
			t.Fatal(err)
		}
		r.OldRevokedAt = &now
		if err := s.UpdateRotation(ctx, r); err != nil {
			t.Fatal(err)
		}
		if i < 2 { // c's revocation is not in a stored version yet
			if err := s.SetResignVersion(ctx, []string{r.ID}, int64(2+i)); err != nil {
				t.Fatal(err)
			}
		}
		ids = append(ids, r.ID)
	}
	waiting, err := s.RotationsAwaitingResign(ctx, acc.ID)
	if err != nil || len(waiting) != 1 || waiting[0].Rotation != ids[2] {
		t.Fatalf("awaiting re-sign = %+v, %v; want c's", waiting, err)
	}
	at := time.Unix(1_800_000_000, 0).UTC()
	done, err := s.CompleteRotations(ctx, acc.ID, 2, at)
	if err != nil || len(done) != 1 || done[0].ID != ids[0] || done[0].Agent != "a" || done[0].Account != "fleet" || !done[0].FinishedAt.Equal(at) {
		t.Fatalf("completed at version 2 = %+v, %v; want a's only", done, err)
	}
	for i, want := range []string{rotatord.RotationCompleted, rotatord.RotationConfirmed, rotatord.RotationConfirmed} {
		if r, _ := s.FindRotation(ctx, ids[i]); r.State != want {
			t.Errorf("rotation %d is %s, want %s", i, r.State, want)
		}
	}
	if again, _ := s.CompleteRotations(ctx, acc.ID, 3, at); len(again) != 1 || again[0].ID != ids[1] {
		t.Fatalf("completed at version 3 = %+v; want b's", again)
	}
}
