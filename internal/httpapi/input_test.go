package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/rotatord/rotatord/internal/apitest"
	"github.com/rotatord/rotatord/internal/httpapi"
	"github.com/rotatord/rotatord/internal/resolver"
)

// A header over httpapi.MaxHeaderBytes gets 431 with the JSON error body on
// every JSON endpoint, before authentication; the resolver is left to Go.
func TestHeaderTooLarge(t *testing.T) {
	cache := resolver.NewCache()
	cache.Replace(nil, 0)
	srv := httptest.NewServer(httpapi.New(httpapi.Config{Resolver: resolver.NewHandler(cache, nil)}))
	defer srv.Close()
	c := apitest.Client(t)
	get := func(path string, headerBytes int) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest("GET", srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Padding", strings.Repeat("a", headerBytes))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	for _, path := range []string{"/healthz", "/v1/agents", "/v1/tokens", "/v1/agents/kate/creds"} {
		resp, _ := get(path, httpapi.MaxHeaderBytes-1024)
		if resp.StatusCode == 431 {
			t.Errorf("GET %s with a header under the limit = 431", path)
		}
		resp, body := get(path, httpapi.MaxHeaderBytes)
		var e struct{ Error, Code string }
		if err := json.Unmarshal(body, &e); resp.StatusCode != 431 || err != nil || e.Code != "header_too_large" ||
			!strings.Contains(e.Error, "16384 bytes") || !resp.Close {
			t.Errorf("GET %s with a large header = %d %q (close %v); want 431 header_too_large, closing", path, resp.StatusCode, body, resp.Close)
		}
	}
	if resp, _ := get("/jwt/v1/accounts/", httpapi.MaxHeaderBytes); resp.StatusCode != 200 {
		t.Errorf("resolver with a large header = %d, want 200 (Go's limit applies there)", resp.StatusCode)
	}
}

// Every operation but the resolver's declares the 431 rotatord answers.
func TestSpecDeclaresHeaderTooLarge(t *testing.T) {
	doc := apitest.Doc(t)
	for path, item := range doc.Paths.Map() {
		if strings.HasPrefix(path, "/jwt/") {
			continue
		}
		for method, op := range item.Operations() {
			if op.Responses.Value("431") == nil {
				t.Errorf("%s %s does not declare 431 (#/components/responses/HeaderTooLarge)", method, path)
			}
		}
	}
	if !slices.Contains(doc.Components.Schemas["Error"].Value.Properties["code"].Value.Enum, any("header_too_large")) {
		t.Error("the Error schema's codes lack header_too_large")
	}
}

// Every bearer-token operation declares 400: a NUL character or bytes that
// are not UTF-8 in its path or query are refused with it.
func TestSpecDeclaresBadInput(t *testing.T) {
	doc := apitest.Doc(t)
	for path, item := range doc.Paths.Map() {
		if !strings.HasPrefix(path, "/v1/") {
			continue
		}
		for method, op := range item.Operations() {
			if op.Responses.Value("400") == nil {
				t.Errorf("%s %s does not declare 400 (#/components/responses/BadRequest)", method, path)
			}
		}
	}
}
