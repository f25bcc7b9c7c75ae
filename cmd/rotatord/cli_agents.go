package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"
)

// agentsPageSize is the page size of agents list (the API's maximum).
const agentsPageSize = 1000

func runAgentsList(ctx context.Context, c *cli, args []string) error {
	account := c.fs.String("account", "", "only agents of this account")
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
	page, err := api.list(ctx, "/v1/agents", q, "agents", 0, agentsPageSize)
	if err != nil {
		return err
	}
	return printPage(c, "agents", page, printAgents)
}

func runAgentsShow(ctx context.Context, c *cli, args []string) error {
	return showOne(ctx, c, args, func(name string) string { return agentPath(name) }, c.printAgent)
}

// showOne gets the object the one argument names (at path(arg)) and prints it.
func showOne(ctx context.Context, c *cli, args []string, path func(string) string, print func(raw []byte) error) error {
	pos, err := c.parse(args, 1)
	if err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	raw, err := api.get(ctx, path(pos[0]), nil, nil)
	if err != nil {
		return err
	}
	return print(raw)
}

func (c *cli) printAgent(raw []byte) error {
	if c.output == "json" {
		return printJSON(c.stdout, raw)
	}
	a, err := decodeView[agentView](raw)
	if err != nil {
		return err
	}
	return printAgent(c.stdout, a)
}

// agentCreate is the body of POST /v1/agents (AgentCreate), without the
// claims (claimFlags.body adds them).
type agentCreate struct {
	Name     string          `json:"name"`
	Account  string          `json:"account"`
	Rotation *rotationCreate `json:"rotation,omitempty"`
	Delivery string          `json:"delivery,omitempty"`
	Tags     []string        `json:"tags,omitempty"`
	Role     string          `json:"role,omitempty"`
}

type rotationCreate struct {
	Schedule string `json:"schedule,omitempty"`
	Grace    string `json:"grace,omitempty"`
}

// runAgentsAdd creates an agent. With poll delivery the answer holds the
// agent's first creds file, seed included, once: it goes to --creds-out
// (created 0600, never overwritten) or, without it, alone on stdout, and
// never to a terminal.
func runAgentsAdd(ctx context.Context, c *cli, args []string) error {
	var in agentCreate
	var claims claimFlags
	var tags listFlag
	var rot rotationCreate
	c.fs.StringVar(&in.Account, "account", "", "the agent's account (required)")
	c.fs.StringVar(&rot.Schedule, "schedule", "", `rotation schedule, a cron expression or "@every 24h" (server default @every 24h)`)
	c.fs.StringVar(&rot.Grace, "grace", "", "how long the agent has to reconnect with new creds, 1m to 168h (server default 30m)")
	c.fs.StringVar(&in.Delivery, "delivery", "", "poll, vault or file (server default poll)")
	c.fs.StringVar(&in.Role, "role", "", "a role of the account: the agent gets the role's permissions and claims (no claim flags with it)")
	c.fs.Var(&tags, "tag", "tags of the agent, key:value, comma-separated, repeatable (a role's {{tag(key)}} reads them)")
	claims.bind(c, false)
	credsOut := c.fs.String("creds-out", "", "write the first creds file (poll delivery) to this new file, mode 0600, instead of stdout")
	pos, err := c.parse(args, 1)
	if err != nil {
		return err
	}
	in.Name = pos[0]
	if in.Account == "" {
		return fmt.Errorf("--account is required; usage: rotatord %s", c.usage)
	}
	switch in.Delivery {
	case "", "poll":
	case "vault", "file":
		if *credsOut != "" {
			return fmt.Errorf("--creds-out: with --delivery %s rotatord hands the creds over itself", in.Delivery)
		}
	default:
		return fmt.Errorf("--delivery %q: want poll, vault or file", in.Delivery)
	}
	if rot != (rotationCreate{}) {
		in.Rotation = &rot
	}
	in.Tags = tags
	if in.Role != "" && claims.given(c) {
		return fmt.Errorf("--role and the claim flags (--pub, --sub, --subs, --src...) exclude each other: the role's apply")
	}
	body, err := toMap(in)
	if err != nil {
		return err
	}
	if err := claims.body(c, body, permsView{}); err != nil {
		return err
	}
	pollCreds := in.Delivery == "" || in.Delivery == "poll"
	if pollCreds && *credsOut == "" && isTerminal(c.stdout) {
		return errors.New("the new agent's creds file holds its seed and is shown only once: " +
			"give --creds-out FILE, or redirect stdout to a file")
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	// Create the creds file first: once the agent exists its seed cannot be
	// fetched again, so a file that cannot be written must fail before.
	var out *os.File
	if *credsOut != "" {
		if out, err = os.OpenFile(*credsOut, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return fmt.Errorf("creds file: %w", err)
		}
	}
	raw, err := api.do(ctx, http.MethodPost, "/v1/agents", nil, body)
	if err != nil {
		discardFile(out)
		return err
	}
	switch {
	case in.Role != "":
	case !anySet(c, "pub", "sub"):
		fmt.Fprintf(c.stderr, "note: no --pub or --sub: agent %s may neither publish nor subscribe\n", in.Name)
	case !c.isSet("pub"):
		fmt.Fprintf(c.stderr, "note: no --pub: agent %s may publish nowhere (--pub '>' reaches everything)\n", in.Name)
	case !c.isSet("sub"):
		fmt.Fprintf(c.stderr, "note: no --sub: agent %s may subscribe nowhere (--sub '>' reaches everything)\n", in.Name)
	}
	a, err := decodeView[agentView](raw)
	if err != nil {
		discardFile(out)
		return err
	}
	return c.handOver(raw, a, out)
}

// handOver prints a created agent and puts its creds file where asked.
func (c *cli) handOver(raw []byte, a agentView, out *os.File) error {
	switch {
	case out != nil && a.Creds == "":
		discardFile(out)
		fmt.Fprintf(c.stderr, "agent %s has %s delivery: no creds file to write\n", a.Name, a.Delivery)
	case out != nil:
		if err := saveCreds(out, a.Creds); err != nil {
			return fmt.Errorf("agent %s was created but its creds could not be saved (%w); "+
				"delete it (DELETE /v1/agents/%s) and add it again", a.Name, err, a.Name)
		}
		fmt.Fprintf(c.stderr, "wrote the creds file of agent %s (it holds the seed) to %s\n", a.Name, out.Name())
	}
	if c.output == "json" {
		if out != nil {
			return printJSON(c.stdout, withoutCreds(raw))
		}
		return printJSON(c.stdout, raw)
	}
	if a.Creds == "" || out != nil {
		return printAgent(c.stdout, a)
	}
	// Table output: stdout carries the creds file alone, so that
	// `rotatord agents add ... > agent.creds` saves exactly that file.
	if err := printAgent(c.stderr, a); err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "the creds file of agent %s (with its seed) follows on stdout; it is shown once, store it now\n", a.Name)
	_, err := fmt.Fprint(c.stdout, a.Creds)
	return err
}

func saveCreds(f *os.File, creds string) error {
	_, err := f.WriteString(creds)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// discardFile closes and removes a creds file created before the request.
func discardFile(f *os.File) {
	if f == nil {
		return
	}
	f.Close()           //nolint:errcheck // removed next
	os.Remove(f.Name()) //nolint:errcheck // empty anyway
}

// withoutCreds drops "creds" from an agent's JSON (it went to a file).
func withoutCreds(raw []byte) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return raw
	}
	delete(m, "creds")
	b, err := json.Marshal(m)
	if err != nil {
		return raw
	}
	return b
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// The rotation states after which nothing changes any more.
const (
	rotationCompleted  = "completed"
	rotationRolledBack = "rolled_back"
	// rotationDistributed: the creds are handed out; the agent's reconnect
	// completes the rotation.
	rotationDistributed = "distributed"
)

func runAgentsRotate(ctx context.Context, c *cli, args []string) error {
	wait := c.fs.Bool("wait", false, "wait until the rotation is completed or rolled back; rolled back exits non-zero")
	waitTimeout := c.fs.Duration("wait-timeout", 0, "give up waiting after this long (0: no limit; a rotation ends by its deadline, the agent's grace)")
	pos, err := c.parse(args, 1)
	if err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	raw, err := api.do(ctx, http.MethodPost, agentPath(pos[0], "/rotate"), nil, nil)
	var conflict *apiError
	if errors.As(err, &conflict) && conflict.Rotation != "" {
		// Not waiting for that one instead: it may predate a change that
		// this rotation was meant to apply.
		return fmt.Errorf("%w; follow it with: rotatord rotations show %s", err, conflict.Rotation)
	}
	if err != nil {
		return err
	}
	var started struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if err := json.Unmarshal(raw, &started); err != nil || started.ID == "" {
		return fmt.Errorf("decode answer of rotate: %q", excerpt(raw, 200))
	}
	if !*wait {
		if c.output == "json" {
			return printJSON(c.stdout, raw)
		}
		t := newTable(c.stdout, "ROTATION", "AGENT", "STATE")
		t.row(started.ID, pos[0], started.State)
		return t.flush()
	}
	fmt.Fprintf(c.stderr, "rotation %s of agent %s: %s\n", started.ID, pos[0], started.State)
	return c.waitAndPrint(ctx, api, started.ID, started.State, *waitTimeout)
}

// waitAndPrint waits for a rotation to end (at most timeout when positive),
// prints it, and fails when it was rolled back.
func (c *cli) waitAndPrint(ctx context.Context, api *apiClient, id, state string, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	raw, rot, err := c.waitRotation(ctx, api, id, state)
	if err != nil {
		return err
	}
	if err := c.printRotation(raw, rot); err != nil {
		return err
	}
	if rot.State == rotationRolledBack {
		return fmt.Errorf("rotation %s of agent %s was rolled back: %s", rot.ID, rot.Agent, rot.Reason)
	}
	return nil
}

// waitRotation polls a rotation until it is completed or rolled back,
// telling stderr about each new state and, once the creds are handed out,
// what it waits for and until when. It rides out a few failed polls (a
// replica restarting); the context bounds the wait.
func (c *cli) waitRotation(ctx context.Context, api *apiClient, id, state string) ([]byte, rotationView, error) {
	const maxFailures = 5
	every, failures := 200*time.Millisecond, 0
	told := false
	// Handed out already when the wait began: an agent may fetch and
	// reconnect before the first poll, which must still say what the wait
	// was for.
	startedDistributed := state == rotationDistributed
	for {
		raw, err := api.get(ctx, "/v1/rotations/"+url.PathEscape(id), nil, nil)
		if err == nil {
			failures = 0
			rot, err := decodeView[rotationView](raw)
			if err != nil {
				return nil, rot, err
			}
			if !told && startedDistributed {
				told = true
				fmt.Fprintln(c.stderr, waitingFor(rot, time.Now(), deadlineOf(ctx)))
			}
			if rot.State != state {
				state = rot.State
				fmt.Fprintf(c.stderr, "rotation %s of agent %s: %s\n", id, rot.Agent, state)
			}
			if !told && state == rotationDistributed {
				told = true
				fmt.Fprintln(c.stderr, waitingFor(rot, time.Now(), deadlineOf(ctx)))
			}
			if state == rotationCompleted || state == rotationRolledBack {
				return raw, rot, nil
			}
		} else if ctx.Err() != nil || !retryable(err) || failures+1 >= maxFailures {
			return nil, rotationView{}, stoppedWaiting(id, state, err)
		} else {
			failures++
			fmt.Fprintf(c.stderr, "rotation %s: %v; trying again\n", id, err)
		}
		select {
		case <-ctx.Done():
			return nil, rotationView{}, stoppedWaiting(id, state, ctx.Err())
		case <-time.After(every):
		}
		every = min(every*3/2, 2*time.Second)
	}
}

// waitingFor says what a distributed rotation waits for, and until when:
// the rotation's deadline, or the CLI's own when that comes first.
func waitingFor(rot rotationView, now time.Time, cliDeadline time.Time) string {
	msg := fmt.Sprintf("waiting for agent %s to fetch its new credentials and reconnect with the new key %s", rot.Agent, rot.NewPublicKey)
	if rot.Deadline != nil {
		msg += fmt.Sprintf("; rotatord rolls the rotation back if it has not by %s (in %s)",
			fmtTime(rot.Deadline), rot.Deadline.Sub(now).Round(time.Second))
	}
	if !cliDeadline.IsZero() && (rot.Deadline == nil || cliDeadline.Before(*rot.Deadline)) {
		msg += fmt.Sprintf("; --wait-timeout stops waiting at %s", fmtTime(&cliDeadline))
	}
	return msg + "; Ctrl-C stops waiting, not the rotation"
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// stoppedWaiting says that the CLI, not the rotation, stopped.
func stoppedWaiting(id, state string, err error) error {
	return fmt.Errorf("stopped waiting for rotation %s, last seen %s (it goes on in rotatord; rotatord rotations show %s): %w",
		id, state, id, err)
}

// retryable reports whether a failed poll may succeed later: the server
// was unreachable or answered 5xx.
func retryable(err error) bool {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Status >= 500
	}
	return true
}

func (c *cli) printRotation(raw []byte, rot rotationView) error {
	if c.output == "json" {
		return printJSON(c.stdout, raw)
	}
	return printRotation(c.stdout, rot)
}

func runAgentsRevoke(ctx context.Context, c *cli, args []string) error {
	reason := c.fs.String("reason", "", "why; recorded in the audit trail")
	pos, err := c.parse(args, 1)
	if err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	// The body is optional; send one only with a reason.
	var body any
	if *reason != "" {
		body = map[string]string{"reason": *reason}
	}
	raw, err := api.do(ctx, http.MethodPost, agentPath(pos[0], "/revoke"), nil, body)
	if err != nil {
		return err
	}
	var res struct {
		Agent       string   `json:"agent"`
		State       string   `json:"state"`
		RevokedKeys []string `json:"revoked_keys"`
		Pushed      bool     `json:"pushed"`
		Servers     int      `json:"servers"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return fmt.Errorf("decode answer of revoke: %w", err)
	}
	if !res.Pushed && len(res.RevokedKeys) > 0 {
		fmt.Fprintln(c.stderr, "note: no nats-server acknowledged the revocation yet; rotatord keeps pushing it, "+
			"and servers that load the account from the resolver get it anyway")
	}
	if c.output == "json" {
		return printJSON(c.stdout, raw)
	}
	t := newTable(c.stdout, "AGENT", "STATE", "REVOKED KEY", "PUSHED", "SERVERS")
	if len(res.RevokedKeys) == 0 {
		res.RevokedKeys = []string{""}
	}
	for _, k := range res.RevokedKeys {
		t.row(res.Agent, res.State, k, fmt.Sprint(res.Pushed), fmt.Sprint(res.Servers))
	}
	return t.flush()
}

// runAgentsUpdate changes an agent's claims, role, tags, schedule or
// delivery (PATCH /v1/agents/{name}); only what is given changes. A
// permission flag replaces that list and keeps the others.
func runAgentsUpdate(ctx context.Context, c *cli, args []string) error {
	var claims claimFlags
	var tags listFlag
	role := c.fs.String("role", "", `move the agent into this role of its account ("" takes it out; give --pub/--sub with it)`)
	schedule := c.fs.String("schedule", "", "new rotation schedule")
	grace := c.fs.String("grace", "", "new grace period, 1m to 168h")
	delivery := c.fs.String("delivery", "", "poll, vault or file")
	c.fs.Var(&tags, "tag", "replace the agent's tags, key:value, comma-separated, repeatable (--tag '' clears them)")
	claims.bind(c, true)
	pos, err := c.parse(args, 1)
	if err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	body := map[string]any{}
	if c.isSet("role") {
		body["role"] = *role
	}
	if c.isSet("tag") {
		body["tags"] = nonNil(tags)
	}
	rot := map[string]string{}
	if c.isSet("schedule") {
		rot["schedule"] = *schedule
	}
	if c.isSet("grace") {
		rot["grace"] = *grace
	}
	if len(rot) > 0 {
		body["rotation"] = rot
	}
	if c.isSet("delivery") {
		body["delivery"] = *delivery
	}
	var base permsView
	if anySet(c, permFlags...) && !(c.isSet("role") && *role == "") {
		// The API replaces the whole permissions: start from the current ones.
		var cur agentView
		if _, err := api.get(ctx, agentPath(pos[0]), nil, &cur); err != nil {
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
	raw, err := api.do(ctx, http.MethodPatch, agentPath(pos[0]), nil, body)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "agent %s changed; the change takes effect with its next credentials (rotatord agents rotate %s applies it now)\n", pos[0], pos[0])
	return c.printAgent(raw)
}
