package main

// `rotatord token create|list|revoke`: database commands, like migrate and
// init, for the host that holds the database URL. They work when no admin
// token exists yet (the first one is made here) or every one is lost. The
// same operations are served over REST for admin tokens (/v1/tokens).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/rotate"
)

const tokenUsage = `Usage:
  rotatord token create --name NAME --scope admin|rotate|read [--expires DURATION]
                                   create an API token and print it once; DURATION as
                                   30d, 12h or 90m (default: never expires)
  rotatord token list [--json]     every token: scope, state, created, expires, last used
  rotatord token revoke --name NAME [--force]
                                   stop the token now, on every replica; --force allows
                                   revoking the last admin token that still works

They read the database directly: --database-url (ROTATORD_DATABASE_URL).
`

// runToken dispatches `rotatord token ...`.
func runToken(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, tokenUsage)
		return errors.New("token: missing command (create, list or revoke)")
	}
	switch args[0] {
	case "create":
		return runTokenCreate(ctx, cfg, args[1:], stdout, stderr)
	case "list":
		return runTokenList(ctx, cfg, args[1:], stdout, stderr)
	case "revoke":
		return runTokenRevoke(ctx, cfg, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, tokenUsage)
		return nil
	}
	return fmt.Errorf("token: unknown command %q (rotatord token help lists them)", args[0])
}

func runTokenCreate(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("token create", stderr)
	name := fs.String("name", "", "token name (required)")
	scope := fs.String("scope", "", "admin, rotate or read (required)")
	expires := fs.String("expires", "", "lifetime such as 30d, 12h or 90m (default: never expires)")
	cfg.bind(fs, "database-url")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" || *scope == "" {
		return errors.New("--name and --scope are required")
	}
	life, err := rotate.ParseTokenLifetime(*expires)
	if err != nil {
		return err
	}
	store, svc, err := openService(ctx, cfg, false)
	if err != nil {
		return err
	}
	defer store.Close()
	secret, t, err := svc.IssueToken(ctx, rotate.Actor("cli:token"), rotate.TokenInput{Name: *name, Scope: rotatord.Scope(*scope), Expires: life})
	if err != nil {
		return cliError(err)
	}
	until := "it never expires"
	if t.ExpiresAt != nil {
		until = "it expires at " + t.ExpiresAt.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(stderr, "created %s token %q (%s); it is shown once, store it now\n", t.Scope, t.Name, until)
	fmt.Fprintln(stdout, secret)
	return nil
}

// tokenView is a token as `token list --json` prints it: the shape of
// GET /v1/tokens.
type tokenView struct {
	Name       string     `json:"name"`
	Scope      string     `json:"scope"`
	State      string     `json:"state"`
	CreatedAt  time.Time  `json:"created_at"`
	CreatedBy  string     `json:"created_by"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
}

func runTokenList(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("token list", stderr)
	asJSON := fs.Bool("json", false, "print JSON (as GET /v1/tokens answers) instead of a table")
	cfg.bind(fs, "database-url")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("token list takes no arguments, got %q", fs.Args())
	}
	store, svc, err := openService(ctx, cfg, false)
	if err != nil {
		return err
	}
	defer store.Close()
	tokens, err := svc.Tokens(ctx)
	if err != nil {
		return cliError(err)
	}
	now := svc.Now()
	views := make([]tokenView, 0, len(tokens))
	for _, t := range tokens {
		views = append(views, tokenView{Name: t.Name, Scope: string(t.Scope), State: t.State(now),
			CreatedAt: t.CreatedAt.UTC(), CreatedBy: t.CreatedBy, ExpiresAt: utcPtr(t.ExpiresAt),
			LastUsedAt: utcPtr(t.LastUsedAt), RevokedAt: utcPtr(t.RevokedAt)})
	}
	if *asJSON {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"tokens": views}); err != nil {
			return fmt.Errorf("encode tokens: %w", err)
		}
		_, err := stdout.Write(buf.Bytes())
		return err
	}
	tw := newTable(stdout, "NAME", "SCOPE", "STATE", "CREATED", "EXPIRES", "LAST USED", "CREATED BY")
	for _, v := range views {
		tw.row(v.Name, v.Scope, v.State, fmtTime(&v.CreatedAt), fmtTime(v.ExpiresAt), fmtTime(v.LastUsedAt), v.CreatedBy)
	}
	return tw.flush()
}

func runTokenRevoke(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("token revoke", stderr)
	name := fs.String("name", "", "token name (required)")
	force := fs.Bool("force", false, "allow revoking the last admin token that still works")
	cfg.bind(fs, "database-url")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		return errors.New("--name is required")
	}
	store, svc, err := openService(ctx, cfg, false)
	if err != nil {
		return err
	}
	defer store.Close()
	t, revoked, err := svc.RevokeToken(ctx, rotate.Actor("cli:token"), *name, rotate.RevokeOptions{LastAdmin: *force})
	if errors.Is(err, rotatord.ErrConflict) {
		return errors.New(rotatord.ErrorMessage(err) + ", or pass --force")
	}
	if err != nil {
		return cliError(err)
	}
	if !revoked {
		fmt.Fprintf(stderr, "token %q was revoked already (at %s); nothing changed\n", t.Name, fmtTime(t.RevokedAt))
		return nil
	}
	fmt.Fprintf(stderr, "revoked %s token %q; it is refused from now on\n", t.Scope, t.Name)
	return nil
}

// cliError is err as one line for a database command: the caller-safe
// message of a domain error (a name taken, not found), err itself otherwise.
func cliError(err error) error {
	var e *rotatord.Error
	if errors.As(err, &e) && e.Code != rotatord.EINTERNAL && e.Code != rotatord.EUNAVAILABLE {
		return errors.New(e.Error())
	}
	return err
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
