package httpapi

import (
	"strings"
	"time"

	"github.com/rotatord/rotatord"
)

// The JSON shapes of the API; api/openapi.yaml describes the same.

type accountJSON struct {
	Name        string          `json:"name"`
	PublicKey   string          `json:"public_key"`
	System      bool            `json:"system"`
	Description string          `json:"description"`
	Limits      rotatord.Limits `json:"limits"`
	SigningKeys []string        `json:"signing_keys"`
	JWTID       string          `json:"jwt_id"`
	Revocations int             `json:"revocations"`
	KeepRevs    bool            `json:"keep_revocations"`
	Agents      int             `json:"agents"`
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at"`
	accountClaimsJSON
}

func toAccountJSON(a *rotatord.Account) accountJSON {
	keys := a.SigningKeys
	if keys == nil {
		keys = []string{}
	}
	return accountJSON{
		Name: a.Name, PublicKey: a.PublicKey, System: a.System, Description: a.Description, Limits: a.Limits,
		SigningKeys: keys, JWTID: a.JWTID, Revocations: a.Revocations, KeepRevs: a.KeepRevocations, Agents: a.Agents,
		CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt, accountClaimsJSON: toAccountClaimsJSON(a.Claims),
	}
}

type rotationJSON struct {
	Schedule string `json:"schedule"`
	Grace    string `json:"grace"`
}

type credentialJSON struct {
	PublicKey string    `json:"public_key"`
	JWTID     string    `json:"jwt_id"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

type agentJSON struct {
	Name           string               `json:"name"`
	Account        string               `json:"account"`
	State          string               `json:"state"`
	Permissions    rotatord.Permissions `json:"permissions"`
	Rotation       rotationJSON         `json:"rotation"`
	Delivery       rotatord.Delivery    `json:"delivery"`
	Credential     *credentialJSON      `json:"credential"`
	NextRotationAt *time.Time           `json:"next_rotation_at"`
	CreatedAt      time.Time            `json:"created_at"`
	UpdatedAt      time.Time            `json:"updated_at"`
	// Creds is the creds file, only in the response that created the agent
	// with poll delivery.
	Creds string `json:"creds,omitempty"`
}

func toAgentJSON(g *rotatord.Agent) agentJSON {
	out := agentJSON{
		Name: g.Name, Account: g.Account, State: g.State, Permissions: g.Permissions.Normalize(),
		Rotation: rotationJSON{Schedule: g.Rotation.Schedule, Grace: formatDuration(g.Rotation.Grace)},
		Delivery: g.Delivery, NextRotationAt: g.NextRotationAt, CreatedAt: g.CreatedAt, UpdatedAt: g.UpdatedAt,
	}
	if c := g.Active; c != nil {
		out.Credential = &credentialJSON{PublicKey: c.PublicKey, JWTID: c.JWTID, IssuedAt: c.IssuedAt.UTC(), ExpiresAt: c.ExpiresAt.UTC()}
	}
	return out
}

type auditJSON struct {
	ID        int64          `json:"id"`
	At        time.Time      `json:"at"`
	Actor     string         `json:"actor"`
	Action    string         `json:"action"`
	Account   string         `json:"account,omitempty"`
	Agent     string         `json:"agent,omitempty"`
	PublicKey string         `json:"public_key,omitempty"`
	Rotation  string         `json:"rotation,omitempty"`
	Details   map[string]any `json:"details"`
}

func toAuditJSON(e *rotatord.AuditEvent) auditJSON {
	d := e.Details
	if d == nil {
		d = map[string]any{}
	}
	return auditJSON{ID: e.ID, At: e.At, Actor: e.Actor, Action: e.Action, Account: e.Account, Agent: e.Agent,
		PublicKey: e.PublicKey, Rotation: e.Rotation, Details: d}
}

// formatDuration writes d the way operators write it: 30m, not 30m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
