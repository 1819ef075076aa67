// Package httplimit is net/http middleware for ratesync limiters, in the
// standard library's shape (func(http.Handler) http.Handler), with no
// router dependency.
//
//	api, _ := reg.Get("api")
//	mux.Handle("GET /items", httplimit.New(api, httplimit.ClientIP(httplimit.FromConfig(reg)))(items))
//
// Every limited response carries the IETF RateLimit-Policy and RateLimit
// fields (draft-ietf-httpapi-ratelimit-headers-10), and optionally the
// legacy X-RateLimit-* trio. A denied request gets 429 with Retry-After
// (whole seconds, rounded up), Cache-Control: no-store and an RFC 9457
// application/problem+json body. Every field names one quota with one
// meaning: the q of RateLimit-Policy is the body's limit and
// X-RateLimit-Limit. Values come from the store's decision, except the
// retry of a full concurrency limit, which is estimated from the hold
// times the middleware observed (see docs/http.md).
//
// Token-bucket and sliding-window rules decide once; a concurrency rule
// holds its lease for the handler's duration and releases it when the
// handler returns or panics. With Wait, a request waits up to the rule's
// timeout before it is denied. Store errors follow the rule's failure
// policy: by default the limits are enforced in process; deny
// (fail_closed) answers 503.
//
// Each request counts once in the limiter's metrics: an admission (a 200),
// a denial or, with Wait, a timeout (a 429).
package httplimit

import (
	"context"
	"errors"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/internal/ratefields"
)

// Denial describes a denied request, for an OnDenied handler.
type Denial struct {
	// Decision is the store's decision (for a composite, the decision of
	// the part that denied).
	Decision ratesync.Decision
	// Policies names the violated policies, as in RateLimit-Policy.
	Policies []string
	// Limit is the violated policy's quota: its q in RateLimit-Policy.
	Limit int64
	// RetryAfter is the Retry-After sent, in whole seconds (at least 1):
	// the store's retry rounded up, or for a concurrency limit an estimate
	// from the observed hold times (see docs/http.md).
	RetryAfter int64
}

// Option configures a middleware.
type Option func(*config)

type config struct {
	wait       bool
	legacy     bool
	noHeaders  bool
	policyName string
	include    []string
	exclude    []string
	denied     func(http.ResponseWriter, *http.Request, Denial)
	failed     func(http.ResponseWriter, *http.Request, error)
	keyError   func(http.ResponseWriter, *http.Request, error)
}

// Wait makes a denied request wait (up to the rule's timeout, bounded by
// the request's context) before it is answered 429: for concurrency rules,
// until a slot frees; for rate rules, exactly the retry-after.
func Wait() Option { return func(c *config) { c.wait = true } }

// LegacyHeaders adds X-RateLimit-Limit, X-RateLimit-Remaining and
// X-RateLimit-Reset to the IETF fields.
func LegacyHeaders() Option { return func(c *config) { c.legacy = true } }

// NoHeaders leaves out the rate limit fields on admitted responses (a 429
// still carries them).
func NoHeaders() Option { return func(c *config) { c.noHeaders = true } }

// PolicyName names the policy in the headers and problem bodies (default:
// the limiter's name).
func PolicyName(name string) Option { return func(c *config) { c.policyName = name } }

// Include limits only the requests whose path matches one of the patterns;
// Exclude lets through, unlimited, the requests whose path matches one. A
// pattern ending in "/" matches the subtree ("/api/"), a pattern with * ?
// or [ is a path.Match glob ("/static/*.css"), any other matches exactly.
// Exclude wins.
func Include(patterns ...string) Option {
	return func(c *config) { c.include = append(c.include, patterns...) }
}

// Exclude: see Include.
func Exclude(patterns ...string) Option {
	return func(c *config) { c.exclude = append(c.exclude, patterns...) }
}

// OnDenied replaces the 429 response. The RateLimit fields and
// Retry-After are already set when it runs.
func OnDenied(h func(http.ResponseWriter, *http.Request, Denial)) Option {
	return func(c *config) { c.denied = h }
}

// OnError replaces the response to a store error under a fail_closed rule
// (503 by default).
func OnError(h func(http.ResponseWriter, *http.Request, error)) Option {
	return func(c *config) { c.failed = h }
}

// OnKeyError replaces the response to a request the key function cannot
// identify (400 by default).
func OnKeyError(h func(http.ResponseWriter, *http.Request, error)) Option {
	return func(c *config) { c.keyError = h }
}

func newConfig(opts []Option) *config {
	c := &config{denied: DefaultDenied, failed: DefaultError, keyError: DefaultKeyError}
	for _, o := range opts {
		o(c)
	}
	return c
}

func (c *config) applies(p string) bool {
	for _, pat := range c.exclude {
		if matchPath(pat, p) {
			return false
		}
	}
	if len(c.include) == 0 {
		return true
	}
	for _, pat := range c.include {
		if matchPath(pat, p) {
			return true
		}
	}
	return false
}

func matchPath(pattern, p string) bool {
	switch {
	case strings.ContainsAny(pattern, "*?["):
		ok, _ := path.Match(pattern, p)
		return ok
	case strings.HasSuffix(pattern, "/"):
		return strings.HasPrefix(p, pattern) || p+"/" == pattern
	}
	return p == pattern
}

// New returns middleware that limits requests with l, per key.
func New(l *ratesync.Limiter, key KeyFunc, opts ...Option) func(http.Handler) http.Handler {
	c := newConfig(opts)
	name := c.policyName
	if name == "" {
		name = l.Name()
	}
	pols := ratefields.NewCache(name)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !c.applies(r.URL.Path) {
				next.ServeHTTP(w, r)
				return
			}
			id, err := key(r)
			if err != nil {
				c.keyError(w, r, err)
				return
			}
			kl := l.For(id)
			// The rule in force for the key: a reload or the key's override
			// may have changed it since New.
			rule := kl.Rule()
			pol := pols.Of(rule)
			policyHeader := pol.Field
			var d ratesync.Decision
			if c.wait {
				d, err = acquire(r.Context(), kl)
			} else {
				d, err = kl.Try(r.Context())
			}
			if err != nil {
				c.failed(w, r, err)
				return
			}
			h := w.Header()
			if rule.Shadow { // measured, not enforced: nothing to tell the client
				policyHeader = nil
			}
			if !d.Allowed {
				q, retry := pol.Binding(d.Concurrency), pol.RetryAfter(d)
				writeFields(h, policyHeader, q, d, retry, c.legacy)
				deny(w, r, c, d, retry, []*ratefields.Quota{q})
				return
			}
			if !c.noHeaders && !d.FailedOpen && policyHeader != nil {
				writeFields(h, policyHeader, pol.Binding(d.Concurrency), d, 0, c.legacy)
			}
			if d.Lease.Held() {
				start := time.Now()
				defer func() {
					pol.ObserveHold(time.Since(start))
					d.Lease.Release(context.WithoutCancel(r.Context()))
				}()
			}
			next.ServeHTTP(w, r)
		})
	}
}

// acquire waits for l like Limiter.Acquire, counted as one request (an
// admission or a timeout), and returns the decision that admitted it with
// the state after the admission, or the denial when the wait budget ran
// out. Without a budget (no rule timeout, no request deadline) it makes
// one attempt.
func acquire(ctx context.Context, l *ratesync.Limiter) (ratesync.Decision, error) {
	rule := l.Rule()
	if rule.Timeout <= 0 && !hasDeadline(ctx) {
		return l.Try(ctx)
	}
	lease, err := l.Acquire(ctx)
	if err != nil {
		var te *ratesync.TimeoutError
		if !errors.As(err, &te) {
			return ratesync.Decision{Limiter: l.Name()}, err
		}
		// Denied by the quota that ran out: none of it is left. A timeout
		// with no rate retry was a wait for a concurrency slot.
		return ratesync.Decision{Limiter: l.Name(), RetryAfter: te.RetryAfter, Concurrency: te.RetryAfter == 0 && rule.MaxConcurrent > 0}, nil
	}
	d := ratesync.Decision{Allowed: true, Limiter: l.Name(), Lease: lease, FailedOpen: lease.FailedOpen(), Fallback: lease.Fallback()}
	if !d.FailedOpen {
		if st, err := l.State(context.WithoutCancel(ctx)); err == nil {
			d.Limit, d.Remaining, d.Concurrency = st.Limit, st.Remaining, st.Concurrency
			d.ResetAfter = max(time.Until(st.ResetAt), 0)
		}
	}
	return d, nil
}

func hasDeadline(ctx context.Context) bool {
	_, ok := ctx.Deadline()
	return ok
}

// deny sets Retry-After and answers with the denied handler.
func deny(w http.ResponseWriter, r *http.Request, c *config, d ratesync.Decision, retry time.Duration, violated []*ratefields.Quota) {
	secs := ratefields.RetrySeconds(retry)
	h := w.Header()
	h.Set("Retry-After", itoa(secs))
	h.Set("Cache-Control", "no-store")
	names := make([]string, len(violated))
	for i, q := range violated {
		names[i] = q.Name
	}
	c.denied(w, r, Denial{Decision: d, Policies: names, Limit: violated[0].Limit, RetryAfter: secs})
}
