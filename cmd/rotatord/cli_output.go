package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
)

// The API's JSON as the CLI reads it for tables (api/openapi.yaml has the
// full shapes; JSON output prints the answers as they are).

type permListView struct {
	Allow []string `json:"allow"`
	Deny  []string `json:"deny"`
}

type agentView struct {
	Name        string    `json:"name"`
	Account     string    `json:"account"`
	State       string    `json:"state"`
	Permissions permsView `json:"permissions"`
	Rotation    struct {
		Schedule string `json:"schedule"`
		Grace    string `json:"grace"`
	} `json:"rotation"`
	Delivery   string `json:"delivery"`
	Credential *struct {
		PublicKey string     `json:"public_key"`
		JWTID     string     `json:"jwt_id"`
		IssuedAt  *time.Time `json:"issued_at"`
		ExpiresAt *time.Time `json:"expires_at"`
	} `json:"credential"`
	NextRotationAt *time.Time `json:"next_rotation_at"`
	CreatedAt      *time.Time `json:"created_at"`
	UpdatedAt      *time.Time `json:"updated_at"`
	Creds          string     `json:"creds"`

	claimsView
	Tags []string `json:"tags"`
	Role *string  `json:"role"`
}

type rotationView struct {
	ID            string     `json:"id"`
	Agent         string     `json:"agent"`
	Account       string     `json:"account"`
	State         string     `json:"state"`
	Trigger       string     `json:"trigger"`
	OldPublicKey  *string    `json:"old_public_key"`
	NewPublicKey  string     `json:"new_public_key"`
	Deadline      *time.Time `json:"deadline"`
	DistributedAt *time.Time `json:"distributed_at"`
	ConfirmedAt   *time.Time `json:"confirmed_at"`
	ConfirmedBy   string     `json:"confirmed_by"`
	Reason        string     `json:"reason"`
	CreatedAt     *time.Time `json:"created_at"`
	UpdatedAt     *time.Time `json:"updated_at"`
	FinishedAt    *time.Time `json:"finished_at"`
}

type auditView struct {
	ID        int64           `json:"id"`
	At        *time.Time      `json:"at"`
	Actor     string          `json:"actor"`
	Action    string          `json:"action"`
	Account   string          `json:"account"`
	Agent     string          `json:"agent"`
	PublicKey string          `json:"public_key"`
	Rotation  string          `json:"rotation"`
	Details   json.RawMessage `json:"details"`
}

// printJSON writes one JSON document, indented, as the API sent it.
func printJSON(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		return fmt.Errorf("indent JSON answer: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// printListJSON writes the items of a paged list as one document shaped like
// a page of the API: {"<key>": [...], "next": "..."} (next only when the
// listing stopped early).
func printListJSON(w io.Writer, key string, page listPage) error {
	items := page.items
	if items == nil {
		items = []json.RawMessage{}
	}
	doc := map[string]any{key: items}
	if page.next != "" {
		doc["next"] = page.next
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// table writes tab-separated rows aligned in columns.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

// row writes one row; every cell is made printable so that names, reasons or
// details from the server cannot move the cursor or break the columns.
func (t *table) row(cells ...string) {
	for i, c := range cells {
		cells[i] = cell(c)
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// cell returns s ready for a table: "-" when empty, quoted when it holds
// anything but printable characters and spaces.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	for _, r := range s {
		if r != ' ' && !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// fmtTime writes t in UTC to the second, "-" for none.
func fmtTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtList(l []string) string {
	return strings.Join(l, ",")
}

// printPage prints a list page: the API's JSON with -o json, else a table
// of its items decoded as T.
func printPage[T any](c *cli, key string, page listPage, table func(io.Writer, []T) error) error {
	if c.output == "json" {
		return printListJSON(c.stdout, key, page)
	}
	items, err := decodeItems[T](page.items)
	if err != nil {
		return err
	}
	return table(c.stdout, items)
}

func decodeItems[T any](items []json.RawMessage) ([]T, error) {
	out := make([]T, 0, len(items))
	for _, raw := range items {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("decode answer: %w", err)
		}
		out = append(out, v)
	}
	return out, nil
}

func decodeView[T any](raw []byte) (T, error) {
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("decode answer: %w", err)
	}
	return v, nil
}

func printAgent(w io.Writer, a agentView) error {
	t := newTable(w)
	t.row("Name:", a.Name)
	t.row("Account:", a.Account)
	t.row("State:", a.State)
	t.row("Delivery:", a.Delivery)
	t.row("Schedule:", a.Rotation.Schedule)
	t.row("Grace:", a.Rotation.Grace)
	t.row("Next rotation:", fmtTime(a.NextRotationAt))
	if c := a.Credential; c != nil {
		t.row("Public key:", c.PublicKey)
		t.row("JWT ID:", c.JWTID)
		t.row("Issued:", fmtTime(c.IssuedAt))
		t.row("Expires:", fmtTime(c.ExpiresAt))
	} else {
		t.row("Public key:", "-")
	}
	role := ""
	if a.Role != nil {
		role = *a.Role
	}
	t.row("Role:", role)
	t.row("Tags:", fmtList(a.Tags))
	claimRows(t, a.Permissions, a.claimsView)
	t.row("Created:", fmtTime(a.CreatedAt))
	t.row("Updated:", fmtTime(a.UpdatedAt))
	return t.flush()
}

func printAgents(w io.Writer, agents []agentView) error {
	t := newTable(w, "NAME", "ACCOUNT", "STATE", "DELIVERY", "SCHEDULE", "NEXT ROTATION", "PUBLIC KEY")
	for _, a := range agents {
		key := ""
		if a.Credential != nil {
			key = a.Credential.PublicKey
		}
		t.row(a.Name, a.Account, a.State, a.Delivery, a.Rotation.Schedule, fmtTime(a.NextRotationAt), key)
	}
	return t.flush()
}

func printRotation(w io.Writer, r rotationView) error {
	old := ""
	if r.OldPublicKey != nil {
		old = *r.OldPublicKey
	}
	t := newTable(w)
	t.row("ID:", r.ID)
	t.row("Agent:", r.Agent)
	t.row("Account:", r.Account)
	t.row("State:", r.State)
	t.row("Trigger:", r.Trigger)
	t.row("Old key:", old)
	t.row("New key:", r.NewPublicKey)
	t.row("Created:", fmtTime(r.CreatedAt))
	t.row("Distributed:", fmtTime(r.DistributedAt))
	t.row("Deadline:", fmtTime(r.Deadline))
	t.row("Confirmed:", fmtTime(r.ConfirmedAt))
	t.row("Confirmed by:", r.ConfirmedBy)
	t.row("Finished:", fmtTime(r.FinishedAt))
	t.row("Reason:", r.Reason)
	return t.flush()
}

func printRotations(w io.Writer, rots []rotationView) error {
	t := newTable(w, "ID", "AGENT", "STATE", "TRIGGER", "CREATED", "FINISHED", "NEW KEY", "REASON")
	for _, r := range rots {
		t.row(r.ID, r.Agent, r.State, r.Trigger, fmtTime(r.CreatedAt), fmtTime(r.FinishedAt), r.NewPublicKey, r.Reason)
	}
	return t.flush()
}

func printAudit(w io.Writer, events []auditView) error {
	t := newTable(w, "ID", "AT", "ACTOR", "ACTION", "ACCOUNT", "AGENT", "PUBLIC KEY", "ROTATION", "DETAILS")
	for _, e := range events {
		t.row(strconv.FormatInt(e.ID, 10), fmtTime(e.At), e.Actor, e.Action, e.Account, e.Agent, e.PublicKey, e.Rotation, details(e.Details))
	}
	return t.flush()
}

// details writes an event's details as compact JSON, "" for none.
func details(raw json.RawMessage) string {
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return ""
	}
	if s := buf.String(); s != "{}" && s != "null" {
		return s
	}
	return ""
}
