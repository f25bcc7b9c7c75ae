package console_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/rotatord/rotatord/internal/console"
)

func get(t *testing.T, h http.Handler, method, path string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Result()
}

// Every answer carries the security headers; files have the right types
// and ETags; nothing but GET and HEAD is served.
func TestHandler(t *testing.T) {
	h := console.Handler()
	for _, c := range []struct {
		path, contentType string
	}{
		{"/ui/", "text/html; charset=utf-8"},
		{"/ui/index.html", "text/html; charset=utf-8"},
		{"/ui/app.js", "text/javascript; charset=utf-8"},
		{"/ui/fleet.js", "text/javascript; charset=utf-8"},
		{"/ui/style.css", "text/css; charset=utf-8"},
		{"/ui/favicon.svg", "image/svg+xml"},
	} {
		resp := get(t, h, "GET", c.path)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s = %d", c.path, resp.StatusCode)
		}
		if got := resp.Header.Get("Content-Type"); got != c.contentType {
			t.Errorf("GET %s: Content-Type %q, want %q", c.path, got, c.contentType)
		}
		checkSecurityHeaders(t, c.path, resp.Header)
		etag := resp.Header.Get("ETag")
		if etag == "" || resp.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("GET %s: ETag %q, Cache-Control %q", c.path, etag, resp.Header.Get("Cache-Control"))
		}
		if again := get(t, h, "GET", c.path, "If-None-Match", etag); again.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with its ETag = %d, want 304", c.path, again.StatusCode)
		}
		head := get(t, h, "HEAD", c.path)
		if body, _ := io.ReadAll(head.Body); head.StatusCode != 200 || len(body) != 0 {
			t.Errorf("HEAD %s = %d with %d bytes", c.path, head.StatusCode, len(body))
		}
	}
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"POST", "/ui/", 405},
		{"PUT", "/ui/app.js", 405},
		{"DELETE", "/ui/", 405},
		{"GET", "/ui/nope.js", 404},
		{"GET", "/ui/../console.go", 404},
		{"GET", "/ui/static/app.js", 404},
		{"GET", "/elsewhere", 404},
	} {
		resp := get(t, h, c.method, c.path)
		if resp.StatusCode != c.want {
			t.Errorf("%s %s = %d, want %d", c.method, c.path, resp.StatusCode, c.want)
		}
		checkSecurityHeaders(t, c.path, resp.Header)
	}
}

func checkSecurityHeaders(t *testing.T, path string, h http.Header) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "form-action 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("%s: Content-Security-Policy %q lacks %q", path, csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") || strings.Contains(csp, "*") {
		t.Errorf("%s: Content-Security-Policy %q allows inline or any source", path, csp)
	}
	for k, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %s = %q, want %q", path, k, got, want)
		}
	}
}

// The files must work under the CSP and offline, and render values only
// as text: no inline script or style, nothing from another origin, no
// HTML parsing of data, every module import present.
func TestFilesStayWithinThePolicy(t *testing.T) {
	files := map[string]string{}
	err := fs.WalkDir(console.Files(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(console.Files(), p)
		files[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if files["index.html"] == "" || files["app.js"] == "" {
		t.Fatalf("embedded files: %v", keys(files))
	}
	inlineScript := regexp.MustCompile(`(?is)<script(?:\s[^>]*)?>`)
	for _, tag := range inlineScript.FindAllString(files["index.html"], -1) {
		if !strings.Contains(tag, `src=`) {
			t.Errorf("index.html has an inline script: %s", tag)
		}
	}
	attr := regexp.MustCompile(`(?i)\s(on[a-z]+|style)\s*=`)
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|@import|url\(`)
	htmlSinks := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|createContextualFragment|DOMParser`)
	imports := regexp.MustCompile(`from '\./([^']+)'`)
	for name, body := range files {
		if strings.HasSuffix(name, ".html") {
			if m := attr.FindString(body); m != "" {
				t.Errorf("%s has an inline handler or style attribute: %q", name, m)
			}
		}
		if strings.HasSuffix(name, ".svg") {
			// The SVG namespace is a name, not a fetch.
			body = strings.ReplaceAll(body, `xmlns="http://www.w3.org/2000/svg"`, "")
		}
		if m := external.FindString(body); m != "" {
			t.Errorf("%s refers to another origin or imports: %q (the console must work offline)", name, m)
		}
		if strings.HasSuffix(name, ".js") {
			if m := htmlSinks.FindString(body); m != "" {
				t.Errorf("%s uses %s: values must become text nodes, never markup", name, m)
			}
			if strings.Contains(body, "localStorage.setItem") || strings.Contains(body, "document.cookie") {
				t.Errorf("%s keeps something in localStorage or a cookie: the token lives in sessionStorage only", name)
			}
			for _, m := range imports.FindAllStringSubmatch(body, -1) {
				if _, ok := files[m[1]]; !ok {
					t.Errorf("%s imports ./%s, which is not embedded", name, m[1])
				}
			}
		}
	}
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
