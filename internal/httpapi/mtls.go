package httpapi

import (
	"net/http"

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
// alone is not enough. requireClientCert runs before the token check, so a
// caller without a certificate learns nothing about the token it sent.

// requireClientCert refuses, with 403 forbidden, a request that did not
// come with a verified TLS client certificate, when Config.RequireClientCert
// is set; otherwise it passes every request through.
func (s *Server) requireClientCert(next http.Handler) http.Handler {
	if !s.clientCert {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// VerifiedChains is filled only for a certificate that the
		// listener verified against its client CA; PeerCertificates alone
		// could be anything the client sent.
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			// 403, not 401: no HTTP challenge can supply a certificate,
			// and a WWW-Authenticate: Bearer would send the caller after
			// the wrong credential.
			s.writeError(w, r, rotatord.Errorf(rotatord.EFORBIDDEN,
				"this endpoint needs a TLS client certificate signed by rotatord's client CA"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
