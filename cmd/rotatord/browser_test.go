package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Browser tests drive Debian's chromium, headless, through the DevTools
// protocol (chromedp). Without chromium they fail and say how to install
// it, unless ROTATORD_SKIP_BROWSER=1 is set: then they skip, saying so.
// With ROTATORD_SCREENSHOTS=DIR they write a PNG of each page they visit
// to DIR (docs/console/ keeps the committed ones).

const browserInstallHint = "chromium is not installed: run `apt-get install -y chromium` " +
	"(Debian's package; .ci/run does), or set ROTATORD_SKIP_BROWSER=1 to skip the browser tests"

// findChromium returns the path of Debian's chromium, or "".
func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser is a headless chromium for one test; tabs are opened with tab.
type browser struct {
	t      *testing.T
	ctx    context.Context
	shots  string // ROTATORD_SCREENSHOTS
	mu     sync.Mutex
	errors []string // uncaught exceptions and CSP refusals of every tab
}

// newBrowser starts chromium with a fresh profile, or skips or fails t as
// described above. It stops when t ends.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	if os.Getenv("ROTATORD_SKIP_BROWSER") == "1" {
		t.Skip("ROTATORD_SKIP_BROWSER=1: browser tests skipped")
	}
	path := findChromium()
	if path == "" {
		t.Fatal(browserInstallHint)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1360, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &browser{t: t, shots: os.Getenv("ROTATORD_SCREENSHOTS")}
	bctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(b.listen))
	// Start the browser now, so that a broken install fails here.
	if err := chromedp.Do(bctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start %s: %v (%s)", path, err, browserInstallHint)
	}
	b.ctx = bctx
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	return b
}

// listen records what must never happen on a console page.
func (b *browser) listen(ev any) {
	msg := browserProblem(ev)
	if msg == "" {
		return
	}
	b.mu.Lock()
	b.errors = append(b.errors, msg)
	b.mu.Unlock()
}

// problems returns the exceptions and CSP refusals seen so far.
func (b *browser) problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// run runs actions in the browser's tab with a deadline.
func (b *browser) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %s: %v\nproblems: %v", what, err, b.problems())
	}
}

// eval evaluates a JavaScript expression in the page (over DevTools, not
// as page script: the page's CSP does not apply) and returns its value.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("browser: evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript expression until it is true, up to d.
func (b *browser) waitFor(what, expr string, d time.Duration) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, d+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool]("!!("+expr+")", chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		b.t.Fatalf("browser: waiting %s for %s: %v\npage text: %.2000s\nproblems: %v", d, what, err,
			b.text("document.body"), b.problems())
	}
}

// text is the text of the element an expression returns ("" for none).
func (b *browser) text(elemExpr string) string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	v, _ := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf("(() => { const e = %s; return e ? e.textContent : '' })()", elemExpr)))
	return v
}

// screenshot writes what the window shows (1360x900) to
// ROTATORD_SCREENSHOTS/name.png when that is set.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	if b.shots == "" {
		return
	}
	// Let the last refresh paint.
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(b.shots, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`, "\r", `\r`, "<", `\x3c`)
	return "'" + r.Replace(s) + "'"
}

// browserProblem describes an event that a console page must never cause:
// an uncaught exception, a console.error, or a Content-Security-Policy
// refusal (which would mean the page tried to run or load something its
// policy forbids). Failed requests (a 401 on purpose) are not problems.
func browserProblem(ev any) string {
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg += " " + d.Exception.Description
		}
		return fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber+1, msg)
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError {
			return ""
		}
		var parts []string
		for _, a := range ev.Args {
			parts = append(parts, a.Description+string(a.Value))
		}
		return "console.error: " + strings.Join(parts, " ")
	case *cdplog.EventEntryAdded:
		e := ev.Entry
		if strings.Contains(e.Text, "Content Security Policy") || strings.Contains(e.Text, "Refused to") {
			return fmt.Sprintf("csp: %s (%s)", e.Text, e.URL)
		}
	}
	return ""
}
