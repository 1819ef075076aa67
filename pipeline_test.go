package ratesync_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/memstore"
	"go.uber.org/goleak"
)

// fake is a store under a test's control. It decides with a memory store
// held in a field (so the registry does not see it as in process: it gets
// a call timeout and a breaker), and a test can make every call fail, make
// calls hang until released (ignoring their context, as a client without
// context deadlines does), fail releases, or fail the keys it chooses.
type fake struct {
	mem *memstore.Store

	mu          sync.Mutex
	fail        error         // every call fails with it while set
	hang        chan struct{} // while set, calls wait until it is closed
	keyErr      func(driver.Key) error
	releaseErrs int // the next releases that fail with an unavailable error

	calls, releases atomic.Int64
}

func newFake(t *testing.T) *fake {
	f := &fake{mem: memstore.New()}
	t.Cleanup(func() {
		f.unhang()
		f.mem.Close()
	})
	return f
}

func (f *fake) setFail(err error) { f.mu.Lock(); f.fail = err; f.mu.Unlock() }

// blackHole makes every call wait until unhang.
func (f *fake) blackHole() { f.mu.Lock(); f.hang = make(chan struct{}); f.mu.Unlock() }

func (f *fake) unhang() {
	f.mu.Lock()
	if f.hang != nil {
		close(f.hang)
		f.hang = nil
	}
	f.mu.Unlock()
}

// gate counts the call, waits while the store hangs, and returns the
// failure of the moment.
func (f *fake) gate(keys ...driver.Key) error {
	f.calls.Add(1)
	f.mu.Lock()
	hang, fail, keyErr := f.hang, f.fail, f.keyErr
	f.mu.Unlock()
	if hang != nil {
		<-hang
	}
	if fail != nil {
		return fail
	}
	if keyErr != nil {
		for _, k := range keys {
			if err := keyErr(k); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkKeys(cs []driver.Check) []driver.Key {
	ks := make([]driver.Key, len(cs))
	for i, c := range cs {
		ks[i] = c.Key
	}
	return ks
}

func (f *fake) Decide(ctx context.Context, cs []driver.Check, rs []driver.Result) (bool, error) {
	if err := f.gate(checkKeys(cs)...); err != nil {
		return false, err
	}
	return f.mem.Decide(context.WithoutCancel(ctx), cs, rs)
}

func (f *fake) Peek(ctx context.Context, cs []driver.Check, rs []driver.Result) error {
	if err := f.gate(checkKeys(cs)...); err != nil {
		return err
	}
	return f.mem.Peek(context.WithoutCancel(ctx), cs, rs)
}

func (f *fake) Release(ctx context.Context, k driver.Key, lease string) error {
	if err := f.gate(k); err != nil {
		return err
	}
	f.mu.Lock()
	fail := f.releaseErrs > 0
	if fail {
		f.releaseErrs--
	}
	f.mu.Unlock()
	if fail {
		return driver.Unavailable(errors.New("connection reset by peer"))
	}
	f.releases.Add(1)
	return f.mem.Release(context.WithoutCancel(ctx), k, lease)
}

func (f *fake) Extend(ctx context.Context, k driver.Key, lease string, ttl time.Duration) (bool, error) {
	if err := f.gate(k); err != nil {
		return false, err
	}
	return f.mem.Extend(context.WithoutCancel(ctx), k, lease, ttl)
}

func (f *fake) Reset(ctx context.Context, k driver.Key) error {
	if err := f.gate(k); err != nil {
		return err
	}
	return f.mem.Reset(context.WithoutCancel(ctx), k)
}

func (f *fake) ResetAll(ctx context.Context) error {
	if err := f.gate(); err != nil {
		return err
	}
	return f.mem.ResetAll(context.WithoutCancel(ctx))
}

func (f *fake) Ping(ctx context.Context) error { return f.gate() }
func (f *fake) Close() error                   { return nil }

var errUnavailable = driver.Unavailable(errors.New("connection refused"))

// fakeRegistry returns a registry with f as store "f" and the rules on it.
func fakeRegistry(t *testing.T, f *fake, rules map[string]ratesync.Rule, opts ...ratesync.StoreOption) *ratesync.Registry {
	t.Helper()
	r := ratesync.NewRegistry()
	t.Cleanup(func() { r.Close() })
	if err := r.AddStore("f", f, opts...); err != nil {
		t.Fatal(err)
	}
	for name, rule := range rules {
		rule.Store = "f"
		if err := r.ConfigureLimiter(name, rule); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func breakerOf(r *ratesync.Registry) ratesync.BreakerState {
	for _, s := range r.Stores() {
		if s.Name == "f" {
			return s.Breaker
		}
	}
	return ""
}

// Finding 1: a probe whose caller cancels must not keep the breaker open.
// The probe's store call goes on, and its answer closes the breaker.
func TestCancelledProbeStillClosesBreaker(t *testing.T) {
	f := newFake(t)
	r := fakeRegistry(t, f, map[string]ratesync.Rule{"api": {RatePerSecond: 1000, Burst: 1000, OnStoreError: ratesync.Deny}},
		ratesync.WithCallTimeout(time.Second), ratesync.WithBreaker(1, 50*time.Millisecond))
	f.setFail(errUnavailable)
	if _, err := r.Try(ctx, "api"); !errors.Is(err, ratesync.ErrStore) {
		t.Fatalf("store down: %v, want ErrStore", err)
	}
	if st := breakerOf(r); st != ratesync.BreakerOpen {
		t.Fatalf("breaker %s after a failure with threshold 1, want open", st)
	}
	f.setFail(nil) // the store is back, but slow: the probe's caller will not wait
	f.blackHole()
	waitFor(t, 2*time.Second, "breaker never half-open", func() bool { return breakerOf(r) == ratesync.BreakerHalfOpen })
	cctx, cancel := context.WithCancel(ctx)
	calls := f.calls.Load()
	go func() {
		for f.calls.Load() == calls { // the probe reached the store
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if _, err := r.Try(cctx, "api"); !errors.Is(err, context.Canceled) {
		t.Fatalf("probe whose caller cancels: %v, want context.Canceled", err)
	}
	f.unhang() // the probe's call now gets its answer
	waitFor(t, time.Second, "the breaker stayed open after the probe's store call succeeded", func() bool {
		return breakerOf(r) == ratesync.BreakerClosed
	})
	d, err := r.Try(ctx, "api")
	if err != nil || !d.Allowed || d.Fallback || d.FailedOpen {
		t.Fatalf("after recovery: %+v %v, want a decision of the store", d, err)
	}
}

// Finding 1, the other way: a probe abandoned at the call timeout (the
// store never answers in time) frees the probe slot; once the store
// answers again, the next probe closes the breaker.
func TestTimedOutProbeFreesTheProbeSlot(t *testing.T) {
	f := newFake(t)
	r := fakeRegistry(t, f, map[string]ratesync.Rule{"api": {RatePerSecond: 1000, Burst: 1000, OnStoreError: ratesync.Deny}},
		ratesync.WithCallTimeout(30*time.Millisecond), ratesync.WithBreaker(1, 30*time.Millisecond))
	f.blackHole()
	for i := 0; i < 3; i++ { // a failure, then probes that time out
		waitFor(t, 2*time.Second, "breaker never let a call through", func() bool { return breakerOf(r) != ratesync.BreakerOpen })
		if _, err := r.Try(ctx, "api"); !errors.Is(err, ratesync.ErrCallTimeout) {
			t.Fatalf("call %d to a black hole: %v, want ErrCallTimeout", i, err)
		}
	}
	f.unhang()
	waitFor(t, 2*time.Second, "breaker never half-open", func() bool { return breakerOf(r) != ratesync.BreakerOpen })
	if d, err := r.Try(ctx, "api"); err != nil || d.Fallback {
		t.Fatalf("probe after the fault healed: %+v %v", d, err)
	}
	if st := breakerOf(r); st != ratesync.BreakerClosed {
		t.Fatalf("breaker %s after a good probe, want closed", st)
	}
}

// Finding 2: errors that one request's key causes never open the breaker
// for everyone else.
func TestBadRequestsDoNotOpenTheBreaker(t *testing.T) {
	f := newFake(t)
	f.keyErr = func(k driver.Key) error {
		if strings.Contains(k.ID, "\x00") {
			return driver.BadRequest(errors.New(`invalid byte sequence for encoding "UTF8": 0x00`))
		}
		return nil
	}
	r := fakeRegistry(t, f, map[string]ratesync.Rule{"login": {Algorithm: ratesync.SlidingWindow, Limit: 3, Window: time.Minute}})
	bad, _ := r.For("login", "victim\x00")
	for range 50 {
		d, err := bad.Try(ctx)
		if err != nil || !d.Fallback {
			t.Fatalf("a request the store cannot decide: %+v %v, want the local fallback's answer", d, err)
		}
	}
	if st := breakerOf(r); st != ratesync.BreakerClosed {
		t.Fatalf("breaker %s after 50 bad requests, want closed", st)
	}
	good, _ := r.For("login", "victim")
	admitted := 0
	for range 10 {
		d, err := good.Try(ctx)
		if err != nil || d.Fallback || d.FailedOpen {
			t.Fatalf("another key: %+v %v, want the store's decision", d, err)
		}
		if d.Allowed {
			admitted++
		}
	}
	if admitted != 3 {
		t.Fatalf("admitted %d of 10 on a limit of 3", admitted)
	}
}

// Finding 3: every operation returns by the call timeout when the store
// does not answer (also for a store added in code, with the default
// timeout), and by the caller's deadline when it comes first; nothing is
// left behind once the store calls end.
func TestEveryOperationIsBounded(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // after the store's own cleanup
	f := newFake(t)
	r := ratesync.NewRegistry()
	if err := r.AddStore("f", f); err != nil { // the default call timeout
		t.Fatal(err)
	}
	for name, rule := range map[string]ratesync.Rule{
		"api":   {RatePerSecond: 100, Burst: 10},
		"slots": {MaxConcurrent: 5},
		"other": {RatePerSecond: 100, Burst: 10},
	} {
		rule.Store = "f"
		r.ConfigureLimiter(name, rule)
	}
	comp, err := r.Composite(map[string]string{"a": "api", "b": "other"}, "")
	if err != nil {
		t.Fatal(err)
	}
	slots, _ := r.Get("slots")
	held, err := slots.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.blackHole()
	api, _ := r.Get("api")
	ops := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"try", func(c context.Context) error { _, err := api.Try(c); return err }},
		{"acquire", func(c context.Context) error { l, err := slots.Acquire(c); l.Release(c); return err }},
		{"do", func(c context.Context) error { return api.Do(c, func(context.Context) error { return nil }) }},
		{"composite", func(c context.Context) error {
			_, err := comp.Check(c, map[string]string{"a": "x", "b": "y"})
			return err
		}},
		{"state", func(c context.Context) error { _, err := api.State(c); return err }},
		{"extend", func(c context.Context) error { return held.Extend(c, time.Minute) }},
		{"reset", func(c context.Context) error { return api.Reset(c) }},
		{"reset store", func(c context.Context) error { return r.ResetStore(c, "f") }},
		{"release", func(c context.Context) error { return held.Release(c) }},
	}
	const margin = 150 * time.Millisecond
	for _, op := range ops {
		start := time.Now()
		op.fn(ctx)
		if took := time.Since(start); took > ratesync.DefaultCallTimeout+margin {
			t.Errorf("%s on a black-holed store took %v, want at most the call timeout %v", op.name, took, ratesync.DefaultCallTimeout)
		}
	}
	// A caller's deadline shorter than the call timeout wins.
	for _, op := range ops {
		c, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		start := time.Now()
		op.fn(c)
		cancel()
		if took := time.Since(start); took > 20*time.Millisecond+margin {
			t.Errorf("%s with a 20ms deadline took %v", op.name, took)
		}
	}
	f.unhang()
	r.Close()
}

// Finding 4: a composite is a decision like any other: the strictest
// failure policy of its parts answers, local enforces every part, the
// breaker counts its failures, and the observer sees each part.
func TestCompositeFailurePolicies(t *testing.T) {
	f := newFake(t)
	var mu sync.Mutex
	seen := map[string]int{}
	r := ratesync.NewRegistry(ratesync.WithObserver(func(e ratesync.Event) {
		mu.Lock()
		seen[e.Limiter]++
		mu.Unlock()
	}))
	t.Cleanup(func() { r.Close() })
	r.AddStore("f", f, ratesync.WithBreaker(3, time.Hour))
	for name, rule := range map[string]ratesync.Rule{
		"ip":        {Store: "f", Algorithm: ratesync.SlidingWindow, Limit: 5, Window: time.Minute},
		"account":   {Store: "f", Algorithm: ratesync.SlidingWindow, Limit: 100, Window: time.Minute},
		"strict":    {Store: "f", Algorithm: ratesync.SlidingWindow, Limit: 100, Window: time.Minute, OnStoreError: ratesync.Deny},
		"permitted": {Store: "f", Algorithm: ratesync.SlidingWindow, Limit: 100, Window: time.Minute, OnStoreError: ratesync.Allow},
	} {
		if err := r.ConfigureLimiter(name, rule); err != nil {
			t.Fatal(err)
		}
	}
	f.setFail(errUnavailable)
	denyComp, _ := r.Composite(map[string]string{"by_ip": "permitted", "by_account": "strict"}, "")
	for range 20 {
		res, err := denyComp.Check(ctx, map[string]string{"by_ip": "1.2.3.4", "by_account": "alice"})
		if res.Allowed || !errors.Is(err, ratesync.ErrStore) {
			t.Fatalf("a part with deny on a failing store: %+v %v, want ErrStore", res, err)
		}
	}
	if n := f.calls.Load(); n != 3 {
		t.Fatalf("store called %d times for 20 composite checks, want 3 before the breaker opened", n)
	}
	localComp, _ := r.Composite(map[string]string{"by_ip": "ip", "by_account": "account"}, "")
	admitted := 0
	for i := range 50 {
		res, err := localComp.Check(ctx, map[string]string{"by_ip": "6.6.6.6", "by_account": "user" + string(rune('a'+i%26))})
		if err != nil {
			t.Fatal(err)
		}
		if res.Allowed {
			admitted++
			if !res.MostRestrictive.Fallback {
				t.Fatalf("admitted by %+v, want the local fallback", res.MostRestrictive)
			}
		} else if res.TriggeredBy != "by_ip" {
			t.Fatalf("denied by %q, want by_ip", res.TriggeredBy)
		}
	}
	if admitted != 5 {
		t.Fatalf("one IP got %d of 50 through local fallback, want its limit of 5", admitted)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["ip"] != 50 || seen["account"] != 50 {
		t.Fatalf("observer events per rule %v, want 50 for ip and for account", seen)
	}
	if _, err := r.Composite(map[string]string{"a": "ip", "b": "api"}, ""); err == nil {
		t.Fatal("a composite of an unknown limiter was built")
	}
	r.ConfigureStore("other", "memory", nil)
	r.ConfigureLimiter("elsewhere", ratesync.Rule{Store: "other", RatePerSecond: 1})
	_, err := r.Composite(map[string]string{"by_ip": "ip", "by_x": "elsewhere"}, "")
	if err == nil || !strings.Contains(err.Error(), `by_ip on store "f"`) || !strings.Contains(err.Error(), `by_x on store "other"`) {
		t.Fatalf("parts on two stores: %v, want an error naming parts and stores", err)
	}
}

// Finding 5: by default an outage keeps the rule enforced in process.
func TestDefaultFailurePolicyIsBounded(t *testing.T) {
	f := newFake(t)
	r := fakeRegistry(t, f, map[string]ratesync.Rule{"api": {Algorithm: ratesync.SlidingWindow, Limit: 100, Window: 2 * time.Second}})
	f.setFail(errUnavailable)
	admitted := 0
	for range 5000 {
		d, err := r.Try(ctx, "api")
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			admitted++
		}
	}
	if admitted != 100 {
		t.Fatalf("store down, default policy: %d of 5000 admitted, want the limit 100", admitted)
	}
}

// Finding 6: a waiter whose release notification never comes (here the
// slot is freed by another registry, as by another process, and the store
// sends no notification) still gets the slot within about a second, long
// before the lease would expire.
func TestLostNotificationDoesNotHoldAFreeSlot(t *testing.T) {
	f := newFake(t)
	rules := map[string]ratesync.Rule{"one": {MaxConcurrent: 1, LeaseTTL: 8 * time.Second}}
	holder := fakeRegistry(t, f, rules)
	waiters := fakeRegistry(t, f, rules)
	lease, err := holder.Acquire(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	calls := f.calls.Load()
	got := make(chan error, 1)
	go func() {
		l, err := waiters.Acquire(ctx, "one", ratesync.WithTimeout(3*time.Second))
		l.Release(ctx)
		got <- err
	}()
	w, _ := waiters.Get("one")
	// Queued, and denied again after joining the queue: it now waits.
	waitFor(t, time.Second, "the waiter never queued", func() bool { return w.Metrics().Waiting == 1 && f.calls.Load() >= calls+2 })
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	released := time.Now()
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v, want the slot freed 8 s before its lease expiry", err)
	}
	// The re-check comes within a second; the budget's last try (at 3 s)
	// must not be what admitted it.
	if took := time.Since(released); took > 2*time.Second {
		t.Fatalf("the free slot waited %v for the waiter, want at most the 1 s re-check", took)
	}
}

// Finding 6: waiters of one process are served in arrival order: one that
// arrives while others wait queues behind them instead of asking the store
// first.
func TestNewcomersQueueBehindWaiters(t *testing.T) {
	f := newFake(t)
	rules := map[string]ratesync.Rule{"one": {MaxConcurrent: 1, LeaseTTL: 10 * time.Second}}
	holder := fakeRegistry(t, f, rules)
	waiters := fakeRegistry(t, f, rules)
	lease, err := holder.Acquire(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	calls := f.calls.Load()
	order := make(chan int, 2)
	var wg sync.WaitGroup
	acquire := func(i int) {
		defer wg.Done()
		l, err := waiters.Acquire(ctx, "one", ratesync.WithTimeout(5*time.Second))
		if err != nil {
			t.Error(err)
			return
		}
		order <- i
		l.Release(ctx)
	}
	w, _ := waiters.Get("one")
	wg.Add(2)
	go acquire(1)
	waitFor(t, time.Second, "the first waiter never queued", func() bool { return w.Metrics().Waiting == 1 && f.calls.Load() >= calls+2 })
	lease.Release(ctx) // from another process: no notification reaches the first waiter
	go acquire(2)
	wg.Wait()
	if a, b := <-order, <-order; a != 1 || b != 2 {
		t.Fatalf("grant order %d, %d: the newcomer went ahead of the waiter", a, b)
	}
}

// Finding 7: a request that can never be admitted fails at once instead of
// sleeping until its context ends.
func TestNeverAdmittableFailsAtOnce(t *testing.T) {
	f := newFake(t)
	r := fakeRegistry(t, f, map[string]ratesync.Rule{"api": {RatePerSecond: 1, Burst: 10, FallbackReplicas: 4}})
	f.setFail(errUnavailable)
	start := time.Now()
	_, err := r.Acquire(ctx, "api", ratesync.WithCost(5), ratesync.WithTimeout(5*time.Second))
	if !errors.Is(err, ratesync.ErrCostTooHigh) || errors.Is(err, ratesync.ErrTimeout) {
		t.Fatalf("cost 5 with a local fallback of burst 10/4: %v, want ErrCostTooHigh", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("took %v, want at once", took)
	}
}

// Finding 7: after Close every limiter answers ErrClosed, those obtained
// before included (the in-process fast path too).
func TestLimitersFromBeforeCloseAreClosed(t *testing.T) {
	r := ratesync.NewRegistry()
	r.ConfigureStore("m", "memory", nil)
	mine := memstore.New() // the caller's: Close leaves it open
	defer mine.Close()
	r.AddStore("mine", mine)
	r.ConfigureLimiter("api", ratesync.Rule{Store: "m", RatePerSecond: 10})
	r.ConfigureLimiter("slots", ratesync.Rule{Store: "m", MaxConcurrent: 1})
	r.ConfigureLimiter("own", ratesync.Rule{Store: "mine", RatePerSecond: 10})
	api, _ := r.Get("api")
	slots, _ := r.Get("slots")
	own, _ := r.Get("own")
	user := api.For("u1")
	r.Close()
	if _, err := own.Try(ctx); !errors.Is(err, ratesync.ErrClosed) {
		t.Errorf("Try on a caller's store after Close: %v", err)
	}
	if _, err := api.Try(ctx); !errors.Is(err, ratesync.ErrClosed) {
		t.Errorf("Try after Close: %v", err)
	}
	if _, err := user.Try(ctx); !errors.Is(err, ratesync.ErrClosed) {
		t.Errorf("per-key Try after Close: %v", err)
	}
	if _, err := slots.Acquire(ctx); !errors.Is(err, ratesync.ErrClosed) {
		t.Errorf("Acquire after Close: %v", err)
	}
	if _, err := api.State(ctx); !errors.Is(err, ratesync.ErrClosed) {
		t.Errorf("State after Close: %v", err)
	}
}

// Finding 7: replacing a store keeps the old one for the leases it granted.
func TestReplacedStoreStillReleasesItsLeases(t *testing.T) {
	r := ratesync.NewRegistry()
	defer r.Close()
	r.ConfigureStore("m", "memory", nil)
	r.ConfigureLimiter("slots", ratesync.Rule{Store: "m", MaxConcurrent: 1})
	lease, err := r.Acquire(ctx, "slots")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ConfigureStore("m", "memory", nil); err != nil {
		t.Fatal(err)
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatalf("release of a lease of the replaced store: %v", err)
	}
}

// Finding 7: a release that meets a transient error is retried, and a
// release that failed can be called again.
func TestReleaseRetriesTransientErrors(t *testing.T) {
	f := newFake(t)
	r := fakeRegistry(t, f, map[string]ratesync.Rule{"slots": {MaxConcurrent: 1}}, ratesync.WithBreaker(1000, time.Second))
	lease, err := r.Acquire(ctx, "slots")
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.releaseErrs = 2
	f.mu.Unlock()
	if err := lease.Release(ctx); err != nil {
		t.Fatalf("release with two transient errors: %v", err)
	}
	if lease.Held() || f.releases.Load() != 1 {
		t.Fatalf("held %v, %d releases reached the store", lease.Held(), f.releases.Load())
	}
	// A store that stays unavailable: the error comes back within the call
	// timeout, and the lease can be released later.
	lease, _ = r.Acquire(ctx, "slots")
	f.mu.Lock()
	f.releaseErrs = 1 << 30
	f.mu.Unlock()
	if err := lease.Release(ctx); !driver.IsUnavailable(err) || !lease.Held() {
		t.Fatalf("release on an unavailable store: %v (held %v), want the error and the lease still held", err, lease.Held())
	}
	f.mu.Lock()
	f.releaseErrs = 0
	f.mu.Unlock()
	if err := lease.Release(ctx); err != nil || lease.Held() {
		t.Fatalf("second release: %v (held %v)", err, lease.Held())
	}
	if d, _ := r.Try(ctx, "slots"); !d.Allowed {
		t.Fatal("the slot was not freed")
	}
}

// Finding 8: every distinct sequence of identifiers has its own key, empty
// identifiers included.
func TestEmptyIdentifiersAreDistinct(t *testing.T) {
	r := newRegistry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 1}})
	base, _ := r.Get("api")
	x, _ := r.For("api", "x")
	emptyX, _ := r.For("api", "", "x")
	tmplEmpty, _ := r.Resolve("api:{a}:{b}", ratesync.Values{"a": "", "b": "x"})
	tmplNone, _ := r.Resolve("api:{b}", ratesync.Values{"b": "x"})
	keys := map[string]string{}
	for name, l := range map[string]*ratesync.Limiter{
		"rule": base, `For("")`: base.For(""), `For("").For("")`: base.For("").For(""),
		`For("x")`: x, `For("").For("x")`: emptyX, `For("x").For("")`: x.For(""),
	} {
		if other, dup := keys[l.Key()]; dup {
			t.Errorf("%s and %s share the key %q", name, other, l.Key())
		}
		keys[l.Key()] = name
	}
	if tmplEmpty.Key() == tmplNone.Key() {
		t.Errorf("a template with an empty value shares %q with one without the placeholder", tmplEmpty.Key())
	}
	// And they decide apart: the empty identifier does not use the rule's
	// own quota.
	if d, _ := base.For("").Try(ctx); !d.Allowed {
		t.Fatal(`For("") denied`)
	}
	if d, _ := base.Try(ctx); !d.Allowed {
		t.Fatal(`the rule's own key was consumed by For("")`)
	}
}

// A caller whose context is already done gets its error, and the store is
// not asked at all (a probe slot is not taken for nothing).
func TestCancelledCallerDoesNotCallTheStore(t *testing.T) {
	f := newFake(t)
	r := fakeRegistry(t, f, map[string]ratesync.Rule{"api": {RatePerSecond: 10}})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := r.Try(cctx, "api"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Try with a cancelled context: %v", err)
	}
	if n := f.calls.Load(); n != 0 {
		t.Fatalf("the store was called %d times for a caller that had left", n)
	}
}

// The breaker counts consecutive failures exactly, although the main path
// skips it while it is closed and clean: a success between two failures
// resets the count, every time, so alternating answers never open it,
// and threshold failures in a row do.
func TestBreakerCountsConsecutiveFailures(t *testing.T) {
	f := newFake(t)
	r := hookRegistry(t, f, map[string]ratesync.Rule{"api": {RatePerSecond: 1e6, Burst: 1000000, OnStoreError: ratesync.Deny}},
		ratesync.WithBreaker(3, time.Hour), ratesync.WithCallTimeout(time.Minute))
	api, _ := r.Get("api")
	state := func() ratesync.BreakerState { return breakerOf2(r, "h") }
	for i := range 200 {
		if i%3 == 2 {
			f.setFail(nil) // every third call succeeds: two failures in a row at most
		} else {
			f.setFail(errUnavailable)
		}
		api.Try(ctx)
		if s := state(); s != ratesync.BreakerClosed {
			t.Fatalf("call %d: breaker %s after at most 2 failures in a row (threshold 3)", i, s)
		}
	}
	f.setFail(errUnavailable)
	for range 3 {
		api.Try(ctx)
	}
	if s := state(); s != ratesync.BreakerOpen {
		t.Fatalf("3 failures in a row: breaker %s, want open", s)
	}
}
