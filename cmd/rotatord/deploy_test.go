package main

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/rotatord/rotatord"
)

// notRotatords are series Prometheus makes itself.
var notRotatords = map[string]bool{"up": true}

// promParser is PromQL's own parser, as Prometheus loads rules with it.
var promParser = parser.NewParser(parser.Options{})

// metricNames returns the metric names an expression selects.
func metricNames(t *testing.T, where, expr string) []string {
	t.Helper()
	node, err := promParser.ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, expr, err)
		return nil
	}
	var out []string
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					name = m.Value
				}
			}
			if name == "" {
				t.Errorf("%s: a selector without a metric name in %q", where, expr)
			}
			out = append(out, name)
		}
		return nil
	})
	return out
}

// ruleFiles returns the rule files in deploy/prometheus.
func ruleFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../../deploy/prometheus/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no rule files in deploy/prometheus (%v)", err)
	}
	return files
}

// rulesAndDashboardMetrics parses the rules (with Prometheus's rule parser)
// and the Grafana dashboard, checks what can be checked without a server,
// and returns every metric they name, with where it is used.
func rulesAndDashboardMetrics(t *testing.T) map[string][]string {
	t.Helper()
	uses := map[string][]string{}
	add := func(where string, names []string) {
		for _, n := range names {
			uses[n] = append(uses[n], where)
		}
	}
	alerts := map[string]bool{}
	for _, f := range ruleFiles(t) {
		groups, errs := rulefmt.ParseFile(f, false, model.UTF8Validation, promParser, slog.New(slog.DiscardHandler))
		for _, err := range errs {
			t.Errorf("%s: %v", f, err)
		}
		if groups == nil {
			continue
		}
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" {
					continue
				}
				alerts[r.Alert] = true
				where := filepath.Base(f) + " " + r.Alert
				if s := r.Labels["severity"]; s != "warning" && s != "critical" {
					t.Errorf("%s: severity %q, want warning or critical", where, s)
				}
				if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					t.Errorf("%s: needs a summary and a description", where)
				}
				add(where, metricNames(t, where, r.Expr))
			}
		}
	}
	// What the rules must cover.
	for _, want := range []string{"RotatordRotationRolledBack", "RotatordPushesFailing", "RotatordServersBehind",
		"RotatordAccountJWTNearGuard", "RotatordAuthFailureBurst", "RotatordCredentialsExpiring"} {
		if !alerts[want] {
			t.Errorf("no alert %s in deploy/prometheus", want)
		}
	}

	raw, err := os.ReadFile("../../deploy/grafana/rotatord.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("deploy/grafana/rotatord.json: %v", err)
	}
	// Grafana's variables, as it substitutes them before querying.
	vars := strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h")
	queries := 0
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries++
			add("dashboard "+p.Title, metricNames(t, "dashboard panel "+p.Title, vars.Replace(tg.Expr)))
		}
	}
	if dash.UID == "" || queries < 20 {
		t.Errorf("dashboard uid %q with %d queries", dash.UID, queries)
	}
	return uses
}

// scrapedFamilies returns the metric families of a /metrics answer (the
// names of its # TYPE lines).
func scrapedFamilies(t *testing.T, body string) map[string]string {
	t.Helper()
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = f[3]
		}
	}
	return out
}

// family maps a sample name to its family: histograms and summaries are
// selected as name_bucket, name_sum, name_count.
func family(name string, families map[string]string) string {
	if _, ok := families[name]; ok {
		return name
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if typ := families[base]; typ == "histogram" || typ == "summary" {
				return base
			}
		}
	}
	return name
}

// TestDeployRulesAndDashboard parses deploy/prometheus's alerting rules with
// Prometheus's own rule parser and the Grafana dashboard's queries with
// PromQL's parser, and checks that every metric they name is on the
// /metrics of a running rotatord (the real Main, with NATS, after a
// rotation, a revoke and an alert, so that every series exists).
func TestDeployRulesAndDashboard(t *testing.T) {
	t.Parallel()
	uses := rulesAndDashboardMetrics(t)

	e := newEnv(t)
	e.startNATS()
	e.waitNATS()
	a, _, _ := fleetAgent(e, "kate")
	id := e.must(202, "POST", "/v1/agents/kate/rotate", nil)["id"].(string)
	if ok, err := a.Refresh(context.Background()); err != nil || !ok {
		t.Fatalf("refresh: %v %v", ok, err)
	}
	e.waitRotation(id, "completed")
	createAgent(e, "bob", "fleet")
	e.must(200, "POST", "/v1/agents/bob/revoke", nil)
	if err := e.main.Store.AddAlert(context.Background(), &rotatord.Alert{Kind: "test", Severity: rotatord.SeverityInfo, Reason: "a test"}); err != nil {
		t.Fatal(err)
	}
	var families map[string]string
	eventually(t, 20*time.Second, "every series on /metrics", func() bool {
		_, body := e.do("GET", "/metrics", "", nil)
		families = scrapedFamilies(t, string(body))
		_, alerted := families["rotatord_alerts_total"]
		_, pushed := families["rotatord_pushes_total"]
		return alerted && pushed
	})

	names := make([]string, 0, len(uses))
	for n := range uses {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if notRotatords[n] {
			continue
		}
		if _, found := families[family(n, families)]; !found {
			t.Errorf("%s is not on rotatord's /metrics; used by %s", n, strings.Join(uses[n], ", "))
		}
	}
}
