package resolver

import (
	"net/http/httptest"
	"testing"
)

// A complete set read before a change must not undo that change.
func TestReplaceKeepsLaterChanges(t *testing.T) {
	c := NewCache()
	c.Replace([]Account{{PublicKey: "A1", JWT: "v1", Version: 1}, {PublicKey: "A2", JWT: "v1", Version: 1}}, 0)

	mark := c.Snapshot()
	// Meanwhile: A3 created, A1 re-signed, A2 deleted.
	c.Set(Account{PublicKey: "A3", JWT: "new", Version: 1})
	c.Set(Account{PublicKey: "A1", JWT: "v2", Version: 2})
	c.Delete("A2")
	// The set read before those changes arrives.
	c.Replace([]Account{{PublicKey: "A1", JWT: "v1", Version: 1}, {PublicKey: "A2", JWT: "v1", Version: 1}}, mark)

	if got, ok := c.Lookup("A3"); !ok || got != "new" {
		t.Errorf("A3 = %q, %v; want the account created meanwhile", got, ok)
	}
	if got, _ := c.Lookup("A1"); got != "v2" {
		t.Errorf("A1 = %q; want the newer v2", got)
	}
	if _, ok := c.Lookup("A2"); ok {
		t.Error("A2 came back after its deletion")
	}
	// A later complete set is taken as it is.
	c.Replace([]Account{{PublicKey: "A1", JWT: "v3", Version: 3}}, c.Snapshot())
	if got, _ := c.Lookup("A1"); got != "v3" || c.Len() != 1 {
		t.Errorf("after a fresh set: A1 = %q, %d accounts", got, c.Len())
	}
	// An older version never replaces a newer one.
	c.Set(Account{PublicKey: "A1", JWT: "v2", Version: 2})
	if got, _ := c.Lookup("A1"); got != "v3" {
		t.Errorf("A1 = %q after a stale Set; want v3", got)
	}
}

// The ETag follows the whole JWT: a re-signed account with the same jti
// (signed in the same second) is not answered 304 to the old ETag.
func TestETagFollowsContent(t *testing.T) {
	const pub = "ACCOUNTKEY"
	c := NewCache()
	c.Replace([]Account{{PublicKey: pub, JWT: "header.claims-without-revocations.sig", Version: 1}}, 0)
	h := NewHandler(c, nil)
	get := func(inm string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/jwt/v1/accounts/"+pub, nil)
		if inm != "" {
			r.Header.Set("If-None-Match", inm)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	old := get("").Header().Get("ETag")
	if w := get(old); w.Code != 304 {
		t.Fatalf("unchanged JWT with its ETag = %d, want 304", w.Code)
	}
	c.Set(Account{PublicKey: pub, JWT: "header.claims-with-a-revocation.sig", Version: 2})
	w := get(old)
	if w.Code != 200 || w.Body.String() != "header.claims-with-a-revocation.sig" || w.Header().Get("ETag") == old {
		t.Fatalf("re-signed JWT with the old ETag = %d %q (ETag %s), want 200 with the new JWT and a new ETag",
			w.Code, w.Body.String(), w.Header().Get("ETag"))
	}
}
