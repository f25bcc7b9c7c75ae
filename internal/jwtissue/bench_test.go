package jwtissue

import (
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
