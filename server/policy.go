package server

import (
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/internal/ratefields"
)

// describe returns how limiter name's rule r is advertised: its rate or
// window quota alone (ratefields.Describe, without max_concurrent, which
// an RLS rule never has and the HTTP API does not advertise).
func describe(name string, r ratesync.Rule) *ratefields.Policy {
	r.MaxConcurrent = 0
	return ratefields.Describe(name, r)
}

// retrySeconds is the Retry-After of a denial: its retry in whole seconds,
// at least 1 and at most a year. The service reports a retry longer than
// a day as is (ratefields.RetrySeconds, which the middlewares send, stops
// at a day).
func retrySeconds(d time.Duration) int64 { return max(ratefields.CeilSeconds(d), 1) }

// fieldTime is the t of a RateLimit item (and X-RateLimit-Reset): the
// retry of a denial (retrySeconds), else the time until the quota is full
// again.
func fieldTime(d ratesync.Decision) int64 {
	if !d.Allowed && d.RetryAfter > 0 {
		return retrySeconds(d.RetryAfter)
	}
	return ratefields.CeilSeconds(d.ResetAfter)
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
