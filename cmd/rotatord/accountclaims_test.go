package main

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// The account claims round-trip: what POST and PATCH take is what GET
// shows (normalized as nsc does) and what the account JWT says; mappings
// are applied by the server.
func TestAccountClaimsRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startNATS()
	e.waitNATS()
	ext, _ := nkeys.CreateAccount()
	extKey := pubOf(t, ext)
	revoked := newPublicKey(t, nkeys.PrefixByteAccount)
	body := map[string]any{
		"name": "fleet", "description": "build agents",
		"limits": map[string]any{"conn": 100, "subs": 1000, "payload": 1 << 20, "data": -1, "imports": 5, "exports": 5,
			"wildcards": true, "leaf": 2, "disallow_bearer": true},
		"jetstream": map[string]any{"tiers": map[string]any{
			"R1": map[string]any{"mem_storage": 1 << 20, "disk_storage": 8 << 20, "streams": 4},
			"R3": map[string]any{"mem_storage": 0, "disk_storage": 32 << 20, "max_bytes_required": true},
		}},
		"exports": []any{
			map[string]any{"name": "metrics", "subject": "metrics.*.>", "type": "stream", "account_token_position": 2,
				"advertise": true, "description": "per-account metrics", "info_url": "https://wiki.example.com/metrics"},
			map[string]any{"subject": "rpc.do", "type": "service", "token_req": true, "response_type": "Stream",
				"response_threshold": "2s", "service_latency": map[string]any{"sampling": "headers", "results": "latency.rpc"},
				"allow_trace": true, "revocations": map[string]any{revoked: 1700000000}},
		},
		"imports": []any{
			map[string]any{"name": "feed", "account": extKey, "subject": "ext.feed", "type": "stream", "local_subject": "feed", "allow_trace": true},
		},
		"default_permissions": map[string]any{"pub": map[string]any{"allow": []string{"app.>"}, "deny": []string{"app.secret"}},
			"sub": map[string]any{"allow": []string{"app.>", "_INBOX.>"}}},
		"mappings": map[string]any{
			"orders.*": []any{
				map[string]any{"subject": "orders.v1.{{wildcard(1)}}", "weight": 90},
				map[string]any{"subject": "orders.v2.{{wildcard(1)}}", "weight": 10},
			},
			"east.>": []any{map[string]any{"subject": "local.east.>", "cluster": "east"}},
		},
		"info_url": "https://wiki.example.com/fleet",
		"tags":     []string{"Team:Build", " env:prod ", "team:build"},
	}
	created := e.must(201, "POST", "/v1/accounts", body)
	got := e.must(200, "GET", "/v1/accounts/fleet", nil)
	for _, k := range []string{"limits", "jetstream", "exports", "imports", "default_permissions", "mappings", "info_url", "tags"} {
		if !reflect.DeepEqual(created[k], got[k]) {
			t.Errorf("%s: POST answered %v, GET %v", k, created[k], got[k])
		}
	}
	wantJSON := func(field, want string) {
		t.Helper()
		var w any
		if err := json.Unmarshal([]byte(want), &w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got[field], w) {
			g, _ := json.Marshal(got[field])
			t.Errorf("%s = %s\nwant %s", field, g, want)
		}
	}
	wantJSON("limits", `{"conn":100,"subs":1000,"payload":1048576,"data":-1,"imports":5,"exports":5,"wildcards":true,"leaf":2,"disallow_bearer":true}`)
	wantJSON("jetstream", `{"tiers":{
		"R1":{"mem_storage":1048576,"disk_storage":8388608,"streams":4,"consumer":-1,"max_ack_pending":-1,"mem_max_stream_bytes":-1,"disk_max_stream_bytes":-1,"max_bytes_required":false},
		"R3":{"mem_storage":0,"disk_storage":33554432,"streams":-1,"consumer":-1,"max_ack_pending":-1,"mem_max_stream_bytes":-1,"disk_max_stream_bytes":-1,"max_bytes_required":true}}}`)
	wantJSON("exports", `[
		{"name":"metrics","subject":"metrics.*.>","type":"stream","token_req":false,"account_token_position":2,"advertise":true,
		 "description":"per-account metrics","info_url":"https://wiki.example.com/metrics"},
		{"name":"rpc.do","subject":"rpc.do","type":"service","token_req":true,"response_type":"Stream","response_threshold":"2s",
		 "service_latency":{"sampling":"headers","results":"latency.rpc"},"allow_trace":true,"revocations":{"`+revoked+`":1700000000}}]`)
	wantJSON("imports", `[{"name":"feed","account":"`+extKey+`","subject":"ext.feed","type":"stream","local_subject":"feed","allow_trace":true}]`)
	wantJSON("default_permissions", `{"pub":{"allow":["app.>"],"deny":["app.secret"]},"sub":{"allow":["app.>","_INBOX.>"],"deny":[]}}`)
	wantJSON("mappings", `{"orders.*":[{"subject":"orders.v1.{{wildcard(1)}}","weight":90},{"subject":"orders.v2.{{wildcard(1)}}","weight":10}],
		"east.>":[{"subject":"local.east.>","weight":100,"cluster":"east"}]}`)
	wantJSON("tags", `["team:build","env:prod"]`)

	// The JWT says the same, in nats-io/jwt's terms.
	ac := e.accountClaims("fleet")
	l := ac.Limits
	if l.Conn != 100 || l.Subs != 1000 || l.Payload != 1<<20 || l.Data != -1 || l.Imports != 5 || l.Exports != 5 ||
		!l.WildcardExports || l.LeafNodeConn != 2 || !l.DisallowBearer {
		t.Errorf("JWT limits = %+v", l)
	}
	if len(l.JetStreamTieredLimits) != 2 || l.JetStreamTieredLimits["R1"].Streams != 4 || !l.JetStreamTieredLimits["R3"].MaxBytesRequired ||
		l.JetStreamLimits != (jwt.JetStreamLimits{}) || !l.IsJSEnabled() {
		t.Errorf("JWT JetStream = %+v / %+v", l.JetStreamLimits, l.JetStreamTieredLimits)
	}
	if len(ac.Exports) != 2 {
		t.Fatalf("JWT exports = %v", ac.Exports)
	}
	m, r := ac.Exports[0], ac.Exports[1]
	if m.Subject != "metrics.*.>" || m.AccountTokenPosition != 2 || !m.Advertise || m.InfoURL == "" || m.Type != jwt.Stream {
		t.Errorf("JWT metrics export = %+v", m)
	}
	if r.Subject != "rpc.do" || !r.TokenReq || r.ResponseType != jwt.ResponseTypeStream || r.ResponseThreshold != 2*time.Second ||
		r.Latency == nil || r.Latency.Sampling != jwt.Headers || r.Latency.Results != "latency.rpc" || !r.AllowTrace ||
		r.Revocations[revoked] != 1700000000 {
		t.Errorf("JWT rpc export = %+v", r)
	}
	if len(ac.Imports) != 1 || ac.Imports[0].Account != extKey || ac.Imports[0].LocalSubject != "feed" || !ac.Imports[0].AllowTrace {
		t.Errorf("JWT imports = %+v", ac.Imports)
	}
	if !reflect.DeepEqual([]string(ac.DefaultPermissions.Pub.Allow), []string{"app.>"}) || len(ac.DefaultPermissions.Sub.Allow) != 2 {
		t.Errorf("JWT default permissions = %+v", ac.DefaultPermissions)
	}
	if wm := ac.Mappings["orders.*"]; len(wm) != 2 || wm[0].Weight != 90 || ac.Mappings["east.>"][0].Cluster != "east" {
		t.Errorf("JWT mappings = %+v", ac.Mappings)
	}
	if ac.InfoURL != "https://wiki.example.com/fleet" || !reflect.DeepEqual([]string(ac.Tags), []string{"team:build", "env:prod"}) {
		t.Errorf("JWT info url %q, tags %v", ac.InfoURL, ac.Tags)
	}

	// The servers apply the mappings: every message to orders.<id> goes to
	// one of its destinations.
	nc, _ := connectAs(t, e.ns.ClientURL(), agentWith(e, "kate", "fleet", []string{"orders.>"}, []string{"orders.>"}))
	sub, _ := nc.SubscribeSync("orders.>")
	nc.Flush()
	for range 20 {
		nc.Publish("orders.42", []byte("x"))
	}
	for i := range 20 {
		msg, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("mapped message %d: %v", i, err)
		}
		if msg.Subject != "orders.v1.42" && msg.Subject != "orders.v2.42" {
			t.Fatalf("message to orders.42 arrived on %s, not a mapping's destination", msg.Subject)
		}
	}

	// PATCH changes what it names and nothing else.
	p := e.must(200, "PATCH", "/v1/accounts/fleet", map[string]any{
		"limits":    map[string]any{"conn": 200},
		"jetstream": map[string]any{"tiers": map[string]any{"R1": map[string]any{"streams": 3}}},
		"exports":   nil, // null: unchanged
		"tags":      []string{},
		"mappings":  map[string]any{},
	})
	if lim := p["limits"].(map[string]any); lim["conn"] != float64(200) || lim["subs"] != float64(1000) || lim["disallow_bearer"] != true {
		t.Errorf("limits after PATCH conn = %v", lim)
	}
	tiers := p["jetstream"].(map[string]any)["tiers"].(map[string]any)
	if r1 := tiers["R1"].(map[string]any); len(tiers) != 1 || r1["streams"] != float64(3) || r1["disk_storage"] != float64(8<<20) {
		t.Errorf("tiers after PATCH = %v", tiers)
	}
	if !reflect.DeepEqual(p["exports"], got["exports"]) || len(p["tags"].([]any)) != 0 || len(p["mappings"].(map[string]any)) != 0 {
		t.Errorf("after PATCH: exports %v, tags %v, mappings %v", p["exports"], p["tags"], p["mappings"])
	}
	// Flat limits replace tiers; {} keeps them; null turns JetStream off.
	p = e.must(200, "PATCH", "/v1/accounts/fleet", map[string]any{"jetstream": map[string]any{"disk_storage": 1 << 30}})
	wantFlat := map[string]any{"mem_storage": float64(-1), "disk_storage": float64(1 << 30), "streams": float64(-1), "consumer": float64(-1),
		"max_ack_pending": float64(-1), "mem_max_stream_bytes": float64(-1), "disk_max_stream_bytes": float64(-1), "max_bytes_required": false}
	if !reflect.DeepEqual(p["jetstream"], wantFlat) {
		t.Errorf("jetstream after flat PATCH = %v", p["jetstream"])
	}
	if p = e.must(200, "PATCH", "/v1/accounts/fleet", map[string]any{"jetstream": map[string]any{}}); !reflect.DeepEqual(p["jetstream"], wantFlat) {
		t.Errorf("jetstream after PATCH {} = %v", p["jetstream"])
	}
	if p = e.must(200, "PATCH", "/v1/accounts/fleet", map[string]any{"jetstream": nil}); p["jetstream"] != nil {
		t.Errorf("jetstream after PATCH null = %v", p["jetstream"])
	}
	if ac := e.accountClaims("fleet"); ac.Limits.IsJSEnabled() || len(ac.Limits.JetStreamTieredLimits) != 0 || len(ac.Mappings) != 0 || len(ac.Tags) != 0 {
		t.Errorf("JWT after PATCH: limits %+v, mappings %v, tags %v", ac.Limits, ac.Mappings, ac.Tags)
	}
	// An account made before gets the defaults of nsc.
	plain := e.must(200, "GET", "/v1/accounts/SYS", nil)
	if lim := plain["limits"].(map[string]any); lim["imports"] != float64(-1) || lim["wildcards"] != true || lim["leaf"] != float64(-1) {
		t.Errorf("system account limits = %v", lim)
	}
}

// Bad claims are refused with a 400 that says what is wrong.
func TestAccountClaimsValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "exporter", "exports": []any{
		map[string]any{"subject": "events.>", "type": "stream"},
		map[string]any{"subject": "svc.>", "type": "service", "token_req": true},
		map[string]any{"subject": "per.*.data", "type": "stream", "account_token_position": 2},
	}})
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "loop-a", "exports": []any{
		map[string]any{"subject": "q.>", "type": "service"}}})
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "loop-b",
		"exports": []any{map[string]any{"subject": "q.>", "type": "service"}},
		"imports": []any{map[string]any{"account": "loop-a", "subject": "q.>", "type": "service"}}})
	external := newPublicKey(t, nkeys.PrefixByteAccount)
	imp := func(fields map[string]any) map[string]any {
		return map[string]any{"name": "x", "imports": []any{fields}}
	}
	cases := []struct {
		name string
		body map[string]any
		want string
	}{
		{"unknown export field", map[string]any{"name": "x", "exports": []any{map[string]any{"subject": "a", "type": "stream", "bogus": 1}}}, "unknown field"},
		{"bad export type", map[string]any{"name": "x", "exports": []any{map[string]any{"subject": "a", "type": "queue"}}}, "not stream or service"},
		{"bad subject", map[string]any{"name": "x", "exports": []any{map[string]any{"subject": "a..b", "type": "stream"}}}, "empty token"},
		{"overlapping exports", map[string]any{"name": "x", "exports": []any{
			map[string]any{"subject": "a.>", "type": "stream"}, map[string]any{"subject": "a.b", "type": "stream"}}}, "overlaps"},
		{"response type on a stream", map[string]any{"name": "x", "exports": []any{
			map[string]any{"subject": "a", "type": "stream", "response_type": "Stream"}}}, "for services"},
		{"bad response type", map[string]any{"name": "x", "exports": []any{
			map[string]any{"subject": "a", "type": "service", "response_type": "Many"}}}, "Singleton, Stream, Chunked"},
		{"token position not a wildcard", map[string]any{"name": "x", "exports": []any{
			map[string]any{"subject": "a.b", "type": "stream", "account_token_position": 2}}}, "account_token_position"},
		{"bad threshold", map[string]any{"name": "x", "exports": []any{
			map[string]any{"subject": "a", "type": "service", "response_threshold": "soon"}}}, "response_threshold"},
		{"latency sampling", map[string]any{"name": "x", "exports": []any{
			map[string]any{"subject": "a", "type": "service", "service_latency": map[string]any{"sampling": 200, "results": "l"}}}}, "sampling"},
		{"wildcards not allowed", map[string]any{"name": "x", "limits": map[string]any{"wildcards": false},
			"exports": []any{map[string]any{"subject": "a.*", "type": "stream"}}}, "limits.wildcards"},
		{"too many exports", map[string]any{"name": "x", "limits": map[string]any{"exports": 0},
			"exports": []any{map[string]any{"subject": "a", "type": "stream"}}}, "limits.exports"},
		{"import of no export", imp(map[string]any{"account": "exporter", "subject": "other.>", "type": "stream"}), "has no stream export"},
		{"import of the wrong type", imp(map[string]any{"account": "exporter", "subject": "events.x", "type": "service"}), "has no service export"},
		{"import wider than the export", imp(map[string]any{"account": "exporter", "subject": ">", "type": "stream"}), "has no stream export"},
		{"import without its account token", imp(map[string]any{"account": "exporter", "subject": "per.*.data", "type": "stream"}), "public key"},
		{"import of an unknown account", imp(map[string]any{"account": "nobody", "subject": "a", "type": "stream"}), "neither an account of rotatord"},
		{"import from itself", imp(map[string]any{"account": "x", "subject": "a", "type": "stream"}), "itself"},
		{"token for an account of rotatord", imp(map[string]any{"account": "exporter", "subject": "svc.a", "type": "service",
			"token": "eyJ0eXAiOiJKV1QifQ.e30.c2ln"}), "leave token out"},
		{"bad external token", imp(map[string]any{"account": external, "subject": "a", "type": "stream",
			"token": "eyJ0eXAiOiJKV1QifQ.e30.c2ln"}), "not a valid activation token"},
		{"local subject without the wildcard", imp(map[string]any{"account": "exporter", "subject": "events.>", "type": "stream",
			"local_subject": "mine.x"}), "end in '>'"},
		{"duplicate import", map[string]any{"name": "x", "imports": []any{
			map[string]any{"account": "exporter", "subject": "events.>", "type": "stream"},
			map[string]any{"account": "exporter", "subject": "events.>", "type": "stream"}}}, "again"},
		{"both jetstream forms", map[string]any{"name": "x", "jetstream": map[string]any{"streams": 1, "tiers": map[string]any{"R1": map[string]any{}}}}, "not both"},
		{"bad tier", map[string]any{"name": "x", "jetstream": map[string]any{"tiers": map[string]any{"R9": map[string]any{}}}}, "R1 to R5"},
		{"no storage", map[string]any{"name": "x", "jetstream": map[string]any{"mem_storage": 0, "disk_storage": 0}}, "both 0"},
		{"stream bigger than storage", map[string]any{"name": "x", "jetstream": map[string]any{"mem_storage": 10, "mem_max_stream_bytes": 20}}, "more than mem_storage"},
		{"negative limit", map[string]any{"name": "x", "jetstream": map[string]any{"streams": -5}}, "use -1 for unlimited"},
		{"unknown jetstream field", map[string]any{"name": "x", "jetstream": map[string]any{"replicas": 3}}, "unknown field"},
		{"weights over 100", map[string]any{"name": "x", "mappings": map[string]any{"a": []any{
			map[string]any{"subject": "b", "weight": 60}, map[string]any{"subject": "c", "weight": 50}}}}, "more than 100"},
		{"bad mapping function", map[string]any{"name": "x", "mappings": map[string]any{"a.*": []any{
			map[string]any{"subject": "b.{{nonsense(1)}}"}}}}, "destination"},
		{"mapping without destination", map[string]any{"name": "x", "mappings": map[string]any{"a": []any{}}}, "no destination"},
		{"bad info url", map[string]any{"name": "x", "info_url": "not a url"}, "info_url"},
		{"tag with a space", map[string]any{"name": "x", "tags": []string{"a b"}}, "holds a space"},
		{"bad default permissions", map[string]any{"name": "x", "default_permissions": map[string]any{"pub": map[string]any{"allow": []string{"a.>.b"}}}}, "default_permissions"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, out := e.do("POST", "/v1/accounts", e.admin, c.body)
			var eb struct{ Error, Code string }
			json.Unmarshal(out, &eb)
			if status != 400 || eb.Code != "invalid" || !strings.Contains(eb.Error, c.want) {
				t.Fatalf("POST = %d %s; want 400 invalid with %q", status, out, c.want)
			}
		})
	}
	// Nothing was created.
	e.must(404, "GET", "/v1/accounts/x", nil)

	// loop-b imports loop-a's service: loop-a importing loop-b's would loop.
	status, out := e.do("PATCH", "/v1/accounts/loop-a", e.admin, map[string]any{"imports": []any{
		map[string]any{"account": "loop-b", "subject": "q.>", "type": "service", "local_subject": "q.>"}}})
	if status != 400 || !strings.Contains(string(out), "cycle: loop-a → loop-b → loop-a") {
		t.Fatalf("PATCH that makes a service import cycle = %d %s", status, out)
	}
	// Streams too, when the loop re-exports what it imports.
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "s-a", "exports": []any{map[string]any{"subject": "s.>", "type": "stream"}}})
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "s-b", "exports": []any{map[string]any{"subject": "s.>", "type": "stream"}},
		"imports": []any{map[string]any{"account": "s-a", "subject": "s.>", "type": "stream"}}})
	status, out = e.do("PATCH", "/v1/accounts/s-a", e.admin, map[string]any{"imports": []any{
		map[string]any{"account": "s-b", "subject": "s.>", "type": "stream"}}})
	if status != 400 || !strings.Contains(string(out), "cycle") {
		t.Fatalf("PATCH that makes a stream import cycle = %d %s", status, out)
	}

	// The system account keeps rotatord's own connection working; its
	// exports, info URL and tags may change.
	for _, c := range []struct {
		body map[string]any
		want string
	}{
		{map[string]any{"jetstream": map[string]any{}}, "JetStream"},
		{map[string]any{"default_permissions": map[string]any{"pub": map[string]any{"deny": []string{">"}}}}, "default_permissions"},
		{map[string]any{"mappings": map[string]any{"$SYS.>": []any{map[string]any{"subject": "x.>"}}}}, "mappings"},
		{map[string]any{"imports": []any{map[string]any{"account": "exporter", "subject": "events.>", "type": "stream"}}}, "imports"},
	} {
		status, out := e.do("PATCH", "/v1/accounts/SYS", e.admin, c.body)
		if status != 409 || !strings.Contains(string(out), c.want) || !strings.Contains(string(out), "own NATS connection") {
			t.Errorf("PATCH SYS %v = %d %s; want 409 with %q", c.body, status, out, c.want)
		}
	}
	sys := e.must(200, "PATCH", "/v1/accounts/SYS", map[string]any{"exports": []any{
		map[string]any{"subject": "$SYS.ACCOUNT.*.CONNECT", "type": "stream", "account_token_position": 3}},
		"tags": []string{"role:system"}, "info_url": "https://wiki.example.com/sys"})
	if len(sys["exports"].([]any)) != 1 || sys["info_url"] != "https://wiki.example.com/sys" {
		t.Errorf("SYS after PATCH = %v", sys)
	}

	// A token from an account rotatord does not hold is checked against the
	// importing account: issued for it, of the right type, not expired.
	acc := e.must(201, "POST", "/v1/accounts", map[string]any{"name": "importer"})
	importerKey := acc["public_key"].(string)
	ext, _ := nkeys.CreateAccount()
	extKey := pubOf(t, ext)
	token := func(subject string, importer string, typ jwt.ExportType, exp time.Time) string {
		act := jwt.NewActivationClaims(importer)
		act.ImportSubject = jwt.Subject(subject)
		act.ImportType = typ
		act.Expires = exp.Unix()
		return encode(t, act, ext)
	}
	later := time.Now().Add(time.Hour)
	for _, c := range []struct {
		tok  string
		want string
	}{
		{token("feed.>", newPublicKey(t, nkeys.PrefixByteAccount), jwt.Stream, later), "issued for account"},
		{token("feed.>", importerKey, jwt.Service, later), "service import"},
		{token("other.>", importerKey, jwt.Stream, later), "does not hold"},
		{token("feed.>", importerKey, jwt.Stream, time.Now().Add(-time.Minute)), "expired"},
	} {
		status, out := e.do("PATCH", "/v1/accounts/importer", e.admin, map[string]any{"imports": []any{map[string]any{
			"account": extKey, "subject": "feed.x", "type": "stream", "token": c.tok}}})
		if status != 400 || !strings.Contains(string(out), c.want) {
			t.Errorf("PATCH with a token = %d %s; want 400 with %q", status, out, c.want)
		}
	}
	ok := token("feed.>", importerKey, jwt.Stream, later)
	e.must(200, "PATCH", "/v1/accounts/importer", map[string]any{"imports": []any{map[string]any{
		"account": extKey, "subject": "feed.x", "type": "stream", "token": ok}}})
	if ac := e.accountClaims("importer"); len(ac.Imports) != 1 || ac.Imports[0].Token != ok || ac.Imports[0].Account != extKey {
		t.Fatalf("importer's JWT imports = %+v", ac.Imports)
	}
}

// Account tags a role reads cannot go: nats-server would refuse every
// agent of the role.
func TestAccountTagsOfRoles(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet", "tags": []string{"region:eu"}})
	e.must(201, "POST", "/v1/accounts/fleet/roles", map[string]any{"name": "worker", "permissions": map[string]any{
		"pub": map[string]any{"allow": []string{"jobs.>"}, "deny": []string{"jobs.{{account-tag(region)}}.secret"}}}})
	status, out := e.do("PATCH", "/v1/accounts/fleet", e.admin, map[string]any{"tags": []string{"team:a"}})
	if status != 409 || !strings.Contains(string(out), "role worker") || !strings.Contains(string(out), "account-tag(region)") {
		t.Fatalf("PATCH that drops a tag a role reads = %d %s", status, out)
	}
	if got := e.must(200, "PATCH", "/v1/accounts/fleet", map[string]any{"tags": []string{"region:us", "team:a"}}); fmt.Sprint(got["tags"]) != "[region:us team:a]" {
		t.Fatalf("tags = %v", got["tags"])
	}
}
