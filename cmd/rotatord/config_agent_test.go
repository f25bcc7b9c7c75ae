package main

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestAgentLimitsConfig(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c := DefaultConfig()
	if c.AgentFailRate.String() != "10/s:20" || c.AgentRate.String() != "5/s:10" || c.AgentRotateMinInterval != 10*time.Minute {
		t.Fatalf("defaults = %v, %v, %v", c.AgentFailRate, c.AgentRate, c.AgentRotateMinInterval)
	}
	c.fromEnv(env(map[string]string{"ROTATORD_AGENT_FAIL_RATE": "300/m", "ROTATORD_AGENT_RATE": "2/s:3",
		"ROTATORD_AGENT_ROTATE_MIN_INTERVAL": "1h"}))
	if c.AgentFailRate.PerSecond != 5 || c.AgentFailRate.Burst != 10 || c.AgentRate.Burst != 3 || c.AgentRotateMinInterval != time.Hour {
		t.Fatalf("from env = %+v, %+v, %v", c.AgentFailRate, c.AgentRate, c.AgentRotateMinInterval)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("valid limits: %v", err)
	}
	// Flags beat the environment.
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.bind(fs, "agent-fail-rate", "agent-rate", "agent-rotate-min-interval")
	if err := fs.Parse([]string{"--agent-fail-rate", "1/s", "--agent-rotate-min-interval", "30s"}); err != nil {
		t.Fatal(err)
	}
	if c.AgentFailRate.PerSecond != 1 || c.AgentFailRate.Burst != 2 || c.AgentRotateMinInterval != 30*time.Second {
		t.Fatalf("from flags = %+v, %v", c.AgentFailRate, c.AgentRotateMinInterval)
	}
	if err := fs.Parse([]string{"--agent-rate", "lots"}); err == nil {
		t.Fatal("--agent-rate lots was taken")
	}

	// Validate names every bad value at once.
	bad := DefaultConfig()
	bad.fromEnv(env(map[string]string{"ROTATORD_AGENT_FAIL_RATE": "fast", "ROTATORD_AGENT_RATE": "5/d",
		"ROTATORD_AGENT_ROTATE_MIN_INTERVAL": "often"}))
	err := bad.Validate()
	for _, want := range []string{"ROTATORD_AGENT_FAIL_RATE", `"fast"`, "ROTATORD_AGENT_RATE", `"5/d"`, "ROTATORD_AGENT_ROTATE_MIN_INTERVAL"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v; want it to name %s", err, want)
		}
	}
	bad = DefaultConfig()
	bad.AgentRotateMinInterval = 0
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "agent rotate min interval") {
		t.Errorf("Validate() with a zero interval = %v", err)
	}
}

func TestAgentReconnectRateConfig(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c := DefaultConfig()
	if c.AgentReconnectRate.String() != "1000/s:1000" || c.AgentReconnectOff {
		t.Fatalf("default = %v (off %v)", c.AgentReconnectRate, c.AgentReconnectOff)
	}
	c.fromEnv(env(map[string]string{"ROTATORD_AGENT_RECONNECT_RATE": "200/s:50"}))
	if c.AgentReconnectRate.PerSecond != 200 || c.AgentReconnectRate.Burst != 50 || c.AgentReconnectOff {
		t.Fatalf("from env = %+v (off %v)", c.AgentReconnectRate, c.AgentReconnectOff)
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.bind(fs, "agent-reconnect-rate")
	if err := fs.Parse([]string{"--agent-reconnect-rate", "off"}); err != nil || !c.AgentReconnectOff {
		t.Fatalf("--agent-reconnect-rate off: %v, off %v", err, c.AgentReconnectOff)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("off is valid: %v", err)
	}
	if err := fs.Parse([]string{"--agent-reconnect-rate", "never"}); err == nil {
		t.Fatal("--agent-reconnect-rate never was taken")
	}
	bad := DefaultConfig()
	bad.fromEnv(env(map[string]string{"ROTATORD_AGENT_RECONNECT_RATE": "0/s"}))
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "ROTATORD_AGENT_RECONNECT_RATE") {
		t.Errorf("Validate() with 0/s = %v; want it to name ROTATORD_AGENT_RECONNECT_RATE", err)
	}
}
