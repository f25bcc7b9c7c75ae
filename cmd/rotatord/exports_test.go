package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/rotatord/rotatord/internal/rotate"
)

// accountClaims decodes the account JWT that the resolver serves for the
// named account.
func (e *env) accountClaims(name string) *jwt.AccountClaims {
	e.t.Helper()
	pub := e.must(200, "GET", "/v1/accounts/"+name, nil)["public_key"].(string)
	ac, err := jwt.DecodeAccountClaims(e.accountJWT(pub))
	if err != nil {
		e.t.Fatal(err)
	}
	return ac
}

// serverAccount is what a nats-server holds of an account: its JWT, and
// whether every import resolved and is valid.
func serverAccount(t testing.TB, ns *server.Server, pub string) (jwt string, ok bool) {
	t.Helper()
	az, err := ns.Accountz(&server.AccountzOptions{Account: pub})
	if err != nil || az.Account == nil {
		t.Fatalf("accountz %s: %v", pub, err)
	}
	ok = az.Account.Complete
	for _, im := range az.Account.Imports {
		ok = ok && !im.Invalid
	}
	return az.Account.Jwt, ok
}

// importToken returns the token of the account's import of subject of the
// given type (jwt.Stream or jwt.Service).
func importToken(t testing.TB, ac *jwt.AccountClaims, typ jwt.ExportType, subject string) string {
	t.Helper()
	for _, im := range ac.Imports {
		if im.Type == typ && string(im.Subject) == subject {
			return im.Token
		}
	}
	t.Fatalf("account %s has no %s import of %s: %v", ac.Name, typ, subject, ac.Imports)
	return ""
}

// Tenant A exports a stream and a token-required service; tenant B imports
// both. A B agent gets A's events on its local subject and a reply from an
// A agent's service; a B agent without the permissions, and an agent of an
// account without the imports, get nothing. rotatord mints B's activation
// token, renews it from Tick (once across replicas), and re-signs B when
// A's exports change; changes that break B's imports are refused.
func TestExportsImports(t *testing.T) {
	t.Parallel()
	e, clk := newClockedEnv(t)
	e.startNATS()
	e.waitNATS()

	a := e.must(201, "POST", "/v1/accounts", map[string]any{"name": "tenant-a", "exports": []any{
		map[string]any{"name": "events", "subject": "events.>", "type": "stream"},
		map[string]any{"name": "lookup", "subject": "svc.lookup", "type": "service", "token_req": true},
	}})
	aKey := a["public_key"].(string)
	b := e.must(201, "POST", "/v1/accounts", map[string]any{"name": "tenant-b", "imports": []any{
		// By name and by public key: both name an account of rotatord.
		map[string]any{"account": "tenant-a", "subject": "events.>", "type": "stream", "local_subject": "a.events.>"},
		map[string]any{"account": aKey, "subject": "svc.lookup", "type": "service", "local_subject": "a.lookup"},
	}})
	bKey := b["public_key"].(string)
	if imps := b["imports"].([]any); len(imps) != 2 || imps[0].(map[string]any)["name"] != "events.>" {
		t.Fatalf("tenant-b imports = %v", b["imports"])
	}
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "tenant-c"})

	// B's JWT carries an activation token for the service, signed by A's
	// signing key, and none for the public stream.
	bc := e.accountClaims("tenant-b")
	token := importToken(t, bc, jwt.Service, "svc.lookup")
	act, err := jwt.DecodeActivationClaims(token)
	if err != nil {
		t.Fatalf("activation token: %v", err)
	}
	aSigner := a["signing_keys"].([]any)[0].(string)
	if act.Subject != bKey || act.IssuerAccount != aKey || act.Issuer != aSigner || act.ImportType != jwt.Service ||
		act.ImportSubject != "svc.lookup" {
		t.Fatalf("activation claims = %+v", act)
	}
	if exp := time.Unix(act.Expires, 0); exp.Sub(clk.Now().Add(rotate.DefaultActivationLifetime)).Abs() > time.Minute {
		t.Fatalf("activation expires %v, want about %v from now", exp, rotate.DefaultActivationLifetime)
	}
	for _, im := range bc.Imports {
		if im.IsStream() && (im.Token != "" || im.Account != aKey || im.LocalSubject != "a.events.>") {
			t.Fatalf("stream import in B's JWT = %+v", im)
		}
	}

	// The responder answers through its response permission (allow
	// responses): replies go to _R_. subjects of A, which the service
	// import maps back to the requester.
	resp := e.must(201, "POST", "/v1/agents", map[string]any{"name": "a-svc", "account": "tenant-a",
		"permissions": map[string]any{"pub": map[string]any{"allow": []string{"events.>"}}, "sub": map[string]any{"allow": []string{"svc.lookup"}},
			"resp": map[string]any{"max": 1, "ttl": "1m"}}})
	responder, _ := connectAs(t, e.ns.ClientURL(), resp["creds"].(string))
	bApp, _ := connectAs(t, e.ns.ClientURL(), agentWith(e, "b-app", "tenant-b", []string{"a.lookup"}, []string{"a.events.>", "_INBOX.>"}))
	bOther, bOtherErrs := connectAs(t, e.ns.ClientURL(), agentWith(e, "b-other", "tenant-b", []string{"other.>"}, []string{"other.>", "_INBOX.>"}))
	cApp, _ := connectAs(t, e.ns.ClientURL(), agentWith(e, "c-app", "tenant-c", []string{">"}, []string{">"}))
	if _, err := responder.Subscribe("svc.lookup", func(m *nats.Msg) { m.Respond(append([]byte("pong:"), m.Data...)) }); err != nil {
		t.Fatal(err)
	}
	responder.Flush()
	events, _ := bApp.SubscribeSync("a.events.>")
	cEvents, _ := cApp.SubscribeSync("events.>")
	cLocal, _ := cApp.SubscribeSync("a.events.>")
	bOther.SubscribeSync("a.events.>")
	for _, nc := range []*nats.Conn{bApp, cApp, bOther} {
		nc.Flush()
	}

	responder.Publish("events.deploy", []byte("1"))
	if m, err := events.NextMsg(5 * time.Second); err != nil || m.Subject != "a.events.deploy" || string(m.Data) != "1" {
		t.Fatalf("B's event: %v, %v", m, err)
	}
	for _, sub := range []*nats.Subscription{cEvents, cLocal} {
		if m, err := sub.NextMsg(300 * time.Millisecond); err == nil {
			t.Fatalf("an account without the import got %s", m.Subject)
		}
	}
	request := func(nc *nats.Conn, subj string) (string, error) {
		m, err := nc.Request(subj, []byte("ping"), 3*time.Second)
		if err != nil {
			return "", err
		}
		return string(m.Data), nil
	}
	if got, err := request(bApp, "a.lookup"); err != nil || got != "pong:ping" {
		t.Fatalf("B's request to A's service = %q, %v", got, err)
	}
	// The server holds B with both imports valid, the token accepted.
	if _, ok := serverAccount(t, e.ns, bKey); !ok {
		t.Fatal("the server holds B with an invalid or incomplete import")
	}
	// B's JWT, as the server holds it, is the one rotatord serves.
	serverHasB := func(what string) {
		t.Helper()
		want := e.accountJWT(bKey)
		eventually(t, 10*time.Second, "the server to hold B's JWT "+what, func() bool {
			got, ok := serverAccount(t, e.ns, bKey)
			return got == want && ok
		})
	}
	for _, subj := range []string{"a.lookup", "svc.lookup"} {
		if got, err := request(cApp, subj); !errors.Is(err, nats.ErrNoResponders) {
			t.Fatalf("a request to %s from an account without the import = %q, %v; want no responders", subj, got, err)
		}
	}
	waitViolation(t, bOtherErrs, "a.events.>")
	if _, err := request(bOther, "a.lookup"); err == nil {
		t.Fatal("a B agent without the permission reached A's service")
	}
	waitViolation(t, bOtherErrs, "a.lookup")

	// Renewal: when a third of the token's lifetime is left, the next tick
	// re-signs B with a new token, once however many replicas tick.
	replica := e.startMain(e.config())
	clk.Advance(rotate.DefaultActivationLifetime*2/3 + time.Hour)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		renewed int
	)
	for _, m := range []*Main{e.main, replica, e.main, replica} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := m.Service.Tick(context.Background())
			if err != nil {
				t.Errorf("tick: %v", err)
			}
			mu.Lock()
			renewed += res.Activations
			mu.Unlock()
		}()
	}
	wg.Wait()
	if renewed != 1 {
		t.Fatalf("the ticks renewed %d accounts, want 1", renewed)
	}
	renewedToken := importToken(t, e.accountClaims("tenant-b"), jwt.Service, "svc.lookup")
	if renewedToken == token {
		t.Fatal("the activation token was not renewed")
	}
	if act, _ := jwt.DecodeActivationClaims(renewedToken); time.Unix(act.Expires, 0).Before(clk.Now().Add(rotate.DefaultActivationLifetime - time.Minute)) {
		t.Fatalf("renewed token expires %v", time.Unix(act.Expires, 0))
	}
	audit := e.must(200, "GET", "/v1/audit?action=account.renew_activations", nil)["events"].([]any)
	if len(audit) != 1 || audit[0].(map[string]any)["account"] != "tenant-b" {
		t.Fatalf("renewal audit = %v", audit)
	}
	serverHasB("with the renewed token")
	if res, err := e.main.Service.Tick(context.Background()); err != nil || res.Activations != 0 {
		t.Fatalf("a second tick = %+v, %v; want nothing to renew", res, err)
	}
	if got, err := request(bApp, "a.lookup"); err != nil || got != "pong:ping" {
		t.Fatalf("B's request after the renewal = %q, %v", got, err)
	}

	// A's exports change: B is re-signed (its token goes with token_req)
	// and pushed.
	e.must(200, "PATCH", "/v1/accounts/tenant-a", map[string]any{"exports": []any{
		map[string]any{"name": "events", "subject": "events.>", "type": "stream"},
		map[string]any{"name": "lookup", "subject": "svc.>", "type": "service"},
	}})
	if tok := importToken(t, e.accountClaims("tenant-b"), jwt.Service, "svc.lookup"); tok != "" {
		t.Fatal("B's import kept its token after the export stopped requiring one")
	}
	serverHasB("re-signed after A's exports changed")
	if got, err := request(bApp, "a.lookup"); err != nil || got != "pong:ping" {
		t.Fatalf("B's request after A's export changed = %q, %v", got, err)
	}
	update := e.must(200, "GET", "/v1/audit?action=account.update", nil)["events"].([]any)
	last := update[len(update)-1].(map[string]any)["details"].(map[string]any)
	if rs, _ := last["importers_resigned"].([]any); len(rs) != 1 || rs[0] != "tenant-b" {
		t.Fatalf("account.update audit = %v, want tenant-b re-signed", last)
	}

	// Revocations on the export: "*" refuses every token issued until then,
	// and rotatord mints B a new one; B's own key cuts B off, and rotatord
	// mints it none until the revocation goes.
	exportsWith := func(revs map[string]any) map[string]any {
		return map[string]any{"exports": []any{
			map[string]any{"name": "events", "subject": "events.>", "type": "stream"},
			map[string]any{"name": "lookup", "subject": "svc.>", "type": "service", "token_req": true, "revocations": revs},
		}}
	}
	cutAt := time.Now().Unix()
	e.must(200, "PATCH", "/v1/accounts/tenant-a", exportsWith(map[string]any{"*": cutAt}))
	fresh, err := jwt.DecodeActivationClaims(importToken(t, e.accountClaims("tenant-b"), jwt.Service, "svc.lookup"))
	if err != nil || fresh.IssuedAt <= cutAt {
		t.Fatalf("token after a '*' revocation at %d: %v, issued %d", cutAt, err, fresh.IssuedAt)
	}
	serverHasB("with a token issued after the revocation")
	if got, err := request(bApp, "a.lookup"); err != nil || got != "pong:ping" {
		t.Fatalf("B's request after a '*' revocation = %q, %v", got, err)
	}
	e.must(200, "PATCH", "/v1/accounts/tenant-a", exportsWith(map[string]any{bKey: time.Now().Unix()}))
	if tok := importToken(t, e.accountClaims("tenant-b"), jwt.Service, "svc.lookup"); tok != "" {
		t.Fatal("rotatord minted a token for an account the export revokes")
	}
	eventually(t, 10*time.Second, "B to be cut off", func() bool {
		_, err := request(bApp, "a.lookup")
		return err != nil
	})
	e.must(200, "PATCH", "/v1/accounts/tenant-a", exportsWith(nil))
	eventually(t, 10*time.Second, "B to reach A's service again", func() bool {
		got, err := request(bApp, "a.lookup")
		return err == nil && got == "pong:ping"
	})

	// What would leave B's imports without an export is refused.
	status, body := e.do("PATCH", "/v1/accounts/tenant-a", e.admin, map[string]any{"exports": []any{
		map[string]any{"name": "lookup", "subject": "svc.>", "type": "service"},
	}})
	if status != 409 || !strings.Contains(string(body), "tenant-b") || !strings.Contains(string(body), "events.>") {
		t.Fatalf("PATCH that drops an imported export = %d %s", status, body)
	}
	status, body = e.do("DELETE", "/v1/accounts/tenant-b", e.admin, nil)
	if status != 409 || !strings.Contains(string(body), "agents") {
		t.Fatalf("DELETE tenant-b = %d %s", status, body)
	}
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "tenant-d", "exports": []any{
		map[string]any{"subject": "d.>", "type": "stream"}}})
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "tenant-e", "imports": []any{
		map[string]any{"account": "tenant-d", "subject": "d.>", "type": "stream"}}})
	status, body = e.do("DELETE", "/v1/accounts/tenant-d", e.admin, nil)
	if status != 409 || !strings.Contains(string(body), "imported by tenant-e") {
		t.Fatalf("DELETE of an account others import from = %d %s", status, body)
	}
	e.must(200, "PATCH", "/v1/accounts/tenant-e", map[string]any{"imports": []any{}})
	e.must(204, "DELETE", "/v1/accounts/tenant-d", nil)
}
