package httpapi

// The agent API: GET|POST /v1/agents/{name}/creds, authenticated by a
// version 2 proof of possession (rotatord.ProofMessage). Everything that
// needs no database is checked first (name, header, time, signature, the
// new key's proof), so garbage costs no database work. Refusals are counted
// per source address and agent name and written to the audit trail in
// aggregate (internal/refusals), never a row or a log line per request.
//
// Rate limits (token buckets, 429 with Retry-After): refused requests per
// source address (AgentLimits.FailRate); authenticated requests per agent
// (AgentLimits.Rate). An authenticated agent is never limited by its
// address, so a fleet behind one NAT address keeps working while a broken
// or hostile peer on that address is refused.

import (
	"errors"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/ratelimit"
	"github.com/rotatord/rotatord/internal/refusals"
	"github.com/rotatord/rotatord/internal/rotate"
)

// Default agent API limits.
var (
	DefaultAgentFailRate = ratelimit.MustParseRate("10/s:20")
	DefaultAgentRate     = ratelimit.MustParseRate("5/s:10")
)

// AgentLimits configures the agent API's rate limits; zero values take the
// defaults.
type AgentLimits struct {
	// FailRate limits refused requests per source address: past it, what
	// would be refused is answered 429 instead.
	FailRate ratelimit.Rate
	// Rate limits authenticated requests per agent.
	Rate ratelimit.Rate
	// MaxKeys bounds the addresses, agents, keys and proofs remembered
	// (each); default 100,000.
	MaxKeys int
	// MaxInFlight bounds the agent requests doing database work at once
	// (agentload.go); DefaultAgentMaxInFlight when 0. QueueWait bounds how
	// long one waits for its turn; DefaultAgentQueueWait when 0.
	MaxInFlight int
	QueueWait   time.Duration
	// ReconnectRate paces the reconnects of agents handed new creds
	// (reconnectpace.go); DefaultAgentReconnectRate when not valid, none
	// with NoReconnectPacing.
	ReconnectRate     ratelimit.Rate
	NoReconnectPacing bool
}

const (
	// refusedKeyTTL is how long a key the database refused (unknown,
	// another agent's, revoked, expired) is refused from memory: a peer
	// that keeps presenting one costs a database read per TTL.
	refusedKeyTTL = time.Minute
	// usedProofTTL is how long a used proof is refused from memory; the
	// database refuses it after that (and ProofWindow bounds it anyway).
	usedProofTTL = 2 * rotatord.ProofWindow
)

// agentAPI is the agent API's state: buckets, memos and the counter.
type agentAPI struct {
	fails   *ratelimit.Limiter
	agents  *ratelimit.Limiter
	refused *refusals.Counter
	keys    *refusals.Memo[error]
	used    *refusals.Memo[struct{}]
	slots   agentSlots
	// reconnects paces the reconnects of agents given new creds.
	reconnects reconnectPacer
}

func newAgentAPI(l AgentLimits, counter *refusals.Counter) *agentAPI {
	if !l.FailRate.Valid() {
		l.FailRate = DefaultAgentFailRate
	}
	if !l.Rate.Valid() {
		l.Rate = DefaultAgentRate
	}
	if l.MaxKeys <= 0 {
		l.MaxKeys = ratelimit.DefaultMaxKeys
	}
	return &agentAPI{
		fails:   ratelimit.New(l.FailRate, l.MaxKeys),
		agents:  ratelimit.New(l.Rate, l.MaxKeys),
		refused: counter,
		keys:    refusals.NewMemo[error](refusedKeyTTL, l.MaxKeys),
		used:    refusals.NewMemo[struct{}](usedProofTTL, l.MaxKeys),
		slots:   newAgentSlots(l.MaxInFlight, l.QueueWait),

		reconnects: newReconnectPacer(l.ReconnectRate, l.NoReconnectPacing),
	}
}

// agentRequest is an agent request whose proof passed the checks that need
// no database.
type agentRequest struct {
	proof  *rotate.AgentProof
	body   []byte
	source string
}

// sourceOf is the client's address without the port.
func sourceOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// checkAgent reads the body and checks the proof without the database, and
// what this replica remembers: a proof it saw used, a key the database
// refused, an agent over its rate. It answers the request itself and
// returns nil when it is refused.
func (s *Server) checkAgent(w http.ResponseWriter, r *http.Request) *agentRequest {
	name, source := chi.URLParam(r, "name"), sourceOf(r)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		e := rotatord.Errorf(rotatord.EINVALID, "cannot read the body")
		if errors.As(err, &tooBig) {
			e = rotatord.Errorf(rotatord.ETOOLARGE, "body is larger than %d bytes", s.maxBody)
		}
		s.refuseAgent(w, r, name, "", &rotate.Refused{Reason: refusals.ReasonBadBody, Err: e})
		return nil
	}
	target := r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	now := s.now()
	p, err := rotate.CheckProof(name, rotate.Proof{Header: r.Header.Get("Authorization"), Method: r.Method, Target: target,
		Body: body, Source: source}, now)
	if err != nil {
		s.refuseAgent(w, r, name, "", err)
		return nil
	}
	if _, used := s.agent.used.Get(string(p.Sig), now); used {
		s.refuseAgent(w, r, name, p.PublicKey, &rotate.Refused{Reason: refusals.ReasonReplay,
			Err: rotatord.Errorf(rotatord.EUNAUTHORIZED, "proof already used (replay)")})
		return nil
	}
	if err, ok := s.agent.keys.Get(name+" "+p.PublicKey, now); ok {
		s.refuseAgent(w, r, name, p.PublicKey, err)
		return nil
	}
	// Peek only: a peer that cannot prove it is the agent must not use up
	// the agent's bucket.
	if ok, wait := s.agent.agents.Check(name, now); !ok {
		s.quiet(r)
		s.agent.refused.Add(refusals.Refusal{Source: source, Agent: name, Key: p.PublicKey, Reason: refusals.ReasonRateLimited})
		s.writeError(w, r, rotatord.TooManyRequests(wait, "too many requests for agent %s: try again in %s", name, ceilSeconds(wait)))
		return nil
	}
	return &agentRequest{proof: p, body: body, source: source}
}

// finishAgent handles the outcome of the database's part: a refusal is
// counted (and remembered when it will not change); anything else was an
// authenticated request, which takes a token of the agent's bucket. It
// answers errors itself and reports whether the caller goes on (err is nil
// or ENOTMODIFIED).
func (s *Server) finishAgent(w http.ResponseWriter, r *http.Request, a *agentRequest, err error) bool {
	if reason, refused := rotate.RefusalReason(err); refused {
		now := s.now()
		switch reason {
		case refusals.ReasonForeignKey, refusals.ReasonRevokedKey, refusals.ReasonExpired:
			s.agent.keys.Put(a.proof.Agent+" "+a.proof.PublicKey, err, now)
		case refusals.ReasonReplay:
			s.agent.used.Put(string(a.proof.Sig), struct{}{}, now)
		}
		s.refuseAgent(w, r, a.proof.Agent, a.proof.PublicKey, err)
		return false
	}
	now := s.now()
	s.agent.agents.Allow(a.proof.Agent, now)
	if info, ok := r.Context().Value(infoKey).(*requestInfo); ok {
		info.actor = "agent:" + a.proof.Agent
	}
	if err == nil || errors.Is(err, rotatord.ErrNotModified) {
		s.agent.used.Put(string(a.proof.Sig), struct{}{}, now)
	}
	if err != nil && !errors.Is(err, rotatord.ErrNotModified) {
		s.writeError(w, r, err)
		return false
	}
	return true
}

// refuseAgent answers a refused request: counted, not logged one by one,
// and 429 once the source address used up its bucket of refusals.
func (s *Server) refuseAgent(w http.ResponseWriter, r *http.Request, name, key string, err error) {
	s.quiet(r)
	source := sourceOf(r)
	reason, _ := rotate.RefusalReason(err)
	if ok, wait := s.agent.fails.Allow(source, s.now()); !ok {
		s.agent.refused.Add(refusals.Refusal{Source: source, Agent: name, Key: key, Reason: refusals.ReasonRateLimited})
		s.writeError(w, r, rotatord.TooManyRequests(wait, "too many refused requests from this address: try again in %s", ceilSeconds(wait)))
		return
	}
	s.agent.refused.Add(refusals.Refusal{Source: source, Agent: name, Key: key, Reason: reason})
	s.writeError(w, r, err)
}

// quiet keeps the request out of the request log: refusals are logged in
// aggregate.
func (s *Server) quiet(r *http.Request) {
	if info, ok := r.Context().Value(infoKey).(*requestInfo); ok {
		info.quiet = true
	}
}

// agentCreds serves an agent that proves possession of its current key.
func (s *Server) agentCreds(w http.ResponseWriter, r *http.Request) {
	a := s.checkAgent(w, r)
	if a == nil {
		return
	}
	s.withSlot(w, r, func() {
		creds, err := s.svc.AgentCreds(r.Context(), a.proof)
		if !s.finishAgent(w, r, a, err) {
			return
		}
		if errors.Is(err, rotatord.ErrNotModified) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		s.setReconnectAfter(w)
		w.WriteHeader(http.StatusOK)
		w.Write(creds) //nolint:errcheck // the agent went away; it will poll again
	})
}

// agentKeyRequest is the body of an own-key POST.
type agentKeyRequest struct {
	PublicKey string `json:"public_key"`
	KeyProof  string `json:"key_proof"`
}

// agentKey takes a public key the agent generated and starts a rotation
// from it (or answers again for the one in flight).
func (s *Server) agentKey(w http.ResponseWriter, r *http.Request) {
	a := s.checkAgent(w, r)
	if a == nil {
		return
	}
	var in agentKeyRequest
	if err := decodeBody(r, a.body, s.maxBody, &in); err != nil {
		s.refuseAgent(w, r, a.proof.Agent, a.proof.PublicKey, &rotate.Refused{Reason: refusals.ReasonBadBody, Err: err})
		return
	}
	if err := rotate.CheckKeyProof(a.proof, in.PublicKey, in.KeyProof); err != nil {
		s.refuseAgent(w, r, a.proof.Agent, a.proof.PublicKey, err)
		return
	}
	s.withSlot(w, r, func() {
		res, err := s.svc.AgentKey(r.Context(), a.proof, in.PublicKey)
		if !s.finishAgent(w, r, a, err) {
			return
		}
		w.Header().Set("Location", "/v1/rotations/"+res.Rotation.ID)
		writeJSON(w, http.StatusAccepted, map[string]any{
			"id": res.Rotation.ID, "state": res.Rotation.State, "public_key": res.Credential.PublicKey,
			"jwt": res.Credential.JWT, "expires_at": res.Credential.ExpiresAt.UTC(),
		})
	})
}

// decodeBody reads one JSON object from body, with the rules of decode.
func decodeBody(r *http.Request, body []byte, limit int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return &rotatord.Error{Code: "unsupported_media_type", Message: "Content-Type must be application/json"}
		}
	}
	return decodeJSON(body, v, limit)
}

// ceilSeconds is d in whole seconds, rounded up, at least 1: what
// Retry-After carries.
func ceilSeconds(d time.Duration) time.Duration {
	return time.Duration(retryAfterSeconds(d)) * time.Second
}

func retryAfterSeconds(d time.Duration) int64 {
	return max(1, int64(math.Ceil(d.Seconds())))
}

// setRetryAfter sets Retry-After for an error that says when to come back.
func setRetryAfter(w http.ResponseWriter, err error) {
	if d, ok := rotatord.RetryAfter(err); ok {
		w.Header().Set("Retry-After", strconv.FormatInt(retryAfterSeconds(d), 10))
	}
}

// reissueJSON is the answer of POST /v1/agents/{name}/reissue.
type reissueJSON struct {
	Agent         agentJSON `json:"agent"`
	RevokedKeys   []string  `json:"revoked_keys"`
	WasRevoked    bool      `json:"was_revoked"`
	EndedRotation *string   `json:"ended_rotation"`
	Pushed        bool      `json:"pushed"`
	Servers       int       `json:"servers"`
}

// reissueAgent re-enrols an agent with new credentials (admin).
func (s *Server) reissueAgent(w http.ResponseWriter, r *http.Request) {
	res, err := s.svc.ReissueAgent(r.Context(), actor(r), chi.URLParam(r, "name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The agent JSON carries its newest rotation (the one reissue ended).
	if err := s.svc.FillLastRotations(r.Context(), res.Agent); err != nil {
		s.writeError(w, r, err)
		return
	}
	out := reissueJSON{Agent: toAgentJSON(res.Agent), RevokedKeys: res.RevokedKeys, WasRevoked: res.WasRevoked,
		Pushed: res.Pushed, Servers: res.Servers}
	if out.RevokedKeys == nil {
		out.RevokedKeys = []string{}
	}
	if res.EndedRotation != "" {
		out.EndedRotation = &res.EndedRotation
	}
	out.Agent.Creds = string(res.Creds)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, out)
}
