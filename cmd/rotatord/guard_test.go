package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/rotatord/rotatord/internal/rotate"
)

// watchedConn connects creds to the env's nats-server and reports when
// the server drops the connection.
func watchedConn(e *env, creds string) (*nats.Conn, <-chan struct{}) {
	e.t.Helper()
	dropped := make(chan struct{})
	nc, err := nats.Connect(e.ns.ClientURL(), nats.UserCredentials(writeCreds(e.t, creds)), nats.NoReconnect(),
		nats.ClosedHandler(func(*nats.Conn) { close(dropped) }))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	return nc, dropped
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// nextSecond waits until the clock is past the second of at: JWT iats have
// one-second granularity, and the test needs credentials issued in
// different seconds.
func nextSecond(at time.Time) {
	for time.Now().Unix() <= at.Unix() {
		time.Sleep(10 * time.Millisecond)
	}
}

// servedJWT is the account JWT the resolver serves.
func (e *env) servedJWT(account string) *jwt.AccountClaims {
	e.t.Helper()
	pub := e.must(200, "GET", "/v1/accounts/"+account, nil)["public_key"].(string)
	status, body := e.do("GET", "/jwt/v1/accounts/"+pub, "", nil)
	if status != 200 {
		e.t.Fatalf("resolver = %d", status)
	}
	if int64(len(body)) > e.main.Config.MaxAccountJWTBytes {
		e.t.Fatalf("the resolver serves a %d-byte account JWT, over the %d-byte guard", len(body), e.main.Config.MaxAccountJWTBytes)
	}
	ac, err := jwt.DecodeAccountClaims(string(body))
	if err != nil {
		e.t.Fatal(err)
	}
	return ac
}

// A real nats-server, an account driven to the guard: every revocation
// is stored, served and pushed within the guard, and the revoked agent is
// dropped at once. The agent whose credential is older than every entry
// (cut off by the '*' entry that made room) is dropped too and made due
// for rotation; an agent issued after the entries stays connected.
func TestGuardRevocationLandsOnNATS(t *testing.T) {
	t.Parallel()
	const guard = 8 << 10
	e := newEnvWith(t, func(c *Config) {
		c.MaxAccountJWTBytes = guard
		c.TickSpec = "" // no early rotation gets in the way of reaching the guard
	})
	e.startNATS()
	e.waitNATS()
	if got := e.scrape()["rotatord_account_jwt_max_bytes"]; got != guard {
		t.Fatalf("rotatord_account_jwt_max_bytes = %v, want %d", got, guard)
	}
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	_, anchorCreds := createAgent(e, "anchor", "fleet")
	anchorAt := time.Now()
	nextSecond(anchorAt)
	for i := range 80 {
		createAgent(e, fmt.Sprintf("v%02d", i), "fleet")
	}
	_, targetCreds := createAgent(e, "target", "fleet")
	nextSecond(time.Now())
	_, bystanderCreds := createAgent(e, "bystander", "fleet")
	_, anchorDropped := watchedConn(e, anchorCreds)
	target, targetDropped := watchedConn(e, targetCreds)
	bystander, _ := watchedConn(e, bystanderCreds)

	revoke := func(name string) {
		t.Helper()
		res := e.must(200, "POST", "/v1/agents/"+name+"/revoke", map[string]any{"reason": "test"})
		if res["pushed"] != true {
			t.Fatalf("revoke %s = %v, want pushed", name, res)
		}
	}
	// Fill the account JWT to within one entry of the guard.
	for i := 79; i >= 0; i-- {
		revoke(fmt.Sprintf("v%02d", i))
		if ac := e.servedJWT("fleet"); ac.Revocations[jwt.All] != 0 {
			break // room was made already
		}
	}
	// One more revocation: it lands, within the guard.
	revoke("target")
	select {
	case <-targetDropped:
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked agent was not dropped within 10s")
	}
	ac := e.servedJWT("fleet")
	if ac.Revocations[jwt.All] == 0 {
		t.Fatalf("no '*' entry after %d revocations under an %d-byte guard", len(ac.Revocations), guard)
	}
	if target.IsConnected() {
		t.Fatal("the revoked agent is still connected")
	}
	// '*' refuses what was issued before it: the anchor is cut off and
	// rotated at once; the bystander is newer than every entry.
	eventually(t, 10*time.Second, "the anchor to be dropped by the '*' entry", func() bool { return isClosed(anchorDropped) })
	if !bystander.IsConnected() {
		t.Fatal("the bystander, issued after every revoked agent, was dropped")
	}
	var anchor struct {
		NextRotationAt time.Time `json:"next_rotation_at"`
	}
	raw, _ := json.Marshal(e.must(200, "GET", "/v1/agents/anchor", nil))
	if err := json.Unmarshal(raw, &anchor); err != nil {
		t.Fatal(err)
	}
	if anchor.NextRotationAt.After(time.Now()) {
		t.Fatalf("the cut-off anchor is due at %s, want now", anchor.NextRotationAt)
	}
	alerts, err := e.main.Store.ListAlerts(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, a := range alerts {
		kinds[a.Kind]++
	}
	if kinds[rotate.AlertJWTLarge] != 1 || kinds[rotate.AlertJWTFull] != 1 {
		t.Fatalf("alerts = %v, want one account_jwt_large and one account_jwt_full", kinds)
	}
}

// An account that keeps its revocation entries and has no room left
// answers 409 account_jwt_full to a rotation and to a change that would
// take it past the guard (validated against the spec by the client);
// revocations still land.
func TestGuardKeepRevocationsAPI(t *testing.T) {
	t.Parallel()
	const guard = 6 << 10
	e := newEnvWith(t, func(c *Config) { c.MaxAccountJWTBytes = guard })
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "kept"})
	e.must(200, "PATCH", "/v1/accounts/kept", map[string]any{"keep_revocations": true})
	_, rotorCreds := createAgent(e, "rotor", "kept")
	for i := 0; ; i++ {
		pub := e.must(200, "GET", "/v1/accounts/kept", nil)["public_key"].(string)
		if _, body := e.do("GET", "/jwt/v1/accounts/"+pub, "", nil); len(body)+100 > guard {
			break
		}
		name := fmt.Sprintf("r%02d", i)
		createAgent(e, name, "kept")
		e.must(200, "POST", "/v1/agents/"+name+"/revoke", map[string]any{"reason": "test"})
	}
	for _, req := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/agents/rotor/rotate", nil},
		{"PATCH", "/v1/accounts/kept", map[string]any{"description": strings.Repeat("d", 1000)}},
	} {
		status, body := e.do(req.method, req.path, e.admin, req.body)
		var got struct{ Error, Code string }
		json.Unmarshal(body, &got)
		if status != 409 || got.Code != "account_jwt_full" || !strings.Contains(got.Error, "ROTATORD_MAX_ACCOUNT_JWT_BYTES") {
			t.Fatalf("%s %s = %d %s, want 409 account_jwt_full naming the limit", req.method, req.path, status, body)
		}
	}
	e.must(200, "POST", "/v1/agents/rotor/revoke", map[string]any{"reason": "test"})
	token, err := jwt.ParseDecoratedJWT([]byte(rotorCreds))
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		t.Fatal(err)
	}
	if ac := e.servedJWT("kept"); !ac.IsClaimRevoked(uc) {
		t.Fatalf("the served JWT does not refuse the revoked JWT (iat %d): %v", uc.IssuedAt, ac.Revocations)
	}
}

// ROTATORD_MAX_ACCOUNT_JWT_BYTES and --max-account-jwt-bytes set the
// guard; the flag beats the environment; values the servers could not
// take, or that leave no room for an account's claims, are refused.
func TestMaxAccountJWTBytesConfig(t *testing.T) {
	t.Parallel()
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "ROTATORD_MAX_ACCOUNT_JWT_BYTES" {
				return v
			}
			return ""
		}
	}
	cfg := DefaultConfig()
	if cfg.MaxAccountJWTBytes != 512<<10 {
		t.Fatalf("default = %d, want 512 KiB", cfg.MaxAccountJWTBytes)
	}
	cfg.fromEnv(env("262144"))
	if cfg.MaxAccountJWTBytes != 262144 || cfg.Validate() != nil {
		t.Fatalf("from env = %d, %v; want 262144, valid", cfg.MaxAccountJWTBytes, cfg.Validate())
	}
	fs := newFlags("serve", io.Discard)
	cfg.bind(fs, "max-account-jwt-bytes")
	if err := fs.Parse([]string{"--max-account-jwt-bytes", "65536"}); err != nil || cfg.MaxAccountJWTBytes != 65536 {
		t.Fatalf("flag = %d, %v; want 65536", cfg.MaxAccountJWTBytes, err)
	}
	for v, want := range map[string]string{
		"512KiB":   `ROTATORD_MAX_ACCOUNT_JWT_BYTES="512KiB" is not a number of bytes`,
		"1024":     "max account jwt bytes 1024 must be between 4096 and 67108864",
		"67108865": "max account jwt bytes 67108865 must be between 4096 and 67108864",
	} {
		cfg := DefaultConfig()
		cfg.fromEnv(env(v))
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("env %q: Validate = %v, want %q", v, err, want)
		}
	}
}
