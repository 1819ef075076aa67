package ratesync

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/memstore"
)

// ruleState is one configured rule as the registry holds it. Every Limiter
// for the rule (the base one and every per-key one) points at it, so they
// share its store, metrics and wait queues.
type ruleState struct {
	name     string
	key      driver.Key // the rule's own key: its escaped name
	rule     Rule       // normalized
	policies []driver.Policy
	// fallback holds the policies of the Local failure policy (limits
	// divided by FallbackReplicas); nil for other policies.
	fallback []driver.Policy
	// prep is the single policy prepared for the memory store, under the
	// rule's key name (every limiter of the rule shares it); nil for rules
	// with several policies.
	prep *memstore.Prepared
	// quick says Try may take its memory-store path: one policy, not
	// max_concurrent, and a registry without observers.
	quick   bool
	rateCap int // capacity of the rate policy; 0 without one
	hasConc bool
	store   atomic.Pointer[storeHandle]
	reg     *Registry
	base    *Limiter
	// The counters change on every decision; the padding keeps them off
	// the cache lines of the fields above, which every decision reads.
	_ [64]byte
	m metrics
	_ [64]byte
}

// Limiter applies one rule to one key. The limiter returned by
// Registry.Limiter uses the rule's own key; per-key limiters (For,
// GetOrClone, templates) share the rule and store but keep separate state.
//
// A Limiter is a few words, cheap to create per request, and safe for
// concurrent use.
type Limiter struct {
	r  *ruleState
	up *Limiter // for per-key limiters: the limiter For was called on
	id string   // and the identifier it was given
}

// skey returns the limiter's store key. A per-key limiter builds it on use:
// for one identifier without ':' or '%' that costs no allocation, which
// keeps l.For(id).Try(ctx) allocation free.
func (l *Limiter) skey() driver.Key {
	if l.up == nil {
		return l.r.key
	}
	if l.up.up == nil && !needsEscape(l.id) {
		return driver.Key{Name: l.r.key.Name, ID: l.id}
	}
	base := l.up.skey()
	id := escapeComponent(l.id)
	if base.ID != "" {
		id = base.ID + ":" + id
	}
	return driver.Key{Name: base.Name, ID: id}
}

// CallOption changes one call of Try, Acquire, Do or TryDo.
type CallOption func(*callOpts)

type callOpts struct {
	timeout time.Duration
	cost    int
}

// WithTimeout sets the wait budget of this call, instead of the rule's
// Timeout. The context's deadline still applies: the earlier one wins. Zero
// keeps the rule's timeout.
func WithTimeout(d time.Duration) CallOption {
	return func(o *callOpts) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// WithCost takes n units of the rate or window quota instead of 1 (a
// concurrency limit still takes one lease). n must not exceed the rule's
// burst or limit.
func WithCost(n int) CallOption {
	return func(o *callOpts) { o.cost = n }
}

func (l *Limiter) opts(opts []CallOption) callOpts {
	o := callOpts{timeout: l.r.rule.Timeout, cost: 1}
	if len(opts) == 0 {
		return o
	}
	return applyOpts(o, opts)
}

// applyOpts is apart from opts so that calls without options keep their
// callOpts on the stack.
func applyOpts(o callOpts, opts []CallOption) callOpts {
	for _, f := range opts {
		f(&o)
	}
	return o
}

// Name returns the rule's name.
func (l *Limiter) Name() string { return l.r.name }

// Key returns the store key this limiter decides on: the rule name and the
// identifiers, escaped and joined by ':'.
func (l *Limiter) Key() string { return l.skey().String() }

// Rule returns the limiter's rule, with defaults filled in.
func (l *Limiter) Rule() Rule { return l.r.rule }

// Metrics returns a snapshot of the rule's counters in this process.
func (l *Limiter) Metrics() Metrics { return l.r.m.snapshot() }

// For returns the limiter of the same rule for one identifier: same rule
// and store, state of its own. Chain it for a path of identifiers
// (l.For(tenant).For(user)). Identifiers may contain any character; they
// never collide with each other or with other rules. For is cheap enough
// to call per request: l.For(id).Try(ctx) makes no allocation.
func (l *Limiter) For(id string) *Limiter {
	return &Limiter{r: l.r, up: l, id: id}
}

type scratch struct {
	checks  [4]driver.Check
	results [4]driver.Result
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// attempt is the outcome of one store decision for Acquire's loop.
type attempt struct {
	d Decision
	// rateRetry is the longest RetryAfter among denied rate and window
	// checks; zero when only a concurrency check denied.
	rateRetry time.Duration
}

func (l *Limiter) checkCost(cost int) error {
	if cost < 1 {
		return fmt.Errorf("ratesync: limiter %q: cost must be >= 1, got %d", l.r.name, cost)
	}
	if l.r.rateCap > 0 && cost > l.r.rateCap {
		return fmt.Errorf("%w: limiter %q: cost %d, capacity %d", ErrCostTooHigh, l.r.name, cost, l.r.rateCap)
	}
	return nil
}

// decide makes one store decision on key (the limiter's skey, which
// callers compute once per call). Store errors, and an open circuit
// breaker, go to the rule's failure policy.
func (l *Limiter) decide(ctx context.Context, key driver.Key, cost int) (attempt, error) {
	rs := l.r
	h := rs.store.Load()
	if !h.br.allow() {
		if so := rs.reg.storeObs; so != nil {
			so(StoreCall{Store: h.name, Engine: h.engine, Op: "decide", Err: ErrCircuitOpen})
		}
		return l.storeFailure(ctx, key, cost, ErrCircuitOpen)
	}
	var start time.Time
	so := rs.reg.storeObs
	if so != nil {
		start = time.Now()
	}
	var a attempt
	var err error
	if timeout := h.timeout(); timeout > 0 {
		a, err = l.decideBounded(ctx, h, timeout, key, cost)
	} else {
		a, err = l.r.decideOn(ctx, h, rs.policies, key, cost)
	}
	if so != nil {
		so(StoreCall{Store: h.name, Engine: h.engine, Op: "decide", Duration: time.Since(start), Err: err})
	}
	if err != nil {
		// A call the caller cancelled says nothing about the store.
		if ctx.Err() == nil && h.br.failure() {
			rs.reg.logger().Warn("ratesync: store failing: circuit breaker open, rules answer by their on_store_error policy",
				"store", h.name, "engine", h.engine, "cooldown", BreakerCooldown, "error", redactErr(err))
		}
		return l.storeFailure(ctx, key, cost, err)
	}
	if h.br.success() {
		rs.reg.logger().Info("ratesync: store recovered: circuit breaker closed", "store", h.name, "engine", h.engine)
	}
	return a, nil
}

// decideBounded is decideOn bounded by timeout, the store's call timeout
// as the caller read it: the store call runs on its own goroutine, and
// when it has not answered in time the caller gets ErrCallTimeout (and the
// failure policy's answer). A late answer is not lost: a lease it granted
// is released at once, so no slot leaks; units it consumed stay consumed
// (the store counts the request even though the policy answered it, the
// safe side).
func (l *Limiter) decideBounded(ctx context.Context, h *storeHandle, timeout time.Duration, key driver.Key, cost int) (attempt, error) {
	type reply struct {
		a   attempt
		err error
	}
	done := make(chan reply, 1)
	rs := l.r // the goroutine must not keep l: per-key limiters stay on the stack
	go func() {
		a, err := rs.decideOn(context.WithoutCancel(ctx), h, rs.policies, key, cost)
		done <- reply{a, err}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-done:
		return r.a, r.err
	case <-ctx.Done():
	case <-t.C:
	}
	go func() {
		if r := <-done; r.err == nil && r.a.d.Allowed {
			r.a.d.Lease.Release(context.Background())
		}
	}()
	if err := ctx.Err(); err != nil {
		return attempt{}, err
	}
	return attempt{}, fmt.Errorf("%w after %v", ErrCallTimeout, timeout)
}

// decideOne is decideOn for a single-policy rule on the memory store,
// which decides it by value with the rule's prepared policy: no scratch
// buffers, nothing on the heap.
func (rs *ruleState) decideOne(ctx context.Context, h *storeHandle, key driver.Key, cost int) (attempt, error) {
	r, err := h.mem.DecidePrepared(ctx, rs.prep, key.ID, cost)
	if err != nil {
		return attempt{}, err
	}
	a := attempt{d: Decision{Allowed: r.Allowed, Limit: r.Limit, Remaining: r.Remaining, ResetAfter: r.ResetAfter, Limiter: rs.name}}
	switch {
	case !r.Allowed:
		a.d.RetryAfter = r.RetryAfter
		if !rs.hasConc {
			a.rateRetry = r.RetryAfter
		}
	case rs.hasConc:
		lease := &Lease{}
		lease.one[0] = leaseRef{rs: rs, h: h, key: key, id: r.Lease}
		lease.refs = lease.one[:1]
		rs.m.leaseTaken()
		a.d.Lease = lease
	default:
		a.d.Lease = noLease
	}
	return a, nil
}

// decideOn makes one decision on store h with policies.
func (rs *ruleState) decideOn(ctx context.Context, h *storeHandle, policies []driver.Policy, key driver.Key, cost int) (attempt, error) {
	n := len(policies)
	// The rule's own single policy (not the Local fallback's) on the
	// memory store: decided by value with the prepared policy.
	if h.mem != nil && n == 1 && &policies[0] == &rs.policies[0] {
		return rs.decideOne(ctx, h, key, cost)
	}
	sc := scratchPool.Get().(*scratch)
	for i := range n {
		sc.checks[i] = driver.Check{Key: key, Policy: policies[i], Cost: cost}
	}
	allowed, err := h.store.Decide(ctx, sc.checks[:n], sc.results[:n])
	var a attempt
	if err == nil {
		a.d = combine(sc.results[:n], allowed)
		a.d.Limiter = rs.name
		if allowed {
			if rs.hasConc {
				lease := &Lease{}
				lease.one[0] = leaseRef{rs: rs, h: h, key: key, id: sc.results[n-1].Lease}
				lease.refs = lease.one[:1]
				rs.m.leaseTaken()
				a.d.Lease = lease
			} else {
				a.d.Lease = noLease
			}
		} else {
			for i := range n {
				if !sc.results[i].Allowed && policies[i].Kind != driver.Concurrency {
					a.rateRetry = max(a.rateRetry, sc.results[i].RetryAfter)
				}
			}
		}
	}
	scratchPool.Put(sc) // keeps the last key and lease strings alive until reuse: harmless
	return a, err
}

// storeFailure applies the rule's failure policy to a store error: allow
// (FailedOpen), deny (an error matching ErrStore), or decide locally in the
// registry's in-memory fallback store (Fallback). A lease granted locally
// is released locally, never against the real store.
func (l *Limiter) storeFailure(ctx context.Context, key driver.Key, cost int, err error) (attempt, error) {
	if ctx.Err() != nil {
		return attempt{}, fmt.Errorf("ratesync: limiter %q: %w", l.r.name, ctx.Err())
	}
	l.r.m.errors.Add(1)
	switch l.r.rule.OnStoreError {
	case Deny:
		return attempt{d: Decision{Limiter: l.r.name}}, fmt.Errorf("%w: limiter %q: %w", ErrStore, l.r.name, err)
	case Local:
		if fb := l.r.reg.fallbackStore(); fb != nil {
			a, ferr := l.r.decideOn(ctx, fb, l.r.fallback, key, cost)
			if ferr == nil {
				a.d.Fallback = true
				return a, nil
			}
		}
	}
	return attempt{d: Decision{Allowed: true, FailedOpen: true, Limiter: l.r.name, Lease: noLease}}, nil
}

func (l *Limiter) observe(op Op, d Decision, wait time.Duration, err error) {
	if obs := l.r.reg.observer; obs != nil {
		h := l.r.store.Load()
		obs(Event{Op: op, Limiter: l.r.name, Store: h.name, Engine: h.engine, Key: l.Key(), Decision: d, Wait: wait, Err: err})
	}
}

// Try makes one attempt and returns the decision without waiting. A denied
// request is a Decision with Allowed false, not an error; an error means the
// store could not decide and the rule fails closed, or the call was invalid.
// When allowed, release d.Lease after the work.
func (l *Limiter) Try(ctx context.Context, opts ...CallOption) (Decision, error) {
	rs := l.r
	// The common case, decided here with less work than the general path
	// below and the same answer: no options, a rule with one rate or window
	// policy (rs.quick) on the memory store, a breaker that never saw a
	// failure. A store error (closed, or ctx done) consumed nothing and
	// goes to the general path, which reports it.
	if rs.quick && len(opts) == 0 {
		if h := rs.store.Load(); h.mem != nil && h.timeout() == 0 && h.br.clean() {
			id := l.id
			if l.up == nil || l.up.up != nil || needsEscape(id) {
				id = l.skey().ID
			}
			if r, err := h.mem.DecidePrepared(ctx, rs.prep, id, 1); err == nil {
				if r.Allowed {
					rs.m.acquisitions.Add(1)
					return Decision{Allowed: true, Limit: r.Limit, Remaining: r.Remaining, ResetAfter: r.ResetAfter, Limiter: rs.name, Lease: noLease}, nil
				}
				rs.m.denials.Add(1)
				return Decision{Limit: r.Limit, Remaining: r.Remaining, RetryAfter: r.RetryAfter, ResetAfter: r.ResetAfter, Limiter: rs.name}, nil
			}
		}
	}
	return l.try(ctx, opts)
}

func (l *Limiter) try(ctx context.Context, opts []CallOption) (Decision, error) {
	o := l.opts(opts)
	if err := l.checkCost(o.cost); err != nil {
		return Decision{Limiter: l.r.name}, err
	}
	a, err := l.decide(ctx, l.skey(), o.cost)
	if err == nil {
		if a.d.Allowed {
			l.r.m.admitted(0)
		} else {
			l.r.m.denials.Add(1)
		}
	}
	l.observe(OpTry, a.d, 0, err)
	return a.d, err
}

// Acquire waits until the rule admits the request and returns its lease;
// release it when the work is done (for rules without max_concurrent the
// release is a no-op, but a deferred Release costs nothing).
//
// A rate or window denial sleeps exactly the store's RetryAfter, then tries
// again; a concurrency denial waits for a release (woken in FIFO order) or
// for the earliest lease to expire. The wait budget is the rule's Timeout,
// or WithTimeout's, bounded by ctx's deadline; when the needed wait already
// passes the budget, Acquire gives up at once. Giving up returns a
// *TimeoutError, which matches ErrTimeout and context.DeadlineExceeded.
func (l *Limiter) Acquire(ctx context.Context, opts ...CallOption) (*Lease, error) {
	o := l.opts(opts)
	if err := l.checkCost(o.cost); err != nil {
		return nil, err
	}
	start := time.Now()
	deadline, hasDeadline := ctx.Deadline()
	if o.timeout > 0 {
		if own := start.Add(o.timeout); !hasDeadline || own.Before(deadline) {
			deadline, hasDeadline = own, true
		}
	}
	key := l.skey()
	var w *waiter
	var h *storeHandle
	defer func() {
		if w != nil {
			l.r.reg.queues.leave(h, key, w)
		}
	}()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for lastTry := false; ; {
		a, err := l.decide(ctx, key, o.cost)
		if err != nil {
			l.observe(OpAcquire, a.d, time.Since(start), err)
			return nil, err
		}
		now := time.Now()
		if a.d.Allowed {
			wait := now.Sub(start)
			l.r.m.admitted(wait)
			l.observe(OpAcquire, a.d, wait, nil)
			return a.d.Lease, nil
		}
		l.r.m.denials.Add(1)
		if lastTry {
			return nil, l.timedOut(a.d, start, now, 0)
		}
		var sleep time.Duration
		var wake <-chan struct{}
		if a.rateRetry > 0 {
			sleep = a.rateRetry
			if hasDeadline && now.Add(sleep).After(deadline) {
				return nil, l.timedOut(a.d, start, now, sleep)
			}
		} else {
			// Denied by the concurrency limit alone: join the wait queue, then
			// try once more so that a release between the denial and the join
			// is not missed.
			if w == nil {
				h = l.r.store.Load()
				w = l.r.reg.queues.join(h, key)
				continue
			}
			wake = w.ch
			sleep = a.d.RetryAfter // the earliest lease expiry
			if hasDeadline {
				sleep = min(sleep, deadline.Sub(now))
			}
			if sleep <= 0 {
				return nil, l.timedOut(a.d, start, now, 0)
			}
		}
		if timer == nil {
			timer = time.NewTimer(sleep)
		} else {
			timer.Reset(sleep)
		}
		select {
		case <-timer.C:
		case <-wake:
			l.r.reg.queues.consumed(w)
		case <-ctx.Done():
			now = time.Now()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, l.timedOut(a.d, start, now, 0)
			}
			err := fmt.Errorf("ratesync: limiter %q: %w", l.r.name, ctx.Err())
			l.observe(OpAcquire, a.d, now.Sub(start), err)
			return nil, err
		}
		// The budget ran out while waiting for a slot: one last try.
		lastTry = hasDeadline && !time.Now().Before(deadline) && a.rateRetry == 0
	}
}

func (l *Limiter) timedOut(d Decision, start, now time.Time, retry time.Duration) error {
	l.r.m.timeouts.Add(1)
	err := &TimeoutError{Limiter: l.r.name, Waited: now.Sub(start), RetryAfter: retry}
	l.observe(OpAcquire, d, err.Waited, err)
	return err
}

// Do acquires, runs fn, and releases the lease when fn returns or panics.
// It returns Acquire's error without running fn, else fn's error (or the
// release's, when fn succeeded).
func (l *Limiter) Do(ctx context.Context, fn func(context.Context) error, opts ...CallOption) (err error) {
	lease, err := l.Acquire(ctx, opts...)
	if err != nil {
		return err
	}
	defer func() {
		if rerr := lease.Release(ctx); rerr != nil && err == nil {
			err = rerr
		}
	}()
	return fn(ctx)
}

// TryDo makes one attempt; when admitted it runs fn and releases the lease
// when fn returns or panics. It reports whether fn ran. To wait up to a
// budget and skip the work when it runs out, use Do with WithTimeout and
// test the error with errors.Is(err, ErrTimeout).
func (l *Limiter) TryDo(ctx context.Context, fn func(context.Context) error, opts ...CallOption) (ran bool, err error) {
	d, err := l.Try(ctx, opts...)
	if err != nil || !d.Allowed {
		return false, err
	}
	defer func() {
		if rerr := d.Lease.Release(ctx); rerr != nil && err == nil {
			err = rerr
		}
	}()
	return true, fn(ctx)
}

// State reads the limiter's state without consuming anything.
func (l *Limiter) State(ctx context.Context) (State, error) {
	rs := l.r
	h := rs.store.Load()
	n := len(rs.policies)
	checks := make([]driver.Check, n)
	results := make([]driver.Result, n)
	for i := range n {
		checks[i] = driver.Check{Key: l.skey(), Policy: rs.policies[i], Cost: 1}
	}
	if err := h.store.Peek(ctx, checks, results); err != nil {
		return State{}, fmt.Errorf("ratesync: limiter %q: state: %w", rs.name, err)
	}
	now := time.Now()
	st := State{Allowed: true, Remaining: results[0].Remaining, Limit: results[0].Limit}
	var reset time.Duration
	for _, r := range results {
		if !r.Allowed {
			st.Allowed = false
			st.RetryAfter = max(st.RetryAfter, r.RetryAfter)
		}
		if r.Remaining < st.Remaining {
			st.Remaining, st.Limit = r.Remaining, r.Limit
		}
		st.CurrentUsage = max(st.CurrentUsage, r.Limit-r.Remaining)
		reset = max(reset, r.ResetAfter)
	}
	st.ResetAt = now.Add(reset)
	return st, nil
}

// Reset removes the stored state of this limiter's key (all its policies).
// Leases held by callers become no-ops to release. Metrics are kept.
func (l *Limiter) Reset(ctx context.Context) error {
	if err := l.r.store.Load().store.Reset(ctx, l.skey()); err != nil {
		return fmt.Errorf("ratesync: limiter %q: reset: %w", l.r.name, err)
	}
	return nil
}
