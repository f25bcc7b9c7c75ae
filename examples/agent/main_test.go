package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	env := map[string]string{"AGENT_NAME": "agent-kate", "AGENT_POLL_INTERVAL": "5s", "NATS_URL": "nats://n:4222"}
	cfg, err := parseConfig([]string{"-interval", "2s"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "agent-kate" || cfg.Interval != 2*time.Second || cfg.NATSURL != "nats://n:4222" || cfg.Rotatord != "http://127.0.0.1:8080" {
		t.Fatalf("got %+v; want flags over environment over defaults", cfg)
	}
	if _, err := parseConfig([]string{"-interval", "0s", "-name", ""}, func(string) string { return "" }, io.Discard); err == nil {
		t.Fatal("a zero interval and an empty name were accepted")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.creds")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(path, []byte("new creds")); err != nil {
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
