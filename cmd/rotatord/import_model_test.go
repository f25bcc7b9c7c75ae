package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord/pkg/agent"
)

// An nsc store with JetStream tiers, exports, an import with an activation
// token nsc generated, mappings and the other account claims, a scoped
// signing key with a template and a user of it, and a user with response
// permissions, source networks and connect times: after the import
// rotatord models all of it (the scoped key is a role, its user an agent of
// the role), mints its own activation token, the old creds connect with
// their permissions, JetStream works, and the next rotations run through
// rotatord.
func TestImportAccountModel(t *testing.T) {
	t.Parallel()
	var other, otherSK, olga, workerSK, wendy nkeys.KeyPair
	var nscToken string
	f := newNSCFixture(t, fixtureOptions{
		appClaims: func(f *nscFixture, ac *jwt.AccountClaims) {
			ac.Limits.JetStreamTieredLimits["R1"] = jwt.JetStreamLimits{MemoryStorage: 16 << 20, DiskStorage: 64 << 20,
				Streams: 10, Consumer: 10, MaxAckPending: -1, MemoryMaxStreamBytes: -1, DiskMaxStreamBytes: -1}
			ac.Exports.Add(
				&jwt.Export{Name: "events", Subject: "app.events.>", Type: jwt.Stream},
				&jwt.Export{Name: "rpc", Subject: "app.rpc", Type: jwt.Service, TokenReq: true, ResponseType: jwt.ResponseTypeSingleton},
			)
			ac.Mappings["app.old.*"] = []jwt.WeightedMapping{{Subject: "app.events.$1"}}
			ac.Tags.Add("team:app")
			ac.InfoURL = "https://wiki.example.com/app"
			ac.Limits.LeafNodeConn = 3
			// Role "worker": its users may publish under their own name.
			workerSK, _ = nkeys.CreateAccount()
			us := jwt.NewUserScope()
			us.Key, us.Role = pubOf(t, workerSK), "worker"
			us.Template.Pub.Allow.Add("app.work.{{name()}}.>", "_INBOX.>")
			us.Template.Sub.Allow.Add("_INBOX.>")
			ac.SigningKeys.AddScopedSigner(us)
		},
		aliceClaims: func(uc *jwt.UserClaims) {
			uc.Pub.Allow.Add("$JS.API.>", "$JS.ACK.>", "app.>")
			uc.Sub.Allow.Add("app.rpc")
			// She answers requests through her response permission.
			uc.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
			uc.Src.Add("127.0.0.0/8")
			uc.Times = []jwt.TimeRange{{Start: "00:00:00", End: "23:59:59"}}
			uc.Locale = "UTC"
		},
		extra: func(f *nscFixture) []nkeys.KeyPair {
			other, _ = nkeys.CreateAccount()
			otherSK, _ = nkeys.CreateAccount()
			olga, _ = nkeys.CreateUser()
			// nsc generate activation: APP's signing key lets OTHER import app.rpc.
			act := jwt.NewActivationClaims(pubOf(t, other))
			act.ImportSubject = "app.rpc"
			act.ImportType = jwt.Service
			act.IssuerAccount = pubOf(t, f.app)
			nscToken = encode(t, act, f.appSK)
			oc := jwt.NewAccountClaims(pubOf(t, other))
			oc.Name = "OTHER"
			oc.SigningKeys.Add(pubOf(t, otherSK))
			oc.Imports.Add(
				&jwt.Import{Name: "app events", Subject: "app.events.>", Account: pubOf(t, f.app), Type: jwt.Stream, LocalSubject: "from-app.>"},
				&jwt.Import{Name: "app rpc", Subject: "app.rpc", Account: pubOf(t, f.app), Type: jwt.Service, Token: nscToken},
			)
			f.account("OTHER", oc, f.opSK)
			uc := jwt.NewUserClaims(pubOf(t, olga))
			uc.Name = "olga"
			uc.IssuerAccount = pubOf(t, other)
			uc.Pub.Allow.Add("app.rpc", "_INBOX.>")
			uc.Sub.Allow.Add("from-app.>", "_INBOX.>")
			f.user("OTHER", uc, otherSK, olga)
			// wendy is a user of role worker: her JWT carries no permissions.
			wendy, _ = nkeys.CreateUser()
			wc := jwt.NewUserClaims(pubOf(t, wendy))
			wc.Name = "wendy"
			wc.IssuerAccount = pubOf(t, f.app)
			wc.SetScoped(true)
			f.user("APP", wc, workerSK, wendy)
			return []nkeys.KeyPair{other, otherSK, olga, workerSK, wendy}
		},
	})
	e := newImportEnv(t)
	out, _, err := e.cli(f.storeArgs()...)
	if err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	t.Logf("import output:\n%s", out)
	for _, want := range []string{"imported 1 operator, 3 accounts, 4 agents", "JetStream tiers R1", "2 exports", "2 imports",
		"activation tokens minted by rotatord", "role worker (1 keys)", "wendy", "role worker"} {
		if !strings.Contains(out, want) {
			t.Errorf("import output lacks %q", want)
		}
	}
	e.serve()

	// rotatord models what the store held.
	app := e.must(200, "GET", "/v1/accounts/APP", nil)
	r1 := app["jetstream"].(map[string]any)["tiers"].(map[string]any)["R1"].(map[string]any)
	if r1["mem_storage"] != float64(16<<20) || r1["streams"] != float64(10) {
		t.Errorf("APP jetstream = %v", app["jetstream"])
	}
	if exps := app["exports"].([]any); len(exps) != 2 || exps[1].(map[string]any)["token_req"] != true {
		t.Errorf("APP exports = %v", app["exports"])
	}
	if m := app["mappings"].(map[string]any)["app.old.*"].([]any); len(m) != 1 || m[0].(map[string]any)["weight"] != float64(100) {
		t.Errorf("APP mappings = %v", app["mappings"])
	}
	if app["info_url"] != "https://wiki.example.com/app" || fmt.Sprint(app["tags"]) != "[team:app]" ||
		app["limits"].(map[string]any)["leaf"] != float64(3) {
		t.Errorf("APP info_url %v, tags %v, limits %v", app["info_url"], app["tags"], app["limits"])
	}
	oth := e.must(200, "GET", "/v1/accounts/OTHER", nil)
	imps := oth["imports"].([]any)
	if len(imps) != 2 {
		t.Fatalf("OTHER imports = %v", imps)
	}
	for _, im := range imps {
		im := im.(map[string]any)
		if im["account"] != pubOf(t, f.app) || im["token"] != nil {
			t.Errorf("OTHER import %v: want APP's key and no token of its own (rotatord mints it)", im)
		}
	}
	// The scoped key is role worker, wendy its agent; alice keeps every claim.
	role := e.must(200, "GET", "/v1/accounts/APP/roles/worker", nil)
	if role["signing_key"] != pubOf(t, workerSK) || fmt.Sprint(role["permissions"].(map[string]any)["pub"].(map[string]any)["allow"]) != "[app.work.{{name()}}.> _INBOX.>]" {
		t.Errorf("role worker = %v", role)
	}
	if w := e.must(200, "GET", "/v1/agents/wendy", nil); w["role"] != "worker" {
		t.Errorf("agent wendy = %v", w)
	}
	al := e.must(200, "GET", "/v1/agents/alice", nil)
	if al["permissions"].(map[string]any)["resp"] == nil || fmt.Sprint(al["src"]) != "[127.0.0.0/8]" || len(al["times"].([]any)) != 1 || al["times_location"] != "UTC" {
		t.Errorf("agent alice = %v", al)
	}
	// OTHER's JWT carries rotatord's token, signed by APP's signing key.
	token := importToken(t, e.accountClaims("OTHER"), jwt.Service, "app.rpc")
	act, err := jwt.DecodeActivationClaims(token)
	if err != nil || token == nscToken || act.Issuer != pubOf(t, f.appSK) || act.Expires == 0 || act.Subject != pubOf(t, other) {
		t.Fatalf("OTHER's activation token: %v, %+v", err, act)
	}

	e.startJetStreamNATS(nil)
	e.waitNATS()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The old creds connect, with their permissions.
	alice, aliceErrs := connectAs(t, e.ns.ClientURL(), f.creds("APP", "alice"))
	alice.Publish("billing.charge", []byte("x"))
	waitViolation(t, aliceErrs, "billing.charge")
	// JetStream works in the R1 tier.
	js := mustJS(t, alice)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"app.events.>"}, Replicas: 1}); err != nil {
		t.Fatalf("create stream in the imported account: %v", err)
	}
	// The import: OLGA gets APP's events and APP's service.
	olgaConn, _ := connectAs(t, e.ns.ClientURL(), f.creds("OTHER", "olga"))
	events, _ := olgaConn.SubscribeSync("from-app.>")
	olgaConn.Flush()
	if _, err := alice.Subscribe("app.rpc", func(m *nats.Msg) { m.Respond([]byte("ok")) }); err != nil {
		t.Fatal(err)
	}
	alice.Flush()
	if _, err := js.Publish(ctx, "app.events.1", []byte("e")); err != nil {
		t.Fatalf("publish to the stream: %v", err)
	}
	if m, err := events.NextMsg(5 * time.Second); err != nil || !strings.HasPrefix(m.Subject, "from-app.") {
		t.Fatalf("olga's imported event: %v, %v", m, err)
	}
	if m, err := olgaConn.Request("app.rpc", []byte("q"), 5*time.Second); err != nil || string(m.Data) != "ok" {
		t.Fatalf("olga's request to APP's service: %v, %v", m, err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "EVENTS", jetstream.ConsumerConfig{Durable: "reader", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil || string(msg.Data()) != "e" {
		t.Fatalf("consume the stream: %v, %v", msg, err)
	} else if err := msg.DoubleAck(ctx); err != nil {
		t.Fatalf("ack: %v", err)
	}

	// wendy's old creds connect and are held to the role's template.
	wendyConn, wendyErrs := connectAs(t, e.ns.ClientURL(), f.creds("APP", "wendy"))
	watcher, _ := connectAs(t, e.ns.ClientURL(), agentWith(e, "watcher", "APP", nil, []string{"app.work.>"}))
	got, _ := watcher.SubscribeSync("app.work.>")
	watcher.Flush()
	wendyConn.Publish("app.work.wendy.1", []byte("w"))
	if m, err := got.NextMsg(5 * time.Second); err != nil || m.Subject != "app.work.wendy.1" {
		t.Fatalf("wendy's publish within her role: %v, %v", m, err)
	}
	wendyConn.Publish("app.work.bob.1", []byte("w"))
	waitViolation(t, wendyErrs, "app.work.bob.1")

	// The next rotation runs through rotatord; JetStream still works with
	// the new key.
	a, err := agent.New(agent.Config{Server: e.main.URL(), Name: "alice", Creds: []byte(f.creds("APP", "alice"))})
	if err != nil {
		t.Fatal(err)
	}
	anc, err := a.Connect(e.ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(anc.Close)
	started := e.must(202, "POST", "/v1/agents/alice/rotate", nil)
	if got, err := a.Refresh(ctx); err != nil || !got {
		t.Fatalf("alice refresh = %v, %v", got, err)
	}
	e.waitRotation(started["id"].(string), "completed")
	// The old key is revoked now: its connection is dropped. The new one
	// publishes and consumes the same durable consumer.
	rotatedJS := mustJS(t, anc)
	if _, err := rotatedJS.Publish(ctx, "app.events.2", []byte("after")); err != nil {
		t.Fatalf("publish with the rotated key: %v", err)
	}
	rcons, err := rotatedJS.Consumer(ctx, "EVENTS", "reader")
	if err != nil {
		t.Fatalf("bind the consumer with the rotated key: %v", err)
	}
	if msg, err := rcons.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil || string(msg.Data()) != "after" {
		t.Fatalf("consume after the rotation: %v, %v", msg, err)
	}
	// wendy's next credentials are signed by the role's key.
	w, err := agent.New(agent.Config{Server: e.main.URL(), Name: "wendy", Creds: []byte(f.creds("APP", "wendy"))})
	if err != nil {
		t.Fatal(err)
	}
	wnc, err := w.Connect(e.ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wnc.Close)
	started = e.must(202, "POST", "/v1/agents/wendy/rotate", nil)
	if got, err := w.Refresh(ctx); err != nil || !got {
		t.Fatalf("wendy refresh = %v, %v", got, err)
	}
	e.waitRotation(started["id"].(string), "completed")
	wjwt, _ := jwt.ParseDecoratedJWT(w.CredsFile())
	if uc, err := jwt.DecodeUserClaims(wjwt); err != nil || uc.Issuer != pubOf(t, workerSK) || !uc.HasEmptyPermissions() {
		t.Fatalf("wendy's rotated JWT: %v, issuer %s", err, uc.Issuer)
	}
}

// An account imported before rotatord modeled exports, imports and
// JetStream has them only in its stored base claims: rotatord shows them,
// keeps them when it re-signs, and stores them in its model from then on.
func TestImportedBeforeClaimsModel(t *testing.T) {
	t.Parallel()
	f := newNSCFixture(t, fixtureOptions{appClaims: func(f *nscFixture, ac *jwt.AccountClaims) {
		ac.Imports.Add(&jwt.Import{Name: "monitoring", Subject: jwt.Subject("$SYS.ACCOUNT." + ac.Subject + ".>"),
			Account: pubOf(f.t, f.sys), Type: jwt.Stream})
		ac.Exports.Add(&jwt.Export{Name: "events", Subject: "app.events.>", Type: jwt.Stream})
		ac.Limits.JetStreamLimits.DiskStorage = 1 << 30
	}})
	e := newImportEnv(t)
	if out, _, err := e.cli(f.storeArgs()...); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	e.serve()
	ctx := context.Background()
	if _, err := e.main.Store.Pool().Exec(ctx, `UPDATE accounts SET claims = NULL WHERE name = 'APP'`); err != nil {
		t.Fatal(err)
	}
	app := e.must(200, "GET", "/v1/accounts/APP", nil)
	if len(app["exports"].([]any)) != 1 || len(app["imports"].([]any)) != 1 || app["jetstream"].(map[string]any)["disk_storage"] != float64(1<<30) {
		t.Fatalf("APP read from its base claims: exports %v, imports %v, jetstream %v", app["exports"], app["imports"], app["jetstream"])
	}
	e.must(200, "POST", "/v1/agents/bob/revoke", nil)
	ac := e.accountClaims("APP")
	if len(ac.Exports) != 1 || len(ac.Imports) != 1 || ac.Limits.DiskStorage != 1<<30 || len(ac.Revocations) != 1 {
		t.Fatalf("APP re-signed: exports %v, imports %v, limits %+v", ac.Exports, ac.Imports, ac.Limits)
	}
	var stored bool
	if err := e.main.Store.Pool().QueryRow(ctx, `SELECT claims IS NOT NULL FROM accounts WHERE name = 'APP'`).Scan(&stored); err != nil || !stored {
		t.Fatalf("APP's claims stored after the re-sign: %v, %v", stored, err)
	}
}
