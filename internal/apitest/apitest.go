// Package apitest checks HTTP traffic in tests against rotatord's REST
// contract, api/openapi.yaml, so that the server and the spec cannot drift.
//
// Use Client (or wrap a transport with Transport) wherever a test talks to
// the server over HTTP:
//
//	srv := httptest.NewServer(handler)
//	defer srv.Close()
//	c := apitest.Client(t)
//	resp, err := c.Get(srv.URL + "/v1/agents")
//
// Every response is checked: its path and method must be in the spec, its
// status must be declared for that operation, and its Content-Type, headers
// and body must match what the spec declares for that status. A mismatch
// fails the test. Requests are validated too, but a request that breaks the
// spec is only logged: tests send bad requests on purpose (invalid JSON,
// unknown fields, oversized bodies, missing tokens), and what matters is that
// the server's answer to them is in the contract.
package apitest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/rotatord/rotatord/api"
)

// spec is api/openapi.yaml, loaded and validated once.
type spec struct {
	doc    *openapi3.T
	router routers.Router
	err    error
}

var (
	loadOnce sync.Once
	loaded   spec
)

func load() *spec {
	loadOnce.Do(func() {
		loaded.doc, loaded.err = Load(context.Background())
		if loaded.err != nil {
			return
		}
		// The router gets its own copy without servers, so that any host
		// (httptest's 127.0.0.1:port) matches the spec's paths.
		rdoc, err := openapi3.NewLoader().LoadFromData(api.Spec)
		if err != nil {
			loaded.err = fmt.Errorf("load api/openapi.yaml: %w", err)
			return
		}
		rdoc.Servers = nil
		if loaded.router, err = gorillamux.NewRouter(rdoc); err != nil {
			loaded.err = fmt.Errorf("route api/openapi.yaml: %w", err)
			return
		}
		registerTextDecoders(loaded.doc)
	})
	return &loaded
}

// Load parses api/openapi.yaml (package api's embedded copy) and validates
// it as an OpenAPI document, examples included.
func Load(ctx context.Context) (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromData(api.Spec)
	if err != nil {
		return nil, fmt.Errorf("load api/openapi.yaml: %w", err)
	}
	if err := doc.Validate(ctx); err != nil {
		return nil, fmt.Errorf("api/openapi.yaml is not a valid OpenAPI document: %w", err)
	}
	return doc, nil
}

// Doc returns the loaded spec, shared by every caller: do not modify it. A
// spec that does not load or validate fails tb now.
func Doc(tb testing.TB) *openapi3.T {
	tb.Helper()
	s := load()
	if s.err != nil {
		tb.Fatalf("apitest: %v", s.err)
	}
	return s.doc
}

// registerTextDecoders lets openapi3filter read the non-JSON media types the
// spec uses (application/jwt, ...) as plain strings, so their schemas (a JWT
// pattern, say) are checked too. openapi3filter's decoders are global; only
// media types without one are registered.
func registerTextDecoders(doc *openapi3.T) {
	seen := map[string]bool{}
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			for _, ref := range op.Responses.Map() {
				if ref.Value == nil {
					continue
				}
				for mt := range ref.Value.Content {
					if seen[mt] || strings.Contains(mt, "*") {
						continue
					}
					seen[mt] = true
					if openapi3filter.RegisteredBodyDecoder(mt) == nil {
						openapi3filter.RegisterBodyDecoder(mt, openapi3filter.PlainBodyDecoder)
					}
				}
			}
		}
	}
}

// Client returns an HTTP client whose every exchange is checked against
// api/openapi.yaml (see Transport), with a 10 s timeout.
func Client(tb testing.TB) *http.Client {
	return &http.Client{Transport: Transport(tb, nil), Timeout: 10 * time.Second}
}

// Transport wraps base (nil = http.DefaultTransport) and checks every request
// and response against api/openapi.yaml; a mismatch fails tb (tb.Errorf with
// method, path, status and the validation error). Requests/responses on
// paths not in the spec fail too.
//
// In detail, for each exchange:
//   - the path must be one of the spec's; on a known path with a method the
//     spec does not declare, only a 405 answer is accepted (with the Error
//     body when it is JSON);
//   - the status must be declared for the operation;
//   - the Content-Type must be one the spec declares for that status, the
//     body must match its schema (JSON: additionalProperties, required,
//     nullable, formats, enums; other media types: read as a string), and
//     declared headers must match; a status declared without content must
//     come with an empty body;
//   - the request is validated too, but a mismatch is only logged.
//
// The response body is buffered and handed back unread, so the caller can
// read it as usual. A request body is buffered as well and sent unchanged.
func Transport(tb testing.TB, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{tb: tb, base: base}
}

type transport struct {
	tb   testing.TB
	base http.RoundTripper
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close() //nolint:errcheck // read in full
		if err != nil {
			return nil, fmt.Errorf("apitest: read request body: %w", err)
		}
		reqBody = b
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, readErr := io.ReadAll(resp.Body)
	resp.Body.Close() //nolint:errcheck // read in full
	if readErr != nil {
		// Hand the caller what arrived and then the error, and check nothing:
		// a broken connection is not a contract violation.
		resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{readErr}))
		return resp, nil
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err := t.check(req, reqBody, resp, body); err != nil {
		t.tb.Errorf("apitest: %s %s -> %d: %v", req.Method, req.URL.Path, resp.StatusCode, err)
	}
	return resp, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// options are openapi3filter's: authentication is tested elsewhere, so every
// credential passes; an undeclared status is an error. Schema errors name
// the failing field and leave out the schema dump (the body is quoted).
var options = &openapi3filter.Options{
	AuthenticationFunc:      openapi3filter.NoopAuthenticationFunc,
	IncludeResponseStatus:   true,
	MultiError:              true,
	SchemaValidationOptions: []openapi3.SchemaValidationOption{openapi3.DisableSchemaErrorDetails()},
}

// check validates one exchange; a nil error means it is in the contract.
func (t *transport) check(req *http.Request, reqBody []byte, resp *http.Response, body []byte) error {
	s := load()
	if s.err != nil {
		return s.err
	}
	ctx := context.Background()
	// The validators read the request body; give them their own copy.
	vreq := req.Clone(ctx)
	vreq.Body = io.NopCloser(bytes.NewReader(reqBody))

	route, params, err := s.router.FindRoute(vreq)
	switch {
	case errors.Is(err, routers.ErrMethodNotAllowed):
		return checkMethodNotAllowed(s.doc, resp, body)
	case err != nil:
		return fmt.Errorf("path is not in api/openapi.yaml (%v)", err)
	}

	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route, Options: options}
	if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
		t.tb.Logf("apitest: %s %s: the request does not match api/openapi.yaml (not a failure): %v",
			req.Method, req.URL.Path, oneLine(err))
	}

	declared := route.Operation.Responses.Status(resp.StatusCode)
	if declared == nil {
		declared = route.Operation.Responses.Default()
	}
	if declared == nil || declared.Value == nil {
		return fmt.Errorf("status %d is not declared for %s %s in api/openapi.yaml (declared: %s)",
			resp.StatusCode, route.Method, route.Path, strings.Join(statuses(route.Operation), ", "))
	}
	if req.Method == http.MethodHead {
		return nil
	}
	if len(declared.Value.Content) == 0 && len(body) > 0 {
		return fmt.Errorf("status %d is declared without a body, but the response has %d bytes (Content-Type %q)",
			resp.StatusCode, len(body), resp.Header.Get("Content-Type"))
	}
	if len(declared.Value.Content) > 0 && declared.Value.Content.Get(resp.Header.Get("Content-Type")) == nil {
		return fmt.Errorf("response Content-Type %q is not declared for status %d (declared: %s)",
			resp.Header.Get("Content-Type"), resp.StatusCode, strings.Join(mediaTypes(declared.Value.Content), ", "))
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                options,
	}
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return fmt.Errorf("%v; body: %s", err, excerpt(body))
	}
	return nil
}

// checkMethodNotAllowed accepts the server's answer to a method the spec
// does not declare on a known path: a 405, with the Error body if it is JSON.
func checkMethodNotAllowed(doc *openapi3.T, resp *http.Response, body []byte) error {
	if resp.StatusCode != http.StatusMethodNotAllowed {
		return fmt.Errorf("the method is not declared for this path in api/openapi.yaml, so only 405 is expected")
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != "application/json" {
		return nil
	}
	ref := doc.Components.Schemas["Error"]
	if ref == nil || ref.Value == nil {
		return fmt.Errorf("api/openapi.yaml has no Error schema")
	}
	v, err := decodeJSON(body)
	if err != nil {
		return fmt.Errorf("405 body is not JSON: %v; body: %s", err, excerpt(body))
	}
	if err := ref.Value.VisitJSON(v, openapi3.MultiErrors(), openapi3.VisitAsResponse(), openapi3.DisableSchemaErrorDetails()); err != nil {
		return fmt.Errorf("405 body does not match the Error schema: %v; body: %s", oneLine(err), excerpt(body))
	}
	return nil
}

func decodeJSON(b []byte) (any, error) {
	v, err := openapi3filter.JSONBodyDecoder(bytes.NewReader(b), http.Header{"Content-Type": {"application/json"}}, nil, nil)
	return v, err
}

func statuses(op *openapi3.Operation) []string {
	out := op.Responses.Keys()
	slices.Sort(out)
	return out
}

func mediaTypes(c openapi3.Content) []string {
	out := make([]string, 0, len(c))
	for mt := range c {
		out = append(out, mt)
	}
	slices.Sort(out)
	return out
}

func excerpt(b []byte) string {
	const max = 512
	if len(b) > max {
		return fmt.Sprintf("%q...", b[:max])
	}
	return fmt.Sprintf("%q", b)
}

func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }
