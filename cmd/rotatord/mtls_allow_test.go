package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/apitest"
)

// issueWith makes a client certificate for CN name with the given URI and
// DNS SANs and loads it.
func (p *testPKI) issueWith(name string, uris []string, dns []string) tls.Certificate {
	p.t.Helper()
	certFile, keyFile := p.issue(name, x509.ExtKeyUsageClientAuth, dns...)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		p.t.Fatal(err)
	}
	if len(uris) == 0 {
		return pair
	}
	// Re-sign the same key with URI SANs.
	tmpl := *pair.Leaf
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			p.t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	tmpl.SerialNumber = randSerial(p.t)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, p.cert, pair.Leaf.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		p.t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: pair.PrivateKey, Leaf: leaf}
}

// The bearer-token API takes only the client certificates whose identity
// is in ROTATORD_TLS_CLIENT_ALLOWED (a CN, a URI SAN or a DNS SAN), however
// valid the others are and whatever token comes with them; the agents' and
// the resolver's endpoints take any.
func TestMTLSAllowlist(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, "rotatord test CA")
	srvCert, srvKey := pki.issue("rotatord-server", x509.ExtKeyUsageServerAuth, "127.0.0.1", "localhost")
	e := newEnvWith(t, func(c *Config) {
		c.TLSCertFile, c.TLSKeyFile, c.TLSClientCAFile = srvCert, srvKey, pki.CAFile
		c.TLSClientAllowed = "admin, spiffe://rotatord.test/ops, Ops.Example.Com"
	})
	client := func(cert tls.Certificate) *http.Client {
		tr := &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pki.pool(), Certificates: []tls.Certificate{cert}}}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: apitest.Transport(t, tr), Timeout: 10 * time.Second}
	}
	e.http = client(pki.issueWith("admin", nil, nil))
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	acc := e.must(200, "GET", "/v1/accounts/fleet", nil)

	for _, c := range []struct {
		name string
		cert tls.Certificate
		want int
	}{
		{"the admin's CN", pki.issueWith("admin", nil, nil), 200},
		{"an allowed URI SAN", pki.issueWith("someone", []string{"spiffe://rotatord.test/ops"}, nil), 200},
		{"an allowed DNS SAN in another case", pki.issueWith("someone", nil, []string{"ops.example.com"}), 200},
		{"an agent's certificate", pki.issueWith("agent-kate", nil, nil), 403},
		{"the resolver's certificate", pki.issueWith("nats-resolver", nil, nil), 403},
		{"another URI SAN", pki.issueWith("ops", []string{"spiffe://rotatord.test/agent"}, []string{"agent.example.com"}), 403},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := client(c.cert)
			for _, path := range []string{"/v1/agents", "/v1/tokens", "/v1/audit"} {
				status, body, err := doWith(t, cl, "GET", e.main.URL()+path, e.admin)
				if err != nil {
					t.Fatal(err)
				}
				if status != c.want {
					t.Fatalf("GET %s = %d %s, want %d", path, status, body, c.want)
				}
				if c.want == 403 {
					var eb struct{ Error, Code string }
					if json.Unmarshal(body, &eb) != nil || eb.Code != "forbidden" || !strings.Contains(eb.Error, "is not allowed") ||
						!strings.Contains(eb.Error, `CN "`) {
						t.Fatalf("refusal = %s", body)
					}
				}
			}
			// The resolver takes any certificate of the CA (and none).
			resp, err := cl.Get(e.main.URL() + "/jwt/v1/accounts/" + acc["public_key"].(string))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body) //nolint:errcheck // only the status matters
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("resolver = %d, want 200", resp.StatusCode)
			}
		})
	}
	// Nothing was changed by the refused requests.
	if n := len(e.must(200, "GET", "/v1/tokens", nil)["tokens"].([]any)); n != 1 {
		t.Fatalf("%d tokens after refused requests, want 1", n)
	}
}
