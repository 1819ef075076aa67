// Package ratefields describes ratesync rules and decisions in the IETF
// RateLimit-Policy and RateLimit fields (draft-ietf-httpapi-ratelimit-headers-10),
// for the middlewares that send them: httplimit in HTTP headers, grpclimit
// in gRPC metadata. It maps a rule to its quotas, formats the RateLimit
// item of a decision, estimates the retry of a concurrency denial from
// the hold times a middleware observed, and caches one description per
// rule in force.
package ratefields

import (
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rate-sync/ratesync-go"
)

// Quota is one advertised policy: one item of RateLimit-Policy.
type Quota struct {
	// Name is the policy's name.
	Name string
	// Limit is the quota, the item's q.
	Limit int64
	// Window is the item's w, in whole seconds; 0 for a concurrency quota.
	Window int64
	// Concurrent reports a concurrency quota: qu="concurrent-requests".
	Concurrent bool

	quoted string // Name as a structured-field string
}

// Policy is how one rule is advertised: a rate or window quota, a
// concurrency quota, or both, with the hold times that concurrency retries
// are estimated from. Its methods are safe for concurrent use.
type Policy struct {
	// Rate is the rate or window quota; nil for a concurrency-only rule.
	Rate *Quota
	// Conc is the concurrency quota; nil without max_concurrent.
	Conc *Quota
	// Field is the rule's RateLimit-Policy value, as a one-element slice
	// every response shares (an http.Header takes it as is, with no copy).
	// Callers must not modify it.
	Field []string

	slots    int           // max_concurrent
	leaseTTL time.Duration // the bound of every concurrency retry
	holds    holdTimes
}

// Describe maps rule r to its advertised policies, named name:
//   - sliding window: q = limit, w = window (whole seconds, rounded up);
//   - token bucket: the sustained rate over the time a full burst takes
//     to refill, w = max(1, ceil(burst/rate)) and q = floor(rate*w), at
//     least the burst;
//   - concurrency: q = max_concurrent, qu = "concurrent-requests", named
//     name-concurrency beside a rate or window quota.
func Describe(name string, r ratesync.Rule) *Policy {
	p := &Policy{slots: r.MaxConcurrent, leaseTTL: r.LeaseTTL}
	switch {
	case r.Algorithm == ratesync.SlidingWindow:
		p.Rate = &Quota{Limit: int64(r.Limit), Window: int64(math.Ceil(r.Window.Seconds()))}
	case r.RatePerSecond > 0:
		w := max(1, math.Ceil(float64(r.Burst)/r.RatePerSecond))
		p.Rate = &Quota{Window: int64(w), Limit: max(int64(r.RatePerSecond*w), int64(r.Burst))}
	}
	if p.Rate != nil {
		p.Rate.Name = name
		p.Rate.quoted = strconv.Quote(name)
	}
	if r.MaxConcurrent > 0 {
		cn := name
		if p.Rate != nil {
			cn += "-concurrency"
		}
		p.Conc = &Quota{Name: cn, quoted: strconv.Quote(cn), Limit: int64(r.MaxConcurrent), Concurrent: true}
	}
	var b strings.Builder
	p.WriteItems(&b)
	p.Field = []string{b.String()}
	return p
}

// WriteItems appends the rule's RateLimit-Policy items to b, after a ", "
// when b is not empty (the items of several rules make one field).
func (p *Policy) WriteItems(b *strings.Builder) {
	for _, q := range []*Quota{p.Rate, p.Conc} {
		if q == nil {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(q.quoted)
		b.WriteString(";q=")
		b.WriteString(strconv.FormatInt(q.Limit, 10))
		if q.Concurrent {
			b.WriteString(`;qu="concurrent-requests"`)
		} else {
			b.WriteString(";w=")
			b.WriteString(strconv.FormatInt(q.Window, 10))
		}
	}
}

// Binding returns the quota a decision reports: the concurrency quota
// when Decision.Concurrency is set (or the rule has no other).
func (p *Policy) Binding(concurrency bool) *Quota {
	if p.Conc != nil && (concurrency || p.Rate == nil) {
		return p.Conc
	}
	return p.Rate
}

// RetryAfter returns how long the denial d tells a client to wait: the
// store's retry for a rate or window, which is exact, and for a
// concurrency limit an estimate from the observed hold times.
func (p *Policy) RetryAfter(d ratesync.Decision) time.Duration {
	if p.Binding(d.Concurrency).Concurrent {
		return p.holds.estimate(d.RetryAfter, p.leaseTTL, p.slots)
	}
	return d.RetryAfter
}

// ObserveHold records that an admitted request held its concurrency slot
// for held.
func (p *Policy) ObserveHold(held time.Duration) { p.holds.observe(held) }

// holdTimes estimates when a concurrency slot frees: it keeps an
// exponentially weighted mean of how long the requests a middleware
// admitted held their slot (weight 1/8 per request, as TCP smooths round
// trip times).
type holdTimes struct{ mean atomic.Int64 } // ns; 0 until the first

func (h *holdTimes) observe(d time.Duration) {
	d = max(d, 1)
	for {
		old := h.mean.Load()
		m := int64(d)
		if old > 0 {
			m = old + (int64(d)-old)/8
		}
		if h.mean.CompareAndSwap(old, max(m, 1)) {
			return
		}
	}
}

// estimate returns when a slot is likely to free for a request denied by
// a full concurrency limit of slots slots: with every slot held, and
// holders that started at different times, one ends about every
// mean/slots. Before any hold has ended it is a second (ask again soon).
// It never passes upper, the store's time until the earliest lease
// expires (when a slot frees even with no release), nor the lease TTL.
func (h *holdTimes) estimate(upper, leaseTTL time.Duration, slots int) time.Duration {
	est := time.Second
	if m := h.mean.Load(); m > 0 {
		est = time.Duration(m / int64(max(slots, 1)))
	}
	if upper <= 0 || leaseTTL > 0 && upper > leaseTTL {
		upper = leaseTTL
	}
	if upper > 0 {
		est = min(est, upper)
	}
	return est
}

// FieldTime returns the t of a RateLimit item: the seconds until more
// quota is available, the retry of a denial by this quota (retry is the
// advertised one), else the time until the quota is full again (a
// composite part that would pass alone is denied with the others, and
// reports its reset).
func FieldTime(d ratesync.Decision, retry time.Duration) int64 {
	if !d.Allowed && d.RetryAfter > 0 {
		return RetrySeconds(retry)
	}
	return CeilSeconds(d.ResetAfter)
}

// AppendItem appends the RateLimit item of quota q for d, with t (from
// FieldTime) when positive.
func AppendItem(b []byte, q *Quota, d ratesync.Decision, t int64) []byte {
	b = append(b, q.quoted...)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, int64(max(d.Remaining, 0)), 10)
	if t > 0 {
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, t, 10)
	}
	return b
}

// Item returns the RateLimit item of quota q for d (see AppendItem). It
// builds the item on the stack: one allocation, the string.
func Item(q *Quota, d ratesync.Decision, t int64) string {
	var buf [64]byte
	return string(AppendItem(buf[:0], q, d, t))
}

// RetrySeconds rounds a retry-after up to whole seconds, at least 1 and at
// most a day (a check that can never pass reports the longest duration).
func RetrySeconds(d time.Duration) int64 {
	const day = 86400
	if d <= 0 {
		return 1
	}
	return min(CeilSeconds(d), day)
}

// CeilSeconds rounds d up to whole seconds: 0 for d <= 0, at most a year
// (366 days); compared before it is rounded, so that a duration near the
// largest (a check that can never pass) does not overflow. It is the t of
// a reset; a retry is RetrySeconds.
func CeilSeconds(d time.Duration) int64 {
	const year = 86400 * 366
	switch {
	case d <= 0:
		return 0
	case d > year*time.Second:
		return year
	}
	return int64((d + time.Second - 1) / time.Second)
}

// Cache holds the descriptions of the rules a middleware has met under one
// policy name: one per rule in force (a reload or a key's override
// changes it), a few at most, each described once. It is safe for
// concurrent use.
type Cache struct {
	name string
	m    sync.Map // ratesync.Rule -> *Policy
}

// NewCache returns an empty cache whose policies are named name.
func NewCache(name string) *Cache { return &Cache{name: name} }

// Of returns the description of rule r.
func (c *Cache) Of(r ratesync.Rule) *Policy {
	if v, ok := c.m.Load(r); ok {
		return v.(*Policy)
	}
	v, _ := c.m.LoadOrStore(r, Describe(c.name, r))
	return v.(*Policy)
}
