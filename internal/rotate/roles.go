package rotate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// RoleStore is what roles need from the registry.
type RoleStore interface {
	CreateRole(ctx context.Context, r *rotatord.Role) error
	AddRoleSigningKey(ctx context.Context, r *rotatord.Role, pub string, seedEnc []byte) error
	FindRole(ctx context.Context, accountID int64, name string) (*rotatord.Role, error)
	LockRole(ctx context.Context, accountID int64, name string) (*rotatord.Role, error)
	ShareRole(ctx context.Context, accountID int64, name string) (*rotatord.Role, error)
	ListRoles(ctx context.Context, accountID int64) ([]*rotatord.Role, error)
	UpdateRole(ctx context.Context, r *rotatord.Role) error
	DeleteRole(ctx context.Context, id int64) error
	RoleAgents(ctx context.Context, roleID int64) ([]*rotatord.Agent, error)
	CountValidSignedBy(ctx context.Context, keys []string) (int, error)
	SigningKeySeed(ctx context.Context, pub string) ([]byte, error)
}

// RoleInput is what a caller gives to create a role. Nil limits are
// unlimited; a direction without allow entries denies every subject.
type RoleInput struct {
	Name        string
	Description string
	Template    rotatord.UserTemplate
	Limits      *rotatord.UserLimitsPatch
}

// RolePatch changes a role; nil fields stay as they are.
type RolePatch struct {
	Description *string
	Template    rotatord.UserTemplatePatch
}

// RoleUpdate says what a change of a role did.
type RoleUpdate struct {
	Role *rotatord.Role
	// ScopeChanged: the template changed, so the account JWT was re-signed
	// and pushed. nats-server closes every connection signed by the role's
	// key when it applies it; the agents reconnect at once with the same
	// credentials and are held to the new scope.
	ScopeChanged bool
}

// maxRoleScope bounds what one role adds to its account JWT, which every
// server must load and every push carries.
const maxRoleScope = 64 << 10

// roleAccount finds the account a role call names; the system account
// has no roles.
func (s *Service) roleAccount(ctx context.Context, name string) (*rotatord.Account, error) {
	acc, err := s.store.FindAccountByName(ctx, name)
	if err != nil {
		return nil, err
	}
	if acc.System {
		return nil, rotatord.Errorf(rotatord.EINVALID, "the system account has no agents and no roles")
	}
	return acc, nil
}

// checkRoleTemplate validates a role's template, its templates included,
// against the account: a deny subject that reads an account tag the
// account lacks would make nats-server refuse every agent of the role.
func checkRoleTemplate(t rotatord.UserTemplate, acc *rotatord.Account) (rotatord.UserTemplate, error) {
	t, err := checkTemplate(t, true)
	if err != nil {
		return t, err
	}
	if scope, err := json.Marshal(jwtissue.PermissionLimits(t)); err != nil {
		return t, fmt.Errorf("encode role template: %w", err)
	} else if len(scope) > maxRoleScope {
		return t, rotatord.Errorf(rotatord.EINVALID, "the role's template is %d bytes in the account JWT, more than %d: "+
			"use wildcards or templates for fewer subjects", len(scope), maxRoleScope)
	}
	need := t.AccountTagsNeeded()
	if len(need) == 0 {
		return t, nil
	}
	ac, err := jwt.DecodeAccountClaims(acc.JWT)
	if err != nil {
		return t, fmt.Errorf("decode account jwt of %s: %w", acc.Name, err)
	}
	for _, k := range need {
		found := false
		for _, tag := range ac.Tags {
			found = found || len(tag) > len(k) && tag[:len(k)+1] == k+":"
		}
		if !found {
			return t, rotatord.Errorf(rotatord.EINVALID, "a deny subject reads account tag %q, which account %s lacks: nats-server would refuse every agent of the role", k, acc.Name)
		}
	}
	return t, nil
}

// CreateRole creates a role in an account: a new scoped signing key with
// the template, added to the account JWT, which is re-signed and pushed.
// A name taken in the account is ECONFLICT; a missing account ENOTFOUND.
func (s *Service) CreateRole(ctx context.Context, actor Actor, account string, in RoleInput) (*rotatord.Role, error) {
	if err := rotatord.ValidateName("role", in.Name); err != nil {
		return nil, err
	}
	if err := validateDescription(in.Description); err != nil {
		return nil, err
	}
	t := in.Template
	t.Limits = rotatord.NoUserLimits
	if in.Limits != nil {
		t.Limits = in.Limits.Apply(t.Limits)
	}
	key, err := jwtissue.NewKey(nkeys.PrefixByteAccount)
	if err != nil {
		return nil, err
	}
	r := &rotatord.Role{Name: in.Name, Description: in.Description}
	var acc *rotatord.Account
	err = s.inTx(ctx, func(ctx context.Context) error {
		found, err := s.roleAccount(ctx, account)
		if err != nil {
			return err
		}
		if acc, err = s.store.LockAccount(ctx, found.ID); err != nil {
			return err
		}
		if r.Template, err = checkRoleTemplate(t, acc); err != nil {
			return err
		}
		r.AccountID, r.Account, r.AccountKey = acc.ID, acc.Name, acc.PublicKey
		if err := s.store.CreateRole(ctx, r); err != nil {
			return err
		}
		if err := s.store.AddRoleSigningKey(ctx, r, jwtissue.Public(key), s.seal(key)); err != nil {
			return err
		}
		if err := s.resignAccount(ctx, acc); err != nil {
			return err
		}
		return s.audit(ctx, actor, "role.create", rotatord.AuditEvent{Account: acc.Name, PublicKey: jwtissue.Public(key),
			Details: roleDetails(r, map[string]any{"account_jwt_id": acc.JWTID})})
	})
	if err != nil {
		return nil, fmt.Errorf("create role %s in %s: %w", in.Name, account, err)
	}
	s.changed(ctx, acc.PublicKey)
	s.pushSoon(acc.ID)
	return r, nil
}

// Role returns the named role of an account.
func (s *Service) Role(ctx context.Context, account, name string) (*rotatord.Role, error) {
	acc, err := s.roleAccount(ctx, account)
	if err != nil {
		return nil, err
	}
	return s.store.FindRole(ctx, acc.ID, name)
}

// Roles lists the roles of an account.
func (s *Service) Roles(ctx context.Context, account string) ([]*rotatord.Role, error) {
	acc, err := s.roleAccount(ctx, account)
	if err != nil {
		return nil, err
	}
	return s.store.ListRoles(ctx, acc.ID)
}

// UpdateRole changes a role's description or template. A new template is
// checked against every agent of the role (EINVALID naming one it would
// not work for), the account JWT is re-signed and pushed, and nats-server
// then drops every connection of the role's key: the agents reconnect at
// once with the same credentials (RoleUpdate.ScopeChanged). A description
// changes nothing in NATS.
func (s *Service) UpdateRole(ctx context.Context, actor Actor, account, name string, p RolePatch) (*RoleUpdate, error) {
	if p.Description != nil {
		if err := validateDescription(*p.Description); err != nil {
			return nil, err
		}
	}
	res := &RoleUpdate{}
	var acc *rotatord.Account
	err := s.inTx(ctx, func(ctx context.Context) error {
		found, err := s.roleAccount(ctx, account)
		if err != nil {
			return err
		}
		if acc, err = s.store.LockAccount(ctx, found.ID); err != nil {
			return err
		}
		r, err := s.store.LockRole(ctx, acc.ID, name)
		if err != nil {
			return err
		}
		res.Role = r
		changed := map[string]any{}
		if p.Description != nil {
			r.Description = *p.Description
			changed["description"] = r.Description
		}
		if !p.Template.IsEmpty() {
			t, err := checkRoleTemplate(p.Template.Apply(r.Template), acc)
			if err != nil {
				return err
			}
			res.ScopeChanged = !sameScope(r.Template, t)
			r.Template = t
		}
		if res.ScopeChanged {
			agents, err := s.store.RoleAgents(ctx, r.ID)
			if err != nil {
				return err
			}
			for _, g := range agents {
				if err := r.Template.CheckAgent(g.Name, g.Tags); err != nil {
					return rotatord.Errorf(rotatord.EINVALID, "the new template does not work for agent %s of the role: %s", g.Name, rotatord.ErrorMessage(err))
				}
			}
			roleDetails(r, changed)
		}
		if err := s.store.UpdateRole(ctx, r); err != nil {
			return err
		}
		if res.ScopeChanged {
			if err := s.resignAccount(ctx, acc); err != nil {
				return err
			}
			changed["account_jwt_id"] = acc.JWTID
		}
		changed["scope_changed"] = res.ScopeChanged
		return s.audit(ctx, actor, "role.update", rotatord.AuditEvent{Account: acc.Name, PublicKey: r.SigningKey(), Details: changed})
	})
	if err != nil {
		return nil, fmt.Errorf("update role %s of %s: %w", name, account, err)
	}
	if res.ScopeChanged {
		s.changed(ctx, acc.PublicKey)
		s.pushSoon(acc.ID)
	}
	return res, nil
}

// sameScope reports whether two templates give nats-server the same scope
// (the same claims in the account JWT).
func sameScope(a, b rotatord.UserTemplate) bool {
	ja, errA := json.Marshal(jwtissue.PermissionLimits(a))
	jb, errB := json.Marshal(jwtissue.PermissionLimits(b))
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// DeleteRole deletes a role that no agent uses: none has it, and none
// still holds a valid credential signed by its key (an agent that left the
// role keeps one until its next rotation). Either is ECONFLICT. The key
// leaves the account JWT, which is re-signed and pushed.
func (s *Service) DeleteRole(ctx context.Context, actor Actor, account, name string) error {
	var acc *rotatord.Account
	var keys []string
	err := s.inTx(ctx, func(ctx context.Context) error {
		found, err := s.roleAccount(ctx, account)
		if err != nil {
			return err
		}
		if acc, err = s.store.LockAccount(ctx, found.ID); err != nil {
			return err
		}
		r, err := s.store.LockRole(ctx, acc.ID, name)
		if err != nil {
			return err
		}
		if r.Agents > 0 {
			return rotatord.Errorf(rotatord.ECONFLICT, "role %q has %d agents: give them another role or permissions of their own first", name, r.Agents)
		}
		keys = r.SigningKeys
		if n, err := s.store.CountValidSignedBy(ctx, keys); err != nil {
			return err
		} else if n > 0 {
			return rotatord.Errorf(rotatord.ECONFLICT, "%d agents that left role %q still hold credentials signed by its key, which would stop working: rotate them first", n, name)
		}
		if err := s.store.DeleteRole(ctx, r.ID); errors.Is(err, rotatord.ErrConflict) {
			return rotatord.Errorf(rotatord.ECONFLICT, "role %q is in use", name)
		} else if err != nil {
			return err
		}
		if err := s.resignAccount(ctx, acc); err != nil {
			return err
		}
		return s.audit(ctx, actor, "role.delete", rotatord.AuditEvent{Account: acc.Name, PublicKey: r.SigningKey(),
			Details: map[string]any{"role": r.Name, "signing_keys": keys, "account_jwt_id": acc.JWTID}})
	})
	if err != nil {
		return fmt.Errorf("delete role %s of %s: %w", name, account, err)
	}
	s.dropSigners(keys)
	s.changed(ctx, acc.PublicKey)
	s.pushSoon(acc.ID)
	return nil
}

// scopedKeys returns the account's roles as the account JWT lists them:
// every live key of each role, with the role's template.
func (s *Service) scopedKeys(ctx context.Context, accountID int64) ([]jwtissue.ScopedKey, error) {
	roles, err := s.store.ListRoles(ctx, accountID)
	if err != nil {
		return nil, err
	}
	pending, err := s.store.PendingSigningKeys(ctx, accountID)
	if err != nil {
		return nil, err
	}
	var out []jwtissue.ScopedKey
	for _, r := range roles {
		for _, k := range r.SigningKeys {
			out = append(out, jwtissue.ScopedKey{Key: k, Role: r.Name, Template: r.Template})
		}
		// A staged rotation's new key of the role, trusted before it signs.
		for _, p := range pending {
			if p.RoleID == r.ID {
				out = append(out, jwtissue.ScopedKey{Key: p.PublicKey, Role: r.Name, Template: r.Template})
			}
		}
	}
	return out, nil
}

// roleDetails are a role's settings for the audit trail.
func roleDetails(r *rotatord.Role, d map[string]any) map[string]any {
	d["role"] = r.Name
	d["permissions"] = r.Template.Permissions
	d["limits"] = r.Template.Limits
	d["src"] = r.Template.Src
	d["times"] = r.Template.Times
	d["times_location"] = r.Template.TimesLocation
	d["connection_types"] = r.Template.ConnectionTypes
	return d
}
