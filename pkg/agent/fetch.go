package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// maxBody bounds what the client reads from rotatord.
const maxBody = 64 << 10

// APIError is a refusal from rotatord: the HTTP status and the
// {"error","code"} body it sent (Code is one of rotatord's E* codes, ""
// when the body was not rotatord's JSON error).
type APIError struct {
	StatusCode int
	Code       string
	Message    string
	// RetryAfter is the wait rotatord asked for (Retry-After of a 429), or 0.
	RetryAfter time.Duration
}

// Error returns the status, the message and the code.
func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	if e.Code == "" {
		return fmt.Sprintf("rotatord answered %d: %s", e.StatusCode, msg)
	}
	return fmt.Sprintf("rotatord answered %d: %s (%s)", e.StatusCode, msg, e.Code)
}

func apiError(status int, hdr http.Header, body []byte) *APIError {
	e := &APIError{StatusCode: status}
	if n, err := strconv.Atoi(hdr.Get("Retry-After")); err == nil && n > 0 {
		e.RetryAfter = time.Duration(n) * time.Second
	}
	var b struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	if err := json.Unmarshal(body, &b); err == nil && (b.Error != "" || b.Code != "") {
		e.Message, e.Code = b.Error, b.Code
		return e
	}
	// Not rotatord's error (a proxy's page): a little of it helps.
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200]
	}
	e.Message = s
	return e
}

func (c *Client) credsURL() (string, error) {
	u, err := url.JoinPath(c.cfg.Server, "/v1/agents", url.PathEscape(c.cfg.Name), "creds")
	if err != nil {
		return "", fmt.Errorf("creds url: %w", err)
	}
	return u, nil
}

// response is rotatord's answer to a signed request.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request to u signed with the key in use. body makes the
// request body for the proof's time (an own-key POST signs it into its key
// proof); nil sends none.
func (c *Client) do(ctx context.Context, method, u string, body func(unix int64) ([]byte, error)) (*response, error) {
	c.mu.Lock()
	k := c.inUseLocked()
	// Ed25519 signatures are deterministic: two identical requests in one
	// second would carry the same proof, which rotatord refuses as a
	// replay. Later seconds are fine (rotatord accepts ±60 s).
	unix := c.cfg.Now().Unix()
	id := k.pub + " " + method + " " + u
	if last, ok := c.lastProof[id]; ok && unix <= last {
		unix = last + 1
	}
	if unix > c.cfg.Now().Unix()+int64(rotatord.ProofWindow/time.Second)/2 {
		c.mu.Unlock()
		return nil, errors.New("too many requests to rotatord in the last seconds")
	}
	for id, last := range c.lastProof {
		if last < unix-int64(rotatord.ProofWindow/time.Second) {
			delete(c.lastProof, id) // cannot collide any more
		}
	}
	c.lastProof[id] = unix
	c.mu.Unlock()
	var payload []byte
	if body != nil {
		var err error
		if payload, err = body(unix); err != nil {
			return nil, err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err := SignRequest(req, k.kp, time.Unix(unix, 0)); err != nil {
		return nil, err
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, err
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// Refresh asks rotatord for newer creds once (GET /v1/agents/{name}/creds
// with a proof of possession of the key in use). When there are some, it
// moves the connection over to them (when rotatord's answer carries
// Rotatord-Reconnect-After, that many seconds later: it paces a fleet's
// return) and reports true. Errors: *APIError
// when rotatord refuses (403 for a revoked key), ErrRefused when it offers
// a key the servers refused a moment ago, or a network failure.
func (c *Client) Refresh(ctx context.Context) (bool, error) {
	u, err := c.credsURL()
	if err != nil {
		return false, err
	}
	resp, err := c.do(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, fmt.Errorf("fetch creds: %w", err)
	}
	switch resp.status {
	case http.StatusNotModified:
		return false, nil
	case http.StatusOK:
	default:
		return false, fmt.Errorf("fetch creds: %w", apiError(resp.status, resp.header, resp.body))
	}
	switched, err := c.use(resp.body, reconnectAfter(resp.header))
	if err != nil {
		return false, fmt.Errorf("fetched creds: %w", err)
	}
	return switched, nil
}

// reconnectAfter is the wait rotatord asks for before reconnecting with the
// creds it answered (rotatord.ReconnectAfterHeader); 0 when absent or not a
// number of seconds.
func reconnectAfter(h http.Header) time.Duration {
	v := h.Get(rotatord.ReconnectAfterHeader)
	if v == "" {
		return 0
	}
	sec, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(sec) || sec <= 0 {
		return 0
	}
	return time.Duration(min(sec, maxPacedWait.Seconds()) * float64(time.Second))
}

// RotateOwnKey rotates to a key pair the agent generates itself: it sends
// only the new public key to rotatord (POST /v1/agents/{name}/creds, with
// a proof of possession of the key in use and the new key's key proof),
// builds a creds file from the JWT rotatord issues for it and the local
// seed, and switches to it (Use). The seed never leaves the process. After
// a failure whose answer was lost (a network error, a 5xx) the key pair is
// kept: the next RotateOwnKey sends the same key again, and rotatord answers
// again for the rotation it started, and a JWT for it delivered through
// Vault (WatchVault) can still be used. Errors: *APIError when rotatord
// refuses (409 while another rotation is in flight, 429 within
// ROTATORD_AGENT_ROTATE_MIN_INTERVAL of the last one, with RetryAfter).
func (c *Client) RotateOwnKey(ctx context.Context) error {
	c.mu.Lock()
	kp := c.pending
	c.mu.Unlock()
	if kp == nil {
		var err error
		if kp, err = jwtissue.NewKey(nkeys.PrefixByteUser); err != nil {
			return fmt.Errorf("create key pair: %w", err)
		}
		c.mu.Lock()
		c.pending = kp
		c.mu.Unlock()
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return fmt.Errorf("create key pair: %w", err)
	}
	forget := func() {
		c.mu.Lock()
		if c.pending == kp {
			c.pending = nil
		}
		c.mu.Unlock()
	}

	u, err := c.credsURL()
	if err != nil {
		forget()
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, u, func(unix int64) ([]byte, error) {
		return OwnKeyBody(kp, c.cfg.Name, unix)
	})
	if err != nil {
		return fmt.Errorf("send own key %s: %w", pub, err)
	}
	if resp.status != http.StatusAccepted {
		if resp.status < 500 {
			forget() // refused: no JWT will come for it
		}
		return fmt.Errorf("send own key %s: %w", pub, apiError(resp.status, resp.header, resp.body))
	}
	var out struct {
		ID        string    `json:"id"`
		State     string    `json:"state"`
		PublicKey string    `json:"public_key"`
		JWT       string    `json:"jwt"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(resp.body, &out); err != nil {
		return fmt.Errorf("send own key %s: decode answer: %w", pub, err)
	}
	file, err := ownCreds(kp, out.JWT)
	if err != nil {
		return fmt.Errorf("send own key %s: %w", pub, err)
	}
	if out.PublicKey != pub {
		return fmt.Errorf("send own key %s: rotatord answered for key %s", pub, out.PublicKey)
	}
	forget()
	c.cfg.Log.Info("rotatord issued a jwt for the agent's own key",
		"agent", c.cfg.Name, "key", pub, "rotation", out.ID, "expires_at", out.ExpiresAt)
	return c.Use(file)
}

// ownCreds makes a creds file from a JWT issued for kp's public key.
func ownCreds(kp nkeys.KeyPair, token string) ([]byte, error) {
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return nil, fmt.Errorf("decode issued jwt: %w", err)
	}
	if uc.Subject != pub {
		return nil, fmt.Errorf("issued jwt is for key %s, not %s", uc.Subject, pub)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	// The JWT was just decoded and is for kp: jwt.FormatUserConfig would
	// decode and verify it again and derive kp's public key once more.
	return jwtissue.Creds(token, seed)
}

// Run calls Refresh every interval until ctx ends. Failures are logged and
// retried at the next interval. When the servers refuse the key in use
// (rotatord replaced it, or removed the signing key that signed it), Run
// refreshes at once, and while the servers refuse every key the client
// holds it refreshes again quickly (from 250 ms, doubling, at most the
// interval or 30 s) until new creds arrive. After the servers drop the
// connection, the first reconnect attempt waits for a refresh (lookFirst).
func (c *Client) Run(ctx context.Context, interval time.Duration) {
	c.poll(ctx, interval, func() {
		if _, err := c.Refresh(ctx); err != nil && ctx.Err() == nil {
			c.cfg.Log.Warn("refresh creds", "agent", c.cfg.Name, "err", err)
		}
	})
}

// SignRequest adds rotatord's proof of possession of kp to req (version 2):
// a signature over the method, the escaped path with its query, the time
// and the SHA-256 of the body. The body is read through req.GetBody when
// set (as http.NewRequest sets it), or read and put back. rotatord accepts
// the proof within ±60 s of its clock, once.
func SignRequest(req *http.Request, kp nkeys.KeyPair, now time.Time) error {
	var body []byte
	switch {
	case req.Body == nil || req.Body == http.NoBody:
	case req.GetBody != nil:
		rc, err := req.GetBody()
		if err != nil {
			return fmt.Errorf("sign request: read body: %w", err)
		}
		body, err = io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("sign request: read body: %w", err)
		}
	default:
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return fmt.Errorf("sign request: read body: %w", err)
		}
		body = b
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	target := req.URL.EscapedPath()
	if req.URL.RawQuery != "" {
		target += "?" + req.URL.RawQuery
	}
	h, err := Proof(kp, req.Method, target, body, now)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", h)
	return nil
}

// Proof returns the Authorization header value that proves possession of
// kp for a request: method, target (the escaped path, with "?query" when
// there is one), body (nil for none) and the time now (whole seconds).
func Proof(kp nkeys.KeyPair, method, target string, body []byte, now time.Time) (string, error) {
	pub, err := kp.PublicKey()
	if err != nil {
		return "", fmt.Errorf("sign request: %w", err)
	}
	unix := now.Unix()
	sig, err := kp.Sign(rotatord.ProofMessage(method, target, unix, rotatord.BodyHash(body)))
	if err != nil {
		return "", fmt.Errorf("sign request: %w", err)
	}
	return rotatord.FormatProof(pub, unix, sig), nil
}

// KeyProof returns the key proof of an own-key POST: newKey's signature
// (base64url) over rotatord-v2-key\n<agent>\n<new public key>\n<unix>, where
// unix is the time of the request's proof.
func KeyProof(newKey nkeys.KeyPair, agent string, unix int64) (string, error) {
	pub, err := newKey.PublicKey()
	if err != nil {
		return "", fmt.Errorf("key proof: %w", err)
	}
	sig, err := newKey.Sign(rotatord.KeyProofMessage(agent, pub, unix))
	if err != nil {
		return "", fmt.Errorf("key proof: %w", err)
	}
	return rotatord.EncodeSignature(sig), nil
}

// OwnKeyBody returns the JSON body of an own-key POST for newKey,
// {"public_key","key_proof"}, for a request whose proof is made at unix.
func OwnKeyBody(newKey nkeys.KeyPair, agent string, unix int64) ([]byte, error) {
	pub, err := newKey.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("own key body: %w", err)
	}
	proof, err := KeyProof(newKey, agent, unix)
	if err != nil {
		return nil, err
	}
	return json.Marshal(struct {
		PublicKey string `json:"public_key"`
		KeyProof  string `json:"key_proof"`
	}{pub, proof})
}
