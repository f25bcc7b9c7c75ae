package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rotatord/rotatord/internal/seal"
)

// Every command that opens the master key refuses a key file that group or
// others can read, with the chmod to run; serve does before it touches the
// database.
func TestMasterKeyFileOpenToOthers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if err := os.Chmod(e.keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	want := "run: chmod 600 " + e.keyFile

	m := NewMain()
	m.Config = e.config()
	m.Log = discardLogger()
	if err := m.Run(context.Background()); err == nil || !strings.Contains(err.Error(), want) {
		m.Close()
		t.Fatalf("serve with a world-readable key = %v, want a refusal with %q", err, want)
	}
	key := []string{"--database-url", e.dbURL, "--master-key-file", e.keyFile}
	r := runCLIWith(t, append([]string{"init", "--operator", "test-op"}, key...)...)
	r.failed(t, want)
	if r.stdout != "" {
		t.Fatalf("init printed %q with a refused key", r.stdout)
	}

	if err := os.Chmod(e.keyFile, 0o600); err != nil {
		t.Fatal(err)
	}
	runCLIWith(t, append([]string{"init", "--operator", "test-op"}, key...)...).ok(t)
}

// init with another master key than the one the operator was made with
// fails as serve does (it said "nothing changed" and exited 0), and prints
// no nats-server block.
func TestInitWithWrongMasterKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	other := filepath.Join(t.TempDir(), "other.key")
	if _, err := seal.WriteNewKeyFile(other); err != nil {
		t.Fatal(err)
	}
	r := runCLIWith(t, "init", "--operator", "test-op", "--database-url", e.dbURL, "--master-key-file", other)
	r.failed(t, "wrong master key")
	if r.stdout != "" || strings.Contains(r.stderr, "nothing changed") {
		t.Fatalf("init with a wrong key: stdout %q, stderr %q", r.stdout, r.stderr)
	}
	m := NewMain()
	m.Config = e.config()
	m.Config.MasterKeyFile = other
	m.Log = discardLogger()
	err := m.Run(context.Background())
	if err == nil {
		m.Close()
		t.Fatal("serve with a wrong key started")
	}
	if !strings.Contains(err.Error(), "wrong master key") {
		t.Fatalf("serve with a wrong key = %v", err)
	}
	r = runCLIWith(t, "init", "--operator", "test-op", "--database-url", e.dbURL, "--master-key-file", e.keyFile).ok(t)
	if !strings.Contains(r.stderr, "nothing changed") || !strings.HasPrefix(r.stdout, "operator: ") {
		t.Fatalf("init with the right key: stdout %q, stderr %q", r.stdout, r.stderr)
	}
}
