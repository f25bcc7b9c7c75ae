package httpapi

import (
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rotatord/rotatord"
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
