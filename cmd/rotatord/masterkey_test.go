package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/doctor"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/seal"
)

// keyFile writes a master key file of the given base64 keys, one a line.
func keyFile(t testing.TB, name string, keys ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(strings.Join(keys, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newMasterKey(t testing.TB) (b64, id string) {
	t.Helper()
	k := make([]byte, seal.KeySize)
	rand.Read(k)
	return base64.StdEncoding.EncodeToString(k), seal.KeyID(k)
}

// restart stops a replica and starts it again on the same address (the
// nats-server's resolver URL and the agent's rotatord URL stay valid) with
// another master key file.
func (e *env) restart(m *Main, keyFile string) *Main {
	e.t.Helper()
	cfg := m.Config
	cfg.Listen = m.listener.Addr().String()
	cfg.MasterKeyFile = keyFile
	m.Close()
	return e.startMain(cfg)
}

// serving checks, until stop, that each replica answers the API and the
// resolver; it returns the failures seen.
func serving(e *env, account string, ms ...*Main) (stop func() []string) {
	pub := e.must(200, "GET", "/v1/accounts/"+account, nil)["public_key"].(string)
	var (
		mu       sync.Mutex
		failures []string
		done     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for _, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				for _, path := range []string{"/v1/accounts/" + account, "/jwt/v1/accounts/" + pub} {
					req, _ := http.NewRequest("GET", m.URL()+path, nil)
					req.Header.Set("Authorization", "Bearer "+e.admin)
					resp, err := e.http.Do(req)
					if err == nil {
						resp.Body.Close()
					}
					if err != nil || resp.StatusCode != 200 {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("GET %s%s: %v %v", m.URL(), path, resp, err))
						mu.Unlock()
					}
				}
				select {
				case <-done:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
	}
	return func() []string {
		close(done)
		wg.Wait()
		return failures
	}
}

// The master-key procedure with two replicas on one database: the new key
// first in every replica's file, then `master-key rotate`, refused while a
// live replica lacks the new key, then done in one transaction; both
// replicas keep signing and serving at every step, and run on the new key
// alone once the old line is dropped. A value sealed afterwards by the
// removed key (a command run with an old file) is reported by status.
func TestMasterKeyRotationWithTwoReplicas(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startNATS()
	e.waitNATS()
	a, nc, _ := fleetAgent(e, "kate")
	oldB64, err := os.ReadFile(e.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	oldKey := strings.TrimSpace(string(oldB64))
	newKey, newID := newMasterKey(t)
	oldSealer, _ := seal.LoadFile(e.keyFile)
	oldID := oldSealer.KeyID()
	bothFile := keyFile(t, "both.key", newKey, oldKey)
	newFile := keyFile(t, "new.key", newKey)
	db := []string{"--database-url", e.dbURL}

	replicaB := e.startMain(e.config())
	// Step 1: the new key goes first into replica A's file; B still runs on the old key.
	e.main = e.restart(e.main, bothFile)
	r := runCLIWith(t, append([]string{"master-key", "rotate", "--new-key-file", newFile, "--master-key-file", bothFile}, db...)...)
	r.failed(t, "refusing to re-seal", "replica "+replicaB.replica.ID, "does not hold master key "+newID, "new key on the first line")
	if strings.Contains(r.err.Error(), e.main.replica.ID) {
		t.Fatalf("refusal names replica A, which holds the new key: %v", r.err)
	}
	st := runCLIWith(t, append([]string{"master-key", "status"}, db...)...).ok(t)
	for _, want := range []string{e.main.replica.ID, replicaB.replica.ID, newID + "," + oldID, "signing key seed", oldID} {
		if !strings.Contains(st.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, st.stdout)
		}
	}

	// Step 2: B restarts with the new file too; the rotation goes through
	// while both replicas serve.
	replicaB = e.restart(replicaB, bothFile)
	stop := serving(e, "fleet", e.main, replicaB)
	r = runCLIWith(t, append([]string{"master-key", "rotate", "--new-key-file", bothFile}, db...)...).ok(t)
	if failures := stop(); len(failures) > 0 {
		t.Fatalf("replicas stopped serving during the re-seal: %v", failures)
	}
	if !strings.Contains(r.stdout, "under master key "+newID) || !strings.Contains(r.stdout, "1 operator identity seed(s)") ||
		!strings.Contains(r.stdout, "2 live replica(s)") || !strings.Contains(r.stderr, "drop the old key") {
		t.Fatalf("rotate output:\n%s\n%s", r.stdout, r.stderr)
	}
	counts, err := e.main.Store.SealedCounts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range counts {
		if c.KeyID != newID {
			t.Fatalf("after the rotation %d %s(s) are sealed by %q, want every value under %s", c.Count, c.Kind, c.KeyID, newID)
		}
	}

	// Both replicas keep signing: a rotation started on B, fetched from A.
	rotateThrough := func(via *Main) {
		t.Helper()
		status, body := e.doAt(via, "POST", "/v1/agents/kate/rotate", e.admin, nil)
		if status != 202 {
			t.Fatalf("rotate via %s = %d %s", via.URL(), status, body)
		}
		id := decodeJSON(t, string(body))["id"].(string)
		if got, err := a.Refresh(context.Background()); err != nil || !got {
			t.Fatalf("agent refresh = %v, %v", got, err)
		}
		e.waitRotation(id, "completed")
		eventually(t, 10*time.Second, "agent connected", nc.IsConnected)
	}
	rotateThrough(replicaB)

	// Step 3: the old line goes; both replicas run on the new key alone.
	e.main = e.restart(e.main, newFile)
	replicaB = e.restart(replicaB, newFile)
	rotateThrough(e.main)
	rotateThrough(replicaB)
	if strings.Contains(e.logs.String(), "does not hold") {
		t.Fatalf("a replica warned of values it cannot open:\n%s", e.logs)
	}
	runCLIWith(t, append([]string{"master-key", "status"}, db...)...).ok(t)

	// A command run with the old file order seals under the removed key.
	stale := keyFile(t, "stale.key", oldKey, newKey)
	staleCfg := e.config()
	staleCfg.MasterKeyFile, staleCfg.LogLevel = stale, "error"
	store, svc, err := openService(context.Background(), staleCfg, true)
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.CreateAccount(context.Background(), "test", rotate.AccountInput{Name: "late"})
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	r = runCLIWith(t, append([]string{"master-key", "status"}, db...)...)
	r.failed(t, "1 problem")
	if !strings.Contains(r.stderr, "1 signing key seed(s) sealed by master key "+oldID+", which no live replica holds") {
		t.Fatalf("status stderr:\n%s", r.stderr)
	}
	// doctor fails on it too.
	dcfg := e.doctorConfig()
	dcfg.MasterKeyFile = newFile
	rep := diagnose(context.Background(), dcfg, doctorOpts())
	expectResult(t, rep, "sealed values", "", doctor.StatusFail, "1 signing key seed(s) sealed by master key "+oldID, "no live replica holds")
	// serve starts (the operator's key opens) and says what it cannot open.
	logs := &logBuffer{}
	cfg := replicaB.Config
	cfg.Listen = "127.0.0.1:0"
	m := NewMain()
	m.Config, m.Log = cfg, slog.New(slog.NewTextHandler(logs, nil))
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if !strings.Contains(logs.String(), "values sealed by a master key this replica does not hold") || !strings.Contains(logs.String(), oldID) {
		t.Fatalf("serve did not warn of the value sealed by the removed key:\n%s", logs)
	}
}

// serve refuses a multi-key file that group or others can read, before it
// touches the database, as it refuses a single key.
func TestMasterKeyFileOfTwoKeysOpenToOthers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	oldB64, _ := os.ReadFile(e.keyFile)
	newKey, _ := newMasterKey(t)
	both := keyFile(t, "both.key", newKey, strings.TrimSpace(string(oldB64)))
	os.Chmod(both, 0o640)
	m := NewMain()
	m.Config = e.config()
	m.Config.MasterKeyFile = both
	m.Log = discardLogger()
	if err := m.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "run: chmod 600 "+both) {
		m.Close()
		t.Fatalf("serve with a group-readable key file = %v", err)
	}
	r := runCLIWith(t, "master-key", "rotate", "--new-key-file", both, "--database-url", e.dbURL)
	r.failed(t, "chmod 600 "+both)
}
