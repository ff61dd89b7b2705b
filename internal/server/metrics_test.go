package server

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/sockfactory/sockfactory/internal/connector"
	"github.com/sockfactory/sockfactory/internal/metrics"
	"github.com/sockfactory/sockfactory/internal/registry"
	"github.com/sockfactory/sockfactory/internal/testnet"
)

// gathered is the value of the series of name whose labels include
// labels (name, value pairs) in m; -1 if there is none. A histogram's
// value is its sample count.
func gathered(t *testing.T, m *metrics.Metrics, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
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
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
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

func wantMetric(t *testing.T, m *metrics.Metrics, want float64, name string, labels ...string) {
	t.Helper()
	if got := gathered(t, m, name, labels...); got != want {
		t.Errorf("%s%v = %v; want %v", name, labels, got, want)
	}
}

// lookupFunc is a connector.Lookup of a function.
type lookupFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

func (f lookupFunc) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return f(ctx, network, host)
}

// TestMetricsCount drives requests of every kind through a server and
// checks what each counted: requests by op and code, their durations,
// denials by rule, DNS lookups, the registry's gauges and the
// connections.
func TestMetricsCount(t *testing.T) {
	m := metrics.New(metrics.Options{NoRuntime: true})
	m.SetRules([]string{"t"})
	sink := testnet.Sink(t)
	res := lookupFunc(func(_ context.Context, _, host string) ([]netip.Addr, error) {
		if host == "deny.test" {
			return []netip.Addr{netip.MustParseAddr("0.0.0.1")}, nil // on the default deny list
		}
		return []netip.Addr{sink.Addr()}, nil
	})
	conn := &connector.Connector{Resolver: res, ObserveLookup: m.ObserveLookup}
	_, path := startServer(t, `connect = ["127.0.0.1:*", "deny.test:*"]
bind = ["tcp:127.0.0.1:*"]`, Options{Metrics: m, Connector: conn})
	c := dialServer(t, path)

	do := func(req string) {
		t.Helper()
		send(t, c, req)
		recvReply(t, c)
	}
	do(fmt.Sprintf(`{"v":1,"id":1,"op":"connect","connect":{"network":"tcp","address":%q}}`, sink))
	do(`{"v":1,"id":2,"op":"connect","connect":{"network":"tcp","address":"10.0.0.1:80"}}`)
	do(fmt.Sprintf(`{"v":1,"id":3,"op":"connect","connect":{"network":"tcp","address":"deny.test:%d"}}`, sink.Port()))
	do(`{"v":1,"id":4,"op":"bind","bind":{"network":"tcp","address":"127.0.0.1:0","share":"none"}}`)
	do(`{"v":1,"id":5,"op":"bind","bind":{"network":"tcp","address":"127.0.0.1:0","share":"none","token_only":true}}`)
	do(`{"v":1,"id":6,"op":"reload"}`)
	do(`{"v":1,"id":7,"op":"status"}`)
	do(`not json`)

	wantMetric(t, m, 1, "sockfactory_requests_total", "door", "native", "op", "connect", "code", "ok")
	wantMetric(t, m, 2, "sockfactory_requests_total", "door", "native", "op", "connect", "code", "denied")
	wantMetric(t, m, 2, "sockfactory_requests_total", "door", "native", "op", "bind", "code", "ok")
	wantMetric(t, m, 1, "sockfactory_requests_total", "door", "native", "op", "reload", "code", "denied")
	wantMetric(t, m, 1, "sockfactory_requests_total", "door", "native", "op", "status", "code", "ok")
	wantMetric(t, m, 1, "sockfactory_requests_total", "door", "native", "op", "invalid", "code", "invalid_request")
	wantMetric(t, m, 3, "sockfactory_request_duration_seconds", "door", "native", "op", "connect")
	wantMetric(t, m, 2, "sockfactory_request_duration_seconds", "door", "native", "op", "bind")
	wantMetric(t, m, 0, "sockfactory_request_duration_seconds", "door", "native", "op", "invalid")
	// 10.0.0.1 matched no rule, nor did the non-admin's reload; deny.test
	// matched rule t, whose address the deny list refused.
	wantMetric(t, m, 2, "sockfactory_denials_total", "rule", "")
	wantMetric(t, m, 1, "sockfactory_denials_total", "rule", "t")
	wantMetric(t, m, 1, "sockfactory_dns_lookups_total", "result", "ok")
	wantMetric(t, m, 1, "sockfactory_dns_lookup_duration_seconds")
	wantMetric(t, m, 2, "sockfactory_held_sockets", "protocol", "tcp")
	wantMetric(t, m, 1, "sockfactory_references", "protocol", "tcp")
	wantMetric(t, m, 1, "sockfactory_pending_tokens", "protocol", "tcp")
	wantMetric(t, m, 0, "sockfactory_held_sockets", "protocol", "udp")
	wantMetric(t, m, 1, "sockfactory_connections", "door", "native")

	// The connection's end releases its reference and is counted.
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for gathered(t, m, "sockfactory_connections", "door", "native") != 0 || gathered(t, m, "sockfactory_references", "protocol", "tcp") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("connections and references not back to 0 after the client left")
		}
		time.Sleep(5 * time.Millisecond) // polling: the session's end has no event to wait on
	}
	wantMetric(t, m, 1, "sockfactory_pending_tokens", "protocol", "tcp") // a token outlives its connection

	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestMetricsLimitHits: each limit's refusals count under its name.
func TestMetricsLimitHits(t *testing.T) {
	m := metrics.New(metrics.Options{NoRuntime: true})
	_, path := startServer(t, `bind = ["tcp:127.0.0.1:*"]`, Options{Metrics: m, Limits: Limits{
		MaxConnsPerUID: 1,
		Registry:       registry.Limits{RefsPerUID: 1},
	}})
	c := dialServer(t, path)
	for id := 1; id <= 2; id++ {
		send(t, c, fmt.Sprintf(`{"v":1,"id":%d,"op":"bind","bind":{"network":"tcp","address":"127.0.0.1:0","share":"none"}}`, id))
		recvReply(t, c)
	}
	second := dialServer(t, path)
	if rep := recvReply(t, second); rep.Error == nil {
		t.Fatalf("second connection: %+v; want refused", rep)
	}
	wantMetric(t, m, 1, "sockfactory_limit_hits_total", "limit", "sockets_per_uid")
	wantMetric(t, m, 1, "sockfactory_limit_hits_total", "limit", "connections_per_uid")
	wantMetric(t, m, 0, "sockfactory_limit_hits_total", "limit", "connections")
	wantMetric(t, m, 1, "sockfactory_requests_total", "door", "native", "op", "bind", "code", "limit_exceeded")
}
