package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sockfactory/sockfactory/internal/registry"
)

// The metrics computed at scrape time, from counters that are cheap to
// read: the registry's gauges and limit hits (atomics: no lock), the
// server's limit hits, and the connection counts.
var (
	socketsDesc = prometheus.NewDesc("sockfactory_held_sockets",
		"Sockets the daemon holds for clients (cached, lingering ones included), by protocol.", []string{"protocol"}, nil)
	refsDesc = prometheus.NewDesc("sockfactory_references",
		"References to held sockets that clients hold, by protocol.", []string{"protocol"}, nil)
	tokensDesc = prometheus.NewDesc("sockfactory_pending_tokens",
		"Tokens of token-only binds not yet picked up, by protocol.", []string{"protocol"}, nil)
	connsDesc = prometheus.NewDesc("sockfactory_connections",
		"Client connections being served, by front door.", []string{"door"}, nil)
	limitsDesc = prometheus.NewDesc("sockfactory_limit_hits_total",
		"Requests and connections refused by a limit, by limit (named like its configuration key).", []string{"limit"}, nil)
)

// live collects the scrape-time metrics of its Metrics.
type live Metrics

func (l *live) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{socketsDesc, refsDesc, tokensDesc, connsDesc, limitsDesc} {
		ch <- d
	}
}

func (l *live) Collect(ch chan<- prometheus.Metric) {
	var g registry.Gauges
	var hits registry.LimitHits
	if r := l.registry.Load(); r != nil {
		g, hits = r.Gauges(), r.LimitHits()
	}
	for p, name := range registry.ProtoNames {
		ch <- prometheus.MustNewConstMetric(socketsDesc, prometheus.GaugeValue, float64(g.Sockets[p]), name)
		ch <- prometheus.MustNewConstMetric(refsDesc, prometheus.GaugeValue, float64(g.Held[p]), name)
		ch <- prometheus.MustNewConstMetric(tokensDesc, prometheus.GaugeValue, float64(g.Pending[p]), name)
	}
	for d := range numDoors {
		if f := l.conns[d].Load(); f != nil {
			ch <- prometheus.MustNewConstMetric(connsDesc, prometheus.GaugeValue, float64((*f)()), doorNames[d])
		}
	}
	for i := range numLimits {
		ch <- prometheus.MustNewConstMetric(limitsDesc, prometheus.CounterValue, float64(l.limits[i].Load()), limitNames[i])
	}
	for _, h := range []struct {
		name string
		n    uint64
	}{{"sockets", hits.Refs}, {"sockets_per_uid", hits.RefsPerUID}, {"tokens", hits.Pending}, {"tokens_per_uid", hits.PendingPerUID}} {
		ch <- prometheus.MustNewConstMetric(limitsDesc, prometheus.CounterValue, float64(h.n), h.name)
	}
}
