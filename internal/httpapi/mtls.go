package httpapi

import (
	"crypto/x509"
	"net/http"
	"strconv"
	"strings"

	"github.com/rotatord/rotatord"
)

// Client certificates (mTLS) for the admin API.
//
// When Config.RequireClientCert is set, rotatord's listener asks every
// client for a certificate and the TLS handshake already refuses one that
// the client CA did not sign. A client may still come without one, because
// not every caller has one:
//
//   - nats-server's URL resolver (/jwt/v1/...) can present a certificate
//     (resolver_tls) but must not have to: the resolver only serves public
//     account JWTs;
//   - agents calling /v1/agents/{name}/creds prove possession of their
//     current NKey, which is the credential rotatord manages for them;
//   - /healthz, /readyz and /metrics are read by probes and Prometheus.
//
// Every route behind a bearer token (the admin, rotate and read scopes)
// needs a verified client certificate as well as the token: a leaked token
// alone is not enough. And not any certificate of the CA: only one whose
// identity is in Config.ClientAllowed, so that a leaked agent certificate
// plus a token does not reach the admin API either. requireClientCert runs before the token check, so a
// caller without a certificate learns nothing about the token it sent.

// ClientAllowlist is the set of client certificate identities allowed on
// the bearer-token API: a verified certificate passes when one of its DNS
// SANs (compared without regard to case), URI SANs or its subject CN is in
// the set. A CA that signs more than the admins' certificates (the agents',
// the resolver's, rotatord's own, as in the compose stack) so does not let
// every one of them in.
type ClientAllowlist struct {
	exact map[string]bool // URI SANs and CNs
	dns   map[string]bool // lower case
}

// NewClientAllowlist returns the allowlist of the given identities; empty
// entries are ignored. An empty allowlist allows no certificate.
func NewClientAllowlist(ids []string) ClientAllowlist {
	l := ClientAllowlist{exact: map[string]bool{}, dns: map[string]bool{}}
	for _, id := range ids {
		if id = strings.TrimSpace(id); id != "" {
			l.exact[id] = true
			l.dns[strings.ToLower(id)] = true
		}
	}
	return l
}

// Allows reports whether cert carries an allowed identity.
func (l ClientAllowlist) Allows(cert *x509.Certificate) bool {
	if cert == nil {
		return false
	}
	for _, d := range cert.DNSNames {
		if l.dns[strings.ToLower(d)] {
			return true
		}
	}
	for _, u := range cert.URIs {
		if l.exact[u.String()] {
			return true
		}
	}
	return cert.Subject.CommonName != "" && l.exact[cert.Subject.CommonName]
}

// identities names cert for a refusal: its CN and SANs, quoted.
func identities(cert *x509.Certificate) string {
	var ids []string
	if cert.Subject.CommonName != "" {
		ids = append(ids, "CN "+strconv.Quote(cert.Subject.CommonName))
	}
	for _, d := range cert.DNSNames {
		ids = append(ids, "DNS "+strconv.Quote(d))
	}
	for _, u := range cert.URIs {
		ids = append(ids, "URI "+strconv.Quote(u.String()))
	}
	if len(ids) == 0 {
		return "no identity"
	}
	if len(ids) > 4 {
		ids = append(ids[:4], "...")
	}
	return strings.Join(ids, ", ")
}

// requireClientCert refuses, with 403 forbidden, a request that did not
// come with a verified TLS client certificate carrying an allowed identity
// (Config.ClientAllowed), when Config.RequireClientCert is set; otherwise
// it passes every request through.
func (s *Server) requireClientCert(next http.Handler) http.Handler {
	if !s.clientCert {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// VerifiedChains is filled only for a certificate that the
		// listener verified against its client CA; PeerCertificates alone
		// could be anything the client sent.
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			// 403, not 401: no HTTP challenge can supply a certificate,
			// and a WWW-Authenticate: Bearer would send the caller after
			// the wrong credential.
			s.writeError(w, r, rotatord.Errorf(rotatord.EFORBIDDEN,
				"this endpoint needs a TLS client certificate signed by rotatord's client CA"))
			return
		}
		leaf := r.TLS.VerifiedChains[0][0]
		if !s.clientAllowed.Allows(leaf) {
			s.writeError(w, r, rotatord.Errorf(rotatord.EFORBIDDEN,
				"this client certificate (%s) is not allowed on this endpoint: it is not one of rotatord's allowed client identities", identities(leaf)))
			return
		}
		next.ServeHTTP(w, r)
	})
}
