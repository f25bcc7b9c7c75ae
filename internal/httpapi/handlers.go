package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/rotate"
)

func (s *Server) createAccount(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name        string                `json:"name"`
		Description string                `json:"description"`
		Limits      *rotatord.LimitsPatch `json:"limits"`
		KeyRotation *keyScheduleInput     `json:"key_rotation"`
		accountClaimsInput
	}
	if err := s.decode(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	ai := rotate.AccountInput{Name: in.Name, Description: in.Description, Limits: in.Limits,
		Claims: in.accountClaimsInput.patch()}
	if in.KeyRotation != nil {
		if in.KeyRotation.Schedule == "" {
			s.writeError(w, r, rotatord.Errorf(rotatord.EINVALID, "key_rotation.schedule is empty: leave key_rotation out for none"))
			return
		}
		ai.KeyRotationSchedule = in.KeyRotation.Schedule
	}
	acc, err := s.svc.CreateAccount(r.Context(), actor(r), ai)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/accounts/"+acc.Name)
	writeJSON(w, http.StatusCreated, s.accountOut(acc))
}

func (s *Server) listAccounts(w http.ResponseWriter, r *http.Request) {
	accs, err := s.svc.Accounts(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]accountJSON, 0, len(accs))
	for _, a := range accs {
		out = append(out, s.accountOut(a))
	}
	writeJSON(w, http.StatusOK, map[string]any{"accounts": out})
}

func (s *Server) getAccount(w http.ResponseWriter, r *http.Request) {
	acc, err := s.svc.Account(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := s.accountOut(acc)
	servers, err := s.svc.AccountServers(r.Context(), acc)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	list := toAccountServersJSON(acc, servers)
	out.Servers = &list
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) updateAccount(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Description     *string               `json:"description"`
		Limits          *rotatord.LimitsPatch `json:"limits"`
		KeepRevocations *bool                 `json:"keep_revocations"`
		KeyRotation     json.RawMessage       `json:"key_rotation"`
		accountClaimsInput
	}
	if err := s.decode(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	name := chi.URLParam(r, "name")
	patch := rotate.AccountPatch{Description: in.Description, Limits: in.Limits, KeepRevocations: in.KeepRevocations,
		Claims: in.accountClaimsInput.patch()}
	if sched, err := keySchedulePatch(in.KeyRotation); err != nil {
		s.writeError(w, r, err)
		return
	} else if sched != nil {
		patch.KeyRotationSchedule = sched
	}
	if _, err := s.svc.UpdateAccount(r.Context(), actor(r), name, patch); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.getAccount(w, r)
}

func (s *Server) deleteAccount(w http.ResponseWriter, r *http.Request) {
	if err := s.svc.DeleteAccount(r.Context(), actor(r), chi.URLParam(r, "name")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type rotationInput struct {
	Schedule *string `json:"schedule"`
	Grace    *string `json:"grace"`
}

func parseGrace(g *string) (*time.Duration, error) {
	if g == nil {
		return nil, nil
	}
	d, err := time.ParseDuration(*g)
	if err != nil {
		return nil, rotatord.Errorf(rotatord.EINVALID, "rotation.grace %q is not a duration such as 30m", *g)
	}
	return &d, nil
}

func (s *Server) createAgent(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name        string               `json:"name"`
		Account     string               `json:"account"`
		Permissions rotatord.Permissions `json:"permissions"`
		Rotation    rotationInput        `json:"rotation"`
		Delivery    rotatord.Delivery    `json:"delivery"`
		claimsInput
		Tags []string `json:"tags"`
		Role string   `json:"role"`
	}
	if err := s.decode(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	grace, err := parseGrace(in.Rotation.Grace)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ai := rotate.AgentInput{Name: in.Name, Account: in.Account, Permissions: in.Permissions, Delivery: in.Delivery,
		Limits: in.Limits, Src: in.Src, Times: in.Times, TimesLocation: in.TimesLocation, ConnectionTypes: in.ConnectionTypes,
		Tags: in.Tags, Role: in.Role}
	if in.Rotation.Schedule != nil {
		ai.Schedule = *in.Rotation.Schedule
		if ai.Schedule == "" {
			s.writeError(w, r, rotatord.Errorf(rotatord.EINVALID, "rotation.schedule is empty"))
			return
		}
	}
	if grace != nil {
		ai.Grace = *grace
		if ai.Grace == 0 {
			s.writeError(w, r, rotatord.Errorf(rotatord.EINVALID, "rotation.grace must be positive"))
			return
		}
	}
	g, creds, err := s.svc.CreateAgent(r.Context(), actor(r), ai)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := toAgentJSON(g)
	if g.Delivery == rotatord.DeliveryPoll {
		out.Creds = string(creds)
	}
	w.Header().Set("Location", "/v1/agents/"+g.Name)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, out)
}

const maxListLimit = 1000

func parseLimit(q string) (int, error) {
	if q == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(q)
	if err != nil || n < 1 || n > maxListLimit {
		return 0, rotatord.Errorf(rotatord.EINVALID, "limit %q must be a number from 1 to %d", q, maxListLimit)
	}
	return n, nil
}

func (s *Server) listAgents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	outcomes, err := rotate.ParseOutcomes(q.Get("outcome"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	agents, err := s.svc.Agents(r.Context(), rotatord.AgentFilter{Account: q.Get("account"), After: q.Get("after"), Limit: limit,
		State: q.Get("state"), Search: q.Get("search"), Outcomes: outcomes})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]agentJSON, 0, len(agents))
	for _, g := range agents {
		out = append(out, toAgentJSON(g))
	}
	body := map[string]any{"agents": out}
	if len(agents) == limit {
		body["next"] = agents[len(agents)-1].Name
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) getAgent(w http.ResponseWriter, r *http.Request) {
	g, err := s.svc.Agent(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toAgentJSON(g))
}

func (s *Server) updateAgent(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Permissions *rotatord.Permissions `json:"permissions"`
		Rotation    *rotationInput        `json:"rotation"`
		Delivery    *rotatord.Delivery    `json:"delivery"`
		claimsPatch
		Tags *[]string `json:"tags"`
		Role *string   `json:"role"`
	}
	if err := s.decode(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	p := rotate.AgentPatch{Permissions: in.Permissions, Delivery: in.Delivery, Limits: in.Limits, Src: in.Src, Times: in.Times,
		TimesLocation: in.TimesLocation, ConnectionTypes: in.ConnectionTypes, Tags: in.Tags, Role: in.Role}
	if in.Rotation != nil {
		p.Schedule = in.Rotation.Schedule
		g, err := parseGrace(in.Rotation.Grace)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		p.Grace = g
	}
	g, err := s.svc.UpdateAgent(r.Context(), actor(r), chi.URLParam(r, "name"), p)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.svc.FillLastRotations(r.Context(), g); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toAgentJSON(g))
}

func (s *Server) deleteAgent(w http.ResponseWriter, r *http.Request) {
	if err := s.svc.DeleteAgent(r.Context(), actor(r), chi.URLParam(r, "name")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) revokeAgent(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Reason string `json:"reason"`
	}
	// The body is optional: an empty one revokes without a reason.
	if r.ContentLength != 0 {
		if err := s.decode(w, r, &in); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	res, err := s.svc.RevokeAgent(r.Context(), actor(r), chi.URLParam(r, "name"), in.Reason)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	keys := res.RevokedKeys
	if keys == nil {
		keys = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"agent": res.Agent.Name, "state": res.Agent.State, "revoked_keys": keys,
		"pushed": res.Pushed, "servers": res.Servers, "servers_behind": res.ServersBehind,
	})
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	f := rotatord.AuditFilter{Agent: q.Get("agent"), Action: q.Get("action"), Limit: limit}
	switch q.Get("order") {
	case "", "asc":
	case "desc":
		f.Newest = true
	default:
		s.writeError(w, r, rotatord.Errorf(rotatord.EINVALID, "order %.20q is not asc or desc", q.Get("order")))
		return
	}
	if v := q.Get("since"); v != "" {
		if f.Since, err = time.Parse(time.RFC3339, v); err != nil {
			s.writeError(w, r, rotatord.Errorf(rotatord.EINVALID, "since %q is not an RFC 3339 time", v))
			return
		}
	}
	if v := q.Get("after"); v != "" {
		if f.AfterID, err = strconv.ParseInt(v, 10, 64); err != nil || f.AfterID < 0 {
			s.writeError(w, r, rotatord.Errorf(rotatord.EINVALID, "after %q is not an event id", v))
			return
		}
	}
	events, err := s.svc.Audit(r.Context(), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]auditJSON, 0, len(events))
	for _, e := range events {
		out = append(out, toAuditJSON(e))
	}
	body := map[string]any{"events": out}
	if len(events) == limit {
		body["next"] = strconv.FormatInt(events[len(events)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, body)
}
