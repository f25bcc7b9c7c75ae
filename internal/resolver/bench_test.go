package resolver_test

// Benchmarks of resolver lookups without the network: the resolver Handler
// alone, the same Handler behind rotatord's real router, and a bare
// net/http handler serving the same bytes from a map, for comparison.
// The loopback HTTP run is cmd/resolverbench (docs/benchmarks.md).
//
//	go test -run '^$' -bench . -benchmem ./internal/resolver/

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rotatord/rotatord/internal/httpapi"
	"github.com/rotatord/rotatord/internal/resolver"
)

// benchAccounts is how many accounts the benchmarks look up at random.
const benchAccounts = 10_000

type benchAccount struct {
	pub, jwt string
	get      *http.Request // GET of the account
	getINM   *http.Request // the same GET with If-None-Match: its ETag
}

var (
	fixtureOnce sync.Once
	fixture     []benchAccount
	fixtureErr  error
)

// accounts returns benchAccounts real account JWTs, made once per test
// binary: each with its own identity and signing key, signed by one operator
// signing key, like rotatord issues them. Requests are built once and only
// read by the handlers, so goroutines share them.
func accounts(b *testing.B) []benchAccount {
	b.Helper()
	fixtureOnce.Do(func() { fixture, fixtureErr = makeAccounts(benchAccounts) })
	if fixtureErr != nil {
		b.Fatal(fixtureErr)
	}
	return fixture
}

func makeAccounts(n int) ([]benchAccount, error) {
	opSigner, err := nkeys.CreateOperator()
	if err != nil {
		return nil, fmt.Errorf("create operator key: %w", err)
	}
	out := make([]benchAccount, n)
	for i := range out {
		identity, err := nkeys.CreateAccount()
		if err != nil {
			return nil, fmt.Errorf("create account key: %w", err)
		}
		signing, err := nkeys.CreateAccount()
		if err != nil {
			return nil, fmt.Errorf("create signing key: %w", err)
		}
		pub, err := identity.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("account public key: %w", err)
		}
		signingPub, err := signing.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("signing public key: %w", err)
		}
		ac := jwt.NewAccountClaims(pub)
		ac.Name = fmt.Sprintf("bench-%05d", i)
		ac.SigningKeys.Add(signingPub)
		token, err := ac.Encode(opSigner)
		if err != nil {
			return nil, fmt.Errorf("encode account jwt %s: %w", ac.Name, err)
		}
		get, err := http.NewRequest(http.MethodGet, "http://rotatord"+resolver.AccountsPath+pub, nil)
		if err != nil {
			return nil, fmt.Errorf("build request: %w", err)
		}
		getINM := get.Clone(get.Context())
		getINM.Header.Set("If-None-Match", resolver.ETag(token))
		out[i] = benchAccount{pub: pub, jwt: token, get: get, getINM: getINM}
	}
	return out, nil
}

// discardWriter is a reusable http.ResponseWriter that keeps only what the
// benchmarks check, so that they measure the handler and not a recorder.
type discardWriter struct {
	header http.Header
	status int
	n      int
}

func newDiscardWriter() *discardWriter { return &discardWriter{header: make(http.Header, 4)} }

func (w *discardWriter) Header() http.Header { return w.header }

func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}

func (w *discardWriter) reset() {
	clear(w.header)
	w.status, w.n = 0, 0
}

func newCache(accs []benchAccount) *resolver.Cache {
	all := make([]resolver.Account, len(accs))
	for i, a := range accs {
		all[i] = resolver.Account{PublicKey: a.pub, JWT: a.jwt}
	}
	c := resolver.NewCache()
	c.Replace(all, 0)
	return c
}

// bareHandler is the baseline: the same bytes from a plain map, with no
// validation, ETag or metrics.
func bareHandler(accs []benchAccount) http.Handler {
	m := make(map[string][]byte, len(accs))
	for _, a := range accs {
		m[a.pub] = []byte(a.jwt)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := m[strings.TrimPrefix(r.URL.Path, resolver.AccountsPath)]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/jwt")
		w.Write(b) //nolint:errcheck // discardWriter does not fail
	})
}

// runLookups serves requests for accounts picked at random, from parallel
// goroutines, and fails if a response is not want.
func runLookups(b *testing.B, h http.Handler, notModified bool) {
	accs := accounts(b)
	want := http.StatusOK
	if notModified {
		want = http.StatusNotModified
	}
	size := 0
	for _, a := range accs {
		size += len(a.jwt)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := newDiscardWriter()
		for pb.Next() {
			a := &accs[rand.IntN(len(accs))]
			r := a.get
			if notModified {
				r = a.getINM
			}
			w.reset()
			h.ServeHTTP(w, r)
			if w.status != want || (want == http.StatusOK && w.n != len(a.jwt)) {
				b.Errorf("GET %s: status %d with %d bytes, want %d with %d bytes", r.URL.Path, w.status, w.n, want, len(a.jwt))
				return
			}
		}
	})
	b.ReportMetric(float64(size)/float64(len(accs)), "jwt-bytes")
}

// BenchmarkHandler looks up account JWTs at random among 10,000 with the
// resolver Handler alone (its Prometheus counter registered).
func BenchmarkHandler(b *testing.B) {
	accs := accounts(b)
	runLookups(b, resolver.NewHandler(newCache(accs), prometheus.NewRegistry()), false)
}

// BenchmarkHandlerNotModified is BenchmarkHandler with a matching
// If-None-Match: 304 without a body.
func BenchmarkHandlerNotModified(b *testing.B) {
	accs := accounts(b)
	runLookups(b, resolver.NewHandler(newCache(accs), prometheus.NewRegistry()), true)
}

// BenchmarkRouter is BenchmarkHandler through rotatord's real router
// (httpapi.New mounts the resolver at /jwt/v1/*), as cmd/rotatord serves it.
func BenchmarkRouter(b *testing.B) {
	accs := accounts(b)
	api := httpapi.New(httpapi.Config{Resolver: resolver.NewHandler(newCache(accs), prometheus.NewRegistry())})
	runLookups(b, api, false)
}

// BenchmarkBareMap is the baseline: a bare http.HandlerFunc serving the
// same bytes from a map[string][]byte.
func BenchmarkBareMap(b *testing.B) {
	runLookups(b, bareHandler(accounts(b)), false)
}
