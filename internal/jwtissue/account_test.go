package jwtissue

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
)

// Every modeled claim survives encoding and decoding: AccountModel of the
// claims EncodeAccount signs is what went in.
func TestAccountModelRoundTrip(t *testing.T) {
	acc, opSigner := mustKey(t, nkeys.PrefixByteAccount), mustKey(t, nkeys.PrefixByteOperator)
	ext := Public(mustKey(t, nkeys.PrefixByteAccount))
	r1 := rotatord.UnlimitedJetStream
	r1.Streams, r1.MaxBytesRequired = 3, true
	limits := rotatord.Limits{Conn: 5, Subs: 6, Payload: 7, Data: 8, Imports: 1, Exports: 2, Wildcards: true, Leaf: 3, DisallowBearer: true}
	claims := rotatord.AccountClaims{
		JetStream: &rotatord.JetStream{Tiers: map[string]rotatord.JetStreamLimits{"R1": r1, "R3": rotatord.UnlimitedJetStream}},
		Exports: []rotatord.Export{
			{Name: "e", Subject: "a.*", Type: rotatord.ExportStream, AccountTokenPosition: 2, Advertise: true, Description: "d", InfoURL: "https://x.example"},
			{Name: "s", Subject: "s.>", Type: rotatord.ExportService, TokenReq: true, ResponseType: rotatord.ResponseChunked,
				ResponseThreshold: "1.5s", Latency: &rotatord.ServiceLatency{Sampling: 20, Results: "lat"}, AllowTrace: true,
				Revocations: map[string]int64{ext: 100}},
		},
		Imports: []rotatord.Import{{Name: "i", Account: ext, Subject: "x.>", Type: rotatord.ExportService, LocalSubject: "y.>", Token: "t.o.k", Share: true}},
		DefaultPermissions: rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"p"}, Deny: []string{"q"}},
			Sub: rotatord.PermissionList{Allow: []string{"r"}}, Resp: &rotatord.ResponsePermission{Max: 1, TTL: time.Second}},
		Mappings: map[string][]rotatord.WeightedMapping{"m.*": {{Subject: "n.$1", Weight: 30}, {Subject: "o.$1", Weight: 100, Cluster: "c"}}},
		InfoURL:  "https://acc.example", Tags: []string{"a:b"},
	}
	claims.Normalize()
	spec := AccountSpec{Name: "fleet", PublicKey: Public(acc), Limits: limits, Claims: claims,
		Imports: []ImportSpec{{Import: claims.Imports[0], AccountKey: ext}}}
	token, _, err := EncodeAccount(opSigner, spec)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(token)
	if err != nil {
		t.Fatal(err)
	}
	gotLimits, got := AccountModel(&ac.Account)
	if gotLimits != limits {
		t.Errorf("limits = %+v, want %+v", gotLimits, limits)
	}
	if !reflect.DeepEqual(got, claims) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(claims)
		t.Errorf("claims =\n%s\nwant\n%s", g, w)
	}
	// Off is off: no JetStream limits at all.
	spec.Claims.JetStream = nil
	ac2, _ := AccountClaimsOf(spec)
	if ac2.Limits.IsJSEnabled() || len(ac2.Limits.JetStreamTieredLimits) != 0 || ac2.Limits.JetStreamLimits != (jwt.JetStreamLimits{}) {
		t.Errorf("JetStream off encodes %+v / %+v", ac2.Limits.JetStreamLimits, ac2.Limits.JetStreamTieredLimits)
	}
}

// A base keeps what rotatord does not model, and loses what it does.
func TestAccountBase(t *testing.T) {
	acc := mustKey(t, nkeys.PrefixByteAccount)
	base := jwt.NewAccountClaims(Public(acc))
	base.Exports.Add(&jwt.Export{Subject: "old", Type: jwt.Stream})
	base.DefaultPermissions.Resp = &jwt.ResponsePermission{MaxMsgs: 2, Expires: time.Second}
	base.ClusterTraffic = jwt.ClusterTrafficOwner
	base.Trace = &jwt.MsgTrace{Destination: "t", Sampling: 10}
	base.Limits.JetStreamLimits.DiskStorage = 100
	raw, _ := json.Marshal(&base.Account)
	ac, err := AccountClaimsOf(AccountSpec{Name: "a", PublicKey: Public(acc), Limits: rotatord.NoLimits, Base: raw})
	if err != nil {
		t.Fatal(err)
	}
	if len(ac.Exports) != 0 || ac.Limits.IsJSEnabled() {
		t.Errorf("modeled claims kept from the base: exports %v, limits %+v", ac.Exports, ac.Limits)
	}
	if ac.DefaultPermissions.Resp != nil {
		t.Errorf("default response permissions kept from the base: %+v", ac.DefaultPermissions.Resp)
	}
	if ac.ClusterTraffic != jwt.ClusterTrafficOwner || ac.Trace == nil || ac.Trace.Destination != "t" {
		t.Errorf("unmodeled claims lost: cluster traffic %q, trace %+v", ac.ClusterTraffic, ac.Trace)
	}
	if _, err := AccountClaimsOf(AccountSpec{Name: "a", PublicKey: Public(acc), Base: []byte("{")}); err == nil {
		t.Error("a base that does not decode was accepted")
	}
}

// The deprecated "to" of an import becomes its local_subject form.
func TestAccountModelImportTo(t *testing.T) {
	a := jwt.NewAccountClaims(Public(mustKey(t, nkeys.PrefixByteAccount)))
	a.Imports.Add(
		&jwt.Import{Account: "AX", Subject: "s.*", To: "pre", Type: jwt.Stream},
		&jwt.Import{Account: "AX", Subject: "local.q", To: "remote.q", Type: jwt.Service},
	)
	_, c := AccountModel(&a.Account)
	if c.Imports[0].LocalSubject != "pre.s.*" || c.Imports[0].Subject != "s.*" {
		t.Errorf("stream import with to = %+v", c.Imports[0])
	}
	if c.Imports[1].Subject != "remote.q" || c.Imports[1].LocalSubject != "local.q" {
		t.Errorf("service import with to = %+v", c.Imports[1])
	}
}

func TestActivation(t *testing.T) {
	exporter, signer := mustKey(t, nkeys.PrefixByteAccount), mustKey(t, nkeys.PrefixByteAccount)
	importer := Public(mustKey(t, nkeys.PrefixByteAccount))
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	token, expires, err := EncodeActivation(signer, ActivationSpec{Importer: importer, Exporter: Public(exporter),
		Subject: "svc.a", Type: rotatord.ExportService, Expires: exp})
	if err != nil || !expires.Equal(exp) {
		t.Fatalf("encode: %v, expires %v", err, expires)
	}
	act, err := DecodeActivation(token)
	if err != nil || act.Exporter != Public(exporter) || act.Issuer != Public(signer) || act.Importer != importer ||
		act.Subject != "svc.a" || act.Type != rotatord.ExportService || !act.Expires.Equal(exp) {
		t.Fatalf("decode: %+v, %v", act, err)
	}
	// nats-io/jwt agrees that the import is activated.
	im := &jwt.Import{Account: Public(exporter), Subject: "svc.a", Type: jwt.Service, Token: token}
	vr := jwt.CreateValidationResults()
	im.Validate(importer, vr)
	if !vr.IsEmpty() {
		t.Fatalf("jwt validation of the import: %v", vr.Errors())
	}
	imp := rotatord.Import{Account: Public(exporter), Subject: "svc.a", Type: rotatord.ExportService}
	if err := CheckImportToken(token, importer, Public(exporter), imp, time.Now()); err != nil {
		t.Fatalf("CheckImportToken = %v", err)
	}
	for _, c := range []struct {
		importer, exporter string
		im                 rotatord.Import
		now                time.Time
		want               string
	}{
		{Public(mustKey(t, nkeys.PrefixByteAccount)), Public(exporter), imp, time.Now(), "issued for"},
		{importer, Public(mustKey(t, nkeys.PrefixByteAccount)), imp, time.Now(), "issued by"},
		{importer, Public(exporter), rotatord.Import{Subject: "svc.a", Type: rotatord.ExportStream}, time.Now(), "stream import"},
		{importer, Public(exporter), rotatord.Import{Subject: "svc.b", Type: rotatord.ExportService}, time.Now(), "does not hold"},
		{importer, Public(exporter), imp, exp.Add(time.Second), "expired"},
	} {
		if err := CheckImportToken(token, c.importer, c.exporter, c.im, c.now); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CheckImportToken = %v, want %q", err, c.want)
		}
	}
	if err := CheckImportToken("nope", importer, Public(exporter), imp, time.Now()); err == nil {
		t.Error("a token that is not a JWT was accepted")
	}
}
