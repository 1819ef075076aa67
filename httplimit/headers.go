package httplimit

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rate-sync/ratesync-go"
)

// policy is how one rule is advertised in RateLimit-Policy.
type policy struct {
	name   string
	quoted string // name as a structured-field string
	quota  int64
	window int64  // seconds; 0 for a concurrency quota
	unit   string // "" for requests
	// conc is the rule's concurrency quota when it also has a rate or
	// window, advertised as a second policy.
	conc int64
}

// describe maps a rule to its advertised policy:
//   - sliding window: q = limit, w = window (whole seconds, rounded up);
//   - token bucket: the sustained rate over the time a full burst takes
//     to refill, w = max(1, ceil(burst/rate)) and q = floor(rate*w), at
//     least the burst;
//   - concurrency alone: q = max_concurrent, qu = "concurrent-requests".
func describe(name string, r ratesync.Rule) policy {
	p := policy{name: name, quoted: strconv.Quote(name)}
	switch {
	case r.Algorithm == ratesync.SlidingWindow:
		p.quota = int64(r.Limit)
		p.window = int64(math.Ceil(r.Window.Seconds()))
	case r.RatePerSecond > 0:
		w := max(1, math.Ceil(float64(r.Burst)/r.RatePerSecond))
		p.window = int64(w)
		p.quota = max(int64(r.RatePerSecond*w), int64(r.Burst))
	default:
		p.quota = int64(r.MaxConcurrent)
		p.unit = "concurrent-requests"
		return p
	}
	if r.MaxConcurrent > 0 {
		p.conc = int64(r.MaxConcurrent)
	}
	return p
}

// item writes one RateLimit-Policy item.
func (p policy) item(b *strings.Builder) {
	b.WriteString(p.quoted)
	b.WriteString(";q=")
	b.WriteString(strconv.FormatInt(p.quota, 10))
	if p.unit != "" {
		b.WriteString(`;qu="` + p.unit + `"`)
	}
	if p.window > 0 {
		b.WriteString(";w=")
		b.WriteString(strconv.FormatInt(p.window, 10))
	}
	if p.conc > 0 {
		b.WriteString(", ")
		b.WriteString(strconv.Quote(p.name + "-concurrency"))
		b.WriteString(`;q=` + strconv.FormatInt(p.conc, 10) + `;qu="concurrent-requests"`)
	}
}

func (p policy) header() string {
	var b strings.Builder
	p.item(&b)
	return b.String()
}

// set writes the RateLimit-Policy and RateLimit fields (and the legacy
// trio) for decision d. t is the seconds until more quota is available:
// the retry-after of a denial, else the time until the quota is full again.
// policyHeader is shared by every response of a middleware (the header map
// takes it as is: no copy, no canonicalisation per request).
func (p policy) set(h http.Header, policyHeader []string, d ratesync.Decision, legacy bool) {
	h[hdrPolicy] = policyHeader
	t := ceilSeconds(d.ResetAfter)
	if !d.Allowed && d.RetryAfter > 0 {
		// Denied by this policy (a composite part that would pass alone
		// has no retry and reports its reset).
		t = retrySeconds(d.RetryAfter)
	}
	var buf [64]byte
	b := append(buf[:0], p.quoted...)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, int64(max(d.Remaining, 0)), 10)
	if t > 0 {
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, t, 10)
	}
	h[hdrRateLimit] = []string{string(b)}
	if legacy {
		h.Set("X-RateLimit-Limit", strconv.Itoa(d.Limit))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(max(d.Remaining, 0)))
		h.Set("X-RateLimit-Reset", strconv.FormatInt(t, 10))
	}
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
	Limit             int      `json:"limit,omitempty"`
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

// DefaultDenied answers 429 with a quota-exceeded problem body.
func DefaultDenied(w http.ResponseWriter, r *http.Request, d Denial) {
	WriteProblem(w, Problem{
		Type:              QuotaExceeded,
		Title:             "Too Many Requests",
		Status:            http.StatusTooManyRequests,
		Detail:            "Rate limit exceeded for " + strings.Join(d.Policies, ", ") + "; retry after " + itoa(d.RetryAfter) + " seconds.",
		ViolatedPolicies:  d.Policies,
		RetryAfterSeconds: d.RetryAfter,
		Limit:             d.Decision.Limit,
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
