package pglocal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// StopStale stops a server still running in opts.Dir although the process
// that started it is gone (killed before it could call Stop), so that Start
// can run the cluster again. It reports whether it stopped one; a folder
// without a cluster, or with a server that is not running, is left alone.
func StopStale(ctx context.Context, opts Options) (bool, error) {
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return false, fmt.Errorf("stop stale postgres in %s: %w", opts.Dir, err)
	}
	c := &Cluster{dir: dir, dataDir: filepath.Join(dir, "data"), log: opts.Logger}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if _, err := os.Stat(filepath.Join(c.dataDir, "postmaster.pid")); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	version, err := os.ReadFile(filepath.Join(c.dataDir, "PG_VERSION"))
	if err != nil {
		return false, fmt.Errorf("stop stale postgres in %s: read cluster version: %w", dir, err)
	}
	if os.Geteuid() == 0 {
		if c.runAs, err = lookupUser(Superuser); err != nil {
			return false, fmt.Errorf("stop stale postgres in %s: %w", dir, err)
		}
	}
	if c.binDir, err = findBinDir(opts.BinDir, strings.TrimSpace(string(version))); err != nil {
		return false, fmt.Errorf("stop stale postgres in %s: %w", dir, err)
	}
	// pg_ctl status: 0 running, 3 not running (a stale postmaster.pid,
	// which postgres itself replaces at start).
	out, err := c.run(ctx, "pg_ctl", "status", "-D", c.dataDir)
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 3 {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stop stale postgres in %s: pg_ctl status: %w: %s", dir, err, strings.TrimSpace(lastLines(out, 5)))
	}
	c.log.Warn("stopping a postgres server left running by an earlier process", "dir", dir)
	if err := c.pgCtlStop(); err != nil {
		return false, fmt.Errorf("stop stale postgres in %s: %w", dir, err)
	}
	return true, nil
}
