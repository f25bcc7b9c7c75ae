package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// roleView is what the CLI reads of a Role.
type roleView struct {
	Name        string    `json:"name"`
	Account     string    `json:"account"`
	Description string    `json:"description"`
	SigningKey  string    `json:"signing_key"`
	Permissions permsView `json:"permissions"`
	claimsView
	Agents       int        `json:"agents"`
	CreatedAt    *time.Time `json:"created_at"`
	UpdatedAt    *time.Time `json:"updated_at"`
	ScopeChanged *bool      `json:"scope_changed"`
	Notice       string     `json:"notice"`
}

func rolesPath(account string) string { return accountPath(account) + "/roles" }

func rolePath(account, role string) string { return rolesPath(account) + "/" + url.PathEscape(role) }

func runRolesList(ctx context.Context, c *cli, args []string) error {
	pos, err := c.parse(args, 1)
	if err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	var all struct {
		Roles []json.RawMessage `json:"roles"`
	}
	if _, err := api.get(ctx, rolesPath(pos[0]), nil, &all); err != nil {
		return err
	}
	return printPage(c, "roles", listPage{items: all.Roles}, printRoles)
}

func runRolesShow(ctx context.Context, c *cli, args []string) error {
	pos, err := c.parse(args, 2)
	if err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	raw, err := api.get(ctx, rolePath(pos[0], pos[1]), nil, nil)
	if err != nil {
		return err
	}
	return c.printRole(raw)
}

func runRolesAdd(ctx context.Context, c *cli, args []string) error {
	var claims claimFlags
	description := c.fs.String("description", "", "what the role is for")
	claims.bind(c, false)
	pos, err := c.parse(args, 2)
	if err != nil {
		return err
	}
	body := map[string]any{"name": pos[1], "description": *description}
	if err := claims.body(c, body, permsView{}); err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	raw, err := api.do(ctx, http.MethodPost, rolesPath(pos[0]), nil, body)
	if err != nil {
		return err
	}
	if !anySet(c, "pub", "sub") {
		fmt.Fprintf(c.stderr, "note: no --pub or --sub: agents of role %s may neither publish nor subscribe\n", pos[1])
	}
	return c.printRole(raw)
}

// runRolesUpdate changes a role; only what is given changes. A permission
// flag replaces that list and keeps the others.
func runRolesUpdate(ctx context.Context, c *cli, args []string) error {
	var claims claimFlags
	description := c.fs.String("description", "", "new description")
	claims.bind(c, true)
	pos, err := c.parse(args, 2)
	if err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	body := map[string]any{}
	if c.isSet("description") {
		body["description"] = *description
	}
	var base permsView
	if anySet(c, permFlags...) {
		// The API replaces the whole permissions: start from the current ones.
		var cur roleView
		if _, err := api.get(ctx, rolePath(pos[0], pos[1]), nil, &cur); err != nil {
			return err
		}
		base = cur.Permissions
	}
	if err := claims.body(c, body, base); err != nil {
		return err
	}
	if len(body) == 0 {
		return fmt.Errorf("nothing to change; usage: rotatord %s", c.usage)
	}
	raw, err := api.do(ctx, http.MethodPatch, rolePath(pos[0], pos[1]), nil, body)
	if err != nil {
		return err
	}
	if r, err := decodeView[roleView](raw); err == nil && r.Notice != "" {
		fmt.Fprintf(c.stderr, "note: %s\n", r.Notice)
	}
	return c.printRole(raw)
}

func runRolesDelete(ctx context.Context, c *cli, args []string) error {
	pos, err := c.parse(args, 2)
	if err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	if _, err := api.do(ctx, http.MethodDelete, rolePath(pos[0], pos[1]), nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "deleted role %s of account %s\n", pos[1], pos[0])
	return nil
}

func (c *cli) printRole(raw []byte) error {
	if c.output == "json" {
		return printJSON(c.stdout, raw)
	}
	r, err := decodeView[roleView](raw)
	if err != nil {
		return err
	}
	t := newTable(c.stdout)
	t.row("Name:", r.Name)
	t.row("Account:", r.Account)
	t.row("Description:", r.Description)
	t.row("Signing key:", r.SigningKey)
	t.row("Agents:", strconv.Itoa(r.Agents))
	claimRows(t, r.Permissions, r.claimsView)
	t.row("Created:", fmtTime(r.CreatedAt))
	t.row("Updated:", fmtTime(r.UpdatedAt))
	return t.flush()
}

func printRoles(w io.Writer, roles []roleView) error {
	t := newTable(w, "NAME", "AGENTS", "PUBLISH", "SUBSCRIBE", "SIGNING KEY", "DESCRIPTION")
	for _, r := range roles {
		t.row(r.Name, strconv.Itoa(r.Agents), fmtList(r.Permissions.Pub.Allow), fmtList(r.Permissions.Sub.Allow), r.SigningKey, r.Description)
	}
	return t.flush()
}
