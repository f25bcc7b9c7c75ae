package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// accountView is what the CLI reads of an Account.
type accountView struct {
	Name            string       `json:"name"`
	PublicKey       string       `json:"public_key"`
	System          bool         `json:"system"`
	Description     string       `json:"description"`
	Limits          accountLimit `json:"limits"`
	SigningKeys     []string     `json:"signing_keys"`
	Revocations     int          `json:"revocations"`
	KeepRevocations bool         `json:"keep_revocations"`
	Agents          int          `json:"agents"`
	KeyRotation     *struct {
		Schedule string     `json:"schedule"`
		NextAt   *time.Time `json:"next_at"`
	} `json:"key_rotation"`
}

// accountLimit is the Limits schema; -1 is unlimited.
type accountLimit struct {
	Conn    int64 `json:"conn"`
	Subs    int64 `json:"subs"`
	Payload int64 `json:"payload"`
	Data    int64 `json:"data"`
}

// limitFlags are --conn, --subs, --payload and --data; set reports which
// were given.
type limitFlags struct {
	l   accountLimit
	set map[string]bool
}

func (f *limitFlags) bind(c *cli, def int64) {
	f.l = accountLimit{Conn: def, Subs: def, Payload: def, Data: def}
	c.fs.Int64Var(&f.l.Conn, "conn", def, "connections (-1: unlimited)")
	c.fs.Int64Var(&f.l.Subs, "subs", def, "subscriptions (-1: unlimited)")
	c.fs.Int64Var(&f.l.Payload, "payload", def, "maximum message payload in bytes (-1: unlimited)")
	c.fs.Int64Var(&f.l.Data, "data", def, "data in bytes (-1: unlimited)")
}

// given reads which limit flags were on the command line; call after parse.
func (f *limitFlags) given(c *cli) bool {
	f.set = map[string]bool{}
	c.fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "conn", "subs", "payload", "data":
			f.set[fl.Name] = true
		}
	})
	return len(f.set) > 0
}

// over returns base with the given limits changed.
func (f *limitFlags) over(base accountLimit) accountLimit {
	if f.set["conn"] {
		base.Conn = f.l.Conn
	}
	if f.set["subs"] {
		base.Subs = f.l.Subs
	}
	if f.set["payload"] {
		base.Payload = f.l.Payload
	}
	if f.set["data"] {
		base.Data = f.l.Data
	}
	return base
}

func accountPath(name string) string { return "/v1/accounts/" + url.PathEscape(name) }

func runAccountsList(ctx context.Context, c *cli, args []string) error {
	if _, err := c.parse(args, 0); err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	// Accounts come in one answer, not in pages.
	var all struct {
		Accounts []json.RawMessage `json:"accounts"`
	}
	if _, err := api.get(ctx, "/v1/accounts", nil, &all); err != nil {
		return err
	}
	return printPage(c, "accounts", listPage{items: all.Accounts}, printAccounts)
}

func runAccountsShow(ctx context.Context, c *cli, args []string) error {
	return showOne(ctx, c, args, accountPath, c.printAccount)
}

func runAccountsAdd(ctx context.Context, c *cli, args []string) error {
	description := c.fs.String("description", "", "what the account is for")
	keyRotation := c.fs.String("key-rotation", "", `schedule staged rotations of the account's signing key ("@every 2160h", a cron expression)`)
	var limits limitFlags
	limits.bind(c, -1)
	pos, err := c.parse(args, 1)
	if err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	body := map[string]any{"name": pos[0], "description": *description, "limits": limits.l}
	if *keyRotation != "" {
		body["key_rotation"] = map[string]string{"schedule": *keyRotation}
	}
	raw, err := api.do(ctx, http.MethodPost, "/v1/accounts", nil, body)
	if err != nil {
		return err
	}
	return c.printAccount(raw)
}

func runAccountsUpdate(ctx context.Context, c *cli, args []string) error {
	description := c.fs.String("description", "", "new description")
	keep := c.fs.String("keep-revocations", "", "true: keep revocation entries until they expire; false: fold them into '*' (see README)")
	keyRotation := c.fs.String("key-rotation", "", `schedule staged rotations of the account's signing key ("@every 2160h", a cron expression), or "off"`)
	var limits limitFlags
	limits.bind(c, -1)
	pos, err := c.parse(args, 1)
	if err != nil {
		return err
	}
	patch := map[string]any{}
	c.fs.Visit(func(fl *flag.Flag) {
		if fl.Name == "description" {
			patch["description"] = *description
		}
	})
	switch *keyRotation {
	case "":
	case "off":
		patch["key_rotation"] = nil
	default:
		patch["key_rotation"] = map[string]string{"schedule": *keyRotation}
	}
	if *keep != "" {
		b, err := strconv.ParseBool(*keep)
		if err != nil {
			return fmt.Errorf("--keep-revocations %q: want true or false", *keep)
		}
		patch["keep_revocations"] = b
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	if limits.given(c) {
		// The API takes all four limits: start from the current ones.
		var cur accountView
		if _, err := api.get(ctx, accountPath(pos[0]), nil, &cur); err != nil {
			return err
		}
		patch["limits"] = limits.over(cur.Limits)
	}
	if len(patch) == 0 {
		return fmt.Errorf("nothing to change; usage: rotatord %s", c.usage)
	}
	raw, err := api.do(ctx, http.MethodPatch, accountPath(pos[0]), nil, patch)
	if err != nil {
		return err
	}
	return c.printAccount(raw)
}

func (c *cli) printAccount(raw []byte) error {
	if c.output == "json" {
		return printJSON(c.stdout, raw)
	}
	a, err := decodeView[accountView](raw)
	if err != nil {
		return err
	}
	t := newTable(c.stdout)
	t.row("Name:", a.Name)
	t.row("Public key:", a.PublicKey)
	t.row("System:", strconv.FormatBool(a.System))
	t.row("Description:", a.Description)
	t.row("Limits:", fmtLimits(a.Limits))
	t.row("Signing keys:", fmtList(a.SigningKeys))
	t.row("Agents:", strconv.Itoa(a.Agents))
	t.row("Revocations:", strconv.Itoa(a.Revocations))
	t.row("Keep revocations:", strconv.FormatBool(a.KeepRevocations))
	if k := a.KeyRotation; k != nil {
		t.row("Key rotation:", k.Schedule+", next "+fmtTime(k.NextAt))
	} else {
		t.row("Key rotation:", "off")
	}
	return t.flush()
}

func printAccounts(w io.Writer, accounts []accountView) error {
	t := newTable(w, "NAME", "SYSTEM", "AGENTS", "REVOCATIONS", "LIMITS", "PUBLIC KEY")
	for _, a := range accounts {
		t.row(a.Name, strconv.FormatBool(a.System), strconv.Itoa(a.Agents), strconv.Itoa(a.Revocations), fmtLimits(a.Limits), a.PublicKey)
	}
	return t.flush()
}

func fmtLimits(l accountLimit) string {
	f := func(n int64) string {
		if n < 0 {
			return "unlimited"
		}
		return strconv.FormatInt(n, 10)
	}
	return fmt.Sprintf("conn %s, subs %s, payload %s, data %s", f(l.Conn), f(l.Subs), f(l.Payload), f(l.Data))
}
