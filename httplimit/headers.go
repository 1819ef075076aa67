package httplimit

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rate-sync/ratesync-go"
)

// quota is one advertised policy: one item of RateLimit-Policy.
type quota struct {
	name   string
	quoted string // name as a structured-field string
	q      int64
	w      int64 // seconds; 0 for a concurrency quota
	conc   bool  // a concurrency quota: qu="concurrent-requests"
}

// rulePolicy is how one rule (a middleware's, or a composite part's) is
// advertised: a rate or window quota, a concurrency quota, or both. For a
// concurrency quota it also keeps the hold times its retry estimates come
// from.
type rulePolicy struct {
	rate, conc *quota
	slots      int           // max_concurrent
	leaseTTL   time.Duration // the bound of every concurrency retry
	holds      holdTimes
}

// describe maps a rule to its advertised policies:
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
	return p
}

// items writes the rule's RateLimit-Policy items.
func (p *rulePolicy) items(b *strings.Builder) {
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

// holdTimes estimates when a concurrency slot frees: it keeps an
// exponentially weighted mean of how long the requests this middleware
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

// writeFields writes the RateLimit-Policy field (policyHeader, shared by
// every response of a middleware: the header map takes it as is, with no
// copy) and the RateLimit field (and the legacy trio) of quota q for
// decision d. retry is the denial's advertised retry.
func writeFields(h http.Header, policyHeader []string, q *quota, d ratesync.Decision, retry time.Duration, legacy bool) {
	h[hdrPolicy] = policyHeader
	t := fieldTime(d, retry)
	var buf [64]byte // the item is built on the stack: one allocation, the string
	h[hdrRateLimit] = []string{string(appendItem(buf[:0], q, d, t))}
	if legacy {
		h.Set("X-RateLimit-Limit", strconv.FormatInt(q.q, 10))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(max(d.Remaining, 0)))
		h.Set("X-RateLimit-Reset", strconv.FormatInt(t, 10))
	}
}

// fieldTime returns the t of a RateLimit item: the seconds until more
// quota is available, the retry of a denial by this quota, else the time
// until the quota is full again (a composite part that would pass alone
// is denied with the others, and reports its reset).
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

// The canonical forms of the field names (what http.Header.Set would use).
var (
	hdrPolicy    = http.CanonicalHeaderKey("RateLimit-Policy")
	hdrRateLimit = http.CanonicalHeaderKey("RateLimit")
)

func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return min(int64((d+time.Second-1)/time.Second), 86400*366)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// Problem is the RFC 9457 body of a 429 (type quota-exceeded, from the
// ratelimit-headers draft) or of an error response.
type Problem struct {
	Type              string   `json:"type"`
	Title             string   `json:"title"`
	Status            int      `json:"status"`
	Detail            string   `json:"detail,omitempty"`
	ViolatedPolicies  []string `json:"violated-policies,omitempty"`
	RetryAfterSeconds int64    `json:"retry_after_seconds,omitempty"`
	// Limit is the violated policy's quota: its q in RateLimit-Policy.
	Limit int64 `json:"limit,omitempty"`
}

// QuotaExceeded is the problem type of a 429.
const QuotaExceeded = "https://iana.org/assignments/http-problem-types#quota-exceeded"

// WriteProblem writes p as application/problem+json with status p.Status.
func WriteProblem(w http.ResponseWriter, p Problem) {
	body, _ := json.Marshal(p)
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(p.Status)
	w.Write(append(body, '\n'))
}

// DefaultDenied answers 429 with a quota-exceeded problem body, whose
// limit is the violated policy's quota, as in RateLimit-Policy.
func DefaultDenied(w http.ResponseWriter, r *http.Request, d Denial) {
	what := "Rate limit exceeded for "
	if d.Decision.Concurrency {
		what = "Too many concurrent requests for "
	}
	unit := " seconds."
	if d.RetryAfter == 1 {
		unit = " second."
	}
	WriteProblem(w, Problem{
		Type:              QuotaExceeded,
		Title:             "Too Many Requests",
		Status:            http.StatusTooManyRequests,
		Detail:            what + strings.Join(d.Policies, ", ") + "; retry after " + itoa(d.RetryAfter) + unit,
		ViolatedPolicies:  d.Policies,
		RetryAfterSeconds: d.RetryAfter,
		Limit:             d.Limit,
	})
}

// DefaultError answers 503 when a fail_closed rule's store cannot decide.
func DefaultError(w http.ResponseWriter, r *http.Request, err error) {
	w.Header().Set("Cache-Control", "no-store")
	WriteProblem(w, Problem{
		Type:   "about:blank",
		Title:  "Service Unavailable",
		Status: http.StatusServiceUnavailable,
		Detail: "The rate limiter cannot decide now; try again later.",
	})
}

// DefaultKeyError answers 400 when the request cannot be identified.
func DefaultKeyError(w http.ResponseWriter, r *http.Request, err error) {
	WriteProblem(w, Problem{
		Type:   "about:blank",
		Title:  "Bad Request",
		Status: http.StatusBadRequest,
		Detail: "The request cannot be identified for rate limiting.",
	})
}
