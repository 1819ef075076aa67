// Package ratesyncprom exports ratesync metrics to Prometheus, for every
// store, on a prometheus.Registerer the caller passes (never the default
// registry). One call registers them:
//
//	err := ratesyncprom.Register(promReg)      // the package functions' registry (ratesync.Default)
//	err := ratesyncprom.Register(promReg, reg) // or registries of your own
//	http.Handle("/metrics", ratesyncprom.Handler(promReg))
//
// Metrics are read from the registries' own counters at scrape time
// (Limiter.Metrics, Registry.Stores): nothing is added to a decision, and
// Try keeps its in-process fast path.
//
// rate-sync's metric names and buckets are kept, so its dashboards keep
// working: ratesync_acquisitions_total, ratesync_acquisition_duration_seconds
// and ratesync_timeouts_total, labelled group_id (the rule name) and engine.
// Labels carry rule and store names only, never a per-key identifier, so
// cardinality stays bounded by the configuration.
package ratesyncprom

import (
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rate-sync/ratesync-go"
)

// Register registers a collector of the metrics of regs on r; with no
// registry, it collects ratesync.Default(), the registry of the package
// functions (loaded on first use, as they do).
func Register(r prometheus.Registerer, regs ...*ratesync.Registry) error {
	if r == nil {
		return errors.New("ratesyncprom: Register: nil Registerer (pass your own prometheus.Registry)")
	}
	return r.Register(collector{regs: regs})
}

// Handler returns the /metrics handler of a Prometheus registry.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	acquisitionsDesc = desc("ratesync_acquisitions_total", "Requests admitted, by rule (as rate-sync's metric of the same name).", "group_id", "engine")
	decisionsDesc    = desc("ratesync_decisions_total", "Requests by rule and result: allowed (admitted), denied (Try and composite checks this rule denied), timeout (Acquire gave up).", "group_id", "result")
	waitDesc         = desc("ratesync_acquisition_duration_seconds", "Time admitted requests waited, by rule: Acquire's waits, and Try's admissions as zero.", "group_id", "engine")
	timeoutsDesc     = desc("ratesync_timeouts_total", "Acquire calls that gave up, by rule.", "group_id", "engine")
	fallbacksDesc    = desc("ratesync_fallback_decisions_total", "Decisions that the rule's on_store_error policy answered because the store could not (local or allow).", "group_id")
	ruleErrorsDesc   = desc("ratesync_rule_store_errors_total", "Decisions of the rule that its store could not make, whatever the failure policy did.", "group_id")
	waitingDesc      = desc("ratesync_waiting", "Acquire calls waiting now, by rule.", "group_id")
	leasesDesc       = desc("ratesync_leases_in_use", "Concurrency leases held by this process, by rule.", "group_id")
	storeCallsDesc   = desc("ratesync_store_call_duration_seconds", "Latency of store calls, by store and operation (decide, peek, release, extend, reset, reset_all).", "store", "op")
	storeErrorsDesc  = desc("ratesync_store_errors_total", "Store calls that failed, by store and operation; calls the open circuit breaker skipped count too.", "store", "op")
	breakerDesc      = desc("ratesync_circuit_breaker_state", "Circuit breaker of each store: 0 closed, 1 half-open, 2 open (as rate-sync's metric of the same name).", "store")
	shadowDesc       = desc("ratesync_shadow_denials_total", "Requests a shadow rule (shadow = true) would have denied and admitted anyway; ratesync_decisions_total counts them as denied.", "group_id")
	reloadsDesc      = desc("ratesync_config_reloads_total", "Configuration reloads (Registry.Reload, WatchConfig), by result: success, or failure (the file was rejected and nothing changed).", "result")
	fallbackDesc     = desc("ratesync_fallback_active", "1 while a store's breaker is not closed, so its rules' failure policies answer.", "store")
)

type collector struct{ regs []*ratesync.Registry }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{acquisitionsDesc, decisionsDesc, waitDesc, timeoutsDesc, fallbacksDesc, ruleErrorsDesc,
		waitingDesc, leasesDesc, storeCallsDesc, storeErrorsDesc, breakerDesc, fallbackDesc, shadowDesc, reloadsDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	regs := c.regs
	if len(regs) == 0 {
		reg, err := ratesync.Default()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(acquisitionsDesc, err)
			return
		}
		regs = []*ratesync.Registry{reg}
	}
	var ok, failed int64
	for _, reg := range regs {
		rs := reg.Reloads()
		ok, failed = ok+rs.Succeeded, failed+rs.Failed
		engines := map[string]string{}
		for _, s := range reg.Stores() {
			engines[s.Name] = s.Engine
			collectStore(ch, s)
		}
		for _, l := range reg.Limiters() {
			collectRule(ch, l, engines[l.Rule.Store])
		}
	}
	counter(ch, reloadsDesc, ok, "success")
	counter(ch, reloadsDesc, failed, "failure")
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v int64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func histogram(ch chan<- prometheus.Metric, d *prometheus.Desc, h ratesync.Histogram, labels ...string) {
	buckets := make(map[float64]uint64, len(h.Bounds))
	for i, b := range h.Bounds {
		buckets[b.Seconds()] = uint64(h.Counts[i])
	}
	ch <- prometheus.MustNewConstHistogram(d, uint64(h.Count), h.Sum.Seconds(), buckets, labels...)
}

func collectRule(ch chan<- prometheus.Metric, l ratesync.LimiterInfo, engine string) {
	m, name := l.Metrics, l.Name
	counter(ch, acquisitionsDesc, m.Acquisitions, name, engine)
	counter(ch, decisionsDesc, m.Acquisitions, name, "allowed")
	counter(ch, decisionsDesc, m.Denials, name, "denied")
	counter(ch, decisionsDesc, m.Timeouts, name, "timeout")
	counter(ch, timeoutsDesc, m.Timeouts, name, engine)
	counter(ch, fallbacksDesc, m.Fallbacks, name)
	counter(ch, ruleErrorsDesc, m.Errors, name)
	counter(ch, shadowDesc, m.ShadowDenials, name)
	histogram(ch, waitDesc, m.Wait, name, engine)
	gauge(ch, waitingDesc, float64(m.Waiting), name)
	gauge(ch, leasesDesc, float64(m.CurrentConcurrent), name)
}

func collectStore(ch chan<- prometheus.Metric, s ratesync.StoreInfo) {
	for _, c := range s.Calls {
		histogram(ch, storeCallsDesc, c.Latency, s.Name, c.Op)
		counter(ch, storeErrorsDesc, c.Errors, s.Name, c.Op)
	}
	v, active := 0.0, 0.0
	switch s.Breaker {
	case ratesync.BreakerHalfOpen:
		v, active = 1, 1
	case ratesync.BreakerOpen:
		v, active = 2, 1
	}
	gauge(ch, breakerDesc, v, s.Name)
	gauge(ch, fallbackDesc, active, s.Name)
}
