package httpapi

import (
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/rotate"
)

// API tokens over REST (admin scope): list, create, revoke. A token's
// secret is in the answer that creates it and nowhere else; its hash is
// never shown.

type tokenJSON struct {
	Name       string         `json:"name"`
	Scope      rotatord.Scope `json:"scope"`
	State      string         `json:"state"`
	CreatedAt  time.Time      `json:"created_at"`
	CreatedBy  string         `json:"created_by"`
	ExpiresAt  *time.Time     `json:"expires_at"`
	LastUsedAt *time.Time     `json:"last_used_at"`
	RevokedAt  *time.Time     `json:"revoked_at"`
	// Token is the secret, only in the answer to POST /v1/tokens.
	Token string `json:"token,omitempty"`
}

func toTokenJSON(t *rotatord.Token, now time.Time) tokenJSON {
	utc := func(p *time.Time) *time.Time {
		if p == nil {
			return nil
		}
		u := p.UTC()
		return &u
	}
	return tokenJSON{Name: t.Name, Scope: t.Scope, State: t.State(now), CreatedAt: t.CreatedAt.UTC(), CreatedBy: t.CreatedBy,
		ExpiresAt: utc(t.ExpiresAt), LastUsedAt: utc(t.LastUsedAt), RevokedAt: utc(t.RevokedAt)}
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	tokens, err := s.svc.Tokens(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	now := s.svc.Now()
	out := make([]tokenJSON, 0, len(tokens))
	for _, t := range tokens {
		out = append(out, toTokenJSON(t, now))
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name    string         `json:"name"`
		Scope   rotatord.Scope `json:"scope"`
		Expires string         `json:"expires"`
	}
	if err := s.decode(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	life, err := rotate.ParseTokenLifetime(in.Expires)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	secret, t, err := s.svc.IssueToken(r.Context(), actor(r), rotate.TokenInput{Name: in.Name, Scope: in.Scope, Expires: life})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := toTokenJSON(t, s.svc.Now())
	out.Token = secret
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	if _, _, err := s.svc.RevokeToken(r.Context(), actor(r), chi.URLParam(r, "name"), rotate.RevokeOptions{}); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
