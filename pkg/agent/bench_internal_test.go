package agent

import (
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// benchCreds is a creds file as rotatord hands it out.
func benchCreds(b *testing.B) []byte {
	b.Helper()
	acc, _ := nkeys.CreateAccount()
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	uc := jwt.NewUserClaims(pub)
	uc.Name = "agent-00042"
	uc.Expires = time.Now().Add(25 * time.Hour).Unix()
	token, err := uc.Encode(acc)
	if err != nil {
		b.Fatal(err)
	}
	seed, _ := kp.Seed()
	file, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		b.Fatal(err)
	}
	return file
}

// BenchmarkParseCreds is what the client does with each creds file it
// fetches or reads before switching to it.
//
//	go test -run '^$' -bench 'ParseCreds|SignProof|SignNonce' -benchmem ./pkg/agent
func BenchmarkParseCreds(b *testing.B) {
	file := benchCreds(b)
	for b.Loop() {
		if _, err := parseCreds(file); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignProof is the proof of possession of a request to rotatord,
// signed with the key of the creds in use.
func BenchmarkSignProof(b *testing.B) {
	k, err := parseCreds(benchCreds(b))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for b.Loop() {
		if _, err := Proof(k.kp, "GET", "/v1/agents/agent-00042/creds", nil, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignNonce is the signature of the server's nonce on each
// (re)connect.
func BenchmarkSignNonce(b *testing.B) {
	k, err := parseCreds(benchCreds(b))
	if err != nil {
		b.Fatal(err)
	}
	nonce := []byte("rXiLNyUsXTs2Tyk")
	for b.Loop() {
		if _, err := k.kp.Sign(nonce); err != nil {
			b.Fatal(err)
		}
	}
}
