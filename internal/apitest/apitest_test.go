package apitest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/rotatord/rotatord/api"
	"github.com/rotatord/rotatord/internal/apitest"
)

// recorder is a testing.TB that records Errorf calls instead of failing.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) Error(args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprint(args...))
}

func (r *recorder) Helper() {}

func (r *recorder) reported() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errors)
}

const (
	agentJSON = `{"name":"builder-7","account":"fleet","state":"active",` +
		`"permissions":{"pub":{"allow":["builds.>"],"deny":[]},"sub":{"allow":["builds.>","_INBOX.>"],"deny":[]}},` +
		`"rotation":{"schedule":"@every 24h","grace":"30m0s"},"delivery":"poll",` +
		`"credential":{"public_key":"UBRCSP6WI7YSB7TWWFQNAAUQPLKRKT6MLD5ALQRO7WVMRGV5CXWJWAM5",` +
		`"jwt_id":"F6CK4PZUUKUBWEACOEGYHHZBKRAFLQXILJLQAXRSMFZWT455DQVQ",` +
		`"issued_at":"2026-11-23T04:24:43Z","expires_at":"2026-11-24T05:54:43Z"},` +
		`"next_rotation_at":"2026-11-24T04:24:43Z","last_rotation":null,"created_at":"2026-11-23T04:24:43.123456Z",` +
		`"updated_at":"2026-11-23T04:24:43.123456Z",` +
		`"limits":{"subs":-1,"data":-1,"payload":-1},"src":[],"times":[],"times_location":"",` +
		`"connection_types":[],"tags":[],"role":null}`
	accountJSON = `{"name":"fleet","public_key":"AA7YSGD4WLBDBFDBS4RC7Z6WQR7SW3ARJPBR2OV5QZMZH6ECUG7BOU2Z",` +
		`"system":false,"description":"","limits":{"conn":-1,"subs":-1,"payload":-1,"data":-1,` +
		`"imports":-1,"exports":-1,"wildcards":true,"leaf":-1,"disallow_bearer":false},` +
		`"signing_keys":["AAWUHWZP6EAC2SWD5BHEOFRSMJIUJ7QNVEVNC7MEODMUL2FYVTPVEDY3"],` +
		`"jwt_id":"MPSBR56BUGL63LX5AKGSUFO2HGW2SQXILCNPTE3UH72GAPXOFNRA","revocations":0,"keep_revocations":false,"agents":0,` +
		`"jwt_bytes":612,"jwt_max_bytes":524288,` +
		`"created_at":"2026-11-20T09:00:00Z","updated_at":"2026-11-20T09:00:00Z","jwt_version":1,` +
		`"jetstream":null,"exports":[],"imports":[],"default_permissions":{"pub":{"allow":[],"deny":[]},"sub":{"allow":[],"deny":[]}},` +
		`"mappings":{},"info_url":"","tags":[]}`
	accountKey = "AA7YSGD4WLBDBFDBS4RC7Z6WQR7SW3ARJPBR2OV5QZMZH6ECUG7BOU2Z"
	jwtBody    = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiJNUFNCUjU2In0.c5vL55XNAZtWStVFcaG9cSqtnkoHpHvL"
)

// reply writes a canned response.
func reply(status int, contentType, body string, headers ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		if contentType != "" {
			w.Header().Set("Content-Type", contentType)
		}
		w.WriteHeader(status)
		io.WriteString(w, body) //nolint:errcheck // test server
	}
}

func TestTransport(t *testing.T) {
	const js = "application/json"
	cases := []struct {
		name         string
		method, path string
		body         string
		reply        http.HandlerFunc
		wantError    string // "" when the exchange is in the contract
	}{
		// The four the validator exists for.
		{name: "matching body", method: "GET", path: "/v1/agents/builder-7",
			reply: reply(200, js, agentJSON)},
		{name: "extra field", method: "GET", path: "/v1/agents/builder-7",
			reply:     reply(200, js, strings.Replace(agentJSON, `"name":`, `"seed":"SUAxxx","name":`, 1)),
			wantError: "seed"},
		{name: "undeclared status", method: "GET", path: "/v1/agents/builder-7",
			reply:     reply(http.StatusTeapot, js, `{"error":"short and stout","code":"invalid"}`),
			wantError: "status 418 is not declared"},
		{name: "wrong type", method: "GET", path: "/v1/agents/builder-7",
			reply:     reply(200, js, strings.Replace(agentJSON, `"state":"active"`, `"state":5`, 1)),
			wantError: "state"},

		// Nullability, required fields, enums, formats.
		{name: "null credential and next rotation", method: "GET", path: "/v1/agents/builder-7",
			reply: reply(200, js, strings.NewReplacer(
				`"next_rotation_at":"2026-11-24T04:24:43Z"`, `"next_rotation_at":null`,
				`"state":"active"`, `"state":"revoked"`).Replace(
				agentJSON[:strings.Index(agentJSON, `"credential":`)]+`"credential":null,`+
					agentJSON[strings.Index(agentJSON, `"next_rotation_at"`):]))},
		{name: "null where not nullable", method: "GET", path: "/v1/agents/builder-7",
			reply:     reply(200, js, strings.Replace(agentJSON, `"delivery":"poll"`, `"delivery":null`, 1)),
			wantError: "delivery"},
		{name: "missing required field", method: "GET", path: "/v1/agents/builder-7",
			reply:     reply(200, js, strings.Replace(agentJSON, `"account":"fleet",`, ``, 1)),
			wantError: "account"},
		{name: "value outside enum", method: "GET", path: "/v1/agents/builder-7",
			reply:     reply(200, js, strings.Replace(agentJSON, `"delivery":"poll"`, `"delivery":"carrier-pigeon"`, 1)),
			wantError: "delivery"},
		{name: "not a date-time", method: "GET", path: "/v1/agents/builder-7",
			reply:     reply(200, js, strings.Replace(agentJSON, `"created_at":"2026-11-23T04:24:43.123456Z"`, `"created_at":"yesterday"`, 1)),
			wantError: "created_at"},
		{name: "wrong content type", method: "GET", path: "/v1/agents/builder-7",
			reply:     reply(200, "text/plain; charset=utf-8", agentJSON),
			wantError: "Content-Type"},
		{name: "not JSON", method: "GET", path: "/v1/agents/builder-7",
			reply:     reply(200, js, "{"),
			wantError: "decode"},

		// Errors.
		{name: "error body", method: "GET", path: "/v1/agents/nobody",
			reply: reply(404, js, `{"error":"agent \"nobody\" not found","code":"not_found"}`)},
		{name: "error body with unknown code", method: "GET", path: "/v1/agents/nobody",
			reply:     reply(404, js, `{"error":"agent \"nobody\" not found","code":"missing"}`),
			wantError: "code"},
		{name: "401 without WWW-Authenticate", method: "GET", path: "/v1/agents",
			reply:     reply(401, js, `{"error":"missing bearer token","code":"unauthorized"}`),
			wantError: "WWW-Authenticate"},

		// Bad requests are the test's business, not a contract violation.
		{name: "request with unknown field and wrong type", method: "POST", path: "/v1/agents",
			body:  `{"nmae":1,"account":["fleet"]}`,
			reply: reply(400, js, `{"error":"unknown field \"nmae\"","code":"invalid"}`)},
		{name: "request that is not JSON", method: "POST", path: "/v1/accounts",
			body:  `{"name":`,
			reply: reply(400, js, `{"error":"body is not valid JSON","code":"invalid"}`)},

		// Headers declared required.
		{name: "created with Location", method: "POST", path: "/v1/accounts", body: `{"name":"fleet"}`,
			reply: reply(201, js, accountJSON, "Location", "/v1/accounts/fleet")},
		{name: "created without Location", method: "POST", path: "/v1/accounts", body: `{"name":"fleet"}`,
			reply: reply(201, js, accountJSON), wantError: "Location"},

		// Bodies where none is declared.
		{name: "204", method: "DELETE", path: "/v1/accounts/fleet", reply: reply(204, "", "")},

		// Paths and methods outside the spec.
		{name: "path not in spec", method: "GET", path: "/v1/nothing-here",
			reply:     reply(404, js, `{"error":"no such endpoint: GET /v1/nothing-here","code":"not_found"}`),
			wantError: "path is not in api/openapi.yaml"},
		{name: "405 on a known path", method: "PUT", path: "/v1/agents/builder-7",
			reply: reply(405, js, `{"error":"PUT is not allowed on /v1/agents/builder-7","code":"method_not_allowed"}`)},
		{name: "405 with a bad body", method: "PUT", path: "/v1/agents/builder-7",
			reply:     reply(405, js, `{"message":"no"}`),
			wantError: "Error schema"},
		{name: "undeclared method answered", method: "PUT", path: "/v1/agents/builder-7",
			reply:     reply(200, js, agentJSON),
			wantError: "only 405"},

		// The resolver: plain text and application/jwt.
		{name: "resolver JWT", method: "GET", path: "/jwt/v1/accounts/" + accountKey,
			reply: reply(200, "application/jwt", jwtBody, "ETag", `"MPSBR56BUGL63LX5AKGSUFO2HGW2SQXILCNPTE3UH72GAPXOFNRA"`, "Cache-Control", "no-cache")},
		{name: "resolver body not a JWT", method: "GET", path: "/jwt/v1/accounts/" + accountKey,
			reply:     reply(200, "application/jwt", "hello", "ETag", `"MPSBR56B"`, "Cache-Control", "no-cache"),
			wantError: "regular expression"},
		{name: "resolver JWT as JSON", method: "GET", path: "/jwt/v1/accounts/" + accountKey,
			reply:     reply(200, js, `"`+jwtBody+`"`, "ETag", `"MPSBR56B"`, "Cache-Control", "no-cache"),
			wantError: "Content-Type"},
		{name: "resolver 304", method: "GET", path: "/jwt/v1/accounts/" + accountKey,
			reply: reply(304, "", "", "ETag", `"MPSBR56B"`, "Cache-Control", "no-cache")},
		{name: "resolver 404 text", method: "GET", path: "/jwt/v1/accounts/" + accountKey,
			reply: reply(404, "text/plain; charset=utf-8", "account not found\n")},
		{name: "resolver probe", method: "GET", path: "/jwt/v1/accounts/", reply: reply(200, "", "")},
		{name: "resolver probe with a body", method: "GET", path: "/jwt/v1/accounts/",
			reply: reply(200, "text/plain", "hi"), wantError: "without a body"},
		{name: "304 where none is declared", method: "GET", path: "/v1/agents/builder-7",
			reply: reply(304, "", ""), wantError: "status 304 is not declared"},
		{name: "HEAD on the resolver", method: "HEAD", path: "/jwt/v1/operator",
			reply: reply(200, "application/jwt", jwtBody)},
		{name: "HEAD with an undeclared status", method: "HEAD", path: "/jwt/v1/operator",
			reply: reply(404, "text/plain; charset=utf-8", ""), wantError: "status 404 is not declared"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var gotBody string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				gotBody = string(b)
				tc.reply(w, r)
			}))
			defer srv.Close()
			rec := &recorder{TB: t}
			c := &http.Client{Transport: apitest.Transport(rec, srv.Client().Transport)}

			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			req.Header.Set("Authorization", "Bearer rtd_test")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			// The caller still gets the whole body, and the server got the request's.
			want := httptest.NewRecorder()
			tc.reply(want, req)
			if b, _ := io.ReadAll(resp.Body); tc.method != "HEAD" && string(b) != want.Body.String() {
				t.Errorf("response body after validation = %q, want %q", b, want.Body.String())
			}
			if gotBody != tc.body {
				t.Errorf("server got request body %q, want %q", gotBody, tc.body)
			}

			got := rec.reported()
			switch {
			case tc.wantError == "" && len(got) > 0:
				t.Errorf("want no report, got:\n%s", strings.Join(got, "\n"))
			case tc.wantError != "" && len(got) == 0:
				t.Errorf("want a report mentioning %q, got none", tc.wantError)
			case tc.wantError != "" && !strings.Contains(strings.Join(got, "\n"), tc.wantError):
				t.Errorf("want a report mentioning %q, got:\n%s", tc.wantError, strings.Join(got, "\n"))
			}
			for _, e := range got {
				// Every report names the exchange.
				if !strings.Contains(e, tc.method+" "+tc.path+" -> ") {
					t.Errorf("report does not name method, path and status: %s", e)
				}
			}
		})
	}
}

func TestClient(t *testing.T) {
	srv := httptest.NewServer(reply(200, "application/json", `{"status":"ok"}`))
	defer srv.Close()
	rec := &recorder{TB: t}
	c := apitest.Client(rec)
	if c.Timeout <= 0 {
		t.Errorf("Client has no timeout")
	}
	resp, err := c.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != `{"status":"ok"}` {
		t.Errorf("body = %q", b)
	}
	if got := rec.reported(); len(got) > 0 {
		t.Errorf("unexpected reports: %v", got)
	}
}

// TestSpecValid loads api/openapi.yaml and validates it as an OpenAPI 3.0
// document; kin-openapi checks every example against its schema too.
func TestSpecValid(t *testing.T) {
	ctx := context.Background()
	doc, err := openapi3.NewLoader().LoadFromData(api.Spec)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := doc.Validate(ctx); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi = %q, want 3.0.3", doc.OpenAPI)
	}
	if _, err := apitest.Load(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSpecConventions checks the rules the spec keeps beyond being valid.
func TestSpecConventions(t *testing.T) {
	doc := apitest.Doc(t)
	scopes := map[string]bool{"read": true, "rotate": true, "admin": true}
	for _, path := range doc.Paths.InMatchingOrder() {
		for method, op := range doc.Paths.Value(path).Operations() {
			where := method + " " + path
			if op.OperationID == "" {
				t.Errorf("%s: no operationId", where)
			}
			if st, ok := op.Extensions["x-rotatord-status"]; ok && st != "planned" {
				t.Errorf("%s: x-rotatord-status %v; the only value is planned", where, st)
			}
			// Operations behind a bearer token name their scope.
			sec := doc.Security
			if op.Security != nil {
				sec = *op.Security
			}
			bearer := slices.ContainsFunc(sec, func(r openapi3.SecurityRequirement) bool { _, ok := r["bearerAuth"]; return ok })
			scope, _ := op.Extensions["x-rotatord-scope"].(string)
			switch {
			case bearer && !scopes[scope]:
				t.Errorf("%s: bearer-authenticated but x-rotatord-scope is %q", where, scope)
			case bearer && !strings.Contains(op.Description, "Scope: `"+scope+"`"):
				t.Errorf("%s: description does not say \"Scope: `%s`\"", where, scope)
			case !bearer && scope != "":
				t.Errorf("%s: x-rotatord-scope without bearer authentication", where)
			}
			if strings.HasPrefix(path, "/v1/") && len(sec) == 0 {
				t.Errorf("%s: /v1 operation without authentication", where)
			}
			// Request bodies refuse unknown fields, like the server.
			if op.RequestBody != nil {
				for mt, c := range op.RequestBody.Value.Content {
					checkClosed(t, where+" request "+mt, c.Schema, map[*openapi3.Schema]bool{})
				}
			}
			for status, ref := range op.Responses.Map() {
				for mt, c := range ref.Value.Content {
					what := fmt.Sprintf("%s %s %s", where, status, mt)
					if mt == "application/json" {
						checkClosed(t, what, c.Schema, map[*openapi3.Schema]bool{})
						// Every JSON error is the one Error schema (readyz's 503
						// is a readiness report, not an error).
						if status >= "400" && path != "/readyz" && c.Schema.Ref != "#/components/schemas/Error" {
							t.Errorf("%s: error response does not use #/components/schemas/Error (%q)", what, c.Schema.Ref)
						}
					}
					if c.Example == nil && len(c.Examples) == 0 && (c.Schema == nil || c.Schema.Value.Example == nil) && mt == "application/json" {
						t.Errorf("%s: no example", what)
					}
				}
			}
		}
	}
}

// checkClosed requires every object schema under ref to say what it does
// with unknown properties (the API's objects say additionalProperties: false;
// free-form ones say true explicitly).
func checkClosed(t *testing.T, what string, ref *openapi3.SchemaRef, seen map[*openapi3.Schema]bool) {
	t.Helper()
	if ref == nil || ref.Value == nil || seen[ref.Value] {
		return
	}
	s := ref.Value
	seen[s] = true
	if s.Type.Is("object") && s.AdditionalProperties.Has == nil && s.AdditionalProperties.Schema == nil {
		t.Errorf("%s: object schema %s does not set additionalProperties", what, ref.Ref)
	}
	for _, p := range s.Properties {
		checkClosed(t, what, p, seen)
	}
	checkClosed(t, what, s.Items, seen)
	for _, sub := range s.AllOf {
		checkClosed(t, what, sub, seen)
	}
}

// TestTransportConcurrent shares one transport between goroutines, as an
// http.Client does; run with -race.
func TestTransportConcurrent(t *testing.T) {
	srv := httptest.NewServer(reply(200, "application/json", agentJSON))
	defer srv.Close()
	rec := &recorder{TB: t}
	c := &http.Client{Transport: apitest.Transport(rec, srv.Client().Transport)}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			resp, err := c.Get(srv.URL + "/v1/agents/builder-7")
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body) //nolint:errcheck // drained
			resp.Body.Close()
		})
	}
	wg.Wait()
	if got := rec.reported(); len(got) > 0 {
		t.Errorf("unexpected reports: %v", got)
	}
}
