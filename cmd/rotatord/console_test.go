package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/rotate"
)

// Attacker-influenced strings the console must show as text: an account
// description, a revoke reason (it lands in the audit trail and the
// revocation entries), an alert's reason. Each would set window.__xss if it
// ever became markup.
const (
	xssDescription = `<script>window.__xss='description'</script>`
	xssReason      = `<img src=x onerror="window.__xss='reason'">`
	xssAlert       = `<img src=x onerror="window.__xss='alert'"><b>bold</b>`
)

// TestConsole drives the fleet console in a real browser against a real
// rotatord, nats-server and agents on pkg/agent: sign in, the fleet with
// search and paging, a read token without actions, a rotation started from
// the console that completes live while the page is open, a revoke through
// the confirmation dialog that drops the agent, accounts, alerts and the
// audit trail with its verification. Every attacker-influenced value is
// shown as text, and the pages raise no exception and no CSP refusal.
func TestConsole(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	e := newEnv(t)
	e.startNATS()
	e.waitNATS()
	ctx := context.Background()

	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet", "description": xssDescription})
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "edge"})
	// kate rotates live: a real agent that polls for new creds.
	kate, _, _ := fleetAgent(e, "kate")
	runCtx, stopRun := context.WithCancel(ctx)
	var running sync.WaitGroup
	running.Add(1)
	go func() {
		defer running.Done()
		kate.Run(runCtx, 500*time.Millisecond)
	}()
	t.Cleanup(func() {
		stopRun()
		running.Wait()
	})
	// bob gets revoked through the console while connected.
	_, bobCreds := createAgent(e, "bob", "fleet")
	bobConn, violations, dropped, err := watchedConnect(e, bobCreds)
	if err != nil {
		t.Fatalf("bob connect: %v", err)
	}
	defer bobConn.Close()
	// More agents than one page of the fleet (100).
	const extra = 104
	createAgents(e, "edge", "worker-%03d", extra)

	_, viewer := e.token("viewer", rotatord.ScopeRead)
	_, ops := e.token("ops", rotatord.ScopeRotate)
	if err := e.main.Store.AddAlert(ctx, &rotatord.Alert{Kind: "rotation_rolled_back", Severity: rotatord.SeverityWarning,
		Account: "fleet", Agent: "kate", Reason: xssAlert}); err != nil {
		t.Fatal(err)
	}

	ui := e.main.URL() + "/ui/"

	t.Run("sign in", func(t *testing.T) {
		b.t = t
		b.run("open the console", chromedp.Navigate(ui), chromedp.WaitVisible(chromedp.ID("token")))
		b.screenshot("signin")
		b.run("sign in with a bad token", chromedp.SendKeys(chromedp.ID("token"), "rtd_not-a-token"),
			chromedp.Click(chromedp.ID("signin-button")))
		b.waitFor("the refusal", `document.getElementById('signin-error').textContent.includes('not valid')`, 10*time.Second)
		signIn(b, viewer)
		if got := b.text(`document.getElementById('identity')`); !strings.Contains(got, "viewer") || !strings.Contains(got, "read") {
			t.Errorf("identity = %q, want the token's name and scope", got)
		}
		// The token is kept for the tab only and never put in the URL.
		if got := eval[string](b, `sessionStorage.getItem('rotatord.token')`); got != viewer {
			t.Errorf("sessionStorage token = %q", got)
		}
		if got := eval[string](b, `location.href + '|' + document.cookie + '|' + localStorage.length`); strings.Contains(got, viewer) ||
			!strings.HasSuffix(got, "||0") {
			t.Errorf("the token leaked into the URL, a cookie or localStorage: %q", got)
		}
	})

	t.Run("fleet", func(t *testing.T) {
		b.t = t
		b.run("open the fleet", chromedp.Navigate(ui+"#/fleet"))
		b.waitFor("the fleet table", `!!document.querySelector('tr[data-agent="kate"]')`, 15*time.Second)
		total := extra + 2
		b.waitFor("the summary", fmt.Sprintf(`document.getElementById('fleet-summary').textContent.startsWith('%d agents in 3 accounts')`, total), 10*time.Second)
		if n := eval[int](b, `document.querySelectorAll('#fleet-table tbody tr').length`); n != 100 {
			t.Errorf("first page has %d rows, want 100", n)
		}
		b.screenshot("fleet")
		b.run("next page", chromedp.Click(chromedp.ID("fleet-next")))
		b.waitFor("the second page", fmt.Sprintf(`document.getElementById('fleet-page').textContent === '101–%d'`, total), 10*time.Second)
		b.run("previous page", chromedp.Click(chromedp.ID("fleet-prev")))
		b.waitFor("the first page again", `document.getElementById('fleet-page').textContent === '1–100'`, 10*time.Second)
		// Search runs on the server.
		b.run("search", chromedp.SendKeys(chromedp.ID("fleet-search"), "KAT"))
		b.waitFor("the search result", `document.querySelectorAll('#fleet-table tbody tr').length === 1 && !!document.querySelector('tr[data-agent="kate"]')`, 10*time.Second)
		b.run("clear the search and pick an account", chromedp.Evaluate[chromedp.Void](`(() => {
			const s = document.getElementById('fleet-search'); s.value = ''; s.dispatchEvent(new Event('input'));
			const a = document.getElementById('fleet-account'); a.value = 'fleet'; a.dispatchEvent(new Event('change'));
		})()`))
		b.waitFor("the account filter", `document.querySelectorAll('#fleet-table tbody tr').length === 2`, 10*time.Second)
		// A read token sees no actions.
		b.run("open kate", chromedp.Click(chromedp.CSS(`tr[data-agent="kate"] a.agent-link`)))
		b.waitFor("kate's page", `document.getElementById('agent-name') && document.querySelector('#agent-head .badge')`, 10*time.Second)
		if n := eval[int](b, `document.querySelectorAll('#rotate, #revoke').length`); n != 0 {
			t.Errorf("a read token sees %d action buttons, want none", n)
		}
	})

	t.Run("rotate live", func(t *testing.T) {
		b.t = t
		signOut(b)
		signIn(b, ops)
		oldKey := kate.PublicKey()
		b.run("open kate", chromedp.Navigate(ui+"#/agents/kate"))
		b.waitFor("the rotate button", `!!document.getElementById('rotate') && !document.getElementById('rotate').disabled`, 15*time.Second)
		b.run("rotate", chromedp.Click(chromedp.ID("rotate")))
		b.waitFor("the confirmation", `document.getElementById('confirm').open`, 5*time.Second)
		b.run("confirm", chromedp.Click(chromedp.ID("confirm-ok")))
		// The agent fetches the new creds and reconnects; the page shows
		// the rotation in flight and then completed, without a reload.
		b.waitFor("the rotation in flight or done", `(() => { const r = document.querySelector('#agent-timeline li.rotation'); return !!r })()`, 15*time.Second)
		b.waitFor("the rotation to complete", `document.querySelector('#agent-timeline li.rotation').dataset.state === 'completed'`, 45*time.Second)
		b.screenshot("agent")
		if kate.PublicKey() == oldKey {
			t.Error("kate's key did not change")
		}
		rots := e.must(200, "GET", "/v1/agents/kate/rotations", nil)["rotations"].([]any)
		if len(rots) != 1 || rots[0].(map[string]any)["state"] != "completed" || rots[0].(map[string]any)["trigger"] != "manual" {
			t.Fatalf("rotations = %v, want one completed manual rotation", rots)
		}
		if got := b.text(`document.querySelector('#agent-keys tbody tr .key')`); got != kate.PublicKey() {
			t.Errorf("newest key shown = %q, want %s", got, kate.PublicKey())
		}
	})

	t.Run("revoke", func(t *testing.T) {
		b.t = t
		b.run("open bob", chromedp.Navigate(ui+"#/agents/bob"))
		// bob's page with bob's data, not kate's page still on screen.
		b.waitFor("bob's page", `document.getElementById('agent-name')?.textContent === 'bob' && !!document.querySelector('#agent-head dl')`, 15*time.Second)
		b.waitFor("the revoke button", `!!document.getElementById('revoke') && !document.getElementById('revoke').disabled`, 15*time.Second)
		// Cancel first: nothing happens.
		b.run("revoke, then cancel", chromedp.Click(chromedp.ID("revoke")))
		b.waitFor("the confirmation", `document.getElementById('confirm').open`, 5*time.Second)
		b.run("cancel", chromedp.Click(chromedp.ID("confirm-cancel")))
		b.waitFor("the dialog to close", `!document.getElementById('confirm').open`, 5*time.Second)
		if got := e.must(200, "GET", "/v1/agents/bob", nil)["state"]; got != "active" {
			t.Fatalf("after cancel bob is %v", got)
		}
		b.run("revoke", chromedp.Click(chromedp.ID("revoke")))
		b.waitFor("the confirmation", `document.getElementById('confirm').open`, 5*time.Second)
		b.screenshot("revoke-confirm")
		b.run("give a reason and confirm", chromedp.SendKeys(chromedp.ID("confirm-reason"), xssReason),
			chromedp.Click(chromedp.ID("confirm-ok")))
		waitRevokedDrop(t, dropped, violations)
		b.waitFor("bob shown revoked", `document.querySelector('#agent-head .badge').dataset.state === 'revoked'`, 15*time.Second)
		b.waitFor("the revoke in bob's events", `[...document.querySelectorAll('#agent-audit code.details')].some(c => c.textContent.includes('<img src=x onerror='))`, 15*time.Second)
		if got := e.must(200, "GET", "/v1/agents/bob", nil)["state"]; got != "revoked" {
			t.Fatalf("bob is %v, want revoked", got)
		}
	})

	t.Run("accounts", func(t *testing.T) {
		b.t = t
		b.run("open the accounts", chromedp.Navigate(ui+"#/accounts"))
		b.waitFor("the accounts table", `!!document.querySelector('tr[data-account="fleet"] meter')`, 15*time.Second)
		acc := e.must(200, "GET", "/v1/accounts/fleet", nil)
		want := fmt.Sprintf("of 512.0 KiB")
		if got := b.text(`document.querySelector('tr[data-account="fleet"] .size')`); !strings.Contains(got, want) {
			t.Errorf("fleet's JWT size = %q, want it against the guard (%v bytes of %v)", got, acc["jwt_bytes"], acc["jwt_max_bytes"])
		}
		b.screenshot("accounts")
		b.run("open fleet", chromedp.Navigate(ui+"#/accounts/fleet"))
		b.waitFor("the revocation entries", `document.querySelectorAll('#account-revocations tbody tr .key').length >= 2`, 15*time.Second)
		if got := b.text(`document.getElementById('account-description')`); got != xssDescription {
			t.Errorf("description shown as %q, want the text %q", got, xssDescription)
		}
		if got := b.text(`document.getElementById('account-revocations')`); !strings.Contains(got, xssReason) {
			t.Errorf("revocation entries %q lack bob's reason as text", got)
		}
		b.screenshot("account")
	})

	t.Run("alerts", func(t *testing.T) {
		b.t = t
		b.run("open the alerts", chromedp.Navigate(ui+"#/alerts"))
		rolledBack := `[...document.querySelectorAll('#alerts-table tr[data-alert]')].find(r => r.textContent.includes('rotation_rolled_back'))`
		b.waitFor("the alert", "!!"+rolledBack, 15*time.Second)
		if got := b.text(rolledBack + `.querySelector('.reason')`); got != xssAlert {
			t.Errorf("alert reason shown as %q, want the text %q", got, xssAlert)
		}
		b.screenshot("alerts")
	})

	t.Run("audit", func(t *testing.T) {
		b.t = t
		b.run("open the audit trail", chromedp.Navigate(ui+"#/audit"))
		b.waitFor("the verification", `document.getElementById('verify-status') && document.getElementById('verify-status').dataset.ok === 'true'`, 30*time.Second)
		b.waitFor("bob's revoke", `[...document.querySelectorAll('#audit-table tbody tr')].some(r => r.textContent.includes('agent.revoke'))`, 15*time.Second)
		var v struct {
			OK   bool `json:"ok"`
			Head struct {
				Seq  int64  `json:"seq"`
				Hash string `json:"hash"`
			} `json:"head"`
		}
		b.run("verify now", chromedp.Click(chromedp.ID("verify-now")))
		time.Sleep(500 * time.Millisecond)
		shown := b.text(`document.getElementById('verify-head')`)
		// The head shown is a real link of the chain: anchoring it verifies.
		_, body := e.do("GET", "/v1/audit/verify?max_age=0&anchor="+shown, e.admin, nil)
		if err := json.Unmarshal(body, &v); err != nil || !v.OK || v.Head.Seq == 0 {
			t.Fatalf("verify with the head shown (%q) as anchor: %s", shown, body)
		}
		// Newest first: the first row has the largest ID.
		ids := eval[[]int](b, `[...document.querySelectorAll('#audit-table tbody tr')].map(r => +r.dataset.event)`)
		for i := 1; i < len(ids); i++ {
			if ids[i] >= ids[i-1] {
				t.Fatalf("audit rows %v are not newest first", ids)
			}
		}
		b.screenshot("audit")
	})

	t.Run("nothing ran that should not", func(t *testing.T) {
		b.t = t
		if got := eval[string](b, `String(window.__xss)`); got != "undefined" {
			t.Errorf("window.__xss = %q: an attacker-influenced value ran as markup", got)
		}
		if p := b.problems(); len(p) > 0 {
			t.Errorf("the pages raised problems:\n%s", strings.Join(p, "\n"))
		}
		for _, tok := range []string{viewer, ops} {
			if strings.Contains(e.logs.String(), tok) {
				t.Error("a token appears in rotatord's logs")
			}
		}
	})
}

// signIn signs in with token and waits for the fleet.
func signIn(b *browser, token string) {
	b.t.Helper()
	b.run("sign in", chromedp.WaitVisible(chromedp.ID("token")), chromedp.SetValue(chromedp.ID("token"), token),
		chromedp.Click(chromedp.ID("signin-button")))
	b.waitFor("the signed-in console", `!document.getElementById('nav').hidden`, 10*time.Second)
}

// signOut signs out and waits for the sign-in form.
func signOut(b *browser) {
	b.t.Helper()
	b.run("sign out", chromedp.Click(chromedp.ID("signout")))
	b.waitFor("the sign-in form", `!document.getElementById('signin').hidden && sessionStorage.length === 0`, 5*time.Second)
}

// token creates an API token.
func (e *env) token(name string, scope rotatord.Scope) (*rotatord.Token, string) {
	e.t.Helper()
	secret, tok, err := e.main.Service.CreateToken(context.Background(), "test", name, scope)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok, secret
}

// createAgents creates n agents named by format (with the index) in
// account, four at a time.
func createAgents(e *env, account, format string, n int) {
	e.t.Helper()
	if status, _ := e.do("GET", "/v1/accounts/"+account, e.admin, nil); status == 404 {
		e.must(201, "POST", "/v1/accounts", map[string]any{"name": account})
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 4)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_, _, err := e.main.Service.CreateAgent(context.Background(), "test", agentInput(fmt.Sprintf(format, i), account))
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatal(err)
	}
}

// agentInput is a poll agent in account with narrow permissions.
func agentInput(name, account string) rotate.AgentInput {
	return rotate.AgentInput{Name: name, Account: account, Delivery: rotatord.DeliveryPoll,
		Permissions: rotatord.Permissions{Pub: rotatord.PermissionList{Allow: []string{"work." + name}},
			Sub: rotatord.PermissionList{Allow: []string{"work.>"}}}}
}
