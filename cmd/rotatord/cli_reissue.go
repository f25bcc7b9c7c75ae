package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// reissueView is the answer of POST /v1/agents/{name}/reissue.
type reissueView struct {
	Agent         json.RawMessage `json:"agent"`
	RevokedKeys   []string        `json:"revoked_keys"`
	WasRevoked    bool            `json:"was_revoked"`
	EndedRotation *string         `json:"ended_rotation"`
	Pushed        bool            `json:"pushed"`
	Servers       int             `json:"servers"`
}

// runAgentsReissue re-enrols an agent: every key revoked, new creds issued.
// For poll delivery the answer holds the new creds file, seed included,
// once: it goes to --creds-out FILE (created 0600, never overwritten) or,
// with --creds-out -, alone on stdout. Without --creds-out a poll agent is
// not reissued at all, so no creds file is lost.
func runAgentsReissue(ctx context.Context, c *cli, args []string) error {
	credsOut := c.fs.String("creds-out", "", "poll delivery: write the new creds file to this new file (mode 0600), or - for stdout")
	pos, err := c.parse(args, 1)
	if err != nil {
		return err
	}
	name := pos[0]
	api, err := c.client()
	if err != nil {
		return err
	}
	raw, err := api.get(ctx, agentPath(name), nil, nil)
	if err != nil {
		return err
	}
	before, err := decodeView[agentView](raw)
	if err != nil {
		return err
	}
	poll := before.Delivery == "poll"
	switch {
	case poll && *credsOut == "":
		return fmt.Errorf("agent %s has poll delivery: its new creds file holds the seed and is shown once; "+
			"give --creds-out FILE, or --creds-out - to print it on stdout (nothing was changed)", name)
	case !poll && *credsOut != "":
		return fmt.Errorf("--creds-out: agent %s has %s delivery, rotatord hands the creds over itself", name, before.Delivery)
	}
	var out *os.File
	if *credsOut != "" && *credsOut != "-" {
		if out, err = os.OpenFile(*credsOut, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return fmt.Errorf("creds file: %w", err)
		}
	}
	raw, err = api.do(ctx, http.MethodPost, agentPath(name, "/reissue"), nil, nil)
	if err != nil {
		discardFile(out)
		return err
	}
	var res reissueView
	if err := json.Unmarshal(raw, &res); err != nil {
		discardFile(out)
		return fmt.Errorf("decode answer of reissue: %w", err)
	}
	a, err := decodeView[agentView](res.Agent)
	if err != nil {
		discardFile(out)
		return err
	}
	if poll && a.Creds == "" {
		discardFile(out)
		return errors.New("rotatord answered without the creds file")
	}
	if res.WasRevoked {
		fmt.Fprintf(c.stderr, "agent %s was revoked; it is active again\n", name)
	}
	if !res.Pushed && len(res.RevokedKeys) > 0 {
		fmt.Fprintln(c.stderr, "note: no nats-server acknowledged the revocation of the old keys yet; rotatord keeps pushing it")
	}
	switch {
	case out != nil:
		if err := saveCreds(out, a.Creds); err != nil {
			return fmt.Errorf("agent %s was reissued but its creds could not be saved (%w); reissue it again", name, err)
		}
		fmt.Fprintf(c.stderr, "wrote the new creds file of agent %s (it holds the seed) to %s\n", name, out.Name())
	case *credsOut == "-":
		// stdout carries the creds file alone; the summary goes to stderr.
		if err := c.printReissue(c.stderr, raw, res, a, "table"); err != nil {
			return err
		}
		_, err := fmt.Fprint(c.stdout, a.Creds)
		return err
	}
	return c.printReissue(c.stdout, raw, res, a, c.output)
}

func (c *cli) printReissue(w io.Writer, raw []byte, res reissueView, a agentView, output string) error {
	if output == "json" {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return err
		}
		m["agent"] = withoutCreds(res.Agent)
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		return printJSON(w, b)
	}
	key := ""
	if a.Credential != nil {
		key = a.Credential.PublicKey
	}
	t := newTable(w, "AGENT", "STATE", "NEW KEY", "REVOKED KEYS", "PUSHED")
	t.row(a.Name, a.State, key, strings.Join(res.RevokedKeys, ","), fmt.Sprint(res.Pushed))
	return t.flush()
}
