package httpapi_test

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/rotatord/rotatord/internal/httpapi"
)

// TestClientCertGuardsEveryTokenRoute walks the router: with client
// certificates required, every /v1 route but the agents' own /creds ones
// refuses a request without a verified certificate of an allowed identity
// (403 forbidden), before
// the bearer token is looked at. A route added outside the token groups
// fails here until it is decided whether it needs a certificate.
func TestClientCertGuardsEveryTokenRoute(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	guarded := httpapi.New(httpapi.Config{RequireClientCert: true, ClientAllowed: []string{"admin"}, Resolver: ok, Metrics: ok})
	open := httpapi.New(httpapi.Config{Resolver: ok, Metrics: ok})
	admin := &x509.Certificate{Subject: pkix.Name{CommonName: "admin"}}
	agent := &x509.Certificate{Subject: pkix.Name{CommonName: "agent-kate"}}
	verified := &tls.ConnectionState{HandshakeComplete: true,
		PeerCertificates: []*x509.Certificate{admin}, VerifiedChains: [][]*x509.Certificate{{admin}}}
	notAllowed := &tls.ConnectionState{HandshakeComplete: true,
		PeerCertificates: []*x509.Certificate{agent}, VerifiedChains: [][]*x509.Certificate{{agent}}}
	unverified := &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{admin}}

	serve := func(h http.Handler, method, path string, state *tls.ConnectionState) (int, string) {
		req := httptest.NewRequest(method, path, strings.NewReader("{}"))
		req.TLS = state
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var body struct{ Code string }
		json.Unmarshal(rec.Body.Bytes(), &body) //nolint:errcheck // a non-JSON body has no code
		return rec.Code, body.Code
	}
	n := 0
	err := chi.Walk(guarded.Routes(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if !strings.HasPrefix(route, "/v1/") || strings.HasSuffix(route, "/creds") {
			return nil
		}
		n++
		path := strings.NewReplacer("{name}", "kate", "{id}", "6f1c2b9e-4d3a-4f5e-9a7b-2c8d1e0f3a45").Replace(route)
		for _, state := range []*tls.ConnectionState{nil, unverified, notAllowed} {
			if status, code := serve(guarded, method, path, state); status != 403 || code != "forbidden" {
				t.Errorf("%s %s without a verified client certificate = %d %s, want 403 forbidden", method, route, status, code)
			}
		}
		// With one, the token is checked next (none is sent: 401).
		if status, code := serve(guarded, method, path, verified); status != 401 || code != "unauthorized" {
			t.Errorf("%s %s with a client certificate, no token = %d %s, want 401", method, route, status, code)
		}
		// Without RequireClientCert nothing changes.
		if status, _ := serve(open, method, path, nil); status != 401 {
			t.Errorf("%s %s, client certificates off, no token = %d, want 401", method, route, status)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("walked %d token routes, want the whole admin API", n)
	}
	for _, path := range []string{"/jwt/v1/accounts/", "/healthz", "/readyz", "/metrics"} {
		if status, _ := serve(guarded, "GET", path, nil); status != 200 {
			t.Errorf("GET %s without a client certificate = %d, want 200", path, status)
		}
	}
}

// The allowlist matches DNS SANs without regard to case, URI SANs and the
// subject CN exactly, and nothing else.
func TestClientAllowlist(t *testing.T) {
	spiffe, _ := url.Parse("spiffe://rotatord.example/admin")
	other, _ := url.Parse("spiffe://rotatord.example/agent")
	l := httpapi.NewClientAllowlist([]string{" admin ", "ops.example.com", "spiffe://rotatord.example/admin", ""})
	for _, c := range []struct {
		cert *x509.Certificate
		want bool
	}{
		{&x509.Certificate{Subject: pkix.Name{CommonName: "admin"}}, true},
		{&x509.Certificate{Subject: pkix.Name{CommonName: "Admin"}}, false},
		{&x509.Certificate{Subject: pkix.Name{CommonName: "agent-kate"}}, false},
		{&x509.Certificate{Subject: pkix.Name{CommonName: "x"}, DNSNames: []string{"OPS.example.com"}}, true},
		{&x509.Certificate{DNSNames: []string{"admin.example.com"}}, false},
		{&x509.Certificate{URIs: []*url.URL{spiffe}}, true},
		{&x509.Certificate{URIs: []*url.URL{other}}, false},
		// An organization or email that reads "admin" is not an identity.
		{&x509.Certificate{Subject: pkix.Name{Organization: []string{"admin"}}, EmailAddresses: []string{"admin"}}, false},
		{&x509.Certificate{}, false},
		{nil, false},
	} {
		if got := l.Allows(c.cert); got != c.want {
			t.Errorf("Allows(%+v) = %v, want %v", c.cert, got, c.want)
		}
	}
	if httpapi.NewClientAllowlist(nil).Allows(&x509.Certificate{Subject: pkix.Name{CommonName: "admin"}}) {
		t.Error("an empty allowlist allows a certificate")
	}
}
