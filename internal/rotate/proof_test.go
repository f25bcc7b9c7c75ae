package rotate_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/refusals"
	"github.com/rotatord/rotatord/internal/rotate"
)

// wantRefusal checks that err is a refusal with the reason and code.
func wantRefusal(t *testing.T, name string, err error, reason, code string) {
	t.Helper()
	got, refused := rotate.RefusalReason(err)
	if !refused || got != reason || rotatord.ErrorCode(err) != code {
		t.Errorf("%s: got %v (reason %q, code %s), want reason %q code %s", name, err, got, rotatord.ErrorCode(err), reason, code)
	}
}

// The proof checks verify with crypto/ed25519 on a key decoded once: only a
// user key with a valid checksum is taken, only its own signature over the
// exact message passes, and a key proof must be the new key's.
func TestProofKeysAndSignatures(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	user, _ := nkeys.CreateUser()
	pub, _ := user.PublicKey()
	other, _ := nkeys.CreateUser()
	acc, _ := nkeys.CreateAccount()
	accPub, _ := acc.PublicKey()
	const target = "/v1/agents/kate/creds"
	msg := rotatord.ProofMessage("GET", target, now.Unix(), rotatord.BodyHash(nil))
	proof := func(key string, signer nkeys.KeyPair, m []byte) rotate.Proof {
		sig, _ := signer.Sign(m)
		return rotate.Proof{Header: rotatord.FormatProof(key, now.Unix(), sig), Method: "GET", Target: target}
	}
	// One character of the key changed: its checksum no longer holds.
	flip := func(s string, i int) string {
		c := byte('A')
		if s[i] == 'A' {
			c = 'B'
		}
		return s[:i] + string(c) + s[i+1:]
	}
	for name, c := range map[string]struct {
		p      rotate.Proof
		reason string
	}{
		"account key":        {proof(accPub, acc, msg), refusals.ReasonMalformed},
		"bad checksum":       {proof(flip(pub, 30), user, msg), refusals.ReasonMalformed},
		"short key":          {proof(pub[:55], user, msg), refusals.ReasonMalformed},
		"seed as key":        {proof(string(must(user.Seed()))[:56], user, msg), refusals.ReasonMalformed},
		"another key signed": {proof(pub, other, msg), refusals.ReasonBadSignature},
		"other method":       {proof(pub, user, rotatord.ProofMessage("POST", target, now.Unix(), rotatord.BodyHash(nil))), refusals.ReasonBadSignature},
		"version 1":          {proof(pub, user, rotatord.ProofMessageV1("GET", target, now.Unix())), refusals.ReasonProofV1},
	} {
		_, err := rotate.CheckProof("kate", c.p, now)
		wantRefusal(t, name, err, c.reason, rotatord.EUNAUTHORIZED)
		if err != nil && strings.Contains(err.Error(), string(must(user.Seed()))[:20]) {
			t.Errorf("%s: the error quotes a seed", name)
		}
	}
	ap, err := rotate.CheckProof("kate", proof(pub, user, msg), now)
	if err != nil {
		t.Fatal(err)
	}

	next, _ := nkeys.CreateUser()
	nextPub, _ := next.PublicKey()
	keyProof := func(signer nkeys.KeyPair, agent, key string, unix int64) string {
		sig, _ := signer.Sign(rotatord.KeyProofMessage(agent, key, unix))
		return rotatord.EncodeSignature(sig)
	}
	if err := rotate.CheckKeyProof(ap, nextPub, keyProof(next, "kate", nextPub, now.Unix())); err != nil {
		t.Fatalf("a good key proof: %v", err)
	}
	for name, c := range map[string]struct {
		pub, proof   string
		reason, code string
	}{
		"signed by the old key": {nextPub, keyProof(user, "kate", nextPub, now.Unix()), refusals.ReasonBadKeyProof, rotatord.EUNAUTHORIZED},
		"for another agent":     {nextPub, keyProof(next, "kim", nextPub, now.Unix()), refusals.ReasonBadKeyProof, rotatord.EUNAUTHORIZED},
		"for another time":      {nextPub, keyProof(next, "kate", nextPub, now.Unix()-1), refusals.ReasonBadKeyProof, rotatord.EUNAUTHORIZED},
		"account key":           {accPub, keyProof(acc, "kate", accPub, now.Unix()), refusals.ReasonBadBody, rotatord.EINVALID},
		"bad checksum":          {flip(nextPub, 40), keyProof(next, "kate", flip(nextPub, 40), now.Unix()), refusals.ReasonBadBody, rotatord.EINVALID},
		"the proof's own key":   {pub, keyProof(user, "kate", pub, now.Unix()), refusals.ReasonBadBody, rotatord.EINVALID},
		"not base64url":         {nextPub, "!!!", refusals.ReasonBadKeyProof, rotatord.EUNAUTHORIZED},
		"missing":               {nextPub, "", refusals.ReasonBadKeyProof, rotatord.EUNAUTHORIZED},
	} {
		wantRefusal(t, name, rotate.CheckKeyProof(ap, c.pub, c.proof), c.reason, c.code)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
