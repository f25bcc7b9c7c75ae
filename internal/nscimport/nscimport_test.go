package nscimport

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
)

type keys map[string]nkeys.KeyPair

func (k keys) add(t *testing.T, kind nkeys.PrefixByte) nkeys.KeyPair {
	t.Helper()
	kp, err := nkeys.CreatePair(kind)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	k[pub] = kp
	return kp
}

func (k keys) lookup(pub string) ([]byte, string, error) {
	kp, ok := k[pub]
	if !ok {
		return nil, "", nil
	}
	seed, _ := kp.Seed()
	return append([]byte(nil), seed...), "keystore/" + pub, nil
}

func pub(kp nkeys.KeyPair) string { p, _ := kp.PublicKey(); return p }

func enc(t *testing.T, c interface {
	Encode(nkeys.KeyPair) (string, error)
}, kp nkeys.KeyPair) []byte {
	t.Helper()
	s, err := c.Encode(kp)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(s)
}

// Read turns JWTs into the domain's model: the operator with the keys it
// signs with, accounts with their claims and held keys, users with their
// permissions; what has no place is listed.
func TestRead(t *testing.T) {
	k := keys{}
	op, opSK := k.add(t, nkeys.PrefixByteOperator), k.add(t, nkeys.PrefixByteOperator)
	sys, app, appSK := k.add(t, nkeys.PrefixByteAccount), k.add(t, nkeys.PrefixByteAccount), k.add(t, nkeys.PrefixByteAccount)
	scoped, _ := nkeys.CreateAccount()            // no seed: dropped
	withSeed := k.add(t, nkeys.PrefixByteAccount) // a role
	user, _ := nkeys.CreateUser()

	oc := jwt.NewOperatorClaims(pub(op))
	oc.Name = "ACME"
	oc.SigningKeys.Add(pub(opSK))
	oc.SystemAccount = pub(sys)
	sc := jwt.NewAccountClaims(pub(sys))
	sc.Name = "SYS"
	ac := jwt.NewAccountClaims(pub(app))
	ac.Name = "APP"
	ac.SigningKeys.Add(pub(appSK))
	us := jwt.NewUserScope()
	us.Key, us.Role = pub(scoped), "worker"
	ac.SigningKeys.AddScopedSigner(us)
	rs := jwt.NewUserScope()
	rs.Key, rs.Role = pub(withSeed), "reader"
	rs.Template.Sub.Allow.Add("reports.{{name()}}.>")
	rs.Template.BearerToken = true
	ac.SigningKeys.AddScopedSigner(rs)
	ac.Limits.JetStreamTieredLimits["R3"] = jwt.JetStreamLimits{DiskStorage: 1 << 30, Streams: -1, Consumer: -1}
	ac.Exports.Add(&jwt.Export{Subject: "svc.>", Type: jwt.Service, TokenReq: true})
	ac.Expires = time.Now().Add(24 * time.Hour).Unix()
	ac.RevokeAt(pub(user), time.Unix(1000, 0))
	uc := jwt.NewUserClaims(pub(user))
	uc.Name = "kate"
	uc.IssuerAccount = pub(app)
	uc.Pub.Allow.Add("a.>")
	uc.Src.Add("10.0.0.0/8")
	uc.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Second}
	uc.Tags.Add("team:a")
	uc.BearerToken = true

	set, err := Read(Source{
		Operator: File{Path: "op.jwt", Content: enc(t, oc, op)},
		Accounts: []File{{Path: "sys.jwt", Content: enc(t, sc, op)}, {Path: "app.jwt", Content: enc(t, ac, opSK)}},
		Users:    []File{{Path: "kate.jwt", Content: enc(t, uc, appSK)}},
		Seeds:    k.lookup,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Wipe()
	if set.Operator.Name != "ACME" || set.Operator.Identity == nil || len(set.Operator.Signers) != 1 || set.Operator.Signers[0].PublicKey != pub(opSK) {
		t.Fatalf("operator = %+v", set.Operator)
	}
	a := set.Accounts[1]
	if a.Account.Name != "APP" || len(a.Held) != 1 || a.Held[0].PublicKey != pub(appSK) || a.IdentityHeld {
		t.Fatalf("APP = %+v", a)
	}
	if why := a.Dropped[pub(scoped)]; !strings.Contains(why, `role "worker"`) || !strings.Contains(why, "seed") {
		t.Errorf("scoped key dropped because %q", why)
	}
	if len(a.Roles) != 1 || a.Roles[0].Name != "reader" || a.Roles[0].Key.PublicKey != pub(withSeed) ||
		a.Roles[0].Template.Permissions.Sub.Allow[0] != "reports.{{name()}}.>" || a.Roles[0].Template.Permissions.Pub.Allow[0] != ">" ||
		strings.Join(a.Roles[0].Unmodeled, ",") != "bearer_token" {
		t.Errorf("roles = %+v", a.Roles)
	}
	if js := a.Account.Claims.JetStream; js == nil || js.Tiers["R3"].DiskStorage != 1<<30 || len(a.Account.Claims.Exports) != 1 ||
		a.Account.Claims.Exports[0].Name != "svc.>" || a.Account.Limits != rotatord.NoLimits {
		t.Errorf("APP claims %+v, limits %+v", a.Account.Claims, a.Account.Limits)
	}
	if len(a.Unmodeled) != 1 || !strings.HasPrefix(a.Unmodeled[0], "exp") || a.Revocations[pub(user)] != 1000 {
		t.Errorf("APP unmodeled %v, revocations %v", a.Unmodeled, a.Revocations)
	}
	if !set.Accounts[0].IdentityHeld || len(set.Accounts[0].Held) != 0 {
		t.Errorf("SYS = %+v: want its own seed held and no signing key", set.Accounts[0])
	}
	u := set.Users[0]
	if u.Name != "kate" || u.Account != pub(app) || u.Issuer != pub(appSK) || !u.ExpiresAt.IsZero() ||
		len(u.Template.Permissions.Pub.Allow) != 1 || u.Template.Permissions.Sub.Allow[0] != ">" ||
		u.Template.Permissions.Resp == nil || u.Template.Src[0] != "10.0.0.0/8" || u.Tags[0] != "team:a" ||
		strings.Join(u.Unmodeled, ",") != "bearer_token" {
		t.Errorf("user = %+v", u)
	}
	set.Wipe()
	if a.Held[0].Seed[0] != 0 || set.Operator.Identity.Seed[0] != 0 || a.Roles[0].Key.Seed[0] != 0 {
		t.Error("Wipe left seeds")
	}
}

// Every problem is reported at once, each naming its file.
func TestReadProblems(t *testing.T) {
	k := keys{}
	op := k.add(t, nkeys.PrefixByteOperator)
	stranger, _ := nkeys.CreateOperator()
	acc, _ := nkeys.CreateAccount() // no seed anywhere
	oc := jwt.NewOperatorClaims(pub(op))
	oc.Name = "ACME"
	oc.SystemAccount = pub(acc)
	ac := jwt.NewAccountClaims(pub(acc))
	ac.Name = "APP"
	_, err := Read(Source{
		Operator: File{Path: "op.jwt", Content: enc(t, oc, op)},
		Accounts: []File{{Path: "app.jwt", Content: enc(t, ac, op)}, {Path: "foreign.jwt", Content: enc(t, ac, stranger)},
			{Path: "junk.jwt", Content: []byte("junk")}},
		Users: []File{{Path: "bad.creds", Content: []byte("nothing")}},
		Seeds: k.lookup,
	})
	for _, want := range []string{"neither the account's seed", "foreign.jwt: account APP is signed by", "junk.jwt: not a valid account JWT",
		"bad.creds: not a valid user JWT"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Read error lacks %q: %v", want, err)
		}
	}
	if _, err := Read(Source{Operator: File{Path: "op.jwt", Content: []byte("x")}}); err == nil || !strings.Contains(err.Error(), "op.jwt") {
		t.Errorf("Read of a bad operator = %v", err)
	}
}
