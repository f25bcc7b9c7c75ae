// Package vaulttest is an in-process fake of the parts of HashiCorp Vault
// that rotatord uses, for tests: the KV version 2 secrets engine (versions,
// check-and-set, soft delete, undelete, destroy, metadata), sys/health,
// token lookup and renewal, and AppRole and Kubernetes logins. It speaks
// Vault's HTTP API with Vault's response shapes, so tests drive it with a
// real vault/api client, and it can fail on purpose: sealed, down, slow,
// failing with a status, or denying a path.
//
// Shapes follow Vault 1.x (vault-plugin-secrets-kv path_data.go and
// path_metadata.go): reads of a missing secret or version answer 404 with
// {"errors":[]}; reads of a deleted or destroyed version answer 404 with
// the version's metadata under "data"; writes answer the new version's
// metadata; deletes answer 204; errors are {"errors":["..."]}.
package vaulttest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
)

// defaultMaxVersions is how many versions KV v2 keeps when neither the
// mount nor the secret sets max_versions.
const defaultMaxVersions = 10

// Server is a fake Vault. All methods are safe for concurrent use.
type Server struct {
	srv       *httptest.Server
	rootToken string
	closed    chan struct{}

	mu       sync.Mutex
	mounts   map[string]map[string]*kvSecret // mount → secret path → secret
	tokens   map[string]*token
	sealed   bool
	down     bool
	delay    time.Duration
	failCode int
	failN    int
	denied   []string
	requests int
	renewals int
	logins   int

	tokenTTL, tokenMaxTTL                  time.Duration
	approleID, approleSecret, approleMount string
	k8sRole, k8sJWT, k8sMount              string
}

type kvSecret struct {
	versions           map[int]*kvVersion
	current, oldest    int
	created, updated   time.Time
	maxVersions        int
	casRequired        bool
	deleteVersionAfter time.Duration
	custom             map[string]string
}

type kvVersion struct {
	data      map[string]any // nil once destroyed
	created   time.Time
	deleted   time.Time // zero unless soft-deleted
	destroyed bool
}

type token struct {
	id, accessor string
	path         string
	policies     []string
	root         bool
	ttl, maxTTL  time.Duration // ttl is the period a renewal grants
	issued       time.Time
	expires      time.Time // zero for root
}

// New starts a fake Vault whose root token is rootToken, with a KV v2 engine
// mounted at "secret". It is closed when the test ends.
func New(tb testing.TB, rootToken string) *Server {
	tb.Helper()
	s := &Server{
		rootToken: rootToken,
		closed:    make(chan struct{}),
		mounts:    map[string]map[string]*kvSecret{"secret": {}},
		tokens:    map[string]*token{},
		tokenTTL:  768 * time.Hour,
	}
	s.tokens[rootToken] = newToken(rootToken, "auth/token/root", []string{"root"}, true, 0, 0, time.Now())
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	tb.Cleanup(func() {
		close(s.closed)
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
	return s
}

// URL returns the address to use as VAULT_ADDR.
func (s *Server) URL() string { return s.srv.URL }

// Client returns a vault/api client for the server, authenticated with the
// root token and without retries, so failures show at once.
// RealClient returns a client of the real Vault named by VAULT_ADDR and
// VAULT_TOKEN, and skips the test when they are not set: start one with
// `vault server -dev`, then export both.
func RealClient(tb testing.TB) *vaultapi.Client {
	tb.Helper()
	addr, token := os.Getenv("VAULT_ADDR"), os.Getenv("VAULT_TOKEN")
	if addr == "" || token == "" {
		tb.Skip("no real Vault: run `vault server -dev`, then " +
			"export VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=<the dev root token> and run this test again")
	}
	cfg := vaultapi.DefaultConfig()
	cfg.Address = addr
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		tb.Fatalf("vault client: %v", err)
	}
	c.SetToken(token)
	return c
}

func (s *Server) Client(tb testing.TB) *vaultapi.Client {
	tb.Helper()
	cfg := vaultapi.DefaultConfig()
	cfg.Address = s.srv.URL
	cfg.MaxRetries = 0
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		tb.Fatalf("vault client: %v", err)
	}
	c.SetToken(s.rootToken)
	return c
}

// AddMount mounts another KV v2 engine at path.
func (s *Server) AddMount(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	path = strings.Trim(path, "/")
	if _, ok := s.mounts[path]; !ok {
		s.mounts[path] = map[string]*kvSecret{}
	}
}

// Seal makes every request but sys/health answer 503 "Vault is sealed".
func (s *Server) Seal() { s.set(func() { s.sealed = true }) }

// Unseal undoes Seal.
func (s *Server) Unseal() { s.set(func() { s.sealed = false }) }

// Down makes the server close every connection without answering, as a
// crashed or unreachable Vault would look to a client.
func (s *Server) Down() {
	s.set(func() { s.down = true })
	s.srv.CloseClientConnections()
}

// Up undoes Down.
func (s *Server) Up() { s.set(func() { s.down = false }) }

// FailNext makes the next n requests answer status with a Vault-style
// {"errors":[...]} body.
func (s *Server) FailNext(status, n int) { s.set(func() { s.failCode, s.failN = status, n }) }

// Deny makes requests for KV secrets whose path (below the mount, for
// example "nats/acme") starts with pathPrefix answer 403 permission denied,
// as a policy without that path would.
func (s *Server) Deny(pathPrefix string) {
	s.set(func() { s.denied = append(s.denied, strings.Trim(pathPrefix, "/")) })
}

// SetDelay makes every request wait d before it is handled (0 turns it
// off), to exercise client timeouts.
func (s *Server) SetDelay(d time.Duration) { s.set(func() { s.delay = d }) }

// SetTokenTTL sets the TTL and the maximum TTL (0: none) of tokens issued
// from now on by logins and NewToken.
func (s *Server) SetTokenTTL(ttl, maxTTL time.Duration) {
	s.set(func() { s.tokenTTL, s.tokenMaxTTL = ttl, maxTTL })
}

// SetAppRole enables AppRole logins at auth/approle for this role and
// secret ID.
func (s *Server) SetAppRole(roleID, secretID string) {
	s.set(func() { s.approleID, s.approleSecret, s.approleMount = roleID, secretID, "approle" })
}

// SetKubernetes enables Kubernetes logins at auth/kubernetes for this role
// and service account token.
func (s *Server) SetKubernetes(role, jwt string) {
	s.set(func() { s.k8sRole, s.k8sJWT, s.k8sMount = role, jwt, "kubernetes" })
}

// NewToken issues a renewable service token with the TTLs of SetTokenTTL.
func (s *Server) NewToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issueLocked("auth/token/create").id
}

// RevokeToken makes tok invalid.
func (s *Server) RevokeToken(tok string) { s.set(func() { delete(s.tokens, tok) }) }

// Secret returns the current version of the secret at path (below the
// "secret" mount): its data and version number. ok is false when the
// secret does not exist or its current version is deleted or destroyed;
// version is still reported then.
func (s *Server) Secret(path string) (data map[string]any, version int, ok bool) {
	return s.MountSecret("secret", path)
}

// MountSecret is Secret for another mount.
func (s *Server) MountSecret(mount, path string) (data map[string]any, version int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.mounts[mount][strings.Trim(path, "/")]
	if sec == nil {
		return nil, 0, false
	}
	v := sec.versions[sec.current]
	if v == nil || !v.live(time.Now()) {
		return nil, sec.current, false
	}
	return maps.Clone(v.data), sec.current, true
}

// Requests returns how many HTTP requests the server received.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// Renewals returns how many successful token renewals it answered.
func (s *Server) Renewals() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.renewals
}

// Logins returns how many successful logins it answered.
func (s *Server) Logins() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins
}

func (s *Server) set(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

func (v *kvVersion) live(now time.Time) bool {
	return !v.destroyed && (v.deleted.IsZero() || v.deleted.After(now))
}

// request is one parsed call, answered under s.mu.
type request struct {
	w      http.ResponseWriter
	r      *http.Request
	path   string // below /v1/, without surrounding slashes
	op     string // read, list, write, patch, delete
	body   map[string]any
	token  *token
	header string
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	down, delay := s.down, s.delay
	s.mu.Unlock()
	if down {
		hangUp(w)
		return
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-s.closed:
			t.Stop()
			return
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failN > 0 {
		s.failN--
		writeErrors(w, s.failCode, failMessage(s.failCode))
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/v1/") {
		writeErrors(w, http.StatusNotFound)
		return
	}
	q := &request{w: w, r: r, path: strings.Trim(strings.TrimPrefix(r.URL.Path, "/v1/"), "/")}
	switch {
	case r.Method == "LIST" || (r.Method == http.MethodGet && r.URL.Query().Get("list") == "true"):
		q.op = "list"
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		q.op = "read"
	case r.Method == http.MethodPut || r.Method == http.MethodPost:
		q.op = "write"
	case r.Method == http.MethodPatch:
		q.op = "patch"
	case r.Method == http.MethodDelete:
		q.op = "delete"
	default:
		writeErrors(w, http.StatusMethodNotAllowed, "1 error occurred:\n\t* unsupported operation\n\n")
		return
	}

	if q.path == "sys/health" {
		s.health(q)
		return
	}
	if s.sealed {
		writeErrors(w, http.StatusServiceUnavailable, "Vault is sealed")
		return
	}
	if q.op == "write" || q.op == "patch" {
		if !readBody(q) {
			return
		}
	}
	switch {
	case s.approleMount != "" && q.path == "auth/"+s.approleMount+"/login" && q.op == "write":
		s.approleLogin(q)
		return
	case s.k8sMount != "" && q.path == "auth/"+s.k8sMount+"/login" && q.op == "write":
		s.k8sLogin(q)
		return
	}

	tok := r.Header.Get("X-Vault-Token")
	if tok == "" {
		tok, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	t := s.tokens[tok]
	if t == nil || (!t.expires.IsZero() && !t.expires.After(time.Now())) {
		writeErrors(w, http.StatusForbidden, "permission denied")
		return
	}
	q.token = t

	switch q.path {
	case "auth/token/lookup-self":
		s.lookupSelf(q)
		return
	case "auth/token/renew-self":
		if q.op != "write" {
			writeErrors(w, http.StatusMethodNotAllowed, "1 error occurred:\n\t* unsupported operation\n\n")
			return
		}
		s.renewSelf(q)
		return
	}

	// Like Vault's router, the longest mount that prefixes the path wins.
	mount := ""
	for m := range s.mounts {
		if (q.path == m || strings.HasPrefix(q.path, m+"/")) && len(m) > len(mount) {
			mount = m
		}
	}
	if mount == "" {
		writeErrors(w, http.StatusNotFound, fmt.Sprintf("no handler for route %q. route entry not found.", q.path))
		return
	}
	s.kv(q, s.mounts[mount], strings.TrimPrefix(strings.TrimPrefix(q.path, mount), "/"))
}

// hangUp closes the connection without an answer.
func hangUp(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("vaulttest: response writer cannot hijack")
	}
	conn, _, err := hj.Hijack()
	if err == nil {
		conn.Close()
	}
}

func failMessage(status int) string {
	switch status {
	case http.StatusServiceUnavailable:
		return "Vault is sealed"
	case http.StatusForbidden:
		return "permission denied"
	case http.StatusTooManyRequests:
		return "request path \"secret/data\": rate limit quota exceeded"
	case http.StatusInternalServerError:
		return "internal error"
	}
	return strings.ToLower(http.StatusText(status))
}

func readBody(q *request) bool {
	raw, err := io.ReadAll(io.LimitReader(q.r.Body, 32<<20))
	if err != nil {
		writeErrors(q.w, http.StatusBadRequest, "failed to read request body")
		return false
	}
	q.body = map[string]any{}
	if len(strings.TrimSpace(string(raw))) == 0 {
		return true
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&q.body); err != nil {
		writeErrors(q.w, http.StatusBadRequest, "failed to parse JSON input: "+err.Error())
		return false
	}
	return true
}

func writeErrors(w http.ResponseWriter, status int, errs ...string) {
	if errs == nil {
		errs = []string{}
	}
	writeJSON(w, status, map[string]any{"errors": errs})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// respond writes Vault's response envelope.
func respond(w http.ResponseWriter, status int, data map[string]any, auth map[string]any, warnings []string) {
	var d any
	if data != nil {
		d = data
	}
	var a any
	if auth != nil {
		a = auth
	}
	var warn any
	if len(warnings) > 0 {
		warn = warnings
	}
	writeJSON(w, status, map[string]any{
		"request_id": randomID(), "lease_id": "", "renewable": false, "lease_duration": 0,
		"data": d, "wrap_info": nil, "warnings": warn, "auth": a, "mount_type": mountType(auth),
	})
}

func mountType(auth map[string]any) string {
	if auth != nil {
		return ""
	}
	return "kv"
}

func noContent(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }

func (s *Server) health(q *request) {
	code := func(param string, def int) int {
		if v := q.r.URL.Query().Get(param); v != "" {
			if n, err := strconv.Atoi(v); err == nil {
				return n
			}
		}
		return def
	}
	status := code("activecode", http.StatusOK)
	if s.sealed {
		status = code("sealedcode", http.StatusServiceUnavailable)
	}
	body := map[string]any{
		"initialized": true, "sealed": s.sealed, "standby": s.sealed, "performance_standby": false,
		"replication_performance_mode": "disabled", "replication_dr_mode": "disabled",
		"server_time_utc": time.Now().Unix(), "version": "1.21.4", "enterprise": false,
		"echo_duration_ms": 0, "clock_skew_ms": 0, "replication_primary_canary_age_ms": 0,
	}
	if !s.sealed {
		body["cluster_name"], body["cluster_id"] = "vault-cluster-vaulttest", "00000000-0000-0000-0000-000000000000"
	}
	if q.r.Method == http.MethodHead {
		q.w.WriteHeader(status)
		return
	}
	writeJSON(q.w, status, body)
}

// Auth.

func newToken(id, path string, policies []string, root bool, ttl, maxTTL time.Duration, now time.Time) *token {
	t := &token{id: id, accessor: randomID(), path: path, policies: policies, root: root, ttl: ttl, maxTTL: maxTTL, issued: now}
	if !root {
		t.expires = t.capped(now, ttl)
	}
	return t
}

// capped returns now+d, no later than the token's maximum TTL allows.
func (t *token) capped(now time.Time, d time.Duration) time.Time {
	exp := now.Add(d)
	if t.maxTTL > 0 && exp.After(t.issued.Add(t.maxTTL)) {
		exp = t.issued.Add(t.maxTTL)
	}
	return exp
}

func (t *token) leaseSeconds(now time.Time) int {
	if t.root {
		return 0
	}
	return int(t.expires.Sub(now).Round(time.Second) / time.Second)
}

func (s *Server) issueLocked(path string) *token {
	t := newToken("hvs."+randomID(), path, []string{"default", "rotatord"}, false, s.tokenTTL, s.tokenMaxTTL, time.Now())
	s.tokens[t.id] = t
	return t
}

func (t *token) auth(now time.Time, meta map[string]any) map[string]any {
	return map[string]any{
		"client_token": t.id, "accessor": t.accessor, "policies": t.policies, "token_policies": t.policies,
		"identity_policies": nil, "metadata": meta, "lease_duration": t.leaseSeconds(now), "renewable": !t.root,
		"entity_id": "", "token_type": "service", "orphan": true, "mfa_requirement": nil, "num_uses": 0,
	}
}

func (s *Server) approleLogin(q *request) {
	role, _ := q.body["role_id"].(string)
	secret, _ := q.body["secret_id"].(string)
	if role != s.approleID || secret != s.approleSecret || role == "" {
		writeErrors(q.w, http.StatusBadRequest, "invalid role or secret ID")
		return
	}
	t := s.issueLocked("auth/" + s.approleMount + "/login")
	s.logins++
	respond(q.w, http.StatusOK, nil, t.auth(time.Now(), map[string]any{"role_name": "rotatord"}), nil)
}

func (s *Server) k8sLogin(q *request) {
	role, _ := q.body["role"].(string)
	jwt, _ := q.body["jwt"].(string)
	if role != s.k8sRole {
		writeErrors(q.w, http.StatusBadRequest, fmt.Sprintf("invalid role name %q", role))
		return
	}
	if jwt != s.k8sJWT || jwt == "" {
		writeErrors(q.w, http.StatusForbidden, "permission denied")
		return
	}
	t := s.issueLocked("auth/" + s.k8sMount + "/login")
	s.logins++
	respond(q.w, http.StatusOK, nil, t.auth(time.Now(), map[string]any{"role": role,
		"service_account_name": "rotatord", "service_account_namespace": "default"}), nil)
}

func (s *Server) lookupSelf(q *request) {
	t, now := q.token, time.Now()
	var expire any
	if !t.expires.IsZero() {
		expire = t.expires.UTC().Format(time.RFC3339Nano)
	}
	respond(q.w, http.StatusOK, map[string]any{
		"accessor": t.accessor, "creation_time": t.issued.Unix(), "creation_ttl": int(t.ttl / time.Second),
		"display_name": "token", "entity_id": "", "expire_time": expire, "explicit_max_ttl": int(t.maxTTL / time.Second),
		"id": t.id, "issue_time": t.issued.UTC().Format(time.RFC3339Nano), "meta": nil, "num_uses": 0,
		"orphan": true, "path": t.path, "policies": t.policies, "renewable": !t.root,
		"ttl": t.leaseSeconds(now), "type": "service",
	}, nil, nil)
}

func (s *Server) renewSelf(q *request) {
	t, now := q.token, time.Now()
	if t.root {
		writeErrors(q.w, http.StatusBadRequest, "lease is not renewable")
		return
	}
	d := t.ttl
	if inc, ok := intOf(q.body["increment"]); ok && inc > 0 {
		d = time.Duration(inc) * time.Second
	}
	var warnings []string
	exp := t.capped(now, d)
	if exp.Before(now.Add(d)) {
		warnings = append(warnings, fmt.Sprintf("TTL of %q exceeded the effective max_ttl of %q; TTL value is capped accordingly",
			d.String(), exp.Sub(now).Round(time.Second).String()))
	}
	t.expires = exp
	s.renewals++
	respond(q.w, http.StatusOK, nil, t.auth(now, nil), warnings)
}

// KV v2.

func (s *Server) kv(q *request, secrets map[string]*kvSecret, rest string) {
	kind, p, _ := strings.Cut(rest, "/")
	p = strings.Trim(p, "/")
	if kind != "config" {
		for _, d := range s.denied {
			if strings.HasPrefix(p, d) {
				writeErrors(q.w, http.StatusForbidden, "1 error occurred:\n\t* permission denied\n\n")
				return
			}
		}
	}
	switch {
	case kind == "config" && p == "" && q.op == "read":
		respond(q.w, http.StatusOK, map[string]any{"max_versions": 0, "cas_required": false, "delete_version_after": "0s"}, nil, nil)
	case kind == "data" && p != "":
		switch q.op {
		case "read":
			s.kvRead(q, secrets[p])
		case "write":
			s.kvWrite(q, secrets, p)
		case "patch":
			s.kvPatch(q, secrets[p])
		case "delete":
			if sec := secrets[p]; sec != nil {
				if v := sec.versions[sec.current]; v != nil && v.deleted.IsZero() && !v.destroyed {
					v.deleted = time.Now()
					sec.updated = v.deleted
				}
			}
			noContent(q.w)
		default:
			unsupported(q)
		}
	case kind == "metadata":
		switch q.op {
		case "list":
			s.kvList(q, secrets, p)
		case "read":
			s.kvMetadata(q, secrets[p])
		case "write", "patch":
			s.kvMetadataWrite(q, secrets, p)
		case "delete":
			delete(secrets, p)
			noContent(q.w)
		default:
			unsupported(q)
		}
	case (kind == "delete" || kind == "undelete" || kind == "destroy") && p != "" && q.op == "write":
		versions, ok := versionList(q.body["versions"])
		if !ok || len(versions) == 0 {
			writeErrors(q.w, http.StatusBadRequest, "no version number provided")
			return
		}
		if sec := secrets[p]; sec != nil {
			now := time.Now()
			for _, n := range versions {
				v := sec.versions[n]
				if v == nil || v.destroyed {
					continue
				}
				switch kind {
				case "delete":
					if v.deleted.IsZero() {
						v.deleted = now
					}
				case "undelete":
					v.deleted = time.Time{}
				case "destroy":
					v.destroyed, v.data = true, nil
				}
			}
			sec.updated = now
		}
		noContent(q.w)
	default:
		writeErrors(q.w, http.StatusNotFound, fmt.Sprintf("no handler for route %q. route entry not found.", q.path))
	}
}

func unsupported(q *request) {
	writeErrors(q.w, http.StatusMethodNotAllowed, "1 error occurred:\n\t* unsupported operation\n\n")
}

func timeString(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func (sec *kvSecret) customMetadata() any {
	if sec.custom == nil {
		return nil
	}
	m := map[string]any{}
	for k, v := range sec.custom {
		m[k] = v
	}
	return m
}

func (sec *kvSecret) versionMetadata(n int, v *kvVersion) map[string]any {
	return map[string]any{"version": n, "created_time": timeString(v.created), "deletion_time": timeString(v.deleted),
		"destroyed": v.destroyed, "custom_metadata": sec.customMetadata()}
}

func (s *Server) kvRead(q *request, sec *kvSecret) {
	if sec == nil {
		writeErrors(q.w, http.StatusNotFound)
		return
	}
	n := sec.current
	if raw := q.r.URL.Query().Get("version"); raw != "" {
		v, err := strconv.Atoi(raw)
		if err != nil {
			writeErrors(q.w, http.StatusBadRequest, fmt.Sprintf("1 error occurred:\n\t* error converting input %s for field \"version\": strconv.ParseInt: parsing %q: invalid syntax\n\n", raw, raw))
			return
		}
		if v > 0 {
			n = v
		}
	}
	v := sec.versions[n]
	if v == nil {
		writeErrors(q.w, http.StatusNotFound)
		return
	}
	data := map[string]any{"data": nil, "metadata": sec.versionMetadata(n, v)}
	if !v.live(time.Now()) {
		respond(q.w, http.StatusNotFound, data, nil, nil)
		return
	}
	data["data"] = maps.Clone(v.data)
	respond(q.w, http.StatusOK, data, nil, nil)
}

// checkCAS applies the check-and-set rules of KV v2 to a write's options.
func checkCAS(q *request, sec *kvSecret) bool {
	var cas any
	var ok bool
	if opts, isMap := q.body["options"].(map[string]any); isMap {
		cas, ok = opts["cas"]
	}
	current := 0
	required := false
	if sec != nil {
		current, required = sec.current, sec.casRequired
	}
	if ok {
		n, valid := intOf(cas)
		if !valid {
			writeErrors(q.w, http.StatusBadRequest, "error parsing check-and-set parameter")
			return false
		}
		if n != current {
			writeErrors(q.w, http.StatusBadRequest, "check-and-set parameter did not match the current version")
			return false
		}
	} else if required {
		writeErrors(q.w, http.StatusBadRequest, "check-and-set parameter required for this call")
		return false
	}
	return true
}

func (s *Server) kvWrite(q *request, secrets map[string]*kvSecret, p string) {
	data, ok := q.body["data"].(map[string]any)
	if !ok {
		writeErrors(q.w, http.StatusBadRequest, "no data provided")
		return
	}
	sec := secrets[p]
	if !checkCAS(q, sec) {
		return
	}
	if sec == nil {
		now := time.Now()
		sec = &kvSecret{versions: map[int]*kvVersion{}, created: now}
		secrets[p] = sec
	}
	n, v := sec.add(data)
	respond(q.w, http.StatusOK, sec.versionMetadata(n, v), nil, nil)
}

// add stores data as the next version and prunes versions beyond the
// maximum, as KV v2 does on every write.
func (sec *kvSecret) add(data map[string]any) (int, *kvVersion) {
	now := time.Now()
	sec.current++
	v := &kvVersion{data: data, created: now}
	if sec.deleteVersionAfter > 0 {
		v.deleted = now.Add(sec.deleteVersionAfter)
	}
	sec.versions[sec.current] = v
	sec.updated = now
	max := sec.maxVersions
	if max <= 0 {
		max = defaultMaxVersions
	}
	for n := range sec.versions {
		if n <= sec.current-max {
			delete(sec.versions, n)
			sec.oldest = sec.current - max + 1
		}
	}
	return sec.current, v
}

func (s *Server) kvPatch(q *request, sec *kvSecret) {
	patch, ok := q.body["data"].(map[string]any)
	if !ok {
		writeErrors(q.w, http.StatusBadRequest, "no data provided")
		return
	}
	if sec == nil {
		writeErrors(q.w, http.StatusNotFound)
		return
	}
	if !checkCAS(q, sec) {
		return
	}
	cur := sec.versions[sec.current]
	if cur == nil {
		writeErrors(q.w, http.StatusNotFound)
		return
	}
	if !cur.live(time.Now()) {
		respond(q.w, http.StatusNotFound, sec.versionMetadata(sec.current, cur), nil, nil)
		return
	}
	merged := maps.Clone(cur.data)
	for k, v := range patch {
		if v == nil {
			delete(merged, k)
		} else {
			merged[k] = v
		}
	}
	n, v := sec.add(merged)
	respond(q.w, http.StatusOK, sec.versionMetadata(n, v), nil, nil)
}

func (s *Server) kvMetadata(q *request, sec *kvSecret) {
	if sec == nil {
		writeErrors(q.w, http.StatusNotFound)
		return
	}
	versions := map[string]any{}
	for n, v := range sec.versions {
		versions[strconv.Itoa(n)] = map[string]any{"created_time": timeString(v.created),
			"deletion_time": timeString(v.deleted), "destroyed": v.destroyed}
	}
	respond(q.w, http.StatusOK, map[string]any{
		"versions": versions, "current_version": sec.current, "oldest_version": sec.oldest,
		"created_time": timeString(sec.created), "updated_time": timeString(sec.updated),
		"max_versions": sec.maxVersions, "cas_required": sec.casRequired,
		"delete_version_after": sec.deleteVersionAfter.String(), "custom_metadata": sec.customMetadata(),
	}, nil, nil)
}

func (s *Server) kvMetadataWrite(q *request, secrets map[string]*kvSecret, p string) {
	if p == "" {
		writeErrors(q.w, http.StatusBadRequest, "missing path")
		return
	}
	sec := secrets[p]
	if sec == nil {
		if q.op == "patch" {
			writeErrors(q.w, http.StatusNotFound)
			return
		}
		now := time.Now()
		sec = &kvSecret{versions: map[int]*kvVersion{}, created: now, updated: now}
		secrets[p] = sec
	}
	if v, ok := q.body["max_versions"]; ok {
		sec.maxVersions, _ = intOf(v)
	}
	if v, ok := q.body["cas_required"].(bool); ok {
		sec.casRequired = v
	}
	if v, ok := q.body["delete_version_after"]; ok {
		if n, isInt := intOf(v); isInt {
			sec.deleteVersionAfter = time.Duration(n) * time.Second
		} else if str, isStr := v.(string); isStr {
			d, err := time.ParseDuration(str)
			if err != nil {
				writeErrors(q.w, http.StatusBadRequest, fmt.Sprintf("invalid delete_version_after %q", str))
				return
			}
			sec.deleteVersionAfter = d
		}
	}
	if v, ok := q.body["custom_metadata"]; ok {
		m, _ := v.(map[string]any)
		if m == nil {
			sec.custom = nil
		} else {
			if sec.custom == nil || q.op == "write" {
				sec.custom = map[string]string{}
			}
			for k, val := range m {
				if val == nil {
					delete(sec.custom, k)
					continue
				}
				sec.custom[k] = fmt.Sprint(val)
			}
		}
	}
	sec.updated = time.Now()
	noContent(q.w)
}

func (s *Server) kvList(q *request, secrets map[string]*kvSecret, p string) {
	prefix := ""
	if p != "" {
		prefix = p + "/"
	}
	seen := map[string]bool{}
	for path := range secrets {
		rest, ok := strings.CutPrefix(path, prefix)
		if !ok || rest == "" {
			continue
		}
		if i := strings.Index(rest, "/"); i >= 0 {
			seen[rest[:i+1]] = true
		} else {
			seen[rest] = true
		}
	}
	if len(seen) == 0 {
		writeErrors(q.w, http.StatusNotFound)
		return
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	respond(q.w, http.StatusOK, map[string]any{"keys": keys}, nil, nil)
}

// intOf reads an integer from decoded JSON (a json.Number, a float, or a
// string, as Vault's weak decoding accepts).
func intOf(v any) (int, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return int(i), err == nil
	case float64:
		return int(n), n == float64(int(n))
	case int:
		return n, true
	case string:
		i, err := strconv.Atoi(n)
		return i, err == nil
	}
	return 0, false
}

// versionList reads a "versions" parameter: a list of numbers or numeric
// strings, or one comma-separated string.
func versionList(v any) ([]int, bool) {
	var out []int
	switch l := v.(type) {
	case []any:
		for _, e := range l {
			n, ok := intOf(e)
			if !ok {
				return nil, false
			}
			out = append(out, n)
		}
	case string:
		for _, f := range strings.Split(l, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				return nil, false
			}
			out = append(out, n)
		}
	default:
		if n, ok := intOf(v); ok {
			out = append(out, n)
		}
	}
	return out, true
}

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
