// Package rotatord holds the domain types of rotatord: operators, accounts,
// agents, credentials, rotations, audit events and API tokens, and the error
// type every layer uses to say what went wrong. It imports only the standard
// library; the adapters (registry, resolver, distribute, httpapi) build on it.
package rotatord

import (
	"errors"
	"fmt"
	"time"
)

// Error codes. Each maps to one HTTP status in internal/httpapi.
const (
	EINVALID      = "invalid"      // the input is malformed or breaks a rule
	ENOTFOUND     = "not_found"    // the named thing does not exist
	ECONFLICT     = "conflict"     // the request clashes with the current state
	EUNAUTHORIZED = "unauthorized" // no valid credential was presented
	EFORBIDDEN    = "forbidden"    // the credential does not allow this
	ETOOLARGE     = "too_large"    // the request body is over the limit
	EUNAVAILABLE  = "unavailable"  // a dependency (NATS, Vault, PostgreSQL) cannot be reached
	EINTERNAL     = "internal"     // anything else; details are logged, never returned
	EUNSUPPORTED  = "unsupported"  // the feature is not configured on this server
	ENOTMODIFIED  = "not_modified" // the caller already has the newest version
	// EJWTFULL: the change would take an account JWT past the size guard
	// (ROTATORD_MAX_ACCOUNT_JWT_BYTES) and rotatord cannot make room for it.
	EJWTFULL = "account_jwt_full"
)

// Error codes of the agent API.
const (
	ETOOMANYREQUESTS  = "too_many_requests"  // a rate limit was hit; RetryAfter says when to come back
	EDELIVERYMISMATCH = "delivery_mismatch"  // the agent's delivery is not the one this endpoint serves
	ECREDEXPIRED      = "credential_expired" // the presented key's JWT has expired: an operator must reissue
)

// Error is an error meant to be shown to the caller: Message is safe to
// return over the API, and Code says which kind of failure it is.
type Error struct {
	Code    string
	Message string
}

// Error returns the message.
func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Message
}

// Is reports whether target is an *Error of the same code, so that
// errors.Is(err, rotatord.ErrNotFound) holds for every not-found error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Message == "" || t.Message == e.Message)
}

// Sentinels for errors.Is; they match any *Error with the same code.
var (
	ErrInvalid      = &Error{Code: EINVALID}
	ErrNotFound     = &Error{Code: ENOTFOUND}
	ErrConflict     = &Error{Code: ECONFLICT}
	ErrUnauthorized = &Error{Code: EUNAUTHORIZED}
	ErrForbidden    = &Error{Code: EFORBIDDEN}
	ErrUnavailable  = &Error{Code: EUNAVAILABLE}
	ErrUnsupported  = &Error{Code: EUNSUPPORTED}
	ErrNotModified  = &Error{Code: ENOTMODIFIED}
	ErrJWTFull      = &Error{Code: EJWTFULL}
)

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, or EINTERNAL.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the caller-safe message of the first *Error in err's
// chain; for any other error it returns a generic text, never err's own.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Error()
	}
	return "internal error"
}

// RetryError is an error that says when to try again (a rate limit): it
// unwraps to its *Error, so ErrorCode and ErrorMessage see that.
type RetryError struct {
	Err   *Error
	After time.Duration
}

// Error returns the message of the wrapped *Error.
func (e *RetryError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped *Error.
func (e *RetryError) Unwrap() error { return e.Err }

// TooManyRequests returns an ETOOMANYREQUESTS error that asks the caller to
// come back after after.
func TooManyRequests(after time.Duration, format string, args ...any) error {
	return &RetryError{Err: Errorf(ETOOMANYREQUESTS, format, args...), After: after}
}

// RetryAfter returns how long err asks the caller to wait, if it does.
func RetryAfter(err error) (time.Duration, bool) {
	var e *RetryError
	if errors.As(err, &e) {
		return e.After, true
	}
	return 0, false
}

// RotationInFlightError is the conflict of starting a rotation of an agent
// while another one of it is in flight; Rotation is that one's ID, which
// the API returns with the error.
type RotationInFlightError struct {
	Agent    string
	Rotation string
}

// Error names the rotation in flight.
func (e *RotationInFlightError) Error() string {
	return fmt.Sprintf("rotation %s of agent %s is in flight", e.Rotation, e.Agent)
}

// Unwrap makes it an ECONFLICT *Error with the same message.
func (e *RotationInFlightError) Unwrap() error { return &Error{Code: ECONFLICT, Message: e.Error()} }
