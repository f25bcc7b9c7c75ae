package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/auditchain"
)

// AuditVerifyFunc rehashes the whole audit chain in one read-only snapshot
// and checks that each anchor (a head recorded earlier) is still in it. An
// error means the check could not be done, not that the trail is damaged.
type AuditVerifyFunc func(ctx context.Context, anchors []auditchain.Head) (*auditchain.Report, error)

// GET /v1/audit/verify costs a read of every sealed event and a SHA-256
// over it (see docs/benchmarks.md): too much to do for every page view of
// every console. So a replica runs at most one verification at a time,
// callers asking for the same anchors share the run in progress, and a
// result is reused while it is younger than the caller's max_age. A run
// that outlasts the request (a very large trail) goes on in the
// background; the caller gets 202 and asks again.
const (
	// defaultVerifyWait is how long a request waits for a run before it
	// answers 202: below the HTTP server's WriteTimeout (30 s).
	defaultVerifyWait = 20 * time.Second
	// verifyRunTimeout bounds one run.
	verifyRunTimeout = 30 * time.Minute
	// defaultVerifyMaxAge is the age of a result that is reused when the
	// caller does not say.
	defaultVerifyMaxAge = 60 * time.Second
	// maxVerifyMaxAge bounds max_age.
	maxVerifyMaxAge = 24 * time.Hour
	// maxAnchors bounds the anchors of one request.
	maxAnchors = 16
	// maxVerifyCached bounds the results kept (one per set of anchors).
	maxVerifyCached = 16
)

// verification is one finished run.
type verification struct {
	report   *auditchain.Report
	started  time.Time
	finished time.Time
}

// auditVerifier runs and caches verifications (see above).
type auditVerifier struct {
	verify AuditVerifyFunc
	wait   time.Duration
	now    func() time.Time
	group  singleflight.Group
	slot   chan struct{} // held by the run in progress

	mu      sync.Mutex
	cached  map[string]*verification
	running map[string]time.Time // start of the run in progress, by key
}

func newAuditVerifier(verify AuditVerifyFunc, wait time.Duration) *auditVerifier {
	if wait <= 0 {
		wait = defaultVerifyWait
	}
	return &auditVerifier{verify: verify, wait: wait, now: time.Now, slot: make(chan struct{}, 1),
		cached: map[string]*verification{}, running: map[string]time.Time{}}
}

// anchorsKey is the cache key of a set of anchors, whatever their order.
func anchorsKey(anchors []auditchain.Head) string {
	keys := make([]string, len(anchors))
	for i, a := range anchors {
		keys[i] = a.String()
	}
	slices.Sort(keys)
	return strings.Join(slices.Compact(keys), ",")
}

// fresh returns the cached result for key if it finished within maxAge
// (never for 0).
func (v *auditVerifier) fresh(key string, maxAge time.Duration) *verification {
	v.mu.Lock()
	defer v.mu.Unlock()
	c := v.cached[key]
	if c == nil || maxAge == 0 || v.now().Sub(c.finished) > maxAge {
		return nil
	}
	return c
}

// startedAt reports when the run in progress for key started.
func (v *auditVerifier) startedAt(key string) time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.running[key]
}

// run verifies once for key, one run at a time per replica, and caches the
// result. It runs detached from any request.
func (v *auditVerifier) run(key string, anchors []auditchain.Head) (*verification, error) {
	v.mu.Lock()
	v.running[key] = v.now()
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		delete(v.running, key)
		v.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), verifyRunTimeout)
	defer cancel()
	select {
	case v.slot <- struct{}{}:
	case <-ctx.Done():
		return nil, rotatord.Errorf(rotatord.EUNAVAILABLE, "another audit verification is still running")
	}
	defer func() { <-v.slot }()
	started := v.now()
	r, err := v.verify(ctx, anchors)
	if err != nil {
		return nil, fmt.Errorf("verify audit chain: %w", err)
	}
	res := &verification{report: r, started: started, finished: v.now()}
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.cached) >= maxVerifyCached {
		// Forget the oldest result.
		oldest := ""
		for k, c := range v.cached {
			if oldest == "" || c.finished.Before(v.cached[oldest].finished) {
				oldest = k
			}
		}
		delete(v.cached, oldest)
	}
	v.cached[key] = res
	return res, nil
}

type auditVerifyJSON struct {
	OK               bool                 `json:"ok"`
	Events           int64                `json:"events"`
	Head             auditchain.Head      `json:"head"`
	Problems         []auditchain.Problem `json:"problems"`
	MoreProblems     int                  `json:"more_problems"`
	Unsealed         int64                `json:"unsealed"`
	OldestUnsealedID *int64               `json:"oldest_unsealed_id"`
	UnsealedBefore   time.Time            `json:"unsealed_before"`
	Anchors          []auditchain.Head    `json:"anchors"`
	StartedAt        time.Time            `json:"started_at"`
	FinishedAt       time.Time            `json:"finished_at"`
}

func toAuditVerifyJSON(res *verification, anchors []auditchain.Head) auditVerifyJSON {
	r := res.report
	out := auditVerifyJSON{OK: r.OK(), Events: r.Events, Head: r.Head, Problems: r.Problems, MoreProblems: r.MoreProblems,
		Unsealed: r.Unsealed, UnsealedBefore: r.UnsealedBefore.UTC(), Anchors: anchors,
		StartedAt: res.started.UTC(), FinishedAt: res.finished.UTC()}
	if out.Problems == nil {
		out.Problems = []auditchain.Problem{}
	}
	if out.Anchors == nil {
		out.Anchors = []auditchain.Head{}
	}
	if r.OldestUnsealedID != 0 {
		id := r.OldestUnsealedID
		out.OldestUnsealedID = &id
	}
	return out
}

// verifyAudit serves GET /v1/audit/verify.
func (s *Server) verifyAudit(w http.ResponseWriter, r *http.Request) {
	if s.verifier == nil {
		s.writeError(w, r, rotatord.Errorf(rotatord.EUNSUPPORTED, "audit verification is not configured on this server"))
		return
	}
	q := r.URL.Query()
	var anchors []auditchain.Head
	if len(q["anchor"]) > maxAnchors {
		s.writeError(w, r, rotatord.Errorf(rotatord.EINVALID, "at most %d anchors", maxAnchors))
		return
	}
	for _, a := range q["anchor"] {
		h, err := auditchain.ParseHead(a)
		if err != nil {
			s.writeError(w, r, rotatord.Errorf(rotatord.EINVALID, "%s", err))
			return
		}
		anchors = append(anchors, h)
	}
	maxAge := defaultVerifyMaxAge
	if v := q.Get("max_age"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || time.Duration(n)*time.Second > maxVerifyMaxAge {
			s.writeError(w, r, rotatord.Errorf(rotatord.EINVALID, "max_age %.20q must be a number of seconds from 0 to %d", v, int(maxVerifyMaxAge.Seconds())))
			return
		}
		maxAge = time.Duration(n) * time.Second
	}
	key := anchorsKey(anchors)
	if res := s.verifier.fresh(key, maxAge); res != nil {
		writeJSON(w, http.StatusOK, toAuditVerifyJSON(res, anchors))
		return
	}
	ch := s.verifier.group.DoChan(key, func() (any, error) { return s.verifier.run(key, anchors) })
	timer := time.NewTimer(s.verifier.wait)
	defer timer.Stop()
	select {
	case res := <-ch:
		if res.Err != nil {
			s.writeError(w, r, res.Err)
			return
		}
		writeJSON(w, http.StatusOK, toAuditVerifyJSON(res.Val.(*verification), anchors))
	case <-timer.C:
		w.Header().Set("Retry-After", "5")
		started := s.verifier.startedAt(key)
		if started.IsZero() {
			started = s.verifier.now()
		}
		writeJSON(w, http.StatusAccepted, map[string]any{"status": "running", "started_at": started.UTC()})
	case <-r.Context().Done():
		// The caller left; the run goes on for the next one.
	}
}
