package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/rotatord/rotatord/internal/loadtest"
)

// loadResult is the JSON line printed by cmd/loadgen.
type loadResult = loadtest.Result

type runResult struct {
	target *target
	round  int
	res    loadResult
	cpu    cpuShare
}

// Targets of the issue.
const (
	targetRatio = 0.5
	targetP99   = 10.0 // ms
)

// load runs loadgen against t and parses its result.
func (b *bench) load(ctx context.Context, loadgen string, t *target, round int, profile bool) (*runResult, error) {
	args := []string{
		"-url-file", t.urlFile,
		"-c", strconv.Itoa(b.cfg.c),
		"-d", b.cfg.d.String(),
		"-warmup", b.cfg.warmup.String(),
		"-timeout", b.cfg.timeout.String(),
	}
	b.logf("round %d: %s: loadgen %s", round, t.name, strings.Join(args, " "))
	if profile {
		f, err := os.Create(b.cfg.cpuProfile)
		if err != nil {
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, loadgen, args...)
	cmd.Stdout, cmd.Stderr = &stdout, b.log
	cmd.WaitDelay = 5 * time.Second
	before := sampleCPU()
	runErr := cmd.Run()
	var share cpuShare
	if cmd.ProcessState != nil {
		share = before.share(sampleCPU(), cmd.ProcessState)
	}
	var res loadResult
	found := false
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "{") && !found {
			if err := json.Unmarshal([]byte(line), &res); err != nil {
				return nil, fmt.Errorf("loadgen against %s: decode %q: %w", t.short, line, err)
			}
			found = true
			continue
		}
		b.logf("  %s", line)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("loadgen against %s: interrupted: %w", t.short, context.Cause(ctx))
	}
	if runErr != nil {
		return nil, fmt.Errorf("loadgen against %s: %w", t.short, runErr)
	}
	if !found {
		return nil, fmt.Errorf("loadgen against %s: no JSON result in its output", t.short)
	}
	b.logf("  CPU in cores: servers %.2f, loadgen %.2f, other processes %.2f, idle %.2f", share.self, share.loadgen, share.other, share.idle)
	return &runResult{target: t, round: round, res: res, cpu: share}, nil
}

// report formats the runs as markdown.
func (b *bench) report(runs []*runResult) string {
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	lgProcs := 0
	if len(runs) > 0 {
		lgProcs = runs[0].res.GOMAXPROCS
	}
	w("## Resolver lookups over loopback HTTP: rotatord vs a bare net/http handler\n\n")
	w("- machine: %d cores (%s), %s %s/%s\n", runtime.NumCPU(), cpuModel(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	w("- shared cores: both servers (one process, GOMAXPROCS=%d) and the load generator (a separate process, GOMAXPROCS=%d) run on the same %d cores\n",
		runtime.GOMAXPROCS(0), lgProcs, runtime.NumCPU())
	w("- registry: %s; %d accounts created through rotate.Service in %s (%.0f/s); resolver cache loaded from it with %d account JWTs in %s; PostgreSQL closed before the load runs\n",
		b.setup.database, b.cfg.accounts, b.setup.createTime.Round(time.Millisecond), float64(b.cfg.accounts)/b.setup.createTime.Seconds(),
		b.setup.cached, b.setup.loadTime.Round(time.Millisecond))
	w("- load: cmd/loadgen -c %d -d %s -warmup %s (keep-alive, GET /jwt/v1/accounts/<key> for one of the %d accounts at random per request; JWTs of %d bytes on average)\n\n",
		b.cfg.c, b.cfg.d, b.cfg.warmup, b.cfg.accounts, b.setup.jwtBytes)
	w("| server | round | requests/s | p50 | p90 | p99 | max | errors | CPU server / loadgen / other | server CPU per request |\n")
	w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range runs {
		perReq := 0.0
		if r.res.RPS > 0 {
			perReq = r.cpu.self / r.res.RPS * 1e6
		}
		w("| %s | %d | %s | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %d | %.2f / %.2f / %.2f | %.1f µs |\n", r.target.name, r.round, thousands(r.res.RPS),
			r.res.P50, r.res.P90, r.res.P99, r.res.Max, r.res.Errors+r.res.Non200, r.cpu.self, r.cpu.loadgen, r.cpu.other, perReq)
	}
	w("\nCPU columns are cores used on average over the run, warm-up included: this process (both servers, one idle at a time), the loadgen process, and every other process on the machine (from /proc/stat). Server CPU per request is the first divided by requests/s: it does not depend on how much CPU the run got.\n")
	var rps = map[string]float64{}
	var worstP99 = map[string]float64{}
	var errs uint64
	for _, r := range runs {
		rps[r.target.short] += r.res.RPS / float64(b.cfg.rounds)
		worstP99[r.target.short] = max(worstP99[r.target.short], r.res.P99)
		errs += r.res.Errors + r.res.Non200
	}
	ratio := 0.0
	if rps["bare"] > 0 {
		ratio = rps["rotatord"] / rps["bare"]
	}
	w("\n")
	if b.cfg.rounds > 1 {
		w("Mean over %d rounds: bare %s requests/s, rotatord %s requests/s.\n\n", b.cfg.rounds, thousands(rps["bare"]), thousands(rps["rotatord"]))
	}
	w("- rotatord/bare requests/s: **%.2f** (target ≥ %.2f: %s)\n", ratio, targetRatio, met(ratio >= targetRatio))
	w("- rotatord p99: **%.2f ms** (target < %.0f ms: %s)\n", worstP99["rotatord"], targetP99, met(worstP99["rotatord"] < targetP99))
	if errs > 0 {
		w("- **%d errors or non-200 answers**: see the loadgen lines above\n", errs)
	}
	return sb.String()
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// thousands formats v rounded to an integer with comma separators.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// cpuModel returns the first "model name" of /proc/cpuinfo, or "unknown CPU".
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
