package main

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rotatord/rotatord/internal/pgtest"
)

// countingWriter counts the bytes written to it and keeps none.
type countingWriter struct{ n atomic.Int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return len(p), nil
}

// BenchmarkAgentAPIRefusalFlood sends 3,000 refused anonymous requests per
// iteration (2 KB random-looking names, "Authorization: NKey x") to a
// rotatord with its default limits and reports how much the database and
// the log (JSON, info level, as serve writes it) grew, with the refusals'
// audit events flushed at the end.
//
//	go test -run '^$' -bench AgentAPIRefusalFlood -benchtime 1x ./cmd/rotatord
func BenchmarkAgentAPIRefusalFlood(b *testing.B) {
	e := newBareEnv(b, pgtest.New(b))
	cfg := e.config()
	cfg.NATSURL = ""
	cfg.TickSpec = ""
	store, svc, err := openService(context.Background(), cfg, true)
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := svc.Init(context.Background(), "test", "test-op"); err != nil {
		b.Fatal(err)
	}
	store.Close()
	logs := &countingWriter{}
	m := NewMain()
	m.Config = cfg
	m.Log = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := m.Run(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	size := func() int64 {
		var n int64
		if err := m.Store.Pool().QueryRow(context.Background(), `SELECT pg_database_size(current_database())`).Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}
	rows := func() int64 {
		var n int64
		if err := m.Store.Pool().QueryRow(context.Background(), `SELECT count(*) FROM audit_events`).Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}
	client := &http.Client{}
	name := strings.Repeat("q7", 1024)
	const requests = 3000
	b.ResetTimer()
	for it := range b.N {
		dbBefore, rowsBefore, logBefore := size(), rows(), logs.n.Load()
		statuses := map[int]int{}
		for i := range requests {
			req, _ := http.NewRequest("GET", m.URL()+"/v1/agents/"+name+strconv.Itoa(it*requests+i)+"/creds", nil)
			req.Header.Set("Authorization", "NKey x")
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			statuses[resp.StatusCode]++
		}
		if _, err := m.Refusals.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(size()-dbBefore), "db-bytes")
		b.ReportMetric(float64(rows()-rowsBefore), "audit-rows")
		b.ReportMetric(float64(logs.n.Load()-logBefore), "log-bytes")
		b.ReportMetric(float64(statuses[429]), "answered-429")
	}
}
