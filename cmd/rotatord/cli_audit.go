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

// runRotationsList prints one agent's rotations (--agent: every one, unless
// --limit), or the fleet's (at most --limit, 100 by default), newest first.
func runRotationsList(ctx context.Context, c *cli, args []string) error {
	agent := c.fs.String("agent", "", "only this agent's rotations (default: the whole fleet's)")
	account := c.fs.String("account", "", "the fleet's: only rotations of agents of this account")
	state := c.fs.String("state", "", "the fleet's: only rotations in this state (issued, distributed, confirmed, completed, rolled_back)")
	after := c.fs.String("after", "", "only rotations after this rotation ID (to go on where a listing stopped)")
	limit := c.fs.Int("limit", -1, "show at most this many, newest first (0: all; default all of one agent's, 100 of the fleet's)")
	if _, err := c.parse(args, 0); err != nil {
		return err
	}
	if *limit < -1 {
		return fmt.Errorf("--limit %d: want 0 or more", *limit)
	}
	q := url.Values{}
	setIf(q, "after", *after)
	path := "/v1/rotations"
	max := *limit
	if *agent != "" {
		if *account != "" || *state != "" {
			return fmt.Errorf("--account and --state list the fleet's rotations: not with --agent; usage: rotatord %s", c.usage)
		}
		path = agentPath(*agent, "/rotations")
		if max < 0 {
			max = 0
		}
	} else {
		setIf(q, "account", *account)
		setIf(q, "state", *state)
		if max < 0 {
			max = 100
		}
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	page, err := api.list(ctx, path, q, "rotations", max, 1000)
	if err != nil {
		return err
	}
	if page.next != "" {
		fmt.Fprintf(c.stderr, "stopped at %d rotations; there may be more: --after %s, or --limit 0\n", len(page.items), page.next)
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

// runAuditList prints audit events, newest first (oldest first with
// --oldest-first): at most --limit of them, or every one with --all,
// fetched page by page.
func runAuditList(ctx context.Context, c *cli, args []string) error {
	q := url.Values{}
	agent := c.fs.String("agent", "", "only events of this agent")
	action := c.fs.String("action", "", "only events with this action, such as credential.revoke")
	since := c.fs.String("since", "", "only events at or after this time: RFC 3339, a date (2006-01-02), or an age such as 90m, 24h or 7d")
	after := c.fs.String("after", "", "only events after this event ID (to go on where a listing stopped)")
	limit := c.fs.Int("limit", 100, "show at most this many events")
	all := c.fs.Bool("all", false, "show every matching event (ignores --limit)")
	oldest := c.fs.Bool("oldest-first", false, "show the oldest events first (default: the newest first)")
	if _, err := c.parse(args, 0); err != nil {
		return err
	}
	if *limit < 1 {
		return fmt.Errorf("--limit %d: want 1 or more", *limit)
	}
	setIf(q, "agent", *agent)
	setIf(q, "action", *action)
	setIf(q, "after", *after)
	if !*oldest {
		q.Set("order", "desc")
	}
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
