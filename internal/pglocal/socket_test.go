package pglocal_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The cluster trusts whoever reaches its socket, so only the server's user
// may: the socket folder and the socket are owner-only, even when an older
// run left the folder open, and another local user cannot connect (it
// could create a database, or plant an admin token in rotatord's).
func TestSocketIsOwnerOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running a client as another local user (runuser -u nobody) needs root")
	}
	runuser, err := exec.LookPath("runuser")
	if err != nil {
		t.Skip("runuser is not installed")
	}
	createdb, _ := filepath.Glob("/usr/lib/postgresql/*/bin/createdb")
	if len(createdb) == 0 {
		t.Skip("no PostgreSQL client program (createdb) to run as another user")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	dir := tempDir(t)
	// What an older version left: a socket folder every user may enter.
	if err := os.Mkdir(filepath.Join(dir, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := start(t, ctx, dir)

	fi, err := os.Stat(c.SocketDir())
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket folder %s: mode %v, %v; want 0700", c.SocketDir(), fi.Mode().Perm(), err)
	}
	sock := filepath.Join(c.SocketDir(), ".s.PGSQL."+strconv.Itoa(c.Port()))
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("socket %s: mode %v, %v; want owner-only", sock, fi.Mode().Perm(), err)
	}
	// The owner connects (root too).
	conn := connect(t, ctx, c.URL("postgres"))

	// nobody can run the client, but not reach the server.
	asNobody := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, runuser, append([]string{"-u", "nobody", "--", createdb[0]}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := asNobody("--version"); err != nil {
		t.Fatalf("nobody cannot run %s: %v %s", createdb[0], err, out)
	}
	out, err := asNobody("-h", c.SocketDir(), "-p", strconv.Itoa(c.Port()), "-U", "postgres", "-w", "planted")
	if err == nil {
		t.Fatalf("another local user created a database over the socket: %s", out)
	}
	if !strings.Contains(out, "Permission denied") {
		t.Fatalf("another local user's connection failed, but not on the socket's permissions: %s", out)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = 'planted'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("database planted: %d, %v", n, err)
	}
}
