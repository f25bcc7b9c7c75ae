package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/rotatord/rotatord"
)

// maxAnswer bounds what the CLI reads of one answer.
const maxAnswer = 32 << 20

// apiClient calls rotatord's admin API with a bearer token.
type apiClient struct {
	base    string // scheme://host[:port][/prefix], no trailing slash
	token   string
	timeout time.Duration
	http    *http.Client
}

// tlsFiles are the CLI's TLS files; each may be empty.
type tlsFiles struct {
	ca   string // CAs to verify rotatord with, instead of the system roots
	cert string // client certificate, for a rotatord with mTLS
	key  string // its private key
}

// config returns the TLS configuration, nil for the defaults.
func (f tlsFiles) config() (*tls.Config, error) {
	if f == (tlsFiles{}) {
		return nil, nil
	}
	if (f.cert == "") != (f.key == "") {
		return nil, errors.New("--client-cert-file and --client-key-file go together: give both or neither")
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.ca != "" {
		pool, err := loadCA(f.ca)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	if f.cert != "" {
		kp, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{kp}
	}
	return tc, nil
}

// newAPIClient checks base and builds a client with a per-request timeout.
// With a CA file, rotatord's certificate must chain to those CAs alone.
func newAPIClient(base, token string, files tlsFiles, timeout time.Duration) (*apiClient, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("rotatord URL %q: want http(s)://host[:port]", base)
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("--timeout %s: want a positive duration", timeout)
	}
	tc, err := files.config()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tc != nil {
		tr.TLSClientConfig = tc
	}
	return &apiClient{
		base:    strings.TrimRight(u.String(), "/"),
		token:   token,
		timeout: timeout,
		http: &http.Client{
			Transport: tr,
			Timeout:   timeout,
			// A redirect would turn a POST into a GET and could carry the
			// token elsewhere: show it instead of following it.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

func loadCA(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: no PEM certificate in it", file)
	}
	return pool, nil
}

// apiError is an error answer of the API, {"error": "...", "code": "..."}.
// It unwraps to a *rotatord.Error, so errors.Is(err, rotatord.ErrNotFound) works.
type apiError struct {
	Status  int
	Code    string
	Message string
	// Rotation is the rotation in flight a conflict names, "" for none.
	Rotation string
}

// Error is "<code>: <message> (HTTP <status>)".
func (e *apiError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
	}
	return fmt.Sprintf("%s: %s (HTTP %d)", e.Code, e.Message, e.Status)
}

func (e *apiError) Unwrap() error {
	return &rotatord.Error{Code: e.Code, Message: e.Message}
}

// do sends one request (in, when not nil, as a JSON body) and returns the
// body of a 2xx answer; any other answer is an *apiError.
func (c *apiClient) do(ctx context.Context, method, path string, query url.Values, in any) ([]byte, error) {
	target := c.base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "rotatord-cli")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("read answer of %s %s from %s: %w", method, path, c.base, err)
	}
	if len(out) > maxAnswer {
		return nil, fmt.Errorf("answer of %s %s from %s is larger than %d bytes", method, path, c.base, maxAnswer)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, errorAnswer(resp, out)
	}
	return out, nil
}

// transportError says which URL could not be reached, without repeating the
// request's full URL (which url.Error would).
func (c *apiClient) transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Errorf("rotatord at %s did not answer within %s", c.base, c.timeout)
		}
		err = ue.Err
	}
	var unknownCA x509.UnknownAuthorityError
	if errors.As(err, &unknownCA) {
		return fmt.Errorf("cannot reach rotatord at %s: %w (give its CA with --ca-file)", c.base, err)
	}
	return fmt.Errorf("cannot reach rotatord at %s: %w", c.base, err)
}

// errorAnswer turns a non-2xx answer into an *apiError; a body that is not
// the API's error (a proxy's page) is shown as a short, printable excerpt.
func errorAnswer(resp *http.Response, body []byte) error {
	var e struct {
		Error    string `json:"error"`
		Code     string `json:"code"`
		Rotation string `json:"rotation"`
	}
	if json.Unmarshal(body, &e) == nil && e.Code != "" {
		return &apiError{Status: resp.StatusCode, Code: e.Code, Message: e.Error, Rotation: e.Rotation}
	}
	msg := "unexpected answer " + resp.Status
	if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return &apiError{Status: resp.StatusCode, Message: fmt.Sprintf("%s: redirected to %s; give rotatord's own URL with --url or ROTATORD_URL", msg, excerpt([]byte(loc), 200))}
	}
	if s := excerpt(body, 200); s != "" {
		msg += ": " + s
	}
	return &apiError{Status: resp.StatusCode, Message: msg}
}

// excerpt returns the start of b on one line, with unprintable runes dropped.
func excerpt(b []byte, n int) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, s)
	if r := []rune(s); len(r) > n {
		s = string(r[:n]) + "..."
	}
	return s
}

// get decodes the answer of a GET into v (when not nil) and returns it raw.
func (c *apiClient) get(ctx context.Context, path string, query url.Values, v any) ([]byte, error) {
	raw, err := c.do(ctx, http.MethodGet, path, query, nil)
	if err != nil {
		return nil, err
	}
	if v != nil {
		if err := json.Unmarshal(raw, v); err != nil {
			return nil, fmt.Errorf("decode answer of GET %s: %w", path, err)
		}
	}
	return raw, nil
}

// listPage is what the list endpoints answer: the items under one key, and
// next when the page is full.
type listPage struct {
	items []json.RawMessage
	next  string
}

// list fetches a list endpoint page after page, following next as after:
// at most max items (0: all of them), in pages of at most pageSize. next is
// the cursor to go on from when max stopped it early.
func (c *apiClient) list(ctx context.Context, path string, query url.Values, key string, max, pageSize int) (listPage, error) {
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	var all listPage
	for {
		size := pageSize
		if max > 0 && max-len(all.items) < size {
			size = max - len(all.items)
		}
		q.Set("limit", strconv.Itoa(size))
		var page map[string]json.RawMessage
		if _, err := c.get(ctx, path, q, &page); err != nil {
			return listPage{}, err
		}
		var items []json.RawMessage
		if err := json.Unmarshal(page[key], &items); err != nil {
			return listPage{}, fmt.Errorf("decode %s of GET %s: %w", key, path, err)
		}
		var next string
		if raw, ok := page["next"]; ok {
			if err := json.Unmarshal(raw, &next); err != nil {
				return listPage{}, fmt.Errorf("decode next of GET %s: %w", path, err)
			}
		}
		all.items = append(all.items, items...)
		if next == "" || len(items) == 0 {
			return all, nil
		}
		if max > 0 && len(all.items) >= max {
			all.next = next
			return all, nil
		}
		if next == q.Get("after") {
			return listPage{}, fmt.Errorf("GET %s: the server answered the same page twice (next %q)", path, next)
		}
		q.Set("after", next)
	}
}

// agentPath is /v1/agents/{name} with name escaped, then more.
func agentPath(name string, more ...string) string {
	return "/v1/agents/" + url.PathEscape(name) + strings.Join(more, "")
}
