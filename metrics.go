package ratesync

import (
	"context"
	"sync/atomic"
	"time"
)

// Metrics is a snapshot of one rule's counters in this process. Per-key
// limiters (For, templates) count toward their rule, so the number of
// series stays bounded by the number of rules.
type Metrics struct {
	Acquisitions      int64         // requests admitted (Try, Acquire, Do, composite checks)
	Denials           int64         // requests denied without waiting (Try, composite checks that this rule denied); for a shadow rule, those it would have denied
	ShadowDenials     int64         // requests a shadow rule (Rule.Shadow) would have denied and admitted anyway
	Timeouts          int64         // Acquire calls that gave up waiting
	Waiting           int64         // Acquire calls waiting now (for a slot or for the rate)
	Errors            int64         // store errors (whatever the failure policy did)
	Fallbacks         int64         // decisions the failure policy answered (local or allow) instead of the store
	Releases          int64         // leases released
	TotalWait         time.Duration // time Acquire spent waiting, summed
	MaxWait           time.Duration // longest Acquire wait
	CurrentConcurrent int64         // leases held now by this process
	PeakConcurrent    int64         // highest CurrentConcurrent seen
	// Wait is how long admitted requests waited: Acquire's waits, and
	// admissions by Try as waits of zero. Its Count is Acquisitions.
	Wait Histogram
}

// Histogram is a distribution of durations, as Prometheus histograms
// count them: Counts[i] is how many were at most Bounds[i] (cumulative),
// Count how many there were in all, Sum their total.
type Histogram struct {
	Bounds []time.Duration
	Counts []int64
	Count  int64
	Sum    time.Duration
}

// Bucket bounds: rate-sync's for waits (its dashboards keep working), and
// a finer range for store calls.
var (
	waitBounds  = seconds(.001, .005, .01, .025, .05, .075, .1, .25, .5, .75, 1, 2.5, 5, 7.5, 10)
	storeBounds = seconds(.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1)
)

func seconds(s ...float64) []time.Duration {
	out := make([]time.Duration, len(s))
	for i, x := range s {
		out[i] = time.Duration(x * float64(time.Second))
	}
	return out
}

// histogram counts durations in the buckets of bounds (one more for the
// values above the last bound), with atomic counters.
type histogram struct {
	bounds  []time.Duration
	buckets []atomic.Int64
	sum     atomic.Int64
}

func (h *histogram) init(bounds []time.Duration) {
	h.bounds, h.buckets = bounds, make([]atomic.Int64, len(bounds)+1)
}

func (h *histogram) observe(d time.Duration) {
	i := 0
	for i < len(h.bounds) && d > h.bounds[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sum.Add(int64(d))
}

// snapshot returns the histogram with zeros more values of zero.
func (h *histogram) snapshot(zeros int64) Histogram {
	out := Histogram{Bounds: h.bounds, Counts: make([]int64, len(h.bounds)), Sum: time.Duration(h.sum.Load())}
	n := zeros
	for i := range h.bounds {
		n += h.buckets[i].Load()
		out.Counts[i] = n
	}
	out.Count = n + h.buckets[len(h.bounds)].Load()
	return out
}

type metrics struct {
	acquisitions, denials, timeouts, errors, fallbacks, releases, waiting atomic.Int64
	shadowDenials                                                         atomic.Int64
	totalWait, maxWait                                                    atomic.Int64
	current, peak                                                         atomic.Int64
	// waits counts Acquire's admissions (other admissions waited zero).
	waits histogram
}

// newMetrics returns zeroed counters, padded: they change on every
// decision, and are kept off the cache lines of the rule's fields, which
// every decision reads.
func newMetrics() *metrics {
	p := new(struct {
		_ [64]byte
		m metrics
		_ [64]byte
	})
	p.m.waits.init(waitBounds)
	return &p.m
}

// shadowDenied records a request a shadow rule denied and admitted.
func (m *metrics) shadowDenied() {
	m.denials.Add(1)
	m.shadowDenials.Add(1)
}

// admitted records an admission without waiting (Try, composites).
func (m *metrics) admitted() { m.acquisitions.Add(1) }

// acquired records an admission by Acquire after wait.
func (m *metrics) acquired(wait time.Duration) {
	m.acquisitions.Add(1)
	m.waits.observe(wait)
	if wait > 0 {
		m.totalWait.Add(int64(wait))
		for {
			old := m.maxWait.Load()
			if int64(wait) <= old || m.maxWait.CompareAndSwap(old, int64(wait)) {
				break
			}
		}
	}
}

func (m *metrics) leaseTaken() {
	c := m.current.Add(1)
	for {
		old := m.peak.Load()
		if c <= old || m.peak.CompareAndSwap(old, c) {
			return
		}
	}
}

func (m *metrics) leaseReleased() {
	m.releases.Add(1)
	m.current.Add(-1)
}

func (m *metrics) snapshot() Metrics {
	s := Metrics{
		Acquisitions:      m.acquisitions.Load(),
		Denials:           m.denials.Load(),
		ShadowDenials:     m.shadowDenials.Load(),
		Timeouts:          m.timeouts.Load(),
		Waiting:           m.waiting.Load(),
		Errors:            m.errors.Load(),
		Fallbacks:         m.fallbacks.Load(),
		Releases:          m.releases.Load(),
		TotalWait:         time.Duration(m.totalWait.Load()),
		MaxWait:           time.Duration(m.maxWait.Load()),
		CurrentConcurrent: m.current.Load(),
		PeakConcurrent:    m.peak.Load(),
	}
	w := m.waits.snapshot(0)
	s.Wait = m.waits.snapshot(max(0, s.Acquisitions-w.Count))
	return s
}

// Op says which call produced an Event.
type Op string

// The operations reported to an Observer.
const (
	OpTry       Op = "try"
	OpAcquire   Op = "acquire"
	OpComposite Op = "composite"
)

// Event describes one decision, for an Observer.
type Event struct {
	Op       Op
	Limiter  string // rule name (never the per-key identifier)
	Store    string // the rule's store name
	Engine   string // the store's engine ("memory", "redis", "postgres", or the Go type of a store added in code)
	Key      string // store key, including escaped identifiers
	Decision Decision
	Wait     time.Duration // time Acquire waited (zero for Try)
	Err      error         // store error or timeout, if any
}

// StoreCall describes one call to a store, for a StoreObserver.
type StoreCall struct {
	// Context is the caller's context, for its values (a trace span, for
	// example). It may be done by the time the observer runs.
	Context context.Context
	Store   string // store name
	Engine  string
	// InProcess reports a store that decides in process (the memory
	// store): its calls are not network calls, and are not counted in
	// StoreInfo.Calls.
	InProcess bool
	Op        string // "decide", "peek", "release", "extend", "reset" or "reset_all"
	Duration  time.Duration
	Err       error // the store's error; ErrCircuitOpen when the breaker kept the call from the store
}

// StoreObserver receives one StoreCall per store call made for a decision
// or a release. It runs on the caller's goroutine and must not block.
type StoreObserver func(StoreCall)

// Observer receives one Event per decision: each Try, each Acquire (once,
// when it returns), each composite check. It runs on the caller's goroutine
// and must not block.
type Observer func(Event)
