package httplimit

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/internal/ratefields"
)

// writeFields writes the RateLimit-Policy field (policyHeader, shared by
// every response of a middleware: the header map takes it as is, with no
// copy) and the RateLimit field (and the legacy trio) of quota q for
// decision d. retry is the denial's advertised retry.
func writeFields(h http.Header, policyHeader []string, q *ratefields.Quota, d ratesync.Decision, retry time.Duration, legacy bool) {
	h[hdrPolicy] = policyHeader
	t := ratefields.FieldTime(d, retry)
	h[hdrRateLimit] = []string{ratefields.Item(q, d, t)}
	if legacy {
		h.Set("X-RateLimit-Limit", strconv.FormatInt(q.Limit, 10))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(max(d.Remaining, 0)))
		h.Set("X-RateLimit-Reset", strconv.FormatInt(t, 10))
	}
}

// The canonical forms of the field names (what http.Header.Set would use).
var (
	hdrPolicy    = http.CanonicalHeaderKey("RateLimit-Policy")
	hdrRateLimit = http.CanonicalHeaderKey("RateLimit")
)

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
