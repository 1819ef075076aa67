package ratesync_test

// Adversarial tests of the decision pipeline (issue 12): attacks as a
// hostile caller and as a failing network would make them. Each test
// asserts that an attack fails, and keeps it failing. Those headed
// "Finding N" succeeded when a review made them (their comment says how);
// each failed before its fix.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/memstore"
)

// hookStore is a store under a test's control, for sequences that
// pipeline_test.go's fake cannot make: a hook before and after the memory
// store decides (each may block or fail), and a Close that makes later
// calls fail as a closed client's do (calls already past the entry check
// finish, as a request already sent does). It holds the memory store in a
// field, so the registry gives it a call timeout and a breaker.
type hookStore struct {
	mem *memstore.Store

	mu         sync.Mutex
	before     func(ctx context.Context, cs []driver.Check) error
	after      func(cs []driver.Check, rs []driver.Result)
	closed     atomic.Bool
	decides    atomic.Int64
	releases   atomic.Int64
	closeCalls atomic.Int64
}

var errClientClosed = errors.New("client is closed")

func newHookStore(t *testing.T) *hookStore {
	s := &hookStore{mem: memstore.New()}
	t.Cleanup(func() { s.mem.Close() })
	return s
}

func (s *hookStore) setHooks(before func(context.Context, []driver.Check) error, after func([]driver.Check, []driver.Result)) {
	s.mu.Lock()
	s.before, s.after = before, after
	s.mu.Unlock()
}

func (s *hookStore) hooks() (func(context.Context, []driver.Check) error, func([]driver.Check, []driver.Result)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.before, s.after
}

func (s *hookStore) Decide(ctx context.Context, cs []driver.Check, rs []driver.Result) (bool, error) {
	if s.closed.Load() {
		return false, errClientClosed
	}
	s.decides.Add(1)
	before, after := s.hooks()
	if before != nil {
		if err := before(ctx, cs); err != nil {
			return false, err
		}
	}
	ok, err := s.mem.Decide(context.WithoutCancel(ctx), cs, rs)
	if after != nil {
		after(cs, rs)
	}
	return ok, err
}

func (s *hookStore) Peek(ctx context.Context, cs []driver.Check, rs []driver.Result) error {
	if s.closed.Load() {
		return errClientClosed
	}
	return s.mem.Peek(context.WithoutCancel(ctx), cs, rs)
}

func (s *hookStore) Release(ctx context.Context, k driver.Key, lease string) error {
	if s.closed.Load() {
		return errClientClosed
	}
	s.releases.Add(1)
	return s.mem.Release(context.WithoutCancel(ctx), k, lease)
}

func (s *hookStore) Extend(ctx context.Context, k driver.Key, lease string, ttl time.Duration) (bool, error) {
	if s.closed.Load() {
		return false, errClientClosed
	}
	return s.mem.Extend(context.WithoutCancel(ctx), k, lease, ttl)
}

func (s *hookStore) Reset(ctx context.Context, k driver.Key) error {
	return s.mem.Reset(context.WithoutCancel(ctx), k)
}

func (s *hookStore) ResetAll(ctx context.Context) error {
	return s.mem.ResetAll(context.WithoutCancel(ctx))
}

func (s *hookStore) Ping(ctx context.Context) error { return nil }

func (s *hookStore) Close() error {
	s.closeCalls.Add(1)
	s.closed.Store(true)
	return nil
}

// leasesHeld returns how many leases the store holds on key for a
// concurrency policy of max slots.
func (s *hookStore) leasesHeld(t *testing.T, key driver.Key, max int, ttl time.Duration) int {
	t.Helper()
	rs := make([]driver.Result, 1)
	cs := []driver.Check{{Key: key, Policy: driver.Policy{Kind: driver.Concurrency, MaxConcurrent: max, LeaseTTL: ttl}, Cost: 1}}
	if err := s.mem.Peek(ctx, cs, rs); err != nil {
		t.Fatal(err)
	}
	return max - rs[0].Remaining
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// hookRegistry returns a registry (logging nowhere) with s as store "h" and
// the rules on it.
func hookRegistry(t *testing.T, s driver.Store, rules map[string]ratesync.Rule, opts ...ratesync.StoreOption) *ratesync.Registry {
	t.Helper()
	r := ratesync.NewRegistry(ratesync.WithLogger(quiet))
	t.Cleanup(func() { r.Close() })
	if err := r.AddStore("h", s, opts...); err != nil {
		t.Fatal(err)
	}
	for name, rule := range rules {
		rule.Store = "h"
		if err := r.ConfigureLimiter(name, rule); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// hookEngine is a store engine for tests that need a store the registry
// owns (and so closes when it is replaced): ConfigureStore(name,
// "adversarial-hook", {"id": ID}) opens the hookStore put in hookStores
// under ID.
var (
	hookEngineOnce sync.Once
	hookStores     sync.Map // id -> *hookStore
)

func registerHookEngine() {
	hookEngineOnce.Do(func() {
		ratesync.RegisterEngine("adversarial-hook", func(cfg *ratesync.StoreConfig) (driver.Store, error) {
			id, err := cfg.String("id", "")
			if err != nil {
				return nil, err
			}
			s, ok := hookStores.Load(id)
			if !ok {
				return nil, errors.New("no hook store " + id)
			}
			return s.(*hookStore), nil
		})
	})
}

// ownedHookStore returns a hookStore that ConfigureStore can open by id.
func ownedHookStore(t *testing.T, id string) *hookStore {
	registerHookEngine()
	s := newHookStore(t)
	hookStores.Store(id, s)
	t.Cleanup(func() { hookStores.Delete(id) })
	return s
}

// result of an operation run on its own goroutine.
type result struct {
	lease *ratesync.Lease
	err   error
	done  atomic.Bool
}

func goAcquire(l *ratesync.Limiter, c context.Context, opts ...ratesync.CallOption) *result {
	res := &result{}
	go func() {
		res.lease, res.err = l.Acquire(c, opts...)
		res.done.Store(true)
	}()
	return res
}

// Finding 1 (fixed). A composite whose strictest policy is local, with a part whose
// rule is allow, fails every check while the store is down: the local
// fallback's op is sized for every part's checks but filled only with the
// local parts' fallback policies, so the allow part leaves zero-valued
// checks, which the fallback store rejects.
func TestAdvCompositeLocalWithAllowPart(t *testing.T) {
	f := newFake(t)
	r := fakeRegistry(t, f, map[string]ratesync.Rule{
		"ip":      {Algorithm: ratesync.SlidingWindow, Limit: 5, Window: time.Minute},
		"account": {Algorithm: ratesync.SlidingWindow, Limit: 100, Window: time.Minute, OnStoreError: ratesync.Allow},
	})
	comp, err := r.Composite(map[string]string{"by_ip": "ip", "by_account": "account"}, "")
	if err != nil {
		t.Fatal(err)
	}
	f.setFail(errUnavailable)
	admitted := 0
	for range 20 {
		res, err := comp.Check(ctx, map[string]string{"by_ip": "6.6.6.6", "by_account": "alice"})
		if err != nil {
			t.Fatalf("store down, parts local and allow: %v, want the local fallback's answer", err)
		}
		if res.Allowed {
			admitted++
		}
	}
	if admitted != 5 {
		t.Fatalf("one IP got %d of 20 through the local fallback, want its limit of 5", admitted)
	}
}

// Finding 2 (fixed). A composite decides every part on its first part's store, looked
// up at each check; the "one store" rule is checked only when the
// composite is built. Once a part's limiter moves to another store
// (ConfigureLimiter, or a reload), the composite decides that part on the
// store of its first part (by name), apart from the state the limiter
// itself uses: the account's quota is spent twice.
func TestAdvCompositeAfterAPartMovesStore(t *testing.T) {
	r := newRegistry(t, map[string]ratesync.Rule{
		"ip":      {Algorithm: ratesync.SlidingWindow, Limit: 100, Window: time.Minute},
		"account": {Algorithm: ratesync.SlidingWindow, Limit: 3, Window: time.Minute, OnStoreError: ratesync.Deny},
	})
	comp, err := r.Composite(map[string]string{"a_ip": "ip", "z_account": "account"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ConfigureStore("other", "memory", nil); err != nil {
		t.Fatal(err)
	}
	if err := r.ConfigureLimiter("account", ratesync.Rule{Store: "other", Algorithm: ratesync.SlidingWindow, Limit: 3, Window: time.Minute, OnStoreError: ratesync.Deny}); err != nil {
		t.Fatal(err)
	}
	alice, _ := r.For("account", "alice")
	for i := range 3 {
		if d, err := alice.Try(ctx); err != nil || !d.Allowed {
			t.Fatalf("alice's attempt %d: %+v %v", i, d, err)
		}
	}
	res, err := comp.Check(ctx, map[string]string{"a_ip": "1.2.3.4", "z_account": "alice"})
	if err == nil && res.Allowed {
		t.Fatalf("alice spent her 3 per minute, yet the composite admitted her (its part was decided on the old store)")
	}
}

// Finding 3 (fixed). A store replaced while a decision on it is in flight is closed at
// once when it has no lease yet (retire counts leases only once they reach
// leaseOf); the in-flight decision then grants a lease on a closed store,
// which can never be released: Release fails, and on a shared server
// (Redis, PostgreSQL) the slot stays taken until its TTL (5 min by
// default), for the new store too.
func TestAdvStoreReplacedDuringALeaseGrant(t *testing.T) {
	old := ownedHookStore(t, "replaced-old")
	ownedHookStore(t, "replaced-new")
	r := ratesync.NewRegistry(ratesync.WithLogger(quiet))
	defer r.Close()
	long := map[string]any{"call_timeout_seconds": 30}
	if err := r.ConfigureStore("s", "adversarial-hook", map[string]any{"id": "replaced-old", "call_timeout_seconds": 30}); err != nil {
		t.Fatal(err)
	}
	rule := ratesync.Rule{Store: "s", MaxConcurrent: 1, LeaseTTL: time.Minute, OnStoreError: ratesync.Deny}
	if err := r.ConfigureLimiter("slots", rule); err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	old.setHooks(func(context.Context, []driver.Check) error {
		close(entered)
		<-release
		return nil
	}, nil)
	slots, _ := r.Get("slots")
	res := goAcquire(slots, ctx)
	<-entered // the decision reached the old store
	long["id"] = "replaced-new"
	if err := r.ConfigureStore("s", "adversarial-hook", long); err != nil {
		t.Fatal(err)
	}
	close(release)
	waitFor(t, 5*time.Second, "Acquire never returned", res.done.Load)
	if res.err != nil {
		t.Fatal(res.err)
	}
	if err := res.lease.Release(ctx); err != nil {
		t.Fatalf("release of a lease the replaced store granted: %v (store closed: %v)", err, old.closed.Load())
	}
	if n := old.leasesHeld(t, driver.Key{Name: "slots"}, 1, time.Minute); n != 0 {
		t.Fatalf("the old store still holds %d lease after the release", n)
	}
}

// Finding 4 (fixed). A limiter obtained before its rule was reconfigured keeps the old
// rule (as documented), but also its old store binding: a later store
// replacement rebinds only the rules the registry holds now, and closes the
// old store. The limiter then decides against a closed store, so every call
// goes to the failure policy: errors under deny, the local fallback under
// local, no limit at all under allow.
func TestAdvLimiterFromBeforeTwoReloads(t *testing.T) {
	rule := ratesync.Rule{Store: "main", RatePerSecond: 1, Burst: 1, OnStoreError: ratesync.Deny}
	r := newRegistry(t, map[string]ratesync.Rule{"api": rule})
	held, _ := r.Get("api")                                 // kept by the application, e.g. in a middleware
	if err := r.ConfigureLimiter("api", rule); err != nil { // reload 1: the rule
		t.Fatal(err)
	}
	if err := r.ConfigureStore("main", "memory", nil); err != nil { // reload 2: the store
		t.Fatal(err)
	}
	d, err := held.Try(ctx)
	if err != nil || d.FailedOpen || d.Fallback {
		t.Fatalf("a limiter from before the reloads: %+v %v, want the store's decision", d, err)
	}
}

// Finding 5 (fixed). A local failure policy's concurrency waiters are queued under the
// rule's store, but a fallback lease is released against the fallback
// store, whose notification goes to another queue: during an outage a
// local release never wakes a local waiter, which waits for its re-check
// (up to a second) with a slot free.
func TestAdvFallbackReleaseWakesWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		r := hookRegistry(t, f, map[string]ratesync.Rule{"one": {MaxConcurrent: 1, LeaseTTL: time.Hour}})
		f.setFail(errUnavailable)
		one, _ := r.Get("one")
		held, err := one.Acquire(ctx)
		if err != nil || !held.Fallback() {
			t.Fatalf("store down: %v (fallback %v), want a fallback lease", err, held.Fallback())
		}
		waiter := goAcquire(one, ctx)
		synctest.Wait() // the waiter sleeps in the queue
		if waiter.done.Load() {
			t.Fatalf("the waiter was admitted with the only slot held: %v", waiter.err)
		}
		start := time.Now()
		if err := held.Release(ctx); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		woke := waiter.done.Load()
		for !waiter.done.Load() {
			time.Sleep(10 * time.Millisecond) // fake time: let the re-check come
		}
		waiter.lease.Release(ctx)
		if !woke {
			t.Fatalf("a local release of a fallback lease did not wake the local waiter: it was admitted by its re-check %v later", time.Since(start))
		}
		r.Close()
	})
}

// Finding 6a (fixed). A waiter woken by a release consumes the wake-up, then leaves
// (its context ends while it asks the store): the next waiter is not
// woken, and sleeps until its re-check with the slot free.
func TestAdvWakeUpPassedOnWhenTheWokenWaiterLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newHookStore(t)
		r := hookRegistry(t, s, map[string]ratesync.Rule{"one": {MaxConcurrent: 1, LeaseTTL: time.Hour, OnStoreError: ratesync.Deny}},
			ratesync.WithCallTimeout(time.Minute))
		one, _ := r.Get("one")
		held, err := one.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c1, cancel1 := context.WithCancel(ctx)
		w1 := goAcquire(one, c1)
		synctest.Wait()
		w2 := goAcquire(one, ctx)
		synctest.Wait() // both queued, w1 first
		// w1's next decide blocks until w1 has left; then the store fails it.
		left := make(chan struct{})
		s.setHooks(func(context.Context, []driver.Check) error {
			s.setHooks(nil, nil)
			cancel1()
			<-left
			return driver.BadRequest(errors.New("late"))
		}, nil)
		if err := held.Release(ctx); err != nil { // wakes w1
			t.Fatal(err)
		}
		synctest.Wait()
		if !w1.done.Load() || !errors.Is(w1.err, context.Canceled) {
			t.Fatalf("w1: done %v, %v, want context.Canceled", w1.done.Load(), w1.err)
		}
		close(left)
		start := time.Now()
		synctest.Wait()
		woke := w2.done.Load()
		for !w2.done.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		w2.lease.Release(ctx)
		if !woke {
			t.Fatalf("the slot was free, but the second waiter was admitted only by its re-check, %v later", time.Since(start))
		}
		r.Close()
	})
}

// Finding 6b (fixed). A decision whose caller left is abandoned: the lease the store
// granted it late is released by the pipeline (storeOp.abandon), but that
// release wakes no local waiter, so a waiter sleeps until its re-check
// with the slot free (on a store without release notifications).
func TestAdvAbandonedLeaseReleaseWakesWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newHookStore(t)
		r := hookRegistry(t, s, map[string]ratesync.Rule{"one": {MaxConcurrent: 1, LeaseTTL: time.Hour, OnStoreError: ratesync.Deny}},
			ratesync.WithCallTimeout(time.Minute))
		one, _ := r.Get("one")
		// The leaver's decide takes the slot in the store, then its answer
		// is held on the way back until the leaver has gone.
		back := make(chan struct{})
		s.setHooks(nil, func([]driver.Check, []driver.Result) {
			s.setHooks(nil, nil)
			<-back
		})
		cl, cancel := context.WithCancel(ctx)
		leaver := goAcquire(one, cl)
		synctest.Wait()
		waiter := goAcquire(one, ctx)
		synctest.Wait() // denied by the leaver's slot: queued
		if waiter.done.Load() {
			t.Fatalf("waiter admitted with the slot taken: %v", waiter.err)
		}
		cancel()
		synctest.Wait()
		if !leaver.done.Load() {
			t.Fatal("the caller that left did not return")
		}
		close(back) // the late grant is released by the pipeline
		start := time.Now()
		synctest.Wait()
		woke := waiter.done.Load()
		for !waiter.done.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		waiter.lease.Release(ctx)
		if !woke {
			t.Fatalf("the abandoned lease was released, but the waiter was admitted only by its re-check, %v later", time.Since(start))
		}
		r.Close()
	})
}

// Finding 7 (fixed). Acquire's wait budget (WithTimeout, the rule's timeout) bounds
// the waits between decisions but not the store call: with a silent
// store, Acquire(WithTimeout(20ms)) returns after the 250 ms call timeout,
// with the fallback's grant.
func TestAdvAcquireBudgetBoundsTheStoreCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		r := hookRegistry(t, f, map[string]ratesync.Rule{"api": {RatePerSecond: 10}})
		api, _ := r.Get("api")
		f.blackHole()
		start := time.Now()
		lease, err := api.Acquire(ctx, ratesync.WithTimeout(20*time.Millisecond))
		took := time.Since(start)
		f.unhang()
		lease.Release(ctx)
		synctest.Wait()
		r.Close()
		if took > 20*time.Millisecond {
			t.Fatalf("Acquire with a 20ms budget on a silent store took %v (%v, fallback %v)", took, err, lease.Fallback())
		}
	})
}

// Finding 8 (fixed). Close does not wake the Acquire calls waiting: one that sleeps for
// a slow rate sleeps on after Close (here a minute) before it returns
// ErrClosed, holding its caller (and a graceful shutdown) that long.
func TestAdvCloseEndsWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := ratesync.NewRegistry()
		r.ConfigureStore("m", "memory", nil)
		r.ConfigureLimiter("slow", ratesync.Rule{Store: "m", RatePerSecond: 1.0 / 60, Burst: 1})
		slow, _ := r.Get("slow")
		if d, _ := slow.Try(ctx); !d.Allowed {
			t.Fatal("first try denied")
		}
		waiter := goAcquire(slow, ctx)
		synctest.Wait()
		start := time.Now()
		r.Close()
		synctest.Wait()
		ended := waiter.done.Load()
		for !waiter.done.Load() {
			time.Sleep(time.Second)
		}
		if !ended || !errors.Is(waiter.err, ratesync.ErrClosed) {
			t.Fatalf("an Acquire waiting at Close returned %v after %v more, want ErrClosed at once", waiter.err, time.Since(start))
		}
	})
}

// Finding 9 (fixed). WithBreaker's threshold is converted to uint32 for gobreaker
// without a bound (AddStore checks only >= 1): 1<<32 becomes 0, and the
// breaker opens on the first failure.
func TestAdvBreakerThresholdOverflow(t *testing.T) {
	f := newFake(t)
	r := ratesync.NewRegistry(ratesync.WithLogger(quiet))
	defer r.Close()
	err := r.AddStore("f", f, ratesync.WithBreaker(1<<32, time.Hour))
	if err != nil {
		return // rejected: fine
	}
	r.ConfigureLimiter("api", ratesync.Rule{Store: "f", RatePerSecond: 10, OnStoreError: ratesync.Deny})
	f.setFail(errUnavailable)
	r.Try(ctx, "api")
	if st := breakerOf2(r, "f"); st != ratesync.BreakerClosed {
		t.Fatalf("breaker %s after one failure with a threshold of 1<<32", st)
	}
}

func breakerOf2(r *ratesync.Registry, name string) ratesync.BreakerState {
	for _, s := range r.Stores() {
		if s.Name == name {
			return s.Breaker
		}
	}
	return ""
}

// Finding 10 (fixed). A zero Registry panics (assignment to a nil map) on the methods
// that add a store; its doc does not say that the zero value is unusable,
// and STYLE.md asks every type's doc to say what its zero value does.
func TestAdvZeroRegistry(t *testing.T) {
	var panicked []string
	try := func(name string, fn func(r *ratesync.Registry)) {
		var r ratesync.Registry
		defer func() {
			if p := recover(); p != nil {
				// The panic may leave r's lock held: do not Close r.
				panicked = append(panicked, name)
				return
			}
			r.Close()
		}()
		fn(&r)
	}
	m := memstore.New()
	defer m.Close()
	try("AddStore", func(r *ratesync.Registry) { r.AddStore("m", m) })
	try("ConfigureStore", func(r *ratesync.Registry) { r.ConfigureStore("m", "memory", nil) })
	try("ConfigureLimiter", func(r *ratesync.Registry) { r.ConfigureLimiter("a", ratesync.Rule{Store: "m", RatePerSecond: 1}) })
	try("Get", func(r *ratesync.Registry) { r.Get("a") })
	try("Stores", func(r *ratesync.Registry) { r.Stores() })
	try("Composite", func(r *ratesync.Registry) { r.Composite(map[string]string{"a": "a"}, "") })
	if len(panicked) > 0 {
		t.Fatalf("a zero Registry panics in %v", panicked)
	}
}

// Attacks that fail: keep them failing.

// A failing network under a crowd of callers that cancel: store calls
// slower than the call timeout, late answers, unavailable errors, and
// deadlines ending at any point of a call. Under deny, no caller is
// admitted beyond the store's limits (a late answer or a recycled op never
// turns into an admission), the Waiting gauge ends at zero, and the
// breaker closes once the store heals. With a breaker that never opens,
// every lease comes back too (the late grants of callers that left
// included) and the wait queue ends empty; with one that opens, late
// grants can leak (TestAdvAbandonedGrantWhileBreakerOpen).
//
// Under local, the fallback adds at most its own limits (the rule's
// divided by fallback_replicas) to the store's.
func TestAdvHammerFailingStore(t *testing.T) {
	t.Run("deny, breaker opens", func(t *testing.T) { hammerFailingStore(t, ratesync.Deny, 3) })
	t.Run("deny, breaker never opens", func(t *testing.T) { hammerFailingStore(t, ratesync.Deny, 1_000_000) })
	t.Run("local, breaker opens", func(t *testing.T) { hammerFailingStore(t, ratesync.Local, 3) })
	t.Run("local, breaker never opens", func(t *testing.T) { hammerFailingStore(t, ratesync.Local, 1_000_000) })
}

func hammerFailingStore(t *testing.T, policy ratesync.FailurePolicy, threshold int) {
	synctest.Test(t, func(t *testing.T) {
		s := newHookStore(t)
		faulty := func(context.Context, []driver.Check) error {
			time.Sleep(time.Duration(rand.IntN(16)) * time.Millisecond) // around the 10 ms call timeout
			if rand.IntN(8) == 0 {
				return errUnavailable
			}
			return nil
		}
		s.setHooks(faulty, func([]driver.Check, []driver.Result) {
			time.Sleep(time.Duration(rand.IntN(4)) * time.Millisecond) // the answer's way back
		})
		const limit, slots = 20, 4
		bound, slotBound, replicas := limit, slots, 0
		if policy == ratesync.Local {
			replicas = 2
			bound, slotBound = limit+limit/replicas, slots+slots/replicas
		}
		r := hookRegistry(t, s, map[string]ratesync.Rule{
			"w":     {Algorithm: ratesync.SlidingWindow, Limit: limit, Window: time.Hour, OnStoreError: policy, FallbackReplicas: replicas},
			"slots": {MaxConcurrent: slots, LeaseTTL: time.Hour, OnStoreError: policy, FallbackReplicas: replicas},
		}, ratesync.WithCallTimeout(10*time.Millisecond), ratesync.WithBreaker(threshold, 30*time.Millisecond))
		w, _ := r.Get("w")
		sl, _ := r.Get("slots")
		var admitted, inUse, peak, leases atomic.Int64
		var wg sync.WaitGroup
		for g := range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 25 {
					c, cancel := context.WithTimeout(ctx, time.Duration(1+rand.IntN(30))*time.Millisecond)
					if g%2 == 0 {
						if d, err := w.Try(c); err == nil && d.Allowed {
							admitted.Add(1)
						}
						cancel()
						continue
					}
					lease, err := sl.Acquire(c)
					cancel()
					if err != nil {
						continue
					}
					leases.Add(1)
					n := inUse.Add(1)
					for {
						p := peak.Load()
						if n <= p || peak.CompareAndSwap(p, n) {
							break
						}
					}
					time.Sleep(time.Duration(rand.IntN(5)) * time.Millisecond)
					inUse.Add(-1)
					rc, rcancel := context.WithTimeout(ctx, time.Duration(rand.IntN(20))*time.Millisecond)
					lease.Release(rc)
					rcancel()
					for lease.Held() { // the release failed, or goes on: again, until it is done
						lease.Release(ctx)
						time.Sleep(time.Millisecond)
					}
				}
			}()
		}
		wg.Wait()
		s.setHooks(nil, nil)
		time.Sleep(time.Second) // past the cool-down, and every late call's end
		synctest.Wait()
		if n := admitted.Load(); n > int64(bound) {
			t.Fatalf("%d admitted on a window of %d (policy %s: at most %d)", n, limit, policy, bound)
		}
		if p := peak.Load(); p > int64(slotBound) {
			t.Fatalf("%d leases held at once on %d slots (policy %s: at most %d)", p, slots, policy, slotBound)
		}
		if _, err := w.Try(ctx); err != nil { // the healed store's answer closes the breaker
			t.Fatalf("after the fault: %v", err)
		}
		if st := breakerOf2(r, "h"); st != ratesync.BreakerClosed {
			t.Fatalf("breaker %s after the fault healed", st)
		}
		t.Logf("window: %d admitted, bound %d; slots: %d leases, peak %d, bound %d", admitted.Load(), bound, leases.Load(), peak.Load(), slotBound)
		if m := sl.Metrics(); m.Waiting != 0 || m.CurrentConcurrent != 0 || m.Acquisitions != leases.Load() || m.Releases != leases.Load() {
			t.Fatalf("after the hammer: %+v, want no waiter, no lease held, %d acquisitions and releases", m, leases.Load())
		}
		if threshold > 1000 {
			if held := s.leasesHeld(t, driver.Key{Name: "slots"}, slots, time.Hour); held != 0 {
				t.Fatalf("%d slots still held after every lease was released", held)
			}
			// No waiter was left in the queue: a newcomer is admitted at once.
			start := time.Now()
			lease, err := sl.Acquire(ctx)
			if err != nil || time.Since(start) != 0 {
				t.Fatalf("a newcomer after the hammer: %v after %v", err, time.Since(start))
			}
			lease.Release(ctx)
		}
		r.Close()
	})
}

// Finding 11 (fixed). A late grant whose caller left is released by the pipeline
// (storeOp.abandon) with one call through the breaker: when the breaker is
// open (the late answer's own timeout may just have opened it), the call
// is refused and never retried, and the slot stays taken in the store
// until the lease TTL (5 minutes by default). TestAdvHammerFailingStore
// found it: 3 of 3 slots leaked.
func TestAdvAbandonedGrantWhileBreakerOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newHookStore(t)
		s.setHooks(func(context.Context, []driver.Check) error {
			time.Sleep(20 * time.Millisecond) // answers after the call timeout
			return nil
		}, nil)
		r := hookRegistry(t, s, map[string]ratesync.Rule{"slots": {MaxConcurrent: 1, LeaseTTL: time.Hour, OnStoreError: ratesync.Deny}},
			ratesync.WithCallTimeout(10*time.Millisecond), ratesync.WithBreaker(1, time.Minute))
		sl, _ := r.Get("slots")
		if _, err := sl.Acquire(ctx); !errors.Is(err, ratesync.ErrCallTimeout) {
			t.Fatalf("Acquire on a store slower than the call timeout: %v, want ErrCallTimeout", err)
		}
		time.Sleep(100 * time.Millisecond) // the late answer comes, and its grant is abandoned
		synctest.Wait()
		if held := s.leasesHeld(t, driver.Key{Name: "slots"}, 1, time.Hour); held != 0 {
			t.Fatalf("the late grant of a caller that left still holds %d slot (breaker %s): it leaks until its TTL", held, breakerOf2(r, "h"))
		}
		r.Close()
	})
}

// windowUsed returns the units a window of limit per hour holds on key in
// s's memory store.
func (s *hookStore) windowUsed(t *testing.T, key driver.Key, limit int) int {
	t.Helper()
	rs := make([]driver.Result, 1)
	cs := []driver.Check{{Key: key, Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: limit, Window: time.Hour}, Cost: 1}}
	if err := s.mem.Peek(ctx, cs, rs); err != nil {
		t.Fatal(err)
	}
	return limit - rs[0].Remaining
}

// A composite stays all or nothing under a failing store and callers that
// leave: every decision the store made (late ones of callers that left
// included) took from the IP and from one account, or from neither, and
// no part admitted past its limit.
func TestAdvHammerCompositeAllOrNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newHookStore(t)
		s.setHooks(func(context.Context, []driver.Check) error {
			time.Sleep(time.Duration(rand.IntN(16)) * time.Millisecond)
			if rand.IntN(8) == 0 {
				return errUnavailable
			}
			return nil
		}, nil)
		const ipLimit, accLimit = 10, 4
		r := hookRegistry(t, s, map[string]ratesync.Rule{
			"ip":      {Algorithm: ratesync.SlidingWindow, Limit: ipLimit, Window: time.Hour, OnStoreError: ratesync.Deny},
			"account": {Algorithm: ratesync.SlidingWindow, Limit: accLimit, Window: time.Hour, OnStoreError: ratesync.Deny},
		}, ratesync.WithCallTimeout(10*time.Millisecond), ratesync.WithBreaker(3, 30*time.Millisecond))
		comp, err := r.Composite(map[string]string{"by_ip": "ip", "by_account": "account"}, "")
		if err != nil {
			t.Fatal(err)
		}
		accounts := []string{"a", "b", "c"}
		var mu sync.Mutex
		admitted := map[string]int{}
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 30 {
					acc := accounts[rand.IntN(len(accounts))]
					c, cancel := context.WithTimeout(ctx, time.Duration(1+rand.IntN(30))*time.Millisecond)
					res, err := comp.Check(c, map[string]string{"by_ip": "6.6.6.6", "by_account": acc})
					cancel()
					if err == nil && res.Allowed {
						mu.Lock()
						admitted[acc]++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		s.setHooks(nil, nil)
		time.Sleep(time.Second)
		synctest.Wait()
		ipUsed := s.windowUsed(t, driver.Key{Name: "ip", ID: "6.6.6.6"}, ipLimit)
		accUsed, total := 0, 0
		for _, acc := range accounts {
			used := s.windowUsed(t, driver.Key{Name: "account", ID: acc}, accLimit)
			accUsed += used
			total += admitted[acc]
			if admitted[acc] > used {
				t.Errorf("account %s: %d admitted, %d taken from the store", acc, admitted[acc], used)
			}
		}
		t.Logf("admitted %v; the store holds %d on the IP, %d on the accounts", admitted, ipUsed, accUsed)
		if ipUsed != accUsed {
			t.Fatalf("not all or nothing: %d taken from the IP, %d from the accounts", ipUsed, accUsed)
		}
		if total > ipUsed {
			t.Fatalf("%d admitted, %d taken from the IP", total, ipUsed)
		}
		r.Close()
	})
}

// Release from many goroutines at once frees the slot once: one store
// release, one Releases count, no lease left in CurrentConcurrent; Extend
// after it reports ErrLeaseLost.
func TestAdvConcurrentReleaseIsIdempotent(t *testing.T) {
	s := newHookStore(t)
	r := hookRegistry(t, s, map[string]ratesync.Rule{"slots": {MaxConcurrent: 2, LeaseTTL: time.Hour}})
	sl, _ := r.Get("slots")
	lease, err := sl.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			c := ctx
			if i%2 == 0 { // half of them with a context that can end
				var cancel context.CancelFunc
				c, cancel = context.WithTimeout(ctx, time.Hour)
				defer cancel()
			}
			lease.Release(c)
		}()
	}
	close(start)
	wg.Wait()
	waitFor(t, time.Second, "the release never ended", func() bool { return !lease.Held() })
	if n := s.releases.Load(); n != 1 {
		t.Fatalf("%d store releases for one lease released by 50 goroutines", n)
	}
	if m := sl.Metrics(); m.Releases != 1 || m.CurrentConcurrent != 0 {
		t.Fatalf("metrics after the release: Releases %d, CurrentConcurrent %d", m.Releases, m.CurrentConcurrent)
	}
	if err := lease.Extend(ctx, time.Minute); !errors.Is(err, ratesync.ErrLeaseLost) {
		t.Fatalf("Extend after Release: %v, want ErrLeaseLost", err)
	}
	if held := s.leasesHeld(t, driver.Key{Name: "slots"}, 2, time.Hour); held != 0 {
		t.Fatalf("%d slots held after the release", held)
	}
}

// Nil and zero values hold nothing and never panic.
func TestAdvNilAndZeroLeases(t *testing.T) {
	for name, l := range map[string]*ratesync.Lease{"nil": nil, "zero": {}, "denied decision": ratesync.Decision{}.Lease} {
		if err := l.Release(ctx); err != nil {
			t.Errorf("%s lease: Release: %v", name, err)
		}
		if err := l.Extend(ctx, time.Minute); err != nil {
			t.Errorf("%s lease: Extend: %v", name, err)
		}
		if l.Held() || l.FailedOpen() || l.Fallback() {
			t.Errorf("%s lease: Held %v, FailedOpen %v, Fallback %v", name, l.Held(), l.FailedOpen(), l.Fallback())
		}
	}
	// A rule without max_concurrent gives a lease that holds nothing.
	r := newRegistry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 1}})
	d, err := r.Try(ctx, "api")
	if err != nil || d.Lease.Held() || d.Lease.Extend(ctx, time.Second) != nil || d.Lease.Release(ctx) != nil {
		t.Fatalf("lease of a rate rule: %+v %v", d, err)
	}
}

// Costs, rule values and call options at and past every bound are errors
// or valid decisions, never panics nor admissions above capacity.
func TestAdvHostileNumbers(t *testing.T) {
	r := newRegistry(t, map[string]ratesync.Rule{
		"tb":    {RatePerSecond: 1e-8, Burst: 1},
		"win":   {Algorithm: ratesync.SlidingWindow, Limit: 1_000_000_000_000_000, Window: 100_000_000 * time.Second},
		"slots": {MaxConcurrent: 1, LeaseTTL: time.Millisecond},
	})
	const maxInt = int(^uint(0) >> 1)
	for _, name := range []string{"tb", "win", "slots"} {
		l, _ := r.Get(name)
		for _, cost := range []int{-maxInt - 1, -1, 0, 1_000_000_000_000_001, maxInt} {
			if d, err := l.Try(ctx, ratesync.WithCost(cost)); err == nil {
				t.Errorf("%s: Try with cost %d: %+v, want an error", name, cost, d)
			}
			if lease, err := l.Acquire(ctx, ratesync.WithCost(cost)); err == nil {
				lease.Release(ctx)
				t.Errorf("%s: Acquire with cost %d admitted", name, cost)
			}
		}
		for _, d := range []time.Duration{-1, 1, 1<<63 - 1} {
			c, cancel := context.WithTimeout(ctx, 50*time.Millisecond) // a bucket refills in 1e8 s
			if lease, err := l.Acquire(c, ratesync.WithTimeout(d)); err == nil {
				lease.Release(ctx)
			}
			cancel()
		}
	}
	win, _ := r.For("win", "whole")
	if d, err := win.Try(ctx, ratesync.WithCost(1_000_000_000_000_000)); err != nil || !d.Allowed {
		t.Fatalf("a window of 1e15 taken whole: %+v %v", d, err)
	}
	if d, err := win.Try(ctx); err != nil || d.Allowed || d.RetryAfter <= 0 {
		t.Fatalf("the full window of 1e15: %+v %v, want a denial with a retry", d, err)
	}
	slots, _ := r.Get("slots")
	lease, err := slots.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ttl := range []time.Duration{-1 << 63, -1, 1, 100_000_000*time.Second + 1, 1<<63 - 1} {
		if err := lease.Extend(ctx, ttl); err == nil {
			t.Errorf("Extend by %v: accepted", ttl)
		}
	}
	lease.Release(ctx)
	for _, rule := range []ratesync.Rule{
		{Store: "main", RatePerSecond: 1e-9}, {Store: "main", RatePerSecond: 1e7}, {Store: "main", RatePerSecond: 1, Burst: maxInt},
		{Store: "main", Algorithm: ratesync.SlidingWindow, Limit: maxInt, Window: time.Second},
		{Store: "main", Algorithm: ratesync.SlidingWindow, Limit: 1, Window: 1<<63 - 1},
		{Store: "main", MaxConcurrent: 1, LeaseTTL: 1<<63 - 1}, {Store: "main", MaxConcurrent: maxInt},
		{Store: "main", RatePerSecond: 1e-8 * 2, Burst: 2, FallbackReplicas: 3},
		{Store: "main", Algorithm: 200, RatePerSecond: 1},
	} {
		if err := r.ConfigureLimiter("hostile", rule); err == nil {
			t.Errorf("rule %+v accepted", rule)
		}
	}
}

// Every distinct path of hostile identifiers (empty, separators, escapes,
// NUL, invalid UTF-8, braces, long) is its own key and its own state, on
// the fast path (Try) and the general one (Acquire).
func TestAdvHostileIdentifierPaths(t *testing.T) {
	long := string(make([]byte, 300))
	pool := []string{"", ":", "%", "%3A", "%25", "a", "a:b", "a%", "\x00", "\xff\xfe", "{u}", "}", long, long + ":"}
	var paths [][]string
	var grow func(p []string)
	grow = func(p []string) {
		paths = append(paths, p)
		if len(p) == 3 {
			return
		}
		for _, c := range pool {
			grow(append(append([]string(nil), p...), c))
		}
	}
	grow(nil)
	r := newRegistry(t, map[string]ratesync.Rule{
		"w":        {Algorithm: ratesync.SlidingWindow, Limit: 1, Window: time.Hour},
		"w:%":      {Algorithm: ratesync.SlidingWindow, Limit: 1, Window: time.Hour},
		"w%3A%25":  {Algorithm: ratesync.SlidingWindow, Limit: 1, Window: time.Hour},
		"slots":    {MaxConcurrent: 1, LeaseTTL: time.Hour},
		"slots:%3": {MaxConcurrent: 1, LeaseTTL: time.Hour},
	})
	keys := map[string]string{}
	for _, rule := range []string{"w", "w:%", "w%3A%25", "slots", "slots:%3"} {
		for _, p := range paths {
			l, err := r.For(rule, p...)
			if err != nil {
				t.Fatal(err)
			}
			what := rule + " " + strconv.Quote(strings.Join(p, "|")) + " (" + strconv.Itoa(len(p)) + " ids)"
			if other, dup := keys[l.Key()]; dup {
				t.Fatalf("%s and %s share the key %q", what, other, l.Key())
			}
			keys[l.Key()] = what
			if strings.HasPrefix(rule, "w") {
				d, err := l.Try(ctx)
				if err != nil || !d.Allowed {
					t.Fatalf("%s: first Try %+v %v: another path's state", what, d, err)
				}
				if d, _ := l.Try(ctx); d.Allowed {
					t.Fatalf("%s: second Try admitted on a limit of 1", what)
				}
				continue
			}
			lease, err := l.Acquire(ctx, ratesync.WithTimeout(time.Millisecond))
			if err != nil {
				t.Fatalf("%s: Acquire: %v: another path's slot", what, err)
			}
			if d, _ := l.Try(ctx); d.Allowed {
				t.Fatalf("%s: a second slot on max_concurrent 1", what)
			}
			// the lease stays held: every later path must still find its own slot free
			_ = lease
		}
	}
}

// Finding 12 (fixed). Release documents that it frees the slot "even from a request
// whose context is done", but a lease of an in-process store (the memory
// store, and every lease of the local fallback) is released on the
// caller's context as it is, and the memory store refuses a done context:
// the slot stays taken until its TTL (5 minutes by default). A deferred
// lease.Release(r.Context()) of a request whose client hung up, or Do
// whose context ended during fn, leaks the slot.
func TestAdvReleaseWithDoneContextInProcess(t *testing.T) {
	done, cancel := context.WithCancel(ctx)
	cancel()
	t.Run("memory store", func(t *testing.T) {
		r := newRegistry(t, map[string]ratesync.Rule{"one": {MaxConcurrent: 1}})
		one, _ := r.Get("one")
		lease, err := one.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		err = lease.Release(done)
		if d, _ := one.Try(ctx); !d.Allowed {
			t.Fatalf("Release with a done context: %v (held %v), and the slot is still taken", err, lease.Held())
		}
	})
	t.Run("local fallback", func(t *testing.T) {
		f := newFake(t)
		r := hookRegistry(t, f, map[string]ratesync.Rule{"one": {MaxConcurrent: 1}})
		f.setFail(errUnavailable)
		one, _ := r.Get("one")
		lease, err := one.Acquire(ctx)
		if err != nil || !lease.Fallback() {
			t.Fatalf("%v, fallback %v", err, lease.Fallback())
		}
		err = lease.Release(done)
		if d, _ := one.Try(ctx); !d.Allowed {
			t.Fatalf("Release of a fallback lease with a done context: %v (held %v), and the slot is still taken", err, lease.Held())
		}
	})
	t.Run("Do", func(t *testing.T) {
		r := newRegistry(t, map[string]ratesync.Rule{"one": {MaxConcurrent: 1}})
		one, _ := r.Get("one")
		c, cancel := context.WithCancel(ctx)
		one.Do(c, func(context.Context) error { cancel(); return nil }) // the client hangs up during the work
		if d, _ := one.Try(ctx); !d.Allowed {
			t.Fatal("Do whose context ended during fn left its slot taken")
		}
	})
}

// Finding 13 (minor) (fixed). Limiter.Reset removes a key's leases, freeing every slot,
// but wakes no local waiter: they sleep until their re-check.
func TestAdvResetWakesWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := ratesync.NewRegistry()
		r.ConfigureStore("m", "memory", nil)
		r.ConfigureLimiter("one", ratesync.Rule{Store: "m", MaxConcurrent: 1, LeaseTTL: time.Hour})
		one, _ := r.Get("one")
		held, err := one.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		waiter := goAcquire(one, ctx)
		synctest.Wait()
		if err := one.Reset(ctx); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		synctest.Wait()
		woke := waiter.done.Load()
		for !waiter.done.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		waiter.lease.Release(ctx)
		held.Release(ctx)
		r.Close()
		if !woke {
			t.Fatalf("Reset freed the slot, but the waiter was admitted only by its re-check, %v later", time.Since(start))
		}
	})
}

// Finding 14 (minor) (fixed). A per-key limiter builds its key on every use by asking
// its parent for its key (Limiter.skey), so a path of n identifiers costs
// O(n²) bytes and time per decision: 30,000 one-word identifiers (a 240 KB
// key) took 2.7 s per Try, 10,000 took 0.17 s. An application that maps
// client input to a path (For(name, strings.Split(urlPath, "/")...))
// hands a client a CPU lever; one identifier of the same length is linear.
func TestAdvLongIdentifierPathIsLinear(t *testing.T) {
	r := newRegistry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 1}})
	ids := make([]string, 5000)
	for i := range ids {
		ids[i] = "segment"
	}
	l, _ := r.For("api", ids...)
	keyLen := len(l.Key())
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	l.Key()
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > uint64(16*keyLen) {
		t.Fatalf("building the key of %d identifiers (%d bytes) allocated %d bytes, want O(key length)", len(ids), keyLen, n)
	}
}
