package rotate

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// AccountInput is what a caller gives to create an account.
type AccountInput struct {
	Name        string
	Description string
	Limits      *rotatord.LimitsPatch // fields left nil are unlimited
	// KeyRotationSchedule, when set, schedules staged rotations of the
	// account's signing key (a cron expression or "@every 720h").
	KeyRotationSchedule string
	// Claims are JetStream, exports, imports and the other modeled
	// claims; fields left nil are absent.
	Claims ClaimsPatch
}

// AccountPatch changes an account; nil fields stay as they are.
type AccountPatch struct {
	Description *string
	Limits      *rotatord.LimitsPatch
	// KeepRevocations false lets an imported account's revocations be
	// folded into '*' once rotatord manages all its users (see
	// rotatord.Account.KeepRevocations).
	KeepRevocations *bool
	// KeyRotationSchedule sets the schedule of staged signing-key
	// rotations; "" turns them off.
	KeyRotationSchedule *string
	// Claims changes JetStream, exports, imports and the other modeled
	// claims. Changed exports re-sign and push the accounts that import
	// from this one.
	Claims ClaimsPatch
}

const maxDescription = 1024

func validateDescription(d string) error {
	if len(d) > maxDescription {
		return rotatord.Errorf(rotatord.EINVALID, "description is longer than %d bytes", maxDescription)
	}
	return nil
}

func validateLimits(l rotatord.Limits) error { return l.Validate() }

// CreateAccount creates an account with a new identity key and signing key,
// signed by the operator. A taken name is ECONFLICT.
func (s *Service) CreateAccount(ctx context.Context, actor Actor, in AccountInput) (*rotatord.Account, error) {
	if err := rotatord.ValidateName("account", in.Name); err != nil {
		return nil, err
	}
	if err := validateDescription(in.Description); err != nil {
		return nil, err
	}
	if in.Limits != nil {
		if err := validateLimits(in.Limits.Apply(rotatord.NoLimits)); err != nil {
			return nil, err
		}
	}
	identity, err := jwtissue.NewKey(nkeys.PrefixByteAccount)
	if err != nil {
		return nil, err
	}
	if in.KeyRotationSchedule != "" {
		if err := checkKeySchedule(in.KeyRotationSchedule); err != nil {
			return nil, err
		}
	}
	var acc *rotatord.Account
	err = s.store.InTx(ctx, func(ctx context.Context) error {
		if !in.Claims.empty() {
			if err := s.store.LockAccountGraph(ctx); err != nil {
				return err
			}
		}
		if acc, err = s.createAccount(ctx, actor, in, identity, false); err != nil {
			return err
		}
		if in.KeyRotationSchedule == "" {
			return nil
		}
		return s.setKeySchedule(ctx, acc, in.KeyRotationSchedule)
	})
	if err != nil {
		return nil, fmt.Errorf("create account %s: %w", in.Name, err)
	}
	s.changed(ctx, acc.PublicKey)
	return acc, nil
}

func (s *Service) createAccount(ctx context.Context, actor Actor, in AccountInput, identity nkeys.KeyPair, system bool) (*rotatord.Account, error) {
	if _, err := s.store.Operator(ctx); err != nil {
		return nil, err
	}
	signing, err := jwtissue.NewKey(nkeys.PrefixByteAccount)
	if err != nil {
		return nil, err
	}
	limits := rotatord.NoLimits
	if in.Limits != nil {
		limits = in.Limits.Apply(limits)
	}
	acc := &rotatord.Account{
		Name: in.Name, PublicKey: jwtissue.Public(identity), System: system, Description: in.Description,
		Limits: limits, SigningKeys: []string{jwtissue.Public(signing)},
	}
	claims, err := in.Claims.apply(rotatord.AccountClaims{})
	if err != nil {
		return nil, err
	}
	if err := s.checkClaims(ctx, acc, &claims); err != nil {
		return nil, err
	}
	acc.Claims = &claims
	if err := s.signAccount(ctx, acc, nil); err != nil {
		return nil, err
	}
	if err := s.store.CreateAccount(ctx, acc); err != nil {
		return nil, err
	}
	if err := s.store.AddSigningKey(ctx, acc.ID, jwtissue.Public(signing), s.seal(signing)); err != nil {
		return nil, err
	}
	err = s.audit(ctx, actor, "account.create", rotatord.AuditEvent{Account: acc.Name, PublicKey: acc.PublicKey,
		Details: map[string]any{"signing_key": jwtissue.Public(signing), "jwt_id": acc.JWTID, "limits": acc.Limits, "claims": acc.Claims}})
	return acc, err
}

// signAccount sets acc's JWT, signed with the operator's signing key from
// its fields, its claims (minting the activation tokens its imports need,
// see importSpecs), its signing keys, its roles' scoped keys and the given
// revocations. A JWT over the size guard is ErrJWTFull, and acc is left as
// it was.
func (s *Service) signAccount(ctx context.Context, acc *rotatord.Account, revs []rotatord.Revocation) error {
	token, id, err := s.encodeAccount(ctx, acc, revs)
	if err != nil {
		return err
	}
	if err := s.checkJWTSize(acc, token); err != nil {
		return err
	}
	acc.JWT, acc.JWTID = token, id
	return nil
}

// encodeAccount encodes acc's JWT (see signAccount) whatever its size.
func (s *Service) encodeAccount(ctx context.Context, acc *rotatord.Account, revs []rotatord.Revocation) (token, id string, err error) {
	opSigner, err := s.signer(ctx, 0)
	if err != nil {
		return "", "", err
	}
	var scoped []jwtissue.ScopedKey
	if acc.ID != 0 { // a stored account may have roles
		if scoped, err = s.scopedKeys(ctx, acc.ID); err != nil {
			return "", "", err
		}
	}
	claims, err := claimsOf(acc)
	if err != nil {
		return "", "", err
	}
	imports, err := s.importSpecs(ctx, acc, claims)
	if err != nil {
		return "", "", err
	}
	return jwtissue.EncodeAccount(opSigner, jwtissue.AccountSpec{
		Name: acc.Name, PublicKey: acc.PublicKey, Description: acc.Description,
		SigningKeys: acc.SigningKeys, Limits: acc.Limits, Claims: *claims, Imports: imports, Revocations: revs, Base: acc.BaseClaims,
		ScopedKeys: scoped,
	})
}

// resignAccount re-signs the locked account from what the store holds and
// stores the new JWT with a bumped version. Run it inside InTx after
// LockAccount; push after commit. Over the size guard it prunes and folds
// what no credential in use needs, and fails with ErrJWTFull if that is not
// enough; changes that revoke use resignRevoking, which always lands.
func (s *Service) resignAccount(ctx context.Context, acc *rotatord.Account) error {
	return s.resign(ctx, acc, false)
}

// Account returns the named account with its signing keys, claims and
// key rotation schedule.
func (s *Service) Account(ctx context.Context, name string) (*rotatord.Account, error) {
	acc, err := s.store.FindAccountByName(ctx, name)
	if err != nil {
		return nil, err
	}
	if acc.SigningKeys, err = s.store.SigningKeys(ctx, acc.ID); err != nil {
		return nil, err
	}
	if _, err := claimsOf(acc); err != nil {
		return nil, err
	}
	if err := s.fillKeySchedules(ctx, acc); err != nil {
		return nil, err
	}
	return acc, nil
}

// Accounts lists every account.
func (s *Service) Accounts(ctx context.Context) ([]*rotatord.Account, error) {
	accs, err := s.store.ListAccounts(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range accs {
		if a.SigningKeys, err = s.store.SigningKeys(ctx, a.ID); err != nil {
			return nil, err
		}
		if _, err := claimsOf(a); err != nil {
			return nil, err
		}
	}
	if err := s.fillKeySchedules(ctx, accs...); err != nil {
		return nil, err
	}
	return accs, nil
}

// UpdateAccount changes an account's description, limits or claims,
// re-signs its JWT and starts pushing it. When its exports change, the
// accounts that import from it are re-signed and pushed too (ECONFLICT
// when an import would be left without an export). The system account's
// limits are read-only (ECONFLICT): see checkSystemPatch.
func (s *Service) UpdateAccount(ctx context.Context, actor Actor, name string, p AccountPatch) (*rotatord.Account, error) {
	if p.Description != nil {
		if err := validateDescription(*p.Description); err != nil {
			return nil, err
		}
	}
	if p.Limits != nil {
		if err := validateLimits(p.Limits.Apply(rotatord.NoLimits)); err != nil {
			return nil, err
		}
	}
	var (
		acc       *rotatord.Account
		importers []*rotatord.Account
	)
	err := s.inTx(ctx, func(ctx context.Context) error {
		if err := s.store.LockAccountGraph(ctx); err != nil {
			return err
		}
		found, err := s.store.FindAccountByName(ctx, name)
		if err != nil {
			return err
		}
		if acc, err = s.store.LockAccount(ctx, found.ID); err != nil {
			return err
		}
		if err := checkSystemPatch(acc, p); err != nil {
			return err
		}
		cur, err := claimsOf(acc)
		if err != nil {
			return err
		}
		if p.Description != nil {
			acc.Description = *p.Description
		}
		if p.Limits != nil {
			acc.Limits = p.Limits.Apply(acc.Limits)
		}
		next, err := p.Claims.apply(*cur)
		if err != nil {
			return err
		}
		if err := s.checkClaims(ctx, acc, &next); err != nil {
			return err
		}
		if !reflect.DeepEqual(cur.Tags, next.Tags) {
			if err := s.checkRoleTags(ctx, acc, next.Tags); err != nil {
				return err
			}
		}
		exportsChanged := !reflect.DeepEqual(cur.Exports, next.Exports)
		acc.Claims = &next
		if p.KeyRotationSchedule != nil {
			if err := s.setKeySchedule(ctx, acc, *p.KeyRotationSchedule); err != nil {
				return err
			}
		}
		if p.KeepRevocations != nil && *p.KeepRevocations != acc.KeepRevocations {
			acc.KeepRevocations = *p.KeepRevocations
			// The re-signer folds what can be folded now.
			if err := s.store.QueueResign(ctx, acc.ID); err != nil {
				return err
			}
		}
		if err := s.resignAccount(ctx, acc); err != nil {
			return err
		}
		if exportsChanged {
			if importers, err = s.resignImporters(ctx, acc); err != nil {
				return err
			}
		}
		var resigned []string
		for _, imp := range importers {
			resigned = append(resigned, imp.Name)
		}
		details := map[string]any{"jwt_id": acc.JWTID, "limits": acc.Limits, "keep_revocations": acc.KeepRevocations,
			"claims": acc.Claims, "importers_resigned": resigned}
		if p.KeyRotationSchedule != nil {
			details["key_rotation_schedule"] = *p.KeyRotationSchedule
		}
		return s.audit(ctx, actor, "account.update", rotatord.AuditEvent{Account: acc.Name, PublicKey: acc.PublicKey, Details: details})
	})
	if err != nil {
		return nil, fmt.Errorf("update account %s: %w", name, err)
	}
	s.changed(ctx, acc.PublicKey)
	// The answer does not wait for the servers (nor for a hung NATS).
	s.pushSoon(acc.ID)
	for _, imp := range importers {
		s.changed(ctx, imp.PublicKey)
		s.pushSoon(imp.ID)
	}
	return acc, nil
}

// DeleteAccount removes an account that has no agents (ECONFLICT
// otherwise). The system account cannot be deleted.
func (s *Service) DeleteAccount(ctx context.Context, actor Actor, name string) error {
	var pub string
	err := s.store.InTx(ctx, func(ctx context.Context) error {
		if err := s.store.LockAccountGraph(ctx); err != nil {
			return err
		}
		found, err := s.store.FindAccountByName(ctx, name)
		if err != nil {
			return err
		}
		acc, err := s.store.LockAccount(ctx, found.ID)
		if err != nil {
			return err
		}
		if acc.System {
			return rotatord.Errorf(rotatord.ECONFLICT, "the system account cannot be deleted")
		}
		// Counted before the lock; an agent created meanwhile makes the
		// delete fail on its foreign key, which is a conflict too.
		if found.Agents > 0 {
			return rotatord.Errorf(rotatord.ECONFLICT, "account %q still has %d agents: delete them first", name, found.Agents)
		}
		importers, err := s.store.ImportersOf(ctx, acc.Name, acc.PublicKey)
		if err != nil {
			return err
		}
		if len(importers) > 0 {
			names := make([]string, len(importers))
			for i, imp := range importers {
				names[i] = imp.Name
			}
			return rotatord.Errorf(rotatord.ECONFLICT, "account %q is imported by %s: remove their imports of it first", name, strings.Join(names, ", "))
		}
		if err := s.store.DeleteAccount(ctx, acc.ID); err != nil {
			return err
		}
		pub = acc.PublicKey
		return s.audit(ctx, actor, "account.delete", rotatord.AuditEvent{Account: acc.Name, PublicKey: acc.PublicKey})
	})
	if err != nil {
		return fmt.Errorf("delete account %s: %w", name, err)
	}
	s.changed(ctx, pub)
	return nil
}
