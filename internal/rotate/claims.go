package rotate

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// DefaultMaxControlLine is nats-server's default max_control_line: the
// longest protocol line, the CONNECT line with the user JWT included, that
// a server reads from a client before it closes the connection.
const DefaultMaxControlLine = 4096

// checkTemplate normalizes and validates user claims (an agent's own, or
// with templates a role's).
func checkTemplate(t rotatord.UserTemplate, templates bool) (rotatord.UserTemplate, error) {
	t = t.Normalize()
	if err := t.Validate(templates); err != nil {
		return t, err
	}
	if err := jwtissue.ValidateConnectionTypes(t.ConnectionTypes); err != nil {
		return t, err
	}
	return t, nil
}

// emptyTemplate is an agent's own claims while it has a role.
func emptyTemplate() rotatord.UserTemplate {
	return rotatord.UserTemplate{Limits: rotatord.NoUserLimits}.Normalize()
}

// errRoleAndOwn refuses own claims on an agent of a role.
func errRoleAndOwn(agent, role string) error {
	return rotatord.Errorf(rotatord.EINVALID, "agent %s would have role %q and permissions, limits, src, times, times_location or "+
		"connection_types of its own: they exclude each other, the role's apply to its agents (leave them out, or give \"role\": \"\")", agent, role)
}

// encodeUser signs a user JWT for key pub of agent g: with its role's key
// and no permissions when it has a role, else with the account's signing
// key and the agent's own claims. It returns the signer's public key too.
func (s *Service) encodeUser(ctx context.Context, g *rotatord.Agent, pub string, expires time.Time) (string, *jwt.UserClaims, string, error) {
	spec := jwtissue.UserSpec{Name: g.Name, PublicKey: pub, AccountKey: g.AccountKey, Tags: g.Tags, Expires: expires}
	var signer nkeys.KeyPair
	var err error
	if g.RoleID != 0 {
		if g.RoleKey == "" {
			return "", nil, "", fmt.Errorf("role %s of agent %s has no live signing key", g.Role, g.Name)
		}
		spec.Scoped = true
		signer, err = s.keySigner(ctx, g.RoleKey)
	} else {
		spec.Claims = g.Template()
		signer, err = s.signer(ctx, g.AccountID)
	}
	if err != nil {
		return "", nil, "", err
	}
	token, uc, err := jwtissue.EncodeUser(signer, spec)
	if err != nil {
		return "", nil, "", fmt.Errorf("issue user jwt for %s: %w", g.Name, err)
	}
	return token, uc, jwtissue.Public(signer), nil
}

// checkControlLine refuses a user JWT for g whose CONNECT line would not
// fit the servers' max_control_line: every server would close the agent's
// connection before reading it, and nothing would say why.
func (s *Service) checkControlLine(g *rotatord.Agent, token string) error {
	line := jwtissue.ConnectLine(token, g.Name) + jwtissue.ConnectLineMargin
	if line <= s.maxControl {
		return nil
	}
	return rotatord.Errorf(rotatord.EINVALID, "the user JWT of agent %s would be %d bytes, which makes a CONNECT line of %d bytes "+
		"(with %d for other clients), more than the servers' max_control_line of %d: every nats-server would close its connection. "+
		"Give the agent a role instead (POST /v1/accounts/%s/roles with these permissions, then \"role\" on the agent: its JWT "+
		"then carries none, the account JWT holds them), or raise max_control_line on every nats-server and "+
		"ROTATORD_MAX_CONTROL_LINE (--max-control-line) to match",
		g.Name, len(token), line, jwtissue.ConnectLineMargin, s.maxControl, g.Account)
}

// checkUserJWT signs a throwaway JWT as g's next credentials will be and
// checks that its CONNECT line fits.
func (s *Service) checkUserJWT(ctx context.Context, g *rotatord.Agent) error {
	kp, err := jwtissue.NewKey(nkeys.PrefixByteUser)
	if err != nil {
		return err
	}
	life, err := CredentialLifetime(g.Rotation, s.now())
	if err != nil {
		return err
	}
	token, _, _, err := s.encodeUser(ctx, g, jwtissue.Public(kp), s.now().Add(life))
	if err != nil {
		return err
	}
	return s.checkControlLine(g, token)
}

// joinRole makes g an agent of the named role of its account, checked
// against the role's template; the role stays share-locked until the
// transaction ends, so its template cannot change meanwhile.
func (s *Service) joinRole(ctx context.Context, g *rotatord.Agent, account, name string) error {
	if err := rotatord.ValidateName("role", name); err != nil {
		return err
	}
	role, err := s.store.ShareRole(ctx, g.AccountID, name)
	if rotatord.ErrorCode(err) == rotatord.ENOTFOUND {
		return rotatord.Errorf(rotatord.EINVALID, "role %q does not exist in account %q", name, account)
	}
	if err != nil {
		return err
	}
	if err := role.Template.CheckAgent(g.Name, g.Tags); err != nil {
		return rotatord.Errorf(rotatord.EINVALID, "agent %s cannot have role %s: %s", g.Name, role.Name, rotatord.ErrorMessage(err))
	}
	g.RoleID, g.Role, g.RoleKey = role.ID, role.Name, role.SigningKey()
	return nil
}

// keySigner returns a live signing key by its public key (a role's scoped
// key): the database checks that it is live (and locks it as signer does),
// and the opened key pair is cached by public key.
func (s *Service) keySigner(ctx context.Context, pub string) (nkeys.KeyPair, error) {
	memo := memoOf(ctx)
	if kp := memo.key(pub); kp != nil {
		return kp, nil
	}
	enc, err := s.store.SigningKeySeed(ctx, pub)
	if err != nil {
		return nil, fmt.Errorf("load signing key %s: %w", pub, err)
	}
	kp, err := s.openSigner(pub, enc, nkeys.PrefixByteAccount)
	if err != nil {
		return nil, err
	}
	memo.setKey(pub, kp)
	return kp, nil
}

// claimsDetails are an agent's claims for the audit trail.
func claimsDetails(g *rotatord.Agent, d map[string]any) map[string]any {
	d["permissions"] = g.Permissions
	d["limits"] = g.Limits
	d["src"] = g.Src
	d["times"] = g.Times
	d["times_location"] = g.TimesLocation
	d["connection_types"] = g.ConnectionTypes
	d["tags"] = g.Tags
	d["role"] = g.Role
	return d
}
