package httpapi

import (
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
	// JWTBytes is the size of the current account JWT; JWTMaxBytes the
	// guard it must stay under (ROTATORD_MAX_ACCOUNT_JWT_BYTES).
	JWTBytes    int   `json:"jwt_bytes"`
	JWTMaxBytes int64 `json:"jwt_max_bytes"`
	// JWTVersion and Servers: see servers.go.
	JWTVersion int64                `json:"jwt_version"`
	Servers    *[]accountServerJSON `json:"servers,omitempty"`
	// KeyRotation schedules staged signing-key rotations; null when off.
	KeyRotation *keyScheduleJSON `json:"key_rotation"`
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
		CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt,
		JWTBytes: len(a.JWT), JWTVersion: a.JWTVersion, accountClaimsJSON: toAccountClaimsJSON(a.Claims),
		KeyRotation: toKeyScheduleJSON(a.KeyRotation),
	}
}

type rotationJSON struct {
	Schedule string `json:"schedule"`
	Grace    string `json:"grace"`
}

type credentialJSON struct {
	PublicKey  string    `json:"public_key"`
	JWTID      string    `json:"jwt_id"`
	IssuedAt   time.Time `json:"issued_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	SigningKey string    `json:"signing_key,omitempty"`
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
	// LastRotation is the newest rotation; null when there was none.
	LastRotation *lastRotationJSON `json:"last_rotation"`
	// Creds is the creds file, only in the response that created the agent
	// with poll delivery.
	Creds string `json:"creds,omitempty"`

	claimsJSON
	Tags []string `json:"tags"`
	Role *string  `json:"role"`
}

func toAgentJSON(g *rotatord.Agent) agentJSON {
	out := agentJSON{
		Name: g.Name, Account: g.Account, State: g.State, Permissions: g.Permissions.Normalize(),
		Rotation: rotationJSON{Schedule: g.Rotation.Schedule, Grace: rotatord.FormatDuration(g.Rotation.Grace)},
		Delivery: g.Delivery, NextRotationAt: g.NextRotationAt, CreatedAt: g.CreatedAt, UpdatedAt: g.UpdatedAt,
	}
	if c := g.Active; c != nil {
		out.Credential = &credentialJSON{PublicKey: c.PublicKey, JWTID: c.JWTID, IssuedAt: c.IssuedAt.UTC(), ExpiresAt: c.ExpiresAt.UTC(),
			SigningKey: c.SigningKey}
	}
	out.claimsJSON = toClaimsJSON(g.Template())
	out.Tags = nonNilStrings(g.Tags)
	if g.Role != "" {
		out.Role = &g.Role
	}
	out.LastRotation = toLastRotationJSON(g.LastRotation)
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
