package jwtissue

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
)

// BenchmarkIssueUser is rotatord's signing work for one rotation: a new
// user key pair and its JWT, signed by the account's signing key.
//
//	go test -run '^$' -bench . ./internal/jwtissue
func BenchmarkIssueUser(b *testing.B) {
	signer, _ := NewKey(nkeys.PrefixByteAccount)
	acc, _ := NewKey(nkeys.PrefixByteAccount)
	perms := rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"orders.>"}}}.Normalize()
	for b.Loop() {
		kp, err := NewKey(nkeys.PrefixByteUser)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := EncodeUser(signer, UserSpec{Name: "agent", PublicKey: Public(kp), AccountKey: Public(acc),
			Claims: rotatord.UserTemplate{Permissions: perms, Limits: rotatord.NoUserLimits}, Expires: time.Now().Add(25 * time.Hour)}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyUser is what each side does to a user JWT it receives:
// decode it and check the signature (nats-server on every connect,
// rotatord on every connect event).
func BenchmarkVerifyUser(b *testing.B) {
	signer, _ := NewKey(nkeys.PrefixByteAccount)
	acc, _ := NewKey(nkeys.PrefixByteAccount)
	kp, _ := NewKey(nkeys.PrefixByteUser)
	token, _, err := EncodeUser(signer, UserSpec{Name: "agent", PublicKey: Public(kp), AccountKey: Public(acc),
		Expires: time.Now().Add(25 * time.Hour)})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := jwt.DecodeUserClaims(token); err != nil {
			b.Fatal(err)
		}
	}
}

// benchSigner is a signing key as rotatord holds it: opened from its
// sealed seed once and kept.
func benchSigner(b *testing.B, kind nkeys.PrefixByte) nkeys.KeyPair {
	b.Helper()
	kp, err := NewKey(kind)
	if err != nil {
		b.Fatal(err)
	}
	signer, err := FromSeed(Seed(kp), kind)
	if err != nil {
		b.Fatal(err)
	}
	return signer
}

// BenchmarkIssueCredential is everything rotatord computes to issue one
// credential for a key it makes itself (rotate's issue and seal): the key
// pair, its public key, the user JWT signed by the account's signing key,
// the signer's public key for the record, and the seed and public key the
// seal binds together.
//
//	go test -run '^$' -bench 'IssueCredential|Creds|EncodeAccount' -benchmem ./internal/jwtissue
func BenchmarkIssueCredential(b *testing.B) {
	signer := benchSigner(b, nkeys.PrefixByteAccount)
	acc, _ := NewKey(nkeys.PrefixByteAccount)
	perms := rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"orders.>"}}}.Normalize()
	for b.Loop() {
		kp, err := NewKey(nkeys.PrefixByteUser)
		if err != nil {
			b.Fatal(err)
		}
		pub := Public(kp)
		if _, _, err := EncodeUser(signer, UserSpec{Name: "agent", PublicKey: pub, AccountKey: Public(acc),
			Claims: rotatord.UserTemplate{Permissions: perms, Limits: rotatord.NoUserLimits}, Expires: time.Now().Add(25 * time.Hour)}); err != nil {
			b.Fatal(err)
		}
		if Public(signer) == "" || len(Seed(kp)) == 0 || Public(kp) != pub {
			b.Fatal("no key")
		}
	}
}

// benchUser is an agent's user JWT, as rotatord issues it, and its seed.
func benchUser(b *testing.B) (token string, seed []byte) {
	signer := benchSigner(b, nkeys.PrefixByteAccount)
	acc, _ := NewKey(nkeys.PrefixByteAccount)
	kp, _ := NewKey(nkeys.PrefixByteUser)
	token, _, err := EncodeUser(signer, UserSpec{Name: "agent", PublicKey: Public(kp), AccountKey: Public(acc),
		Expires: time.Now().Add(25 * time.Hour)})
	if err != nil {
		b.Fatal(err)
	}
	return token, Seed(kp)
}

// BenchmarkCreds formats the creds file an agent fetches (or a delivery
// writes) from the stored JWT and the opened seed.
func BenchmarkCreds(b *testing.B) {
	token, seed := benchUser(b)
	for b.Loop() {
		if _, err := Creds(token, seed); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadCreds reads the JWT and the seed back from a creds file, as
// an agent does with every creds it receives: SplitCreds, and the jwt
// library's parsers it falls back to.
//
//	go test -run '^$' -bench ReadCreds -benchmem ./internal/jwtissue
func BenchmarkReadCreds(b *testing.B) {
	file, err := Creds(benchUser(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("split", func(b *testing.B) {
		for b.Loop() {
			if _, _, ok := SplitCreds(file); !ok {
				b.Fatal("not split")
			}
		}
	})
	b.Run("jwt-library", func(b *testing.B) {
		for b.Loop() {
			if _, err := jwt.ParseDecoratedJWT(file); err != nil {
				b.Fatal(err)
			}
			if _, err := jwt.ParseDecoratedUserNKey(file); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEncodeAccount is one re-sign of an account JWT: with no claims
// beyond limits, and with a tenant's worth of JetStream tiers, 20 exports,
// 20 imports (10 carrying activation tokens) and 10 mappings.
func BenchmarkEncodeAccount(b *testing.B) {
	op, _ := NewKey(nkeys.PrefixByteOperator)
	acc, _ := NewKey(nkeys.PrefixByteAccount)
	exporter, _ := NewKey(nkeys.PrefixByteAccount)
	spec := AccountSpec{Name: "tenant", PublicKey: Public(acc), Limits: rotatord.NoLimits}
	b.Run("plain", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := EncodeAccount(op, spec); err != nil {
				b.Fatal(err)
			}
		}
	})
	c := rotatord.AccountClaims{JetStream: &rotatord.JetStream{Tiers: map[string]rotatord.JetStreamLimits{
		"R1": rotatord.UnlimitedJetStream, "R3": rotatord.UnlimitedJetStream}}, Mappings: map[string][]rotatord.WeightedMapping{}}
	for i := range 20 {
		c.Exports = append(c.Exports, rotatord.Export{Name: fmt.Sprint(i), Subject: fmt.Sprintf("svc.%d.>", i), Type: rotatord.ExportService, TokenReq: i%2 == 0})
		im := ImportSpec{Import: rotatord.Import{Name: fmt.Sprint(i), Subject: fmt.Sprintf("ext.%d.>", i), Type: rotatord.ExportStream}, AccountKey: Public(exporter)}
		if i%2 == 0 {
			im.Token, _, _ = EncodeActivation(exporter, ActivationSpec{Importer: Public(acc), Exporter: Public(exporter),
				Subject: im.Subject, Type: im.Type, Expires: time.Now().Add(time.Hour)})
		}
		spec.Imports = append(spec.Imports, im)
	}
	for i := range 10 {
		c.Mappings[fmt.Sprintf("m%d.*", i)] = []rotatord.WeightedMapping{{Subject: fmt.Sprintf("n%d.$1", i), Weight: 100}}
	}
	spec.Claims = c
	b.Run("tenant", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := EncodeAccount(op, spec); err != nil {
				b.Fatal(err)
			}
		}
	})
}
