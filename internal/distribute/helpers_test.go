package distribute_test

import (
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
)

// newHandoff returns credentials as the engine hands them over: a fresh
// user key, a user JWT signed by a throwaway account key, and the creds
// file; ownKey leaves seed and creds out, as for an agent that generated
// its own key.
func newHandoff(t testing.TB, account, agent, rotation string, issued time.Time, ownKey bool) rotatord.Handoff {
	t.Helper()
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	acc, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	claims := jwt.NewUserClaims(pub)
	claims.Name = agent
	claims.IssuedAt = issued.Unix()
	claims.Expires = issued.Add(25 * time.Hour).Unix()
	token, err := claims.Encode(acc)
	if err != nil {
		t.Fatal(err)
	}
	h := rotatord.Handoff{Account: account, Agent: agent, RotationID: rotation, PublicKey: pub, JWT: token,
		IssuedAt: issued.Truncate(time.Second), ExpiresAt: issued.Add(25 * time.Hour).Truncate(time.Second)}
	if !ownKey {
		h.Seed = seed
		if h.Creds, err = jwt.FormatUserConfig(token, seed); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
