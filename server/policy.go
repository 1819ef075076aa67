package server

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/rate-sync/ratesync-go"
)

// policy is how one limiter is advertised: its quota q per w seconds, as
// in RateLimit-Policy (and as httplimit advertises it):
//   - sliding window: q = limit, w = window (whole seconds, rounded up);
//   - token bucket: the sustained rate over the time a full burst takes to
//     refill, w = max(1, ceil(burst/rate)) and q = max(floor(rate*w), burst).
type policy struct {
	name   string
	quoted string // name as a structured-field string
	q      int64
	w      int64 // seconds
}

func describe(name string, r ratesync.Rule) *policy {
	p := &policy{name: name, quoted: strconv.Quote(name)}
	switch {
	case r.Algorithm == ratesync.SlidingWindow:
		p.q, p.w = int64(r.Limit), int64(math.Ceil(r.Window.Seconds()))
	case r.RatePerSecond > 0:
		w := max(1, math.Ceil(float64(r.Burst)/r.RatePerSecond))
		p.q, p.w = max(int64(r.RatePerSecond*w), int64(r.Burst)), int64(w)
	}
	p.w = max(p.w, 1)
	return p
}

// item appends the RateLimit-Policy item of p.
func (p *policy) item(b *strings.Builder) {
	if b.Len() > 0 {
		b.WriteString(", ")
	}
	b.WriteString(p.quoted)
	b.WriteString(";q=")
	b.WriteString(strconv.FormatInt(p.q, 10))
	b.WriteString(";w=")
	b.WriteString(strconv.FormatInt(p.w, 10))
}

// limitItem returns the RateLimit field of decision d under p.
func (p *policy) limitItem(d ratesync.Decision) string {
	s := p.quoted + ";r=" + strconv.Itoa(max(d.Remaining, 0))
	if t := fieldSeconds(d); t > 0 {
		s += ";t=" + strconv.FormatInt(t, 10)
	}
	return s
}

// fieldSeconds is the t of a RateLimit item: the retry of a denial, else
// the time until the quota is full again.
func fieldSeconds(d ratesync.Decision) int64 {
	if !d.Allowed && d.RetryAfter > 0 {
		return max(ceilSeconds(d.RetryAfter), 1)
	}
	return ceilSeconds(d.ResetAfter)
}

func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return min(int64((d+time.Second-1)/time.Second), 86400*366)
}

// unitOf returns the Envoy unit that expresses w seconds: the largest of
// second, minute, hour and day that divides w, with the multiplier.
func unitOf(w int64) (unit string, multiplier int64) {
	for _, u := range []struct {
		name string
		secs int64
	}{{"DAY", 86400}, {"HOUR", 3600}, {"MINUTE", 60}} {
		if w >= u.secs && w%u.secs == 0 {
			return u.name, w / u.secs
		}
	}
	return "SECOND", w
}
