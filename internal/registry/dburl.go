package registry

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// urlForm is what a database URL looks like, for error messages.
const urlForm = "want postgres://user:password@host:5432/dbname, or key=value settings such as host=db dbname=rotatord"

// checkURL finds the mistakes pgx would report confusingly or not at all:
// text that is neither a URL nor key=value settings, another scheme, and
// an '@' in the user or password (pgx then takes part of the password for
// the host). Messages show the URL as given, with the password hidden.
func checkURL(s string) error {
	shown := RedactURL(s)
	scheme, rest, isURL := strings.Cut(s, "://")
	if !isURL {
		if !strings.Contains(s, "=") {
			return fmt.Errorf("database url %q is not a PostgreSQL URL: %s", shown, urlForm)
		}
		return nil
	}
	if scheme != "postgres" && scheme != "postgresql" {
		return fmt.Errorf("database url %q: scheme %q is not postgres or postgresql: %s", shown, scheme, urlForm)
	}
	authority, _, _ := strings.Cut(rest, "/")
	authority, _, _ = strings.Cut(authority, "?")
	if strings.Count(authority, "@") > 1 {
		return fmt.Errorf("database url %q: the user or password holds '@'; write it as %%40 (percent-encoded)", shown)
	}
	return nil
}

// parseError rewrites a pgx parse error: pgx's text repeats the whole URL
// (password included); ours shows it as given with the password hidden.
func parseError(s string, err error) error {
	reason := err.Error()
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		if i := strings.LastIndex(reason, "`: "); i >= 0 {
			reason = reason[i+3:]
		}
	}
	// The reason may quote parts of the URL: never the password.
	reason = redact(reason, s)
	if pw := urlPassword(s); pw != "" {
		reason = strings.ReplaceAll(reason, pw, "xxxxx")
	}
	return fmt.Errorf("database url %q does not parse (%s): %s", RedactURL(s), reason, urlForm)
}

var (
	kvPassword    = regexp.MustCompile(`(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)
	queryPassword = regexp.MustCompile(`([?&]password=)[^&]*`)
)

// RedactURL returns a database URL or key=value string as given, with the
// password replaced by xxxxx; nothing else is re-encoded.
func RedactURL(s string) string {
	scheme, rest, isURL := strings.Cut(s, "://")
	if !isURL {
		return kvPassword.ReplaceAllString(s, "${1}xxxxx")
	}
	end := len(rest)
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		end = i
	}
	authority := rest[:end]
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return scheme + "://" + kvQueryRedact(rest)
	}
	user := authority[:at]
	if name, _, hasPW := strings.Cut(user, ":"); hasPW {
		user = name + ":xxxxx"
	}
	return scheme + "://" + user + authority[at:] + kvQueryRedact(rest[end:])
}

// kvQueryRedact hides a password given as a query parameter.
func kvQueryRedact(s string) string {
	return queryPassword.ReplaceAllString(s, "${1}xxxxx")
}

// urlPassword returns the password of a URL, "" for none.
func urlPassword(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return ""
	}
	pw, _ := u.User.Password()
	return pw
}

// connectError rewrites pgx's report of a failed connection, which names
// each address twice per attempt and each attempt once per TLS mode tried:
// ours names each address once, with what went wrong there.
func connectError(err error) error {
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		return err
	}
	var lines []string
	seen := map[string]bool{}
	add := func(e error) {
		line := e.Error()
		var op *net.OpError
		if errors.As(e, &op) {
			// "dial tcp 10.0.0.1:5432: connect: connection refused" repeats
			// the address of the line's start.
			line = strings.Replace(line, op.Error(), op.Err.Error(), 1)
		}
		line = dropSameHost(line)
		if !seen[line] {
			seen[line] = true
			lines = append(lines, line)
		}
	}
	inner := errors.Unwrap(ce)
	prefix := ""
	if inner != nil {
		if msg := inner.Error(); strings.HasPrefix(msg, "hostname resolving error: ") {
			prefix = "hostname resolving error: "
			inner = errors.Unwrap(inner)
		}
	}
	switch e := inner.(type) {
	case nil:
		return err
	case interface{ Unwrap() []error }:
		for _, one := range e.Unwrap() {
			add(one)
		}
	default:
		add(e)
	}
	who := ""
	if ce.Config != nil {
		who = " as user " + ce.Config.User
		if ce.Config.Database != "" {
			who += ", database " + ce.Config.Database
		}
	}
	return &connError{msg: fmt.Sprintf("cannot connect to PostgreSQL%s: %s%s", who, prefix, strings.Join(lines, "; ")), err: err}
}

// dropSameHost turns "10.0.0.1:5432 (10.0.0.1): ..." into "10.0.0.1:5432: ...";
// a host name that differs from the address stays.
func dropSameHost(line string) string {
	addr, rest, ok := strings.Cut(line, " (")
	if !ok {
		return line
	}
	host, after, ok := strings.Cut(rest, "): ")
	if !ok {
		return line
	}
	if h, _, err := net.SplitHostPort(addr); err == nil && h == host {
		return addr + ": " + after
	}
	return line
}

// connError is a connection failure with a readable message; the pgx error
// stays in the chain.
type connError struct {
	msg string
	err error
}

func (e *connError) Error() string { return e.msg }
func (e *connError) Unwrap() error { return e.err }
