package grpclimit

import (
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/rate-sync/ratesync-go"
)

// The response metadata keys: the IETF RateLimit-Policy and RateLimit fields
// (draft-ietf-httpapi-ratelimit-headers-10) and Retry-After, lowercase as
// gRPC metadata keys are, with the values package httplimit sends in its
// HTTP headers.
const (
	MDPolicy     = "ratelimit-policy"
	MDRateLimit  = "ratelimit"
	MDRetryAfter = "retry-after"
)

// quota is one advertised policy: one item of ratelimit-policy.
type quota struct {
	name   string
	quoted string // name as a structured-field string
	q      int64
	w      int64 // seconds; 0 for a concurrency quota
	conc   bool  // a concurrency quota: qu="concurrent-requests"
}

// rulePolicy is how one rule is advertised: a rate or window quota, a
// concurrency quota, or both, with the hold times that concurrency retries
// are estimated from.
type rulePolicy struct {
	rate, conc *quota
	slots      int           // max_concurrent
	leaseTTL   time.Duration // the bound of every concurrency retry
	header     string        // the ratelimit-policy value
	holds      holdTimes
}

// describe maps a rule to its advertised policies, as httplimit does:
//   - sliding window: q = limit, w = window (whole seconds, rounded up);
//   - token bucket: the sustained rate over the time a full burst takes
//     to refill, w = max(1, ceil(burst/rate)) and q = floor(rate*w), at
//     least the burst;
//   - concurrency: q = max_concurrent, qu = "concurrent-requests", named
//     name-concurrency beside a rate or window quota.
func describe(name string, r ratesync.Rule) *rulePolicy {
	p := &rulePolicy{slots: r.MaxConcurrent, leaseTTL: r.LeaseTTL}
	switch {
	case r.Algorithm == ratesync.SlidingWindow:
		p.rate = &quota{q: int64(r.Limit), w: int64(math.Ceil(r.Window.Seconds()))}
	case r.RatePerSecond > 0:
		w := max(1, math.Ceil(float64(r.Burst)/r.RatePerSecond))
		p.rate = &quota{w: int64(w), q: max(int64(r.RatePerSecond*w), int64(r.Burst))}
	}
	if p.rate != nil {
		p.rate.name = name
		p.rate.quoted = strconv.Quote(name)
	}
	if r.MaxConcurrent > 0 {
		cn := name
		if p.rate != nil {
			cn += "-concurrency"
		}
		p.conc = &quota{name: cn, quoted: strconv.Quote(cn), q: int64(r.MaxConcurrent), conc: true}
	}
	var b strings.Builder
	for _, q := range []*quota{p.rate, p.conc} {
		if q == nil {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(q.quoted)
		b.WriteString(";q=")
		b.WriteString(strconv.FormatInt(q.q, 10))
		if q.conc {
			b.WriteString(`;qu="concurrent-requests"`)
		} else {
			b.WriteString(";w=")
			b.WriteString(strconv.FormatInt(q.w, 10))
		}
	}
	p.header = b.String()
	return p
}

// binding returns the quota a decision reports (Decision.Concurrency).
func (p *rulePolicy) binding(concurrency bool) *quota {
	if p.conc != nil && (concurrency || p.rate == nil) {
		return p.conc
	}
	return p.rate
}

// retryAfter returns how long the denial d tells a client to wait: the
// store's retry for a rate or window, which is exact, and for a
// concurrency limit the estimate of holdTimes.
func (p *rulePolicy) retryAfter(d ratesync.Decision) time.Duration {
	if p.binding(d.Concurrency).conc {
		return p.holds.estimate(d.RetryAfter, p.leaseTTL, p.slots)
	}
	return d.RetryAfter
}

// fields returns the response metadata of decision d by quota q; retry is
// the advertised retry of a denial (then retry-after is set too).
func (p *rulePolicy) fields(q *quota, d ratesync.Decision, retry time.Duration) metadata.MD {
	t := fieldTime(d, retry)
	var buf [64]byte
	md := metadata.MD{
		MDPolicy:    {p.header},
		MDRateLimit: {string(appendItem(buf[:0], q, d, t))},
	}
	if !d.Allowed {
		md[MDRetryAfter] = []string{strconv.FormatInt(retrySeconds(retry), 10)}
	}
	return md
}

// holdTimes estimates when a concurrency slot frees: an exponentially
// weighted mean of how long the calls this interceptor admitted held their
// slot (weight 1/8 per call), as httplimit keeps for HTTP requests.
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

// estimate returns when a slot is likely to free for a call denied by a
// full concurrency limit of slots slots: one holder ends about every
// mean/slots; before any hold has ended, a second. It never passes upper,
// the store's time until the earliest lease expires, nor the lease TTL.
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

// fieldTime returns the t of a RateLimit item: the retry of a denial, else
// the time until the quota is full again.
func fieldTime(d ratesync.Decision, retry time.Duration) int64 {
	if !d.Allowed && d.RetryAfter > 0 {
		return retrySeconds(retry)
	}
	return ceilSeconds(d.ResetAfter)
}

// appendItem appends the RateLimit item of quota q for d.
func appendItem(b []byte, q *quota, d ratesync.Decision, t int64) []byte {
	b = append(b, q.quoted...)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, int64(max(d.Remaining, 0)), 10)
	if t > 0 {
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, t, 10)
	}
	return b
}

// retrySeconds rounds a retry-after up to whole seconds, at least 1 and at
// most a day.
func retrySeconds(d time.Duration) int64 {
	const day = 86400
	if d <= 0 {
		return 1
	}
	s := int64((d + time.Second - 1) / time.Second)
	return min(max(s, 1), day)
}

func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return min(int64((d+time.Second-1)/time.Second), 86400*366)
}
