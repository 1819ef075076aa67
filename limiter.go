package ratesync

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
)

// ruleState is one configured rule as the registry holds it. Every Limiter
// for the rule (the base one and every per-key one) points at it, so they
// share its store, metrics and wait queues.
type ruleState struct {
	name     string
	key      driver.Key // the rule's own key: its escaped name
	rule     Rule       // normalized
	policies []driver.Policy
	// fallback holds the policies of the Local failure policy: the limits
	// divided by FallbackReplicas (1 for rules of other policies, whose
	// limits a composite's local fallback enforces as they are).
	fallback []driver.Policy
	// quick says Try may take the in-process fast path when the store
	// prepared the rule: one policy, not max_concurrent, and a registry
	// without observers.
	quick   bool
	rateCap int // capacity of the rate policy; 0 without one
	hasConc bool
	bind    atomic.Pointer[binding]
	reg     *Registry
	base    *Limiter
	// m is the rule's counters, shared by the rules that replace it (a
	// reload) and by its overrides: a name's series go on across reloads.
	m *metrics
	// overrides are the rules of particular identifiers (the identifier,
	// or a path of them joined by ':'), nil without any. They share the
	// rule's name, key, store and counters.
	overrides map[string]*ruleState
	// fromConfig: the rule came from a configuration (ApplyConfig,
	// Reload), which a later Reload may remove.
	fromConfig bool
	// succ is the rule that replaced this one (ConfigureLimiter, a
	// reload), or removedRule once the rule was removed: limiters obtained
	// before follow it.
	succ atomic.Pointer[ruleState]
}

// removedRule is the successor of a rule a reload removed.
var removedRule = &ruleState{}

// latest returns the last rule of rs's name: rs, or the last of its
// successors, and whether a reload removed it since.
func (rs *ruleState) latest() (last *ruleState, removed bool) {
	for n := rs.succ.Load(); n != nil; n = rs.succ.Load() {
		if n == removedRule {
			return rs, true
		}
		rs = n
	}
	return rs, false
}

// current returns l, or a limiter for the same identifiers bound to the
// rule in force: the rule that replaced l's (a reload), or an override
// of l's identifiers. It fails with ErrLimiterNotFound once the rule was
// removed, so that a limiter obtained before never fails open.
func (l *Limiter) current() (*Limiter, error) {
	rs := l.r
	if rs.succ.Load() != nil {
		var removed bool
		if rs, removed = rs.latest(); removed {
			return nil, notFound(ErrLimiterNotFound, rs.name)
		}
	}
	if rs.overrides != nil && l.up != nil {
		if o := rs.overrides[l.idPath()]; o != nil {
			rs = o
		}
	}
	if rs == l.r {
		return l, nil
	}
	return &Limiter{r: rs, up: l.up, id: l.id}, nil
}

// idPath returns the limiter's identifiers joined by ':', as overrides
// name them.
func (l *Limiter) idPath() string {
	if l.up.up == nil {
		return l.id
	}
	return l.up.idPath() + ":" + l.id
}

// binding is a rule's store, with the store's fast path for the rule's
// single policy (driver.Preparer), nil on other stores and for rules with
// several policies. Replacing the store replaces the binding.
type binding struct {
	h    *storeHandle
	prep driver.Prepared
}

func (rs *ruleState) handle() *storeHandle { return rs.binding().h }

// binding returns the rule's binding, moved to the store that replaced
// its store when there is one: limiters obtained before a reload follow
// their store's replacements too.
func (rs *ruleState) binding() *binding {
	b := rs.bind.Load()
	if b.h.next.Load() == nil {
		return b
	}
	h := b.h
	for n := h.next.Load(); n != nil; n = h.next.Load() {
		h = n
	}
	nb := rs.bindTo(h)
	if rs.bind.CompareAndSwap(b, nb) {
		return nb
	}
	return rs.bind.Load()
}

// Limiter applies one rule to one key. The limiter returned by
// Registry.Get uses the rule's own key; per-key limiters (For,
// Registry.For, templates) share the rule and store but keep separate state.
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
	if l.up.up == nil {
		if !needsEscape(l.id) {
			return driver.Key{Name: l.r.key.Name, ID: l.id}
		}
		return driver.Key{Name: l.r.key.Name, ID: escapeComponent(l.id)}
	}
	// A path of identifiers: collect them once, then write them in order
	// (building each prefix's key would cost the square of the length).
	n, size := 0, 0
	for x := l; x.up != nil; x = x.up {
		n++
		size += len(x.id) + 1
	}
	ids := make([]string, n)
	for x := l; x.up != nil; x = x.up {
		n--
		ids[n] = x.id
	}
	var b strings.Builder
	b.Grow(size)
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(':')
		}
		appendComponent(&b, id)
	}
	return driver.Key{Name: l.r.key.Name, ID: b.String()}
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

// Rule returns the rule in force for the limiter, with defaults filled
// in: its identifiers' override when the configuration has one. After the
// rule was removed by a reload, it returns the last rule it had.
func (l *Limiter) Rule() Rule {
	if c, err := l.current(); err == nil {
		return c.r.rule
	}
	last, _ := l.r.latest()
	return last.rule
}

// Metrics returns a snapshot of the rule's counters in this process.
func (l *Limiter) Metrics() Metrics { return l.r.m.snapshot() }

// For returns the limiter of the same rule for one identifier: same rule
// and store, state of its own. Chain it for a path of identifiers
// (l.For(tenant).For(user)). Identifiers may contain any bytes, the empty
// string included; every distinct path of identifiers has its own state,
// apart from every other path and rule. For is cheap enough to call per
// request: l.For(id).Try(ctx) makes no allocation.
func (l *Limiter) For(id string) *Limiter {
	return &Limiter{r: l.r, up: l, id: id}
}

func (l *Limiter) checkCost(cost int) error {
	if err := driver.ValidateCost(cost); err != nil {
		return fmt.Errorf("ratesync: limiter %q: %w", l.r.name, err)
	}
	if l.r.rateCap > 0 && cost > l.r.rateCap {
		return fmt.Errorf("%w: limiter %q: cost %d, capacity %d", ErrCostTooHigh, l.r.name, cost, l.r.rateCap)
	}
	return nil
}

// part is one limiter of a decision: its rule and its store key. A
// limiter's decision has one part; a composite's has one per limiter.
type part struct {
	rs  *ruleState
	key driver.Key
}

// decision is the outcome of one decision over parts, before it becomes a
// Decision or a CompositeResult. Call done once its results are read.
type decision struct {
	allowed bool
	h       *storeHandle // the store that decided: the rule's, or the fallback
	results []driver.Result
	// failedOpen: the store could not decide and the Allow policy
	// admitted; fallback: the Local policy decided in process.
	failedOpen, fallback bool
	// answered is when the store's answer came back, the time waits are
	// measured from.
	answered time.Time
	op       *pooledOp
}

// done returns the decision's buffers to their pool.
func (d *decision) done() {
	if d.op != nil {
		clear(d.op.cbuf[:])
		clear(d.op.rbuf[:])
		opPool.Put(d.op)
		d.op = nil
	}
}

var opPool = sync.Pool{New: func() any { return new(pooledOp) }}

// pooledOp is a store op with room for the checks of most decisions. An
// op whose store call may still run (the caller left it) is never put
// back.
type pooledOp struct {
	storeOp
	cbuf [4]driver.Check
	rbuf [4]driver.Result
}

func getOp(kind opKind, n int) *pooledOp {
	o := opPool.Get().(*pooledOp)
	o.storeOp = storeOp{kind: kind}
	if n <= len(o.cbuf) {
		o.checks, o.results = o.cbuf[:n], o.rbuf[:n]
	} else {
		o.checks, o.results = make([]driver.Check, n), make([]driver.Result, n)
	}
	return o
}

// checkCount returns the number of checks of a decision over parts.
func checkCount(parts []part) int {
	n := 0
	for _, p := range parts {
		n += len(p.rs.policies)
	}
	return n
}

// decideParts makes one decision over parts on store h, all or nothing,
// each part taking cost units. Store errors go to the strictest failure
// policy of the parts: Deny returns an error matching ErrStore, Local
// decides the same checks with the fallback policies in the registry's
// in-process fallback store, Allow admits. The results are the parts'
// checks one after the other, in policy order.
func (reg *Registry) decideParts(ctx context.Context, h *storeHandle, parts []part, cost int) (decision, error) {
	if h = h.enter(); h == nil {
		return decision{}, ErrClosed
	}
	defer h.exit()
	o := getOp(opDecide, checkCount(parts))
	i := 0
	for _, p := range parts {
		for _, pol := range p.rs.policies {
			o.checks[i] = driver.Check{Key: p.key, Policy: pol, Cost: cost}
			i++
		}
	}
	err := h.call(ctx, &o.storeOp)
	if err == nil {
		countLeases(h, &o.storeOp)
		return decision{allowed: o.ok, h: h, results: o.results, answered: time.Now(), op: o}, nil
	}
	// o may still be in use by a store call the caller left: drop it.
	if errors.Is(err, ErrClosed) {
		return decision{}, err
	}
	if ctx.Err() != nil {
		return decision{}, ctx.Err()
	}
	policy := Allow
	for _, p := range parts {
		p.rs.m.errors.Add(1)
		// A shadow rule never denies, an outage included: its failure
		// policy does not count.
		if !p.rs.rule.Shadow && p.rs.rule.OnStoreError.strictness() > policy.strictness() {
			policy = p.rs.rule.OnStoreError
		}
	}
	if policy == Deny {
		return decision{}, fmt.Errorf("%w: %w", ErrStore, err)
	}
	for _, p := range parts {
		p.rs.m.fallbacks.Add(1)
	}
	if policy == Allow {
		return decision{allowed: true, h: h, failedOpen: true, answered: time.Now()}, nil
	}
	fb := reg.fallbackStore()
	if fb == nil {
		return decision{}, ErrClosed
	}
	fo := getOp(opDecide, len(o.checks))
	i = 0
	for _, p := range parts {
		for _, pol := range p.rs.fallback {
			fo.checks[i] = driver.Check{Key: p.key, Policy: pol, Cost: cost}
			i++
		}
	}
	dec := decision{h: fb, results: fo.results, fallback: true, op: fo}
	if ferr := fb.call(ctx, &fo.storeOp); ferr != nil {
		dec.done()
		return decision{}, fmt.Errorf("%w: %w (and the local fallback failed: %w)", ErrStore, err, ferr)
	}
	for i := range fo.results {
		if fo.results[i].RetryAfter == never {
			c := fo.checks[i]
			dec.done()
			return decision{}, fmt.Errorf("%w: the store failed (%w), and cost %d exceeds the local fallback's capacity %d (the rule's %s / fallback_replicas)",
				ErrCostTooHigh, err, cost, c.Policy.Capacity(), capacityKey(c.Policy.Kind))
		}
	}
	countLeases(fb, &fo.storeOp)
	dec.allowed, dec.answered = fo.ok, time.Now()
	return dec, nil
}

// countLeases counts the leases o's store granted, before the decision
// ends (storeHandle.exit): a replaced store is closed only once they are
// released.
func countLeases(h *storeHandle, o *storeOp) {
	if !o.ok {
		return
	}
	for i := range o.results {
		if o.results[i].Lease != "" {
			h.leases.Add(1)
			h.noteTTL(o.checks[i].Policy.LeaseTTL)
		}
	}
}

// never is the RetryAfter of a check that can never pass.
const never = time.Duration(math.MaxInt64)

func capacityKey(k driver.Kind) string {
	switch k {
	case driver.SlidingWindow:
		return "limit"
	case driver.Concurrency:
		return "max_concurrent"
	}
	return "burst"
}

// attempt is one decision of a limiter, for Try and Acquire.
type attempt struct {
	d Decision
	// rateRetry is the longest RetryAfter among denied rate and window
	// checks; zero when only a concurrency check denied.
	rateRetry time.Duration
	answered  time.Time
}

// decide makes one decision of the limiter's rule on key (the limiter's
// skey, which callers compute once per call).
func (l *Limiter) decide(ctx context.Context, key driver.Key, cost int) (attempt, error) {
	rs := l.r
	parts := [1]part{{rs, key}}
	dec, err := rs.reg.decideParts(ctx, rs.handle(), parts[:], cost)
	if err != nil {
		if !errors.Is(err, ErrClosed) {
			err = fmt.Errorf("ratesync: limiter %q: %w", rs.name, err)
		}
		return attempt{d: Decision{Limiter: rs.name}}, err
	}
	defer dec.done()
	a := attempt{answered: dec.answered}
	if dec.failedOpen {
		a.d = Decision{Allowed: true, FailedOpen: true, Limiter: rs.name, Lease: failedOpenLease}
		return a, nil
	}
	a.d = combine(dec.results, rs.policies, dec.allowed)
	a.d.Limiter = rs.name
	a.d.Fallback = dec.fallback
	switch {
	case dec.allowed:
		a.d.Lease = leaseOf(dec, parts[:])
	case rs.rule.Shadow:
		// Denied, but the rule only measures: admit, holding nothing.
		a.d.Allowed, a.d.Shadow, a.d.Lease = true, true, noLease
		if dec.fallback {
			a.d.Lease = fallbackLease
		}
	default:
		for i, r := range dec.results {
			if !r.Allowed && rs.policies[i].Kind != driver.Concurrency {
				a.rateRetry = max(a.rateRetry, r.RetryAfter)
			}
		}
	}
	return a, nil
}

// leaseOf returns the lease of an allowed decision over parts: the
// concurrency slots it took, or noLease.
func leaseOf(dec decision, parts []part) *Lease {
	var lease *Lease
	i := 0
	for _, p := range parts {
		for range p.rs.policies {
			if id := dec.results[i].Lease; id != "" {
				if lease == nil {
					lease = &Lease{fallback: dec.fallback}
					lease.refs = lease.one[:0]
				}
				lease.refs = append(lease.refs, leaseRef{rs: p.rs, h: dec.h, key: p.key, id: id})
				p.rs.m.leaseTaken()
			}
			i++
		}
	}
	if lease == nil {
		if dec.fallback {
			return fallbackLease
		}
		return noLease
	}
	return lease
}

func (l *Limiter) observe(op Op, d Decision, wait time.Duration, err error) {
	if obs := l.r.reg.observer; obs != nil {
		h := l.r.handle()
		obs(Event{Op: op, Limiter: l.r.name, Store: h.name, Engine: h.engine, Key: l.Key(), Decision: d, Wait: wait, Err: err})
	}
}

// Try makes one attempt and returns the decision without waiting. A denied
// request is a Decision with Allowed false, not an error; an error means the
// store could not decide and the rule fails closed, or the call was invalid.
// When allowed, release d.Lease after the work.
func (l *Limiter) Try(ctx context.Context, opts ...CallOption) (Decision, error) {
	cur, err := l.current()
	if err != nil {
		return Decision{Limiter: l.r.name}, err
	}
	l = cur
	rs := l.r
	// The in-process fast path: no options, a rule with one rate or window
	// policy (rs.quick) on an in-process store that prepared it, no
	// observer. It gives the general path's answers (TestTryPathsAgree);
	// a store error (closed, or ctx done) consumed nothing and goes to the
	// general path, which reports it.
	if rs.quick && len(opts) == 0 && !rs.reg.closed.Load() {
		if prep := rs.binding().prep; prep != nil {
			id := l.id
			if l.up == nil || l.up.up != nil || needsEscape(id) {
				id = l.skey().ID
			}
			r, err := prep.Decide(ctx, id, 1)
			if err == nil {
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
		switch {
		case a.d.Shadow:
			l.r.m.shadowDenied()
		case a.d.Allowed:
			l.r.m.admitted()
		default:
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
// A rate or window denial sleeps exactly the store's RetryAfter, counted
// from the store's answer, then tries again. A concurrency denial waits in
// this process's queue for the key, first come first served: a release in
// this process or a release notification from the store wakes the first
// waiter, which tries again, and a waiter that is first also tries again
// after a bounded time (a second at most, less for short lease TTLs) even
// when no notification comes, so a lost notification never holds a free
// slot. The wait budget is the rule's Timeout, or WithTimeout's, bounded
// by ctx's deadline; when the needed wait already passes the budget,
// Acquire gives up at once. Giving up returns a *TimeoutError, which
// matches ErrTimeout and context.DeadlineExceeded. A request that can
// never be admitted returns an error at once.
//
// When the store cannot decide, the rule's failure policy answers: the
// lease then reports FailedOpen (Allow) or Fallback (Local).
func (l *Limiter) Acquire(ctx context.Context, opts ...CallOption) (*Lease, error) {
	orig := l
	cur, err := l.current()
	if err != nil {
		return nil, err
	}
	l = cur
	o := l.opts(opts)
	if err := l.checkCost(o.cost); err != nil {
		return nil, err
	}
	start := time.Now()
	deadline, hasDeadline := ctx.Deadline()
	if o.timeout > 0 {
		if own := start.Add(o.timeout); !hasDeadline || own.Before(deadline) {
			deadline, hasDeadline = own, true
			// The budget bounds the calls to a network store too, not only
			// the waits between them: a silent store does not hold Acquire
			// for its call timeout. (An in-process store answers at once.)
			if !l.r.handle().inproc {
				var cancel context.CancelFunc
				ctx, cancel = context.WithDeadline(ctx, deadline)
				defer cancel()
			}
		}
	}
	rs := l.r
	key := l.skey()
	var w *waiter
	waiting := false // counted in the Waiting gauge
	wait := func() {
		if !waiting {
			waiting = true
			rs.m.waiting.Add(1)
		}
	}
	defer func() {
		if w != nil {
			rs.reg.queues.leave(w)
		}
		if waiting {
			rs.m.waiting.Add(-1)
		}
	}()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	// Waiters of this process are served in arrival order: when others
	// already wait for this key's slots, join the queue behind them first
	// (a shadow rule makes no one wait).
	if q := &rs.reg.queues; rs.hasConc && !rs.rule.Shadow && q.busy(rs.handle(), key) {
		w = q.join(rs.handle(), key)
		wait()
		if !q.first(w) {
			if err := l.waitTurn(ctx, w, &timer, start, deadline, hasDeadline); err != nil {
				return nil, err
			}
		}
	}
	for {
		// A reload may have replaced or removed the rule while this call
		// waited: decide by the rule in force, in its queue.
		if orig.r.succ.Load() != nil {
			cur, err := orig.current()
			if err != nil {
				return nil, err
			}
			if cur.r != rs {
				if w != nil {
					rs.reg.queues.leave(w)
					w = nil
				}
				l, rs = cur, cur.r
			}
		}
		a, err := l.decide(ctx, key, o.cost)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
				return nil, l.timedOut(a.d, start, time.Now(), 0)
			}
			l.observe(OpAcquire, a.d, time.Since(start), err)
			return nil, err
		}
		if a.d.Shadow { // a shadow rule never makes anyone wait
			rs.m.shadowDenied()
			l.observe(OpAcquire, a.d, a.answered.Sub(start), nil)
			return a.d.Lease, nil
		}
		if a.d.Allowed {
			wait := a.answered.Sub(start)
			rs.m.acquired(wait)
			if w != nil {
				rs.reg.queues.admitted(w)
			}
			l.observe(OpAcquire, a.d, wait, nil)
			return a.d.Lease, nil
		}
		if a.rateRetry > 0 {
			wake := a.answered.Add(a.rateRetry)
			if hasDeadline && wake.After(deadline) {
				return nil, l.timedOut(a.d, start, time.Now(), a.rateRetry)
			}
			wait()
			if err := sleepUntil(ctx, rs.reg.done, &timer, wake); err != nil {
				if err == ErrClosed {
					return nil, err
				}
				return nil, l.gaveUp(a.d, start, err)
			}
			continue
		}
		// Denied by the concurrency limit alone: wait for a slot in the
		// queue. A first denial joins, then tries once more, so that a
		// release between the denial and the join is not missed.
		if w == nil {
			w = rs.reg.queues.join(rs.handle(), key)
			wait()
			continue
		}
		w.retryAfter = a.d.RetryAfter
		if err := l.waitTurn(ctx, w, &timer, start, deadline, hasDeadline); err != nil {
			return nil, err
		}
	}
}

// waitTurn waits until w is woken by a release, or until it is first in
// its queue and its re-check time comes (the earliest lease expiry, or the
// bounded re-check, whichever is sooner), or until the budget or ctx ends.
func (l *Limiter) waitTurn(ctx context.Context, w *waiter, timer **time.Timer, start, deadline time.Time, hasDeadline bool) error {
	q := &l.r.reg.queues
	for {
		now := time.Now()
		sleep := recheckAfter(l.r.rule.LeaseTTL)
		if w.retryAfter > 0 {
			sleep = min(sleep, w.retryAfter)
		}
		if hasDeadline {
			left := deadline.Sub(now)
			if left <= 0 {
				return l.timedOut(Decision{Limiter: l.r.name}, start, now, 0)
			}
			sleep = min(sleep, left)
		}
		if *timer == nil {
			*timer = time.NewTimer(sleep)
		} else {
			(*timer).Reset(sleep)
		}
		select {
		case <-w.ch:
			q.consumed(w)
			return nil
		case <-l.r.reg.done:
			return ErrClosed
		case <-(*timer).C:
			if hasDeadline && !time.Now().Before(deadline) {
				return nil // one last try at the end of the budget
			}
			if q.first(w) {
				return nil
			}
		case <-ctx.Done():
			return l.gaveUp(Decision{Limiter: l.r.name}, start, ctx.Err())
		}
	}
}

// sleepUntil sleeps until t, or returns ctx's error, or ErrClosed when
// closed is closed.
func sleepUntil(ctx context.Context, closed <-chan struct{}, timer **time.Timer, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	if *timer == nil {
		*timer = time.NewTimer(d)
	} else {
		(*timer).Reset(d)
	}
	select {
	case <-(*timer).C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-closed:
		return ErrClosed
	}
}

func (l *Limiter) gaveUp(d Decision, start time.Time, err error) error {
	now := time.Now()
	if errors.Is(err, context.DeadlineExceeded) {
		return l.timedOut(d, start, now, 0)
	}
	err = fmt.Errorf("ratesync: limiter %q: %w", l.r.name, err)
	l.observe(OpAcquire, d, now.Sub(start), err)
	return err
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
	cur, err := l.current()
	if err != nil {
		return State{}, err
	}
	l = cur
	rs := l.r
	n := len(rs.policies)
	o := getOp(opPeek, n)
	key := l.skey()
	for i := range n {
		o.checks[i] = driver.Check{Key: key, Policy: rs.policies[i], Cost: 1}
	}
	h := rs.handle().enter() // counted: a reload does not close the store under the call
	if h == nil {
		return State{}, ErrClosed
	}
	err = h.call(ctx, &o.storeOp)
	h.exit()
	if err != nil {
		return State{}, fmt.Errorf("ratesync: limiter %q: state: %w", rs.name, err)
	}
	dec := decision{op: o}
	defer dec.done()
	now := time.Now()
	st := State{Allowed: true, Remaining: o.results[0].Remaining, Limit: o.results[0].Limit, Concurrency: rs.policies[0].Kind == driver.Concurrency}
	var reset time.Duration
	for i, r := range o.results {
		if !r.Allowed {
			st.Allowed = false
			st.RetryAfter = max(st.RetryAfter, r.RetryAfter)
		}
		if r.Remaining < st.Remaining {
			st.Remaining, st.Limit, st.Concurrency = r.Remaining, r.Limit, rs.policies[i].Kind == driver.Concurrency
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
	cur, err := l.current()
	if err != nil {
		return err
	}
	l = cur
	o := &storeOp{kind: opReset, key: l.skey()}
	h := l.r.handle().enter()
	if h == nil {
		return ErrClosed
	}
	defer h.exit()
	if err := h.call(ctx, o); err != nil {
		return fmt.Errorf("ratesync: limiter %q: reset: %w", l.r.name, err)
	}
	l.r.reg.queues.notify(h, o.key) // the key's slots are free
	return nil
}
