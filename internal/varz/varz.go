// Package varz reads the VARZ a nats-server answers on its system
// account ($SYS.REQ.SERVER.<id>.VARZ, or every server at once on
// $SYS.REQ.SERVER.PING.VARZ): who the server is and which operators it
// trusts. rotatord's operator-key rotation waits on it, and doctor reports it.
package varz

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/jwt/v2"
)

// Reply is a server's answer.
type Reply struct {
	Server struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"server"`
	Data  *Data `json:"data"`
	Error *struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
	} `json:"error"`
}

// Data is the part of VARZ rotatord reads.
type Data struct {
	ID         string    `json:"server_id"`
	Name       string    `json:"server_name"`
	Version    string    `json:"version"`
	Now        time.Time `json:"now"`
	MaxPayload int       `json:"max_payload"`
	// The operator JWTs of the server's configuration (operator: ...);
	// empty when the operators were given in code rather than config.
	OperatorJWTs []string `json:"trusted_operators_jwt"`
	// Their claims, as the server decoded them; always reported.
	OperatorClaims []json.RawMessage `json:"trusted_operators_claim"`
	SystemAccount  string            `json:"system_account"`
}

// Parse decodes a reply; an error reply, or one without data, is an error.
func Parse(data []byte) (*Reply, error) {
	var r Reply
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode varz: %w", err)
	}
	if r.Error != nil {
		return nil, fmt.Errorf("varz: %s (%d)", r.Error.Description, r.Error.Code)
	}
	if r.Data == nil {
		return nil, errors.New("varz: no data")
	}
	return &r, nil
}

// TrustedOperators are the operators the server trusts: its configured
// operator JWTs when it has any (only those whose signature checks: they
// are what the server verifies with), else the claims it reports.
func (d *Data) TrustedOperators() []*jwt.OperatorClaims {
	var out []*jwt.OperatorClaims
	if len(d.OperatorJWTs) > 0 {
		for _, token := range d.OperatorJWTs {
			if oc, err := jwt.DecodeOperatorClaims(token); err == nil {
				out = append(out, oc)
			}
		}
		return out
	}
	for _, raw := range d.OperatorClaims {
		var oc jwt.OperatorClaims
		if json.Unmarshal(raw, &oc) == nil && oc.Subject != "" {
			out = append(out, &oc)
		}
	}
	return out
}
