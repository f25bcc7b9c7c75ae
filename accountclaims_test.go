package rotatord

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func i64(v int64) *int64 { return &v }

func TestJetStreamPatchApply(t *testing.T) {
	flat := func(l JetStreamLimits) *JetStream { return &JetStream{Limits: &l} }
	with := func(f func(*JetStreamLimits)) JetStreamLimits {
		l := UnlimitedJetStream
		f(&l)
		return l
	}
	cases := []struct {
		name  string
		cur   *JetStream
		patch JetStreamPatch
		want  *JetStream
		err   string
	}{
		{"on, unlimited", nil, JetStreamPatch{}, flat(UnlimitedJetStream), ""},
		{"on, some limits", nil, JetStreamPatch{JetStreamLimitsPatch: JetStreamLimitsPatch{Streams: i64(3)}},
			flat(with(func(l *JetStreamLimits) { l.Streams = 3 })), ""},
		{"merge into flat", flat(with(func(l *JetStreamLimits) { l.Streams = 3 })),
			JetStreamPatch{JetStreamLimitsPatch: JetStreamLimitsPatch{DiskStorage: i64(10)}},
			flat(with(func(l *JetStreamLimits) { l.Streams, l.DiskStorage = 3, 10 })), ""},
		{"empty keeps", &JetStream{Tiers: map[string]JetStreamLimits{"R1": UnlimitedJetStream}}, JetStreamPatch{},
			&JetStream{Tiers: map[string]JetStreamLimits{"R1": UnlimitedJetStream}}, ""},
		{"flat replaces tiers", &JetStream{Tiers: map[string]JetStreamLimits{"R1": with(func(l *JetStreamLimits) { l.Streams = 1 })}},
			JetStreamPatch{JetStreamLimitsPatch: JetStreamLimitsPatch{Consumer: i64(2)}},
			flat(with(func(l *JetStreamLimits) { l.Consumer = 2 })), ""},
		{"tiers merge by name, others go", &JetStream{Tiers: map[string]JetStreamLimits{
			"R1": with(func(l *JetStreamLimits) { l.Streams = 1 }), "R3": UnlimitedJetStream}},
			JetStreamPatch{Tiers: map[string]JetStreamLimitsPatch{"R1": {Consumer: i64(5)}}},
			&JetStream{Tiers: map[string]JetStreamLimits{"R1": with(func(l *JetStreamLimits) { l.Streams, l.Consumer = 1, 5 })}}, ""},
		{"both", nil, JetStreamPatch{JetStreamLimitsPatch: JetStreamLimitsPatch{Streams: i64(1)}, Tiers: map[string]JetStreamLimitsPatch{"R1": {}}}, nil, "not both"},
		{"empty tiers", nil, JetStreamPatch{Tiers: map[string]JetStreamLimitsPatch{}}, nil, "tiers is empty"},
	}
	for _, c := range cases {
		got, err := c.patch.Apply(c.cur)
		if c.err != "" {
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err = %v, want %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
}

func TestJetStreamJSON(t *testing.T) {
	l := UnlimitedJetStream
	l.Streams = 4
	for _, js := range []JetStream{{Limits: &l}, {Tiers: map[string]JetStreamLimits{"R1": l, "R3": UnlimitedJetStream}}} {
		b, err := json.Marshal(js)
		if err != nil {
			t.Fatal(err)
		}
		var back JetStream
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, js) {
			t.Errorf("%s round-trips to %+v, %v", b, back, err)
		}
	}
	if b, _ := json.Marshal(JetStream{Limits: &l}); !strings.Contains(string(b), `"streams":4`) || strings.Contains(string(b), "tiers") {
		t.Errorf("flat JetStream = %s", b)
	}
}

func TestJetStreamValidate(t *testing.T) {
	ok := UnlimitedJetStream
	noStorage := ok
	noStorage.MemStorage, noStorage.DiskStorage = 0, 0
	big := ok
	big.DiskStorage, big.DiskMaxStreamBytes = 10, 11
	neg := ok
	neg.MaxAckPending = -2
	for _, c := range []struct {
		js   JetStream
		want string
	}{
		{JetStream{Limits: &ok}, ""},
		{JetStream{Tiers: map[string]JetStreamLimits{"R1": ok, "R3": noStorage}}, ""}, // a tier may allow nothing
		{JetStream{Limits: &noStorage}, "both 0"},
		{JetStream{Limits: &big}, "more than disk_storage"},
		{JetStream{Limits: &neg}, "max_ack_pending"},
		{JetStream{Tiers: map[string]JetStreamLimits{"r1": ok}}, "R1 to R5"},
		{JetStream{Tiers: map[string]JetStreamLimits{"R1": noStorage}}, "every tier"},
		{JetStream{}, "no limits"},
	} {
		err := c.js.Validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", c.js, err, c.want)
		}
	}
}

func TestAccountClaimsNormalize(t *testing.T) {
	c := AccountClaims{
		Exports:  []Export{{Subject: "a.>", Type: ExportService}, {Name: "n", Subject: "b", Type: ExportStream}},
		Imports:  []Import{{Account: "x", Subject: "c", Type: ExportStream}},
		Mappings: map[string][]WeightedMapping{"m": {{Subject: "n"}}},
		Tags:     []string{" Team:A ", "team:a", "B"},
	}
	c.Normalize()
	if c.Exports[0].Name != "a.>" || c.Exports[0].ResponseType != ResponseSingleton || c.Exports[1].Name != "n" || c.Exports[1].ResponseType != "" {
		t.Errorf("exports = %+v", c.Exports)
	}
	if c.Imports[0].Name != "c" || c.Mappings["m"][0].Weight != 100 || !reflect.DeepEqual(c.Tags, []string{"team:a", "b"}) {
		t.Errorf("imports %+v, mappings %+v, tags %v", c.Imports, c.Mappings, c.Tags)
	}
	if c.DefaultPermissions.Pub.Allow == nil {
		t.Error("default permissions not normalized")
	}
}

func TestAccountClaimsValidate(t *testing.T) {
	const self = "ASELF"
	cases := []struct {
		name string
		c    AccountClaims
		want string
	}{
		{"valid", AccountClaims{
			Exports: []Export{{Subject: "a.*", Type: ExportStream, AccountTokenPosition: 2}, {Subject: "a.*", Type: ExportService,
				Latency: &ServiceLatency{Sampling: 0, Results: "lat"}, ResponseThreshold: "1s"}},
			Imports:  []Import{{Account: "other", Subject: "x.*.>", Type: ExportStream, LocalSubject: "mine.$1.>"}},
			Mappings: map[string][]WeightedMapping{"m.*": {{Subject: "n.$1", Weight: 50}, {Subject: "o.$1", Weight: 50, Cluster: "c"}}},
			InfoURL:  "https://example.com", Tags: []string{"a:b"}}, ""},
		{"same service twice from one account", AccountClaims{Imports: []Import{
			{Account: "o", Subject: "s.a", Type: ExportService, LocalSubject: "q"},
			{Account: "o", Subject: "s.b", Type: ExportService, LocalSubject: "q"}}}, "overlaps"},
		{"same local subject from two accounts", AccountClaims{Imports: []Import{
			{Account: "o", Subject: "s.a", Type: ExportService, LocalSubject: "q"},
			{Account: "p", Subject: "s.a", Type: ExportService, LocalSubject: "q"}}}, ""},
		{"import by own key", AccountClaims{Imports: []Import{{Account: self, Subject: "a", Type: ExportStream}}}, "itself"},
		{"import by own name", AccountClaims{Imports: []Import{{Account: "me", Subject: "a", Type: ExportStream}}}, "itself"},
		{"import without account", AccountClaims{Imports: []Import{{Subject: "a", Type: ExportStream}}}, "account is required"},
		{"share on a stream", AccountClaims{Imports: []Import{{Account: "o", Subject: "a", Type: ExportStream, Share: true}}}, "share"},
		{"allow_trace on a service import", AccountClaims{Imports: []Import{{Account: "o", Subject: "a", Type: ExportService, AllowTrace: true}}}, "allow_trace"},
		{"local subject with a wrong reference", AccountClaims{Imports: []Import{{Account: "o", Subject: "a.*", Type: ExportStream, LocalSubject: "b.$2"}}}, "$2"},
		{"local subject missing a wildcard", AccountClaims{Imports: []Import{{Account: "o", Subject: "a.*.*", Type: ExportStream, LocalSubject: "b.$1"}}}, "once"},
		{"token that is not a JWT", AccountClaims{Imports: []Import{{Account: "o", Subject: "a", Type: ExportStream, Token: "nope"}}}, "token"},
		{"latency on a stream", AccountClaims{Exports: []Export{{Subject: "a", Type: ExportStream, Latency: &ServiceLatency{Sampling: 5, Results: "l"}}}}, "for services"},
		{"latency results with wildcard", AccountClaims{Exports: []Export{{Subject: "a", Type: ExportService, ResponseType: ResponseSingleton,
			Latency: &ServiceLatency{Sampling: 5, Results: "l.*"}}}}, "wildcards"},
		{"bad revocation key", AccountClaims{Exports: []Export{{Subject: "a", Type: ExportStream, Revocations: map[string]int64{"U1": 1}}}}, "revocations"},
		{"stream and service may share a subject", AccountClaims{Exports: []Export{{Subject: "a", Type: ExportStream},
			{Subject: "a", Type: ExportService, ResponseType: ResponseSingleton}}}, ""},
		{"mapping destination twice", AccountClaims{Mappings: map[string][]WeightedMapping{"a": {{Subject: "b", Weight: 10}, {Subject: "b", Weight: 10}}}}, "twice"},
		{"cluster weights", AccountClaims{Mappings: map[string][]WeightedMapping{"a": {{Subject: "b", Weight: 60, Cluster: "c"}, {Subject: "d", Weight: 60, Cluster: "c"}}}}, "cluster"},
		{"bad weight", AccountClaims{Mappings: map[string][]WeightedMapping{"a": {{Subject: "b", Weight: 101}}}}, "percentage"},
		{"info url scheme", AccountClaims{InfoURL: "ftp://example.com"}, "http"},
		{"empty tag", AccountClaims{Tags: []string{""}}, "1 to 255"},
	}
	for _, c := range cases {
		c.c.Normalize()
		err := c.c.Validate(self, "me")
		if c.want == "" && err != nil || c.want != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: Validate = %v, want %q", c.name, err, c.want)
		}
	}
}

func TestCheckLimits(t *testing.T) {
	c := AccountClaims{Exports: []Export{{Subject: "a.*", Type: ExportStream}}, Imports: []Import{{Account: "o", Subject: "b", Type: ExportStream}}}
	l := NoLimits
	if err := c.CheckLimits(l); err != nil {
		t.Fatalf("CheckLimits(NoLimits) = %v", err)
	}
	for _, c2 := range []struct {
		mod  func(*Limits)
		want string
	}{
		{func(l *Limits) { l.Imports = 0 }, "limits.imports"},
		{func(l *Limits) { l.Exports = 0 }, "limits.exports"},
		{func(l *Limits) { l.Wildcards = false }, "limits.wildcards"},
	} {
		l := NoLimits
		c2.mod(&l)
		if err := c.CheckLimits(l); err == nil || !strings.Contains(err.Error(), c2.want) {
			t.Errorf("CheckLimits = %v, want %q", err, c2.want)
		}
	}
}

func TestSubjectContainedIn(t *testing.T) {
	for _, c := range []struct {
		s, other string
		in       bool
	}{
		{"a.b", "a.b", true}, {"a.b", "a.*", true}, {"a.b.c", "a.>", true}, {"a.*", "a.>", true}, {">", ">", true},
		{"a.>", "a.*", false}, {"a", "a.>", false}, {"a.b", "a.c", false}, {"a.*", "a.b", false}, {"a.b.c", "a.*", false},
	} {
		if got := SubjectContainedIn(c.s, c.other); got != c.in {
			t.Errorf("SubjectContainedIn(%q, %q) = %v, want %v", c.s, c.other, got, c.in)
		}
	}
	for _, c := range []struct {
		a, b    string
		collide bool
	}{
		{"a.b", "a.*", true}, {"a.>", "a.b.c", true}, {"*.b", "a.*", true}, {"a.b", "a.c", false}, {"a", "a.b", false}, {"a.*", "b.>", false},
	} {
		if got := SubjectsCollide(c.a, c.b); got != c.collide {
			t.Errorf("SubjectsCollide(%q, %q) = %v, want %v", c.a, c.b, got, c.collide)
		}
	}
}

func TestLatencySamplingJSON(t *testing.T) {
	var l ServiceLatency
	if err := json.Unmarshal([]byte(`{"sampling":"headers","results":"r"}`), &l); err != nil || l.Sampling != 0 {
		t.Fatalf("headers: %v, %v", l, err)
	}
	if b, _ := json.Marshal(l); string(b) != `{"sampling":"headers","results":"r"}` {
		t.Errorf("marshal headers = %s", b)
	}
	if err := json.Unmarshal([]byte(`{"sampling":25,"results":"r"}`), &l); err != nil || l.Sampling != 25 {
		t.Fatalf("25: %v, %v", l, err)
	}
	if err := json.Unmarshal([]byte(`{"sampling":"most","results":"r"}`), &l); err == nil {
		t.Error("sampling \"most\" accepted")
	}
}

func TestLimitsPatch(t *testing.T) {
	f := false
	got := LimitsPatch{Imports: i64(2), Wildcards: &f, Leaf: i64(0)}.Apply(NoLimits)
	want := NoLimits
	want.Imports, want.Wildcards, want.Leaf = 2, false, 0
	if got != want {
		t.Errorf("Apply = %+v, want %+v", got, want)
	}
	if err := (Limits{Conn: -1, Subs: -1, Payload: -1, Data: -1, Imports: -1, Exports: -1, Leaf: -2}).Validate(); err == nil || !strings.Contains(err.Error(), "limits.leaf") {
		t.Errorf("Validate leaf -2 = %v", err)
	}
}
