package ratesync

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
)

// Algorithm is the rate algorithm of a rule: TokenBucket or
// SlidingWindow, the driver's policy kinds (algorithm = "token_bucket" or
// "sliding_window" in a configuration file).
type Algorithm = driver.Kind

// The rate algorithms.
const (
	// TokenBucket paces requests at RatePerSecond with up to Burst at once.
	// It is the default.
	TokenBucket = driver.TokenBucket
	// SlidingWindow admits at most Limit requests in any Window.
	SlidingWindow = driver.SlidingWindow
)

// DefaultLeaseTTL is how long a concurrency lease lives when the rule sets
// no LeaseTTL (lease_seconds): a holder that dies without releasing frees its
// slot after this long. A holder that may hold longer sets a larger
// LeaseTTL, or calls Lease.Extend.
const DefaultLeaseTTL = 5 * time.Minute

// Rule is the configuration of one named limiter: the same fields as a
// [limiters.NAME] table of rate-sync.toml. A rule has a rate policy (token
// bucket or sliding window), a concurrency policy, or both; both are decided
// together and atomically.
//
// Zero fields mean "not set" or "default", as each field says.
type Rule struct {
	// Store names the store that keeps the rule's state. Required.
	Store string
	// Algorithm is TokenBucket or SlidingWindow. Zero means TokenBucket,
	// or SlidingWindow when Limit and Window are set.
	Algorithm Algorithm
	// RatePerSecond is the token bucket rate (rate_per_second).
	RatePerSecond float64
	// Burst is the token bucket capacity; zero means 1, which admits one
	// request per 1/RatePerSecond, the first at once.
	Burst int
	// Limit and Window are the sliding window quota: at most Limit
	// admissions in any Window (limit, window_seconds).
	Limit  int
	Window time.Duration
	// MaxConcurrent caps how many leases are held at once
	// (max_concurrent); zero means no concurrency limit.
	MaxConcurrent int
	// LeaseTTL is how long a concurrency lease lives unless released
	// (lease_seconds); zero means DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Timeout is the default wait budget of Acquire (timeout); zero means
	// wait until the context is done.
	Timeout time.Duration
	// OnStoreError says what a decision does when the store cannot decide
	// or its circuit breaker is open (on_store_error; rate-sync's
	// fail_closed = true is Deny, fail_closed = false is Allow). Empty
	// means Local: the rule keeps being enforced in process, so an outage
	// admits at most what each process admits on its own.
	OnStoreError FailurePolicy
	// FallbackReplicas is how many processes share the rule, for Local
	// (fallback_replicas): each process then answers from memory with
	// 1/FallbackReplicas of the rule's limits. Zero means 1.
	FallbackReplicas int
	// Shadow puts the rule in shadow mode (shadow): it decides and counts
	// as usual, but admits every request. A request it would have denied
	// is admitted with Decision.Shadow set and counted in
	// Metrics.ShadowDenials; middleware sends no denial for it. This is how
	// a team measures what a limit would do before enforcing it.
	Shadow bool
}

// FailurePolicy is what a rule does when its store cannot decide.
type FailurePolicy string

const (
	// Local decides in process, in an in-memory limiter with the rule's
	// limits divided by FallbackReplicas, and marks the decision Fallback.
	// It is the default.
	Local FailurePolicy = "local"
	// Deny returns an error matching ErrStore (fail closed).
	Deny FailurePolicy = "deny"
	// Allow admits the request (fail open, without bound) and marks the
	// decision FailedOpen.
	Allow FailurePolicy = "allow"
)

// strictness orders failure policies for composites, which apply the
// strictest of their parts': deny, then local, then allow.
func (p FailurePolicy) strictness() int {
	switch p {
	case Deny:
		return 2
	case Local:
		return 1
	}
	return 0
}

// fallbackPolicies returns the rule's policies with limits divided by
// FallbackReplicas (each at least 1), for the Local failure policy: n
// processes answering alone then admit at most about what the rule allows
// the fleet.
func (r Rule) fallbackPolicies() []driver.Policy {
	ps := r.policies()
	n := max(r.FallbackReplicas, 1)
	for i := range ps {
		p := &ps[i]
		switch p.Kind {
		case driver.TokenBucket:
			p.Rate /= float64(n)
			p.Burst = max(p.Burst/n, 1)
		case driver.SlidingWindow:
			p.Limit = max(p.Limit/n, 1)
		case driver.Concurrency:
			p.MaxConcurrent = max(p.MaxConcurrent/n, 1)
		}
	}
	return ps
}

// ruleErr builds a validation error for a rule field, named by its TOML key.
func ruleErr(key, format string, args ...any) error {
	return &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// normalize validates r and returns it with defaults filled in.
func (r Rule) normalize() (Rule, error) {
	if r.Store == "" {
		return r, ruleErr("store", "required: name the store that keeps this limiter's state")
	}
	switch {
	case r.RatePerSecond < 0 || math.IsNaN(r.RatePerSecond) || math.IsInf(r.RatePerSecond, 0):
		return r, ruleErr("rate_per_second", "must be a number > 0, got %v", r.RatePerSecond)
	case r.Burst < 0:
		return r, ruleErr("burst", "must be >= 1, got %d", r.Burst)
	case r.Limit < 0:
		return r, ruleErr("limit", "must be > 0, got %d", r.Limit)
	case r.Window < 0:
		return r, ruleErr("window_seconds", "must be > 0, got %v", r.Window.Seconds())
	case r.MaxConcurrent < 0:
		return r, ruleErr("max_concurrent", "must be > 0, got %d", r.MaxConcurrent)
	case r.LeaseTTL < 0:
		return r, ruleErr("lease_seconds", "must be > 0, got %v", r.LeaseTTL.Seconds())
	case r.Timeout < 0:
		return r, ruleErr("timeout", "must be >= 0, got %v", r.Timeout.Seconds())
	}
	switch r.OnStoreError {
	case "":
		r.OnStoreError = Local
	case Allow, Local, Deny:
	default:
		return r, ruleErr("on_store_error", "unknown policy %q: use %q, %q or %q", r.OnStoreError, Local, Deny, Allow)
	}
	switch {
	case r.FallbackReplicas < 0:
		return r, ruleErr("fallback_replicas", "must be >= 1, got %d", r.FallbackReplicas)
	case r.FallbackReplicas > 0 && r.OnStoreError != Local:
		return r, ruleErr("fallback_replicas", "fallback_replicas needs on_store_error = %q", Local)
	case r.OnStoreError == Local && r.FallbackReplicas == 0:
		r.FallbackReplicas = 1
	}
	windowSet := r.Limit != 0 || r.Window != 0
	if r.Algorithm == 0 {
		r.Algorithm = TokenBucket
		if windowSet && r.RatePerSecond == 0 {
			r.Algorithm = SlidingWindow
		}
	}
	switch r.Algorithm {
	case TokenBucket:
		if windowSet {
			return r, ruleErr("limit", "limit and window_seconds belong to algorithm %q; algorithm %q uses rate_per_second", SlidingWindow, TokenBucket)
		}
		if r.RatePerSecond == 0 && r.MaxConcurrent == 0 {
			return r, ruleErr("rate_per_second", "set rate_per_second or max_concurrent (or use algorithm %q with limit and window_seconds)", SlidingWindow)
		}
		if r.RatePerSecond == 0 && r.Burst != 0 {
			return r, ruleErr("burst", "burst needs rate_per_second")
		}
		if r.RatePerSecond > 0 && r.Burst == 0 {
			r.Burst = 1
		}
	case SlidingWindow:
		if r.RatePerSecond != 0 || r.Burst != 0 {
			return r, ruleErr("rate_per_second", "rate_per_second and burst belong to algorithm %q; algorithm %q uses limit and window_seconds", TokenBucket, SlidingWindow)
		}
		if r.Limit == 0 {
			return r, ruleErr("limit", "algorithm %q needs limit > 0", SlidingWindow)
		}
		if r.Window == 0 {
			return r, ruleErr("window_seconds", "algorithm %q needs window_seconds > 0 (limit %d per how long?)", SlidingWindow, r.Limit)
		}
	default:
		return r, ruleErr("algorithm", "unknown algorithm %q: use %q or %q", r.Algorithm, TokenBucket, SlidingWindow)
	}
	if r.MaxConcurrent == 0 && r.LeaseTTL != 0 {
		return r, ruleErr("lease_seconds", "lease_seconds needs max_concurrent")
	}
	if r.MaxConcurrent > 0 && r.LeaseTTL == 0 {
		r.LeaseTTL = DefaultLeaseTTL
	}
	// The policies' ranges are the stores' (driver.Policy.Validate): one
	// validation for the rule and for its Local fallback, whose limits are
	// divided by fallback_replicas.
	for _, p := range r.policies() {
		if err := p.Validate(); err != nil {
			return r, policyConfigErr(err, "")
		}
	}
	if r.OnStoreError == Local {
		for _, p := range r.fallbackPolicies() {
			if err := p.Validate(); err != nil {
				return r, policyConfigErr(err, "fallback_replicas")
			}
		}
	}
	return r, nil
}

// policyConfigErr turns a driver.PolicyError into a ConfigError naming the
// rule's TOML key (or key, when given).
func policyConfigErr(err error, key string) error {
	var pe *driver.PolicyError
	if !errors.As(err, &pe) {
		return err
	}
	msg := pe.Msg
	if key == "" {
		key = map[string]string{"Rate": "rate_per_second", "Burst": "burst", "Limit": "limit", "Window": "window_seconds",
			"MaxConcurrent": "max_concurrent", "LeaseTTL": "lease_seconds"}[pe.Field]
	} else {
		msg = "the local fallback's " + pe.Kind.String() + " policy (the rule's limits divided by fallback_replicas): " + msg
	}
	return ruleErr(key, "%s", msg)
}

// Validate reports whether r is a valid rule. The error is a *ConfigError
// naming the offending field by its TOML key.
func (r Rule) Validate() error {
	_, err := r.normalize()
	return err
}

// policies returns the store policies of a normalized rule: the rate
// policy first, then the concurrency policy.
func (r Rule) policies() []driver.Policy {
	var ps []driver.Policy
	switch {
	case r.Algorithm == SlidingWindow:
		ps = append(ps, driver.Policy{Kind: driver.SlidingWindow, Limit: r.Limit, Window: r.Window})
	case r.RatePerSecond > 0:
		ps = append(ps, driver.Policy{Kind: driver.TokenBucket, Rate: r.RatePerSecond, Burst: r.Burst})
	}
	if r.MaxConcurrent > 0 {
		ps = append(ps, driver.Policy{Kind: driver.Concurrency, MaxConcurrent: r.MaxConcurrent, LeaseTTL: r.LeaseTTL})
	}
	return ps
}
