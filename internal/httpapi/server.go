package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/refusals"
	"github.com/rotatord/rotatord/internal/rotate"
)

// DefaultMaxBody is the default limit on request bodies.
const DefaultMaxBody = 64 << 10

// Config configures the HTTP server.
type Config struct {
	Service  *rotate.Service
	Resolver http.Handler // serves /jwt/v1/
	Metrics  http.Handler // serves /metrics; nil for none
	Log      *slog.Logger
	// Ready reports whether this replica can do its work (database and NATS
	// reachable); /readyz answers 503 with its error otherwise.
	Ready   func(ctx context.Context) error
	MaxBody int64
	// RequireClientCert makes the token-authenticated API (/v1 except the
	// agents' own /creds endpoints) refuse requests without a verified TLS
	// client certificate (mtls.go). The listener must ask for them
	// (tls.VerifyClientCertIfGiven with the client CA).
	RequireClientCert bool
	// ClientAllowed are the certificate identities (DNS or URI SANs, or
	// subject CNs) allowed on the token-authenticated API when
	// RequireClientCert is set; a verified certificate without one of them
	// is refused with 403. Empty allows none.
	ClientAllowed []string

	// Console serves the fleet console under /ui/ (static files, no
	// token: every API call it makes needs one); nil for none.
	Console http.Handler
	// MaxAccountJWTBytes is the guard account JWTs stay under, shown as
	// jwt_max_bytes in the account JSON (rotatord.DefaultMaxAccountJWTBytes when 0).
	MaxAccountJWTBytes int64
	// AuditVerify serves GET /v1/audit/verify (422 unsupported when nil);
	// AuditVerifyWait is how long a request waits for a run (20 s when 0).
	AuditVerify     AuditVerifyFunc
	AuditVerifyWait time.Duration
	// AgentLimits are the agent API's rate limits (agentapi.go).
	AgentLimits AgentLimits
	// Refusals counts the agent API's refusals for the audit trail; nil
	// counts nothing.
	Refusals *refusals.Counter
	// DBTimeout is the deadline of each API request's database work
	// (DefaultDBTimeout when zero): past it the request answers 503.
	DBTimeout time.Duration
}

// Server is the HTTP handler of rotatord.
type Server struct {
	svc     *rotate.Service
	log     *slog.Logger
	ready   func(ctx context.Context) error
	maxBody int64
	router  chi.Router
	// clientCert: see Config.RequireClientCert.
	clientCert bool
	// clientAllowed: see Config.ClientAllowed.
	clientAllowed ClientAllowlist
	// maxJWT: see Config.MaxAccountJWTBytes.
	maxJWT   int64
	verifier *auditVerifier
	// agent is the agent API's state, now its clock (the service's).
	agent *agentAPI
	now   func() time.Time
	// dbTimeout: see Config.DBTimeout.
	dbTimeout time.Duration
}

// New returns the server's handler.
func New(cfg Config) *Server {
	s := &Server{svc: cfg.Service, log: cfg.Log, ready: cfg.Ready, maxBody: cfg.MaxBody, clientCert: cfg.RequireClientCert,
		clientAllowed: NewClientAllowlist(cfg.ClientAllowed)}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBody
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.dbTimeout = cfg.DBTimeout
	if s.dbTimeout <= 0 {
		s.dbTimeout = DefaultDBTimeout
	}
	s.agent, s.now = newAgentAPI(cfg.AgentLimits, cfg.Refusals), time.Now
	if cfg.Service != nil {
		s.now = cfg.Service.Now
	}
	s.maxJWT = cfg.MaxAccountJWTBytes
	if s.maxJWT <= 0 {
		s.maxJWT = rotatord.DefaultMaxAccountJWTBytes
	}
	if cfg.AuditVerify != nil {
		s.verifier = newAuditVerifier(cfg.AuditVerify, cfg.AuditVerifyWait)
	}
	r := chi.NewRouter()
	r.Use(s.recoverer)
	// The resolver is on the hot path of every nats-server: no logging or
	// other middleware in front of it.
	if cfg.Resolver != nil {
		r.Handle("/jwt/v1/*", cfg.Resolver)
	}
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", s.readyz)
	if cfg.Metrics != nil {
		r.Handle("/metrics", cfg.Metrics)
	}
	if cfg.Console != nil {
		r.Get("/", redirectTo("/ui/"))
		r.Get("/ui", redirectTo("/ui/"))
		r.Handle("/ui/*", cfg.Console)
	}
	r.Route("/v1", func(r chi.Router) {
		r.Use(s.logRequests)
		r.Use(securityHeaders)
		r.Use(s.storeDeadline)
		// Agents authenticate with a proof of possession of their key.
		r.Get("/agents/{name}/creds", s.agentCreds)
		r.Post("/agents/{name}/creds", s.agentKey)
		r.Group(func(r chi.Router) {
			r.Use(s.requireClientCert, s.checkInput, s.requireScope(rotatord.ScopeRead))
			r.Get("/rotations", s.listRotations)
			r.Get("/rotations/{id}", s.getRotation)
			r.Get("/agents/{name}/rotations", s.listRotations)
			r.Get("/accounts", s.listAccounts)
			r.Get("/accounts/{name}", s.getAccount)
			r.Get("/agents", s.listAgents)
			r.Get("/agents/{name}", s.getAgent)
			r.Get("/audit", s.listAudit)
			r.Get("/accounts/{name}/roles", s.listRoles)
			r.Get("/accounts/{name}/roles/{role}", s.getRole)
			// The fleet console's reads (console.go, auditverify.go).
			r.Get("/whoami", s.whoami)
			r.Get("/alerts", s.listAlerts)
			r.Get("/audit/verify", s.verifyAudit)
			r.Get("/agents/{name}/keys", s.listAgentKeys)
			r.Get("/accounts/{name}/revocations", s.listRevocations)
			// Fleet and signing-key rotations (keylifecycle.go).
			r.Get("/fleet-rotations", s.listFleetRotations)
			r.Get("/fleet-rotations/{id}", s.getFleetRotation)
			r.Get("/key-rotations", s.listKeyRotations)
			r.Get("/key-rotations/{id}", s.getKeyRotation)
		})
		r.Group(func(r chi.Router) {
			r.Use(s.requireClientCert, s.checkInput, s.requireScope(rotatord.ScopeRotate))
			r.Post("/agents/{name}/revoke", s.revokeAgent)
			r.Post("/agents/{name}/rotate", s.rotateAgent)
			// Fleet-wide rotations in waves (keylifecycle.go).
			r.Post("/accounts/{name}/rotate-all", s.rotateAll)
			r.Post("/fleet-rotations/{id}/resume", s.resumeFleetRotation)
			r.Post("/fleet-rotations/{id}/abort", s.abortFleetRotation)
		})
		r.Group(func(r chi.Router) {
			r.Use(s.requireClientCert, s.checkInput, s.requireScope(rotatord.ScopeAdmin))
			r.Post("/accounts", s.createAccount)
			r.Patch("/accounts/{name}", s.updateAccount)
			r.Delete("/accounts/{name}", s.deleteAccount)
			r.Post("/agents", s.createAgent)
			r.Patch("/agents/{name}", s.updateAgent)
			r.Delete("/agents/{name}", s.deleteAgent)
			r.Get("/tokens", s.listTokens)
			r.Post("/tokens", s.createToken)
			r.Delete("/tokens/{name}", s.revokeToken)
			r.Post("/agents/{name}/reissue", s.reissueAgent)
			r.Post("/accounts/{name}/roles", s.createRole)
			r.Patch("/accounts/{name}/roles/{role}", s.updateRole)
			r.Delete("/accounts/{name}/roles/{role}", s.deleteRole)
			// Signing-key rotations (keylifecycle.go).
			r.Post("/accounts/{name}/signing-keys/rotate", s.rotateSigningKey)
			r.Post("/accounts/{name}/roles/{role}/rotate", s.rotateSigningKey)
			r.Post("/key-rotations/{id}/complete", s.completeKeyRotation)
			r.Post("/key-rotations/{id}/abandon", s.abandonKeyRotation)
			r.Post("/operator/signing-keys/rotate", s.rotateOperatorKey)
		})
	})
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, rotatord.Errorf(rotatord.ENOTFOUND, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, &rotatord.Error{Code: "method_not_allowed", Message: r.Method + " is not allowed on " + r.URL.Path})
	})
	s.router = r
	return s
}

// ServeHTTP answers a request whose header is over MaxHeaderBytes with 431
// (the JSON error body), and routes every other.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.checkHeaderSize(w, r) {
		return
	}
	s.router.ServeHTTP(w, r)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.ready(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": rotatord.ErrorMessage(err)})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

type ctxKey int

const (
	tokenKey ctxKey = iota
	infoKey
)

// requestInfo is filled in by inner middleware for the request log.
type requestInfo struct {
	actor string
	quiet bool // counted elsewhere (an agent API refusal): not logged one by one
}

// actor names the caller of a request for the audit trail.
func actor(r *http.Request) rotate.Actor {
	if t, ok := r.Context().Value(tokenKey).(*rotatord.Token); ok {
		return rotate.Actor("token:" + t.Name)
	}
	return "anonymous"
}

// requireScope authenticates the bearer token and checks its scope.
func (s *Server) requireScope(need rotatord.Scope) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := r.Header.Get("Authorization")
			scheme, secret, _ := strings.Cut(h, " ")
			if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(secret) == "" {
				s.writeError(w, r, rotatord.Errorf(rotatord.EUNAUTHORIZED, "missing bearer token"))
				return
			}
			t, err := s.svc.Authenticate(r.Context(), strings.TrimSpace(secret))
			if err != nil {
				s.writeError(w, r, err)
				return
			}
			if !t.Scope.Allows(need) {
				s.writeError(w, r, rotatord.Errorf(rotatord.EFORBIDDEN, "token %q has scope %s; this needs %s", t.Name, t.Scope, need))
				return
			}
			if info, ok := r.Context().Value(infoKey).(*requestInfo); ok {
				info.actor = "token:" + t.Name
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tokenKey, t)))
		})
	}
}

// recoverer turns a panic into a logged 500 with the JSON error body.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.writeError(w, r, fmt.Errorf("panic: %v\n%s", v, debug.Stack()))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// logRequests logs each API request once, without headers or bodies: at
// info a request that changed something (a method other than GET or HEAD
// that succeeded), at debug the others, which would drown the log (agents
// poll; dashboards read). Failures with 5xx are logged by writeError.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		info := &requestInfo{actor: "anonymous"}
		start := time.Now()
		next.ServeHTTP(ww, r.WithContext(context.WithValue(r.Context(), infoKey, info)))
		if info.quiet {
			return
		}
		level := slog.LevelDebug
		if r.Method != http.MethodGet && r.Method != http.MethodHead && ww.Status() < 400 {
			level = slog.LevelInfo
		}
		s.log.Log(r.Context(), level, "http request", "method", r.Method, "path", logPath(r), "status", ww.Status(),
			"duration", time.Since(start), "actor", info.actor)
	})
}

// Routes exposes the router for walking its routes (the spec test does).
func (s *Server) Routes() chi.Routes { return s.router }

// maxLoggedPath bounds the request paths written to the log.
const maxLoggedPath = 256

// logPath is the request's path cut and cleaned for the log.
func logPath(r *http.Request) string {
	// Seeds out before the cut, so that no part of one is left.
	return refusals.CleanN(redactSeeds(r.URL.Path), maxLoggedPath)
}
