// Package console is rotatord's fleet console: plain HTML, CSS and
// JavaScript modules embedded in the binary and served under /ui/. The
// files are public (no token is needed to load them); every API call the
// console makes carries the API token the operator signs in with, kept in
// the browser's sessionStorage and sent as the bearer token, never in a URL.
//
// The files load nothing from elsewhere (no CDN, no web fonts), so the
// console works offline, and the Content-Security-Policy allows only this
// origin: no inline script, no framing, no form submission.
package console

import (
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
)

//go:embed static
var static embed.FS

// Prefix is where the console is served.
const Prefix = "/ui/"

// CSP is the Content-Security-Policy of every console file: scripts,
// styles and API calls from this origin only, no inline script or style
// attribute, no plugins, no framing, no form submission (the sign-in form
// is handled by script; if script fails, the token cannot end up in a URL).
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// file is one embedded file, read once.
type file struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves the console's files under Prefix; it must be mounted
// there. Only GET and HEAD are served; "/ui/" is index.html.
func Handler() http.Handler {
	files := map[string]*file{}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		ct := mime.TypeByExtension(path.Ext(p))
		switch path.Ext(p) {
		case ".js":
			// The platform's MIME table may lack it or say
			// application/javascript; module scripts need a JavaScript type.
			ct = "text/javascript; charset=utf-8"
		case ".html":
			ct = "text/html; charset=utf-8"
		case ".css":
			ct = "text/css; charset=utf-8"
		case ".svg":
			ct = "image/svg+xml"
		}
		if ct == "" {
			ct = "application/octet-stream"
		}
		sum := sha256.Sum256(b)
		files[strings.TrimPrefix(p, "static/")] = &file{body: b, contentType: ct,
			etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`}
		return nil
	})
	if err != nil {
		// The files are compiled in: this cannot fail at run time.
		panic(fmt.Sprintf("console: read embedded files: %v", err))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name, ok := strings.CutPrefix(r.URL.Path, Prefix)
		if !ok {
			http.NotFound(w, r)
			return
		}
		if name == "" {
			name = "index.html"
		}
		f := files[name]
		if f == nil {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		h.Set("Content-Type", f.contentType)
		// Revalidate every time (cheap with the ETag), so an upgraded
		// rotatord is never paired with an old script.
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		if r.Header.Get("If-None-Match") == f.etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		h.Set("Content-Length", fmt.Sprint(len(f.body)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			w.Write(f.body) //nolint:errcheck // the browser went away
		}
	})
}

// Files returns the console's files (index.html, app.js, ...), for tests
// and tools that check them.
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(fmt.Sprintf("console: %v", err))
	}
	return sub
}
