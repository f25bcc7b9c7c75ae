package rotate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// SystemAccountName is the name of the system account that init creates.
const SystemAccountName = "SYS"

// Init creates the operator, its signing key and the system account with
// its signing key. It is idempotent: when the operator exists under the same
// name it changes nothing and reports created false, once it checked that
// the master key opens the operator's signing key (CheckKeys: a wrong key
// fails here as it does at serve); under another name it fails with
// ECONFLICT.
func (s *Service) Init(ctx context.Context, actor Actor, name string) (op *rotatord.Operator, created bool, err error) {
	if err := rotatord.ValidateName("operator", name); err != nil {
		return nil, false, err
	}
	err = s.store.InTx(ctx, func(ctx context.Context) error {
		if err := s.store.LockOperator(ctx); err != nil {
			return err
		}
		existing, err := s.store.Operator(ctx)
		if err == nil {
			if existing.Name != name {
				return rotatord.Errorf(rotatord.ECONFLICT, "already initialized for operator %q", existing.Name)
			}
			op = existing
			return nil
		}
		if !errors.Is(err, rotatord.ErrNotFound) {
			return err
		}
		op, err = s.createOperator(ctx, actor, name)
		created = err == nil
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("init operator %s: %w", name, err)
	}
	if !created {
		if err := s.CheckKeys(ctx); err != nil {
			return nil, false, fmt.Errorf("init operator %s: %w", name, err)
		}
	}
	return op, created, nil
}

func (s *Service) createOperator(ctx context.Context, actor Actor, name string) (*rotatord.Operator, error) {
	identity, err := jwtissue.NewKey(nkeys.PrefixByteOperator)
	if err != nil {
		return nil, err
	}
	signer, err := jwtissue.NewKey(nkeys.PrefixByteOperator)
	if err != nil {
		return nil, err
	}
	sysKey, err := jwtissue.NewKey(nkeys.PrefixByteAccount)
	if err != nil {
		return nil, err
	}
	op := &rotatord.Operator{Name: name, PublicKey: jwtissue.Public(identity), SystemAccount: jwtissue.Public(sysKey)}
	spec := jwtissue.OperatorSpec{Name: name, SigningKeys: []string{jwtissue.Public(signer)}, SystemAccount: op.SystemAccount}
	if s.public != "" {
		spec.AccountServerURL = AccountServerURL(s.public)
	}
	op.JWT, err = jwtissue.EncodeOperator(identity, spec)
	if err != nil {
		return nil, err
	}
	if err := s.store.CreateOperator(ctx, op, s.seal(identity)); err != nil {
		return nil, err
	}
	if err := s.store.AddSigningKey(ctx, 0, jwtissue.Public(signer), s.seal(signer)); err != nil {
		return nil, err
	}
	if err := s.audit(ctx, actor, "operator.create", rotatord.AuditEvent{PublicKey: op.PublicKey,
		Details: map[string]any{"name": name, "signing_key": jwtissue.Public(signer)}}); err != nil {
		return nil, err
	}
	if _, err := s.createAccount(ctx, actor, AccountInput{Name: SystemAccountName, Description: "NATS system account"}, sysKey, true); err != nil {
		return nil, fmt.Errorf("create system account: %w", err)
	}
	return op, nil
}

// NATSConfig returns the block to paste into nats-server.conf.
func (s *Service) NATSConfig(ctx context.Context) (string, error) {
	op, err := s.store.Operator(ctx)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("operator: %s\nsystem_account: %s\nresolver: URL(%q)\n",
		op.JWT, op.SystemAccount, strings.TrimSuffix(s.public, "/")+"/jwt/v1/accounts/"), nil
}

// seal encrypts kp's seed, bound to its public key.
func (s *Service) seal(kp nkeys.KeyPair) []byte {
	return s.sealer.Seal(jwtissue.Seed(kp), []byte(jwtissue.Public(kp)))
}

// signer returns the newest signing key of the operator (accountID 0,
// operatorkey.go) or of an account. For an account the database says which
// key that is, every time (inside a transaction it also keeps the key from
// being retired until the transaction ends, see
// registry.Store.SigningKey); the opened key pairs are cached by public key
// (signers.go), so a rotated key is simply another entry and a retired one
// is dropped.
func (s *Service) signer(ctx context.Context, accountID int64) (nkeys.KeyPair, error) {
	if accountID == 0 {
		return s.operatorSigner(ctx)
	}
	memo := memoOf(ctx)
	if kp := memo.account(accountID); kp != nil {
		return kp, nil
	}
	pub, enc, err := s.store.SigningKey(ctx, accountID)
	if err != nil {
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	kp, err := s.openSigner(pub, enc, nkeys.PrefixByteAccount)
	if err != nil {
		return nil, err
	}
	memo.setAccount(accountID, kp)
	return kp, nil
}

// MintSystemUser returns a new user of the system account, for rotatord's
// own NATS connection: an ephemeral key pair that lives only in memory and
// a JWT valid for a day, signed by the system account's signing key.
func (s *Service) MintSystemUser(ctx context.Context) (string, nkeys.KeyPair, error) {
	op, err := s.store.Operator(ctx)
	if err != nil {
		return "", nil, err
	}
	acc, err := s.store.FindAccountByPublicKey(ctx, op.SystemAccount)
	if err != nil {
		return "", nil, fmt.Errorf("find system account: %w", err)
	}
	signer, err := s.signer(ctx, acc.ID)
	if err != nil {
		return "", nil, err
	}
	kp, err := jwtissue.NewKey(nkeys.PrefixByteUser)
	if err != nil {
		return "", nil, err
	}
	// rotatord's own user is not an agent: default deny does not apply.
	// It pushes account JWTs, watches $SYS events, asks CONNZ, answers
	// CLAIMS.LOOKUP and publishes alerts, in the system account only.
	all := rotatord.PermissionList{Allow: []string{">"}}
	token, _, err := jwtissue.EncodeUser(signer, jwtissue.UserSpec{
		Name: "rotatord", PublicKey: jwtissue.Public(kp), AccountKey: acc.PublicKey,
		Claims:  rotatord.UserTemplate{Permissions: rotatord.Permissions{Pub: all, Sub: all}, Limits: rotatord.NoUserLimits},
		Expires: s.now().Add(24 * time.Hour),
	})
	if err != nil {
		return "", nil, err
	}
	return token, kp, nil
}

// decodeUser parses a user JWT stored by rotatord.
func decodeUser(token string) (*jwt.UserClaims, error) {
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return nil, fmt.Errorf("decode user jwt: %w", err)
	}
	return uc, nil
}

// CheckKeys checks that the master key opens the operator's signing key, so
// a wrong key is found at start rather than at the first signature.
func (s *Service) CheckKeys(ctx context.Context) error {
	if _, err := s.signer(ctx, 0); err != nil {
		return fmt.Errorf("check master key: %w", err)
	}
	return nil
}
