package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/rotatord/rotatord"
)

// Bad input: what PostgreSQL cannot store (a NUL character, bytes that are
// not UTF-8) is refused with 400 before any handler runs, so that no such
// value reaches the database and comes back as a 500; headers over the
// limit get the JSON error shape; no error message repeats a value shaped
// like an NKey seed.

// Header limits. rotatord answers a request whose header (request line
// and fields) is over MaxHeaderBytes with 431 and the JSON error body.
// Go's HTTP server refuses larger ones itself, before any handler and in
// plain text, beyond ServerMaxHeaderBytes: set http.Server.MaxHeaderBytes to
// it, so that rotatord's own check answers first.
const (
	MaxHeaderBytes       = 16 << 10
	ServerMaxHeaderBytes = 64 << 10
)

// codeHeaderTooLarge goes with status 431.
const codeHeaderTooLarge = "header_too_large"

// headerSize is about what Go's server counts against MaxHeaderBytes: the
// request line and every "Name: value\r\n".
func headerSize(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4
	if r.Host != "" {
		n += len("Host: ") + len(r.Host) + 2
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// checkHeaderSize answers 431 with the JSON error body when r's header is
// over MaxHeaderBytes. The resolver (plain text, nats-server's small
// requests) is left to Go's own limit.
func (s *Server) checkHeaderSize(w http.ResponseWriter, r *http.Request) bool {
	if headerSize(r) <= MaxHeaderBytes || strings.HasPrefix(r.URL.Path, "/jwt/") {
		return true
	}
	// The body was not read; do not let the client send another request
	// on this connection behind it.
	w.Header().Set("Connection", "close")
	s.writeError(w, r, &rotatord.Error{Code: codeHeaderTooLarge,
		Message: fmt.Sprintf("request header is larger than %d bytes", MaxHeaderBytes)})
	return false
}

// storable reports whether PostgreSQL can store s as text: valid UTF-8
// without NUL characters.
func storable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// checkInput refuses, with 400 invalid, a request whose path or query holds
// a NUL character or bytes that are not UTF-8, or whose query does not
// parse. It reads no body (decode checks bodies), so handlers that hash the
// raw body (the agents' proofs) are not affected; the agents' own endpoints
// do their own checks and are not behind it.
func (s *Server) checkInput(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !storable(r.URL.Path) {
			s.writeError(w, r, rotatord.Errorf(rotatord.EINVALID, "the path holds a NUL character or bytes that are not UTF-8"))
			return
		}
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			s.writeError(w, r, rotatord.Errorf(rotatord.EINVALID, "the query string is malformed: use key=value pairs, percent-encoded"))
			return
		}
		for k, vs := range q {
			if !storable(k) {
				s.writeError(w, r, rotatord.Errorf(rotatord.EINVALID, "a query parameter name holds a NUL character or bytes that are not UTF-8"))
				return
			}
			for _, v := range vs {
				if !storable(v) {
					s.writeError(w, r, rotatord.Errorf(rotatord.EINVALID, "query parameter %q holds a NUL character or bytes that are not UTF-8", k))
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// checkJSONText refuses a JSON body that is not UTF-8 or that has a NUL
// character (\u0000) in a string, key or value: encoding/json would turn
// the first silently into U+FFFD and pass the second on to PostgreSQL,
// which refuses it.
func checkJSONText(raw []byte) error {
	if !utf8.Valid(raw) {
		return rotatord.Errorf(rotatord.EINVALID, "body is not valid UTF-8")
	}
	if !bytes.Contains(raw, []byte(`\u0000`)) {
		return nil
	}
	// The escape may be inside a string as text (\\u0000): look at the
	// decoded strings.
	dec := json.NewDecoder(bytes.NewReader(raw))
	for {
		tok, err := dec.Token()
		if err != nil {
			// Syntax errors are reported by the real decode.
			return nil
		}
		if str, ok := tok.(string); ok && strings.ContainsRune(str, 0) {
			return rotatord.Errorf(rotatord.EINVALID, "body holds a NUL character (\\u0000) in a string")
		}
	}
}

// seedShape matches text that looks like an NKey seed: 'S' and 57 more
// base32 characters, in either case.
var seedShape = regexp.MustCompile(`(?i)s[a-z2-7]{57}`)

// redactSeeds replaces every seed-shaped run in msg, so that no error or
// log line repeats a seed a caller sent by mistake (as a public key, a
// name, in a path).
func redactSeeds(msg string) string {
	if len(msg) < 58 {
		return msg
	}
	return seedShape.ReplaceAllString(msg, "[redacted: looks like an NKey seed]")
}
