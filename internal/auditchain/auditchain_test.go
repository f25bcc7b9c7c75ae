package auditchain_test

import (
	"bytes"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/auditchain"
)

func sample() auditchain.Event {
	return auditchain.Event{
		ID:         42,
		At:         time.Date(2025, 3, 1, 12, 30, 45, 123456000, time.UTC),
		Actor:      "token:admin",
		Action:     "credential.revoke",
		Account:    "fleet",
		Agent:      "kate",
		PublicKey:  "UABC",
		RotationID: "0b6f7e52-9d1c-4a55-8f0e-6c1f2b7a9d10",
		Details:    []byte(`{"reason": "compromised", "keys": 2}`),
	}
}

func TestCanonicalJSON(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{``, `{}`},
		{`{}`, `{}`},
		{` { "b" : 1 , "a" : [ 1 , 2 , { "d" : null , "c" : "x" } ] } `, `{"a":[1,2,{"c":"x","d":null}],"b":1}`},
		// Numbers are copied, never rounded through float64.
		{`{"n": 12345678901234567890, "f": 1.50, "e": -0.0001}`, `{"e":-0.0001,"f":1.50,"n":12345678901234567890}`},
		{`{"t": true, "f": false}`, `{"f":false,"t":true}`},
		// Keys sort by bytes: upper case before lower, shorter prefix first.
		{`{"b":1,"B":2,"ab":3,"a":4}`, `{"B":2,"a":4,"ab":3,"b":1}`},
		// No HTML escaping, non-ASCII kept raw, control characters escaped.
		{`{"s": "<a&b> \u00e9t\u00e9 \u2028 \n\t\r \u0001 \b \" \\ \/"}`, "{\"s\":\"<a&b> été \u2028 \\n\\t\\r \\u0001 \\u0008 \\\" \\\\ /\"}"},
		{`"just a string"`, `"just a string"`},
		{`[]`, `[]`},
	} {
		got, err := auditchain.CanonicalJSON([]byte(c.in))
		if err != nil || string(got) != c.want {
			t.Errorf("CanonicalJSON(%s) = %s, %v; want %s", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{`{`, `{"a":}`, `{"a":1}{}`, `{"a":1,"a":2}`, `nope`, `[1,]`} {
		if got, err := auditchain.CanonicalJSON([]byte(bad)); err == nil {
			t.Errorf("CanonicalJSON(%s) = %s; want an error", bad, got)
		}
	}
}

// TestHashIsStable pins the encoding: if this test fails, every chain
// already stored fails verification. Change Version instead.
func TestHashIsStable(t *testing.T) {
	enc, err := auditchain.Encode(sample())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(enc, []byte("\x00\x00\x00\x11rotatord-audit-v1\x00\x00\x00\x0242\x00\x00\x00\x1b2025-03-01T12:30:45.123456Z")) {
		t.Fatalf("encoding starts %q", enc[:60])
	}
	if !bytes.HasSuffix(enc, []byte("\x00\x00\x00\x21"+`{"keys":2,"reason":"compromised"}`)) {
		t.Fatalf("encoding ends %q", enc[len(enc)-40:])
	}
	h, err := auditchain.Hash(auditchain.Genesis(), sample())
	if err != nil {
		t.Fatal(err)
	}
	// Computed independently from the package documentation (Python hashlib, struct, json).
	const want = "acbb9ebcdb091832231b3996667444c710ac889e4bc969b7a5c32bdb3b1b9ffd"
	if got := hex.EncodeToString(h); got != want {
		t.Fatalf("hash = %s; want %s", got, want)
	}
}

func TestHashCoversEveryField(t *testing.T) {
	base, _ := auditchain.Hash(auditchain.Genesis(), sample())
	seen := map[string]string{hex.EncodeToString(base): "base"}
	for name, mod := range map[string]func(*auditchain.Event){
		"id":         func(e *auditchain.Event) { e.ID = 43 },
		"at":         func(e *auditchain.Event) { e.At = e.At.Add(time.Microsecond) },
		"actor":      func(e *auditchain.Event) { e.Actor = "token:other" },
		"action":     func(e *auditchain.Event) { e.Action = "credential.issue" },
		"account":    func(e *auditchain.Event) { e.Account = "fleet2" },
		"agent":      func(e *auditchain.Event) { e.Agent = "bob" },
		"public_key": func(e *auditchain.Event) { e.PublicKey = "UABD" },
		"rotation":   func(e *auditchain.Event) { e.RotationID = "" },
		"details":    func(e *auditchain.Event) { e.Details = []byte(`{"reason":"compromised","keys":3}`) },
		// Field boundaries are unambiguous.
		"boundary": func(e *auditchain.Event) { e.Actor, e.Action = e.Actor+"c", e.Action[1:] },
		"empty":    func(e *auditchain.Event) { e.Account, e.Agent = "", e.Account+e.Agent },
	} {
		e := sample()
		mod(&e)
		h, err := auditchain.Hash(auditchain.Genesis(), e)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if prev, dup := seen[hex.EncodeToString(h)]; dup {
			t.Errorf("changing %s gives the same hash as %s", name, prev)
		}
		seen[hex.EncodeToString(h)] = name
	}
	other, _ := auditchain.Hash(bytes.Repeat([]byte{1}, auditchain.HashSize), sample())
	if bytes.Equal(other, base) {
		t.Error("the previous hash does not change the hash")
	}
}

func TestHashIgnoresRepresentation(t *testing.T) {
	a := sample()
	b := sample()
	// The same instant in another zone, key order and spacing of the details.
	b.At = a.At.In(time.FixedZone("X", 5*3600+1800))
	b.Details = []byte(`{"keys":2,"reason":"compromised"}`)
	ha, _ := auditchain.Hash(auditchain.Genesis(), a)
	hb, _ := auditchain.Hash(auditchain.Genesis(), b)
	if !bytes.Equal(ha, hb) {
		t.Fatal("the same event in another representation hashes differently")
	}
}

// chain builds n links over events 1..n (event ids 10, 20, ...).
func chain(t *testing.T, n int) ([]auditchain.Link, []*auditchain.Event) {
	t.Helper()
	prev := auditchain.Genesis()
	var links []auditchain.Link
	var events []*auditchain.Event
	for i := 1; i <= n; i++ {
		e := sample()
		e.ID = int64(10 * i)
		e.At = e.At.Add(time.Duration(i) * time.Second)
		h, err := auditchain.Hash(prev, e)
		if err != nil {
			t.Fatal(err)
		}
		links = append(links, auditchain.Link{Seq: int64(i), EventID: e.ID, PrevHash: prev, Hash: h})
		events = append(events, &e)
		prev = h
	}
	return links, events
}

func TestVerifier(t *testing.T) {
	links, _ := chain(t, 5)
	head := auditchain.Head{Seq: 5, Hash: hex.EncodeToString(links[4].Hash)}
	mid := auditchain.Head{Seq: 3, Hash: hex.EncodeToString(links[2].Hash)}
	for _, c := range []struct {
		name    string
		anchors []auditchain.Head
		tamper  func(links []auditchain.Link, events []*auditchain.Event) ([]auditchain.Link, []*auditchain.Event)
		want    []string // "kind seq event" per problem
		head    int64
	}{
		{name: "intact", anchors: []auditchain.Head{mid, head}, head: 5},
		{name: "changed event", head: 5, want: []string{"changed 2 20"},
			tamper: func(l []auditchain.Link, e []*auditchain.Event) ([]auditchain.Link, []*auditchain.Event) {
				e[1].Actor = "mallory"
				return l, e
			}},
		{name: "changed details", head: 5, want: []string{"changed 4 40"},
			tamper: func(l []auditchain.Link, e []*auditchain.Event) ([]auditchain.Link, []*auditchain.Event) {
				e[3].Details = []byte(`{"reason":"routine","keys":2}`)
				return l, e
			}},
		{name: "deleted event", head: 5, want: []string{"deleted 3 30"},
			tamper: func(l []auditchain.Link, e []*auditchain.Event) ([]auditchain.Link, []*auditchain.Event) {
				e[2] = nil
				return l, e
			}},
		{name: "missing link", head: 5, want: []string{"missing 3 0"},
			tamper: func(l []auditchain.Link, e []*auditchain.Event) ([]auditchain.Link, []*auditchain.Event) {
				return append(l[:2:2], l[3:]...), append(e[:2:2], e[3:]...)
			}},
		{name: "missing first links", head: 5, want: []string{"missing 1 0"},
			tamper: func(l []auditchain.Link, e []*auditchain.Event) ([]auditchain.Link, []*auditchain.Event) {
				return l[2:], e[2:]
			}},
		{name: "swapped links", head: 5, want: []string{"broken_link 3 40", "broken_link 4 30", "broken_link 5 50"},
			tamper: func(l []auditchain.Link, e []*auditchain.Event) ([]auditchain.Link, []*auditchain.Event) {
				l[2], l[3] = l[3], l[2]
				l[2].Seq, l[3].Seq = 3, 4
				e[2], e[3] = e[3], e[2]
				return l, e
			}},
		{name: "rewritten link hash", head: 5, want: []string{"changed 2 20", "broken_link 3 30"},
			tamper: func(l []auditchain.Link, e []*auditchain.Event) ([]auditchain.Link, []*auditchain.Event) {
				l[1].Hash = bytes.Repeat([]byte{7}, auditchain.HashSize)
				return l, e
			}},
		{name: "anchor mismatch", head: 5, anchors: []auditchain.Head{{Seq: 3, Hash: strings.Repeat("ab", 32)}},
			want: []string{"anchor_mismatch 3 30"}},
		{name: "cut chain", head: 2, anchors: []auditchain.Head{mid}, want: []string{"anchor_mismatch 3 0"},
			tamper: func(l []auditchain.Link, e []*auditchain.Event) ([]auditchain.Link, []*auditchain.Event) {
				return l[:2], e[:2]
			}},
		{name: "anchored link gone", head: 5, anchors: []auditchain.Head{mid}, want: []string{"missing 3 0", "anchor_mismatch 3 0"},
			tamper: func(l []auditchain.Link, e []*auditchain.Event) ([]auditchain.Link, []*auditchain.Event) {
				return append(l[:2:2], l[3:]...), append(e[:2:2], e[3:]...)
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			links, events := chain(t, 5)
			if c.tamper != nil {
				links, events = c.tamper(links, events)
			}
			v := auditchain.NewVerifier(c.anchors...)
			for i, l := range links {
				v.Check(l, events[i])
			}
			r := v.Report()
			var got []string
			for _, p := range r.Problems {
				got = append(got, strings.Join([]string{string(p.Kind), strconv.FormatInt(p.Seq, 10), strconv.FormatInt(p.EventID, 10)}, " "))
				if p.Message == "" {
					t.Errorf("problem %+v has no message", p)
				}
			}
			if strings.Join(got, "; ") != strings.Join(c.want, "; ") {
				t.Errorf("problems = %v; want %v\n%+v", got, c.want, r.Problems)
			}
			if r.OK() != (len(c.want) == 0) {
				t.Errorf("OK() = %v with problems %v", r.OK(), got)
			}
			if r.Head.Seq != c.head || r.Head.Hash != hex.EncodeToString(links[len(links)-1].Hash) {
				t.Errorf("head = %+v; want seq %d", r.Head, c.head)
			}
		})
	}
}

func TestEmptyChain(t *testing.T) {
	r := auditchain.NewVerifier().Report()
	if !r.OK() || r.Events != 0 || r.Head.Seq != 0 || r.Head.Hash != strings.Repeat("00", 32) {
		t.Fatalf("report of an empty chain = %+v", r)
	}
}

func TestParseHead(t *testing.T) {
	h := auditchain.Head{Seq: 12, Hash: strings.Repeat("0a", 32)}
	got, err := auditchain.ParseHead(strings.ToUpper(h.String()))
	if err != nil || got != h {
		t.Fatalf("ParseHead(%s) = %+v, %v; want %+v", h, got, err, h)
	}
	for _, bad := range []string{"", "12", "x:" + h.Hash, "0:" + h.Hash, "12:abcd", "12:" + strings.Repeat("zz", 32)} {
		if _, err := auditchain.ParseHead(bad); err == nil {
			t.Errorf("ParseHead(%q) succeeded", bad)
		}
	}
}
