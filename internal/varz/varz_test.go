package varz

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

func TestParse(t *testing.T) {
	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	key, _ := nkeys.CreateOperator()
	keyPub, _ := key.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.SigningKeys.Add(keyPub)
	token, err := oc.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	forged := token[:len(token)-4] + "AAAA"
	other := jwt.NewOperatorClaims("OOTHER")
	reply := func(jwts []string, claims ...any) []byte {
		b, _ := json.Marshal(map[string]any{"server": map[string]string{"id": "NID", "name": "n1"},
			"data": map[string]any{"server_name": "n1", "version": "2.15.2", "max_payload": 1 << 20,
				"trusted_operators_jwt": jwts, "trusted_operators_claim": claims}})
		return b
	}

	// Configured JWTs win over the claims, and only those that verify.
	r, err := Parse(reply([]string{token, forged}, other))
	if err != nil || r.Server.ID != "NID" || r.Data.Version != "2.15.2" || r.Data.MaxPayload != 1<<20 {
		t.Fatalf("Parse: %+v, %v", r, err)
	}
	ops := r.Data.TrustedOperators()
	if len(ops) != 1 || ops[0].Subject != opPub || !ops[0].SigningKeys.Contains(keyPub) {
		t.Fatalf("with jwts: %+v", ops)
	}
	// Without configured JWTs, the claims the server reports.
	r, err = Parse(reply(nil, other))
	if err != nil {
		t.Fatal(err)
	}
	if ops := r.Data.TrustedOperators(); len(ops) != 1 || ops[0].Subject != "OOTHER" {
		t.Fatalf("with claims only: %+v", ops)
	}

	for _, bad := range []string{"", "not json", "{}", `{"server":{"id":"N"}}`,
		`{"error":{"code":503,"description":"unavailable"}}`} {
		if r, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", bad, r)
		}
	}
	if _, err := Parse([]byte(`{"error":{"code":503,"description":"unavailable"}}`)); err == nil || !strings.Contains(err.Error(), "unavailable (503)") {
		t.Errorf("error reply: %v", err)
	}
}
