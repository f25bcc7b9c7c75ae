package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/rotate"
)

// BenchmarkAdminUnderScrapeFlood measures GET /v1/agents/{name} (a token
// check and one agent read) one request at a time, alone and while
// scrapers fetch /metrics without pause, with many accounts (the size of
// a scrape grew with them). It reports the latency quantiles; b.N is the
// number of admin requests:
//
//	go test -run '^$' -bench AdminUnderScrapeFlood -benchtime 3000x ./cmd/rotatord
//
// ROTATORD_BENCH_ACCOUNTS sets the accounts (default 2000).
func BenchmarkAdminUnderScrapeFlood(b *testing.B) {
	accounts := 2000
	if v := os.Getenv("ROTATORD_BENCH_ACCOUNTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("ROTATORD_BENCH_ACCOUNTS=%q", v)
		}
		accounts = n
	}
	e := newEnv(b)
	ctx := context.Background()
	for i := range accounts {
		if _, err := e.main.Service.CreateAccount(ctx, "bench", rotate.AccountInput{Name: fmt.Sprintf("acc-%05d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	createAgent(e, "kate", "acc-00000")
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	get := func(path, token string) error {
		req, _ := http.NewRequest("GET", e.main.URL()+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			return fmt.Errorf("GET %s = %d", path, resp.StatusCode)
		}
		return nil
	}
	for _, scrapers := range []int{0, 8} {
		b.Run(fmt.Sprintf("scrapers=%d", scrapers), func(b *testing.B) {
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var scrapes sync.Map
			for i := range scrapers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n := 0
					for {
						select {
						case <-stop:
							scrapes.Store(i, n)
							return
						default:
						}
						if err := get("/metrics", ""); err == nil {
							n++
						}
					}
				}()
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				t0 := time.Now()
				if err := get("/v1/agents/kate", e.admin); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			elapsed := time.Since(start)
			b.StopTimer()
			close(stop)
			wg.Wait()
			total := 0
			scrapes.Range(func(_, v any) bool { total += v.(int); return true })
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond) }
			b.ReportMetric(q(0.5), "p50-ms")
			b.ReportMetric(q(0.9), "p90-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(float64(total)/elapsed.Seconds(), "scrapes/s")
		})
	}
}
