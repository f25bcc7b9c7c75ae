package rotate

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/rotatord/rotatord"
)

// tokenPrefix marks rotatord API tokens, so secret scanners can find them.
const tokenPrefix = "rtd_"

// Bounds of a token's lifetime (TokenInput.Expires).
const (
	MinTokenLifetime = time.Minute
	MaxTokenLifetime = 3650 * 24 * time.Hour
)

// TokenInput is what a caller gives to create an API token.
type TokenInput struct {
	Name  string
	Scope rotatord.Scope
	// Expires is how long the token authenticates from now; 0 for ever.
	Expires time.Duration
}

// ParseTokenLifetime reads a token lifetime as operators write it: a Go
// duration ("720h", "90m") or a number of days ("30d"). Empty is 0 (never
// expires).
func ParseTokenLifetime(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 32)
		if err != nil {
			return 0, rotatord.Errorf(rotatord.EINVALID, "expires %q is not a duration such as 30d or 12h", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, rotatord.Errorf(rotatord.EINVALID, "expires %q is not a duration such as 30d or 12h", s)
		}
	}
	if d < MinTokenLifetime || d > MaxTokenLifetime {
		return 0, rotatord.Errorf(rotatord.EINVALID, "expires %q is out of range: use 1m to 3650d", s)
	}
	return d, nil
}

// CreateToken creates an API token that never expires and returns its
// secret; see IssueToken.
func (s *Service) CreateToken(ctx context.Context, actor Actor, name string, scope rotatord.Scope) (string, *rotatord.Token, error) {
	return s.IssueToken(ctx, actor, TokenInput{Name: name, Scope: scope})
}

// IssueToken creates an API token and returns its secret, which is shown
// once: only its SHA-256 is stored. A name that is taken, by a revoked token
// too, is ECONFLICT: names are never reused, so "token:NAME" in the audit
// trail always means one token.
func (s *Service) IssueToken(ctx context.Context, actor Actor, in TokenInput) (string, *rotatord.Token, error) {
	if err := rotatord.ValidateName("token", in.Name); err != nil {
		return "", nil, err
	}
	if !in.Scope.Valid() {
		return "", nil, rotatord.Errorf(rotatord.EINVALID, "scope %q is not one of admin, rotate, read", in.Scope)
	}
	if in.Expires != 0 && (in.Expires < MinTokenLifetime || in.Expires > MaxTokenLifetime) {
		return "", nil, rotatord.Errorf(rotatord.EINVALID, "expires %s is out of range: use 1m to 3650d", in.Expires)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", nil, fmt.Errorf("generate token: %w", err)
	}
	secret := tokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	t := &rotatord.Token{Name: in.Name, Scope: in.Scope, CreatedBy: string(actor)}
	if in.Expires != 0 {
		// Whole seconds: what the token list shows is what is enforced.
		exp := s.now().Add(in.Expires).UTC().Truncate(time.Second)
		t.ExpiresAt = &exp
	}
	err := s.inTx(ctx, func(ctx context.Context) error {
		if err := s.store.CreateToken(ctx, t, hashToken(secret)); err != nil {
			return err
		}
		details := map[string]any{"name": t.Name, "scope": t.Scope}
		if t.ExpiresAt != nil {
			details["expires_at"] = *t.ExpiresAt
		}
		return s.audit(ctx, actor, "token.create", rotatord.AuditEvent{Details: details})
	})
	if errors.Is(err, rotatord.ErrConflict) {
		// One line for the CLI and the API, never the database's words.
		return "", nil, rotatord.Errorf(rotatord.ECONFLICT,
			"a token named %q exists already (names of revoked tokens stay taken): choose another name", in.Name)
	}
	if err != nil {
		return "", nil, fmt.Errorf("create token %s: %w", in.Name, err)
	}
	return secret, t, nil
}

func hashToken(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// Authenticate returns the token whose secret this is, or EUNAUTHORIZED
// when there is none or it is revoked or expired. It reads the database
// every time (no cache), so a revocation holds on every replica at once.
func (s *Service) Authenticate(ctx context.Context, secret string) (*rotatord.Token, error) {
	if !strings.HasPrefix(secret, tokenPrefix) || len(secret) > 128 {
		return nil, rotatord.Errorf(rotatord.EUNAUTHORIZED, "invalid token")
	}
	t, err := s.store.UseToken(ctx, hashToken(secret), s.now())
	if errors.Is(err, rotatord.ErrNotFound) {
		// The same answer for unknown, revoked and expired: the caller
		// learns nothing about other tokens.
		return nil, rotatord.Errorf(rotatord.EUNAUTHORIZED, "invalid token")
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	return t, nil
}

// Tokens lists every API token, revoked and expired ones included; never a
// secret or its hash.
func (s *Service) Tokens(ctx context.Context) ([]*rotatord.Token, error) {
	return s.store.ListTokens(ctx)
}

// RevokeOptions changes what RevokeToken allows.
type RevokeOptions struct {
	// LastAdmin allows revoking the last admin token that still
	// authenticates. Over the API it is never set: that would lock every
	// operator out of the admin API, and only someone with database access
	// (rotatord token create) could get back in; the CLI, which has that
	// access, sets it with --force.
	LastAdmin bool
}

// RevokeToken stops the named token from authenticating, on every replica
// from the next request on. A token may revoke itself. ENOTFOUND for an
// unknown name; revoking a revoked token changes nothing and reports
// revoked false; revoking the last live admin token is ECONFLICT unless
// opts.LastAdmin.
func (s *Service) RevokeToken(ctx context.Context, actor Actor, name string, opts RevokeOptions) (t *rotatord.Token, revoked bool, err error) {
	err = s.inTx(ctx, func(ctx context.Context) error {
		now := s.now()
		if t, err = s.store.LockToken(ctx, name); err != nil {
			return err
		}
		if t.RevokedAt != nil {
			return nil
		}
		if t.Scope == rotatord.ScopeAdmin && t.State(now) == rotatord.TokenActive && !opts.LastAdmin {
			live, err := s.store.LockLiveTokens(ctx, rotatord.ScopeAdmin, now)
			if err != nil {
				return err
			}
			if len(live) <= 1 {
				return rotatord.Errorf(rotatord.ECONFLICT,
					"token %q is the last admin token that still works: create another admin token first", name)
			}
		}
		if err := s.store.RevokeToken(ctx, name, now); err != nil {
			return err
		}
		at := dbTimeOf(now)
		t.RevokedAt, revoked = &at, true
		return s.audit(ctx, actor, "token.revoke", rotatord.AuditEvent{Details: map[string]any{"name": t.Name, "scope": t.Scope}})
	})
	if err != nil {
		return nil, false, fmt.Errorf("revoke token %s: %w", name, err)
	}
	return t, revoked, nil
}

// dbTimeOf is t as PostgreSQL stores it (microseconds, UTC).
func dbTimeOf(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }
