package rotate_test

import (
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/rotate"
)

// BenchmarkCheckProof is the proof check every agent request costs before
// the database: parse the header, check the time, hash the body and verify
// the ed25519 signature (GET: empty body; POST: an own-key body with its
// key proof, which a second verify checks).
//
//	go test -run '^$' -bench CheckProof ./internal/rotate
func BenchmarkCheckProof(b *testing.B) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	now := time.Now()
	b.Run("get", func(b *testing.B) {
		p := signGet(b, kp, "kate", now)
		for b.Loop() {
			if _, err := rotate.CheckProof("kate", p, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("own-key", func(b *testing.B) {
		next, _ := nkeys.CreateUser()
		nextPub, _ := next.PublicKey()
		ksig, _ := next.Sign(rotatord.KeyProofMessage("kate", nextPub, now.Unix()))
		keyProof := rotatord.EncodeSignature(ksig)
		body := []byte(`{"public_key":"` + nextPub + `","key_proof":"` + keyProof + `"}`)
		sig, _ := kp.Sign(rotatord.ProofMessage("POST", "/v1/agents/kate/creds", now.Unix(), rotatord.BodyHash(body)))
		p := rotate.Proof{Header: rotatord.FormatProof(pub, now.Unix(), sig), Method: "POST", Target: "/v1/agents/kate/creds", Body: body}
		for b.Loop() {
			ap, err := rotate.CheckProof("kate", p, now)
			if err != nil {
				b.Fatal(err)
			}
			if err := rotate.CheckKeyProof(ap, nextPub, keyProof); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("garbage", func(b *testing.B) {
		p := rotate.Proof{Header: "NKey x", Method: "GET", Target: "/v1/agents/kate/creds"}
		for b.Loop() {
			if _, err := rotate.CheckProof("kate", p, now); err == nil {
				b.Fatal("garbage accepted")
			}
		}
	})
}
