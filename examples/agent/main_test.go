package main

import (
	"io"
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
