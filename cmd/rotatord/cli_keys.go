package main

// The CLI of fleet-wide rotations (accounts rotate-all, fleet-rotations)
// and signing-key rotations (accounts rotate-key, key-rotations), over the
// REST API. --wait shows progress: a bar redrawn in place when stdout is a
// terminal, one plain line per change otherwise (on stderr with -o json,
// so stdout keeps one JSON document).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const operatorUsage = `Usage:
  rotatord operator rotate-key [--wait [--wait-timeout DURATION]]
      rotate the operator's signing key; each step waits until every nats-server
      runs the operator JWT printed by rotatord nats-config (restart them one by one)
` + connectionUsage

const keyRotationsUsage = `Usage:
  rotatord key-rotations list [--account ACCOUNT]
  rotatord key-rotations show ID [--wait [--wait-timeout DURATION]]
  rotatord key-rotations complete ID
  rotatord key-rotations abandon ID
Start one with rotatord accounts rotate-key ACCOUNT [--role ROLE] [--mode staged|emergency],
or rotatord operator rotate-key. complete (account and role keys) removes the old key now:
agents still on it are dropped by the servers and re-issued under the new key; abandon
(staged only) keeps both keys.
` + connectionUsage

func runOperator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatchCLI(ctx, "operator", operatorUsage, map[string]cliCommand{
		"rotate-key": {"operator rotate-key [--wait] [flags]", runOperatorRotateKey},
	}, args, stdout, stderr)
}

const fleetRotationsUsage = `Usage:
  rotatord fleet-rotations list [--account ACCOUNT]
  rotatord fleet-rotations show ID [--wait]
  rotatord fleet-rotations resume ID
  rotatord fleet-rotations abort ID
Start one with rotatord accounts rotate-all ACCOUNT [--waves 1,10,100] [--halt-on-failure-rate 0.05].
` + connectionUsage

func runKeyRotations(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatchCLI(ctx, "key-rotations", keyRotationsUsage, map[string]cliCommand{
		"list": {"key-rotations list [--account ACCOUNT] [flags]",
			listByAccount("key rotation", "/v1/key-rotations", "key_rotations", printKeyRotations)},
		"show": {"key-rotations show ID [--wait] [flags]",
			showRotation("key rotation", keyRotationPath, (*cli).printKeyRotation, (*cli).waitKeyRotation, (*cli).keyRotationOutcome)},
		"complete": {"key-rotations complete ID [flags]", rotationAction(keyRotationPath, "complete", (*cli).printKeyRotation)},
		"abandon":  {"key-rotations abandon ID [flags]", rotationAction(keyRotationPath, "abandon", (*cli).printKeyRotation)},
	}, args, stdout, stderr)
}

func runFleetRotations(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatchCLI(ctx, "fleet-rotations", fleetRotationsUsage, map[string]cliCommand{
		"list": {"fleet-rotations list [--account ACCOUNT] [flags]",
			listByAccount("fleet rotation", "/v1/fleet-rotations", "fleet_rotations", printFleets)},
		"show": {"fleet-rotations show ID [--wait] [flags]",
			showRotation("fleet rotation", fleetRotationPath, (*cli).printFleet, (*cli).waitFleet, (*cli).fleetOutcome)},
		"resume": {"fleet-rotations resume ID [flags]", rotationAction(fleetRotationPath, "resume", (*cli).printFleet)},
		"abort":  {"fleet-rotations abort ID [flags]", rotationAction(fleetRotationPath, "abort", (*cli).printFleet)},
	}, args, stdout, stderr)
}

// fleetView is what the CLI reads of a FleetRotation.
type fleetView struct {
	ID                string  `json:"id"`
	Account           string  `json:"account"`
	Role              *string `json:"role"`
	State             string  `json:"state"`
	Waves             []int   `json:"waves"`
	HaltOnFailureRate float64 `json:"halt_on_failure_rate"`
	Wave              int     `json:"wave"`
	KeyRotation       *string `json:"key_rotation"`
	Agents            int     `json:"agents"`
	Done              int     `json:"done"`
	Failed            int     `json:"failed"`
	Waiting           int     `json:"waiting"`
	InFlight          int     `json:"in_flight"`
	Progress          []struct {
		Wave         int        `json:"wave"`
		Percent      int        `json:"percent"`
		Agents       int        `json:"agents"`
		Done         int        `json:"done"`
		Failed       int        `json:"failed"`
		Waiting      int        `json:"waiting"`
		InFlight     int        `json:"in_flight"`
		AuthFailures int        `json:"auth_failures"`
		Resumed      bool       `json:"resumed"`
		StartedAt    *time.Time `json:"started_at"`
		EndedAt      *time.Time `json:"ended_at"`
	} `json:"progress"`
	Reason     string     `json:"reason"`
	CreatedAt  *time.Time `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

// keyRotationView is what the CLI reads of a KeyRotation (of the
// operator's signing key, an account's or a role's).
type keyRotationView struct {
	ID      string   `json:"id"`
	Kind    string   `json:"kind"`
	State   string   `json:"state"`
	OldKeys []string `json:"old_keys"`
	NewKey  string   `json:"new_key"`
	Servers []struct {
		Name      string     `json:"name"`
		ID        string     `json:"id"`
		TrustsNew bool       `json:"trusts_new_key"`
		TrustsOld bool       `json:"trusts_old_key"`
		UpToDate  bool       `json:"up_to_date"`
		LastSeen  *time.Time `json:"last_seen"`
	} `json:"servers"`
	WaitingFor      []string   `json:"waiting_for"`
	Waiting         string     `json:"waiting"`
	Actor           string     `json:"actor"`
	Account         *string    `json:"account"`
	Role            *string    `json:"role"`
	Mode            *string    `json:"mode"`
	Trigger         string     `json:"trigger"`
	FleetRotation   *string    `json:"fleet_rotation"`
	Stragglers      int        `json:"stragglers"`
	StragglerAgents []string   `json:"straggler_agents"`
	Reason          string     `json:"reason"`
	CreatedAt       *time.Time `json:"created_at"`
	StepAt          *time.Time `json:"step_started_at"`
	FinishedAt      *time.Time `json:"finished_at"`
}

// The fleet rotation states after which it waits for no one (halted waits
// for an operator).
func fleetStopped(state string) bool {
	return state == "completed" || state == "halted" || state == "aborted"
}

func fleetRotationPath(id string) string { return "/v1/fleet-rotations/" + url.PathEscape(id) }

func keyRotationPath(id string) string { return "/v1/key-rotations/" + url.PathEscape(id) }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// parseWaves reads --waves: comma-separated cumulative percents.
func parseWaves(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("--waves %q: want cumulative percents such as 1,10,100", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// waitFlags are --wait and --wait-timeout.
type waitFlags struct {
	wait    *bool
	timeout *time.Duration
}

func bindWait(c *cli, what string) waitFlags {
	return waitFlags{
		wait:    c.fs.Bool("wait", false, "wait until the "+what+" stops, showing its progress; a halted, aborted or waiting one exits non-zero"),
		timeout: c.fs.Duration("wait-timeout", 0, "give up waiting after this long (0: no limit)"),
	}
}

func (w waitFlags) context(ctx context.Context) (context.Context, context.CancelFunc) {
	if *w.timeout > 0 {
		return context.WithTimeout(ctx, *w.timeout)
	}
	return context.WithCancel(ctx)
}

// startedID reads the 202 answer {"id","state"}.
func startedID(raw []byte, what string) (id, state string, err error) {
	var started struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if err := json.Unmarshal(raw, &started); err != nil || started.ID == "" {
		return "", "", fmt.Errorf("decode answer of %s: %q", what, excerpt(raw, 200))
	}
	return started.ID, started.State, nil
}

func runAccountsRotateAll(ctx context.Context, c *cli, args []string) error {
	waves := c.fs.String("waves", "", "cumulative percents of the account's agents, comma-separated (server default 1,10,100)")
	rate := c.fs.Float64("halt-on-failure-rate", 0, "the fraction of a wave's agents that may fail before the operation halts (server default 0.05)")
	w := bindWait(c, "fleet rotation")
	pos, err := c.parse(args, 1)
	if err != nil {
		return err
	}
	body := map[string]any{}
	if *waves != "" {
		if body["waves"], err = parseWaves(*waves); err != nil {
			return err
		}
	}
	if c.isSet("halt-on-failure-rate") {
		body["halt_on_failure_rate"] = *rate
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	raw, err := api.do(ctx, http.MethodPost, accountPath(pos[0])+"/rotate-all", nil, body)
	if err != nil {
		return err
	}
	id, state, err := startedID(raw, "rotate-all")
	if err != nil {
		return err
	}
	if !*w.wait {
		return c.printStarted(raw, "FLEET ROTATION", id, pos[0], state)
	}
	ctx, cancel := w.context(ctx)
	defer cancel()
	p := c.newProgress()
	raw, f, err := c.waitFleet(ctx, api, id, p)
	if err != nil {
		return err
	}
	return c.fleetOutcome(raw, f)
}

func runAccountsRotateKey(ctx context.Context, c *cli, args []string) error {
	role := c.fs.String("role", "", "rotate this role's scoped signing key instead of the account's")
	mode := c.fs.String("mode", "staged", "staged (move every agent, then remove the old key) or emergency (remove the old key at once)")
	w := bindWait(c, "key rotation")
	pos, err := c.parse(args, 1)
	if err != nil {
		return err
	}
	if *mode != "staged" && *mode != "emergency" {
		return fmt.Errorf("--mode %q: want staged or emergency", *mode)
	}
	path := accountPath(pos[0]) + "/signing-keys/rotate"
	if *role != "" {
		path = accountPath(pos[0]) + "/roles/" + url.PathEscape(*role) + "/rotate"
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	raw, err := api.do(ctx, http.MethodPost, path, nil, map[string]any{"mode": *mode})
	if err != nil {
		return err
	}
	id, state, err := startedID(raw, "rotate-key")
	if err != nil {
		return err
	}
	if !*w.wait {
		return c.printStarted(raw, "KEY ROTATION", id, pos[0], state)
	}
	ctx, cancel := w.context(ctx)
	defer cancel()
	raw, k, err := c.waitKeyRotation(ctx, api, id, c.newProgress())
	if err != nil {
		return err
	}
	return c.keyRotationOutcome(raw, k)
}

func runOperatorRotateKey(ctx context.Context, c *cli, args []string) error {
	wait := c.fs.Bool("wait", false, "wait until the rotation is completed, telling each step and what it waits for")
	waitTimeout := c.fs.Duration("wait-timeout", 0, "give up waiting after this long (0: no limit; the rotation goes on in rotatord)")
	if _, err := c.parse(args, 0); err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	raw, err := api.do(ctx, http.MethodPost, "/v1/operator/signing-keys/rotate", nil, nil)
	if err != nil {
		return err
	}
	var started struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if err := json.Unmarshal(raw, &started); err != nil || started.ID == "" {
		return fmt.Errorf("decode answer of rotate-key: %q", excerpt(raw, 200))
	}
	fmt.Fprintf(c.stderr, "operator signing-key rotation %s started: the operator JWT now lists the new key;\n"+
		"run `rotatord nats-config` and paste its block into every nats-server's configuration, then restart them one by one\n", started.ID)
	if !*wait {
		if c.output == "json" {
			return printJSON(c.stdout, raw)
		}
		t := newTable(c.stdout, "KEY ROTATION", "KIND", "STATE")
		t.row(started.ID, "operator", started.State)
		return t.flush()
	}
	if *waitTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *waitTimeout)
		defer cancel()
	}
	raw, k, err := c.waitKeyRotation(ctx, api, started.ID, c.newProgress())
	if err != nil {
		return err
	}
	return c.keyRotationOutcome(raw, k)
}

func (c *cli) printStarted(raw []byte, what, id, account, state string) error {
	if c.output == "json" {
		return printJSON(c.stdout, raw)
	}
	t := newTable(c.stdout, what, "ACCOUNT", "STATE")
	t.row(id, account, state)
	return t.flush()
}

// listByAccount lists a collection of rotations (key "key" of the
// answer), newest first, optionally of one account.
func listByAccount[T any](what, path, key string, table func(io.Writer, []T) error) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, args []string) error {
		account := c.fs.String("account", "", "only "+what+"s of this account")
		limit := c.fs.Int("limit", 20, "at most this many, newest first")
		if _, err := c.parse(args, 0); err != nil {
			return err
		}
		api, err := c.client()
		if err != nil {
			return err
		}
		q := url.Values{}
		if *account != "" {
			q.Set("account", *account)
		}
		page, err := api.list(ctx, path, q, key, *limit, min(*limit, 100))
		if err != nil {
			return err
		}
		return printPage(c, key, page, table)
	}
}

// rotationAction POSTs .../action to the rotation ID names and prints
// the answer.
func rotationAction(path func(string) string, action string, print func(*cli, []byte) error) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, args []string) error {
		pos, err := c.parse(args, 1)
		if err != nil {
			return err
		}
		api, err := c.client()
		if err != nil {
			return err
		}
		raw, err := api.do(ctx, http.MethodPost, path(pos[0])+"/"+action, nil, nil)
		if err != nil {
			return err
		}
		return print(c, raw)
	}
}

// showRotation shows the rotation ID names, or with --wait follows it
// until it stops and prints how it ended.
func showRotation[T any](what string, path func(string) string, print func(*cli, []byte) error,
	wait func(*cli, context.Context, *apiClient, string, *progress) ([]byte, T, error),
	outcome func(*cli, []byte, T) error) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, args []string) error {
		w := bindWait(c, what)
		pos, err := c.parse(args, 1)
		if err != nil {
			return err
		}
		api, err := c.client()
		if err != nil {
			return err
		}
		if !*w.wait {
			raw, err := api.get(ctx, path(pos[0]), nil, nil)
			if err != nil {
				return err
			}
			return print(c, raw)
		}
		ctx, cancel := w.context(ctx)
		defer cancel()
		raw, v, err := wait(c, ctx, api, pos[0], c.newProgress())
		if err != nil {
			return err
		}
		return outcome(c, raw, v)
	}
}

// poller polls one resource, riding out a few failed polls (a replica
// restarting), every 200 ms at first and then up to every 2 s.
type poller struct {
	every    time.Duration
	failures int
}

// next waits before the next poll; it returns an error when the context
// ended or err (of the last poll) is not worth another try.
func (p *poller) next(ctx context.Context, c *cli, what string, err error) error {
	const maxFailures = 5
	if err != nil {
		if ctx.Err() != nil || !retryable(err) || p.failures+1 >= maxFailures {
			return fmt.Errorf("stopped waiting for %s (it goes on in rotatord): %w", what, err)
		}
		p.failures++
		fmt.Fprintf(c.stderr, "%s: %v; trying again\n", what, err)
	} else {
		p.failures = 0
	}
	if p.every == 0 {
		p.every = 200 * time.Millisecond
	}
	select {
	case <-ctx.Done():
		return fmt.Errorf("stopped waiting for %s (it goes on in rotatord): %w", what, ctx.Err())
	case <-time.After(p.every):
	}
	p.every = min(p.every*3/2, 2*time.Second)
	return nil
}

// waitFleet polls a fleet rotation until it completed, halted or was
// aborted, showing its progress.
func (c *cli) waitFleet(ctx context.Context, api *apiClient, id string, p *progress) ([]byte, fleetView, error) {
	var pl poller
	for {
		raw, err := api.get(ctx, fleetRotationPath(id), nil, nil)
		if err == nil {
			f, err := decodeView[fleetView](raw)
			if err != nil {
				return nil, f, err
			}
			p.fleet(f)
			if fleetStopped(f.State) {
				p.done()
				return raw, f, nil
			}
		}
		if err := pl.next(ctx, c, "fleet rotation "+id, err); err != nil {
			p.done()
			return nil, fleetView{}, err
		}
	}
}

// waitKeyRotation polls a key rotation until it ended or waits for an
// operator (an account's or role's stragglers, or its fleet rotation
// halted), showing each step and what it waits for, and its fleet
// rotation's progress.
func (c *cli) waitKeyRotation(ctx context.Context, api *apiClient, id string, p *progress) ([]byte, keyRotationView, error) {
	var pl poller
	for {
		raw, err := api.get(ctx, keyRotationPath(id), nil, nil)
		var k keyRotationView
		if err == nil {
			if k, err = decodeView[keyRotationView](raw); err != nil {
				return nil, k, err
			}
			switch {
			case k.State == "reissuing" && k.FleetRotation != nil:
				var f fleetView
				var fraw []byte
				if fraw, err = api.get(ctx, fleetRotationPath(*k.FleetRotation), nil, nil); err == nil {
					if f, err = decodeView[fleetView](fraw); err != nil {
						return nil, k, err
					}
					p.fleet(f)
					if f.State == "halted" {
						p.done()
						return raw, k, fmt.Errorf("key rotation %s: its re-issue, fleet rotation %s, halted: %s\n"+
							"resume it (rotatord fleet-rotations resume %s), or abort it; complete or abandon the key rotation",
							k.ID, f.ID, f.Reason, f.ID)
					}
				}
			default:
				line := fmt.Sprintf("key rotation %s of %s: %s", k.ID, keyOwnerOf(k), k.State)
				if k.Waiting != "" {
					line += ": " + k.Waiting
				}
				p.line(cell(line))
			}
			if err == nil && (k.FinishedAt != nil || k.State == "waiting") {
				p.done()
				return raw, k, nil
			}
		}
		if err := pl.next(ctx, c, "key rotation "+id, err); err != nil {
			p.done()
			return nil, keyRotationView{}, err
		}
	}
}

func keyOwnerOf(k keyRotationView) string {
	switch {
	case k.Kind == "operator":
		return "the operator"
	case k.Role != nil:
		return "role " + *k.Role + " of account " + deref(k.Account)
	}
	return "account " + deref(k.Account)
}

// fleetOutcome prints a fleet rotation that stopped; halted and aborted
// exit non-zero.
func (c *cli) fleetOutcome(raw []byte, f fleetView) error {
	if err := c.printFleet(raw); err != nil {
		return err
	}
	switch f.State {
	case "halted":
		return fmt.Errorf("fleet rotation %s halted: %s", f.ID, f.Reason)
	case "aborted":
		return fmt.Errorf("fleet rotation %s was aborted: %s", f.ID, f.Reason)
	}
	return nil
}

// keyRotationOutcome prints a key rotation that stopped; one waiting for
// stragglers exits non-zero, saying what to do.
func (c *cli) keyRotationOutcome(raw []byte, k keyRotationView) error {
	if err := c.printKeyRotation(raw); err != nil {
		return err
	}
	if k.State == "waiting" {
		return fmt.Errorf("key rotation %s waits for %d agents still on the old key (%s): they come back by themselves, "+
			"or rotatord key-rotations complete %s drops them (abandon keeps both keys)",
			k.ID, k.Stragglers, strings.Join(k.StragglerAgents, ", "), k.ID)
	}
	return nil
}

func (c *cli) printFleet(raw []byte) error {
	if c.output == "json" {
		return printJSON(c.stdout, raw)
	}
	f, err := decodeView[fleetView](raw)
	if err != nil {
		return err
	}
	t := newTable(c.stdout)
	t.row("ID:", f.ID)
	t.row("Account:", f.Account)
	if f.Role != nil {
		t.row("Role:", *f.Role)
	}
	t.row("State:", f.State)
	t.row("Waves:", fmtWaves(f.Waves))
	t.row("Halt on failure rate:", strconv.FormatFloat(f.HaltOnFailureRate, 'f', -1, 64))
	t.row("Wave:", fmt.Sprintf("%d of %d", f.Wave, len(f.Waves)))
	t.row("Agents:", fmt.Sprintf("%d: %d done, %d failed, %d waiting (%d in flight)", f.Agents, f.Done, f.Failed, f.Waiting, f.InFlight))
	if f.KeyRotation != nil {
		t.row("Key rotation:", *f.KeyRotation)
	}
	t.row("Reason:", f.Reason)
	t.row("Created:", fmtTime(f.CreatedAt))
	t.row("Finished:", fmtTime(f.FinishedAt))
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout)
	w := newTable(c.stdout, "WAVE", "PERCENT", "AGENTS", "DONE", "FAILED", "WAITING", "AUTH FAILURES", "STARTED", "ENDED")
	for _, p := range f.Progress {
		failed := strconv.Itoa(p.Failed)
		if p.Resumed {
			failed += " (resumed)"
		}
		w.row(strconv.Itoa(p.Wave), strconv.Itoa(p.Percent)+"%", strconv.Itoa(p.Agents), strconv.Itoa(p.Done), failed,
			strconv.Itoa(p.Waiting), strconv.Itoa(p.AuthFailures), fmtTime(p.StartedAt), fmtTime(p.EndedAt))
	}
	return w.flush()
}

func fmtWaves(waves []int) string {
	s := make([]string, len(waves))
	for i, w := range waves {
		s[i] = strconv.Itoa(w) + "%"
	}
	return strings.Join(s, ", ")
}

func printFleets(w io.Writer, fs []fleetView) error {
	t := newTable(w, "ID", "ACCOUNT", "STATE", "WAVE", "AGENTS", "DONE", "FAILED", "WAITING", "KEY ROTATION", "CREATED")
	for _, f := range fs {
		t.row(f.ID, f.Account, f.State, fmt.Sprintf("%d/%d", f.Wave, len(f.Waves)), strconv.Itoa(f.Agents), strconv.Itoa(f.Done),
			strconv.Itoa(f.Failed), strconv.Itoa(f.Waiting), deref(f.KeyRotation), fmtTime(f.CreatedAt))
	}
	return t.flush()
}

func (c *cli) printKeyRotation(raw []byte) error {
	if c.output == "json" {
		return printJSON(c.stdout, raw)
	}
	k, err := decodeView[keyRotationView](raw)
	if err != nil {
		return err
	}
	t := newTable(c.stdout)
	t.row("ID:", k.ID)
	t.row("Kind:", k.Kind)
	t.row("Key of:", keyOwnerOf(k))
	if k.Mode != nil {
		t.row("Mode:", *k.Mode)
	}
	t.row("State:", k.State)
	t.row("Trigger:", k.Trigger)
	t.row("New key:", k.NewKey)
	t.row("Old keys:", fmtList(k.OldKeys))
	if k.Kind == "operator" {
		t.row("Waiting for:", strings.Join(k.WaitingFor, ", "))
	} else {
		t.row("Fleet rotation:", deref(k.FleetRotation))
		t.row("Stragglers:", fmt.Sprintf("%d %s", k.Stragglers, fmtList(k.StragglerAgents)))
	}
	t.row("Waiting:", k.Waiting)
	t.row("Reason:", k.Reason)
	t.row("Started by:", k.Actor)
	t.row("Created:", fmtTime(k.CreatedAt))
	t.row("Step since:", fmtTime(k.StepAt))
	t.row("Finished:", fmtTime(k.FinishedAt))
	if err := t.flush(); err != nil {
		return err
	}
	if len(k.Servers) == 0 {
		return nil
	}
	fmt.Fprintln(c.stdout)
	t = newTable(c.stdout, "SERVER", "ID", "TRUSTS NEW KEY", "TRUSTS OLD KEY", "UP TO DATE", "LAST SEEN")
	for _, s := range k.Servers {
		t.row(s.Name, s.ID, strconv.FormatBool(s.TrustsNew), strconv.FormatBool(s.TrustsOld), strconv.FormatBool(s.UpToDate), fmtTime(s.LastSeen))
	}
	return t.flush()
}

func printKeyRotations(w io.Writer, ks []keyRotationView) error {
	t := newTable(w, "ID", "ACCOUNT", "ROLE", "MODE", "STATE", "STRAGGLERS", "NEW KEY", "CREATED")
	for _, k := range ks {
		t.row(k.ID, deref(k.Account), deref(k.Role), deref(k.Mode), k.State, strconv.Itoa(k.Stragglers), k.NewKey, fmtTime(k.CreatedAt))
	}
	return t.flush()
}

// progress shows a fleet rotation's progress as it changes: on a terminal
// one bar redrawn in place, otherwise one line per change.
type progress struct {
	w    io.Writer
	bar  bool
	last string
	drew bool // a bar is on the line, without its newline
}

// newProgress writes to stdout: a bar when it is a terminal (and the
// output is a table), lines otherwise; with -o json to stderr.
func (c *cli) newProgress() *progress {
	return &progress{w: c.stderr, bar: c.output != "json" && isTerminal(c.stderr)}
}

const barWidth = 30

// fleetLine says where a fleet rotation is, in one line.
func fleetLine(f fleetView) string {
	wave := ""
	if f.Wave > 0 && f.Wave <= len(f.Waves) {
		wave = fmt.Sprintf(" wave %d/%d (%d%%)", f.Wave, len(f.Waves), f.Waves[f.Wave-1])
	}
	return fmt.Sprintf("fleet rotation %s: %s%s: %d/%d done, %d failed, %d waiting", f.ID, f.State, wave, f.Done, f.Agents, f.Failed, f.Waiting)
}

// fleetBar is the bar of a fleet rotation.
func fleetBar(f fleetView) string {
	filled, pct := 0, 100
	if f.Agents > 0 {
		filled = (f.Done + f.Failed) * barWidth / f.Agents
		pct = (f.Done + f.Failed) * 100 / f.Agents
	}
	wave := "-"
	if f.Wave > 0 {
		wave = fmt.Sprintf("%d/%d", f.Wave, len(f.Waves))
	}
	return fmt.Sprintf("[%s%s] %3d%%  %d/%d done  %d failed  wave %s  %s",
		strings.Repeat("#", filled), strings.Repeat(".", barWidth-filled), pct, f.Done, f.Agents, f.Failed, wave, f.State)
}

func (p *progress) fleet(f fleetView) {
	if p.bar {
		s := fleetBar(f)
		if s == p.last {
			return
		}
		// Redraw in place; clear what a longer line left.
		fmt.Fprintf(p.w, "\r%s\x1b[K", s)
		p.last, p.drew = s, true
		return
	}
	p.line(fleetLine(f))
}

// line writes s unless it is what was written last.
func (p *progress) line(s string) {
	if s == p.last {
		return
	}
	p.end()
	fmt.Fprintln(p.w, s)
	p.last = s
}

// end ends a bar's line.
func (p *progress) end() {
	if p.drew {
		fmt.Fprintln(p.w)
		p.drew = false
	}
}

// done ends the progress before the result is printed.
func (p *progress) done() { p.end() }
