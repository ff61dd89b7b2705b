package metrics

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory/internal/registry"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// contrib is contrib/prometheus, from this package's directory.
var contrib = filepath.Join("..", "..", "contrib", "prometheus")

// scrapedNames returns the names of every series a real scrape of a
// daemon's metrics listener shows, histograms' _bucket, _sum and _count
// included.
func scrapedNames(t *testing.T) map[string]bool {
	t.Helper()
	m := New(Options{Version: "test"})
	reg := registry.New(time.Minute)
	t.Cleanup(reg.Close)
	m.Watch(reg)
	m.SetConns(Native, func() int { return 0 })
	m.SetConns(Clearwater, func() int { return 0 })
	m.Request(Native, wire.OpBind, "", time.Millisecond)
	_, addr := started(t, m, "127.0.0.1:0")
	code, body := get(t, addr, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: status %d", code)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

var (
	promString  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promRange   = regexp.MustCompile(`\[[^\]]*\]`)
	promLabels  = regexp.MustCompile(`\{[^}]*\}`)
	promGroup   = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promToken   = regexp.MustCompile(`[0-9][0-9.]*(?:e[+-]?[0-9]+)?[a-z]*|[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promKeyword = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "inf", "nan"}
	// grafanaVars are the dashboard's variables, replaced by something
	// PromQL would take in their place.
	grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__range", "1h", "$__interval", "1m", "$job", "j", "$instance", "i")
)

// metricNames returns the metric names a PromQL expression selects.
func metricNames(expr string) []string {
	e := grafanaVars.Replace(expr)
	e = promString.ReplaceAllString(e, `""`)
	e = promRange.ReplaceAllString(e, "")
	e = promLabels.ReplaceAllString(e, "")
	e = promGroup.ReplaceAllString(e, "")
	var out []string
	for _, m := range promToken.FindAllStringSubmatch(e, -1) {
		tok := m[0]
		switch {
		case tok[0] >= '0' && tok[0] <= '9': // a number or a duration
		case m[1] != "": // a function or an aggregation
		case slices.Contains(promKeyword, strings.ToLower(tok)):
		default:
			out = append(out, tok)
		}
	}
	return out
}

// TestMetricNames checks the extraction the contrib tests rely on.
func TestMetricNames(t *testing.T) {
	cases := []struct {
		expr string
		want []string
	}{
		{`up{job="sockfactory"} == 0`, []string{"up"}},
		{`histogram_quantile(0.99, sum by (op, le) (rate(sockfactory_request_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval])))`, []string{"sockfactory_request_duration_seconds_bucket"}},
		{`process_open_fds / process_max_fds > 0.8`, []string{"process_open_fds", "process_max_fds"}},
		{`rate(a_total[5m]) > 2 * rate(a_total[1h] offset 1h) and on (instance) b`, []string{"a_total", "a_total", "b"}},
	}
	for _, tc := range cases {
		if got := metricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%q) = %q; want %q", tc.expr, got, tc.want)
		}
	}
}

// checkExprs fails for every metric an expression names that the daemon
// does not expose (up is Prometheus's own).
func checkExprs(t *testing.T, where string, exprs []string, have map[string]bool) {
	t.Helper()
	if len(exprs) == 0 {
		t.Fatalf("%s: no expressions found", where)
	}
	for _, e := range exprs {
		names := metricNames(e)
		if len(names) == 0 {
			t.Errorf("%s: %q names no metric", where, e)
		}
		for _, n := range names {
			if n != "up" && !have[n] {
				t.Errorf("%s: %q uses %s, which the daemon does not expose", where, e, n)
			}
		}
	}
}

// TestDashboard: contrib/prometheus/grafana-dashboard.json is valid JSON,
// has the panels docs/metrics.md promises, and every expression in it
// names only metrics a scrape of the daemon shows.
func TestDashboard(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(contrib, "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct{ Query any }
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	var exprs []string
	var all strings.Builder
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
			all.WriteString(tg.Expr + "\n")
		}
	}
	labelValues := regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,`)
	for _, v := range dash.Templating.List {
		if q, ok := v.Query.(string); ok {
			if m := labelValues.FindStringSubmatch(q); m != nil {
				exprs = append(exprs, m[1])
			}
		}
	}
	checkExprs(t, "grafana-dashboard.json", exprs, scrapedNames(t))
	for _, want := range []string{"sockfactory_requests_total", "sockfactory_request_duration_seconds_bucket", "sockfactory_denials_total",
		"sockfactory_held_sockets", "process_open_fds", "process_max_fds"} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("grafana-dashboard.json has no panel showing %s", want)
		}
	}
}

// TestAlertRules: every expr: of contrib/prometheus/alerts.yml names only
// metrics a scrape of the daemon shows, and the alerts docs/metrics.md
// describes are there.
func TestAlertRules(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(contrib, "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var exprs, alerts []string
	for _, line := range strings.Split(string(data), "\n") {
		l := strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(l, "expr:"); ok {
			exprs = append(exprs, strings.TrimSpace(v))
		}
		if v, ok := strings.CutPrefix(l, "- alert:"); ok {
			alerts = append(alerts, strings.TrimSpace(v))
		}
	}
	checkExprs(t, "alerts.yml", exprs, scrapedNames(t))
	for _, want := range []string{"SockfactoryDown", "SockfactoryDenialsRising", "SockfactoryFileDescriptorsNearLimit", "SockfactoryReloadFailed"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alerts.yml has no alert %s (has %q)", want, alerts)
		}
	}
	joined := strings.Join(exprs, "\n")
	for _, want := range []string{"== 0", "process_open_fds{job=\"sockfactory\"} / process_max_fds{job=\"sockfactory\"} > 0.8"} {
		if !strings.Contains(joined, want) {
			t.Errorf("alerts.yml: no expression contains %q", want)
		}
	}
}
