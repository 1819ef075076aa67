package dashboard

import (
	"slices"
	"sort"
	"time"

	"github.com/rate-sync/ratesync-go"
)

// counts are a limiter's counters that the chart shows, or their increase
// over one interval.
// The three outcomes are apart: a request a shadow rule would have denied
// is counted as shadow only (Metrics.Denials counts it too).
type counts struct {
	admitted int64 // Metrics.Acquisitions
	denied   int64 // Metrics.Denials - Metrics.ShadowDenials + Metrics.Timeouts
	shadow   int64 // Metrics.ShadowDenials
	errors   int64 // Metrics.Errors
}

func countsOf(m ratesync.Metrics) counts {
	return counts{admitted: m.Acquisitions, denied: m.Denials - m.ShadowDenials + m.Timeouts, shadow: m.ShadowDenials, errors: m.Errors}
}

// since returns the increase from prev to c. A counter that went down
// belongs to a limiter that was replaced (its counters start again from
// zero), so its whole value is the increase, as Prometheus counts resets.
func (c counts) since(prev counts) counts {
	d := func(cur, old int64) int64 {
		if cur < old {
			return cur
		}
		return cur - old
	}
	return counts{d(c.admitted, prev.admitted), d(c.denied, prev.denied), d(c.shadow, prev.shadow), d(c.errors, prev.errors)}
}

func (c *counts) add(o counts) {
	c.admitted += o.admitted
	c.denied += o.denied
	c.shadow += o.shadow
	c.errors += o.errors
}

// sample is what the sampler read at one tick: the increase of every
// limiter's counters over the interval that ended at at.
type sample struct {
	at     time.Time
	dt     time.Duration // length of the interval
	names  []string      // limiter names, sorted; shared by samples while unchanged
	counts []counts      // by index in names
	total  counts        // sum of counts
}

// of returns the counts of the limiter name ("" for the total) and whether
// the sample knows it.
func (s *sample) of(name string) (counts, bool) {
	if name == "" {
		return s.total, true
	}
	i := sort.SearchStrings(s.names, name)
	if i < len(s.names) && s.names[i] == name {
		return s.counts[i], true
	}
	return counts{}, false
}

// breakerSeen is a store's breaker state as the sampler last saw it, and
// since when.
type breakerSeen struct {
	state ratesync.BreakerState
	since time.Time
}

// sampler turns the registry's cumulative counters into samples. It is
// used by one goroutine at a time (New, then the sampler goroutine).
type sampler struct {
	reg      *ratesync.Registry
	last     time.Time
	names    []string
	prev     map[string]counts
	breakers map[string]breakerSeen
}

func newSampler(reg *ratesync.Registry) *sampler {
	return &sampler{reg: reg, prev: map[string]counts{}, breakers: map[string]breakerSeen{}}
}

// read reads the registry at now and returns the increase since the
// previous read, with a copy of the breaker states seen. A limiter read
// for the first time counts nothing in its first sample: its counters
// before that belong to no interval of the chart.
func (s *sampler) read(now time.Time) (sample, map[string]breakerSeen) {
	infos := s.reg.Limiters()
	if len(infos) != len(s.names) || !slices.EqualFunc(infos, s.names, func(li ratesync.LimiterInfo, n string) bool { return li.Name == n }) {
		s.names = make([]string, len(infos))
		for i, li := range infos {
			s.names[i] = li.Name
		}
		for name := range s.prev {
			if _, found := slices.BinarySearch(s.names, name); !found {
				delete(s.prev, name)
			}
		}
	}
	smp := sample{at: now, names: s.names, counts: make([]counts, len(infos))}
	if !s.last.IsZero() {
		smp.dt = now.Sub(s.last)
	}
	s.last = now
	for i, li := range infos {
		cur := countsOf(li.Metrics)
		if prev, ok := s.prev[li.Name]; ok {
			smp.counts[i] = cur.since(prev)
			smp.total.add(smp.counts[i])
		}
		s.prev[li.Name] = cur
	}

	stores := s.reg.Stores()
	seen := make(map[string]breakerSeen, len(stores))
	for _, st := range stores {
		b, ok := s.breakers[st.Name]
		if !ok || b.state != st.Breaker {
			b = breakerSeen{state: st.Breaker, since: now}
		}
		seen[st.Name] = b
	}
	s.breakers = seen
	return smp, seen
}

// ring keeps the last len(buf) samples.
type ring struct {
	buf  []sample
	next int // where the next sample goes
	n    int // how many are kept
}

func newRing(size int) *ring { return &ring{buf: make([]sample, size)} }

func (r *ring) add(s sample) {
	r.buf[r.next] = s
	r.next = (r.next + 1) % len(r.buf)
	r.n = min(r.n+1, len(r.buf))
}

// each calls fn on the samples kept, oldest first.
func (r *ring) each(fn func(*sample)) {
	start := (r.next - r.n + len(r.buf)) % len(r.buf)
	for i := range r.n {
		fn(&r.buf[(start+i)%len(r.buf)])
	}
}

// last returns the newest sample, or nil.
func (r *ring) last() *sample {
	if r.n == 0 {
		return nil
	}
	return &r.buf[(r.next-1+len(r.buf))%len(r.buf)]
}
