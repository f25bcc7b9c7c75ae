package httpapi

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/rotate"
)

type rotationJSONOut struct {
	ID            string     `json:"id"`
	Agent         string     `json:"agent"`
	Account       string     `json:"account"`
	State         string     `json:"state"`
	Trigger       string     `json:"trigger"`
	OldPublicKey  *string    `json:"old_public_key"`
	NewPublicKey  string     `json:"new_public_key"`
	Deadline      *time.Time `json:"deadline"`
	DistributedAt *time.Time `json:"distributed_at"`
	ConfirmedAt   *time.Time `json:"confirmed_at"`
	ConfirmedBy   string     `json:"confirmed_by"`
	Reason        string     `json:"reason"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	FinishedAt    *time.Time `json:"finished_at"`
}

func toRotationJSON(r *rotatord.Rotation) rotationJSONOut {
	out := rotationJSONOut{ID: r.ID, Agent: r.Agent, Account: r.Account, State: r.State, Trigger: r.Trigger,
		NewPublicKey: r.NewKey, Deadline: r.Deadline, DistributedAt: r.DistributedAt, ConfirmedAt: r.ConfirmedAt,
		ConfirmedBy: r.ConfirmedBy, Reason: r.Reason, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, FinishedAt: r.FinishedAt}
	if r.OldKey != "" {
		old := r.OldKey
		out.OldPublicKey = &old
	}
	return out
}

func (s *Server) rotateAgent(w http.ResponseWriter, r *http.Request) {
	rot, err := s.svc.StartRotation(r.Context(), actor(r), chi.URLParam(r, "name"), rotatord.TriggerManual)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/rotations/"+rot.ID)
	writeJSON(w, http.StatusAccepted, map[string]string{"id": rot.ID, "state": rot.State})
}

func (s *Server) getRotation(w http.ResponseWriter, r *http.Request) {
	rot, err := s.svc.Rotation(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toRotationJSON(rot))
}

// listRotations serves GET /v1/rotations (the fleet) and
// GET /v1/agents/{name}/rotations (one agent).
func (s *Server) listRotations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	f := rotatord.RotationFilter{Agent: chi.URLParam(r, "name"), After: q.Get("after"), Limit: limit}
	if f.Agent == "" {
		f.Account, f.State = q.Get("account"), q.Get("state")
	}
	rots, err := s.svc.Rotations(r.Context(), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]rotationJSONOut, 0, len(rots))
	for _, rot := range rots {
		out = append(out, toRotationJSON(rot))
	}
	body := map[string]any{"rotations": out}
	if len(rots) == limit {
		body["next"] = rots[len(rots)-1].ID
	}
	writeJSON(w, http.StatusOK, body)
}

// agentCreds serves an agent that proves possession of its current key.
func (s *Server) agentCreds(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.Header.Get("Authorization"), rotatord.ProofScheme+" ") {
		s.writeError(w, r, rotatord.Errorf(rotatord.EUNAUTHORIZED, "missing NKey proof of possession"))
		return
	}
	creds, err := s.svc.AgentCreds(r.Context(), chi.URLParam(r, "name"), rotate.Proof{
		Header: r.Header.Get("Authorization"), Method: r.Method, Path: r.URL.EscapedPath(), Source: r.RemoteAddr,
	})
	if errors.Is(err, rotatord.ErrNotModified) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(creds) //nolint:errcheck // the agent went away; it will poll again
}

// agentKey takes a public key the agent generated and starts a rotation from it.
func (s *Server) agentKey(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.Header.Get("Authorization"), rotatord.ProofScheme+" ") {
		s.writeError(w, r, rotatord.Errorf(rotatord.EUNAUTHORIZED, "missing NKey proof of possession"))
		return
	}
	var in struct {
		PublicKey string `json:"public_key"`
	}
	if err := s.decode(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	res, err := s.svc.AgentKey(r.Context(), chi.URLParam(r, "name"), in.PublicKey, rotate.Proof{
		Header: r.Header.Get("Authorization"), Method: r.Method, Path: r.URL.EscapedPath(), Source: r.RemoteAddr,
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/rotations/"+res.Rotation.ID)
	writeJSON(w, http.StatusAccepted, map[string]any{
		"id": res.Rotation.ID, "state": res.Rotation.State, "public_key": res.Credential.PublicKey,
		"jwt": res.Credential.JWT, "expires_at": res.Credential.ExpiresAt.UTC(),
	})
}
