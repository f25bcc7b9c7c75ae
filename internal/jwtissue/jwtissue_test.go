package jwtissue

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
)

func mustKey(t *testing.T, kind nkeys.PrefixByte) nkeys.KeyPair {
	t.Helper()
	kp, err := NewKey(kind)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func TestChain(t *testing.T) {
	op, opSigner := mustKey(t, nkeys.PrefixByteOperator), mustKey(t, nkeys.PrefixByteOperator)
	acc, accSigner := mustKey(t, nkeys.PrefixByteAccount), mustKey(t, nkeys.PrefixByteAccount)
	user := mustKey(t, nkeys.PrefixByteUser)

	opJWT, err := EncodeOperator(op, OperatorSpec{Name: "acme", SigningKeys: []string{Public(opSigner)}, SystemAccount: Public(acc)})
	if err != nil {
		t.Fatal(err)
	}
	oc, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil || !oc.SigningKeys.Contains(Public(opSigner)) || oc.SystemAccount != Public(acc) {
		t.Fatalf("operator claims %+v, %v", oc, err)
	}
	revokedAt := time.Unix(1_800_000_000, 0)
	accJWT, id, err := EncodeAccount(opSigner, AccountSpec{Name: "fleet", PublicKey: Public(acc),
		SigningKeys: []string{Public(accSigner)}, Limits: rotatord.Limits{Conn: 10, Subs: -1, Payload: -1, Data: -1},
		Revocations: []rotatord.Revocation{{PublicKey: "UOLD", RevokedAt: revokedAt}}})
	if err != nil {
		t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(accJWT)
	if err != nil || ac.ID != id || ac.Issuer != Public(opSigner) || ac.Limits.Conn != 10 || ac.Revocations["UOLD"] != revokedAt.Unix() {
		t.Fatalf("account claims %+v, %v", ac, err)
	}
	if !oc.DidSign(ac) {
		t.Fatal("operator does not vouch for the account jwt")
	}
	perms := rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"a.>"}, Deny: []string{"a.b"}}}
	exp := time.Now().Add(time.Hour)
	userJWT, uc, err := EncodeUser(accSigner, UserSpec{Name: "kate", PublicKey: Public(user), AccountKey: Public(acc), Claims: rotatord.UserTemplate{Permissions: perms, Limits: rotatord.NoUserLimits}, Expires: exp})
	if err != nil {
		t.Fatal(err)
	}
	got, err := jwt.DecodeUserClaims(userJWT)
	if err != nil || got.ID != uc.ID || got.IssuerAccount != Public(acc) || got.Expires != exp.Unix() || got.NotBefore != 0 ||
		!got.Pub.Allow.Contains("a.>") || !got.Pub.Deny.Contains("a.b") || !ac.DidSign(got) {
		t.Fatalf("user claims %+v, %v", got, err)
	}
	creds, err := Creds(userJWT, Seed(user))
	if err != nil || !strings.Contains(string(creds), userJWT) {
		t.Fatalf("creds: %v", err)
	}
	if j, err := jwt.ParseDecoratedJWT(creds); err != nil || j != userJWT {
		t.Fatalf("creds jwt: %v", err)
	}
}

func TestKeys(t *testing.T) {
	user := mustKey(t, nkeys.PrefixByteUser)
	if _, err := FromSeed(Seed(user), nkeys.PrefixByteAccount); err == nil {
		t.Fatal("a user seed was accepted as an account seed")
	}
	if _, err := FromSeed([]byte("SUAnot-a-seed"), nkeys.PrefixByteUser); err == nil {
		t.Fatal("a malformed seed was accepted")
	}
	if kp, err := FromSeed(Seed(user), nkeys.PrefixByteUser); err != nil || Public(kp) != Public(user) {
		t.Fatalf("FromSeed: %v", err)
	}
	acc := Public(mustKey(t, nkeys.PrefixByteAccount))
	for _, bad := range []string{"", "x", Public(user), acc + "A", acc[:55], strings.ToLower(acc)} {
		if err := ValidateAccountKey(bad); err == nil {
			t.Errorf("ValidateAccountKey(%q) accepted", bad)
		}
	}
	if err := ValidateAccountKey(acc); err != nil {
		t.Error(err)
	}
	if err := ValidateUserKey(acc); err == nil {
		t.Error("an account key passed as a user key")
	}
}

// An imported account's claims are the base of its re-signed JWTs: what
// rotatord does not model is kept, signing keys and revocations are
// rotatord's, and what it models (limits, imports, JetStream...) comes from
// its model, which the import reads out of those claims.
func TestEncodeAccountKeepsBase(t *testing.T) {
	op, acc := mustKey(t, nkeys.PrefixByteOperator), mustKey(t, nkeys.PrefixByteAccount)
	orig := jwt.NewAccountClaims(Public(acc))
	orig.Imports.Add(&jwt.Import{Name: "metrics", Subject: "metrics.>", Account: Public(mustKey(t, nkeys.PrefixByteAccount)), Type: jwt.Stream})
	orig.Limits.DiskStorage = 1 << 30
	orig.Limits.Conn = 5
	orig.SigningKeys.Add(Public(mustKey(t, nkeys.PrefixByteAccount)))
	orig.RevokeAt("UOLD", time.Unix(1_800_000_000, 0))
	orig.Trace = &jwt.MsgTrace{Destination: "trace.app", Sampling: 50}
	base, err := json.Marshal(&orig.Account)
	if err != nil {
		t.Fatal(err)
	}
	limits, claims := AccountModel(&orig.Account)
	limits.Conn = 10
	var imports []ImportSpec
	for _, im := range claims.Imports {
		imports = append(imports, ImportSpec{Import: im, AccountKey: im.Account})
	}
	signer := Public(mustKey(t, nkeys.PrefixByteAccount))
	token, _, err := EncodeAccount(op, AccountSpec{Name: "app", PublicKey: Public(acc), SigningKeys: []string{signer},
		Limits: limits, Claims: claims, Imports: imports,
		Revocations: []rotatord.Revocation{{PublicKey: "UNEW", RevokedAt: time.Unix(1_800_000_100, 0)}}, Base: base})
	if err != nil {
		t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(token)
	if err != nil {
		t.Fatal(err)
	}
	if len(ac.Imports) != 1 || ac.Imports[0].Name != "metrics" || ac.Limits.DiskStorage != 1<<30 {
		t.Errorf("imports %v, disk storage %d: the imported claims were not kept", ac.Imports, ac.Limits.DiskStorage)
	}
	if ac.Trace == nil || ac.Trace.Destination != "trace.app" {
		t.Errorf("trace %+v: the base's unmodeled claims were not kept", ac.Trace)
	}
	if ac.Limits.Conn != 10 || len(ac.SigningKeys) != 1 || !ac.SigningKeys.Contains(signer) {
		t.Errorf("conn limit %d, signing keys %v: want rotatord's", ac.Limits.Conn, ac.SigningKeys)
	}
	if len(ac.Revocations) != 1 || ac.Revocations["UNEW"] == 0 {
		t.Errorf("revocations %v, want only rotatord's", ac.Revocations)
	}
	if _, _, err := EncodeAccount(op, AccountSpec{Name: "app", PublicKey: Public(acc), Base: []byte("{not json")}); err == nil {
		t.Error("a malformed base was accepted")
	}
}

func TestUnverifiedUserSubject(t *testing.T) {
	user, acc := mustKey(t, nkeys.PrefixByteUser), mustKey(t, nkeys.PrefixByteAccount)
	userJWT, err := jwt.NewUserClaims(Public(user)).Encode(acc)
	if err != nil {
		t.Fatal(err)
	}
	if sub, err := UnverifiedUserSubject(userJWT); err != nil || sub != Public(user) {
		t.Fatalf("user jwt: %q, %v; want %s", sub, err, Public(user))
	}
	// The signature is not what it reads: a JWT whose signature was
	// replaced still names its user (the servers refuse it).
	head, _, _ := strings.Cut(userJWT, ".")
	forged := userJWT[:strings.LastIndex(userJWT, ".")+1] + strings.Repeat("A", 86)
	if sub, err := UnverifiedUserSubject(forged); err != nil || sub != Public(user) {
		t.Fatalf("re-signed user jwt: %q, %v", sub, err)
	}
	accJWT, err := jwt.NewAccountClaims(Public(acc)).Encode(acc)
	if err != nil {
		t.Fatal(err)
	}
	for name, token := range map[string]string{
		"account jwt": accJWT,
		"garbage":     "not a jwt",
		"two parts":   head + ".e30",
		"line break":  strings.Replace(userJWT, ".", ".\n", 1),
	} {
		if sub, err := UnverifiedUserSubject(token); err == nil {
			t.Errorf("%s: got subject %q, want an error", name, sub)
		}
	}
}
