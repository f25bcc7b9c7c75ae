package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord/internal/natsrun"
	"github.com/rotatord/rotatord/internal/pglocal"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// rotatordBinary builds the rotatord binary once per test run.
func rotatordBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rotatord-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "rotatord")
		if out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// syncBuffer collects a child process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// userEnv is the environment of a user's shell: this one's without
// rotatord's variables, plus extra.
func userEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ROTATORD_") && !strings.HasPrefix(kv, "NATS_URL=") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// `rotatord dev` as a user runs it: the binary, in a folder of its own,
// with its own PostgreSQL. The demo agent's first scheduled rotation
// completes; <dir>/env works for the CLI and audit verify when sourced; a
// second dev says it runs already; a demo agent that dies is reported and
// started again; SIGINT stops everything with exit status 0.
func TestDevAsAUserWould(t *testing.T) {
	t.Parallel()
	bin := rotatordBinary(t)
	// The postgres user must reach the cluster when the tests run as root.
	work, err := os.MkdirTemp("", "rotatord-dev-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	natsPort, err := natsrun.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	pgPort, err := natsrun.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(work, devDirName)
	t.Cleanup(func() {
		// Whatever happened, no PostgreSQL is left running.
		if _, err := pglocal.StopStale(context.Background(), pglocal.Options{Dir: filepath.Join(dataDir, "pg")}); err != nil {
			t.Error(err)
		}
		os.RemoveAll(work)
	})

	// An exported database URL of another rotatord is ignored, and the
	// banner says so.
	env := userEnv("ROTATORD_DATABASE_URL=postgres://app:hunter2@db.example/app")
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	dev := exec.Command(bin, "dev", "--listen", "127.0.0.1:0", "--nats-port", strconv.Itoa(natsPort), "--pg-port", strconv.Itoa(pgPort),
		"--demo-first-rotation", "1s", "--demo-poll", "500ms", "--demo-heartbeat", "500ms")
	dev.Dir, dev.Env, dev.Stdout, dev.Stderr = work, env, stdout, stderr
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- dev.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if stopped {
			return
		}
		dev.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			dev.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("dev stdout:\n%s\ndev stderr:\n%s", stdout, stderr)
			if b, err := os.ReadFile(filepath.Join(dataDir, devAgentLog)); err == nil {
				t.Logf("demo agent log:\n%s", b)
			}
		}
	})
	waitFor := func(what string, d time.Duration, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !ok() {
			select {
			case err := <-exited:
				stopped = true
				t.Fatalf("dev exited (%v) while waiting for %s\nstdout:\n%s\nstderr:\n%s", err, what, stdout, stderr)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %s waiting for %s", d, what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("the banner", 90*time.Second, func() bool { return strings.Contains(stdout.String(), "Ctrl-C stops everything") })
	banner := stdout.String()
	for _, want := range []string{
		"source .rotatord-dev/env", "audit verify", "agents rotate demo-agent --wait",
		"rotates @every 2m (grace 1m)", "the first time at ", "Ignored from your environment (dev uses its own; flags change them): ROTATORD_DATABASE_URL",
		"PostgreSQL:        local, in .rotatord-dev/pg", "/ui/   (sign in with that token)",
	} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	if strings.Contains(banner+stderr.String(), "hunter2") {
		t.Error("dev printed the ignored URL's password")
	}

	// The env file, as `source` reads it.
	envFile := filepath.Join(dataDir, devEnvFile)
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	vars := parseEnvFile(string(b))
	for _, name := range []string{"ROTATORD_URL", "ROTATORD_TOKEN_FILE", "ROTATORD_DATABASE_URL"} {
		if vars[name] == "" {
			t.Fatalf("%s lacks %s:\n%s", envFile, name, b)
		}
	}
	if !strings.Contains(vars["ROTATORD_DATABASE_URL"], "port="+strconv.Itoa(pgPort)) {
		t.Errorf("ROTATORD_DATABASE_URL = %q, want the local PostgreSQL on port %d", vars["ROTATORD_DATABASE_URL"], pgPort)
	}
	cli := func(args ...string) (string, error) {
		t.Helper()
		// sh sources the file, as a user does, and runs the CLI with it.
		cmd := exec.Command("sh", "-c", `. "$1" && shift && exec "$@"`, "sh", envFile, bin)
		cmd.Args = append(cmd.Args, args...)
		cmd.Dir, cmd.Env = work, userEnv()
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	// The demo agent's first scheduled rotation completes on its own.
	token, err := os.ReadFile(vars["ROTATORD_TOKEN_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	var done map[string]any
	waitFor("the demo agent's first scheduled rotation to complete", 60*time.Second, func() bool {
		req, _ := http.NewRequest("GET", vars["ROTATORD_URL"]+"/v1/agents/"+devAgentName+"/rotations", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var page struct {
			Rotations []map[string]any `json:"rotations"`
		}
		if json.NewDecoder(resp.Body).Decode(&page) != nil {
			return false
		}
		for _, r := range page.Rotations {
			if r["trigger"] == "schedule" && r["state"] == "completed" {
				done = r
				return true
			}
			if r["state"] == "rolled_back" {
				t.Fatalf("the demo agent's rotation was rolled back: %v", r)
			}
		}
		return false
	})
	if !strings.Contains(stderr.String(), "rotation completed") {
		t.Errorf("dev's log does not show the rotation completing:\n%s", stderr)
	}

	// The CLI and audit verify work with the sourced env file.
	out, err := cli("rotations", "list", "--agent", devAgentName)
	if err != nil || !strings.Contains(out, done["id"].(string)) || !strings.Contains(out, "completed") {
		t.Fatalf("rotations list with the env file: %v\n%s", err, out)
	}
	out, err = cli("agents", "show", devAgentName, "-o", "json")
	if err != nil || !strings.Contains(out, `"state": "active"`) || !strings.Contains(out, done["new_public_key"].(string)) {
		t.Fatalf("agents show with the env file: %v\n%s", err, out)
	}
	out, err = cli("audit", "verify")
	if err != nil || !regexp.MustCompile(`^ok: \d+ events, head \d+ [0-9a-f]+`).MatchString(strings.TrimSpace(lastLine(out))) {
		t.Fatalf("audit verify with the env file: %v\n%s", err, out)
	}
	// The console the banner names answers.
	resp, err := http.Get(vars["ROTATORD_URL"] + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /ui/ = %d, want 200", resp.StatusCode)
	}

	// A second dev on the same folder says so in one line and exits 0.
	second := exec.Command(bin, "dev", "--listen", "127.0.0.1:0", "--nats-port", strconv.Itoa(natsPort), "--pg-port", strconv.Itoa(pgPort))
	second.Dir, second.Env = work, userEnv()
	out2, err := second.CombinedOutput()
	if err != nil || strings.Count(string(out2), "\n") != 1 || !strings.Contains(string(out2), "rotatord dev is already running in .rotatord-dev") {
		t.Errorf("second dev: %v, printed %q; want one line and exit 0", err, out2)
	}

	// The demo agent dies: dev says so and starts it again.
	pid := demoAgentPID(t, banner)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor("dev to report the demo agent's death", 20*time.Second, func() bool {
		return strings.Contains(stderr.String(), "the demo agent exited; restarting it")
	})
	waitFor("the demo agent to start again", 20*time.Second, func() bool {
		return strings.Count(stderr.String(), "demo agent started") == 2
	})
	restarted := lastPID(t, stderr.String())

	// SIGINT to the process itself: everything stops, exit status 0.
	if err := dev.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("dev after SIGINT: %v, want exit status 0\nstderr:\n%s", err, stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("dev did not stop after SIGINT")
	}
	if err := syscall.Kill(restarted, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the demo agent (pid %d) outlived dev: %v", restarted, err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "pg", "data", "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PostgreSQL still runs after dev stopped: %v", err)
	}

	// Started again, dev keeps its data: the same database URL, and the
	// demo agent goes on with the creds it saved.
	saved, err := os.ReadFile(filepath.Join(dataDir, devCredsFile))
	if err != nil {
		t.Fatal(err)
	}
	savedKey := credsKey(t, saved)
	logPath := filepath.Join(dataDir, devAgentLog)
	fi, err := os.Stat(logPath)
	if err != nil {
		t.Fatal(err)
	}
	logBefore := fi.Size()
	stdout2, stderr2 := &syncBuffer{}, &syncBuffer{}
	again := exec.Command(bin, "dev", "--listen", "127.0.0.1:0", "--nats-port", strconv.Itoa(natsPort), "--pg-port", strconv.Itoa(pgPort),
		"--demo-first-rotation", "1h")
	again.Dir, again.Env, again.Stdout, again.Stderr = work, userEnv(), stdout2, stderr2
	if err := again.Start(); err != nil {
		t.Fatal(err)
	}
	exited = make(chan error, 1)
	go func() { exited <- again.Wait() }()
	stopped, dev, stdout, stderr = false, again, stdout2, stderr2
	waitFor("the banner after a restart", 90*time.Second, func() bool { return strings.Contains(stdout2.String(), "Ctrl-C stops everything") })
	b, err = os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := parseEnvFile(string(b))["ROTATORD_DATABASE_URL"]; got != vars["ROTATORD_DATABASE_URL"] {
		t.Errorf("database URL after a restart = %q, want %q", got, vars["ROTATORD_DATABASE_URL"])
	}
	if strings.Contains(stderr2.String(), "creating it again") || strings.Contains(stdout2.String(), "Ignored from your environment") {
		t.Errorf("restart: dev made the demo agent again, or saw ignored variables:\n%s\n%s", stdout2, stderr2)
	}
	waitFor("the demo agent to connect with its saved key after the restart", 30*time.Second, func() bool {
		b, err := os.ReadFile(logPath)
		return err == nil && int64(len(b)) > logBefore &&
			strings.Contains(string(b[logBefore:]), "msg=connected agent=demo-agent key="+savedKey)
	})
	if err := again.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("dev after SIGTERM: %v, want exit status 0", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("dev did not stop after SIGTERM")
	}
}

// credsKey is the user public key of a creds file.
func credsKey(t *testing.T, creds []byte) string {
	t.Helper()
	token, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		t.Fatal(err)
	}
	return uc.Subject
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// demoAgentPID reads the demo agent's process ID from the banner.
func demoAgentPID(t *testing.T, banner string) int {
	t.Helper()
	m := regexp.MustCompile(`\(pid (\d+);`).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("banner names no demo agent pid:\n%s", banner)
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// lastPID is the pid of the latest "demo agent started" log line.
func lastPID(t *testing.T, logs string) int {
	t.Helper()
	all := regexp.MustCompile(`demo agent started" agent=demo-agent pid=(\d+)`).FindAllStringSubmatch(logs, -1)
	if len(all) == 0 {
		t.Fatalf("no demo agent start in the log:\n%s", logs)
	}
	pid, _ := strconv.Atoi(all[len(all)-1][1])
	return pid
}
