package ratesync

import (
	"sync/atomic"
	"time"
)

// Metrics is a snapshot of one rule's counters in this process. Per-key
// limiters (GetOrClone, templates) count toward their rule, so the number of
// series stays bounded by the number of rules.
type Metrics struct {
	Acquisitions      int64         // requests admitted (Try, Acquire, Do, composite checks)
	Denials           int64         // requests denied without waiting (Try, composite checks that this rule denied)
	Timeouts          int64         // Acquire calls that gave up waiting
	Waiting           int64         // Acquire calls waiting now (for a slot or for the rate)
	Errors            int64         // store errors (whatever the failure policy did)
	Releases          int64         // leases released
	TotalWait         time.Duration // time Acquire spent waiting, summed
	MaxWait           time.Duration // longest Acquire wait
	CurrentConcurrent int64         // leases held now by this process
	PeakConcurrent    int64         // highest CurrentConcurrent seen
}

// AvgWait returns TotalWait / Acquisitions.
func (m Metrics) AvgWait() time.Duration {
	if m.Acquisitions == 0 {
		return 0
	}
	return m.TotalWait / time.Duration(m.Acquisitions)
}

type metrics struct {
	acquisitions, denials, timeouts, errors, releases, waiting atomic.Int64
	totalWait, maxWait                                         atomic.Int64
	current, peak                                              atomic.Int64
}

func (m *metrics) admitted(wait time.Duration) {
	m.acquisitions.Add(1)
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
		Timeouts:          m.timeouts.Load(),
		Waiting:           m.waiting.Load(),
		Errors:            m.errors.Load(),
		Releases:          m.releases.Load(),
		TotalWait:         time.Duration(m.totalWait.Load()),
		MaxWait:           time.Duration(m.maxWait.Load()),
		CurrentConcurrent: m.current.Load(),
		PeakConcurrent:    m.peak.Load(),
	}
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
	Store    string // store name
	Engine   string
	Op       string // "decide" or "release"
	Duration time.Duration
	Err      error // the store's error; ErrCircuitOpen when the breaker kept the call from the store
}

// StoreObserver receives one StoreCall per store call made for a decision
// or a release. It runs on the caller's goroutine and must not block.
type StoreObserver func(StoreCall)

// Observer receives one Event per decision: each Try, each Acquire (once,
// when it returns), each composite check. It runs on the caller's goroutine
// and must not block.
type Observer func(Event)
