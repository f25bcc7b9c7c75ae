package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// mustConnect asserts that creds are accepted by the server now.
func mustConnect(t testing.TB, e *env, creds, when string) {
	t.Helper()
	c, err := connectCreds(e, creds)
	if err != nil {
		t.Fatalf("%s: creds refused: %v", when, err)
	}
	c.Close()
}

// A rotation left in any state by a replica that stopped is finished by a
// fresh one, and the agent always holds creds the server accepts.
func TestResumeAfterCrash(t *testing.T) {
	t.Parallel()
	for _, state := range []string{"issued", "distributed", "confirmed"} {
		t.Run(state, func(t *testing.T) {
			e := newEnvWith(t, func(c *Config) { c.TickSpec = "" })
			e.startNATS()
			e.waitNATS()
			a, _, oldCreds := fleetAgent(e, "kate")
			id := e.must(202, "POST", "/v1/agents/kate/rotate", nil)["id"].(string)
			newCreds := fetchCreds(t, e, a)
			ctx := context.Background()

			// Stop the replica, then leave the rotation as a crash at that
			// state would have left it.
			e.main.Close()
			mustConnect(t, e, oldCreds, "after the crash")
			e.main = e.startMain(e.config())
			if _, err := e.main.Store.Pool().Exec(ctx, `UPDATE rotations SET state = $1 WHERE id = $2`, state, id); err != nil {
				t.Fatal(err)
			}
			e.waitNATS()
			mustConnect(t, e, oldCreds, "before the fresh replica resumes")

			// The agent switches to its new creds meanwhile (for the
			// confirmed state it already had).
			nc, err := connectCreds(e, newCreds)
			if err != nil {
				t.Fatalf("new creds refused: %v", err)
			}
			defer nc.Close()
			e.main.Service.MarkEventsMissed() // the connect event went to the stopped replica
			for i := 0; i < 50 && e.rotation(id)["state"] != "completed"; i++ {
				if _, err := e.main.Service.Tick(ctx); err != nil {
					t.Fatalf("tick: %v", err)
				}
				mustConnect(t, e, newCreds, "while resuming")
				time.Sleep(50 * time.Millisecond)
			}
			if r := e.rotation(id); r["state"] != "completed" {
				t.Fatalf("rotation = %v, want completed", r)
			}
			if !nc.IsConnected() {
				t.Fatal("the agent's new connection was dropped")
			}
			eventually(t, 5*time.Second, "old creds refused", func() bool {
				c, err := connectCreds(e, oldCreds)
				if err == nil {
					c.Close()
				}
				return err != nil
			})
		})
	}
}

// Two replicas ticking on one database never start two rotations of the
// same agent.
func TestReplicasRotateOnce(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *Config) { c.TickSpec = "" })
	e.must(201, "POST", "/v1/accounts", map[string]any{"name": "fleet"})
	const n = 40
	for i := range n {
		createAgent(e, fmt.Sprintf("agent-%02d", i), "fleet")
	}
	b := e.startMain(e.config())
	ctx := context.Background()
	if _, err := e.main.Store.Pool().Exec(ctx, `UPDATE agents SET next_rotation_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, m := range []*Main{e.main, b, e.main, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := m.Service.Tick(ctx); err != nil {
				t.Errorf("tick: %v", err)
			}
		}()
	}
	wg.Wait()
	rows, err := e.main.Store.Pool().Query(ctx, `SELECT g.name, count(r.id) FROM agents g LEFT JOIN rotations r ON r.agent_id = g.id GROUP BY g.name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var name string
		var count int
		rows.Scan(&name, &count)
		if count != 1 {
			t.Errorf("agent %s has %d rotations, want 1", name, count)
		}
		seen++
	}
	if seen != n {
		t.Fatalf("saw %d agents, want %d", seen, n)
	}
}

// A rotatord process killed with SIGKILL mid-rotation leaves a rotation
// that another replica completes.
func TestKilledProcess(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *Config) { c.TickSpec = "" })
	e.startNATS()
	e.waitNATS()
	a, _, oldCreds := fleetAgent(e, "kate")

	bin := filepath.Join(t.TempDir(), "rotatord")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(),
		"ROTATORD_DATABASE_URL="+e.dbURL, "ROTATORD_MASTER_KEY_FILE="+e.keyFile, "ROTATORD_LISTEN=127.0.0.1:0",
		fmt.Sprintf("ROTATORD_NATS_URL=nats://127.0.0.1:%d", e.natsPort), "ROTATORD_LOG_LEVEL=warn")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	// The rotation is started on this replica; the other process is a
	// second replica that takes part in the work until it is killed.
	id := e.must(202, "POST", "/v1/agents/kate/rotate", nil)["id"].(string)
	time.Sleep(300 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	mustConnect(t, e, oldCreds, "after the kill")

	if _, err := a.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "agent on its new key", func() bool { return a.State() == "connected" })
	for i := 0; i < 100 && e.rotation(id)["state"] != "completed"; i++ {
		e.main.Service.Tick(context.Background())
		time.Sleep(50 * time.Millisecond)
	}
	if r := e.rotation(id); r["state"] != "completed" {
		t.Fatalf("rotation = %v, want completed; killed process said:\n%s", r, stderr.String())
	}
}

// A rotation left confirmed with its revoking JWT stored but not pushed
// (the replica stopped right after the re-sign) is completed by another
// replica's push, and only then; the old creds are refused by then.
func TestResumeResignedRotation(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *Config) { c.TickSpec = "" })
	e.startNATS()
	e.waitNATS()
	a, _, oldCreds := fleetAgent(e, "kate")
	id := e.must(202, "POST", "/v1/agents/kate/rotate", nil)["id"].(string)
	if _, err := a.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.waitRotation(id, "completed")
	// Put the database back as the stopped replica left it: the rotation
	// confirmed, stamped with the version that revokes its old key, that
	// version stored but owed to the servers.
	e.main.Close()
	ctx := context.Background()
	m := e.startMain(e.config())
	if _, err := m.Store.Pool().Exec(ctx, `UPDATE rotations SET state = 'confirmed', finished_at = NULL WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Store.Pool().Exec(ctx, `UPDATE accounts SET pushed_version = jwt_version - 1 WHERE name = 'fleet'`); err != nil {
		t.Fatal(err)
	}
	e.main = m
	if r := e.rotation(id); r["state"] != "confirmed" {
		t.Fatalf("rotation = %v, want confirmed until the push", r)
	}
	// The push retry (every 5 s, or at once after a reconnect) pushes it.
	m.kickPush()
	r := e.waitRotation(id, "completed")
	if r["finished_at"] == nil {
		t.Fatalf("completed rotation = %v", r)
	}
	if c, err := connectCreds(e, oldCreds); err == nil {
		c.Close()
		t.Fatal("old creds connected after the resumed rotation completed")
	}
}
