// Package metrics counts what the daemon does, for Prometheus: requests by
// front door, op and outcome, their durations, denials, limit hits, DNS
// lookups, reloads, and what the registry holds, and serves them over HTTP
// (see docs/metrics.md).
//
// It must stay cheap on the request path: every counter a request touches
// is resolved once, in New, and kept in arrays indexed by door, op and
// code, so that counting a request allocates nothing and looks nothing up
// by string. What the registry holds is read at scrape time from its
// lock-free gauges (registry.Gauges). It decides nothing and changes
// nothing the daemon does; a nil *Metrics is "metrics off" to its callers.
package metrics

import (
	"errors"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sockfactory/sockfactory/internal/connector"
	"github.com/sockfactory/sockfactory/internal/registry"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// Door is a front door: the native protocol or the Clearwater one.
type Door uint8

// The front doors.
const (
	Native Door = iota
	Clearwater
	numDoors
)

var doorNames = [numDoors]string{Native: "native", Clearwater: "clearwater"}

// Ops, as label values: the protocol's ops, and "invalid" for a request
// that could not be decoded or named no known op.
var opNames = [...]string{"connect", "hello", "bind", "pickup", "release", "status", "reload", "upgrade", "reclaim", "invalid"}

const opInvalid = len(opNames) - 1

// opIndex is op's index in opNames.
func opIndex(op wire.Op) int {
	switch op {
	case wire.OpConnect:
		return 0
	case wire.OpHello:
		return 1
	case wire.OpBind:
		return 2
	case wire.OpPickup:
		return 3
	case wire.OpRelease:
		return 4
	case wire.OpStatus:
		return 5
	case wire.OpReload:
		return 6
	case wire.OpUpgrade:
		return 7
	case wire.OpReclaim:
		return 8
	}
	return opInvalid
}

// Outcome codes, as label values: "ok" for success, then the protocol's
// error codes; "other" for a code this build does not know.
var codeNames = [...]string{"ok", "invalid_request", "unsupported_version", "denied", "resolve_failed", "connect_failed",
	"timeout", "limit_exceeded", "internal", "share_conflict", "not_found", "bind_failed", "other"}

// codeIndex is c's index in codeNames; "" is success.
func codeIndex(c wire.Code) int {
	switch c {
	case "":
		return 0
	case wire.CodeInvalidRequest:
		return 1
	case wire.CodeUnsupportedVersion:
		return 2
	case wire.CodeDenied:
		return 3
	case wire.CodeResolveFailed:
		return 4
	case wire.CodeConnectFailed:
		return 5
	case wire.CodeTimeout:
		return 6
	case wire.CodeLimitExceeded:
		return 7
	case wire.CodeInternal:
		return 8
	case wire.CodeShareConflict:
		return 9
	case wire.CodeNotFound:
		return 10
	case wire.CodeBindFailed:
		return 11
	}
	return len(codeNames) - 1
}

// Limit is one of the server's own limits (the registry counts its own:
// registry.LimitHits).
type Limit uint8

// The server's limits, named like their configuration keys.
const (
	LimitConnections Limit = iota
	LimitConnectionsPerUID
	LimitInFlight
	numLimits
)

var limitNames = [numLimits]string{LimitConnections: "connections", LimitConnectionsPerUID: "connections_per_uid", LimitInFlight: "max_in_flight"}

// DNS lookup results, as label values.
var lookupResults = [...]string{"ok", "not_found", "timeout", "error"}

// Buckets are the duration histograms' buckets, in seconds: 10 µs to 10 s,
// in steps of 1, 2.5 and 5.
var Buckets = []float64{
	10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
	1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// Options configure Metrics.
type Options struct {
	// Version is the daemon's release, for sockfactory_build_info.
	Version string
	// NoRuntime leaves out the Go and process collectors (tests that
	// compare whole scrapes).
	NoRuntime bool
}

// Metrics are the daemon's metrics and the Prometheus registry they are
// gathered from. Create them with New; every method is safe for
// concurrent use. The request-path methods are cheap: a few atomic adds.
type Metrics struct {
	reg *prometheus.Registry

	requests  [numDoors][len(opNames)][len(codeNames)]prometheus.Counter
	durations [numDoors][len(opNames)]prometheus.Observer
	denialVec *prometheus.CounterVec
	denials   atomic.Pointer[map[string]prometheus.Counter] // by rule of the running policy
	noRule    prometheus.Counter
	limits    [numLimits]atomic.Uint64
	lookups   [len(lookupResults)]prometheus.Counter
	lookupDur prometheus.Observer
	reloads   [2]prometheus.Counter // success, failure
	lastOK    prometheus.Gauge
	lastOKAt  prometheus.Gauge

	registry atomic.Pointer[registry.Registry]
	conns    [numDoors]atomic.Pointer[func() int]
}

// New returns the daemon's metrics, registered on a registry of their own
// (never Prometheus's global one) with the Go and process collectors.
func New(o Options) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sockfactory_requests_total",
		Help: "Requests answered, by front door, op and outcome code (ok for success).",
	}, []string{"door", "op", "code"})
	durations := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sockfactory_request_duration_seconds",
		Help:    "Time from a decoded request to its reply (Clearwater: from accept to the outcome), by front door and op.",
		Buckets: Buckets,
	}, []string{"door", "op"})
	// Every series a request can touch is made now: the request path
	// only adds, and the series exist (at zero) before the first request.
	for op := range opNames {
		m.durations[Native][op] = durations.WithLabelValues(doorNames[Native], opNames[op])
		for code := range codeNames {
			m.requests[Native][op][code] = requests.WithLabelValues(doorNames[Native], opNames[op], codeNames[code])
		}
	}
	// A Clearwater request is a connect.
	m.durations[Clearwater][0] = durations.WithLabelValues(doorNames[Clearwater], opNames[0])
	for code := range codeNames {
		m.requests[Clearwater][0][code] = requests.WithLabelValues(doorNames[Clearwater], opNames[0], codeNames[code])
	}

	m.denialVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sockfactory_denials_total",
		Help: `Requests denied by the policy, by the rule that matched the request ("" when none did or the rule is no longer configured).`,
	}, []string{"rule"})
	m.noRule = m.denialVec.WithLabelValues("")
	m.SetRules(nil)

	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sockfactory_dns_lookups_total",
		Help: "DNS name lookups made for connect requests, by result (ok, not_found, timeout, error).",
	}, []string{"result"})
	for i, r := range lookupResults {
		m.lookups[i] = lookups.WithLabelValues(r)
	}
	lookupDur := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sockfactory_dns_lookup_duration_seconds",
		Help:    "Time DNS name lookups took, whatever their result.",
		Buckets: Buckets,
	})
	m.lookupDur = lookupDur

	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sockfactory_reloads_total",
		Help: "Configuration reloads (SIGHUP or a reload request), by result (success, failure).",
	}, []string{"result"})
	m.reloads[0], m.reloads[1] = reloads.WithLabelValues("success"), reloads.WithLabelValues("failure")
	m.lastOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sockfactory_last_reload_successful",
		Help: "1 if the last reload took the configuration (or none has been tried since start), 0 if it was refused.",
	})
	m.lastOKAt = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sockfactory_last_reload_success_timestamp_seconds",
		Help: "When the running configuration was taken: at start, or by the last successful reload (Unix time).",
	})
	m.lastOK.Set(1)
	m.lastOKAt.SetToCurrentTime()

	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "sockfactory_build_info",
		Help:        "Always 1; the labels say which build of sockfactoryd runs.",
		ConstLabels: prometheus.Labels{"version": o.Version, "goversion": runtime.Version(), "revision": revision()},
	})
	info.Set(1)

	m.reg.MustRegister(requests, durations, m.denialVec, lookups, lookupDur, reloads, m.lastOK, m.lastOKAt, info, (*live)(m))
	if !o.NoRuntime {
		m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return m
}

// revision is the VCS revision the binary was built from, or "".
func revision() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return ""
}

// Registry is the Prometheus registry the metrics are gathered from.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Request counts one request of door answered with code ("" for success)
// after took. A Clearwater request is a connect.
func (m *Metrics) Request(door Door, op wire.Op, code wire.Code, took time.Duration) {
	o := 0
	if door == Native {
		o = opIndex(op)
	}
	m.requests[door][o][codeIndex(code)].Inc()
	m.durations[door][o].Observe(took.Seconds())
}

// Refused counts one native request refused before it was handled (it
// could not be decoded, was over the in-flight limit, or was an upgrade
// refused): in sockfactory_requests_total, not in the durations.
func (m *Metrics) Refused(op wire.Op, code wire.Code) {
	m.requests[Native][opIndex(op)][codeIndex(code)].Inc()
}

// Clearwater counts one Clearwater request: clearwater.Options.Observe.
// Its denials count with rule "" (the Clearwater door names none).
func (m *Metrics) Clearwater(code wire.Code, took time.Duration) {
	m.Request(Clearwater, wire.OpConnect, code, took)
	if code == wire.CodeDenied {
		m.noRule.Inc()
	}
}

// Denial counts one request the policy denied, under rule when it is a
// rule of the running policy (see SetRules), else under "".
func (m *Metrics) Denial(rule string) {
	if rule != "" {
		if c, ok := (*m.denials.Load())[rule]; ok {
			c.Inc()
			return
		}
	}
	m.noRule.Inc()
}

// SetRules sets the rule names denials may be counted under: the running
// policy's, at start and on each reload. Counts under rules no longer
// configured stay.
func (m *Metrics) SetRules(names []string) {
	by := make(map[string]prometheus.Counter, len(names))
	for _, n := range names {
		if n != "" {
			by[n] = m.denialVec.WithLabelValues(n)
		}
	}
	m.denials.Store(&by)
}

// LimitHit counts one request or connection refused by one of the
// server's limits.
func (m *Metrics) LimitHit(l Limit) { m.limits[l].Add(1) }

// ObserveLookup counts one DNS lookup: connector.Connector.ObserveLookup.
func (m *Metrics) ObserveLookup(err error, took time.Duration) {
	m.lookups[lookupResult(err)].Inc()
	m.lookupDur.Observe(took.Seconds())
}

// lookupResult is err's index in lookupResults.
func lookupResult(err error) int {
	if err == nil {
		return 0 // before de, which escapes: a found name allocates nothing
	}
	var de *net.DNSError
	switch {
	case errors.As(err, &de) && de.IsNotFound:
		return 1
	case connector.IsTimeout(err) || errors.Is(err, os.ErrDeadlineExceeded):
		return 2
	}
	return 3
}

// Reloaded counts one reload whose result was err.
func (m *Metrics) Reloaded(err error) {
	if err != nil {
		m.reloads[1].Inc()
		m.lastOK.Set(0)
		return
	}
	m.reloads[0].Inc()
	m.lastOK.Set(1)
	m.lastOKAt.SetToCurrentTime()
}

// Watch has scrapes read what r holds (its lock-free gauges and limit
// hits); the server calls it with its registry.
func (m *Metrics) Watch(r *registry.Registry) { m.registry.Store(r) }

// SetConns has scrapes report conns() as the client connections of door.
// conns must be cheap and must not block.
func (m *Metrics) SetConns(door Door, conns func() int) { m.conns[door].Store(&conns) }
