// Package pglocal runs a local PostgreSQL cluster from the machine's own
// PostgreSQL binaries, for tests (throwaway data) and for development
// (persistent data that survives restarts).
//
// A cluster lives in one folder, Options.Dir:
//
//	Dir/data          the data directory (PGDATA), made by initdb on first use
//	Dir/postgres.log  the server log (appended to on every start)
//	Dir/run           the unix socket directory, unless Dir is too long for a
//	                  unix socket path, in which case a short temporary folder
//	                  is used and removed by Stop
//
// The server listens only on a unix socket (listen_addresses is empty); the
// port number only names the socket file. Authentication is "trust", so only
// the user that runs the server may reach the socket: its folder is mode
// 0700 and the socket itself 0700 (unix_socket_permissions), and another
// local user cannot connect. (Root can, as it can read the data anyway.)
//
// # Running as root
//
// initdb and postgres refuse to run as root. When the process runs as root,
// pglocal runs initdb and pg_ctl as the "postgres" user (with runuser), makes
// Dir and the socket folder owned by that user, and checks that every parent
// folder of Dir is traversable by it. Folders made by testing.T.TempDir are
// mode 0700 and owned by root, so callers running as root should pass a Dir
// under a world-traversable place, for example one made with
// os.MkdirTemp("", "name-") and chmod 0755.
package pglocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Superuser is the name of the cluster's superuser role, made by initdb.
const Superuser = "postgres"

// maxSocketPath is the longest unix socket path the kernel accepts
// (sizeof(sun_path) minus the terminating NUL byte).
const maxSocketPath = 107

// defaultTimeout bounds starting and stopping when the context has no deadline.
const defaultTimeout = 60 * time.Second

// Options configures Start.
type Options struct {
	// Dir is the cluster's folder. It is created if missing. If it already
	// holds an initialized cluster (Dir/data/PG_VERSION exists), that cluster
	// is started again with its data. Required.
	Dir string
	// BinDir is the folder holding initdb, pg_ctl and postgres. When empty,
	// pglocal uses /usr/lib/postgresql/<major>/bin matching an existing
	// cluster's version, else the newest /usr/lib/postgresql/*/bin, else the
	// folder of initdb found on PATH.
	BinDir string
	// Port names the unix socket (.s.PGSQL.<port>). Zero picks a free TCP
	// port number.
	Port int
	// Fast turns off durability (fsync, full_page_writes, synchronous_commit)
	// for speed. Use it for tests only: a crash can corrupt the data.
	Fast bool
	// Logger receives progress messages. Nil discards them.
	Logger *slog.Logger
}

// Cluster is a running local PostgreSQL server started by Start. Its methods
// are safe for concurrent use.
type Cluster struct {
	dir        string
	dataDir    string
	sockDir    string
	sockIsTemp bool
	port       int
	binDir     string
	runAs      *osUser // nil when not running as root
	log        *slog.Logger

	mu      sync.Mutex
	stopped bool
}

// osUser is the account that runs the PostgreSQL programs when we are root.
type osUser struct {
	name   string
	uid    int
	gid    int
	groups []int
}

// Start initializes the cluster in opts.Dir if needed, starts the server and
// waits until it accepts connections or ctx ends. The caller must call Stop.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("start postgres: options.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("start postgres in %s: %w", opts.Dir, err)
	}
	c, err := start(ctx, dir, opts)
	if err != nil {
		return nil, fmt.Errorf("start postgres in %s: %w", dir, err)
	}
	return c, nil
}

func start(ctx context.Context, dir string, opts Options) (*Cluster, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		port:    opts.Port,
		log:     log,
	}

	if os.Geteuid() == 0 {
		u, err := lookupUser(Superuser)
		if err != nil {
			return nil, fmt.Errorf("running as root needs the %q system user to run postgres: %w", Superuser, err)
		}
		c.runAs = u
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create folder: %w", err)
	}
	if err := c.chown(dir); err != nil {
		return nil, err
	}
	if err := c.checkTraversable(dir); err != nil {
		return nil, err
	}

	existingVersion := ""
	if b, err := os.ReadFile(filepath.Join(c.dataDir, "PG_VERSION")); err == nil {
		existingVersion = strings.TrimSpace(string(b))
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read cluster version: %w", err)
	}

	binDir, err := findBinDir(opts.BinDir, existingVersion)
	if err != nil {
		return nil, err
	}
	c.binDir = binDir

	if c.port == 0 {
		if c.port, err = freePort(); err != nil {
			return nil, err
		}
	}

	if err := c.makeSocketDir(); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			c.removeSocketDir()
		}
	}()

	if existingVersion == "" {
		if err := c.initdb(ctx); err != nil {
			return nil, err
		}
	} else {
		c.log.Info("reusing postgres cluster", "data", c.dataDir, "version", existingVersion)
	}

	if err := c.pgCtlStart(ctx, opts.Fast); err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx); err != nil {
		if stopErr := c.pgCtlStop(); stopErr != nil {
			c.log.Warn("stop postgres after failed start", "dir", c.dir, "err", stopErr)
		}
		return nil, c.withLogTail(err)
	}
	ok = true
	c.log.Info("postgres started", "dir", c.dir, "socket_dir", c.sockDir, "port", c.port, "bin", c.binDir)
	return c, nil
}

// URL returns a connection URL for database on this cluster, as the
// superuser over the unix socket, for example
// "postgres://postgres@/app?host=%2Ftmp%2Fx%2Frun&port=5432&sslmode=disable".
// pgx and libpq accept it.
func (c *Cluster) URL(database string) string {
	q := url.Values{}
	q.Set("host", c.sockDir)
	q.Set("port", strconv.Itoa(c.port))
	q.Set("sslmode", "disable")
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(Superuser),
		Path:     "/" + database,
		RawQuery: q.Encode(),
	}
	return u.String()
}

// Dir returns the cluster's folder (Options.Dir made absolute).
func (c *Cluster) Dir() string { return c.dir }

// SocketDir returns the folder holding the server's unix socket.
func (c *Cluster) SocketDir() string { return c.sockDir }

// Port returns the port number that names the server's unix socket.
func (c *Cluster) Port() int { return c.port }

// Stop shuts the server down ("pg_ctl stop -m fast", which disconnects
// clients) and waits for it to exit. Calling Stop again does nothing.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	if err := c.pgCtlStop(); err != nil {
		return fmt.Errorf("stop postgres in %s: %w", c.dir, err)
	}
	c.stopped = true
	c.removeSocketDir()
	c.log.Info("postgres stopped", "dir", c.dir)
	return nil
}

// Signal sends sig to the server's processes: the postmaster and every
// process it started (backends, background workers). Tests freeze a server
// with SIGSTOP, as a dropped network looks to its clients, and thaw it with
// SIGCONT. It needs /proc (Linux).
func (c *Cluster) Signal(sig syscall.Signal) error {
	pids, err := c.pids()
	if err != nil {
		return fmt.Errorf("signal postgres in %s: %w", c.dir, err)
	}
	var errs []error
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("signal postgres process %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

// pids returns the postmaster's PID (from postmaster.pid) and its children's.
func (c *Cluster) pids() ([]int, error) {
	b, err := os.ReadFile(filepath.Join(c.dataDir, "postmaster.pid"))
	if err != nil {
		return nil, fmt.Errorf("read postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	master, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return nil, fmt.Errorf("postmaster.pid: %q is not a process ID", first)
	}
	pids := []int{master}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
		if f := strings.Fields(rest); len(f) > 1 {
			if ppid, err := strconv.Atoi(f[1]); err == nil && ppid == master {
				pids = append(pids, pid)
			}
		}
	}
	return pids, nil
}

// CreateDatabase creates database name owned by the superuser unless it
// exists already.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	if err := c.createDatabase(ctx, name); err != nil {
		return fmt.Errorf("create database %q: %w", name, err)
	}
	return nil
}

func (c *Cluster) createDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var exists bool
	err = conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists)
	if err != nil {
		return fmt.Errorf("look up database: %w", err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505") {
		// duplicate_database, or unique_violation on pg_database when
		// another session created it at the same moment.
		return nil
	}
	return err
}

// initdb creates the data directory.
func (c *Cluster) initdb(ctx context.Context) error {
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	if err := c.chown(c.dataDir); err != nil {
		return err
	}
	c.log.Info("initializing postgres cluster", "data", c.dataDir, "bin", c.binDir)
	out, err := c.run(ctx, "initdb",
		"-D", c.dataDir,
		"-U", Superuser,
		"--auth=trust",
		"--encoding=UTF8",
		"--locale=C",
		"--no-sync",
	)
	if err != nil {
		return fmt.Errorf("initdb: %w: %s", err, lastLines(out, 20))
	}
	return nil
}

// pgCtlStart starts the server with pg_ctl and waits for it to accept
// connections.
func (c *Cluster) pgCtlStart(ctx context.Context, fast bool) error {
	settings := []string{
		"listen_addresses=",
		"unix_socket_directories=" + c.sockDir,
		"port=" + strconv.Itoa(c.port),
		"max_connections=200",
		// Trust authentication: the socket is the only gate.
		"unix_socket_permissions=0700",
	}
	if fast {
		settings = append(settings,
			"fsync=off",
			"full_page_writes=off",
			"synchronous_commit=off",
		)
	}
	// pg_ctl hands -o to /bin/sh, so every word is quoted.
	var o []string
	for _, s := range settings {
		o = append(o, "-c", shellQuote(s))
	}

	wait := defaultTimeout
	if dl, ok := ctx.Deadline(); ok {
		wait = max(time.Until(dl), time.Second)
	}
	logFile := c.logFile()
	out, err := c.run(ctx, "pg_ctl", "start",
		"-w",
		"-t", strconv.Itoa(int(wait.Round(time.Second)/time.Second)),
		"-D", c.dataDir,
		"-l", logFile,
		"-o", strings.Join(o, " "),
	)
	if err != nil {
		return c.withLogTail(fmt.Errorf("pg_ctl start: %w: %s", err, strings.TrimSpace(lastLines(out, 10))))
	}
	return nil
}

// waitReady waits until a pgx connection succeeds.
func (c *Cluster) waitReady(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	for {
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(context.WithoutCancel(ctx))
			if err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for connections: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pgCtlStop stops the server. A server that is not running counts as
// stopped.
func (c *Cluster) pgCtlStop() error {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTimeout)
	defer cancel()
	out, err := c.run(ctx, "pg_ctl", "stop", "-w", "-m", "fast", "-D", c.dataDir)
	if err == nil {
		return nil
	}
	if _, statErr := os.Stat(filepath.Join(c.dataDir, "postmaster.pid")); errors.Is(statErr, os.ErrNotExist) {
		return nil
	}
	return fmt.Errorf("pg_ctl stop: %w: %s", err, strings.TrimSpace(lastLines(out, 10)))
}

// run runs one of the PostgreSQL programs, as the postgres user when we are
// root, and returns its combined output.
func (c *Cluster) run(ctx context.Context, program string, args ...string) ([]byte, error) {
	path := filepath.Join(c.binDir, program)
	var cmd *exec.Cmd
	if c.runAs != nil {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", c.runAs.name, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	// A folder the postgres user can enter, so programs that look at the
	// working folder do not fail.
	cmd.Dir = c.dir
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	c.log.Debug("run", "cmd", cmd.String())
	err := cmd.Run()
	return out.Bytes(), err
}

// makeSocketDir picks and creates the socket folder, owner-only (0700, and
// owned by the server's user): Dir/run when the socket path fits, else a
// short temporary folder.
func (c *Cluster) makeSocketDir() error {
	sock := filepath.Join(c.dir, "run")
	if len(socketPath(sock, c.port)) <= maxSocketPath {
		if err := os.MkdirAll(sock, 0o700); err != nil {
			return fmt.Errorf("create socket folder: %w", err)
		}
		// A folder left by an older version may be open to everyone.
		if err := os.Chmod(sock, 0o700); err != nil {
			return fmt.Errorf("chmod socket folder: %w", err)
		}
		c.sockDir = sock
		return c.chown(sock)
	}
	tmp, err := os.MkdirTemp("", "pgsock-")
	if err != nil {
		return fmt.Errorf("create socket folder: %w", err)
	}
	c.sockDir = tmp
	c.sockIsTemp = true
	if len(socketPath(tmp, c.port)) > maxSocketPath {
		return fmt.Errorf("socket path %s is longer than %d bytes; set TMPDIR to a shorter folder", socketPath(tmp, c.port), maxSocketPath)
	}
	if err := os.Chmod(tmp, 0o700); err != nil {
		return fmt.Errorf("chmod socket folder: %w", err)
	}
	if err := c.chown(tmp); err != nil {
		return err
	}
	return c.checkTraversable(tmp)
}

func (c *Cluster) removeSocketDir() {
	if c.sockIsTemp && c.sockDir != "" {
		if err := os.RemoveAll(c.sockDir); err != nil {
			c.log.Warn("remove socket folder", "dir", c.sockDir, "err", err)
		}
	}
}

func socketPath(dir string, port int) string {
	return filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(port))
}

func (c *Cluster) logFile() string { return filepath.Join(c.dir, "postgres.log") }

// withLogTail appends the end of the server log to err.
func (c *Cluster) withLogTail(err error) error {
	tail := tailFile(c.logFile(), 16<<10, 20)
	if tail == "" {
		return err
	}
	return fmt.Errorf("%w\n--- end of %s ---\n%s", err, c.logFile(), tail)
}

// chown gives path to the postgres user when we are root.
func (c *Cluster) chown(path string) error {
	if c.runAs == nil {
		return nil
	}
	if err := os.Chown(path, c.runAs.uid, c.runAs.gid); err != nil {
		return fmt.Errorf("give %s to user %s: %w", path, c.runAs.name, err)
	}
	return nil
}

// checkTraversable reports an error if the postgres user (when we are root)
// cannot reach path because a parent folder denies it search permission.
func (c *Cluster) checkTraversable(path string) error {
	if c.runAs == nil {
		return nil
	}
	for p := filepath.Dir(path); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("check folder %s: %w", p, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		mode := fi.Mode().Perm()
		var canEnter bool
		switch {
		case int(st.Uid) == c.runAs.uid:
			canEnter = mode&0o100 != 0
		case int(st.Gid) == c.runAs.gid || slices.Contains(c.runAs.groups, int(st.Gid)):
			canEnter = mode&0o010 != 0
		default:
			canEnter = mode&0o001 != 0
		}
		if !canEnter {
			return fmt.Errorf("user %s cannot enter folder %s (mode %v); put the cluster under folders every user can traverse (o+x), such as /tmp", c.runAs.name, p, mode)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

func lookupUser(name string) (*osUser, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("parse uid of %s: %w", name, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("parse gid of %s: %w", name, err)
	}
	res := &osUser{name: name, uid: uid, gid: gid}
	if ids, err := u.GroupIds(); err == nil {
		for _, s := range ids {
			if g, err := strconv.Atoi(s); err == nil {
				res.groups = append(res.groups, g)
			}
		}
	}
	return res, nil
}

// findBinDir picks the folder holding initdb and pg_ctl.
func findBinDir(explicit, clusterVersion string) (string, error) {
	if explicit != "" {
		if err := hasPrograms(explicit); err != nil {
			return "", err
		}
		return explicit, nil
	}
	if clusterVersion != "" {
		dir := filepath.Join("/usr/lib/postgresql", clusterVersion, "bin")
		if hasPrograms(dir) == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestVersion := "", -1.0
	for _, dir := range matches {
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		if err != nil || hasPrograms(dir) != nil {
			continue
		}
		if v > bestVersion {
			best, bestVersion = dir, v
		}
	}
	if best != "" {
		return best, nil
	}
	p, err := exec.LookPath("initdb")
	if err != nil {
		return "", errors.New("no postgresql binaries found: no /usr/lib/postgresql/*/bin and no initdb on PATH; install postgresql or set Options.BinDir")
	}
	if real, err := filepath.EvalSymlinks(p); err == nil {
		p = real
	}
	dir := filepath.Dir(p)
	if err := hasPrograms(dir); err != nil {
		return "", err
	}
	return dir, nil
}

func hasPrograms(dir string) error {
	for _, prog := range []string{"initdb", "pg_ctl", "postgres"} {
		if _, err := os.Stat(filepath.Join(dir, prog)); err != nil {
			return fmt.Errorf("postgresql binaries in %s: %w", dir, err)
		}
	}
	return nil
}

// freePort returns a TCP port number nobody listens on right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// lastLines returns the last n lines of b.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// tailFile returns the last n lines within the last max bytes of a file, or
// "" if it cannot be read.
func tailFile(path string, maxBytes int64, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-maxBytes, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	if err != nil || len(b) == 0 {
		return ""
	}
	return lastLines(b, n)
}
