package ratesync

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
)

// The pipeline: every call into a store (decide, peek, release, extend,
// reset) goes through storeHandle.call, which applies in one place the
// registry's closed state, the caller's context, the store's call timeout,
// its circuit breaker and the store observer. Decisions then go through
// the rule's failure policy (Limiter.decide). Nothing else calls a store,
// except the in-process fast path of Limiter.Try, which gives the same
// answers for what it handles (an in-process store has no call timeout and
// no breaker, and its errors go to the general path).

// storeHandle is one configured store.
type storeHandle struct {
	name    string
	engine  string
	store   driver.Store
	owned   bool              // opened by the registry, so closed by it
	options map[string]string // for listing, secrets redacted
	cfg     *StoreConfig      // the configuration that opened it; nil for stores added in code
	unsub   func()
	reg     *Registry
	// inproc: the store decides in process (driver.InProcess): no call
	// timeout, no breaker, no goroutine per call.
	inproc bool
	// prep: the store's fast path for lone checks (driver.Preparer).
	prep driver.Preparer
	// async: the store sends decisions from goroutines of its own
	// (driver.AsyncDecider).
	async driver.AsyncDecider
	br    breaker
	// callTimeout bounds a call's wait for the store, in ns; 0 is no
	// bound.
	callTimeout atomic.Int64
	// leases counts the leases this store granted that are not released
	// yet, and inflight the decisions on it (and the store calls of callers
	// that left); a replaced store is closed when both reach zero (see
	// retire). closedMark in inflight says it was: decisions go to next,
	// the store that replaced it.
	leases    atomic.Int64
	maxTTL    atomic.Int64 // the longest TTL of a lease it granted or extended, ns: how long a retired store stays open
	inflight  atomic.Int64
	next      atomic.Pointer[storeHandle]
	retired   atomic.Bool
	closeOnce sync.Once
	lastErr   atomic.Pointer[error] // the last unavailable answer, for the log
	// stats counts the calls of each kind (stores not in process only).
	stats [opResetAll + 1]callStats
	// work hands calls to idle workers; quit ends them (see dispatch).
	work chan *task
	quit chan struct{}
	// tasks pools the store's tasks with their reply channel. The pool is
	// the store's, not the process's: a channel stays with the goroutines
	// that made it (testing/synctest bubbles refuse any other).
	tasks sync.Pool
}

// callStats counts one kind of store call: calls, failed calls (those the
// open breaker skipped included), and the latency of the calls made.
type callStats struct {
	count, errors atomic.Int64
	latency       histogram
}

func (h *storeHandle) initStats() {
	for i := range h.stats {
		h.stats[i].latency.init(storeBounds)
	}
}

func (h *storeHandle) record(k opKind, d time.Duration, err error, made bool) {
	s := &h.stats[k]
	s.count.Add(1)
	if err != nil {
		s.errors.Add(1)
	}
	if made {
		s.latency.observe(d)
	}
}

// calls returns the call counters of every kind called so far.
func (h *storeHandle) calls() []StoreCalls {
	var out []StoreCalls
	for k := range h.stats {
		s := &h.stats[k]
		if n := s.count.Load(); n > 0 {
			out = append(out, StoreCalls{Op: opKind(k).String(), Count: n, Errors: s.errors.Load(), Latency: s.latency.snapshot(0)})
		}
	}
	return out
}

func (h *storeHandle) lastError() string {
	if e := h.lastErr.Load(); e != nil {
		return redactErr(*e)
	}
	return ""
}

func (h *storeHandle) timeout() time.Duration { return time.Duration(h.callTimeout.Load()) }

// opKind is a store operation.
type opKind uint8

const (
	opDecide opKind = iota
	opPeek
	opRelease
	opExtend
	opReset
	opResetAll
)

func (k opKind) String() string {
	return [...]string{"decide", "peek", "release", "extend", "reset", "reset_all"}[k]
}

// storeOp is one store call with its arguments and results. Once a call
// runs on a goroutine of its own, the op belongs to that goroutine until it
// answers: a caller that gave up must not reuse it.
type storeOp struct {
	kind    opKind
	checks  []driver.Check
	results []driver.Result
	key     driver.Key
	lease   string
	ttl     time.Duration
	ok      bool // decide: allowed; extend: the lease was held
}

func (o *storeOp) run(ctx context.Context, s driver.Store) (err error) {
	switch o.kind {
	case opDecide:
		o.ok, err = s.Decide(ctx, o.checks, o.results)
	case opPeek:
		err = s.Peek(ctx, o.checks, o.results)
	case opRelease:
		err = s.Release(ctx, o.key, o.lease)
	case opExtend:
		ext, ok := s.(driver.Extender)
		if !ok {
			return fmt.Errorf("%w: store cannot extend leases", driver.ErrBadRequest)
		}
		o.ok, err = ext.Extend(ctx, o.key, o.lease, o.ttl)
	case opReset:
		err = s.Reset(ctx, o.key)
	case opResetAll:
		err = s.ResetAll(ctx)
	}
	return err
}

// abandon cleans up after a decision whose caller gave up before the
// store answered: the leases it granted are released at once, so no slot
// leaks; the units it consumed stay consumed (the safe side).
func (o *storeOp) abandon(h *storeHandle) {
	if o.kind != opDecide || !o.ok {
		return
	}
	for i := range o.checks {
		if id := o.results[i].Lease; id != "" {
			rel := &storeOp{kind: opRelease, key: o.checks[i].Key, lease: id}
			if h.releaseAbandoned(rel) == nil {
				h.reg.queues.notify(h, rel.key) // a waiter may take the slot
			}
		}
	}
}

// releaseAbandoned releases a lease granted to a caller that left. It
// calls the store past the breaker, which the late answer may just have
// opened and would refuse the release (the slot would then stay taken
// until its TTL), with a few tries over about a second, each bounded by
// the call timeout.
func (h *storeHandle) releaseAbandoned(rel *storeOp) error {
	timeout := h.timeout()
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	backoff := 50 * time.Millisecond
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := rel.run(ctx, h.store)
		cancel()
		if err == nil || !driver.IsUnavailable(err) || try == 4 {
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-h.quit:
			t.Stop()
			return err
		}
		backoff *= 2
	}
}

// call runs o on the store. It returns by the earliest of the caller's
// context and the store's call timeout, whatever the store does:
//
//   - the registry is closed: ErrClosed, without calling the store;
//   - the breaker is open: ErrCircuitOpen (unavailable), without calling;
//   - in-process stores are called on the caller's goroutine;
//   - network stores are called on one of the store's workers (see
//     dispatch), with the caller's values but not its cancellation,
//     bounded by the call timeout. A caller that leaves early gets its
//     context's error; the call goes on until the store answers or the
//     timeout passes, and its answer still feeds the breaker (so probes of
//     callers that all cancel still close it), and a lease it granted is
//     released. Nothing outlives the store call but the idle worker.
//
// The breaker counts only unavailability (driver.IsUnavailable, and the
// call timeout) as failure; every probe ends as success, failure or
// abandoned. The store observer sees every call.
func (h *storeHandle) call(ctx context.Context, o *storeOp) error {
	if h.reg.closed.Load() && o.kind != opRelease {
		return ErrClosed
	}
	so := h.reg.storeObs
	if h.inproc {
		if so == nil {
			return o.run(ctx, h.store)
		}
		start := time.Now()
		err := o.run(ctx, h.store)
		so(StoreCall{Context: ctx, Store: h.name, Engine: h.engine, InProcess: true, Op: o.kind.String(), Duration: time.Since(start), Err: err})
		return err
	}
	if err := ctx.Err(); err != nil && h.br.state() != BreakerHalfOpen {
		// The caller already left: nothing to ask the store, unless the
		// call would be the half-open breaker's probe, whose answer counts
		// whoever asked (so that callers who all cancel still close it).
		return err
	}
	tk, berr := h.br.allow()
	if berr != nil {
		err := driver.Unavailable(ErrCircuitOpen)
		h.record(o.kind, 0, err, false)
		if so != nil {
			so(StoreCall{Context: ctx, Store: h.name, Engine: h.engine, Op: o.kind.String(), Err: err})
		}
		return err
	}
	start := time.Now()
	err := h.bounded(ctx, o, tk, start)
	d := time.Since(start)
	h.record(o.kind, d, err, true)
	if so != nil {
		so(StoreCall{Context: ctx, Store: h.name, Engine: h.engine, Op: o.kind.String(), Duration: d, Err: err})
	}
	return err
}

// Call states, for the hand-off between a caller and its store call.
const (
	callWaiting  = iota
	callAnswered // the store call answered first: the caller takes the answer
	callExpired  // the call timeout came first: the caller takes a timeout
	callLeft     // the caller left first: the store call cleans up
)

// task is one store call, made for a caller that waits for its answer
// until its context or the call timeout ends: by a worker of the store, or
// by the store itself (driver.AsyncDecider). Tasks are pooled with their
// reply channel and timer; one whose store call or timer may still run
// (its caller did not take the answer) is never put back.
type task struct {
	h        *storeHandle
	o        *storeOp
	tk       ticket // the breaker's leave for the call
	reported atomic.Bool
	state    atomic.Int32
	reply    chan error
	timeout  time.Duration
	timer    *time.Timer // runs expire at the call timeout
	// ctx is the store call's: the caller's values without its
	// cancellation, and, for calls made on a worker, the call timeout.
	ctx    context.Context
	cancel context.CancelFunc // nil without a timeout of its own
}

func (h *storeHandle) getTask() *task {
	if t, ok := h.tasks.Get().(*task); ok {
		return t
	}
	t := &task{reply: make(chan error, 1)}
	t.timer = time.AfterFunc(time.Hour, t.expire)
	t.timer.Stop()
	return t
}

// expire ends the caller's wait at the call timeout; when no answer came
// by then, the breaker counts a failure, even when the store ignores its
// context.
func (t *task) expire() {
	if t.state.CompareAndSwap(callWaiting, callExpired) {
		err := callTimeoutError(t.timeout)
		t.report(err)
		t.reply <- err
		return
	}
	if t.state.Load() == callLeft {
		t.report(callTimeoutError(t.timeout))
	}
}

// report tells the breaker the call's outcome, once, and keeps an
// unavailable answer for the log.
func (t *task) report(err error) {
	if !t.reported.CompareAndSwap(false, true) {
		return
	}
	if err != nil && driver.IsUnavailable(err) {
		last := err // a copy: taking err's address would allocate every call
		t.h.lastErr.Store(&last)
	}
	t.h.br.outcome(t.tk, err)
}

// run makes the store call, on a worker of the store.
func (t *task) run() {
	t.end(t.o.run(t.ctx, t.h.store), false)
}

// DecideDone implements driver.DecideDone: the end of a decision started
// with driver.AsyncDecider.DecideAsync.
func (t *task) DecideDone(ok bool, err error) {
	t.o.ok = ok
	t.end(err, true)
}

// end hands the store call's answer to its caller or, when the caller
// left or timed out, cleans up after it. async: end runs on a goroutine
// of the store, which must not wait for the clean-up's store calls.
func (t *task) end(err error, async bool) {
	h := t.h
	t.report(err)
	if t.state.CompareAndSwap(callWaiting, callAnswered) {
		t.reply <- err // the caller owns t from here
		h.exit()       // counted by bounded: the store stays open until here
		return
	}
	if t.cancel != nil {
		t.cancel()
	}
	if err == nil && t.o.kind == opDecide && t.o.ok {
		if async {
			go func() {
				t.o.abandon(h)
				h.exit()
			}()
			return
		}
		t.o.abandon(h)
	}
	h.exit()
}

func (h *storeHandle) bounded(ctx context.Context, o *storeOp, tk ticket, start time.Time) error {
	timeout := h.timeout()
	if timeout <= 0 {
		// No bound: the caller's context is the only one.
		err := o.run(ctx, h.store)
		outcome := err
		if ctx.Err() != nil && err != nil {
			outcome = errAbandoned // says nothing about the store
		}
		if outcome != nil && driver.IsUnavailable(outcome) {
			h.lastErr.Store(&outcome)
		}
		h.br.outcome(tk, outcome)
		return err
	}
	t := h.getTask()
	t.h, t.o, t.tk, t.timeout = h, o, tk, timeout
	t.reported.Store(false)
	t.state.Store(callWaiting)
	h.inflight.Add(1) // a replaced store is not closed under a running call
	if h.async != nil && o.kind == opDecide {
		// The store bounds its own calls; the timer bounds the wait.
		t.ctx, t.cancel = context.WithoutCancel(ctx), nil
		t.timer.Reset(timeout)
		// The store may make the call on this goroutine, cut at the call
		// timeout, while the breaker is closed and clean (a probe's answer
		// must come whatever its caller does), unless the caller's
		// deadline comes first (a call cut there would count against the
		// store).
		var deadline time.Time
		if h.br.clean() {
			deadline = start.Add(timeout)
			if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
				deadline = time.Time{}
			}
		}
		h.async.DecideAsync(t.ctx, deadline, o.checks, o.results, t)
	} else {
		t.ctx, t.cancel = context.WithTimeout(context.WithoutCancel(ctx), timeout)
		t.timer.Reset(timeout)
		h.dispatch(t)
	}
	select {
	case err := <-t.reply:
		if t.state.Load() == callAnswered {
			if t.cancel != nil {
				t.cancel()
			}
			if t.timer.Stop() { // expire will not run: t is idle
				t.h, t.o, t.tk, t.ctx, t.cancel = nil, nil, ticket{}, nil, nil
				h.tasks.Put(t)
			}
		}
		return err
	case <-ctx.Done():
	}
	if !t.state.CompareAndSwap(callWaiting, callLeft) {
		// The answer, or the timeout, came as the caller was leaving.
		err := <-t.reply
		if t.cancel != nil && t.state.Load() == callAnswered {
			t.cancel()
		}
		return err
	}
	// The call goes on, and its answer still counts for the breaker (a
	// timeout, when none comes by then).
	return ctx.Err()
}

// idleWorker is how long a store worker waits for its next call before
// it ends.
const idleWorker = 5 * time.Second

// dispatch runs t on an idle worker of the store, or on a new one. Store
// calls run on workers that live from one call to the next rather than on
// a goroutine each: a new goroutine grows its stack anew through the
// client's deep calls, which cost more than the rest of a Redis decision
// (callgrind: morestack was 80 % of its instructions). A worker ends after
// idleWorker without a call, or when the store is closed or replaced; one
// whose store call hangs ends with that call.
func (h *storeHandle) dispatch(t *task) {
	select {
	case h.work <- t:
	default:
		go h.worker(t)
	}
}

func (h *storeHandle) worker(t *task) {
	idle := time.NewTimer(idleWorker)
	defer idle.Stop()
	for {
		t.run()
		idle.Reset(idleWorker)
		select {
		case t = <-h.work:
		case <-idle.C:
			return
		case <-h.quit:
			return
		}
	}
}

func callTimeoutError(d time.Duration) error {
	return driver.Unavailable(fmt.Errorf("%w after %v", ErrCallTimeout, d))
}

// noteTTL records that the store holds a lease that lives ttl.
func (h *storeHandle) noteTTL(ttl time.Duration) {
	for {
		old := h.maxTTL.Load()
		if int64(ttl) <= old || h.maxTTL.CompareAndSwap(old, int64(ttl)) {
			return
		}
	}
}
