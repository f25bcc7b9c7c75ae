package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	prev := -1
	for _, d := range []time.Duration{0, 1, 255, 256, 257, 511, 512, 1000, 12345, time.Millisecond, time.Second, maxTracked} {
		i := bucket(d)
		if i < prev {
			t.Errorf("bucket(%d) = %d, below the previous %d", d, i, prev)
		}
		prev = i
		if i >= histBuckets {
			t.Fatalf("bucket(%d) = %d, out of %d buckets", d, i, histBuckets)
		}
		high := bucketHigh(i)
		if high < d {
			t.Errorf("bucketHigh(bucket(%d)) = %d, below the value", d, high)
		}
		if d > 0 && float64(high-d)/float64(d) > 1.0/subSize {
			t.Errorf("bucketHigh(bucket(%d)) = %d: error above 1/%d", d, high, subSize)
		}
	}
	if i := bucket(time.Hour); i != histBuckets-1 {
		t.Errorf("bucket(1h) = %d, want the last bucket %d", i, histBuckets-1)
	}
}

func TestQuantile(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, time.Millisecond}} {
		got := h.quantile(tc.q)
		if got < tc.want || float64(got-tc.want)/float64(tc.want) > 1.0/subSize {
			t.Errorf("quantile(%v) = %s, want %s within 1/%d", tc.q, got, tc.want, subSize)
		}
	}
	if h.max != time.Millisecond {
		t.Errorf("max = %s", h.max)
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	for _, raw := range []string{"http://192.0.2.1/x", "http://[2001:db8::1]/x", "http://10.0.0.1:80/"} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkLoopback(context.Background(), []*url.URL{u}); err == nil {
			t.Errorf("checkLoopback(%s) accepted a non-loopback host", raw)
		}
	}
	if err := dialLoopback("tcp", "192.0.2.1:80", nil); err == nil {
		t.Error("dialLoopback accepted a non-loopback address")
	}
	if err := dialLoopback("tcp", "127.0.0.1:80", nil); err != nil {
		t.Errorf("dialLoopback refused loopback: %v", err)
	}
}

func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("hello")) //nolint:errcheck // test server
	}))
	defer srv.Close()

	var out, errOut bytes.Buffer
	args := []string{"-urls", srv.URL + "/a," + srv.URL + "/missing", "-c", "4", "-d", "300ms", "-warmup", "50ms"}
	if err := run(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	first, human, _ := strings.Cut(out.String(), "\n")
	var res result
	if err := json.Unmarshal([]byte(first), &res); err != nil {
		t.Fatalf("decode %q: %v", first, err)
	}
	if res.Requests == 0 || res.RPS <= 0 || res.P99 <= 0 || res.Max < res.P99 {
		t.Errorf("implausible result %+v", res)
	}
	if res.Status["200"] == 0 || res.Status["404"] == 0 || res.Non200 != uint64(res.Status["404"]) {
		t.Errorf("statuses %v, non-200 %d", res.Status, res.Non200)
	}
	if res.Errors != 0 {
		t.Errorf("errors %d: %s", res.Errors, res.FirstError)
	}
	if !strings.Contains(human, "req/s") {
		t.Errorf("human line %q", human)
	}
}

func TestFlagBounds(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-urls", "http://127.0.0.1/", "-c", "0"},
		{"-urls", "http://127.0.0.1/", "-c", "100000"},
		{"-urls", "http://127.0.0.1/", "-d", "1h"},
		{"-urls", "http://127.0.0.1/", "-timeout", "0s"},
	} {
		if _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("parseFlags(%q) accepted it", args)
		}
	}
}
