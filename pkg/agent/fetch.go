package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
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

func apiError(status int, body []byte) *APIError {
	e := &APIError{StatusCode: status}
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

// do sends req signed with the key in use and returns the status and body.
func (c *Client) do(req *http.Request) (int, []byte, error) {
	c.mu.Lock()
	k := c.inUseLocked()
	// A proof signs the method, path and second, and Ed25519 signatures
	// are deterministic: two requests in one second would carry the same
	// proof, which rotatord refuses as a replay. Later seconds are fine
	// (rotatord accepts ±60 s).
	unix := c.cfg.Now().Unix()
	id := k.pub + " " + req.Method + " " + req.URL.EscapedPath()
	if last, ok := c.lastProof[id]; ok && unix <= last {
		unix = last + 1
	}
	if unix > c.cfg.Now().Unix()+int64(rotatord.ProofWindow/time.Second)/2 {
		c.mu.Unlock()
		return 0, nil, errors.New("too many requests to rotatord in the last seconds")
	}
	for id, last := range c.lastProof {
		if last < unix-int64(rotatord.ProofWindow/time.Second) {
			delete(c.lastProof, id) // cannot collide any more
		}
	}
	c.lastProof[id] = unix
	c.mu.Unlock()
	if err := SignRequest(req, k.kp, time.Unix(unix, 0)); err != nil {
		return 0, nil, err
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, body, nil
}

// Refresh asks rotatord for newer creds once (GET /v1/agents/{name}/creds
// with a proof of possession of the key in use). When there are some, it
// moves the connection over to them and reports true. Errors: *APIError
// when rotatord refuses (403 for a revoked key), ErrRefused when it offers
// a key the servers refused a moment ago, or a network failure.
func (c *Client) Refresh(ctx context.Context) (bool, error) {
	u, err := c.credsURL()
	if err != nil {
		return false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, fmt.Errorf("creds request: %w", err)
	}
	status, body, err := c.do(req)
	if err != nil {
		return false, fmt.Errorf("fetch creds: %w", err)
	}
	switch status {
	case http.StatusNotModified:
		return false, nil
	case http.StatusOK:
	default:
		return false, fmt.Errorf("fetch creds: %w", apiError(status, body))
	}
	switched, err := c.use(body)
	if err != nil {
		return false, fmt.Errorf("fetched creds: %w", err)
	}
	return switched, nil
}

// RotateOwnKey rotates to a key pair the agent generates itself: it sends
// only the new public key to rotatord (POST /v1/agents/{name}/creds, with
// a proof of possession of the key in use), builds a creds file from the
// JWT rotatord issues for it and the local seed, and switches to it (Use).
// The seed never leaves the process. Errors: *APIError when rotatord
// refuses (409 while a rotation is in flight); a network failure, after
// which the key pair is kept so that a JWT for it delivered through Vault
// (WatchVault) can still be used.
func (c *Client) RotateOwnKey(ctx context.Context) error {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return fmt.Errorf("create key pair: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return fmt.Errorf("create key pair: %w", err)
	}
	c.mu.Lock()
	c.pending = kp
	c.mu.Unlock()
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
	payload, err := json.Marshal(struct {
		PublicKey string `json:"public_key"`
	}{pub})
	if err != nil {
		forget()
		return fmt.Errorf("send own key: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(payload))
	if err != nil {
		forget()
		return fmt.Errorf("send own key: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	status, body, err := c.do(req)
	if err != nil {
		return fmt.Errorf("send own key %s: %w", pub, err)
	}
	if status != http.StatusAccepted {
		if status < 500 {
			forget() // refused: no JWT will come for it
		}
		return fmt.Errorf("send own key %s: %w", pub, apiError(status, body))
	}
	var out struct {
		ID        string    `json:"id"`
		State     string    `json:"state"`
		PublicKey string    `json:"public_key"`
		JWT       string    `json:"jwt"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
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
	file, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		return nil, fmt.Errorf("format creds: %w", err)
	}
	return file, nil
}

// Run calls Refresh every interval until ctx ends. Failures are logged and
// retried at the next interval.
func (c *Client) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := c.Refresh(ctx); err != nil && ctx.Err() == nil {
			c.cfg.Log.Warn("refresh creds", "agent", c.cfg.Name, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SignRequest adds rotatord's proof of possession of kp to req: a signature
// over the method, the request's escaped path and the time. rotatord
// accepts it within ±60 s of its clock, once.
func SignRequest(req *http.Request, kp nkeys.KeyPair, now time.Time) error {
	pub, err := kp.PublicKey()
	if err != nil {
		return fmt.Errorf("sign request: %w", err)
	}
	unix := now.Unix()
	sig, err := kp.Sign(rotatord.ProofMessage(req.Method, req.URL.EscapedPath(), unix))
	if err != nil {
		return fmt.Errorf("sign request: %w", err)
	}
	req.Header.Set("Authorization", rotatord.FormatProof(pub, unix, sig))
	return nil
}
