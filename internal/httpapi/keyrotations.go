package httpapi

import (
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rotatord/rotatord"
)

type keyServerJSON struct {
	Name      string    `json:"name"`
	ID        string    `json:"id"`
	TrustsNew bool      `json:"trusts_new_key"`
	TrustsOld bool      `json:"trusts_old_key"`
	UpToDate  bool      `json:"up_to_date"`
	LastSeen  time.Time `json:"last_seen"`
}

// keyRotationJSON is a KeyRotation of any kind: the operator's (with its
// servers) or an account's or role's (with its account, fleet rotation and
// stragglers; null or empty for the operator's).
type keyRotationJSON struct {
	ID         string          `json:"id"`
	Kind       string          `json:"kind"`
	State      string          `json:"state"`
	OldKeys    []string        `json:"old_keys"`
	NewKey     string          `json:"new_key"`
	Servers    []keyServerJSON `json:"servers"`
	WaitingFor []string        `json:"waiting_for"`
	Waiting    string          `json:"waiting"`
	Actor      string          `json:"actor"`
	CreatedAt  time.Time       `json:"created_at"`
	UpdatedAt  time.Time       `json:"updated_at"`
	StepAt     time.Time       `json:"step_started_at"`
	FinishedAt *time.Time      `json:"finished_at"`

	Account         *string  `json:"account"`
	Role            *string  `json:"role"`
	Mode            *string  `json:"mode"`
	Trigger         string   `json:"trigger"`
	FleetRotation   *string  `json:"fleet_rotation"`
	Stragglers      int      `json:"stragglers"`
	StragglerAgents []string `json:"straggler_agents"`
	Reason          string   `json:"reason"`
}

func toKeyRotationJSON(k *rotatord.KeyRotation) keyRotationJSON {
	out := keyRotationJSON{ID: k.ID, Kind: k.Kind, State: k.State, OldKeys: k.OldKeys, NewKey: k.NewKey,
		Servers: []keyServerJSON{}, WaitingFor: []string{}, Waiting: k.Waiting, Actor: k.Actor,
		CreatedAt: k.CreatedAt.UTC(), UpdatedAt: k.UpdatedAt.UTC(), StepAt: k.StepAt.UTC(), FinishedAt: k.FinishedAt,
		Account: optString(k.Account), Role: optString(k.Role), Trigger: k.Trigger, FleetRotation: optString(k.FleetRotation),
		Stragglers: k.Stragglers, StragglerAgents: nonNilStrings(k.StragglerAgents), Reason: k.Reason}
	if k.Kind != rotatord.KeyRotationOperator {
		out.Mode = optString(k.Mode)
	}
	if out.Trigger == "" {
		out.Trigger = rotatord.TriggerManual
	}
	if out.OldKeys == nil {
		out.OldKeys = []string{}
	}
	for _, s := range k.Servers {
		ready := s.Ready(k.State)
		out.Servers = append(out.Servers, keyServerJSON{Name: s.Name, ID: s.ID, TrustsNew: s.TrustsNew, TrustsOld: s.TrustsOld,
			UpToDate: ready, LastSeen: s.LastSeen.UTC()})
		if !ready && k.InFlight() {
			out.WaitingFor = append(out.WaitingFor, s.Name)
		}
	}
	return out
}

// rotateOperatorKey serves POST /v1/operator/signing-keys/rotate. The body
// is optional: an empty JSON object at most.
func (s *Server) rotateOperatorKey(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		var in struct{}
		if err := s.decode(w, r, &in); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	kr, err := s.svc.StartOperatorKeyRotation(r.Context(), actor(r))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/key-rotations/"+kr.ID)
	writeJSON(w, http.StatusAccepted, map[string]string{"id": kr.ID, "state": kr.State})
}

func (s *Server) getKeyRotation(w http.ResponseWriter, r *http.Request) {
	kr, err := s.svc.KeyRotation(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toKeyRotationJSON(kr))
}
