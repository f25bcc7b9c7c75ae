package distribute

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/rotatord/rotatord"
)

// casMismatch is what KV v2 answers when a write's cas option is not the
// secret's current version.
const casMismatch = "check-and-set parameter did not match the current version"

// vaultError is a failure talking to Vault, said in our words. Its chain
// holds a *rotatord.Error (so rotatord.ErrorCode and errors.Is with the
// domain sentinels work, and the message is safe to show) and the client's
// own error (for errors.As with *vaultapi.ResponseError or net errors). Its
// text never includes the cause's, which carries request URLs.
type vaultError struct {
	domain *rotatord.Error
	cause  error
}

func (e *vaultError) Error() string   { return e.domain.Message }
func (e *vaultError) Unwrap() []error { return []error{e.domain, e.cause} }

// vaultFail classifies err from a vault/api call: sealed, unavailable
// (down, timed out, 5xx, rate limited), refused (403, 404, other 4xx), or
// a check-and-set conflict.
func vaultFail(err error) error {
	var ve *vaultError
	if errors.As(err, &ve) {
		return err
	}
	code, msg := classify(err)
	return &vaultError{domain: &rotatord.Error{Code: code, Message: msg}, cause: err}
}

func classify(err error) (code, msg string) {
	var re *vaultapi.ResponseError
	if errors.As(err, &re) {
		text := vaultMessages(re.Errors)
		switch {
		case re.StatusCode == http.StatusServiceUnavailable && strings.Contains(strings.ToLower(text), "sealed"):
			return rotatord.EUNAVAILABLE, "vault is sealed"
		case re.StatusCode == http.StatusForbidden:
			return rotatord.EUNAVAILABLE, "vault refused: permission denied (403)"
		case re.StatusCode == http.StatusBadRequest && strings.Contains(text, casMismatch):
			return rotatord.ECONFLICT, "vault check-and-set failed: the secret changed since it was read"
		case re.StatusCode == http.StatusTooManyRequests:
			return rotatord.EUNAVAILABLE, "vault unavailable: rate limited (429)"
		case re.StatusCode >= 500, re.StatusCode == http.StatusPreconditionFailed:
			if text == "" {
				text = strings.ToLower(http.StatusText(re.StatusCode))
			}
			return rotatord.EUNAVAILABLE, fmt.Sprintf("vault unavailable: %s (%d)", text, re.StatusCode)
		case re.StatusCode == http.StatusNotFound:
			if text == "" {
				text = "not found"
			}
			return rotatord.EUNAVAILABLE, fmt.Sprintf("vault refused: %s (404)", text)
		default:
			if text == "" {
				text = strings.ToLower(http.StatusText(re.StatusCode))
			}
			return rotatord.EINTERNAL, fmt.Sprintf("vault refused: %s (%d)", text, re.StatusCode)
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return rotatord.EUNAVAILABLE, "vault request canceled"
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return rotatord.EUNAVAILABLE, "vault unavailable: request timed out"
	case errors.Is(err, syscall.ECONNREFUSED):
		return rotatord.EUNAVAILABLE, "vault unavailable: connection refused"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return rotatord.EUNAVAILABLE, "vault unavailable: connection closed by the server"
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return rotatord.EUNAVAILABLE, "vault unavailable: " + dns.Error()
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return rotatord.EUNAVAILABLE, "vault unavailable: " + op.Error()
	}
	return rotatord.EUNAVAILABLE, "vault unavailable: " + innermost(err)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// innermost returns the text of the deepest single-wrapped error, which
// drops the request URL that *url.Error adds.
func innermost(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return clip(err.Error())
		}
		err = next
	}
}

// vaultMessages joins Vault's error strings on one line, without the
// "1 error occurred:" framing that some Vault versions add.
func vaultMessages(errs []string) string {
	var out []string
	for _, e := range errs {
		for _, line := range strings.Split(e, "\n") {
			line = strings.TrimSpace(line)
			line = strings.TrimSpace(strings.TrimPrefix(line, "*"))
			if line == "" || strings.HasSuffix(line, "error occurred:") || strings.HasSuffix(line, "errors occurred:") {
				continue
			}
			out = append(out, line)
		}
	}
	return clip(strings.Join(out, "; "))
}

func clip(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// scrub is the last guard before an error leaves this package: should any
// secret have found its way into err's text, only the domain message is
// kept.
func scrub(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	text := err.Error()
	for _, s := range secrets {
		if len(s) >= 8 && strings.Contains(text, s) {
			return rotatord.Errorf(rotatord.ErrorCode(err), "%s", "delivery failed (details withheld: they contained a secret)")
		}
	}
	return err
}

// transient reports whether err says Vault is unreachable or failing for
// now (down, timed out, sealed, 5xx, rate limited) rather than refusing
// what was asked (bad credentials, missing policy, bad configuration).
func transient(err error) bool {
	var re *vaultapi.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode >= 500 || re.StatusCode == http.StatusTooManyRequests ||
			re.StatusCode == http.StatusPreconditionFailed
	}
	if code := rotatord.ErrorCode(err); code != rotatord.EUNAVAILABLE && code != rotatord.EINTERNAL {
		return false
	}
	return !errors.Is(err, context.Canceled)
}
