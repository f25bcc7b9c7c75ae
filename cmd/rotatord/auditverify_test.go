package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// auditVerify runs `rotatord audit verify` against e's database.
func auditVerify(e *env, args ...string) (stdout, stderr string, err error) {
	e.t.Helper()
	var out, errOut bytes.Buffer
	args = append([]string{"audit", "verify", "--database-url", e.dbURL, "--log-level", "error"}, args...)
	err = run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// tamper runs SQL statements in one transaction as the database superuser,
// with the audit tables' append-only triggers off.
func tamper(e *env, stmts ...string) {
	e.t.Helper()
	ctx := context.Background()
	tx, err := e.main.Store.Pool().Begin(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	stmts = append(append([]string{"ALTER TABLE audit_events DISABLE TRIGGER USER"}, stmts...),
		"ALTER TABLE audit_events ENABLE TRIGGER USER")
	for _, q := range stmts {
		if _, err := tx.Exec(ctx, q); err != nil {
			e.t.Fatalf("%s: %v", q, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		e.t.Fatal(err)
	}
}

func TestAuditVerify(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *Config) { c.TickSpec = "" })
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	createAgent(e, "kate", "fleet")
	createAgent(e, "bob", "fleet")
	e.must(200, "POST", "/v1/agents/bob/revoke", map[string]any{"reason": "test"})

	var total int64
	if err := e.main.Store.Pool().QueryRow(context.Background(), `SELECT count(*) FROM audit_events`).Scan(&total); err != nil {
		t.Fatal(err)
	}
	// The serve loop seals on its own, without the command's help.
	okLine := regexp.MustCompile(`^ok: (\d+) events, head (\d+) ([0-9a-f]{64})\n$`)
	want := fmt.Sprintf("ok: %d events, head %d ", total, total)
	eventually(t, 5*time.Second, "serve to seal every event", func() bool {
		out, _, err := auditVerify(e, "--no-seal")
		return err == nil && strings.HasPrefix(out, want)
	})
	out, errOut, err := auditVerify(e)
	m := okLine.FindStringSubmatch(out)
	if err != nil || m == nil || !strings.HasPrefix(out, want) || strings.Contains(errOut, "warning") {
		t.Fatalf("untouched trail of %d events: %v\nstdout: %s\nstderr: %s", total, err, out, errOut)
	}
	anchor := m[2] + ":" + m[3]

	// A row altered in SQL fails verification, naming the event.
	var id, seq int64
	if err := e.main.Store.Pool().QueryRow(context.Background(), `
		SELECT e.id, c.seq FROM audit_events e JOIN audit_chain c ON c.event_id = e.id
		WHERE e.action = 'agent.revoke' AND e.agent = 'bob'`).Scan(&id, &seq); err != nil {
		t.Fatal(err)
	}
	tamper(e, fmt.Sprintf("UPDATE audit_events SET actor = 'nobody' WHERE id = %d", id))
	out, _, err = auditVerify(e)
	if err == nil || !strings.Contains(err.Error(), "verification failed: 1 problem") ||
		!strings.Contains(out, fmt.Sprintf("changed: event %d (link %d) was changed", id, seq)) {
		t.Fatalf("altered event %d: %v\nstdout: %s", id, err, out)
	}
	out, _, err = auditVerify(e, "--json")
	var report struct {
		OK       bool
		Events   int64
		Problems []struct {
			Kind    string
			EventID int64 `json:"event_id"`
		}
	}
	if jerr := json.Unmarshal([]byte(out), &report); jerr != nil || err == nil || report.OK ||
		len(report.Problems) != 1 || report.Problems[0].Kind != "changed" || report.Problems[0].EventID != id {
		t.Fatalf("--json on an altered event: %v, %v\n%s", err, jerr, out)
	}

	// Put back, the trail verifies again, and against the head recorded before.
	tamper(e, fmt.Sprintf("UPDATE audit_events SET actor = 'token:admin' WHERE id = %d", id))
	if out, _, err := auditVerify(e, "--anchor", anchor); err != nil || !strings.HasPrefix(out, "ok: ") {
		t.Fatalf("restored event with anchor %s: %v\n%s", anchor, err, out)
	}

	// A deleted row fails verification, naming the event.
	tamper(e, fmt.Sprintf("DELETE FROM audit_events WHERE id = %d", id))
	out, _, err = auditVerify(e, "--anchor", anchor)
	if err == nil || !strings.Contains(out, fmt.Sprintf("deleted: event %d (link %d) was deleted", id, seq)) {
		t.Fatalf("deleted event %d: %v\nstdout: %s", id, err, out)
	}

	if _, _, err := auditVerify(e, "--anchor", "12"); err == nil || !strings.Contains(err.Error(), "SEQ:HASH") {
		t.Fatalf("bad anchor: %v", err)
	}
}
