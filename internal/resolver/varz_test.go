package resolver

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord/internal/natsrun"
)

func mustKey(t *testing.T, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return kp, pub
}

// A real nats-server given its operator in code (not from a configuration
// file) reports only the claims in VARZ: TrustedOperators reads them.
func TestTrustedOperatorsFromServer(t *testing.T) {
	opKP, opPub := mustKey(t, nkeys.CreateOperator)
	signer, signerPub := mustKey(t, nkeys.CreateOperator)
	sysKP, sysPub := mustKey(t, nkeys.CreateAccount)
	oc := jwt.NewOperatorClaims(opPub)
	oc.SigningKeys.Add(signerPub)
	oc.SystemAccount = sysPub
	opJWT, err := oc.Encode(opKP)
	if err != nil {
		t.Fatal(err)
	}
	sysJWT, err := jwt.NewAccountClaims(sysPub).Encode(signer)
	if err != nil {
		t.Fatal(err)
	}
	res := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, sysPub) {
			w.Write([]byte(sysJWT))
		}
	}))
	defer res.Close()
	ns, err := natsrun.Start(natsrun.Options{OperatorJWT: opJWT, SystemAccount: sysPub, ResolverURL: res.URL + "/", Name: "varz-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	userKP, userPub := mustKey(t, nkeys.CreateUser)
	uc := jwt.NewUserClaims(userPub)
	userJWT, err := uc.Encode(sysKP)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.UserJWT(func() (string, error) { return userJWT, nil },
		func(nonce []byte) ([]byte, error) { return userKP.Sign(nonce) }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	p := NewPusher(func() *nats.Conn { return nc }, time.Second, time.Millisecond, slog.New(slog.DiscardHandler), nil)
	got, err := p.TrustedOperators(context.Background(), 5*time.Second)
	if err != nil || len(got) != 1 {
		t.Fatalf("TrustedOperators = %+v, %v", got, err)
	}
	if got[0].ServerName != "varz-test" || got[0].ServerID != ns.ID() || !got[0].Trusts(opPub, signerPub) || got[0].Trusts(opPub, opPub) {
		t.Fatalf("answer = %+v", got[0])
	}

	if _, err := NewPusher(func() *nats.Conn { return nil }, time.Second, 0, nil, nil).TrustedOperators(context.Background(), time.Second); err != ErrNotConnected {
		t.Fatalf("without a connection: %v", err)
	}
}

// Configured operator JWTs win over claims, and only those whose signature
// checks count; replies that are not VARZ are skipped.
func TestParseVarz(t *testing.T) {
	opKP, opPub := mustKey(t, nkeys.CreateOperator)
	_, keyPub := mustKey(t, nkeys.CreateOperator)
	oc := jwt.NewOperatorClaims(opPub)
	oc.SigningKeys.Add(keyPub)
	token, _ := oc.Encode(opKP)
	forged := token[:len(token)-4] + "AAAA"
	reply := func(jwts []string, claims any) []byte {
		b, _ := json.Marshal(map[string]any{"server": map[string]string{"id": "NID", "name": ""},
			"data": map[string]any{"trusted_operators_jwt": jwts, "trusted_operators_claim": claims}})
		return b
	}
	other := jwt.NewOperatorClaims("OOTHER")
	other.SigningKeys.Add("OFROMCLAIMS")
	got, ok := parseVarz(reply([]string{token, forged}, []any{other}))
	if !ok || got.ServerName != "NID" || !got.Trusts(opPub, keyPub) || len(got.Operators) != 1 {
		t.Fatalf("with jwts: %+v, %v", got, ok)
	}
	got, ok = parseVarz(reply(nil, []any{other}))
	if !ok || !got.Trusts("OOTHER", "OFROMCLAIMS") {
		t.Fatalf("with claims only: %+v, %v", got, ok)
	}
	for _, bad := range []string{"", "{}", `{"server":{"id":"N"}}`, "not json"} {
		if _, ok := parseVarz([]byte(bad)); ok {
			t.Errorf("parseVarz(%q) ok", bad)
		}
	}
}
