package ratesync

import (
	"time"

	"github.com/rate-sync/ratesync-go/driver"
)

// Decision is the answer to one attempt. Being limited is a Decision with
// Allowed false, not an error.
type Decision struct {
	// Allowed reports whether the request was admitted (and its quota
	// consumed).
	Allowed bool
	// Limit is the capacity of the most restrictive check: the burst, the
	// window limit or max_concurrent.
	Limit int
	// Remaining is the smallest quota left among the checks, after this
	// decision.
	Remaining int
	// RetryAfter is how long until a denied request could pass; zero when
	// allowed. For a denial by a concurrency limit alone it is the time until
	// the earliest lease expires (a release can free a slot sooner).
	RetryAfter time.Duration
	// ResetAfter is how long until the quota is fully restored.
	ResetAfter time.Duration
	// Limiter names the rule that decided: the one that denied, or the one
	// with the least remaining quota.
	Limiter string
	// Lease is the lease of an allowed decision. Release it when the work is
	// done; for rules without max_concurrent releasing is a no-op. Nil when
	// denied.
	Lease *Lease
	// FailedOpen reports that the store could not decide and the rule's
	// failure policy allowed the request.
	FailedOpen bool
	// Fallback reports that the store could not decide and the rule's
	// Local failure policy decided in process.
	Fallback bool
	// Concurrency reports that the binding check, whose Limit, Remaining
	// and RetryAfter the decision reports, is the concurrency limit
	// (max_concurrent) rather than the rate or window.
	Concurrency bool
	// Shadow reports that the deciding rule is in shadow mode (Rule.Shadow)
	// and would have denied the request: it was admitted anyway, without a
	// lease of its own. Limit, Remaining and RetryAfter are those of the
	// denial it would have been.
	Shadow bool
}

// combine folds per-check results (of checks of policies) into one
// decision: allowed when all are; the binding check is the denied one with
// the longest retry, else the one with the least remaining quota.
func combine(results []driver.Result, policies []driver.Policy, allowed bool) Decision {
	d := Decision{Allowed: allowed}
	if len(results) == 0 {
		return d
	}
	bind := -1
	d.Remaining = results[0].Remaining
	for i := range results {
		r := &results[i]
		d.ResetAfter = max(d.ResetAfter, r.ResetAfter)
		d.Remaining = min(d.Remaining, r.Remaining)
		if allowed {
			if bind < 0 || r.Remaining < results[bind].Remaining {
				bind = i
			}
		} else if !r.Allowed && (bind < 0 || r.RetryAfter > results[bind].RetryAfter) {
			bind = i
		}
	}
	if bind < 0 { // denied, yet every check reports allowed: trust the store
		bind = 0
	}
	d.Limit = results[bind].Limit
	d.Concurrency = policies[bind].Kind == driver.Concurrency
	if !allowed {
		d.RetryAfter = results[bind].RetryAfter
	}
	return d
}

// State is a limiter's state, read without consuming anything.
type State struct {
	// Allowed reports whether one request would be admitted now.
	Allowed bool
	// Remaining is the smallest quota left among the rule's checks.
	Remaining int
	// Limit is the capacity of the check with the least quota left.
	Limit int
	// CurrentUsage is the quota in use in that check: tokens spent, window
	// admissions, or leases held, whichever is highest.
	CurrentUsage int
	// RetryAfter is how long until one request could pass; zero when
	// Allowed.
	RetryAfter time.Duration
	// ResetAt is when the quota is fully restored (now when nothing is in
	// use).
	ResetAt time.Time
	// Concurrency reports that Remaining and Limit are the concurrency
	// limit's (max_concurrent) rather than the rate's or window's.
	Concurrency bool
}
