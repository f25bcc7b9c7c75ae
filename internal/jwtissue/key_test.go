package jwtissue

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
)

var kinds = []nkeys.PrefixByte{nkeys.PrefixByteOperator, nkeys.PrefixByteAccount, nkeys.PrefixByteUser}

// A Key is interchangeable with nkeys' own key pair for the same seed: the
// same public key, seed, private key and (ed25519 being deterministic) the
// same signature bytes, each side verifying the other's.
func TestKeyMatchesNKeys(t *testing.T) {
	msg := []byte("rotatord-v2\nGET\n/v1/agents/kate/creds\n1800000000\ne3b0c442")
	for _, kind := range kinds {
		for range 20 {
			kp := mustKey(t, kind)
			k, ok := kp.(*Key)
			if !ok {
				t.Fatalf("NewKey(%s) is a %T, want *Key", kind, kp)
			}
			seed := Seed(k)
			ref, err := nkeys.FromSeed(seed)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := Public(k), Public(ref); got != want {
				t.Fatalf("public key %s, nkeys says %s", got, want)
			}
			if nkeys.Prefix(Public(k)) != kind {
				t.Fatalf("public key %s is not a %s key", Public(k), kind)
			}
			gotPriv, _ := k.PrivateKey()
			wantPriv, _ := ref.PrivateKey()
			if !bytes.Equal(gotPriv, wantPriv) {
				t.Fatal("private keys differ")
			}
			sig, err := k.Sign(msg)
			if err != nil {
				t.Fatal(err)
			}
			refSig, _ := ref.Sign(msg)
			if !bytes.Equal(sig, refSig) {
				t.Fatal("signatures differ from nkeys'")
			}
			pubOnly, _ := nkeys.FromPublicKey(Public(k))
			if err := pubOnly.Verify(msg, sig); err != nil {
				t.Fatalf("nkeys does not verify the key's signature: %v", err)
			}
			if err := k.Verify(msg, refSig); err != nil {
				t.Fatalf("the key does not verify nkeys' signature: %v", err)
			}
			if err := k.Verify(append(msg, '!'), sig); err != nkeys.ErrInvalidSignature {
				t.Fatalf("a tampered message verified: %v", err)
			}
			again, err := FromSeed(seed, kind)
			if err != nil || Public(again) != Public(k) {
				t.Fatalf("FromSeed = %v, %v", again, err)
			}
			if _, ok := again.(*Key); !ok {
				t.Fatalf("FromSeed gives a %T, want *Key", again)
			}
		}
	}
	// Seeds made by nkeys (as nsc and imports make them) open the same way.
	ref, _ := nkeys.CreateAccount()
	k, err := FromSeed(Seed(ref), nkeys.PrefixByteAccount)
	if err != nil || Public(k) != Public(ref) {
		t.Fatalf("FromSeed of an nkeys seed = %v, %v", k, err)
	}
	if _, err := k.Seal(nil, ""); err != nkeys.ErrInvalidNKeyOperation {
		t.Errorf("Seal = %v, want ErrInvalidNKeyOperation", err)
	}
}

// What Seed returns is a copy: changing it does not change the key.
func TestKeySeedIsACopy(t *testing.T) {
	k := mustKey(t, nkeys.PrefixByteUser)
	s := Seed(k)
	want := string(s)
	s[3] ^= 0xff
	if string(Seed(k)) != want {
		t.Fatal("changing the returned seed changed the key's")
	}
}

// A key printed or logged by mistake shows its public key, never its seed.
func TestKeyNeverPrintsSeed(t *testing.T) {
	k := mustKey(t, nkeys.PrefixByteAccount).(*Key)
	seed := string(Seed(k))
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("signer", "key", k, "keys", []*Key{k})
	out := []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k), fmt.Sprintf("%v", *k), logged.String()}
	for _, o := range out {
		if strings.Contains(o, seed) || strings.Contains(o, seed[2:20]) {
			t.Errorf("printed key holds the seed: %s", o)
		}
	}
	if !strings.Contains(fmt.Sprint(k), Public(k)) || !strings.Contains(logged.String(), Public(k)) {
		t.Errorf("printed key %q, logged %q: want the public key", fmt.Sprint(k), logged.String())
	}
}

// A wiped key can no longer sign.
func TestKeyWipe(t *testing.T) {
	k := mustKey(t, nkeys.PrefixByteUser)
	pub := Public(k)
	k.Wipe()
	if _, err := k.Sign([]byte("x")); err == nil {
		t.Error("a wiped key signed")
	}
	if _, err := k.Seed(); err == nil {
		t.Error("a wiped key has a seed")
	}
	if _, err := k.PrivateKey(); err == nil {
		t.Error("a wiped key has a private key")
	}
	if Public(k) != pub {
		t.Error("the public key changed")
	}
}

// A seed of another kind, a bad checksum or no seed at all is refused,
// without the seed in the error.
func TestFromSeedRefuses(t *testing.T) {
	user := Seed(mustKey(t, nkeys.PrefixByteUser))
	flipped := append([]byte(nil), user...)
	flipped[10] = map[bool]byte{true: 'B', false: 'A'}[flipped[10] == 'A']
	for name, c := range map[string]struct {
		seed []byte
		kind nkeys.PrefixByte
	}{
		"other kind":   {user, nkeys.PrefixByteAccount},
		"bad checksum": {flipped, nkeys.PrefixByteUser},
		"public key":   {[]byte(Public(mustKey(t, nkeys.PrefixByteUser))), nkeys.PrefixByteUser},
		"empty":        {nil, nkeys.PrefixByteUser},
		"server kind":  {Seed(mustKey(t, nkeys.PrefixByteServer)), nkeys.PrefixByteServer},
	} {
		kp, err := FromSeed(c.seed, c.kind)
		if err == nil {
			t.Errorf("%s: accepted (%v)", name, kp)
			continue
		}
		if len(c.seed) > 0 && strings.Contains(err.Error(), string(c.seed[2:20])) {
			t.Errorf("%s: error %q holds the seed", name, err)
		}
	}
}

func TestUserPublicKey(t *testing.T) {
	k := mustKey(t, nkeys.PrefixByteUser).(*Key)
	got, err := UserPublicKey(Public(k))
	if err != nil || !bytes.Equal(got, k.raw) {
		t.Fatalf("UserPublicKey = %x, %v; want %x", got, err, k.raw)
	}
	sig, _ := k.Sign([]byte("m"))
	if !ed25519.Verify(got, []byte("m"), sig) {
		t.Fatal("the decoded key does not verify the key's signature")
	}
	pub := Public(k)
	bad := []string{"", pub[:55], pub + "A", Public(mustKey(t, nkeys.PrefixByteAccount)), strings.ToLower(pub),
		pub[:20] + map[bool]string{true: "B", false: "A"}[pub[20] == 'A'] + pub[21:], string(Seed(k))[:56]}
	for _, b := range bad {
		if _, err := UserPublicKey(b); err == nil {
			t.Errorf("UserPublicKey(%q) accepted", b)
		}
	}
}

// userCredsJWTs are user JWTs of every shape rotatord issues: own claims,
// a role's user, tags, long permission lists.
func userCredsJWTs(t *testing.T) (tokens []string, seeds [][]byte) {
	t.Helper()
	signer, acc := mustKey(t, nkeys.PrefixByteAccount), mustKey(t, nkeys.PrefixByteAccount)
	specs := []UserSpec{
		{Name: "kate"},
		{Name: "role-user", Scoped: true, Tags: []string{"team:blue"}},
		{Name: "wide", Claims: rotatord.UserTemplate{Permissions: rotatord.Permissions{
			Pub: rotatord.PermissionList{Allow: []string{"orders.>", "metrics.*", "a.b.c"}}}, Limits: rotatord.NoUserLimits}},
	}
	for i := range 10 {
		for _, spec := range specs {
			user := mustKey(t, nkeys.PrefixByteUser)
			spec.PublicKey, spec.AccountKey = Public(user), Public(acc)
			spec.Expires = time.Now().Add(time.Duration(i+1) * time.Hour)
			token, _, err := EncodeUser(signer, spec)
			if err != nil {
				t.Fatal(err)
			}
			tokens, seeds = append(tokens, token), append(seeds, Seed(user))
		}
	}
	return tokens, seeds
}

// Creds writes the frame directly; the bytes are exactly those of
// jwt.FormatUserConfig, and nats.go (nkeys.ParseDecorated*), nsc and
// nats-io/jwt read the JWT and the seed back from them.
func TestCredsMatchesFormatUserConfig(t *testing.T) {
	tokens, seeds := userCredsJWTs(t)
	for i, token := range tokens {
		seed := seeds[i]
		got, err := Creds(token, seed)
		if err != nil {
			t.Fatal(err)
		}
		want, err := jwt.FormatUserConfig(token, seed)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("creds differ from jwt.FormatUserConfig:\n%s\nwant\n%s", got, want)
		}
		for name, parse := range map[string]func([]byte) (string, error){"jwt": jwt.ParseDecoratedJWT, "nkeys": nkeys.ParseDecoratedJWT} {
			if j, err := parse(got); err != nil || j != token {
				t.Fatalf("%s.ParseDecoratedJWT = %.20q, %v", name, j, err)
			}
		}
		for name, parse := range map[string]func([]byte) (nkeys.KeyPair, error){"jwt": jwt.ParseDecoratedUserNKey,
			"nkeys": nkeys.ParseDecoratedUserNKey, "nkeys any": nkeys.ParseDecoratedNKey} {
			kp, err := parse(got)
			if err != nil {
				t.Fatalf("%s.ParseDecoratedUserNKey: %v", name, err)
			}
			if s, _ := kp.Seed(); !bytes.Equal(s, seed) {
				t.Fatalf("%s.ParseDecoratedUserNKey gives another seed", name)
			}
		}
		uc, err := jwt.DecodeUserClaims(token)
		if err != nil {
			t.Fatal(err)
		}
		if kp, _ := nkeys.FromSeed(seed); Public(kp) != uc.Subject {
			t.Fatal("test fixture: seed is not the subject's")
		}
	}
}

// SplitCreds reads back exactly what Creds and jwt.FormatUserConfig write,
// and declines anything laid out otherwise (which the jwt library's
// parsers then read): it must never return parts the library would not.
func TestSplitCreds(t *testing.T) {
	tokens, seeds := userCredsJWTs(t)
	for i, token := range tokens {
		file, err := jwt.FormatUserConfig(token, seeds[i])
		if err != nil {
			t.Fatal(err)
		}
		got, seed, ok := SplitCreds(file)
		if !ok || got != token || !bytes.Equal(seed, seeds[i]) {
			t.Fatalf("SplitCreds(FormatUserConfig) = %.20q, ok %v, same seed %v", got, ok, bytes.Equal(seed, seeds[i]))
		}
		crlf := bytes.ReplaceAll(file, []byte("\n"), []byte("\r\n"))
		for name, variant := range map[string][]byte{
			"crlf":                crlf,
			"leading space":       append([]byte(" "), file...),
			"trailing text":       append(bytes.Clone(file), "# note\n"...),
			"no final line end":   file[:len(file)-1],
			"blocks swapped":      bytes.Replace(bytes.Replace(file, []byte(token), []byte("@@"), 1), seeds[i], []byte(token), 1),
			"jwt with line break": bytes.Replace(file, []byte(token), []byte(token[:10]+"\n"+token[10:]), 1),
			"empty":               nil,
		} {
			if tk, sd, ok := SplitCreds(variant); ok {
				t.Errorf("%s: SplitCreds = %.20q, %d seed bytes, ok; want it left to the jwt library", name, tk, len(sd))
			}
		}
		// The library still reads the CRLF file: the fallback is needed.
		if j, err := jwt.ParseDecoratedJWT(crlf); err != nil || j != token {
			t.Fatalf("jwt.ParseDecoratedJWT(crlf) = %.20q, %v", j, err)
		}
	}
}

// Creds refuses what would not make a creds file: not a user JWT, a JWT
// that would break the frame, a seed that is not a user seed. No error
// quotes the seed.
func TestCredsRefuses(t *testing.T) {
	tokens, seeds := userCredsJWTs(t)
	token, seed := tokens[0], seeds[0]
	op, acc := mustKey(t, nkeys.PrefixByteOperator), mustKey(t, nkeys.PrefixByteAccount)
	accJWT, _, err := EncodeAccount(op, AccountSpec{Name: "a", PublicKey: Public(acc)})
	if err != nil {
		t.Fatal(err)
	}
	head, rest, _ := strings.Cut(token, ".")
	claims, sig, _ := strings.Cut(rest, ".")
	notUser := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"` + Public(acc) + `","nats":{"type":"user"}}`))
	flipped := append([]byte(nil), seed...)
	flipped[12] = map[bool]byte{true: 'B', false: 'A'}[flipped[12] == 'A']
	for name, c := range map[string]struct {
		token string
		seed  []byte
	}{
		"account jwt":        {accJWT, seed},
		"account subject":    {head + "." + notUser + "." + sig, seed},
		"line break":         {head + "." + claims[:10] + "\n" + claims[10:] + "." + sig, seed},
		"frame in jwt":       {token + "\n------END NATS USER JWT------\n", seed},
		"two parts":          {head + "." + claims, seed},
		"four parts":         {token + ".x", seed},
		"empty part":         {head + ".." + sig, seed},
		"padding":            {head + "." + claims + "=." + sig, seed},
		"claims not json":    {head + "." + base64.RawURLEncoding.EncodeToString([]byte("nope")) + "." + sig, seed},
		"empty jwt":          {"", seed},
		"account seed":       {token, Seed(acc)},
		"bad seed checksum":  {token, flipped},
		"public key as seed": {token, []byte(Public(acc))},
		"seed with newline":  {token, append(append([]byte(nil), seed[:20]...), append([]byte("\n"), seed[20:]...)...)},
		"seed with space":    {token, append([]byte(" "), seed...)},
		"seed and a line":    {token, append(append([]byte(nil), seed...), "\n-----END-----"...)},
		"empty seed":         {token, nil},
	} {
		_, err := Creds(c.token, c.seed)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if len(c.seed) > 20 && strings.Contains(err.Error(), string(c.seed[2:20])) {
			t.Errorf("%s: error %q holds the seed", name, err)
		}
	}
}

// UnverifiedID reads the jti of any well-formed JWT, with or without a
// valid signature (its callers rely on the nats-server having verified
// it), and refuses what is not a JWT.
func TestUnverifiedID(t *testing.T) {
	tokens, _ := userCredsJWTs(t)
	for _, token := range tokens {
		uc, err := jwt.DecodeUserClaims(token)
		if err != nil {
			t.Fatal(err)
		}
		if id, err := UnverifiedID(token); err != nil || id != uc.ID {
			t.Fatalf("UnverifiedID = %q, %v; want %q", id, err, uc.ID)
		}
	}
	head, rest, _ := strings.Cut(tokens[0], ".")
	claims, _, _ := strings.Cut(rest, ".")
	uc, _ := jwt.DecodeUserClaims(tokens[0])
	if id, err := UnverifiedID(head + "." + claims + ".AAAA"); err != nil || id != uc.ID {
		t.Errorf("with a bad signature: %q, %v; want %q", id, err, uc.ID)
	}
	noID, _ := json.Marshal(map[string]any{"sub": uc.Subject})
	for _, bad := range []string{"", "x", "a.b", tokens[0] + ".x", head + ".!!." + "AAAA",
		head + "." + base64.RawURLEncoding.EncodeToString(noID) + ".AAAA",
		head + "." + base64.RawURLEncoding.EncodeToString([]byte("[1]")) + ".AAAA"} {
		if id, err := UnverifiedID(bad); err == nil {
			t.Errorf("UnverifiedID(%.40q) = %q, want an error", bad, id)
		}
	}
}
