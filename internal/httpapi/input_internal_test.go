package httpapi

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
)

func TestRedactSeeds(t *testing.T) {
	var seeds []string
	for _, kind := range []nkeys.PrefixByte{nkeys.PrefixByteUser, nkeys.PrefixByteAccount, nkeys.PrefixByteOperator} {
		kp, err := nkeys.CreatePair(kind)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := kp.Seed()
		pub, _ := kp.PublicKey()
		seeds = append(seeds, string(seed))
		// Public keys stay: they are what errors are about.
		if got := redactSeeds(`public key "` + pub + `" is not a user key`); !strings.Contains(got, pub) {
			t.Errorf("redactSeeds removed a public key: %q", got)
		}
	}
	for _, seed := range seeds {
		for _, msg := range []string{
			`public key "` + seed + `" is not a user key`,
			"agent " + seed + " not found",
			strings.ToLower(seed),
			"x" + seed + "y",
		} {
			got := redactSeeds(msg)
			if strings.Contains(strings.ToUpper(got), strings.ToUpper(seed[1:])) || !strings.Contains(got, "[redacted") {
				t.Errorf("redactSeeds(%q) = %q", msg, got)
			}
		}
	}
	for _, msg := range []string{"", "agent \"kate\" not found", strings.Repeat("S", 57)} {
		if got := redactSeeds(msg); got != msg {
			t.Errorf("redactSeeds(%q) = %q, want it unchanged", msg, got)
		}
	}
}

func TestCheckJSONText(t *testing.T) {
	for _, c := range []struct {
		body string
		bad  bool
	}{
		{`{"description":"fine"}`, false},
		{`{"description":"caf\u00e9 ☕"}`, false},
		{`{"description":"a\\u0000b"}`, false}, // a backslash, then text
		{`{"description":"a\u0000b"}`, true},
		{`{"permissions":{"pub":{"allow":["a.\u0000"]}}}`, true},
		{`{"a\u0000":1}`, true},
		{"{\"description\":\"\xff\"}", true},
		{"{\"description\":\"\xc3\"}", true},
		{`{"description":`, false}, // a syntax error, left to the decoder
	} {
		err := checkJSONText([]byte(c.body))
		if c.bad != (err != nil) || (err != nil && !errors.Is(err, rotatord.ErrInvalid)) {
			t.Errorf("checkJSONText(%q) = %v, want bad %v", c.body, err, c.bad)
		}
	}
}
