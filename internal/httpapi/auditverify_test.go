package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/auditchain"
)

// fakeVerify counts runs, tracks how many run at once, and blocks each run
// until release is closed (nil: no blocking).
type fakeVerify struct {
	runs, running, maxRunning atomic.Int32
	release                   chan struct{}
	mu                        sync.Mutex
	anchors                   [][]auditchain.Head
}

func (f *fakeVerify) verify(ctx context.Context, anchors []auditchain.Head) (*auditchain.Report, error) {
	n := f.running.Add(1)
	defer f.running.Add(-1)
	for {
		m := f.maxRunning.Load()
		if n <= m || f.maxRunning.CompareAndSwap(m, n) {
			break
		}
	}
	f.runs.Add(1)
	f.mu.Lock()
	f.anchors = append(f.anchors, anchors)
	f.mu.Unlock()
	if f.release != nil {
		select {
		case <-f.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	v := auditchain.NewVerifier(anchors...)
	return ptr(v.Report()), nil
}

func ptr[T any](v T) *T { return &v }

func verifyAt(t *testing.T, s *Server, query string) (int, map[string]any, http.Header) {
	t.Helper()
	w := httptest.NewRecorder()
	s.verifyAudit(w, httptest.NewRequest("GET", "/v1/audit/verify"+query, nil))
	var body map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("GET /v1/audit/verify%s: body %q: %v", query, w.Body.String(), err)
	}
	return w.Code, body, w.Header()
}

// Results are reused within max_age, a fresh run is made past it, and
// max_age=0 always runs.
func TestAuditVerifyCache(t *testing.T) {
	f := &fakeVerify{}
	s := New(Config{AuditVerify: f.verify})
	now := time.Date(2026, 11, 24, 4, 0, 0, 0, time.UTC)
	s.verifier.now = func() time.Time { return now }

	if code, body, _ := verifyAt(t, s, ""); code != 200 || body["ok"] != true {
		t.Fatalf("first verify = %d %v", code, body)
	}
	verifyAt(t, s, "")
	if got := f.runs.Load(); got != 1 {
		t.Fatalf("two calls within max_age made %d runs, want 1", got)
	}
	now = now.Add(61 * time.Second)
	verifyAt(t, s, "")
	if got := f.runs.Load(); got != 2 {
		t.Fatalf("a call past the default max_age (60s) made %d runs in all, want 2", got)
	}
	verifyAt(t, s, "?max_age=3600")
	verifyAt(t, s, "?max_age=0")
	if got := f.runs.Load(); got != 3 {
		t.Fatalf("max_age=3600 then max_age=0 made %d runs in all, want 3", got)
	}
	// Anchors are part of the key, whatever their order.
	a := "1:" + auditchainHash('a')
	b := "2:" + auditchainHash('b')
	verifyAt(t, s, "?anchor="+a+"&anchor="+b)
	verifyAt(t, s, "?anchor="+b+"&anchor="+a)
	if got := f.runs.Load(); got != 4 {
		t.Fatalf("the same anchors in another order made %d runs in all, want 4", got)
	}
	code, body, _ := verifyAt(t, s, "?anchor="+a)
	if code != 200 || body["ok"] != false {
		t.Fatalf("an anchor beyond an empty chain = %d %v, want a failed verification", code, body)
	}

	for _, q := range []string{"?max_age=-1", "?max_age=x", "?max_age=86401", "?anchor=1:zz", "?anchor=0:" + auditchainHash('a')} {
		if code, body, _ := verifyAt(t, s, q); code != 400 || body["code"] != "invalid" {
			t.Errorf("GET /v1/audit/verify%s = %d %v, want 400 invalid", q, code, body)
		}
	}
	many := ""
	for i := range maxAnchors + 1 {
		many += "&anchor=" + string(rune('1'+i%9)) + ":" + auditchainHash('c')
	}
	if code, _, _ := verifyAt(t, s, "?"+many[1:]); code != 400 {
		t.Errorf("%d anchors = %d, want 400", maxAnchors+1, code)
	}
}

func auditchainHash(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = "0123456789abcdef"[(int(c)+i)%16]
	}
	return string(b)
}

// A run that outlasts the request answers 202 with Retry-After and goes
// on; callers share it; only one run at a time, whatever the anchors.
func TestAuditVerifySlowRun(t *testing.T) {
	f := &fakeVerify{release: make(chan struct{})}
	s := New(Config{AuditVerify: f.verify, AuditVerifyWait: 50 * time.Millisecond})

	code, body, h := verifyAt(t, s, "")
	if code != http.StatusAccepted || body["status"] != "running" || h.Get("Retry-After") == "" {
		t.Fatalf("slow verify = %d %v (Retry-After %q), want 202 running", code, body, h.Get("Retry-After"))
	}
	// Another caller joins the run in progress; one with anchors waits for
	// the slot rather than running beside it.
	if code, _, _ := verifyAt(t, s, ""); code != http.StatusAccepted {
		t.Fatalf("second slow verify = %d, want 202", code)
	}
	if code, _, _ := verifyAt(t, s, "?anchor=1:"+auditchainHash('d')); code != http.StatusAccepted {
		t.Fatalf("anchored verify during a run = %d, want 202", code)
	}
	close(f.release)
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body, _ = verifyAt(t, s, "")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("verify still %d %v after the run was released", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if body["ok"] != true {
		t.Fatalf("finished verify = %v", body)
	}
	if got := f.runs.Load(); got > 2 {
		t.Errorf("%d runs for two keys", got)
	}
	if got := f.maxRunning.Load(); got != 1 {
		t.Errorf("%d runs at once, want 1", got)
	}
}

func TestAuditVerifyNotConfigured(t *testing.T) {
	s := New(Config{})
	code, body, _ := verifyAt(t, s, "")
	if code != http.StatusUnprocessableEntity || body["code"] != "unsupported" {
		t.Fatalf("verify without a verifier = %d %v", code, body)
	}
}
