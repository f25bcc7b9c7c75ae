package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/pgtest"
	"github.com/rotatord/rotatord/internal/registry"
	"github.com/rotatord/rotatord/pkg/agent"
)

// nscFixture is an nsc store and keystore as nsc lays them out:
//
//	stores/ACME/ACME.jwt, stores/ACME/accounts/<acc>/<acc>.jwt,
//	stores/ACME/accounts/<acc>/users/<user>.jwt,
//	keys/keys/<O|A|U>/<2 chars>/<public key>.nk, keys/creds/ACME/<acc>/<user>.creds
//
// Operator ACME has a signing key and system account SYS (no signing key,
// user "sys"); account APP has a signing key that signed users alice and bob.
type nscFixture struct {
	t                testing.TB
	stores, keys     string
	op, opSK         nkeys.KeyPair
	sys, app, appSK  nkeys.KeyPair
	alice, bob, sysU nkeys.KeyPair
	opJWT            string
	accountJWT       map[string]string // account name -> JWT
	userJWT          map[string]string // user name -> JWT
}

type fixtureOptions struct {
	noOperatorSeeds bool
	// appClaims and aliceClaims change the claims before they are signed.
	appClaims   func(f *nscFixture, ac *jwt.AccountClaims)
	aliceClaims func(*jwt.UserClaims)
	// extra adds accounts and users to the store; the seeds of the keys it
	// returns go into the keystore.
	extra func(f *nscFixture) []nkeys.KeyPair
}

func newNSCFixture(t testing.TB, o fixtureOptions) *nscFixture {
	t.Helper()
	dir := t.TempDir()
	f := &nscFixture{t: t, stores: filepath.Join(dir, "stores"), keys: filepath.Join(dir, "keys"),
		accountJWT: map[string]string{}, userJWT: map[string]string{}}
	key := func(kind nkeys.PrefixByte) nkeys.KeyPair {
		kp, err := nkeys.CreatePair(kind)
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	f.op, f.opSK = key(nkeys.PrefixByteOperator), key(nkeys.PrefixByteOperator)
	f.sys, f.app, f.appSK = key(nkeys.PrefixByteAccount), key(nkeys.PrefixByteAccount), key(nkeys.PrefixByteAccount)
	f.alice, f.bob, f.sysU = key(nkeys.PrefixByteUser), key(nkeys.PrefixByteUser), key(nkeys.PrefixByteUser)

	oc := jwt.NewOperatorClaims(pubOf(t, f.op))
	oc.Name = "ACME"
	oc.SigningKeys.Add(pubOf(t, f.opSK))
	oc.SystemAccount = pubOf(t, f.sys)
	f.opJWT = encode(t, oc, f.op)
	f.write(filepath.Join(f.stores, "ACME", ".nsc"), `{"name":"ACME","kind":"operator","version":"1"}`)
	f.write(filepath.Join(f.stores, "ACME", "ACME.jwt"), f.opJWT)

	// nsc signs account JWTs with the operator's identity unless told
	// otherwise; APP's is signed with the operator's signing key.
	// nsc's system account exports its monitoring subjects.
	sys := jwt.NewAccountClaims(pubOf(t, f.sys))
	sys.Name = "SYS"
	sys.Exports.Add(&jwt.Export{Name: "account-monitoring-services", Subject: "$SYS.REQ.ACCOUNT.*.*", Type: jwt.Service,
		ResponseType: jwt.ResponseTypeStream, AccountTokenPosition: 4},
		&jwt.Export{Name: "account-monitoring-streams", Subject: "$SYS.ACCOUNT.*.>", Type: jwt.Stream, AccountTokenPosition: 3})
	f.account("SYS", sys, f.op)
	app := jwt.NewAccountClaims(pubOf(t, f.app))
	app.Name = "APP"
	app.Description = "the application"
	app.SigningKeys.Add(pubOf(t, f.appSK))
	if o.appClaims != nil {
		o.appClaims(f, app)
	}
	f.account("APP", app, f.opSK)

	su := jwt.NewUserClaims(pubOf(t, f.sysU))
	su.Name = "sys"
	f.user("SYS", su, f.sys, f.sysU)
	alice := jwt.NewUserClaims(pubOf(t, f.alice))
	alice.Name = "alice"
	alice.IssuerAccount = pubOf(t, f.app)
	alice.Pub.Allow.Add("orders.>", "_INBOX.>")
	alice.Pub.Deny.Add("orders.secret")
	alice.Sub.Allow.Add("orders.>", "_INBOX.>")
	if o.aliceClaims != nil {
		o.aliceClaims(alice)
	}
	f.user("APP", alice, f.appSK, f.alice)
	bob := jwt.NewUserClaims(pubOf(t, f.bob))
	bob.Name = "bob"
	bob.IssuerAccount = pubOf(t, f.app)
	bob.Pub.Allow.Add("billing.>", "_INBOX.>")
	bob.Sub.Allow.Add("billing.>", "_INBOX.>")
	bob.Expires = time.Now().Add(90 * 24 * time.Hour).Unix()
	f.user("APP", bob, f.appSK, f.bob)

	seeds := []nkeys.KeyPair{f.sys, f.app, f.appSK, f.alice, f.bob, f.sysU}
	if o.extra != nil {
		seeds = append(seeds, o.extra(f)...)
	}
	if !o.noOperatorSeeds {
		seeds = append(seeds, f.op, f.opSK)
	}
	for _, kp := range seeds {
		pub := pubOf(t, kp)
		seed, _ := kp.Seed()
		f.write(filepath.Join(f.keys, "keys", pub[:1], pub[1:3], pub+".nk"), string(seed))
	}
	return f
}

func (f *nscFixture) write(path, content string) {
	f.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		f.t.Fatal(err)
	}
}

func (f *nscFixture) account(name string, ac *jwt.AccountClaims, signer nkeys.KeyPair) {
	f.accountJWT[name] = encode(f.t, ac, signer)
	f.write(filepath.Join(f.stores, "ACME", "accounts", name, name+".jwt"), f.accountJWT[name])
}

func (f *nscFixture) user(account string, uc *jwt.UserClaims, signer, user nkeys.KeyPair) {
	token := encode(f.t, uc, signer)
	f.userJWT[uc.Name] = token
	f.write(filepath.Join(f.stores, "ACME", "accounts", account, "users", uc.Name+".jwt"), token)
	seed, _ := user.Seed()
	creds, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		f.t.Fatal(err)
	}
	f.write(f.credsPath(account, uc.Name), string(creds))
}

// credsPath is where nsc keeps a user's creds file: what the agent runs with.
func (f *nscFixture) credsPath(account, user string) string {
	return filepath.Join(f.keys, "creds", "ACME", account, user+".creds")
}

func (f *nscFixture) creds(account, user string) string {
	f.t.Helper()
	b, err := os.ReadFile(f.credsPath(account, user))
	if err != nil {
		f.t.Fatal(err)
	}
	return string(b)
}

// secrets are every seed of the fixture, none of which may leak.
func (f *nscFixture) secrets() []string {
	var out []string
	for _, kp := range []nkeys.KeyPair{f.op, f.opSK, f.sys, f.app, f.appSK, f.alice, f.bob, f.sysU} {
		seed, _ := kp.Seed()
		out = append(out, string(seed))
	}
	return out
}

type encoder interface {
	Encode(nkeys.KeyPair) (string, error)
}

func encode(t testing.TB, c encoder, kp nkeys.KeyPair) string {
	t.Helper()
	token, err := c.Encode(kp)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

func pubOf(t testing.TB, kp nkeys.KeyPair) string {
	t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// newImportEnv is an env on a fresh database where nothing ran yet: no
// init, no rotatord. Start rotatord with e.serve once something is imported.
func newImportEnv(t testing.TB) *env {
	t.Helper()
	return newBareEnv(t, pgtest.New(t))
}

// cli runs a rotatord command against e's database and master key.
func (e *env) cli(args ...string) (stdout, stderr string, err error) {
	e.t.Helper()
	var out, errOut bytes.Buffer
	args = append(args, "--database-url", e.dbURL)
	if args[0] != "token" && args[0] != "nats-config" {
		args = append(args, "--master-key-file", e.keyFile)
	}
	err = run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// serve creates an admin token and starts rotatord.
func (e *env) serve() {
	e.t.Helper()
	out, _, err := e.cli("token", "create", "--name", "admin", "--scope", "admin")
	if err != nil {
		e.t.Fatalf("token create: %v", err)
	}
	e.admin = strings.TrimSpace(out)
	e.main = e.startMain(e.config())
}

func (f *nscFixture) storeArgs() []string {
	return []string{"import", "--store", f.stores, "--keys", f.keys}
}

func (e *env) auditCount() int {
	e.t.Helper()
	store, err := registry.Open(context.Background(), e.dbURL)
	if err != nil {
		e.t.Fatal(err)
	}
	defer store.Close()
	var n int
	if err := store.Pool().QueryRow(context.Background(), `SELECT count(*) FROM audit_events`).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) hasOperator() bool {
	e.t.Helper()
	store, err := registry.Open(context.Background(), e.dbURL)
	if err != nil {
		e.t.Fatal(err)
	}
	defer store.Close()
	_, err = store.Operator(context.Background())
	if err != nil && !errors.Is(err, rotatord.ErrNotFound) {
		e.t.Fatal(err)
	}
	return err == nil
}

func TestImportNSCStore(t *testing.T) {
	t.Parallel()
	f := newNSCFixture(t, fixtureOptions{})
	e := newImportEnv(t)

	// A dry run shows the plan and changes nothing.
	out, _, err := e.cli(append(f.storeArgs(), "--dry-run")...)
	if err != nil {
		t.Fatalf("import --dry-run: %v\n%s", err, out)
	}
	for _, want := range []string{"dry run", "would import 1 operator, 2 accounts, 2 agents", pubOf(t, f.alice), "skip"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
	if e.hasOperator() {
		t.Fatal("a dry run stored the operator")
	}

	out, stderr, err := e.cli(f.storeArgs()...)
	if err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	t.Logf("import output:\n%s", out)
	if !strings.Contains(out, "imported 1 operator, 2 accounts, 2 agents") {
		t.Fatalf("import output:\n%s", out)
	}
	// The system account's user is not an agent.
	if !strings.Contains(out, "user") || !strings.Contains(out, pubOf(t, f.sysU)) {
		t.Errorf("import output does not report the skipped system user:\n%s", out)
	}
	for _, s := range f.secrets() {
		if strings.Contains(out+stderr, s) {
			t.Fatal("the import output holds a seed")
		}
	}

	// The same operator: its JWT is kept as it is, so servers keep trusting it.
	e.serve()
	op, err := e.main.Store.Operator(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if op.JWT != f.opJWT || op.SystemAccount != pubOf(t, f.sys) || op.Name != "ACME" {
		t.Fatalf("stored operator = %+v, want the imported one", op)
	}
	app := e.must(200, "GET", "/v1/accounts/APP", nil)
	if app["public_key"] != pubOf(t, f.app) || app["description"] != "the application" {
		t.Fatalf("account APP = %v", app)
	}
	// rotatord may not know every user of an imported account: no '*'.
	if app["keep_revocations"] != true {
		t.Fatalf("imported account APP keep_revocations = %v, want true", app["keep_revocations"])
	}
	// APP's JWT needed nothing rotatord does not hold: kept byte for byte.
	if jwtOf := e.accountJWT(pubOf(t, f.app)); jwtOf != f.accountJWT["APP"] {
		t.Error("APP's JWT was re-signed although rotatord holds its signing key")
	}
	// Once rotatord manages every user, folding can be turned on.
	if got := e.must(200, "PATCH", "/v1/accounts/APP", map[string]any{"keep_revocations": false}); got["keep_revocations"] != false {
		t.Fatalf("PATCH keep_revocations false = %v", got)
	}
	// SYS had no signing key: rotatord made one and re-signed SYS with it.
	sysClaims, err := jwt.DecodeAccountClaims(e.accountJWT(pubOf(t, f.sys)))
	if err != nil || len(sysClaims.SigningKeys) != 1 || sysClaims.Issuer != pubOf(t, f.opSK) {
		t.Fatalf("SYS JWT: %v, signing keys %v, issuer %v", err, sysClaims.SigningKeys, sysClaims.Issuer)
	}
	// nsc's system account exports its monitoring subjects: the re-signed
	// JWT keeps them.
	if len(sysClaims.Exports) != 2 {
		t.Fatalf("SYS JWT exports = %v, want nsc's two", sysClaims.Exports)
	}
	alice := e.must(200, "GET", "/v1/agents/alice", nil)
	cred := alice["credential"].(map[string]any)
	if cred["public_key"] != pubOf(t, f.alice) || alice["account"] != "APP" || alice["delivery"] != "poll" {
		t.Fatalf("agent alice = %v", alice)
	}
	perms, _ := json.Marshal(alice["permissions"])
	want, _ := json.Marshal(rotatord.Permissions{
		Pub: rotatord.PermissionList{Allow: []string{"orders.>", "_INBOX.>"}, Deny: []string{"orders.secret"}},
		Sub: rotatord.PermissionList{Allow: []string{"orders.>", "_INBOX.>"}, Deny: []string{}},
	})
	if string(perms) != string(want) {
		t.Errorf("alice's permissions = %s, want %s", perms, want)
	}
	bob := e.must(200, "GET", "/v1/agents/bob", nil)
	bobClaims, _ := jwt.DecodeUserClaims(f.userJWT["bob"])
	got, _ := time.Parse(time.RFC3339, bob["credential"].(map[string]any)["expires_at"].(string))
	if got.Unix() != bobClaims.Expires {
		t.Errorf("bob's credential expires %v, want the JWT's expiry %v", got, time.Unix(bobClaims.Expires, 0))
	}
	e.must(404, "GET", "/v1/agents/sys", nil)

	e.startNATS()
	e.waitNATS()

	// The agents' old creds files keep working, with their permissions.
	violations := make(chan error, 10)
	nc, err := nats.Connect(e.ns.ClientURL(), nats.UserCredentials(f.credsPath("APP", "alice")), nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
	if err != nil {
		t.Fatalf("alice connects with her nsc creds: %v", err)
	}
	sub, err := nc.SubscribeSync("orders.>")
	if err != nil {
		t.Fatal(err)
	}
	nc.Publish("orders.new", []byte("1"))
	if m, err := sub.NextMsg(3 * time.Second); err != nil || string(m.Data) != "1" {
		t.Fatalf("alice pub/sub: %v, %v", m, err)
	}
	nc.Publish("billing.charge", []byte("x"))
	select {
	case err := <-violations:
		if !strings.Contains(err.Error(), "Permissions Violation") {
			t.Fatalf("denied publish: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("alice published outside her permissions without a violation")
	}
	nc.Close()
	bobConn, err := connectCreds(e, f.creds("APP", "bob"))
	if err != nil {
		t.Fatalf("bob connects with his nsc creds: %v", err)
	}
	bobConn.Close()

	// Rotate alice through rotatord: she polls with her old key's proof.
	a, err := agent.New(agent.Config{Server: e.main.URL(), Name: "alice", Creds: []byte(f.creds("APP", "alice"))})
	if err != nil {
		t.Fatal(err)
	}
	anc, err := a.Connect(e.ns.ClientURL())
	if err != nil {
		t.Fatalf("alice connects through pkg/agent: %v", err)
	}
	t.Cleanup(anc.Close)
	started := e.must(202, "POST", "/v1/agents/alice/rotate", nil)
	if got, err := a.Refresh(context.Background()); err != nil || !got {
		t.Fatalf("alice refresh = %v, %v; want new creds", got, err)
	}
	r := e.waitRotation(started["id"].(string), "completed")
	if r["old_public_key"] != pubOf(t, f.alice) || r["new_public_key"] != a.PublicKey() {
		t.Fatalf("rotation = %v", r)
	}
	eventually(t, 10*time.Second, "alice's nsc creds to be refused", func() bool {
		c, err := connectCreds(e, f.creds("APP", "alice"))
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	// The re-signed APP keeps the signing key that issued bob's JWT.
	appClaims, err := jwt.DecodeAccountClaims(e.accountJWT(pubOf(t, f.app)))
	if err != nil || !appClaims.SigningKeys.Contains(pubOf(t, f.appSK)) {
		t.Fatalf("re-signed APP: %v, signing keys %v", err, appClaims.SigningKeys)
	}
	if bobConn, err = connectCreds(e, f.creds("APP", "bob")); err != nil {
		t.Fatalf("bob after alice's rotation: %v", err)
	}
	bobConn.Close()

	// Importing again changes nothing, even after the rotation.
	events, appJWT := e.auditCount(), e.accountJWT(pubOf(t, f.app))
	out, _, err = e.cli(f.storeArgs()...)
	if err != nil {
		t.Fatalf("second import: %v\n%s", err, out)
	}
	if !strings.Contains(out, "nothing to import") || strings.Contains(out, "\timport\t") {
		t.Fatalf("second import output:\n%s", out)
	}
	if n := e.auditCount(); n != events {
		t.Errorf("second import wrote %d audit events", n-events)
	}
	if e.accountJWT(pubOf(t, f.app)) != appJWT {
		t.Error("second import changed APP's JWT")
	}
	// A user added in nsc since joins as a new agent of the imported account.
	carolKey, _ := nkeys.CreateUser()
	carol := jwt.NewUserClaims(pubOf(t, carolKey))
	carol.Name = "carol"
	carol.IssuerAccount = pubOf(t, f.app)
	f.user("APP", carol, f.appSK, carolKey)
	out, _, err = e.cli(f.storeArgs()...)
	if err != nil || !strings.Contains(out, "imported 1 agent\n") {
		t.Fatalf("import of a new user = %v:\n%s", err, out)
	}
	if c, err := connectCreds(e, f.creds("APP", "carol")); err != nil {
		t.Fatalf("carol connects with her nsc creds: %v", err)
	} else {
		c.Close()
	}
	// carol has no permissions, which NATS reads as everything: rotatord
	// keeps that meaning, so its default deny does not lock her out at her
	// first rotation. Her credential records the key that signed it.
	carolAgent := e.must(200, "GET", "/v1/agents/carol", nil)
	carolPerms, _ := json.Marshal(carolAgent["permissions"])
	if string(carolPerms) != `{"pub":{"allow":["\u003e"],"deny":[]},"sub":{"allow":["\u003e"],"deny":[]}}` {
		t.Errorf("carol's permissions = %s, want '>' allowed both ways", carolPerms)
	}
	if signer := carolAgent["credential"].(map[string]any)["signing_key"]; signer != pubOf(t, f.appSK) {
		t.Errorf("carol's credential signed by %v, want APP's signing key %s", signer, pubOf(t, f.appSK))
	}

	// What was imported is audited, without a seed.
	audit := e.must(200, "GET", "/v1/audit?limit=1000", nil)
	raw, _ := json.Marshal(audit)
	for _, want := range []string{"operator.import", "account.import", "agent.import", "credential.import"} {
		if !bytes.Contains(raw, []byte(`"`+want+`"`)) {
			t.Errorf("audit lacks %s", want)
		}
	}
	for _, s := range f.secrets() {
		if bytes.Contains(raw, []byte(s)) || strings.Contains(e.logs.String(), s) {
			t.Fatal("a seed appears in the audit trail or the logs")
		}
	}
}

// accountJWT is the account JWT rotatord's resolver serves.
func (e *env) accountJWT(pub string) string {
	e.t.Helper()
	status, body := e.do("GET", "/jwt/v1/accounts/"+pub, "", nil)
	if status != 200 {
		e.t.Fatalf("GET account jwt %s = %d", pub, status)
	}
	return string(body)
}

func TestImportNeedsOperatorSeed(t *testing.T) {
	t.Parallel()
	f := newNSCFixture(t, fixtureOptions{noOperatorSeeds: true})
	e := newImportEnv(t)
	_, _, err := e.cli(f.storeArgs()...)
	if err == nil {
		t.Fatal("import without an operator seed succeeded")
	}
	for _, want := range []string{"operator ACME", pubOf(t, f.op), pubOf(t, f.opSK), "seed", "--operator-seed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if e.hasOperator() {
		t.Fatal("a refused import stored the operator")
	}

	// The seed of the operator's signing key alone is enough: rotatord does
	// not need the operator's identity.
	seed, _ := f.opSK.Seed()
	seedFile := filepath.Join(t.TempDir(), "op-signing.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, _, err := e.cli(append(f.storeArgs(), "--operator-seed", seedFile, "--fold-revocations")...); err != nil {
		t.Fatalf("import with the signing key's seed: %v\n%s", err, out)
	}
	if !e.hasOperator() {
		t.Fatal("no operator after the import")
	}
	// --fold-revocations: rotatord manages every user, as for its own accounts.
	store, err := registry.Open(context.Background(), e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if app, err := store.FindAccountByName(context.Background(), "APP"); err != nil || app.KeepRevocations {
		t.Fatalf("APP after --fold-revocations: %v, keep revocations %v; want false", err, app != nil && app.KeepRevocations)
	}
}

func TestImportMalformedJWT(t *testing.T) {
	t.Parallel()
	f := newNSCFixture(t, fixtureOptions{})
	garbage := filepath.Join(t.TempDir(), "garbage.jwt")
	if err := os.WriteFile(garbage, []byte("eyJ0eXAiOiJKV1QifQ.not-a-jwt\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bobFile := filepath.Join(f.stores, "ACME", "accounts", "APP", "users", "bob.jwt")
	for _, c := range []struct {
		name string
		args []string
		file string
		want string
	}{
		{"store user", f.storeArgs(), bobFile, "not a valid user JWT"},
		{"loose account", []string{"import", "--operator-jwt", filepath.Join(f.stores, "ACME", "ACME.jwt"), "--keys", f.keys,
			"--account-jwt", garbage}, garbage, "not a valid account JWT"},
		{"loose operator", []string{"import", "--operator-jwt", garbage, "--keys", f.keys}, garbage, "not a valid operator JWT"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newImportEnv(t)
			if c.file == bobFile {
				f.write(bobFile, "this is not a JWT")
				defer f.write(bobFile, f.userJWT["bob"])
			}
			_, _, err := e.cli(c.args...)
			if err == nil || !strings.Contains(err.Error(), c.file) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("import = %v; want an error naming %s: %s", err, c.file, c.want)
			}
			if e.hasOperator() {
				t.Fatal("a refused import stored the operator")
			}
		})
	}
}

// Loose files: an operator JWT, account JWTs, a creds file and seed files.
func TestImportLooseFiles(t *testing.T) {
	t.Parallel()
	f := newNSCFixture(t, fixtureOptions{})
	e := newImportEnv(t)
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	seedFile := func(name string, kp nkeys.KeyPair) string {
		seed, _ := kp.Seed()
		return file(name, string(seed))
	}
	args := []string{"import",
		"--operator-jwt", file("op.jwt", f.opJWT),
		"--account-jwt", file("sys.jwt", f.accountJWT["SYS"]),
		"--account-jwt", file("app.jwt", f.accountJWT["APP"]),
		"--creds", f.credsPath("APP", "alice"),
		"--operator-seed", seedFile("op.nk", f.op),
		"--account-seed", seedFile("sys.nk", f.sys),
		"--seed", seedFile("app-sk.nk", f.appSK),
	}
	out, _, err := e.cli(append(args, "--dry-run")...)
	if err != nil || !strings.Contains(out, "would import 1 operator, 2 accounts, 1 agent") {
		t.Fatalf("dry run = %v:\n%s", err, out)
	}
	if e.hasOperator() {
		t.Fatal("a dry run stored the operator")
	}
	// A user seed is refused: agents keep theirs.
	if _, _, err := e.cli(append(args, "--seed", seedFile("alice.nk", f.alice))...); err == nil || !strings.Contains(err.Error(), "user seed") {
		t.Fatalf("import with a user seed = %v; want a refusal", err)
	}
	out, _, err = e.cli(args...)
	if err != nil || !strings.Contains(out, "imported 1 operator, 2 accounts, 1 agent") {
		t.Fatalf("import = %v:\n%s", err, out)
	}
	// Only the operator's identity seed was given: rotatord signs with it.
	if !strings.Contains(out, "signs with the operator key itself") {
		t.Errorf("import output does not say the operator key signs:\n%s", out)
	}
	out, _, err = e.cli(args...)
	if err != nil || !strings.Contains(out, "nothing to import") {
		t.Fatalf("second import = %v:\n%s", err, out)
	}
}

// Claims rotatord does not model are reported and refused unless dropped
// on purpose; the ones it models (a user's response permissions and source
// networks, an account's imports and JetStream) are kept.
func TestImportUnmodeled(t *testing.T) {
	t.Parallel()
	f := newNSCFixture(t, fixtureOptions{
		appClaims: func(f *nscFixture, ac *jwt.AccountClaims) {
			// An import of the system account's export makes that export used.
			ac.Imports.Add(&jwt.Import{Name: "monitoring", Subject: jwt.Subject("$SYS.ACCOUNT." + ac.Subject + ".>"),
				Account: pubOf(f.t, f.sys), Type: jwt.Stream})
			ac.Limits.JetStreamLimits.DiskStorage = 1 << 30
		},
		aliceClaims: func(uc *jwt.UserClaims) {
			uc.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Second}
			uc.Src.Add("10.0.0.0/8")
			uc.BearerToken = true
		},
	})
	e := newImportEnv(t)
	out, _, err := e.cli(f.storeArgs()...)
	if err == nil {
		t.Fatalf("import of unmodeled claims succeeded:\n%s", out)
	}
	for _, want := range []string{"user alice: bearer_token", "--drop-unmodeled"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	for _, modeled := range []string{"user alice: resp", "user alice: src"} {
		if strings.Contains(err.Error(), modeled) {
			t.Errorf("error lists %q, which rotatord models:\n%v", modeled, err)
		}
	}
	// Account claims rotatord does not model are kept, not refused.
	for _, kept := range []string{"account APP", "account SYS"} {
		if strings.Contains(err.Error(), kept) {
			t.Errorf("error lists %s, whose claims rotatord keeps:\n%v", kept, err)
		}
	}
	if e.hasOperator() {
		t.Fatal("a refused import stored the operator")
	}
	out, _, err = e.cli(append(f.storeArgs(), "--drop-unmodeled")...)
	if err != nil {
		t.Fatalf("import --drop-unmodeled: %v\n%s", err, out)
	}
	if !strings.Contains(out, "user alice: bearer_token") {
		t.Errorf("import output does not list what was dropped:\n%s", out)
	}
	// alice keeps her response permissions and source networks.
	e.serve()
	alice := e.must(200, "GET", "/v1/agents/alice", nil)
	if resp, _ := alice["permissions"].(map[string]any)["resp"].(map[string]any); resp["max"] != float64(1) || fmt.Sprint(alice["src"]) != "[10.0.0.0/8]" {
		t.Errorf("alice after the import: permissions %v, src %v", alice["permissions"], alice["src"])
	}
	// A re-sign (bob revoked) keeps APP's import and JetStream limit.
	e.must(200, "POST", "/v1/agents/bob/revoke", nil)
	ac, err := jwt.DecodeAccountClaims(e.accountJWT(pubOf(t, f.app)))
	if err != nil || len(ac.Imports) != 1 || ac.Limits.DiskStorage != 1<<30 || !ac.SigningKeys.Contains(pubOf(t, f.appSK)) ||
		len(ac.Revocations) != 1 {
		t.Fatalf("APP after a re-sign: %v, imports %v, limits %+v, signing keys %v, revocations %v",
			err, ac.Imports, ac.Limits, ac.SigningKeys, ac.Revocations)
	}
	sys, err := jwt.DecodeAccountClaims(e.accountJWT(pubOf(t, f.sys)))
	if err != nil || len(sys.Exports) == 0 {
		t.Fatalf("SYS lost its exports: %v, %v", err, sys.Exports)
	}
}
