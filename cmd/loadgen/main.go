// Command loadgen is a small closed-loop HTTP load generator for benchmarks
// on loopback: c workers, each with a keep-alive connection, send GET
// requests to URLs picked at random for a warm-up and then a measured
// duration, and it prints the request rate and latency quantiles.
//
//	loadgen -url-file urls.txt -c 32 -d 10s -warmup 2s
//	loadgen -urls http://127.0.0.1:8080/a,http://127.0.0.1:8080/b
//
// It prints one JSON line and then one human-readable line on stdout.
// Latencies are those of requests started in the measured window and
// answered with any status (transport errors are counted, not timed). The
// rate is those requests divided by the measured duration.
//
// It is bounded: at most maxConcurrency workers, maxDuration of measuring,
// maxURLs URLs, and it only connects to loopback addresses (every host must
// resolve to loopback, and every dialed address is checked again).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rotatord/rotatord/internal/loadtest"
)

// Bounds on the flags.
const (
	maxConcurrency = 1024
	maxDuration    = 10 * time.Minute
	maxWarmup      = time.Minute
	maxTimeout     = time.Minute
	maxURLs        = 1_000_000
)

type config struct {
	urlFile string
	urls    string
	c       int
	d       time.Duration
	warmup  time.Duration
	timeout time.Duration
	n       int64
	profile string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
		}
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.urlFile, "url-file", "", "file with one URL per line (blank lines and # comments skipped)")
	fs.StringVar(&cfg.urls, "urls", "", "comma-separated URLs (instead of or besides -url-file)")
	fs.IntVar(&cfg.c, "c", 32, fmt.Sprintf("concurrent workers, each with its own keep-alive connection (1-%d)", maxConcurrency))
	fs.DurationVar(&cfg.d, "d", 10*time.Second, fmt.Sprintf("measured duration (at most %s)", maxDuration))
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, fmt.Sprintf("unmeasured warm-up before it (at most %s)", maxWarmup))
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Second, fmt.Sprintf("timeout of one request (at most %s)", maxTimeout))
	fs.Int64Var(&cfg.n, "n", 0, "stop after this many measured requests (0: run for -d)")
	fs.StringVar(&cfg.profile, "cpuprofile", "", "write a CPU profile of loadgen itself to this file")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: loadgen (-url-file FILE | -urls URL,...) [flags]\n\nGET random URLs on loopback and report requests/s and latency quantiles.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	switch {
	case fs.NArg() > 0:
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	case cfg.urlFile == "" && cfg.urls == "":
		return cfg, errors.New("no URLs: give -url-file or -urls")
	case cfg.c < 1 || cfg.c > maxConcurrency:
		return cfg, fmt.Errorf("-c %d: want 1 to %d", cfg.c, maxConcurrency)
	case cfg.d <= 0 || cfg.d > maxDuration:
		return cfg, fmt.Errorf("-d %s: want more than 0 and at most %s", cfg.d, maxDuration)
	case cfg.warmup < 0 || cfg.warmup > maxWarmup:
		return cfg, fmt.Errorf("-warmup %s: want 0 to %s", cfg.warmup, maxWarmup)
	case cfg.timeout <= 0 || cfg.timeout > maxTimeout:
		return cfg, fmt.Errorf("-timeout %s: want more than 0 and at most %s", cfg.timeout, maxTimeout)
	case cfg.n < 0:
		return cfg, fmt.Errorf("-n %d: want 0 or more", cfg.n)
	}
	return cfg, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	raw, err := readURLs(cfg.urlFile, cfg.urls)
	if err != nil {
		return err
	}
	urls, err := parseURLs(raw)
	if err != nil {
		return err
	}
	if err := checkLoopback(ctx, urls); err != nil {
		return err
	}
	if cfg.profile != "" {
		f, err := os.Create(cfg.profile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	res, err := load(ctx, cfg, urls)
	if err != nil {
		return err
	}
	line, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	fmt.Fprintf(stdout, "%s\n%s\n", line, res.Human())
	if res.Requests == 0 {
		return fmt.Errorf("no request completed (errors %d, first: %s)", res.Errors, res.FirstError)
	}
	return nil
}

// readURLs returns the URLs of the file and of the comma-separated list.
func readURLs(file, list string) ([]string, error) {
	var out []string
	for u := range strings.SplitSeq(list, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("read urls: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if len(out) == maxURLs {
				return nil, fmt.Errorf("read urls from %s: more than %d", file, maxURLs)
			}
			out = append(out, line)
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read urls from %s: %w", file, err)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no URLs given")
	}
	if len(out) > maxURLs {
		return nil, fmt.Errorf("%d URLs: at most %d", len(out), maxURLs)
	}
	return out, nil
}

func parseURLs(raw []string) ([]*url.URL, error) {
	out := make([]*url.URL, len(raw))
	for i, s := range raw {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("url %q: %w", s, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, fmt.Errorf("url %q: scheme must be http or https", s)
		}
		if u.Hostname() == "" {
			return nil, fmt.Errorf("url %q: no host", s)
		}
		out[i] = u
	}
	return out, nil
}

// checkLoopback refuses any host that does not resolve only to loopback
// addresses.
func checkLoopback(ctx context.Context, urls []*url.URL) error {
	checked := map[string]bool{}
	for _, u := range urls {
		host := u.Hostname()
		if checked[host] {
			continue
		}
		checked[host] = true
		if ip, err := netip.ParseAddr(host); err == nil {
			if !ip.IsLoopback() {
				return fmt.Errorf("host %s is not a loopback address: loadgen only targets loopback", host)
			}
			continue
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return fmt.Errorf("resolve %s: %w", host, err)
		}
		if len(ips) == 0 {
			return fmt.Errorf("resolve %s: no address", host)
		}
		for _, ip := range ips {
			if !ip.Unmap().IsLoopback() {
				return fmt.Errorf("host %s resolves to %s, not loopback: loadgen only targets loopback", host, ip)
			}
		}
	}
	return nil
}

// dialLoopback is a net.Dialer Control function that refuses any address
// that is not loopback, whatever DNS answered after checkLoopback.
func dialLoopback(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("dial %s: %w", address, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Unmap().IsLoopback() {
		return fmt.Errorf("dial %s: not a loopback address", address)
	}
	return nil
}

// result is what loadgen prints, as JSON and as a line of text.
type result = loadtest.Result

// worker is one closed-loop client; its fields are merged at the end.
type worker struct {
	hist     histogram
	status   map[int]int64
	errors   uint64
	bytes    int64
	firstErr error
}

func load(ctx context.Context, cfg config, urls []*url.URL) (*result, error) {
	transport := &http.Transport{
		Proxy: nil, // never a proxy: loopback only
		DialContext: (&net.Dialer{
			Timeout:   cfg.timeout,
			KeepAlive: 30 * time.Second,
			Control:   dialLoopback,
		}).DialContext,
		MaxIdleConns:        cfg.c * 4,
		MaxIdleConnsPerHost: cfg.c,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	defer transport.CloseIdleConnections()
	client := &http.Client{
		Transport: transport,
		Timeout:   cfg.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	// One request per URL, shared read-only by the workers: each sends a
	// shallow copy carrying its context.
	reqs := make([]*http.Request, len(urls))
	for i, u := range urls {
		r, err := http.NewRequest(http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, fmt.Errorf("build request for %s: %w", u, err)
		}
		reqs[i] = r
	}

	start := time.Now()
	measureStart := start.Add(cfg.warmup)
	measureEnd := measureStart.Add(cfg.d)
	parent := ctx
	ctx, cancel := context.WithDeadline(parent, measureEnd)
	defer cancel()

	var measured atomic.Int64 // only kept when -n is set
	workers := make([]*worker, cfg.c)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{status: map[int]int64{}}
		workers[i] = w
		wg.Go(func() {
			buf := make([]byte, 32<<10)
			for ctx.Err() == nil {
				req := reqs[rand.IntN(len(reqs))].WithContext(ctx)
				t0 := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					var n int64
					n, err = io.CopyBuffer(io.Discard, resp.Body, buf)
					resp.Body.Close()
					w.bytes += n
				}
				t1 := time.Now()
				if ctx.Err() != nil {
					return // cut short by the end of the run
				}
				if t0.Before(measureStart) {
					continue // warm-up
				}
				if err != nil {
					w.errors++
					if w.firstErr == nil {
						w.firstErr = err
					}
					continue
				}
				w.status[resp.StatusCode]++
				w.hist.record(t1.Sub(t0))
				if cfg.n > 0 && measured.Add(1) >= cfg.n {
					cancel()
				}
			}
		})
	}
	wg.Wait()
	end := time.Now()
	if end.After(measureEnd) {
		end = measureEnd
	}
	if err := parent.Err(); err != nil {
		return nil, fmt.Errorf("load run interrupted: %w", err)
	}

	res := &result{
		URLs: len(urls), Concurrency: cfg.c, GOMAXPROCS: runtime.GOMAXPROCS(0),
		Warmup: cfg.warmup.Seconds(), Status: map[string]int64{},
	}
	var h histogram
	var firstErr error
	for _, w := range workers {
		h.merge(&w.hist)
		res.Errors += w.errors
		res.Bytes += w.bytes
		for code, n := range w.status {
			res.Status[strconv.Itoa(code)] += n
			if code != http.StatusOK {
				res.Non200 += uint64(n)
			}
		}
		if firstErr == nil {
			firstErr = w.firstErr
		}
	}
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	elapsed := end.Sub(measureStart)
	if elapsed <= 0 {
		elapsed = cfg.d
	}
	res.Duration = elapsed.Seconds()
	res.Requests = h.total
	res.RPS = float64(h.total) / elapsed.Seconds()
	res.Mean = ms(h.mean())
	res.P50 = ms(h.quantile(0.50))
	res.P90 = ms(h.quantile(0.90))
	res.P99 = ms(h.quantile(0.99))
	res.P999 = ms(h.quantile(0.999))
	res.Max = ms(h.max)
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
