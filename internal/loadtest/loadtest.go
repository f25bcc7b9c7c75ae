// Package loadtest holds the result format shared by the load generator
// (cmd/loadgen), which prints it, and the resolver benchmark
// (cmd/resolverbench), which reads it.
package loadtest

import (
	"fmt"
	"slices"
	"strings"
)

// Result is what cmd/loadgen prints: one JSON line (read by
// cmd/resolverbench), then the same as text (Human).
type Result struct {
	URLs        int              `json:"urls"`
	Concurrency int              `json:"concurrency"`
	GOMAXPROCS  int              `json:"gomaxprocs"`
	Warmup      float64          `json:"warmup_s"`
	Duration    float64          `json:"duration_s"`
	Requests    uint64           `json:"requests"`
	RPS         float64          `json:"rps"`
	Mean        float64          `json:"mean_ms"`
	P50         float64          `json:"p50_ms"`
	P90         float64          `json:"p90_ms"`
	P99         float64          `json:"p99_ms"`
	P999        float64          `json:"p999_ms"`
	Max         float64          `json:"max_ms"`
	Errors      uint64           `json:"errors"`
	Non200      uint64           `json:"non_200"`
	Status      map[string]int64 `json:"status"`
	Bytes       int64            `json:"bytes"`
	FirstError  string           `json:"first_error,omitempty"`
}

// Human is the result as one line of text.
func (r *Result) Human() string {
	s := fmt.Sprintf("%d requests in %.1fs: %.0f req/s, p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, max %.3f ms, errors %d, non-200 %d (c=%d, %d URLs)",
		r.Requests, r.Duration, r.RPS, r.P50, r.P90, r.P99, r.Max, r.Errors, r.Non200, r.Concurrency, r.URLs)
	if r.Non200 > 0 {
		var parts []string
		for _, c := range r.StatusCodes() {
			parts = append(parts, fmt.Sprintf("%s: %d", c, r.Status[c]))
		}
		s += "; statuses " + strings.Join(parts, ", ")
	}
	if r.FirstError != "" {
		s += "; first error: " + r.FirstError
	}
	return s
}

// StatusCodes lists the status codes of a result in order, for messages.
func (r *Result) StatusCodes() []string {
	codes := make([]string, 0, len(r.Status))
	for c := range r.Status {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	return codes
}
