// Package ratesyncprom exports ratesync metrics to Prometheus, for every
// store, on a prometheus.Registerer the caller passes (never the default
// registry).
//
//	m, err := ratesyncprom.New(promReg)
//	reg := ratesync.NewRegistry(m.Options()...)
//	m.Watch(reg) // gauges read at scrape time
//	http.Handle("/metrics", ratesyncprom.Handler(promReg))
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
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rate-sync/ratesync-go"
)

// AcquisitionBuckets are rate-sync's buckets of
// ratesync_acquisition_duration_seconds.
var AcquisitionBuckets = []float64{.001, .005, .01, .025, .05, .075, .1, .25, .5, .75, 1, 2.5, 5, 7.5, 10}

// StoreBuckets are the buckets of ratesync_store_call_duration_seconds.
var StoreBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}

// Metrics holds the collectors. Create it with New.
type Metrics struct {
	acquisitions *prometheus.CounterVec
	decisions    *prometheus.CounterVec
	wait         *prometheus.HistogramVec
	timeouts     *prometheus.CounterVec
	storeCalls   *prometheus.HistogramVec
	storeErrors  *prometheus.CounterVec

	mu      sync.Mutex
	watched []*ratesync.Registry
}

// New creates the metrics and registers them, with a collector for the
// gauges, on r.
func New(r prometheus.Registerer) (*Metrics, error) {
	if r == nil {
		return nil, errors.New("ratesyncprom: New: nil Registerer (pass your own prometheus.Registry)")
	}
	m := &Metrics{
		acquisitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratesync_acquisitions_total",
			Help: "Requests admitted, by rule (as rate-sync's metric of the same name).",
		}, []string{"group_id", "engine"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratesync_decisions_total",
			Help: "Decisions by rule and result: allowed, denied, error (the call failed), fallback (the store failed and the failure policy answered).",
		}, []string{"group_id", "result"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ratesync_acquisition_duration_seconds",
			Help:    "Time Acquire waited before admission, by rule.",
			Buckets: AcquisitionBuckets,
		}, []string{"group_id", "engine"}),
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratesync_timeouts_total",
			Help: "Acquire calls that gave up, by rule.",
		}, []string{"group_id", "engine"}),
		storeCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ratesync_store_call_duration_seconds",
			Help:    "Latency of store calls, by store and operation (decide, release).",
			Buckets: StoreBuckets,
		}, []string{"store", "op"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratesync_store_errors_total",
			Help: "Store calls that failed, by store and operation; calls the open circuit breaker skipped count too.",
		}, []string{"store", "op"}),
	}
	for _, c := range []prometheus.Collector{m.acquisitions, m.decisions, m.wait, m.timeouts, m.storeCalls, m.storeErrors, gauges{m}} {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Options returns the registry options that feed the metrics: pass them
// to ratesync.NewRegistry.
func (m *Metrics) Options() []ratesync.RegistryOption {
	return []ratesync.RegistryOption{ratesync.WithObserver(m.Observe), ratesync.WithStoreObserver(m.ObserveStore)}
}

// Watch adds reg's gauges (leases in use, circuit breakers) to the
// metrics, read at each scrape.
func (m *Metrics) Watch(reg *ratesync.Registry) {
	m.mu.Lock()
	m.watched = append(m.watched, reg)
	m.mu.Unlock()
}

// Observe records one decision; it is a ratesync.Observer.
func (m *Metrics) Observe(e ratesync.Event) {
	result := "denied"
	switch {
	case e.Decision.FailedOpen || e.Decision.Fallback:
		result = "fallback"
	case e.Decision.Allowed:
		result = "allowed"
	case e.Err != nil && !errors.Is(e.Err, ratesync.ErrTimeout):
		result = "error"
	}
	m.decisions.WithLabelValues(e.Limiter, result).Inc()
	if e.Decision.Allowed {
		m.acquisitions.WithLabelValues(e.Limiter, e.Engine).Inc()
		if e.Op == ratesync.OpAcquire {
			m.wait.WithLabelValues(e.Limiter, e.Engine).Observe(e.Wait.Seconds())
		}
	}
	if errors.Is(e.Err, ratesync.ErrTimeout) {
		m.timeouts.WithLabelValues(e.Limiter, e.Engine).Inc()
	}
}

// ObserveStore records one store call; it is a ratesync.StoreObserver.
func (m *Metrics) ObserveStore(c ratesync.StoreCall) {
	if c.Err != nil {
		m.storeErrors.WithLabelValues(c.Store, c.Op).Inc()
	}
	if !errors.Is(c.Err, ratesync.ErrCircuitOpen) {
		m.storeCalls.WithLabelValues(c.Store, c.Op).Observe(c.Duration.Seconds())
	}
}

// gauges reads the watched registries at scrape time.
type gauges struct{ m *Metrics }

var (
	leasesDesc   = prometheus.NewDesc("ratesync_leases_in_use", "Concurrency leases held by this process, by rule.", []string{"group_id"}, nil)
	breakerDesc  = prometheus.NewDesc("ratesync_circuit_breaker_state", "Circuit breaker of each store: 0 closed, 1 half-open, 2 open (as rate-sync's metric of the same name).", []string{"store"}, nil)
	fallbackDesc = prometheus.NewDesc("ratesync_fallback_active", "1 while a store's breaker is not closed, so its rules' failure policies answer.", []string{"store"}, nil)
)

func (g gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- leasesDesc
	ch <- breakerDesc
	ch <- fallbackDesc
}

func (g gauges) Collect(ch chan<- prometheus.Metric) {
	g.m.mu.Lock()
	regs := append([]*ratesync.Registry(nil), g.m.watched...)
	g.m.mu.Unlock()
	leases := map[string]float64{}
	breakers := map[string]ratesync.BreakerState{}
	for _, reg := range regs {
		for _, l := range reg.Limiters() {
			if lim, err := reg.Get(l.Name); err == nil {
				leases[l.Name] += float64(lim.Metrics().CurrentConcurrent)
			}
		}
		for _, st := range reg.Stores() {
			breakers[st.Name] = st.Breaker
		}
	}
	for name, n := range leases {
		ch <- prometheus.MustNewConstMetric(leasesDesc, prometheus.GaugeValue, n, name)
	}
	for name, st := range breakers {
		v, active := 0.0, 0.0
		switch st {
		case ratesync.BreakerHalfOpen:
			v, active = 1, 1
		case ratesync.BreakerOpen:
			v, active = 2, 1
		}
		ch <- prometheus.MustNewConstMetric(breakerDesc, prometheus.GaugeValue, v, name)
		ch <- prometheus.MustNewConstMetric(fallbackDesc, prometheus.GaugeValue, active, name)
	}
}

// Handler returns the /metrics handler of a Prometheus registry.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}
