package jwtissue

import (
	"encoding/json"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/rotatord/rotatord"
)

// ScopedKey is a role of an account: a signing key whose users carry no
// permissions of their own and get the template instead, expanded by
// nats-server for each user ({{name()}}, {{tag(key)}}...).
type ScopedKey struct {
	Key      string // the role's account-kind public key
	Role     string
	Template rotatord.UserTemplate
}

func addScopedKeys(ac *jwt.AccountClaims, keys []ScopedKey) {
	for _, k := range keys {
		us := jwt.NewUserScope()
		us.Key = k.Key
		us.Role = k.Role
		us.Template = PermissionLimits(k.Template)
		ac.SigningKeys.AddScopedSigner(us)
	}
}

// PermissionLimits turns a user template into the claims nats-server reads,
// with rotatord's default deny: a direction (pub, sub) with no allow entry
// denies ">". NATS reads an empty allow list as allow-all, so without it an
// agent given no permissions could reach every subject of its account.
func PermissionLimits(t rotatord.UserTemplate) jwt.UserPermissionLimits {
	var p jwt.UserPermissionLimits
	p.Pub.Allow.Add(t.Permissions.Pub.Allow...)
	p.Pub.Deny.Add(t.Permissions.Pub.Deny...)
	p.Sub.Allow.Add(t.Permissions.Sub.Allow...)
	p.Sub.Deny.Add(t.Permissions.Sub.Deny...)
	if len(p.Pub.Allow) == 0 {
		p.Pub.Deny.Add(">")
	}
	if len(p.Sub.Allow) == 0 {
		p.Sub.Deny.Add(">")
	}
	if r := t.Permissions.Resp; r != nil {
		p.Resp = &jwt.ResponsePermission{MaxMsgs: r.Max, Expires: r.TTL}
	}
	p.Subs, p.Data, p.Payload = t.Limits.Subs, t.Limits.Data, t.Limits.Payload
	p.Src.Add(t.Src...)
	for _, r := range t.Times {
		p.Times = append(p.Times, jwt.TimeRange{Start: r.Start, End: r.End})
	}
	p.Locale = t.TimesLocation
	p.AllowedConnectionTypes.Add(t.ConnectionTypes...)
	return p
}

// ConnectionTypes are the connection types nats-io/jwt knows, in its
// spelling.
var ConnectionTypes = []string{
	jwt.ConnectionTypeStandard, jwt.ConnectionTypeWebsocket, jwt.ConnectionTypeLeafnode,
	jwt.ConnectionTypeLeafnodeWS, jwt.ConnectionTypeMqtt, jwt.ConnectionTypeMqttWS, jwt.ConnectionTypeInProcess,
}

// ValidateConnectionTypes checks a normalized (upper-case) list: only the
// types of ConnectionTypes, each once. nats-server ignores a type it does
// not know, and refuses everyone when it knows none of the list.
func ValidateConnectionTypes(types []string) error {
	seen := map[string]bool{}
	for i, t := range types {
		known := false
		for _, k := range ConnectionTypes {
			known = known || t == k
		}
		if !known {
			return rotatord.Errorf(rotatord.EINVALID, "connection_types[%d] %.30q is not one of %s", i, t, strings.Join(ConnectionTypes, ", "))
		}
		if seen[t] {
			return rotatord.Errorf(rotatord.EINVALID, "connection_types lists %s twice", t)
		}
		seen[t] = true
	}
	return nil
}

// connectInfo is the CONNECT line's JSON exactly as nats.go writes it
// (nats.go's connectInfo, same fields in the same order).
type connectInfo struct {
	Verbose      bool   `json:"verbose"`
	Pedantic     bool   `json:"pedantic"`
	UserJWT      string `json:"jwt,omitempty"`
	Nkey         string `json:"nkey,omitempty"`
	Signature    string `json:"sig,omitempty"`
	User         string `json:"user,omitempty"`
	Pass         string `json:"pass,omitempty"`
	Token        string `json:"auth_token,omitempty"`
	TLS          bool   `json:"tls_required"`
	Name         string `json:"name"`
	Lang         string `json:"lang"`
	Version      string `json:"version"`
	Protocol     int    `json:"protocol"`
	Echo         bool   `json:"echo"`
	Headers      bool   `json:"headers"`
	NoResponders bool   `json:"no_responders"`
}

// ConnectLineMargin is added to the CONNECT line nats.go would send: other
// client libraries send a few more fields (nulls, a longer lang and
// version), and a connection name may be longer than the agent's name.
const ConnectLineMargin = 256

// ConnectLine returns the length of the CONNECT line's argument (what
// nats-server compares with max_control_line) that nats.go sends for a
// user JWT: the JWT, the base64url signature of the server's nonce (64
// bytes, 86 characters), the connection name (name; pkg/agent uses the
// agent's name), lang and version ("tls_required":false, one byte longer
// than true). Add ConnectLineMargin before comparing.
func ConnectLine(userJWT, name string) int {
	b, err := json.Marshal(connectInfo{
		UserJWT: userJWT, Signature: strings.Repeat("A", 86), Name: name,
		Lang: nats.LangString, Version: nats.Version, Protocol: 1, Echo: true, Headers: true, NoResponders: true,
	})
	if err != nil {
		// Strings and booleans always encode.
		panic("jwtissue: encode connect line: " + err.Error())
	}
	return len(b)
}
