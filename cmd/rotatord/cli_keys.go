package main

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
  rotatord key-rotations show ID [--wait [--wait-timeout DURATION]]
` + connectionUsage

func runOperator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatchCLI(ctx, "operator", operatorUsage, map[string]cliCommand{
		"rotate-key": {"operator rotate-key [--wait] [flags]", runOperatorRotateKey},
	}, args, stdout, stderr)
}

func runKeyRotations(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatchCLI(ctx, "key-rotations", keyRotationsUsage, map[string]cliCommand{
		"show": {"key-rotations show ID [--wait] [flags]", runKeyRotationsShow},
	}, args, stdout, stderr)
}

// keyRotationView is the API's KeyRotation as the CLI prints it.
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
	WaitingFor []string   `json:"waiting_for"`
	Waiting    string     `json:"waiting"`
	Actor      string     `json:"actor"`
	CreatedAt  *time.Time `json:"created_at"`
	StepAt     *time.Time `json:"step_started_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

func keyRotationPath(id string) string { return "/v1/key-rotations/" + url.PathEscape(id) }

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
	return c.waitKeyRotation(ctx, api, started.ID, *waitTimeout)
}

func runKeyRotationsShow(ctx context.Context, c *cli, args []string) error {
	wait := c.fs.Bool("wait", false, "wait until the rotation is completed, telling each step and what it waits for")
	waitTimeout := c.fs.Duration("wait-timeout", 0, "give up waiting after this long (0: no limit)")
	pos, err := c.parse(args, 1)
	if err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	if *wait {
		return c.waitKeyRotation(ctx, api, pos[0], *waitTimeout)
	}
	raw, err := api.get(ctx, keyRotationPath(pos[0]), nil, nil)
	if err != nil {
		return err
	}
	return c.printKeyRotation(raw)
}

// waitKeyRotation polls a key rotation until it is completed, telling
// stderr each new step and each change of what it waits for, then prints
// it. It rides out a few failed polls (a replica restarting).
func (c *cli) waitKeyRotation(ctx context.Context, api *apiClient, id string, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	const maxFailures = 5
	var state, waiting string
	failures := 0
	for {
		raw, err := api.get(ctx, keyRotationPath(id), nil, nil)
		if err == nil {
			failures = 0
			k, err := decodeView[keyRotationView](raw)
			if err != nil {
				return err
			}
			if k.State != state || k.Waiting != waiting {
				state, waiting = k.State, k.Waiting
				line := fmt.Sprintf("key rotation %s: %s", id, state)
				if waiting != "" {
					line += ": " + waiting
				}
				fmt.Fprintln(c.stderr, cell(line))
			}
			if k.FinishedAt != nil {
				return c.printKeyRotation(raw)
			}
		} else if ctx.Err() != nil || !retryable(err) || failures+1 >= maxFailures {
			return stoppedWaitingKey(id, state, err)
		} else {
			failures++
			fmt.Fprintf(c.stderr, "key rotation %s: %v; trying again\n", id, err)
		}
		select {
		case <-ctx.Done():
			return stoppedWaitingKey(id, state, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

func stoppedWaitingKey(id, state string, err error) error {
	return fmt.Errorf("stopped waiting for key rotation %s, last seen %s (it goes on in rotatord; rotatord key-rotations show %s): %w",
		id, state, id, err)
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
	t.row("State:", k.State)
	t.row("New key:", k.NewKey)
	t.row("Old keys:", fmtList(k.OldKeys))
	t.row("Waiting for:", strings.Join(k.WaitingFor, ", "))
	t.row("Waiting:", k.Waiting)
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
