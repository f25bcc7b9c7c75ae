package main

import (
	"strings"
	"testing"
	"time"
)

// The system account carries rotatord's own NATS connection: no PATCH may
// change its limits (conn 0 cut rotatord off for good, and revocations
// reached no server after it). Its description may change, and a PATCH
// that repeats the limits it has is fine. Revocations still reach NATS.
func TestSystemAccountCannotBeCutOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startNATS()
	e.waitNATS()
	before := e.must(200, "GET", "/v1/accounts/SYS", nil)
	for _, limits := range []map[string]any{
		{"conn": 0},
		{"subs": 1},
		{"payload": 1024},
		{"conn": -1, "subs": -1, "payload": -1, "data": 0},
	} {
		status, out := e.do("PATCH", "/v1/accounts/SYS", e.admin, map[string]any{"limits": limits, "description": "changed"})
		if status != 409 || !strings.Contains(string(out), "read-only") || !strings.Contains(string(out), "own NATS connection") {
			t.Fatalf("PATCH SYS limits %v = %d %s, want 409 saying why", limits, status, out)
		}
	}
	after := e.must(200, "GET", "/v1/accounts/SYS", nil)
	if after["jwt_id"] != before["jwt_id"] || after["description"] != before["description"] {
		t.Fatalf("refused PATCHes changed the system account: %v -> %v", before, after)
	}

	got := e.must(200, "PATCH", "/v1/accounts/SYS", map[string]any{"description": "rotatord's own",
		"limits": map[string]any{"conn": -1, "subs": -1, "payload": -1, "data": -1}})
	if got["description"] != "rotatord's own" {
		t.Fatalf("description of SYS = %v", got["description"])
	}

	// rotatord's connection works: a revocation is pushed and acknowledged.
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	createAgent(e, "kate", "fleet")
	eventually(t, 10*time.Second, "rotatord connected to nats", e.main.NATS.Connected)
	if rev := e.must(200, "POST", "/v1/agents/kate/revoke", map[string]any{"reason": "test"}); rev["pushed"] != true {
		t.Fatalf("revoke after the refused PATCHes = %v, want pushed", rev)
	}
	// Other accounts' limits still change.
	e.must(200, "PATCH", "/v1/accounts/fleet", map[string]any{"limits": map[string]any{"conn": 10, "subs": -1, "payload": -1, "data": -1}})
}
