package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord/internal/jwtissue"
)

// benchCreds is a creds file as rotatord hands it out.
func benchCreds(b testing.TB) []byte {
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

// The key parsed from a creds file is derived once and signs exactly as
// nkeys' own key pair for that seed; creds whose JWT and seed belong to
// different keys, or whose seed is not a user's, are still refused.
func TestParseCredsKey(t *testing.T) {
	file := benchCreds(t)
	k, err := parseCreds(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := k.kp.(*jwtissue.Key); !ok {
		t.Fatalf("parsed key is a %T, want *jwtissue.Key", k.kp)
	}
	ref, err := jwt.ParseDecoratedUserNKey(file)
	if err != nil {
		t.Fatal(err)
	}
	if pub, _ := ref.PublicKey(); pub != k.pub {
		t.Fatalf("public key %s, nkeys says %s", k.pub, pub)
	}
	nonce := []byte("rXiLNyUsXTs2Tyk")
	got, _ := k.kp.Sign(nonce)
	want, _ := ref.Sign(nonce)
	if string(got) != string(want) {
		t.Fatal("the parsed key signs differently from nkeys")
	}

	token, err := jwt.ParseDecoratedJWT(file)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	mixed, err := jwtissue.Creds(token, otherSeed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseCreds(mixed); err == nil || !strings.Contains(err.Error(), "different keys") {
		t.Fatalf("creds with another key's seed: %v", err)
	}
	acc, _ := nkeys.CreateAccount()
	accSeed, _ := acc.Seed()
	accFile := []byte(strings.Replace(string(file), string(must1(k.kp.Seed())), string(accSeed), 1))
	if _, err := parseCreds(accFile); err == nil {
		t.Fatal("creds with an account seed were accepted")
	}
	// Creds laid out otherwise (here with CRLF line ends, as an editor on
	// Windows saves them) are read by the jwt library's parsers.
	crlf, err := parseCreds([]byte(strings.ReplaceAll(string(file), "\n", "\r\n")))
	if err != nil || crlf.pub != k.pub || crlf.jwt != token {
		t.Fatalf("creds with CRLF line ends: %v", err)
	}
}

func must1(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
