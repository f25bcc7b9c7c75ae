package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rotatord/rotatord/internal/apitest"
	"github.com/rotatord/rotatord/internal/httpapi"
	"github.com/rotatord/rotatord/internal/resolver"
)

// chiMethods are the methods chi.Walk reports for a route registered with
// Handle (any method).
var chiMethods = []string{"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}

// route is one path of the router with the methods it serves.
type route struct {
	path    string
	methods map[string]bool
}

// anyMethod reports whether the route was registered for every method
// (r.Handle): its handler decides what each method gets.
func (r route) anyMethod() bool {
	for _, m := range chiMethods {
		if !r.methods[m] {
			return false
		}
	}
	return true
}

// covers reports whether the route's pattern matches the spec path p: the
// same template, or a prefix for a chi catch-all ("/jwt/v1/*").
func (r route) covers(p string) bool {
	if prefix, ok := strings.CutSuffix(r.path, "*"); ok {
		return strings.HasPrefix(p, prefix)
	}
	return r.path == p
}

// TestRoutesMatchSpec walks the router and compares it with api/openapi.yaml:
// every route must be an operation of the spec, and every operation of the
// spec that is not marked x-rotatord-status: planned must be served.
func TestRoutesMatchSpec(t *testing.T) {
	// The resolver and metrics routes exist only when their handlers are
	// configured; no service is needed to walk the routes.
	stub := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	srv := httpapi.New(httpapi.Config{Resolver: stub, Metrics: stub, Console: stub})

	byPath := map[string]*route{}
	err := chi.Walk(srv.Routes(), func(method, path string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		r := byPath[path]
		if r == nil {
			r = &route{path: path, methods: map[string]bool{}}
			byPath[path] = r
		}
		r.methods[method] = true
		return nil
	})
	if err != nil {
		t.Fatalf("walk routes: %v", err)
	}
	routes := make([]route, 0, len(byPath))
	for _, r := range byPath {
		routes = append(routes, *r)
	}
	sort.Slice(routes, func(i, j int) bool { return routes[i].path < routes[j].path })

	type op struct{ method, path string }
	doc := apitest.Doc(t)
	var ops, planned []op
	for _, p := range doc.Paths.InMatchingOrder() {
		for m, o := range doc.Paths.Value(p).Operations() {
			if o.Extensions["x-rotatord-status"] == "planned" {
				planned = append(planned, op{m, p})
			} else {
				ops = append(ops, op{m, p})
			}
		}
	}
	inSpec := func(method, path string) bool {
		item := doc.Paths.Value(path)
		return item != nil && item.GetOperation(method) != nil
	}
	servedBy := func(o op) (route, bool) {
		for _, r := range routes {
			if r.covers(o.path) && (r.anyMethod() || r.methods[o.method]) {
				return r, true
			}
		}
		return route{}, false
	}

	// Routes the spec does not describe.
	var notInSpec []string
	for _, r := range routes {
		if r.anyMethod() || strings.HasSuffix(r.path, "*") {
			// The handler behind it decides per method and path: the spec
			// must describe at least one operation under it.
			found := slices.ContainsFunc(append(slices.Clone(ops), planned...), func(o op) bool {
				return r.covers(o.path) && (r.anyMethod() || r.methods[o.method])
			})
			if !found {
				notInSpec = append(notInSpec, fmt.Sprintf("%s (any method, or a catch-all)", r.path))
			}
			continue
		}
		for _, m := range sortedKeys(r.methods) {
			if !inSpec(m, r.path) {
				notInSpec = append(notInSpec, m+" "+r.path)
			}
		}
	}

	// Operations of the spec that no route serves.
	var notServed []string
	for _, o := range ops {
		if _, ok := servedBy(o); !ok {
			notServed = append(notServed, o.method+" "+o.path)
		}
	}
	sort.Strings(notServed)

	// Planned operations that are served now should lose their marker.
	for _, o := range planned {
		if r, ok := servedBy(o); ok && !r.anyMethod() && !strings.HasSuffix(r.path, "*") {
			t.Errorf("%s %s is served but marked x-rotatord-status: planned in api/openapi.yaml; remove the marker", o.method, o.path)
		}
	}

	if len(notInSpec) > 0 || len(notServed) > 0 {
		var b strings.Builder
		b.WriteString("the router and api/openapi.yaml disagree\n")
		if len(notInSpec) > 0 {
			b.WriteString("served but not in the spec (describe them in api/openapi.yaml):\n")
			for _, s := range notInSpec {
				b.WriteString("  + " + s + "\n")
			}
		}
		if len(notServed) > 0 {
			b.WriteString("in the spec but not served (add the route, or mark the operation x-rotatord-status: planned):\n")
			for _, s := range notServed {
				b.WriteString("  - " + s + "\n")
			}
		}
		t.Error(b.String())
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestContractWithoutDatabase sends the requests the server can answer
// without a service (resolver, operations endpoints, refused
// authentication, wrong methods) through apitest, which checks every answer
// against api/openapi.yaml.
func TestContractWithoutDatabase(t *testing.T) {
	cache := resolver.NewCache()
	reg := prometheus.NewRegistry()
	var ready atomic.Bool
	srv := httptest.NewServer(httpapi.New(httpapi.Config{
		Resolver: resolver.NewHandler(cache, reg),
		Metrics:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		Ready: func(context.Context) error {
			if !ready.Load() {
				return errors.New("database unavailable")
			}
			return nil
		},
	}))
	defer srv.Close()
	c := apitest.Client(t)

	do := func(method, path string, header ...string) (int, http.Header, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: read body: %v", method, path, err)
		}
		return resp.StatusCode, resp.Header, string(b)
	}
	expect := func(want int, method, path string, header ...string) (http.Header, string) {
		t.Helper()
		got, h, body := do(method, path, header...)
		if got != want {
			t.Errorf("%s %s = %d, want %d (body %q)", method, path, got, want, body)
		}
		return h, body
	}

	// Keys and JWTs for the resolver.
	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	acc, _ := nkeys.CreateAccount()
	accPub, _ := acc.PublicKey()
	other, _ := nkeys.CreateAccount()
	otherPub, _ := other.PublicKey()
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = "fleet"
	accJWT, err := ac.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	opJWT, err := jwt.NewOperatorClaims(opPub).Encode(op)
	if err != nil {
		t.Fatal(err)
	}

	// Operations endpoints.
	expect(200, "GET", "/healthz")
	expect(503, "GET", "/readyz")
	ready.Store(true)
	expect(200, "GET", "/readyz")

	// The resolver before and after its cache is loaded.
	expect(503, "GET", "/jwt/v1/accounts/")
	expect(503, "GET", "/jwt/v1/accounts/"+accPub)
	expect(503, "GET", "/jwt/v1/operator")
	expect(503, "HEAD", "/jwt/v1/operator")
	cache.Replace([]resolver.Account{{PublicKey: accPub, JWT: accJWT}}, 0)
	cache.SetOperator(opJWT)
	expect(200, "GET", "/jwt/v1/accounts/")
	expect(200, "HEAD", "/jwt/v1/accounts/")
	h, body := expect(200, "GET", "/jwt/v1/accounts/"+accPub)
	if body != accJWT {
		t.Errorf("resolver body = %q, want the account JWT", body)
	}
	expect(304, "GET", "/jwt/v1/accounts/"+accPub, "If-None-Match", h.Get("ETag"))
	expect(200, "HEAD", "/jwt/v1/accounts/"+accPub)
	expect(304, "HEAD", "/jwt/v1/accounts/"+accPub, "If-None-Match", "*")
	expect(404, "GET", "/jwt/v1/accounts/"+otherPub)
	expect(404, "HEAD", "/jwt/v1/accounts/"+otherPub)
	expect(400, "GET", "/jwt/v1/accounts/not-a-key")
	expect(400, "GET", "/jwt/v1/accounts/"+opPub)
	expect(405, "POST", "/jwt/v1/accounts/"+accPub)
	if _, body := expect(200, "GET", "/jwt/v1/operator"); body != opJWT {
		t.Errorf("operator body = %q, want the operator JWT", body)
	}
	expect(200, "GET", "/metrics")

	// Every served /v1 operation refuses a request without a token, and a
	// method the spec does not declare on a known path gets 405.
	doc := apitest.Doc(t)
	for _, p := range doc.Paths.InMatchingOrder() {
		if !strings.HasPrefix(p, "/v1/") {
			continue
		}
		path := strings.NewReplacer("{name}", "builder-7", "{id}", "6f1c2b9e-4d3a-4f5e-9a7b-2c8d1e0f3a45").Replace(p)
		for m, o := range doc.Paths.Value(p).Operations() {
			if o.Extensions["x-rotatord-status"] == "planned" {
				continue
			}
			h, _ := expect(401, m, path)
			want := `Bearer realm="rotatord"`
			if strings.HasSuffix(path, "/creds") {
				want = `NKey realm="rotatord"` // agents prove possession of their key
			}
			if got := h.Get("WWW-Authenticate"); got != want {
				t.Errorf("%s %s: WWW-Authenticate = %q", m, path, got)
			}
			expect(401, m, path, "Authorization", "Basic Zm9vOmJhcg==")
		}
	}
	expect(405, "PUT", "/v1/agents/builder-7")
	expect(405, "PUT", "/v1/accounts")
}
