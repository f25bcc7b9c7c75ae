package rotate

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// AccountServerURL is the resolver URL that an operator JWT for public URL
// names (its account_server_url).
func AccountServerURL(public string) string {
	return strings.TrimSuffix(public, "/") + "/jwt/v1"
}

// OperatorURL returns the account server URL in the stored operator JWT,
// "" when it names none.
func (s *Service) OperatorURL(ctx context.Context) (string, error) {
	op, err := s.store.Operator(ctx)
	if err != nil {
		return "", err
	}
	oc, err := jwt.DecodeOperatorClaims(op.JWT)
	if err != nil {
		return "", fmt.Errorf("decode operator jwt: %w", err)
	}
	return oc.AccountServerURL, nil
}

// SetOperatorURL re-signs the operator JWT so that its account server URL
// is the one of public (`rotatord init` with a new ROTATORD_PUBLIC_URL),
// and audits it. It returns the URL the JWT named before and whether it
// changed; nothing changes when it names that URL already. The operator's
// identity key stays, so servers keep trusting rotatord's account JWTs;
// the new operator JWT goes into their configuration with the next
// nats-server block. EUNSUPPORTED for an operator imported without its
// identity seed, which alone signs the operator JWT.
func (s *Service) SetOperatorURL(ctx context.Context, actor Actor, public string) (from string, changed bool, err error) {
	want := AccountServerURL(public)
	err = s.inTx(ctx, func(ctx context.Context) error {
		if err := s.store.LockOperator(ctx); err != nil {
			return err
		}
		op, err := s.store.Operator(ctx)
		if err != nil {
			return err
		}
		oc, err := jwt.DecodeOperatorClaims(op.JWT)
		if err != nil {
			return fmt.Errorf("decode operator jwt: %w", err)
		}
		from = oc.AccountServerURL
		if from == want {
			return nil
		}
		enc, err := s.store.OperatorSeed(ctx)
		if err != nil {
			return err
		}
		if enc == nil {
			return rotatord.Errorf(rotatord.EUNSUPPORTED,
				"operator %s was imported without its identity seed, which alone signs the operator JWT: set its account server URL to %s with nsc", op.Name, want)
		}
		seed, err := s.sealer.Open(enc, []byte(op.PublicKey))
		if err != nil {
			return fmt.Errorf("open operator identity seed: %w", err)
		}
		identity, err := jwtissue.FromSeed(seed, nkeys.PrefixByteOperator)
		if err != nil {
			return err
		}
		oc.AccountServerURL = want
		if op.JWT, err = oc.Encode(identity); err != nil {
			return fmt.Errorf("sign operator jwt: %w", err)
		}
		if err := s.store.UpdateOperator(ctx, op); err != nil {
			return err
		}
		changed = true
		return s.audit(ctx, actor, "operator.update", rotatord.AuditEvent{PublicKey: op.PublicKey,
			Details: map[string]any{"account_server_url": want, "previous_account_server_url": from}})
	})
	if err != nil {
		return "", false, fmt.Errorf("set operator url: %w", err)
	}
	return from, changed, nil
}
