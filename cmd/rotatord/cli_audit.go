package main

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// auditPageSize is the page size of audit list --all (the API's maximum).
const auditPageSize = 1000

func runRotationsList(ctx context.Context, c *cli, args []string) error {
	agent := c.fs.String("agent", "", "the agent (required)")
	limit := c.fs.Int("limit", 0, "show at most this many, newest first (0: all)")
	if _, err := c.parse(args, 0); err != nil {
		return err
	}
	if *agent == "" {
		return fmt.Errorf("--agent is required; usage: rotatord %s", c.usage)
	}
	if *limit < 0 {
		return fmt.Errorf("--limit %d: want 0 or more", *limit)
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	page, err := api.list(ctx, agentPath(*agent, "/rotations"), nil, "rotations", *limit, 1000)
	if err != nil {
		return err
	}
	return printPage(c, "rotations", page, printRotations)
}

func runRotationsShow(ctx context.Context, c *cli, args []string) error {
	return showOne(ctx, c, args, func(id string) string { return "/v1/rotations/" + url.PathEscape(id) },
		func(raw []byte) error {
			rot, err := decodeView[rotationView](raw)
			if err != nil {
				return err
			}
			return c.printRotation(raw, rot)
		})
}

// runAuditList prints audit events, oldest first: at most --limit of them,
// or every one with --all, fetched page by page.
func runAuditList(ctx context.Context, c *cli, args []string) error {
	q := url.Values{}
	agent := c.fs.String("agent", "", "only events of this agent")
	action := c.fs.String("action", "", "only events with this action, such as credential.revoke")
	since := c.fs.String("since", "", "only events at or after this time: RFC 3339, a date (2006-01-02), or an age such as 90m, 24h or 7d")
	after := c.fs.String("after", "", "only events after this event ID (to go on where a listing stopped)")
	limit := c.fs.Int("limit", 100, "show at most this many events")
	all := c.fs.Bool("all", false, "show every matching event (ignores --limit)")
	if _, err := c.parse(args, 0); err != nil {
		return err
	}
	if *limit < 1 {
		return fmt.Errorf("--limit %d: want 1 or more", *limit)
	}
	setIf(q, "agent", *agent)
	setIf(q, "action", *action)
	setIf(q, "after", *after)
	if *since != "" {
		t, err := parseSince(*since, time.Now())
		if err != nil {
			return err
		}
		q.Set("since", t.UTC().Format(time.RFC3339Nano))
	}
	max := *limit
	if *all {
		max = 0
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	page, err := api.list(ctx, "/v1/audit", q, "events", max, auditPageSize)
	if err != nil {
		return err
	}
	if page.next != "" {
		fmt.Fprintf(c.stderr, "stopped at %d events; there may be more: --after %s, or --all\n", len(page.items), page.next)
	}
	return printPage(c, "events", page, printAudit)
}

func setIf(q url.Values, key, value string) {
	if value != "" {
		q.Set(key, value)
	}
}

// parseSince reads an RFC 3339 time, a date (midnight UTC), or an age before
// now: a Go duration (90m, 24h) or a number of days (7d).
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	var age time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return time.Time{}, sinceError(s)
		}
		age = time.Duration(n) * 24 * time.Hour
	} else {
		d, err := time.ParseDuration(s)
		if err != nil {
			return time.Time{}, sinceError(s)
		}
		age = d
	}
	if age < 0 {
		return time.Time{}, sinceError(s)
	}
	return now.Add(-age), nil
}

func sinceError(s string) error {
	return fmt.Errorf("--since %q: want an RFC 3339 time, a date (2006-01-02) or an age such as 24h or 7d", s)
}
