package main

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
)

// Repeated connects with revoked creds, and with a JWT for a real agent key
// forged with an account key rotatord never had, raise one alert per key
// per window, naming the agent and the source, through the outbox and the
// webhook; the revoked key is flagged at its first use. Two replicas run:
// both count every failure, and still one alert is raised per key.
func TestAuthFailureAlerts(t *testing.T) {
	t.Parallel()
	hook := &webhook{}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	e := newEnvWith(t, func(c *Config) {
		c.AlertWebhook = srv.URL
		c.AuthFailThreshold = 3
	})
	e.startNATS()
	e.waitNATS()
	b := e.startMain(e.config())
	eventually(t, 5*time.Second, "replica b to connect to nats", func() bool { return b.NATS.Connected() })
	if err := b.NATS.NC().Flush(); err != nil { // its subscriptions reached the server
		t.Fatal(err)
	}
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	_, kateCreds := createAgent(e, "kate", "fleet")
	_, bobCreds := createAgent(e, "bob", "fleet")

	e.must(200, "POST", "/v1/agents/kate/revoke", map[string]any{"reason": "laptop stolen"})
	attempts := 0
	eventually(t, 5*time.Second, "kate's revoked creds to be refused", func() bool {
		nc, err := connectCreds(e, kateCreds)
		if err == nil {
			nc.Close()
			return false
		}
		attempts++
		return true
	})
	for ; attempts < 6; attempts++ {
		if nc, err := connectCreds(e, kateCreds); err == nil {
			nc.Close()
			t.Fatal("revoked creds connected")
		}
	}

	// bob's real key in a JWT signed by some other account's key.
	bobKP, err := jwt.ParseDecoratedUserNKey([]byte(bobCreds))
	if err != nil {
		t.Fatal(err)
	}
	bobPub, _ := bobKP.PublicKey()
	rogue, _ := nkeys.CreateAccount()
	rogueKey, _ := rogue.PublicKey()
	uc := jwt.NewUserClaims(bobPub)
	uc.Name = "bob"
	uc.IssuerAccount = rogueKey
	uc.Pub.Allow.Add(">")
	forged, err := uc.Encode(rogue)
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		nc, err := nats.Connect(e.ns.ClientURL(), nats.MaxReconnects(0),
			nats.UserJWT(func() (string, error) { return forged, nil }, bobKP.Sign))
		if err == nil {
			nc.Close()
			t.Fatal("a forged JWT connected")
		}
	}

	for _, m := range []*Main{e.main, b} {
		eventually(t, 5*time.Second, "each replica to count every failure", func() bool {
			got := e.scrapeAt(m)
			return got[`rotatord_auth_failures_total{reason="revoked_key"}`] == 6 &&
				got[`rotatord_auth_failures_total{reason="forged_jwt"}`] == 4
		})
	}
	alerts, err := e.main.Store.ListAlerts(context.Background(), 50)
	if err != nil {
		t.Fatal(err)
	}
	var revoked, kateBurst, bobBurst []rotatord.Alert
	for _, a := range alerts {
		switch {
		case a.Kind == "revoked_key_used":
			revoked = append(revoked, a.Alert)
		case a.Kind == "auth_failures" && a.Agent == "kate":
			kateBurst = append(kateBurst, a.Alert)
		case a.Kind == "auth_failures" && a.Agent == "bob":
			bobBurst = append(bobBurst, a.Alert)
		default:
			t.Errorf("unexpected alert %+v", a.Alert)
		}
	}
	kateKey := seedlessKey(t, kateCreds)
	if len(revoked) != 1 || revoked[0].Agent != "kate" || revoked[0].Account != "fleet" || revoked[0].Severity != "critical" ||
		!strings.Contains(revoked[0].Reason, kateKey) || !strings.Contains(revoked[0].Reason, "127.0.0.1") {
		t.Errorf("revoked_key_used alerts = %+v, want one naming kate, her key and the source", revoked)
	}
	if len(kateBurst) != 1 || kateBurst[0].Account != "fleet" || !strings.Contains(kateBurst[0].Reason, "127.0.0.1") ||
		!strings.Contains(kateBurst[0].Reason, "revoked_key") {
		t.Errorf("auth_failures alerts for kate = %+v, want one naming the source", kateBurst)
	}
	if len(bobBurst) != 1 || bobBurst[0].Account != "fleet" || !strings.Contains(bobBurst[0].Reason, "127.0.0.1") ||
		!strings.Contains(bobBurst[0].Reason, "forged_jwt") {
		t.Errorf("auth_failures alerts for bob = %+v, want one naming the source", bobBurst)
	}
	// The dispatcher was kicked: the webhook has them without waiting.
	eventually(t, 5*time.Second, "the webhook to receive the 3 alerts", func() bool { return len(hook.received()) == 3 })
	if strings.Contains(e.logs.String(), seedOf(t, kateCreds)) {
		t.Fatal("a seed is in the logs")
	}
}

// seedlessKey returns the user public key of a creds file.
func seedlessKey(t testing.TB, creds string) string {
	t.Helper()
	kp, err := jwt.ParseDecoratedUserNKey([]byte(creds))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return pub
}

func TestAuthFailConfig(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	cfg := DefaultConfig()
	if cfg.AuthFailThreshold != 10 || cfg.AuthFailWindow != 5*time.Minute {
		t.Fatalf("defaults = %d, %s; want 10, 5m", cfg.AuthFailThreshold, cfg.AuthFailWindow)
	}
	cfg.fromEnv(env(map[string]string{"ROTATORD_AUTH_FAIL_THRESHOLD": "3", "ROTATORD_AUTH_FAIL_WINDOW": "90s"}))
	if cfg.AuthFailThreshold != 3 || cfg.AuthFailWindow != 90*time.Second || cfg.Validate() != nil {
		t.Fatalf("from env = %d, %s, %v; want 3, 1m30s, valid", cfg.AuthFailThreshold, cfg.AuthFailWindow, cfg.Validate())
	}
	for vars, want := range map[[2]string]string{
		{"ten", ""}:   "ROTATORD_AUTH_FAIL_THRESHOLD=\"ten\" is not a whole number",
		{"", "5"}:     "ROTATORD_AUTH_FAIL_WINDOW=\"5\" is not a duration",
		{"0", ""}:     "auth failure threshold 0 must be between 1 and 1000",
		{"", "500ms"}: "auth failure window 500ms must be at least 1s",
	} {
		cfg := DefaultConfig()
		cfg.fromEnv(env(map[string]string{"ROTATORD_AUTH_FAIL_THRESHOLD": vars[0], "ROTATORD_AUTH_FAIL_WINDOW": vars[1]}))
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("env %q: Validate = %v, want %q", vars, err, want)
		}
	}
}
