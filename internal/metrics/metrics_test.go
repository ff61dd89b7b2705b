package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/sockfactory/sockfactory/internal/wire"
)

// value is the value of the one series of name with labels (name="value"
// pairs), from a gather of m; -1 when there is none. For a histogram it is
// the sample count.
func value(t *testing.T, m *Metrics, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, s := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range s.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue series
				}
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				return s.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				return s.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				return float64(s.GetHistogram().GetSampleCount())
			}
		}
	}
	return -1
}

func want(t *testing.T, m *Metrics, w float64, name string, labels ...string) {
	t.Helper()
	if got := value(t, m, name, labels...); got != w {
		t.Errorf("%s%v = %v; want %v", name, labels, got, w)
	}
}

// TestRequests: each request counts once under its door, op and code, and
// once in its op's histogram; series exist at zero before any request.
func TestRequests(t *testing.T) {
	m := New(Options{Version: "test", NoRuntime: true})
	want(t, m, 0, "sockfactory_requests_total", "door", "native", "op", "bind", "code", "ok")
	want(t, m, 0, "sockfactory_requests_total", "door", "clearwater", "op", "connect", "code", "denied")
	m.Request(Native, wire.OpBind, "", 30*time.Microsecond)
	m.Request(Native, wire.OpBind, "", 2*time.Second)
	m.Request(Native, wire.OpConnect, wire.CodeConnectFailed, time.Millisecond)
	m.Request(Native, "bogus", wire.CodeInvalidRequest, time.Microsecond)
	m.Request(Native, wire.OpStatus, "made_up_code", time.Microsecond)
	m.Refused(wire.OpUpgrade, wire.CodeDenied)
	m.Refused("", wire.CodeInvalidRequest)
	m.Clearwater(wire.CodeDenied, 5*time.Millisecond)
	m.Clearwater("", 5*time.Millisecond)

	want(t, m, 2, "sockfactory_requests_total", "door", "native", "op", "bind", "code", "ok")
	want(t, m, 1, "sockfactory_requests_total", "door", "native", "op", "connect", "code", "connect_failed")
	want(t, m, 2, "sockfactory_requests_total", "door", "native", "op", "invalid", "code", "invalid_request")
	want(t, m, 1, "sockfactory_requests_total", "door", "native", "op", "status", "code", "other")
	want(t, m, 1, "sockfactory_requests_total", "door", "native", "op", "upgrade", "code", "denied")
	want(t, m, 1, "sockfactory_requests_total", "door", "clearwater", "op", "connect", "code", "denied")
	want(t, m, 1, "sockfactory_requests_total", "door", "clearwater", "op", "connect", "code", "ok")
	want(t, m, 2, "sockfactory_request_duration_seconds", "door", "native", "op", "bind")
	want(t, m, 0, "sockfactory_request_duration_seconds", "door", "native", "op", "upgrade") // refused: no duration
	want(t, m, 2, "sockfactory_request_duration_seconds", "door", "clearwater", "op", "connect")
	want(t, m, 1, "sockfactory_denials_total", "rule", "") // the Clearwater denial

	// The bind durations fall in the right buckets.
	text, err := testutil.GatherAndFormat(m.reg, expfmt.TypeTextPlain, "sockfactory_request_duration_seconds")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		`sockfactory_request_duration_seconds_bucket{door="native",op="bind",le="1e-05"} 0`,
		`sockfactory_request_duration_seconds_bucket{door="native",op="bind",le="5e-05"} 1`,
		`sockfactory_request_duration_seconds_bucket{door="native",op="bind",le="1"} 1`,
		`sockfactory_request_duration_seconds_bucket{door="native",op="bind",le="2.5"} 2`,
	} {
		if !strings.Contains(string(text), line+"\n") {
			t.Errorf("histogram lacks %s; got\n%s", line, text)
		}
	}
}

// TestDenials: a denial counts under its rule while the rule is
// configured, else under "" — the label's values come from the
// configuration only.
func TestDenials(t *testing.T) {
	m := New(Options{NoRuntime: true})
	m.SetRules([]string{"web", "dns"})
	want(t, m, 0, "sockfactory_denials_total", "rule", "web")
	m.Denial("web")
	m.Denial("web")
	m.Denial("")
	m.Denial("not-a-rule")
	want(t, m, 2, "sockfactory_denials_total", "rule", "web")
	want(t, m, 0, "sockfactory_denials_total", "rule", "dns")
	want(t, m, 2, "sockfactory_denials_total", "rule", "")
	want(t, m, -1, "sockfactory_denials_total", "rule", "not-a-rule")
	m.SetRules([]string{"dns"}) // a reload removed web
	m.Denial("web")
	want(t, m, 3, "sockfactory_denials_total", "rule", "")
	want(t, m, 2, "sockfactory_denials_total", "rule", "web") // what was counted stays
}

// TestLookups: lookups count by result, and every one is timed.
func TestLookups(t *testing.T) {
	m := New(Options{NoRuntime: true})
	m.ObserveLookup(nil, time.Millisecond)
	m.ObserveLookup(&net.DNSError{Err: "no such host", Name: "x.test", IsNotFound: true}, time.Millisecond)
	m.ObserveLookup(&net.DNSError{Err: "i/o timeout", Name: "x.test", IsTimeout: true}, time.Second)
	m.ObserveLookup(fmt.Errorf("lookup: %w", context.DeadlineExceeded), time.Second)
	m.ObserveLookup(errors.New("server misbehaving"), time.Millisecond)
	want(t, m, 1, "sockfactory_dns_lookups_total", "result", "ok")
	want(t, m, 1, "sockfactory_dns_lookups_total", "result", "not_found")
	want(t, m, 2, "sockfactory_dns_lookups_total", "result", "timeout")
	want(t, m, 1, "sockfactory_dns_lookups_total", "result", "error")
	want(t, m, 5, "sockfactory_dns_lookup_duration_seconds")
}

// TestReloads: reloads count by result; the timestamp moves only with a
// success, and the last result shows.
func TestReloads(t *testing.T) {
	m := New(Options{NoRuntime: true})
	start := value(t, m, "sockfactory_last_reload_success_timestamp_seconds")
	if now := float64(time.Now().Unix()); start < now-60 || start > now+1 {
		t.Fatalf("timestamp at start = %v; want about %v", start, now)
	}
	want(t, m, 1, "sockfactory_last_reload_successful")
	m.Reloaded(errors.New("broken file"))
	want(t, m, 1, "sockfactory_reloads_total", "result", "failure")
	want(t, m, 0, "sockfactory_reloads_total", "result", "success")
	want(t, m, 0, "sockfactory_last_reload_successful")
	want(t, m, start, "sockfactory_last_reload_success_timestamp_seconds")
	m.Reloaded(nil)
	want(t, m, 1, "sockfactory_reloads_total", "result", "success")
	want(t, m, 1, "sockfactory_last_reload_successful")
	if got := value(t, m, "sockfactory_last_reload_success_timestamp_seconds"); got < start {
		t.Errorf("timestamp after a success = %v; want >= %v", got, start)
	}
}

// TestLiveWithoutSources: before the server shows its registry and
// connections, the gauges read zero and the connections are absent.
func TestLiveWithoutSources(t *testing.T) {
	m := New(Options{NoRuntime: true})
	want(t, m, 0, "sockfactory_held_sockets", "protocol", "tcp")
	want(t, m, 0, "sockfactory_limit_hits_total", "limit", "max_in_flight")
	want(t, m, -1, "sockfactory_connections", "door", "native")
	m.LimitHit(LimitInFlight)
	m.SetConns(Native, func() int { return 3 })
	want(t, m, 1, "sockfactory_limit_hits_total", "limit", "max_in_flight")
	want(t, m, 3, "sockfactory_connections", "door", "native")
}

// TestBuildInfo: one series, 1, naming the version.
func TestBuildInfo(t *testing.T) {
	m := New(Options{Version: "1.2.3", NoRuntime: true})
	want(t, m, 1, "sockfactory_build_info", "version", "1.2.3")
}

// TestLint: promlint finds nothing wrong with any metric, the Go and
// process collectors' included.
func TestLint(t *testing.T) {
	m := New(Options{Version: "test"})
	m.Request(Native, wire.OpBind, "", time.Millisecond)
	m.Denial("")
	m.ObserveLookup(nil, time.Millisecond)
	problems, err := testutil.GatherAndLint(m.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// TestRequestAllocs: counting a request allocates nothing.
func TestRequestAllocs(t *testing.T) {
	m := New(Options{NoRuntime: true})
	m.SetRules([]string{"web"})
	if n := testing.AllocsPerRun(100, func() {
		m.Request(Native, wire.OpConnect, wire.CodeDenied, time.Millisecond)
		m.Denial("web")
		m.Clearwater("", time.Millisecond)
		m.ObserveLookup(nil, time.Millisecond)
	}); n != 0 {
		t.Fatalf("counting a request: %v allocations; want 0", n)
	}
}
