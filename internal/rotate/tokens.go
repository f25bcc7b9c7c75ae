package rotate

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/rotatord/rotatord"
)

// tokenPrefix marks rotatord API tokens, so secret scanners can find them.
const tokenPrefix = "rtd_"

// CreateToken creates an API token and returns its secret, which is shown
// once: only its SHA-256 is stored.
func (s *Service) CreateToken(ctx context.Context, actor Actor, name string, scope rotatord.Scope) (string, *rotatord.Token, error) {
	if err := rotatord.ValidateName("token", name); err != nil {
		return "", nil, err
	}
	if !scope.Valid() {
		return "", nil, rotatord.Errorf(rotatord.EINVALID, "scope %q is not one of admin, rotate, read", scope)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", nil, fmt.Errorf("generate token: %w", err)
	}
	secret := tokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	t := &rotatord.Token{Name: name, Scope: scope}
	err := s.store.InTx(ctx, func(ctx context.Context) error {
		if err := s.store.CreateToken(ctx, t, hashToken(secret)); err != nil {
			return err
		}
		return s.audit(ctx, actor, "token.create", rotatord.AuditEvent{Details: map[string]any{"name": name, "scope": scope}})
	})
	if err != nil {
		return "", nil, fmt.Errorf("create token %s: %w", name, err)
	}
	return secret, t, nil
}

func hashToken(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// Authenticate returns the token whose secret this is, or EUNAUTHORIZED.
func (s *Service) Authenticate(ctx context.Context, secret string) (*rotatord.Token, error) {
	if !strings.HasPrefix(secret, tokenPrefix) || len(secret) > 128 {
		return nil, rotatord.Errorf(rotatord.EUNAUTHORIZED, "invalid token")
	}
	t, err := s.store.FindTokenByHash(ctx, hashToken(secret))
	if errors.Is(err, rotatord.ErrNotFound) {
		return nil, rotatord.Errorf(rotatord.EUNAUTHORIZED, "invalid token")
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	return t, nil
}
