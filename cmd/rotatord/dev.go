package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/natsrun"
	"github.com/rotatord/rotatord/internal/pglocal"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/seal"
)

// The data folder of `rotatord dev` and what it holds.
const (
	devDirName    = ".rotatord-dev"
	devTokenFile  = "admin.token"      // the admin API token
	devEnvFile    = "env"              // variables for the CLI: source it
	devCredsFile  = "demo-agent.creds" // the demo agent's creds, kept current by it
	devAgentLog   = "demo-agent.log"   // the demo agent's log
	devLockFile   = "dev.lock"         // held while dev runs; says by whom
	devAgentName  = "demo-agent"
	devAccount    = "demo"
	devSubject    = "demo.heartbeat"
	devPGPort     = 5432 // names the unix socket of the local PostgreSQL
	devNATSPort   = 4222
	devListen     = "127.0.0.1:8080"
	devOperator   = "dev"
	devDemoPolicy = "@every 2m"
)

// devOptions are dev's flags.
type devOptions struct {
	dir        string
	natsPort   int
	pgPort     int
	schedule   string
	grace      time.Duration
	first      time.Duration
	poll       time.Duration
	heartbeat  time.Duration
	ignoredEnv []string // ROTATORD_* variables dev does not use
}

// runDev runs everything on this machine for a first try: a PostgreSQL
// cluster in the data folder (unless --database-url), rotatord, an
// in-process nats-server in operator mode on rotatord's resolver, and a
// demo agent process (`rotatord demo-agent`) that rotates every two
// minutes. It writes <dir>/env for the CLI and prints how to use it all.
// A second dev on the same folder says so and exits 0.
func runDev(ctx context.Context, envCfg Config, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dev", stderr)
	var o devOptions
	fs.StringVar(&o.dir, "dir", devDirName, "data folder: PostgreSQL, the master key, the demo agent's creds and log, the admin token, env")
	fs.IntVar(&o.natsPort, "nats-port", devNATSPort, "client port of the in-process nats-server")
	fs.IntVar(&o.pgPort, "pg-port", devPGPort, "port of the local PostgreSQL (it listens on a unix socket in the data folder; the port names it)")
	fs.StringVar(&o.schedule, "demo-schedule", devDemoPolicy, "rotation schedule of the demo agent")
	fs.DurationVar(&o.grace, "demo-grace", time.Minute, "rotation grace period of the demo agent")
	fs.DurationVar(&o.first, "demo-first-rotation", 30*time.Second, "how soon after start the demo agent's first rotation is due")
	fs.DurationVar(&o.poll, "demo-poll", 5*time.Second, "how often the demo agent asks rotatord for new creds")
	fs.DurationVar(&o.heartbeat, "demo-heartbeat", 2*time.Second, "how often the demo agent publishes its heartbeat")
	// dev uses its own database, key and addresses: variables exported for
	// another rotatord (or by sourcing <dir>/env) must not leak in. Only
	// the log settings come from the environment; flags set the rest.
	cfg := DefaultConfig()
	cfg.Listen, cfg.LogLevel, cfg.LogFormat = devListen, envCfg.LogLevel, "text"
	if os.Getenv(envNames["log-format"]) != "" {
		cfg.LogFormat = envCfg.LogFormat
	}
	cfg.bind(fs, "listen", "database-url", "master-key-file", "log-level", "log-format")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("dev: unexpected argument %q", fs.Arg(0))
	}
	if _, err := rotate.ParseSchedule(o.schedule); err != nil {
		return fmt.Errorf("--demo-schedule: %s", rotatord.ErrorMessage(err))
	}
	if o.first < 0 || o.poll <= 0 || o.heartbeat <= 0 {
		return errors.New("--demo-first-rotation must not be negative, --demo-poll and --demo-heartbeat must be positive")
	}
	if err := cfg.Validate("listen"); err != nil {
		return err
	}
	setFlags := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { setFlags[f.Name] = true })
	abs, err := filepath.Abs(o.dir)
	if err != nil {
		return fmt.Errorf("data folder: %w", err)
	}
	// Traversable: PostgreSQL runs as its own user when we are root.
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	lock, holder, err := lockDev(abs)
	if err != nil {
		return err
	}
	if lock == nil {
		fmt.Fprintf(stderr, "rotatord dev is already running in %s (%s); source %s to use it, or stop it first\n",
			displayPath(abs), holder, displayPath(filepath.Join(abs, devEnvFile)))
		return nil
	}
	defer lock.Close()
	log := cfg.logger()
	d := &dev{o: o, dir: abs, log: log, ctx: ctx}
	for _, name := range []string{"database-url", "master-key-file", "listen", "public-url", "nats-url"} {
		if v := os.Getenv(envNames[name]); v != "" && !setFlags[name] && v != d.envValue(name) {
			d.o.ignoredEnv = append(d.o.ignoredEnv, envNames[name])
		}
	}
	defer d.stop()
	if err := d.start(cfg, setFlags["database-url"]); err != nil {
		return err
	}
	if err := writeLockInfo(lock, os.Getpid(), d.main.URL()); err != nil {
		log.Warn("note who runs dev in the lock file", "err", err)
	}
	d.banner(stdout)
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

// dev is a running `rotatord dev`.
type dev struct {
	o   devOptions
	dir string
	log *slog.Logger
	ctx context.Context

	ownDB    bool
	pg       *pglocal.Cluster
	main     *Main
	natsURL  string
	stopNATS func()
	agent    *demoProcess
	first    time.Time
	cfg      Config
}

// envValue is what <dir>/env sets the variable of flag name to, so that a
// shell that sourced it is not told its variables are ignored.
func (d *dev) envValue(name string) string {
	switch name {
	case "master-key-file":
		return filepath.Join(d.dir, "master.key")
	case "listen":
		return devListen
	}
	if b, err := os.ReadFile(filepath.Join(d.dir, devEnvFile)); err == nil {
		if v, ok := parseEnvFile(string(b))[envNames[name]]; ok {
			return v
		}
	}
	return ""
}

func (d *dev) start(cfg Config, givenDB bool) error {
	ctx, log := d.ctx, d.log
	if !givenDB {
		d.ownDB = true
		pgDir := filepath.Join(d.dir, "pg")
		if stopped, err := pglocal.StopStale(ctx, pglocal.Options{Dir: pgDir, Logger: log}); err != nil {
			return err
		} else if stopped {
			log.Warn("stopped the local postgresql that an earlier rotatord dev left running", "dir", pgDir)
		}
		pg, err := pglocal.Start(ctx, pglocal.Options{Dir: pgDir, Port: d.o.pgPort, Logger: log})
		if err != nil {
			return fmt.Errorf("start local postgresql: %w", err)
		}
		d.pg = pg
		if err := pg.CreateDatabase(ctx, "rotatord"); err != nil {
			return err
		}
		cfg.DatabaseURL = pg.URL("rotatord")
		log.Info("local postgresql running", "dir", pg.Dir())
	}
	if cfg.MasterKeyFile == "" {
		cfg.MasterKeyFile = filepath.Join(d.dir, "master.key")
		if wrote, err := seal.WriteNewKeyFile(cfg.MasterKeyFile); err != nil {
			return err
		} else if wrote {
			log.Info("wrote a new master key", "file", cfg.MasterKeyFile)
		}
	}
	d.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", d.o.natsPort)
	cfg.NATSURL = d.natsURL
	d.cfg = cfg

	store, svc, err := openService(ctx, cfg, true)
	if err != nil {
		return err
	}
	op, _, err := svc.Init(ctx, devOperator, devOperator)
	store.Close()
	if err != nil {
		return err
	}

	m := NewMain()
	m.Config, m.Log = cfg, log
	if err := m.Run(ctx); err != nil {
		return portHint(err, "--listen")
	}
	d.main = m

	ns, err := natsrun.Start(natsrun.Options{
		OperatorJWT: op.JWT, SystemAccount: op.SystemAccount, Port: d.o.natsPort, Name: "rotatord-dev",
		ResolverURL: m.URL() + "/jwt/v1/accounts/",
	})
	if err != nil {
		return portHint(fmt.Errorf("start nats-server on port %d: %w", d.o.natsPort, err), "--nats-port")
	}
	d.stopNATS = ns.Shutdown

	if err := d.demo(m.Service); err != nil {
		return err
	}
	if err := d.writeEnv(); err != nil {
		return err
	}
	d.agent = startDemoAgent(d)
	return nil
}

// portHint adds the flag to change when err is an address in use.
func portHint(err error, flagName string) error {
	if errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use") {
		return fmt.Errorf("%w (is another rotatord dev running? give another address with %s)", err, flagName)
	}
	return err
}

// stop ends everything dev started, the demo agent first.
func (d *dev) stop() {
	if d.agent != nil {
		d.agent.stop()
	}
	if d.stopNATS != nil {
		d.stopNATS()
	}
	if d.main != nil {
		if err := d.main.Close(); err != nil {
			d.log.Warn("stop rotatord", "err", err)
		}
	}
	if d.pg != nil {
		if err := d.pg.Stop(); err != nil {
			d.log.Warn("stop local postgresql", "err", err)
		}
	}
}

// demo makes sure the demo account, agent and admin token exist, with the
// demo schedule, and that the creds file holds a key the agent may use;
// then it moves the agent's next rotation to shortly after now.
func (d *dev) demo(svc *rotate.Service) error {
	ctx := d.ctx
	const actor = rotate.Actor("dev")
	tokenPath := filepath.Join(d.dir, devTokenFile)
	if _, err := os.Stat(tokenPath); errors.Is(err, os.ErrNotExist) {
		secret, _, err := svc.CreateToken(ctx, actor, "dev-admin-"+randSuffix(), rotatord.ScopeAdmin)
		if err != nil {
			return err
		}
		if err := writeSecretFile(tokenPath, []byte(secret+"\n")); err != nil {
			return err
		}
	}
	if _, err := svc.Account(ctx, devAccount); errors.Is(err, rotatord.ErrNotFound) {
		if _, err := svc.CreateAccount(ctx, actor, rotate.AccountInput{Name: devAccount, Description: "created by rotatord dev"}); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	credsPath := filepath.Join(d.dir, devCredsFile)
	g, err := svc.Agent(ctx, devAgentName)
	switch {
	case err == nil && d.credsUsable(ctx, svc, g, credsPath):
		if g.Rotation.Schedule != d.o.schedule || g.Rotation.Grace != d.o.grace {
			if _, err := svc.UpdateAgent(ctx, actor, devAgentName, rotate.AgentPatch{Schedule: &d.o.schedule, Grace: &d.o.grace}); err != nil {
				return err
			}
		}
	case err == nil:
		// The creds were lost, or revoked: start the demo agent afresh.
		d.log.Info("the demo agent's creds are gone or revoked; creating it again", "agent", devAgentName)
		if err := svc.DeleteAgent(ctx, actor, devAgentName); err != nil {
			return err
		}
		fallthrough
	case errors.Is(err, rotatord.ErrNotFound):
		_, creds, err := svc.CreateAgent(ctx, actor, rotate.AgentInput{
			Name: devAgentName, Account: devAccount,
			Permissions: rotatord.Permissions{
				Pub: rotatord.PermissionList{Allow: []string{"demo.>", "_INBOX.>"}},
				Sub: rotatord.PermissionList{Allow: []string{"demo.>", "_INBOX.>"}},
			},
			Schedule: d.o.schedule, Grace: d.o.grace,
			Delivery: rotatord.DeliveryPoll,
		})
		if err != nil {
			return err
		}
		if err := writeSecretFile(credsPath, creds); err != nil {
			return err
		}
		d.log.Info("created the demo agent", "agent", devAgentName, "creds_file", credsPath)
	default:
		return err
	}
	d.first = time.Now().Add(d.o.first).Truncate(time.Second)
	if _, err := svc.RotateAt(ctx, actor, devAgentName, d.first); err != nil {
		return err
	}
	return nil
}

// credsUsable reports whether the agent is active and the creds file holds
// its active key or the new key of its rotation in flight.
func (d *dev) credsUsable(ctx context.Context, svc *rotate.Service, g *rotatord.Agent, path string) bool {
	if g.State != rotatord.AgentActive {
		return false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	token, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return false
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return false
	}
	if g.Active != nil && g.Active.PublicKey == uc.Subject {
		return true
	}
	rots, err := svc.Rotations(ctx, rotatord.RotationFilter{Agent: g.Name, Limit: 1})
	return err == nil && len(rots) == 1 && rots[0].InFlight() && rots[0].NewKey == uc.Subject
}

// writeEnv writes <dir>/env: the variables that point the CLI, `audit
// verify` and `doctor` at this dev, and the nats CLI at its server.
func (d *dev) writeEnv() error {
	vars := [][2]string{
		{"ROTATORD_URL", d.main.URL()},
		{"ROTATORD_TOKEN_FILE", filepath.Join(d.dir, devTokenFile)},
		{"ROTATORD_DATABASE_URL", d.cfg.DatabaseURL},
		{"ROTATORD_MASTER_KEY_FILE", d.cfg.MasterKeyFile},
		{"ROTATORD_NATS_URL", d.natsURL},
		{"ROTATORD_PUBLIC_URL", d.main.URL()},
		{"NATS_URL", d.natsURL},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by rotatord dev (pid %d) for the CLI: source %s\n", os.Getpid(), filepath.Join(d.dir, devEnvFile))
	for _, v := range vars {
		fmt.Fprintf(&b, "export %s=%s\n", v[0], shellQuote(v[1]))
	}
	return writeSecretFile(filepath.Join(d.dir, devEnvFile), []byte(b.String()))
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// parseEnvFile reads the `export NAME='value'` lines that writeEnv writes.
func parseEnvFile(s string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "export ")
		if !ok {
			continue
		}
		name, value, ok := strings.Cut(rest, "=")
		if !ok {
			continue
		}
		if strings.HasPrefix(value, "'") && strings.HasSuffix(value, "'") && len(value) >= 2 {
			value = strings.ReplaceAll(value[1:len(value)-1], `'\''`, "'")
		}
		out[name] = value
	}
	return out
}

// banner tells the newcomer what runs, what the demo agent is doing, and
// how to use the CLI.
func (d *dev) banner(w io.Writer) {
	bin := "rotatord"
	if strings.Contains(os.Args[0], "/") {
		if bin = displayPath(os.Args[0]); !strings.Contains(bin, "/") {
			bin = "./" + bin
		}
	}
	rel := func(name string) string { return displayPath(filepath.Join(d.dir, name)) }
	db := "local, in " + rel("pg")
	if !d.ownDB {
		db = "the one given by --database-url (no local PostgreSQL)"
	}
	until := time.Until(d.first).Round(time.Second)
	fmt.Fprintf(w, `
rotatord dev is running.
  API and resolver:  %[1]s   (admin token in %[2]s)
  fleet console:     %[1]s/ui/   (sign in with that token)
  nats-server:       %[3]s
  PostgreSQL:        %[4]s
  demo agent:        %[5]s, a process built on pkg/agent (pid %[6]d; its log: %[7]s):
                     connected, subscribed to demo.>, publishing a heartbeat on %[8]s.%[5]s;
                     rotates %[9]s (grace %[10]s), the first time at %[11]s (in %[12]s)

Use the CLI and audit verify, in another shell:
  source %[13]s
  %[14]s agents rotate %[5]s --wait    # rotate now, and watch the agent move to its new key
  %[14]s rotations list
  %[14]s audit list
  %[14]s audit verify
  %[14]s doctor

  tail -f %[7]s                        # the demo agent at work
  nats --creds %[15]s pub demo.hello hi   # publish as the demo agent
  %[14]s agents revoke %[5]s           # cut it off (the next start makes it again)
`, d.main.URL(), rel(devTokenFile), d.natsURL, db, devAgentName, d.agent.pid(), rel(devAgentLog), devSubject,
		d.o.schedule, rotatord.FormatDuration(d.o.grace), d.first.Format("15:04:05"), rotatord.FormatDuration(until), rel(devEnvFile), bin, rel(devCredsFile))
	if len(d.o.ignoredEnv) > 0 {
		sort.Strings(d.o.ignoredEnv)
		fmt.Fprintf(w, "\nIgnored from your environment (dev uses its own; flags change them): %s\n", strings.Join(d.o.ignoredEnv, ", "))
	}
	fmt.Fprintf(w, "\nCtrl-C stops everything; the data stays in %s.\n", displayPath(d.dir))
}

// displayPath is path relative to the working folder when it is under it.
func displayPath(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return path
	}
	wd, err := os.Getwd()
	if err != nil {
		return abs
	}
	if rel, err := filepath.Rel(wd, abs); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return abs
}

// lockDev takes the data folder's lock. When another dev holds it, it
// returns a nil file and what that one wrote about itself.
func lockDev(dir string) (*os.File, string, error) {
	path := filepath.Join(dir, devLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, "", fmt.Errorf("lock data folder: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := io.ReadAll(io.LimitReader(f, 512))
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := strings.TrimSpace(string(b))
			if holder == "" {
				holder = "starting"
			}
			return nil, holder, nil
		}
		return nil, "", fmt.Errorf("lock data folder: %w", err)
	}
	return f, "", nil
}

// writeLockInfo records in the lock file who holds it, for a second dev.
func writeLockInfo(f *os.File, pid int, url string) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte("pid "+strconv.Itoa(pid)+", "+url+"\n"), 0)
	return err
}

// writeSecretFile writes data with mode 0600 through a temporary file and a
// rename, so a reader never sees half a file.
func writeSecretFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func randSuffix() string { return strings.ToLower(rand.Text()[:8]) }

// demoProcess is the demo agent: `rotatord demo-agent` in a child process,
// restarted when it dies (and dev says so).
type demoProcess struct {
	d      *dev
	cancel context.CancelFunc
	done   chan struct{}
	pidc   chan int
	last   int
}

// startDemoAgent starts the demo agent and watches it until stop.
func startDemoAgent(d *dev) *demoProcess {
	ctx, cancel := context.WithCancel(d.ctx)
	p := &demoProcess{d: d, cancel: cancel, done: make(chan struct{}), pidc: make(chan int, 1)}
	go p.run(ctx)
	return p
}

// pid waits for the first start and returns the process's ID (0 when it
// could not start).
func (p *demoProcess) pid() int {
	select {
	case pid := <-p.pidc:
		p.last = pid
	case <-time.After(10 * time.Second):
	}
	return p.last
}

func (p *demoProcess) stop() {
	p.cancel()
	<-p.done
}

func (p *demoProcess) run(ctx context.Context) {
	defer close(p.done)
	logPath := filepath.Join(p.d.dir, devAgentLog)
	backoff := time.Second
	first := true
	for {
		startedAt := time.Now()
		err := p.once(ctx, logPath, func(pid int) {
			if first {
				p.pidc <- pid
				first = false
			}
		})
		if ctx.Err() != nil {
			return
		}
		if time.Since(startedAt) > time.Minute {
			backoff = time.Second
		}
		p.d.log.Error("the demo agent exited; restarting it", "agent", devAgentName, "err", err,
			"log", displayPath(logPath), "restart_in", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Minute)
	}
}

// once runs the demo agent until it exits or ctx ends. It stops it by
// closing its stdin (it exits when stdin ends, and so when dev dies), then
// with SIGTERM, then SIGKILL.
func (p *demoProcess) once(ctx context.Context, logPath string, started func(pid int)) error {
	self, err := os.Executable()
	if err != nil {
		started(0)
		return fmt.Errorf("find rotatord's own binary: %w", err)
	}
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		started(0)
		return fmt.Errorf("open the demo agent's log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(self, "demo-agent",
		"--rotatord", p.d.main.URL(), "--nats", p.d.natsURL, "--name", devAgentName,
		"--creds", filepath.Join(p.d.dir, devCredsFile), "--subject", devSubject,
		"--poll", p.d.o.poll.String(), "--heartbeat", p.d.o.heartbeat.String(), "--exit-with-stdin")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group: Ctrl-C in the terminal reaches dev, which
	// stops the agent last but one, not both at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		started(0)
		return fmt.Errorf("start the demo agent: %w", err)
	}
	if err := cmd.Start(); err != nil {
		started(0)
		return fmt.Errorf("start the demo agent: %w", err)
	}
	started(cmd.Process.Pid)
	p.d.log.Info("demo agent started", "agent", devAgentName, "pid", cmd.Process.Pid, "log", displayPath(logPath))
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		stdin.Close()
		if err == nil {
			err = errors.New("exit status 0")
		}
		return err
	case <-ctx.Done():
	}
	stdin.Close()
	for _, next := range []func(){
		func() { cmd.Process.Signal(syscall.SIGTERM) }, //nolint:errcheck // it may be gone already
		func() { cmd.Process.Kill() },                  //nolint:errcheck // it may be gone already
	} {
		select {
		case err := <-exited:
			return err
		case <-time.After(5 * time.Second):
			next()
		}
	}
	return <-exited
}
