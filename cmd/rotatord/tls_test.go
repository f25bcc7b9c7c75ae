package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/rotatord/rotatord/internal/apitest"
	"github.com/rotatord/rotatord/internal/natsrun"
	"github.com/rotatord/rotatord/pkg/agent"
)

// testPKI is a certificate authority whose files live in a t.TempDir: the
// in-process equivalent of scripts/dev-certs.sh.
type testPKI struct {
	t      testing.TB
	dir    string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	CAFile string
}

func newTestPKI(t testing.TB, name string) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(t),
		Subject:               pkix.Name{Organization: []string{"rotatord test"}, CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{t: t, dir: t.TempDir(), cert: cert, key: key}
	p.CAFile = filepath.Join(p.dir, "ca.pem")
	writePEM(t, p.CAFile, "CERTIFICATE", der, 0o644)
	return p
}

func randSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writePEM(t testing.TB, file, typ string, der []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		t.Fatal(err)
	}
}

// issue makes a certificate for name (its CN) for server or client use;
// hosts are its DNS names and IP addresses. It writes name.pem and name.key.
func (p *testPKI) issue(name string, usage x509.ExtKeyUsage, hosts ...string) (certFile, keyFile string) {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(p.t),
		Subject:      pkix.Name{Organization: []string{"rotatord test"}, CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+".key")
	writePEM(p.t, certFile, "CERTIFICATE", der, 0o644)
	writePEM(p.t, keyFile, "PRIVATE KEY", keyDER, 0o600)
	return certFile, keyFile
}

func (p *testPKI) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.cert)
	return pool
}

// clientCert issues a client certificate and loads it.
func (p *testPKI) clientCert(name string) tls.Certificate {
	p.t.Helper()
	certFile, keyFile := p.issue(name, x509.ExtKeyUsageClientAuth)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		p.t.Fatal(err)
	}
	return pair
}

// httpClient trusts the CA and, when certName is not empty, presents a
// client certificate of that name; its exchanges are checked against the spec.
func (p *testPKI) httpClient(certName string) *http.Client {
	p.t.Helper()
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.pool()}
	if certName != "" {
		tc.Certificates = []tls.Certificate{p.clientCert(certName)}
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}
	p.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: apitest.Transport(p.t, tr), Timeout: 10 * time.Second}
}

// newTLSEnv is newEnv with rotatord serving HTTPS (and asking the admin API
// for client certificates when mtls), and connecting to NATS over TLS with
// its client certificate. e.http presents an admin client certificate.
func newTLSEnv(t *testing.T, mtls bool) (*env, *testPKI) {
	t.Helper()
	pki := newTestPKI(t, "rotatord test CA")
	srvCert, srvKey := pki.issue("rotatord-server", x509.ExtKeyUsageServerAuth, "127.0.0.1", "localhost")
	cliCert, cliKey := pki.issue("rotatord-client", x509.ExtKeyUsageClientAuth)
	e := newEnvWith(t, func(c *Config) {
		c.TLSCertFile, c.TLSKeyFile = srvCert, srvKey
		if mtls {
			c.TLSClientCAFile = pki.CAFile
			c.TLSClientAllowed = "admin"
		}
		c.NATSCAFile = pki.CAFile
		c.NATSCertFile, c.NATSKeyFile = cliCert, cliKey
	})
	e.http = pki.httpClient("admin")
	if !strings.HasPrefix(e.main.URL(), "https://") {
		t.Fatalf("URL() = %s, want https", e.main.URL())
	}
	return e, pki
}

// startTLSNATS starts a nats-server like the compose stack's: operator mode,
// TLS with client certificates required (verify), and the URL resolver
// fetching from rotatord over HTTPS, presenting its own client certificate.
func startTLSNATS(e *env, pki *testPKI) *server.Server {
	e.t.Helper()
	natsCert, natsKey := pki.issue("nats-server", x509.ExtKeyUsageServerAuth, "127.0.0.1", "localhost")
	serverTLS, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: natsCert, KeyFile: natsKey, CaFile: pki.CAFile, Verify: true})
	if err != nil {
		e.t.Fatal(err)
	}
	resolverTLS := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pki.pool(), Certificates: []tls.Certificate{pki.clientCert("resolver")}}
	op, err := e.main.Store.Operator(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	ns, err := natsrun.Start(natsrun.Options{OperatorJWT: op.JWT, SystemAccount: op.SystemAccount,
		ResolverURL: e.main.URL() + "/jwt/v1/accounts/", Port: e.natsPort,
		Configure: func(o *server.Options) {
			o.TLSConfig, o.TLS, o.TLSVerify, o.TLSTimeout = serverTLS, true, true, 2
			o.AccountResolverTLSConfig = resolverTLS
		}})
	if err != nil {
		e.t.Fatal(err)
	}
	e.ns = ns
	e.t.Cleanup(ns.Shutdown)
	return ns
}

// natsTLS are the options of a NATS client that trusts pki and presents
// the client certificate certName ("" for none).
func natsTLS(pki *testPKI, certName string) []nats.Option {
	opts := []nats.Option{nats.RootCAs(pki.CAFile)}
	if certName != "" {
		certFile, keyFile := pki.issue(certName, x509.ExtKeyUsageClientAuth)
		opts = append(opts, nats.ClientCert(certFile, keyFile))
	}
	return opts
}

// connectTLS connects to e's nats-server with creds and TLS options, no retries.
func connectTLS(e *env, creds string, opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.UserCredentials(writeCreds(e.t, creds)), nats.MaxReconnects(0)}, opts...)
	return nats.Connect(e.ns.ClientURL(), all...)
}

// doWith sends a request with client c and returns the status and body.
func doWith(t testing.TB, c *http.Client, method, url, token string) (int, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// The compose stack in-process: rotatord on HTTPS with client certificates
// for the admin API and on NATS with its client certificate, a nats-server
// that requires client certificates and resolves accounts over HTTPS. An
// agent connects with creds and a certificate, rotates, and the old creds
// are refused afterwards.
func TestTLSStackRotation(t *testing.T) {
	t.Parallel()
	e, pki := newTLSEnv(t, true)
	startTLSNATS(e, pki)
	e.waitNATS()
	if !strings.HasPrefix(e.ns.ClientURL(), "tls://") {
		t.Fatalf("nats-server URL = %s, want a TLS server", e.ns.ClientURL())
	}

	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	_, oldCreds := createAgent(e, "kate", "fleet")
	agentTLS := natsTLS(pki, "agent-kate")
	// The agent's own endpoints need no client certificate: its NKey proof
	// is its credential.
	a, err := agent.New(agent.Config{Server: e.main.URL(), Name: "kate", Creds: []byte(oldCreds), HTTPClient: pki.httpClient("")})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := a.Connect(e.ns.ClientURL(), agentTLS...)
	if err != nil {
		t.Fatalf("agent connect over mTLS: %v", err)
	}
	defer nc.Close()
	if !nc.TLSRequired() {
		t.Fatal("agent connection is not TLS")
	}
	oldKey := a.PublicKey()
	sub, err := nc.SubscribeSync("orders.in")
	if err != nil {
		t.Fatal(err)
	}

	id := e.must(202, "POST", "/v1/agents/kate/rotate", nil)["id"].(string)
	if got, err := a.Refresh(context.Background()); err != nil || !got {
		t.Fatalf("agent refresh over https = %v, %v; want new creds", got, err)
	}
	r := e.waitRotation(id, "completed")
	if r["new_public_key"] != a.PublicKey() || r["old_public_key"] != oldKey || a.PublicKey() == oldKey {
		t.Fatalf("rotation = %v, agent key %s (was %s)", r, a.PublicKey(), oldKey)
	}
	eventually(t, 5*time.Second, "agent connected with its new key", nc.IsConnected)
	if err := nc.Publish("orders.in", []byte("after")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(3 * time.Second); err != nil || string(m.Data) != "after" {
		t.Fatalf("subscription after rotation: %v, %v", m, err)
	}
	// The old creds are refused by the server: with a valid client
	// certificate, so the refusal is about the creds, not TLS. The
	// revoking re-sign may wait for the re-signer's interval (5 s after the
	// previous one) and then for a busy machine.
	var lastErr error
	eventually(t, 20*time.Second, "the old creds to be refused", func() bool {
		c, err := connectTLS(e, oldCreds, agentTLS...)
		if err == nil {
			c.Close()
		}
		lastErr = err
		return err != nil
	})
	if !strings.Contains(strings.ToLower(lastErr.Error()), "authorization") {
		t.Fatalf("old creds: %v, want an authorization violation", lastErr)
	}
	if c, err := connectTLS(e, string(a.CredsFile()), agentTLS...); err != nil {
		t.Fatalf("new creds over mTLS: %v", err)
	} else {
		c.Close()
	}
}

// What needs a client certificate when ROTATORD_TLS_CLIENT_CA_FILE is set:
// the bearer-token API does; the resolver, the agents' endpoints and the
// health endpoints do not; nats-server refuses clients without one.
func TestMTLSRefusals(t *testing.T) {
	t.Parallel()
	e, pki := newTLSEnv(t, true)
	startTLSNATS(e, pki)
	e.waitNATS()
	acc := e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	_, creds := createAgent(e, "kate", "fleet")
	base := e.main.URL()
	noCert := pki.httpClient("")

	t.Run("admin api without a client certificate", func(t *testing.T) {
		for _, c := range []struct{ method, path, token string }{
			{"GET", "/v1/agents", e.admin},
			{"GET", "/v1/audit", e.admin},
			{"POST", "/v1/agents/kate/rotate", e.admin},
			{"DELETE", "/v1/agents/kate", e.admin},
			{"GET", "/v1/agents", ""},      // refused before the token is looked at
			{"GET", "/v1/agents", "rtd_x"}, // idem
		} {
			status, body, err := doWith(t, noCert, c.method, base+c.path, c.token)
			if err != nil {
				t.Fatalf("%s %s: %v", c.method, c.path, err)
			}
			var eb struct{ Error, Code string }
			if err := json.Unmarshal(body, &eb); err != nil || status != 403 || eb.Code != "forbidden" ||
				!strings.Contains(eb.Error, "client certificate") {
				t.Errorf("%s %s (token %q) = %d %s; want 403 forbidden naming the client certificate", c.method, c.path, c.token, status, body)
			}
		}
		// Nothing was done: kate is still there, not being rotated.
		if rots := e.must(200, "GET", "/v1/agents/kate/rotations", nil)["rotations"].([]any); len(rots) != 0 {
			t.Fatalf("rotations after refused requests = %v", rots)
		}
	})

	t.Run("client certificate of another CA", func(t *testing.T) {
		other := newTestPKI(t, "another CA")
		intruder := other.clientCert("intruder")
		// Go's client offers only certificates of the CAs the server
		// names, so the intruder's is forced: the handshake fails.
		forced := &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pki.pool(),
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &intruder, nil }}}
		defer forced.CloseIdleConnections()
		status, body, err := doWith(t, &http.Client{Transport: forced, Timeout: 10 * time.Second}, "GET", base+"/v1/agents", e.admin)
		if err == nil {
			t.Fatalf("foreign client certificate = %d %s; want a TLS handshake failure", status, body)
		}
		t.Logf("foreign client certificate: %v", err)
		// Offered the usual way it is not sent at all: 403.
		offered := &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pki.pool(),
			Certificates: []tls.Certificate{intruder}}}
		defer offered.CloseIdleConnections()
		c := &http.Client{Transport: apitest.Transport(t, offered), Timeout: 10 * time.Second}
		if status, body, err := doWith(t, c, "GET", base+"/v1/agents", e.admin); err != nil || status != 403 {
			t.Fatalf("foreign certificate offered = %d %s %v; want 403", status, body, err)
		}
		// A server certificate is not a client certificate.
		srvPair, err := tls.LoadX509KeyPair(filepath.Join(pki.dir, "rotatord-server.pem"), filepath.Join(pki.dir, "rotatord-server.key"))
		if err != nil {
			t.Fatal(err)
		}
		wrongUse := &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pki.pool(),
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &srvPair, nil }}}
		defer wrongUse.CloseIdleConnections()
		if status, _, err := doWith(t, &http.Client{Transport: wrongUse, Timeout: 10 * time.Second}, "GET", base+"/v1/agents", e.admin); err == nil {
			t.Fatalf("server-auth certificate as client certificate = %d; want a TLS handshake failure", status)
		}
	})

	t.Run("open endpoints without a client certificate", func(t *testing.T) {
		for _, path := range []string{"/jwt/v1/accounts/", "/jwt/v1/accounts/" + acc["public_key"].(string),
			"/jwt/v1/operator", "/healthz", "/readyz", "/metrics"} {
			if status, body, err := doWith(t, noCert, "GET", base+path, ""); err != nil || status != 200 {
				t.Errorf("GET %s without a client certificate = %d %.100s %v; want 200", path, status, body, err)
			}
		}
		// The agent's own endpoint: its NKey proof is enough.
		kp, err := jwt.ParseDecoratedUserNKey([]byte(creds))
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", base+"/v1/agents/kate/creds", nil)
		if err := agent.SignRequest(req, kp, time.Now()); err != nil {
			t.Fatal(err)
		}
		resp, err := noCert.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 304 {
			t.Fatalf("agent creds without a client certificate = %d, want 304", resp.StatusCode)
		}
		// And with a client certificate, the admin API takes the token.
		e.must(200, "GET", "/v1/agents", nil)
	})

	t.Run("nats refuses clients without a client certificate", func(t *testing.T) {
		if c, err := connectTLS(e, creds, natsTLS(pki, "")...); err == nil {
			c.Close()
			t.Fatal("a client without a certificate connected")
		} else {
			t.Logf("without a client certificate: %v", err)
		}
		other := newTestPKI(t, "another CA")
		certFile, keyFile := other.issue("intruder", x509.ExtKeyUsageClientAuth)
		if c, err := connectTLS(e, creds, nats.RootCAs(pki.CAFile), nats.ClientCert(certFile, keyFile)); err == nil {
			c.Close()
			t.Fatal("a client with another CA's certificate connected")
		}
		// Plain text is no way round.
		if c, err := nats.Connect(strings.Replace(e.ns.ClientURL(), "tls://", "nats://", 1),
			nats.UserCredentials(writeCreds(t, creds)), nats.MaxReconnects(0)); err == nil {
			c.Close()
			t.Fatal("a client without TLS connected")
		}
		if c, err := connectTLS(e, creds, natsTLS(pki, "agent-kate")...); err != nil {
			t.Fatalf("the same creds with a client certificate: %v", err)
		} else {
			c.Close()
		}
	})
}

// HTTPS without a client CA: no client certificate needed anywhere, plain
// HTTP is refused, and a renewed certificate is served without a restart.
func TestHTTPSWithoutClientCA(t *testing.T) {
	t.Parallel()
	e, pki := newTLSEnv(t, false)
	e.http = pki.httpClient("")
	e.must(200, "GET", "/v1/agents", nil)
	if got, want := e.main.Config.publicURL(), "https://127.0.0.1:"; !strings.HasPrefix(got, want) {
		t.Fatalf("publicURL = %s, want %s...", got, want)
	}

	plain := strings.Replace(e.main.URL(), "https://", "http://", 1)
	if status, _, err := doWith(t, &http.Client{Timeout: 5 * time.Second}, "GET", plain+"/healthz", ""); err == nil && status != 400 {
		t.Fatalf("plain HTTP to the TLS listener = %d, want 400 or an error", status)
	}

	serial := func() *big.Int {
		t.Helper()
		conn, err := tls.Dial("tcp", strings.TrimPrefix(e.main.URL(), "https://"), &tls.Config{RootCAs: pki.pool(), ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber
	}
	before := serial()
	// Renew: a new certificate in the same files. Their modification time
	// is moved on, as a coarse file system clock might not show it.
	certFile, keyFile := pki.issue("rotatord-server", x509.ExtKeyUsageServerAuth, "127.0.0.1", "localhost")
	later := time.Now().Add(2 * time.Second)
	for _, f := range []string{certFile, keyFile} {
		if err := os.Chtimes(f, later, later); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "the renewed certificate to be served", func() bool { return serial().Cmp(before) != 0 })
	e.must(200, "GET", "/healthz", nil)
}

func TestTLSConfigValidation(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, "rotatord test CA")
	cert, key := pki.issue("server", x509.ExtKeyUsageServerAuth, "127.0.0.1")
	otherCert, _ := pki.issue("other", x509.ExtKeyUsageServerAuth, "127.0.0.1")
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		set  func(c *Config)
		want []string // every one must be in the error; none means valid
	}{
		{"https", func(c *Config) {
			c.TLSCertFile, c.TLSKeyFile, c.TLSClientCAFile, c.TLSClientAllowed = cert, key, pki.CAFile, "admin, spiffe://example/ops"
		}, nil},
		{"client ca without allowed identities", func(c *Config) { c.TLSCertFile, c.TLSKeyFile, c.TLSClientCAFile = cert, key, pki.CAFile },
			[]string{"ROTATORD_TLS_CLIENT_ALLOWED is required with ROTATORD_TLS_CLIENT_CA_FILE"}},
		{"only commas for allowed identities", func(c *Config) {
			c.TLSCertFile, c.TLSKeyFile, c.TLSClientCAFile, c.TLSClientAllowed = cert, key, pki.CAFile, " , ,"
		}, []string{"ROTATORD_TLS_CLIENT_ALLOWED is required"}},
		{"allowed identities without a client ca", func(c *Config) { c.TLSCertFile, c.TLSKeyFile, c.TLSClientAllowed = cert, key, "admin" },
			[]string{"ROTATORD_TLS_CLIENT_ALLOWED needs ROTATORD_TLS_CLIENT_CA_FILE"}},
		{"allowed identity with a space", func(c *Config) {
			c.TLSCertFile, c.TLSKeyFile, c.TLSClientCAFile, c.TLSClientAllowed = cert, key, pki.CAFile, "admin,ops team"
		}, []string{`identity "ops team" holds a space`}},
		{"nats tls", func(c *Config) { c.NATSCAFile, c.NATSCertFile, c.NATSKeyFile = pki.CAFile, cert, key }, nil},
		{"nats ca only", func(c *Config) { c.NATSCAFile = pki.CAFile }, nil},
		{"cert without key", func(c *Config) { c.TLSCertFile = cert },
			[]string{"ROTATORD_TLS_CERT_FILE and ROTATORD_TLS_KEY_FILE go together"}},
		{"key without cert", func(c *Config) { c.TLSKeyFile = key },
			[]string{"ROTATORD_TLS_CERT_FILE and ROTATORD_TLS_KEY_FILE go together"}},
		{"nats cert without key", func(c *Config) { c.NATSCertFile = cert },
			[]string{"ROTATORD_NATS_CERT_FILE and ROTATORD_NATS_KEY_FILE go together"}},
		{"client ca without https", func(c *Config) { c.TLSClientCAFile = pki.CAFile },
			[]string{"ROTATORD_TLS_CLIENT_CA_FILE needs the listener to serve TLS"}},
		{"missing cert file", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = missing, key },
			[]string{"ROTATORD_TLS_CERT_FILE=" + missing, "no such file"}},
		{"key of another cert", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = otherCert, key },
			[]string{"ROTATORD_TLS_CERT_FILE=" + otherCert, "private key does not match"}},
		{"garbage cert", func(c *Config) { c.NATSCertFile, c.NATSKeyFile = garbage, key },
			[]string{"ROTATORD_NATS_CERT_FILE=" + garbage, "PEM"}},
		{"unreadable client ca (a directory)", func(c *Config) { c.TLSCertFile, c.TLSKeyFile, c.TLSClientCAFile = cert, key, dir },
			[]string{"ROTATORD_TLS_CLIENT_CA_FILE", "is a directory"}},
		{"nats ca without certificates", func(c *Config) { c.NATSCAFile = garbage },
			[]string{"ROTATORD_NATS_CA_FILE=" + garbage, "no PEM certificate"}},
		{"missing nats ca", func(c *Config) { c.NATSCAFile = missing },
			[]string{"ROTATORD_NATS_CA_FILE", missing, "no such file"}},
		{"every problem at once", func(c *Config) { c.TLSCertFile, c.TLSKeyFile, c.NATSCAFile, c.NATSKeyFile = missing, key, garbage, key },
			[]string{"ROTATORD_TLS_CERT_FILE=" + missing, "ROTATORD_NATS_CA_FILE=" + garbage, "ROTATORD_NATS_CERT_FILE and ROTATORD_NATS_KEY_FILE go together"}},
	}
	if os.Getuid() != 0 { // root reads a file of mode 000 anyway
		unreadable := filepath.Join(dir, "unreadable.key")
		if err := os.WriteFile(unreadable, []byte("x"), 0o000); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, struct {
			name string
			set  func(c *Config)
			want []string
		}{"unreadable key", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = cert, unreadable },
			[]string{"ROTATORD_TLS_KEY_FILE=" + unreadable, "permission denied"}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			c.set(&cfg)
			err := cfg.Validate("tls")
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want an error with %q", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate = %q, want it to contain %q", err, w)
				}
			}
		})
	}

	// The pairs are checked whatever the command; the files only by serve.
	cfg := DefaultConfig()
	cfg.TLSCertFile, cfg.TLSKeyFile = missing, key
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate() without \"tls\" read the files: %v", err)
	}
	cfg.TLSKeyFile = ""
	if err := cfg.Validate(); err == nil {
		t.Fatal("Validate() accepted a certificate without its key")
	}

	// serve refuses to start, before touching the database, and says why.
	m := NewMain()
	m.Config = DefaultConfig()
	m.Config.DatabaseURL, m.Config.MasterKeyFile = "postgres://unused", "unused"
	m.Config.TLSCertFile, m.Config.TLSKeyFile = cert, missing
	m.Log = discardLogger()
	if err := m.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "ROTATORD_TLS_KEY_FILE="+missing) {
		t.Fatalf("Run with a missing key file = %v; want an error naming ROTATORD_TLS_KEY_FILE", err)
	}

	// The public URL follows the listener's scheme.
	for _, c := range []struct {
		listen, cert, want string
	}{
		{":8080", "", "http://127.0.0.1:8080"},
		{":8443", cert, "https://127.0.0.1:8443"},
		{"rotatord.internal:8443", cert, "https://rotatord.internal:8443"},
	} {
		cfg := DefaultConfig()
		cfg.Listen, cfg.TLSCertFile = c.listen, c.cert
		if got := cfg.publicURL(); got != c.want {
			t.Errorf("publicURL(listen %s, tls %v) = %s, want %s", c.listen, c.cert != "", got, c.want)
		}
	}
}

// Every operation behind a bearer token declares 403, the answer to a
// request without a client certificate when mTLS is on.
func TestSpecDeclaresClientCertRefusal(t *testing.T) {
	t.Parallel()
	doc := apitest.Doc(t)
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			sec := doc.Security
			if op.Security != nil {
				sec = *op.Security
			}
			bearer := slices.ContainsFunc(sec, func(r openapi3.SecurityRequirement) bool { _, ok := r["bearerAuth"]; return ok })
			if bearer && op.Responses.Value("403") == nil {
				t.Errorf("%s %s needs a bearer token but does not declare 403", method, path)
			}
		}
	}
}
