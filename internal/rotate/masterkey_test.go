package rotate_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/pgtest"
	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/seal"
)

func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, seal.KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func mustSealer(t testing.TB, keys ...[]byte) *seal.Sealer {
	t.Helper()
	s, err := seal.New(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sealV1 seals the way rotatord did before key IDs.
func sealV1(t *testing.T, key, plaintext, aad []byte) []byte {
	t.Helper()
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	return aead.Seal(append([]byte{1}, nonce...), nonce, plaintext, aad)
}

// masterKeyFixture is an operator, an account with a poll agent whose
// rotation waits with its new seed sealed, all under key old.
type masterKeyFixture struct {
	store *registry.Store
	clk   *fakeClock
	old   []byte
	agent string
	seed  []byte // the agent's active seed, to prove its requests
}

func newMasterKeyFixture(t testing.TB) *masterKeyFixture {
	t.Helper()
	ctx := context.Background()
	store, err := registry.Open(ctx, pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	f := &masterKeyFixture{store: store, clk: &fakeClock{t: time.Now()}, old: newKey(t), agent: "builder"}
	svc := f.service(t, f.old)
	if _, _, err := svc.Init(ctx, "test", "op"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateAccount(ctx, "test", rotate.AccountInput{Name: "fleet"}); err != nil {
		t.Fatal(err)
	}
	_, creds, err := svc.CreateAgent(ctx, "test", rotate.AgentInput{Name: f.agent, Account: "fleet"})
	if err != nil {
		t.Fatal(err)
	}
	kp, err := jwt.ParseDecoratedNKey(creds)
	if err != nil {
		t.Fatal(err)
	}
	f.seed, _ = kp.Seed()
	if _, err := svc.StartRotation(ctx, "test", f.agent, rotatord.TriggerManual); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *masterKeyFixture) service(t testing.TB, keys ...[]byte) *rotate.Service {
	return rotate.New(rotate.Config{Store: f.store, Sealer: mustSealer(t, keys...), Now: f.clk.Now, NoJitter: true})
}

// fetch opens the agent's pending seed: its creds fetch.
func (f *masterKeyFixture) fetch(t *testing.T, svc *rotate.Service) error {
	t.Helper()
	kp, err := jwt.ParseDecoratedNKey(f.seed)
	if err != nil {
		t.Fatal(err)
	}
	f.clk.Add(time.Second) // a new proof each time
	now := f.clk.Now()
	ap, err := rotate.CheckProof(f.agent, signGet(t, kp, f.agent, now), now)
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.AgentCreds(context.Background(), ap)
	return err
}

// keysInUse maps each master key ID in the database to its value count.
func keysInUse(t *testing.T, store *registry.Store) map[string]int {
	t.Helper()
	counts, err := store.SealedCounts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, c := range counts {
		out[c.KeyID] += c.Count
	}
	return out
}

func record(t *testing.T, store *registry.Store, id string, keys ...[]byte) *rotatord.Replica {
	t.Helper()
	s := mustSealer(t, keys...)
	r := &rotatord.Replica{ID: id, Host: "host-" + id, PID: 42, KeyIDs: s.KeyIDs(), SealKeyID: s.KeyID()}
	if err := store.RecordReplica(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return r
}

// The master-key rotation re-seals every sealed value (operator identity,
// signing keys, pending user seeds, values of the first format too) under
// the new key in one transaction, and refuses while a live replica does not
// hold the new key or does not seal with it; replicas that stopped beating
// do not count. Afterwards the new key alone opens everything.
func TestRotateMasterKey(t *testing.T) {
	f := newMasterKeyFixture(t)
	ctx := context.Background()
	newK := newKey(t)
	oldID, newID := seal.KeyID(f.old), seal.KeyID(newK)

	// One signing key sealed in the first format, as rotatord did before.
	var pub string
	if err := f.store.Pool().QueryRow(ctx, `SELECT s.public_key FROM signing_keys s JOIN accounts a ON a.id = s.account_id WHERE a.name = 'fleet'`).Scan(&pub); err != nil {
		t.Fatal(err)
	}
	var enc []byte
	f.store.Pool().QueryRow(ctx, `SELECT seed_enc FROM signing_keys WHERE public_key = $1`, pub).Scan(&enc)
	seed, err := mustSealer(t, f.old).Open(enc, []byte(pub))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Pool().Exec(ctx, `UPDATE signing_keys SET seed_enc = $2 WHERE public_key = $1`, pub, sealV1(t, f.old, seed, []byte(pub))); err != nil {
		t.Fatal(err)
	}
	before := keysInUse(t, f.store)
	// operator identity, operator signing key, SYS signing key, pending seed; fleet's key has no ID.
	if before[oldID] != 4 || before[""] != 1 || len(before) != 2 {
		t.Fatalf("sealed values before = %v, want 4 under the old key and 1 of the first format", before)
	}

	rotator := f.service(t, newK, f.old)
	record(t, f.store, "r1", f.old)
	// A replica that stopped long ago without forgetting itself.
	record(t, f.store, "gone", f.old)
	f.store.Pool().Exec(ctx, `UPDATE replicas SET seen_at = now() - interval '5 minutes' WHERE id = 'gone'`)

	_, err = rotator.RotateMasterKey(ctx, "test")
	if !errors.Is(err, rotatord.ErrConflict) || !strings.Contains(err.Error(), "replica r1 (host host-r1, pid 42") ||
		!strings.Contains(err.Error(), "does not hold master key "+newID) || strings.Contains(err.Error(), "gone") {
		t.Fatalf("rotate while r1 holds only the old key = %v", err)
	}
	record(t, f.store, "r1", f.old, newK) // holds the new key, seals with the old one
	_, err = rotator.RotateMasterKey(ctx, "test")
	if !errors.Is(err, rotatord.ErrConflict) || !strings.Contains(err.Error(), "seals with "+oldID) || !strings.Contains(err.Error(), "first line") {
		t.Fatalf("rotate while r1 seals with the old key = %v", err)
	}
	if got := keysInUse(t, f.store); got[oldID] != 4 || got[""] != 1 {
		t.Fatalf("a refused rotation changed values: %v", got)
	}

	record(t, f.store, "r1", newK, f.old)
	res, err := rotator.RotateMasterKey(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"operator identity seed": 1, "signing key seed": 3, "pending user seed": 1}
	if res.KeyID != newID || res.Replicas != 1 || len(res.Resealed) != len(want) {
		t.Fatalf("RotateMasterKey = %+v", res)
	}
	for k, n := range want {
		if res.Resealed[k] != n {
			t.Errorf("re-sealed %d %s, want %d", res.Resealed[k], k, n)
		}
	}
	if got := keysInUse(t, f.store); got[newID] != 5 || len(got) != 1 {
		t.Fatalf("sealed values after = %v, want all 5 under the new key", got)
	}
	// Again: nothing left to do.
	if res, err := rotator.RotateMasterKey(ctx, "test"); err != nil || len(res.Resealed) != 0 {
		t.Fatalf("second RotateMasterKey = %+v, %v", res, err)
	}
	events, _ := rotator.Audit(ctx, rotatord.AuditFilter{Action: "master_key.rotate"})
	if len(events) != 2 || events[0].Details["key_id"] != newID || events[0].Details["signing_key_seeds"] != float64(3) {
		t.Fatalf("audit = %+v", events)
	}

	// The old key can go: the new one alone opens the operator's and the
	// accounts' signing keys and the pending seed.
	alone := f.service(t, newK)
	if err := alone.CheckKeys(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := alone.MintSystemUser(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := alone.CreateAgent(ctx, "test", rotate.AgentInput{Name: "second", Account: "fleet"}); err != nil {
		t.Fatal(err)
	}
	if err := f.fetch(t, alone); err != nil {
		t.Fatalf("fetch of the pending seed with the new key alone: %v", err)
	}
	if err := f.fetch(t, f.service(t, f.old)); !errors.Is(err, seal.ErrDecrypt) {
		t.Fatalf("fetch with the old key alone = %v, want a decrypt error", err)
	}
}

// A value that no key given opens (sealed by a key lost meanwhile) stops
// the rotation before anything changes, naming the key; status names it
// as a problem.
func TestRotateMasterKeyRefusesUnopenable(t *testing.T) {
	f := newMasterKeyFixture(t)
	ctx := context.Background()
	newK, lost := newKey(t), newKey(t)
	var pub string
	if err := f.store.Pool().QueryRow(ctx, `SELECT public_key FROM credentials WHERE seed_enc IS NOT NULL`).Scan(&pub); err != nil {
		t.Fatal(err)
	}
	f.store.Pool().Exec(ctx, `UPDATE credentials SET seed_enc = $2 WHERE public_key = $1`, pub,
		mustSealer(t, lost).Seal([]byte("SUAseed"), []byte(pub)))
	record(t, f.store, "r1", newK, f.old)

	_, err := f.service(t, newK, f.old).RotateMasterKey(ctx, "test")
	if !errors.Is(err, rotatord.ErrConflict) || !strings.Contains(err.Error(), "1 pending user seed(s) sealed by master key "+seal.KeyID(lost)) {
		t.Fatalf("RotateMasterKey with a lost key = %v", err)
	}
	if got := keysInUse(t, f.store); got[seal.KeyID(f.old)] != 4 || got[seal.KeyID(lost)] != 1 || got[seal.KeyID(newK)] != 0 {
		t.Fatalf("a refused rotation changed values: %v", got)
	}

	st, err := f.service(t, newK, f.old).MasterKeyStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Problems) != 1 || !strings.Contains(st.Problems[0], "1 pending user seed(s) sealed by master key "+seal.KeyID(lost)+", which no live replica holds") {
		t.Fatalf("status problems = %q", st.Problems)
	}
	if len(st.Replicas) != 1 || !st.Replicas[0].Live {
		t.Fatalf("status replicas = %+v", st.Replicas)
	}
}

// Status: values sealed by a key that no live replica holds are problems;
// without a live replica the local key file decides; values of the first
// format are checked with the local key file.
func TestMasterKeyStatus(t *testing.T) {
	f := newMasterKeyFixture(t)
	ctx := context.Background()
	newK := newKey(t)
	oldID := seal.KeyID(f.old)

	st, err := f.service(t, f.old).MasterKeyStatus(ctx)
	if err != nil || len(st.Problems) != 0 || len(st.Replicas) != 0 {
		t.Fatalf("status without replicas, with the right key file = %+v, %v", st, err)
	}
	st, _ = f.service(t, newK).MasterKeyStatus(ctx)
	if len(st.Problems) != 3 || !strings.Contains(strings.Join(st.Problems, "\n"), "3 signing key seed(s) sealed by master key "+oldID+", which the local key file does not hold (and no replica is live)") {
		t.Fatalf("status without replicas, with another key file = %q", st.Problems)
	}

	record(t, f.store, "r1", newK, f.old)
	record(t, f.store, "r2", newK)
	st, _ = f.service(t, newK).MasterKeyStatus(ctx)
	if len(st.Problems) != 0 {
		t.Fatalf("status while r1 holds the old key = %q", st.Problems)
	}
	f.store.DeleteReplica(ctx, "r1")
	st, _ = f.service(t, newK).MasterKeyStatus(ctx)
	if len(st.Problems) != 3 || !strings.Contains(st.Problems[0], "which no live replica holds") || !strings.Contains(st.Problems[0], oldID) {
		t.Fatalf("status once no replica holds the old key = %q", st.Problems)
	}

	// A value of the first format that the local file does not open.
	var pub string
	f.store.Pool().QueryRow(ctx, `SELECT public_key FROM credentials WHERE seed_enc IS NOT NULL`).Scan(&pub)
	f.store.Pool().Exec(ctx, `UPDATE credentials SET seed_enc = $2 WHERE public_key = $1`, pub, sealV1(t, newKey(t), []byte("SUAseed"), []byte(pub)))
	record(t, f.store, "r1", f.old, newK)
	st, _ = f.service(t, newK).MasterKeyStatus(ctx)
	if len(st.Problems) != 1 || !strings.Contains(st.Problems[0], "first format") || !strings.Contains(st.Problems[0], "1 pending user seed(s)") {
		t.Fatalf("status with an unopenable value of the first format = %q", st.Problems)
	}
	if !bytes.Contains([]byte(strings.Join(st.Notes, "\n")), []byte("seal with different master keys")) {
		t.Fatalf("notes = %q, want one about replicas sealing with different keys", st.Notes)
	}
}
