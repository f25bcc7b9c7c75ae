package agent_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/rotatord/rotatord/pkg/agent"
)

func TestWriteCredsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.creds")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := agent.WriteCredsFile(path, []byte("new creds")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, []byte("new creds")) {
		t.Fatalf("file holds %q, %v; want the new creds", got, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("%d files in the folder; want no temporary file left", len(entries))
	}
}
