package resolver

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
)

// Paths served by the Handler.
const (
	AccountsPath = "/jwt/v1/accounts/"
	OperatorPath = "/jwt/v1/operator"
)

// Handler serves account JWTs from a Cache:
//
//	GET /jwt/v1/accounts/       200, empty (nats-server's start-up probe)
//	GET /jwt/v1/accounts/{key}  200 raw JWT, 304 on a matching If-None-Match,
//	                            400 not an account key, 404 unknown account
//	GET /jwt/v1/operator        the operator JWT
type Handler struct {
	cache    *Cache
	requests *prometheus.CounterVec
	byStatus map[int]prometheus.Counter
	// The cache holds every account, so a miss is an account rotatord does
	// not know (404): it never costs a database query.
	hits, misses prometheus.Counter
}

// NewHandler returns a handler over cache. reg may be nil; otherwise the
// handler's request counter is registered there.
func NewHandler(cache *Cache, reg prometheus.Registerer) *Handler {
	h := &Handler{
		cache: cache,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rotatord_resolver_requests_total",
			Help: "Account resolver lookups by HTTP status.",
		}, []string{"status"}),
		byStatus: map[int]prometheus.Counter{},
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rotatord_resolver_cache_hits_total",
			Help: "Account lookups answered from the resolver cache (200 or 304).",
		}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rotatord_resolver_cache_misses_total",
			Help: "Lookups of account keys the resolver cache does not hold (404).",
		}),
	}
	// Resolve the counters once so the hot path does no label lookups.
	for _, code := range []int{200, 304, 400, 404, 405, 503} {
		h.byStatus[code] = h.requests.WithLabelValues(strconv.Itoa(code))
	}
	if reg != nil {
		reg.MustRegister(h.requests, h.hits, h.misses)
	}
	return h
}

func (h *Handler) count(code int) { h.byStatus[code].Inc() }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		h.count(405)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path == OperatorPath {
		op := h.cache.operator.Load()
		if op == nil {
			h.count(503)
			http.Error(w, "operator not loaded", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/jwt")
		h.count(200)
		w.Write(*op) //nolint:errcheck // the client went away
		return
	}
	key, ok := strings.CutPrefix(r.URL.Path, AccountsPath)
	if !ok {
		h.count(404)
		http.NotFound(w, r)
		return
	}
	if !h.cache.Loaded() {
		h.count(503)
		http.Error(w, "accounts not loaded yet", http.StatusServiceUnavailable)
		return
	}
	if key == "" {
		// nats-server GETs the bare base at start-up and needs a 200.
		h.count(200)
		w.WriteHeader(http.StatusOK)
		return
	}
	e := h.cache.get(key)
	if e == nil {
		if !validAccountKey(key) {
			h.count(400)
			http.Error(w, "not an account public key", http.StatusBadRequest)
			return
		}
		h.misses.Inc()
		h.count(404)
		http.Error(w, "account not found", http.StatusNotFound)
		return
	}
	h.hits.Inc()
	hdr := w.Header()
	hdr["Etag"] = []string{e.etag}
	hdr["Cache-Control"] = noCache
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, e.etag) {
		h.count(304)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hdr["Content-Type"] = jwtType
	hdr["Content-Length"] = []string{strconv.Itoa(len(e.body))}
	h.count(200)
	w.Write(e.body) //nolint:errcheck // the client went away
}

var (
	jwtType = []string{"application/jwt"}
	noCache = []string{"no-cache"}
)

// validAccountKey reports whether key is an account public key, exactly as
// nkeys encodes it (56 characters; nkeys alone accepts some trailing junk).
func validAccountKey(key string) bool {
	return len(key) == 56 && nkeys.IsValidPublicAccountKey(key)
}

func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}
