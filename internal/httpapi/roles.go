package httpapi

import (
	"net/http"
	"net/url"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/rotate"
)

// Roles: scoped signing keys of an account, under /v1/accounts/{name}/roles.

type roleJSON struct {
	Name        string               `json:"name"`
	Account     string               `json:"account"`
	Description string               `json:"description"`
	SigningKey  string               `json:"signing_key"`
	Permissions rotatord.Permissions `json:"permissions"`
	claimsJSON
	Agents    int       `json:"agents"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// ScopeChanged and Notice are only in the answer to a PATCH.
	ScopeChanged *bool  `json:"scope_changed,omitempty"`
	Notice       string `json:"notice,omitempty"`
}

func toRoleJSON(r *rotatord.Role) roleJSON {
	return roleJSON{
		Name: r.Name, Account: r.Account, Description: r.Description, SigningKey: r.SigningKey(),
		Permissions: r.Template.Permissions.Normalize(), claimsJSON: toClaimsJSON(r.Template),
		Agents: r.Agents, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}

// reconnectNotice is the answer's word on what a new scope does to the
// role's agents.
const reconnectNotice = "the role's scope changed: every nats-server closes the connections of the role's agents " +
	"when it applies the new account JWT, and they reconnect at once with the same credentials, held to the new scope"

func rolePath(account, role string) string {
	return "/v1/accounts/" + url.PathEscape(account) + "/roles/" + url.PathEscape(role)
}

func (s *Server) createRole(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name        string               `json:"name"`
		Description string               `json:"description"`
		Permissions rotatord.Permissions `json:"permissions"`
		claimsInput
	}
	if err := s.decode(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	account := chi.URLParam(r, "name")
	role, err := s.svc.CreateRole(r.Context(), actor(r), account, rotate.RoleInput{
		Name: in.Name, Description: in.Description, Limits: in.Limits,
		Template: rotatord.UserTemplate{Permissions: in.Permissions, Src: in.Src, Times: in.Times,
			TimesLocation: in.TimesLocation, ConnectionTypes: in.ConnectionTypes},
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", rolePath(role.Account, role.Name))
	writeJSON(w, http.StatusCreated, toRoleJSON(role))
}

func (s *Server) listRoles(w http.ResponseWriter, r *http.Request) {
	roles, err := s.svc.Roles(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]roleJSON, 0, len(roles))
	for _, role := range roles {
		out = append(out, toRoleJSON(role))
	}
	writeJSON(w, http.StatusOK, map[string]any{"roles": out})
}

func (s *Server) getRole(w http.ResponseWriter, r *http.Request) {
	role, err := s.svc.Role(r.Context(), chi.URLParam(r, "name"), chi.URLParam(r, "role"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toRoleJSON(role))
}

func (s *Server) updateRole(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Description *string               `json:"description"`
		Permissions *rotatord.Permissions `json:"permissions"`
		claimsPatch
	}
	if err := s.decode(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	res, err := s.svc.UpdateRole(r.Context(), actor(r), chi.URLParam(r, "name"), chi.URLParam(r, "role"), rotate.RolePatch{
		Description: in.Description,
		Template: rotatord.UserTemplatePatch{Permissions: in.Permissions, Limits: in.Limits, Src: in.Src, Times: in.Times,
			TimesLocation: in.TimesLocation, ConnectionTypes: in.ConnectionTypes},
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := toRoleJSON(res.Role)
	out.ScopeChanged = &res.ScopeChanged
	if res.ScopeChanged {
		out.Notice = reconnectNotice
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteRole(w http.ResponseWriter, r *http.Request) {
	if err := s.svc.DeleteRole(r.Context(), actor(r), chi.URLParam(r, "name"), chi.URLParam(r, "role")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
