package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/rotate"
)

// Fleet-wide rotations in waves (/v1/accounts/{name}/rotate-all,
// /v1/fleet-rotations) and signing-key rotations
// (/v1/accounts/{name}/signing-keys/rotate, .../roles/{role}/rotate,
// /v1/key-rotations).

type fleetWaveJSON struct {
	Wave         int        `json:"wave"`
	Percent      int        `json:"percent"`
	Agents       int        `json:"agents"`
	Done         int        `json:"done"`
	Failed       int        `json:"failed"`
	Waiting      int        `json:"waiting"`
	InFlight     int        `json:"in_flight"`
	AuthFailures int        `json:"auth_failures"`
	Resumed      bool       `json:"resumed"`
	StartedAt    *time.Time `json:"started_at"`
	EndedAt      *time.Time `json:"ended_at"`
}

type fleetJSON struct {
	ID                string          `json:"id"`
	Account           string          `json:"account"`
	Role              *string         `json:"role"`
	State             string          `json:"state"`
	Waves             []int           `json:"waves"`
	HaltOnFailureRate float64         `json:"halt_on_failure_rate"`
	Wave              int             `json:"wave"`
	KeyRotation       *string         `json:"key_rotation"`
	Trigger           string          `json:"trigger"`
	Agents            int             `json:"agents"`
	Done              int             `json:"done"`
	Failed            int             `json:"failed"`
	Waiting           int             `json:"waiting"`
	InFlight          int             `json:"in_flight"`
	Progress          []fleetWaveJSON `json:"progress"`
	Reason            string          `json:"reason"`
	CreatedAt         time.Time       `json:"created_at"`
	UpdatedAt         time.Time       `json:"updated_at"`
	FinishedAt        *time.Time      `json:"finished_at"`
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func toFleetJSON(f *rotatord.FleetRotation) fleetJSON {
	out := fleetJSON{ID: f.ID, Account: f.Account, Role: optString(f.Role), State: f.State, Waves: f.Waves,
		HaltOnFailureRate: f.HaltOnFailureRate, Wave: f.Wave, KeyRotation: optString(f.KeyRotation), Trigger: f.Trigger,
		Progress: make([]fleetWaveJSON, 0, len(f.Progress)), Reason: f.Reason,
		CreatedAt: f.CreatedAt, UpdatedAt: f.UpdatedAt, FinishedAt: f.FinishedAt}
	resumed := map[int]bool{}
	for _, l := range f.WaveLog {
		resumed[l.Wave] = l.Resumed
	}
	for _, w := range f.Progress {
		out.Agents += w.Agents
		out.Done += w.Done
		out.Failed += w.Failed
		out.Waiting += w.Waiting
		out.InFlight += w.InFlight
		out.Progress = append(out.Progress, fleetWaveJSON{Wave: w.Wave, Percent: w.Percent, Agents: w.Agents, Done: w.Done,
			Failed: w.Failed, Waiting: w.Waiting, InFlight: w.InFlight, AuthFailures: w.AuthFailures, Resumed: resumed[w.Wave],
			StartedAt: w.StartedAt, EndedAt: w.EndedAt})
	}
	return out
}

// keyScheduleJSON is an account's key_rotation.
type keyScheduleJSON struct {
	Schedule string    `json:"schedule"`
	NextAt   time.Time `json:"next_at"`
}

func toKeyScheduleJSON(p *rotatord.KeyRotationPolicy) *keyScheduleJSON {
	if p == nil {
		return nil
	}
	return &keyScheduleJSON{Schedule: p.Schedule, NextAt: p.NextAt.UTC()}
}

// keyScheduleInput is the key_rotation of an account's POST or PATCH.
type keyScheduleInput struct {
	Schedule string `json:"schedule"`
}

// keySchedulePatch reads a PATCH's key_rotation: absent (nil), null (off:
// ""), or an object with a schedule.
func keySchedulePatch(raw json.RawMessage) (*string, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	off := ""
	if string(raw) == "null" {
		return &off, nil
	}
	var in keyScheduleInput
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return nil, rotatord.Errorf(rotatord.EINVALID, "key_rotation must be null or an object with a schedule: %s", decodeError(err, int64(len(raw))))
	}
	if in.Schedule == "" {
		return nil, rotatord.Errorf(rotatord.EINVALID, "key_rotation.schedule is empty: send \"key_rotation\": null to turn scheduled key rotations off")
	}
	return &in.Schedule, nil
}

func fleetPath(id string) string { return "/v1/fleet-rotations/" + url.PathEscape(id) }

func keyRotationPath(id string) string { return "/v1/key-rotations/" + url.PathEscape(id) }

// decodeOptional decodes a body that may be absent (then v stays as it is).
func (s *Server) decodeOptional(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	return s.decode(w, r, v)
}

func (s *Server) rotateAll(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Waves             []int    `json:"waves"`
		HaltOnFailureRate *float64 `json:"halt_on_failure_rate"`
	}
	if err := s.decodeOptional(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	f, err := s.svc.RotateAll(r.Context(), actor(r), chi.URLParam(r, "name"), rotate.FleetInput{Waves: in.Waves, HaltOnFailureRate: in.HaltOnFailureRate})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", fleetPath(f.ID))
	writeJSON(w, http.StatusAccepted, map[string]string{"id": f.ID, "state": f.State})
}

func (s *Server) getFleetRotation(w http.ResponseWriter, r *http.Request) {
	f, err := s.svc.FleetRotation(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toFleetJSON(f))
}

func (s *Server) listFleetRotations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	list, err := s.svc.FleetRotations(r.Context(), rotatord.FleetFilter{Account: q.Get("account"), After: q.Get("after"), Limit: limit})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]fleetJSON, 0, len(list))
	for _, f := range list {
		out = append(out, toFleetJSON(f))
	}
	body := map[string]any{"fleet_rotations": out}
	if len(list) == limit {
		body["next"] = list[len(list)-1].ID
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) resumeFleetRotation(w http.ResponseWriter, r *http.Request) {
	f, err := s.svc.ResumeFleetRotation(r.Context(), actor(r), chi.URLParam(r, "id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toFleetJSON(f))
}

func (s *Server) abortFleetRotation(w http.ResponseWriter, r *http.Request) {
	f, err := s.svc.AbortFleetRotation(r.Context(), actor(r), chi.URLParam(r, "id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toFleetJSON(f))
}

// rotateSigningKey serves the account's and a role's signing-key rotation.
func (s *Server) rotateSigningKey(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Mode string `json:"mode"`
	}
	if err := s.decodeOptional(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	k, err := s.svc.RotateSigningKey(r.Context(), actor(r), chi.URLParam(r, "name"),
		rotate.KeyRotationInput{Role: chi.URLParam(r, "role"), Mode: in.Mode})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", keyRotationPath(k.ID))
	writeJSON(w, http.StatusAccepted, map[string]string{"id": k.ID, "state": k.State})
}

func (s *Server) listKeyRotations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	list, err := s.svc.KeyRotations(r.Context(), rotatord.KeyRotationFilter{Account: q.Get("account"), After: q.Get("after"), Limit: limit})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]keyRotationJSON, 0, len(list))
	for _, k := range list {
		out = append(out, toKeyRotationJSON(k))
	}
	body := map[string]any{"key_rotations": out}
	if len(list) == limit {
		body["next"] = list[len(list)-1].ID
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) completeKeyRotation(w http.ResponseWriter, r *http.Request) {
	k, err := s.svc.CompleteKeyRotation(r.Context(), actor(r), chi.URLParam(r, "id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toKeyRotationJSON(k))
}

func (s *Server) abandonKeyRotation(w http.ResponseWriter, r *http.Request) {
	k, err := s.svc.AbandonKeyRotation(r.Context(), actor(r), chi.URLParam(r, "id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toKeyRotationJSON(k))
}
