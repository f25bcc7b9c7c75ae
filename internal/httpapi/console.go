package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rotatord/rotatord"
)

// The API the fleet console reads besides the agents, rotations, accounts
// and audit endpoints: who the token is, alerts, an account's revocation
// entries, an agent's keys (and the audit verification, auditverify.go).

// securityHeaders are set on every /v1 answer: none of them is a page, and
// none may be framed or sniffed into one.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

// accountOut is an account's JSON with the size guard of this server.
func (s *Server) accountOut(a *rotatord.Account) accountJSON {
	out := toAccountJSON(a)
	out.JWTMaxBytes = s.maxJWT
	return out
}

// whoami serves GET /v1/whoami: the token's name and scope, so that a
// client (the console) can show what the token may do.
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	t, ok := r.Context().Value(tokenKey).(*rotatord.Token)
	if !ok {
		s.writeError(w, r, rotatord.Errorf(rotatord.EUNAUTHORIZED, "missing bearer token"))
		return
	}
	var expires *time.Time
	if t.ExpiresAt != nil {
		e := t.ExpiresAt.UTC()
		expires = &e
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": t.Name, "scope": t.Scope, "created_at": t.CreatedAt.UTC(), "expires_at": expires})
}

type lastRotationJSON struct {
	ID         string     `json:"id"`
	State      string     `json:"state"`
	Trigger    string     `json:"trigger"`
	Reason     string     `json:"reason"`
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

func toLastRotationJSON(r *rotatord.Rotation) *lastRotationJSON {
	if r == nil {
		return nil
	}
	return &lastRotationJSON{ID: r.ID, State: r.State, Trigger: r.Trigger, Reason: r.Reason,
		CreatedAt: r.CreatedAt.UTC(), FinishedAt: utcPtr(r.FinishedAt)}
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

type alertJSON struct {
	ID        int64     `json:"id"`
	Kind      string    `json:"kind"`
	Severity  string    `json:"severity"`
	Account   string    `json:"account"`
	Agent     string    `json:"agent"`
	Rotation  *string   `json:"rotation"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
}

// listAlerts serves GET /v1/alerts: alerts newest first, a page at a time.
func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	f := rotatord.AlertFilter{Kind: q.Get("kind"), Severity: q.Get("severity"), Account: q.Get("account"),
		Agent: q.Get("agent"), Limit: limit}
	if v := q.Get("after"); v != "" {
		if f.BeforeID, err = strconv.ParseInt(v, 10, 64); err != nil || f.BeforeID < 1 {
			s.writeError(w, r, rotatord.Errorf(rotatord.EINVALID, "after %.20q is not an alert id", v))
			return
		}
	}
	alerts, err := s.svc.Alerts(r.Context(), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]alertJSON, 0, len(alerts))
	for _, a := range alerts {
		j := alertJSON{ID: a.ID, Kind: a.Kind, Severity: a.Severity, Account: a.Account, Agent: a.Agent,
			Reason: a.Reason, CreatedAt: a.CreatedAt.UTC()}
		if a.Rotation != "" {
			rot := a.Rotation
			j.Rotation = &rot
		}
		out = append(out, j)
	}
	body := map[string]any{"alerts": out}
	if len(alerts) == limit {
		body["next"] = strconv.FormatInt(alerts[len(alerts)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, body)
}

type revocationJSON struct {
	PublicKey    string     `json:"public_key"`
	Agent        string     `json:"agent"`
	Reason       string     `json:"reason"`
	RevokedAt    time.Time  `json:"revoked_at"`
	ExpiresAt    time.Time  `json:"expires_at"`
	JWTIssuedAt  *time.Time `json:"jwt_issued_at"`
	AllKeysEntry bool       `json:"all_keys"`
}

// listRevocations serves GET /v1/accounts/{name}/revocations.
func (s *Server) listRevocations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	revs, err := s.svc.AccountRevocations(r.Context(), chi.URLParam(r, "name"), rotatord.PageFilter{After: q.Get("after"), Limit: limit})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]revocationJSON, 0, len(revs))
	for _, rv := range revs {
		j := revocationJSON{PublicKey: rv.PublicKey, Agent: rv.Agent, Reason: rv.Reason,
			RevokedAt: rv.RevokedAt.UTC(), ExpiresAt: rv.ExpiresAt.UTC(), AllKeysEntry: rv.PublicKey == "*"}
		if !rv.IssuedAt.IsZero() {
			j.JWTIssuedAt = utcPtr(&rv.IssuedAt)
		}
		out = append(out, j)
	}
	body := map[string]any{"revocations": out}
	if len(revs) == limit {
		body["next"] = revs[len(revs)-1].PublicKey
	}
	writeJSON(w, http.StatusOK, body)
}

type keyJSON struct {
	PublicKey string     `json:"public_key"`
	JWTID     string     `json:"jwt_id"`
	State     string     `json:"state"`
	IssuedAt  time.Time  `json:"issued_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	RevokedAt *time.Time `json:"revoked_at"`
}

// listAgentKeys serves GET /v1/agents/{name}/keys: the agent's user keys,
// newest first, never a seed.
func (s *Server) listAgentKeys(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	keys, err := s.svc.AgentKeys(r.Context(), chi.URLParam(r, "name"), rotatord.PageFilter{After: q.Get("after"), Limit: limit})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]keyJSON, 0, len(keys))
	for _, k := range keys {
		out = append(out, keyJSON{PublicKey: k.PublicKey, JWTID: k.JWTID, State: k.State, IssuedAt: k.IssuedAt.UTC(),
			ExpiresAt: k.ExpiresAt.UTC(), RevokedAt: utcPtr(k.RevokedAt)})
	}
	body := map[string]any{"keys": out}
	if len(keys) == limit {
		body["next"] = keys[len(keys)-1].PublicKey
	}
	writeJSON(w, http.StatusOK, body)
}

// redirectTo answers 302 to path (the console's /ui/ from / and /ui).
func redirectTo(path string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Location", path)
		w.WriteHeader(http.StatusFound)
	}
}
