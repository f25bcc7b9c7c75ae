package main

import (
	"slices"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord"
)

// A rotation of an exporting account's signing key moves the activation
// tokens it signed for its importers too: nats-server accepts an import's
// token only when the exporter's JWT lists its signer, so the importers
// are re-signed with tokens of the new key when it starts signing, and a
// staged rotation removes the old key only once the servers hold them.
// An importing agent keeps getting the exporter's messages throughout.
func TestSigningKeyRotationOfAnExporter(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{rotatord.KeyModeStaged, rotatord.KeyModeEmergency} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			testRotateExporterKey(t, mode)
		})
	}
}

func testRotateExporterKey(t *testing.T, mode string) {
	e, v, clk := keyEnv(t)
	e.must(200, "PATCH", "/v1/accounts/fleet", map[string]any{"exports": []any{
		map[string]any{"name": "orders", "subject": "orders.>", "type": "stream", "token_req": true},
	}})
	b := e.must(201, "POST", "/v1/accounts", map[string]any{"name": "tenant-b", "imports": []any{
		map[string]any{"account": "fleet", "subject": "orders.>", "type": "stream", "local_subject": "fleet.orders.>"},
	}})
	bKey := b["public_key"].(string)
	old := e.accountClaimsOf("fleet").SigningKeys.Keys()[0]
	tokenSigner := func() string {
		t.Helper()
		act, err := jwt.DecodeActivationClaims(importToken(t, e.accountClaimsOf("tenant-b"), jwt.Stream, "orders.>"))
		if err != nil {
			t.Fatal(err)
		}
		return act.Issuer
	}
	if got := tokenSigner(); got != old {
		t.Fatalf("tenant-b's activation token is signed by %s, want fleet's signing key %s", got, old)
	}

	publisher := joinFleet(e, v, clk, "publisher", rotatord.DeliveryPoll)
	publisher.follow(t, v, 500*time.Millisecond)
	consumer, _ := connectAs(t, e.ns.ClientURL(), agentWith(e, "b-app", "tenant-b", []string{"other.>"}, []string{"fleet.orders.>"}))
	orders, err := consumer.SubscribeSync("fleet.orders.>")
	if err != nil {
		t.Fatal(err)
	}
	consumer.Flush()
	// delivered reports whether an order published now reaches tenant-b.
	seq := 0
	delivered := func() bool {
		seq++
		want := []byte{byte(seq)}
		if err := publisher.nc.Publish("orders.new", want); err != nil || publisher.nc.Flush() != nil {
			return false
		}
		for {
			m, err := orders.NextMsg(time.Second)
			if err != nil {
				return false
			}
			if m.Subject == "fleet.orders.new" && slices.Equal(m.Data, want) {
				return true
			}
		}
	}
	if !delivered() {
		t.Fatal("tenant-b gets no orders before the rotation")
	}
	tickEvery(t, e.main, 100*time.Millisecond)

	id := e.must(202, "POST", "/v1/accounts/fleet/signing-keys/rotate", map[string]any{"mode": mode})["id"].(string)
	newKey := e.getJSON("/v1/key-rotations/" + id)["new_key"].(string)
	if mode == rotatord.KeyModeEmergency {
		// The old key is gone from fleet's JWT at once: so is the token
		// it signed, in the same request.
		if got := tokenSigner(); got != newKey {
			t.Fatalf("right after the emergency request tenant-b's token is signed by %s, want the new key %s", got, newKey)
		}
	}
	settle(t, 30*time.Second, "the key rotation to complete", func() bool {
		return e.getJSON("/v1/key-rotations/" + id)["state"] == "completed"
	})
	if got := e.accountClaimsOf("fleet").SigningKeys.Keys(); !slices.Equal(got, []string{newKey}) {
		t.Fatalf("fleet's signing keys %v at the end, want only the new key", got)
	}
	if got := tokenSigner(); got != newKey {
		t.Fatalf("tenant-b's activation token is signed by %s after the rotation, want the new key %s", got, newKey)
	}
	want := e.accountJWT(bKey)
	eventually(t, 10*time.Second, "the server to hold tenant-b with its import valid", func() bool {
		got, ok := serverAccount(t, e.ns, bKey)
		return got == want && ok
	})
	eventually(t, 20*time.Second, "the publisher on the new key", func() bool { return publisher.onKey(t, newKey) })
	eventually(t, 10*time.Second, "tenant-b to get fleet's orders after the rotation", delivered)
	audit := e.getJSON("/v1/audit?action=signing_key.activate")["events"].([]any)
	if mode == rotatord.KeyModeEmergency {
		audit = e.getJSON("/v1/audit?action=signing_key.retire")["events"].([]any)
	}
	if len(audit) != 1 {
		t.Fatalf("audit = %v", audit)
	}
	if rs, _ := audit[0].(map[string]any)["details"].(map[string]any)["importers_resigned"].([]any); len(rs) != 1 || rs[0] != "tenant-b" {
		t.Fatalf("audit details = %v, want tenant-b re-signed", audit[0])
	}
}
