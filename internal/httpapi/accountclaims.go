package httpapi

import (
	"bytes"
	"encoding/json"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/rotate"
)

// accountClaimsInput is the part of the account create and update bodies
// that carries JetStream, exports, imports and the other modeled claims.
// An absent or null field stays as it is, except jetstream, which null
// turns off.
type accountClaimsInput struct {
	JetStream          jetStreamInput                         `json:"jetstream"`
	Exports            *[]rotatord.Export                     `json:"exports"`
	Imports            *[]rotatord.Import                     `json:"imports"`
	DefaultPermissions *rotatord.Permissions                  `json:"default_permissions"`
	Mappings           *map[string][]rotatord.WeightedMapping `json:"mappings"`
	InfoURL            *string                                `json:"info_url"`
	Tags               *[]string                              `json:"tags"`
}

func (in accountClaimsInput) patch() rotate.ClaimsPatch {
	return rotate.ClaimsPatch{
		JetStream: in.JetStream.patch, JetStreamOff: in.JetStream.set && in.JetStream.patch == nil,
		Exports: in.Exports, Imports: in.Imports, DefaultPermissions: in.DefaultPermissions,
		Mappings: in.Mappings, InfoURL: in.InfoURL, Tags: in.Tags,
	}
}

// jetStreamInput tells an absent jetstream (set false) from null (set,
// no patch).
type jetStreamInput struct {
	set   bool
	patch *rotatord.JetStreamPatch
}

// UnmarshalJSON reads null or a JetStream object, refusing unknown fields
// like the rest of the body.
func (j *jetStreamInput) UnmarshalJSON(b []byte) error {
	j.set = true
	if string(bytes.TrimSpace(b)) == "null" {
		j.patch = nil
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p rotatord.JetStreamPatch
	if err := dec.Decode(&p); err != nil {
		return err
	}
	j.patch = &p
	return nil
}

// accountClaimsJSON is the claims part of an Account in responses: every
// field always present, null jetstream when it is off.
type accountClaimsJSON struct {
	JetStream          *rotatord.JetStream                   `json:"jetstream"`
	Exports            []rotatord.Export                     `json:"exports"`
	Imports            []rotatord.Import                     `json:"imports"`
	DefaultPermissions rotatord.Permissions                  `json:"default_permissions"`
	Mappings           map[string][]rotatord.WeightedMapping `json:"mappings"`
	InfoURL            string                                `json:"info_url"`
	Tags               []string                              `json:"tags"`
}

func toAccountClaimsJSON(c *rotatord.AccountClaims) accountClaimsJSON {
	var n rotatord.AccountClaims
	if c != nil {
		n = *c
	}
	n.Normalize()
	return accountClaimsJSON{JetStream: n.JetStream, Exports: n.Exports, Imports: n.Imports,
		DefaultPermissions: n.DefaultPermissions, Mappings: n.Mappings, InfoURL: n.InfoURL, Tags: n.Tags}
}
