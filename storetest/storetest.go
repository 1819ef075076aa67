// Package storetest is the conformance suite for rate limit stores. A store
// package runs it with one call from its tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Options{
//			New: func(t *testing.T) driver.Store { return newStoreWithRandomPrefix(t) },
//		})
//	}
//
// The suite checks each policy against the reference model of
// internal/policy (exactly, when the store accepts an injected clock
// through NewWithClock; within the time the calls take otherwise), and
// hammers one key from many goroutines through the ratesync limiter layer,
// counting what was admitted: never more than the exact bound.
package storetest

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/internal/policy"
)

// Options says how to make the store under test.
type Options struct {
	// New returns a new, empty store with a key space of its own (a random
	// key prefix or schema). The suite closes it at the end of the subtest.
	New func(t *testing.T) driver.Store
	// NewWithClock, if set, returns a new, empty store that reads time from
	// now. It enables the exact comparisons with the reference model.
	NewWithClock func(t *testing.T, now func() time.Time) driver.Store
	// Resolution is the granularity of the store's clock (Redis TIME has
	// microseconds): the clock given to NewWithClock and the model then
	// move in whole steps of it. Zero means nanoseconds.
	Resolution time.Duration
	// Scale multiplies the sizes of the hammer tests (default 1).
	Scale float64
	// Hold, if set, holds the state of key for policies of kind in st,
	// from outside any decision (creating it if there is none), until
	// release is called: meanwhile a decision that would change it waits.
	// It enables the contended-clock tests; stores without it skip them.
	Hold func(t *testing.T, st driver.Store, key driver.Key, kind driver.Kind) (release func())
}

// Run runs the conformance suite.
func Run(t *testing.T, o Options) {
	if o.New == nil {
		t.Fatal("storetest: Options.New is required")
	}
	if o.Scale <= 0 {
		o.Scale = 1
	}
	s := &suite{o: o}
	t.Run("ModelTokenBucket", s.modelTokenBucket)
	t.Run("ModelSlidingWindow", s.modelSlidingWindow)
	t.Run("ModelConcurrency", s.modelConcurrency)
	t.Run("TokenBucketPacing", s.tokenBucketPacing)
	t.Run("TokenBucketBurst", s.tokenBucketBurst)
	t.Run("SlidingWindowLimit", s.slidingWindowLimit)
	t.Run("DeniedConsumesNothing", s.deniedConsumesNothing)
	t.Run("CompositeAllOrNothing", s.compositeAllOrNothing)
	t.Run("ReleaseIdempotent", s.releaseIdempotent)
	t.Run("ExpiredLeasesReclaimed", s.expiredLeasesReclaimed)
	t.Run("PeekConsumesNothing", s.peekConsumesNothing)
	t.Run("Reset", s.reset)
	t.Run("HammerExactlyLimit", s.hammerExactlyLimit)
	t.Run("HammerTokenBucketBound", s.hammerTokenBucketBound)
	t.Run("HammerConcurrencyNeverExceeded", s.hammerConcurrency)
	t.Run("WaitPacing", s.waitPacing)
	t.Run("WaitGivesUpAtOnce", s.waitGivesUpAtOnce)
	t.Run("ConcurrencyWaitersFIFO", s.concurrencyFIFO)
	t.Run("StateValues", s.stateValues)
	t.Run("ExtremeRates", s.extremeRates)
	t.Run("ExtremeValues", s.extremeValues)
	t.Run("InvalidChecksRejected", s.invalidChecksRejected)
	t.Run("CostMillion", s.costMillion)
	t.Run("Extend", s.extend)
	t.Run("ModelMultiCheck", s.modelMultiCheck)
	t.Run("HammerWindowCosts", s.hammerWindowCosts)
	t.Run("ContendedClock", s.contendedClock)
	t.Run("HostileIdentifiers", s.hostileIdentifiers)
}

type suite struct{ o Options }

func (s *suite) store(t *testing.T) driver.Store {
	t.Helper()
	st := s.o.New(t)
	t.Cleanup(func() { st.Close() })
	return st
}

func (s *suite) clockStore(t *testing.T) (driver.Store, *Clock) {
	t.Helper()
	if s.o.NewWithClock == nil {
		t.Skip("store takes no injected clock; exact model checks skipped (the other subtests check the model within call timing)")
	}
	c := NewClock()
	c.res = s.o.Resolution
	st := s.o.NewWithClock(t, c.Now)
	t.Cleanup(func() { st.Close() })
	return st, c
}

// registry returns a registry with the store under test as "s" and the
// given limiters.
func (s *suite) registry(t *testing.T, st driver.Store, rules map[string]ratesync.Rule) *ratesync.Registry {
	t.Helper()
	r := ratesync.NewRegistry()
	t.Cleanup(func() { r.Close() }) // its store workers end with it
	// The suite checks the store's answers: a slow call under load must
	// not be answered by a failure policy instead.
	if err := r.AddStore("s", st, ratesync.WithCallTimeout(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	for name, rule := range rules {
		rule.Store = "s"
		if rule.OnStoreError == "" {
			rule.OnStoreError = ratesync.Deny
		}
		if err := r.ConfigureLimiter(name, rule); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// Clock is a manual clock for stores that accept one.
type Clock struct {
	mu  sync.Mutex
	t   time.Time
	res time.Duration
}

// NewClock returns a clock set at an arbitrary fixed time.
func NewClock() *Clock { return &Clock{t: time.Unix(1_700_000_000, 0)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.res > 0 {
		return c.t.Truncate(c.res)
	}
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var ctx = context.Background()

func decide1(t *testing.T, st driver.Store, c driver.Check) driver.Result {
	t.Helper()
	res := make([]driver.Result, 1)
	ok, err := st.Decide(ctx, []driver.Check{c}, res)
	if err != nil {
		t.Fatalf("Decide(%v): %v", c.Key, err)
	}
	if ok != res[0].Allowed {
		t.Fatalf("Decide returned %v but result says %v", ok, res[0].Allowed)
	}
	return res[0]
}

func peek1(t *testing.T, st driver.Store, c driver.Check) driver.Result {
	t.Helper()
	res := make([]driver.Result, 1)
	if err := st.Peek(ctx, []driver.Check{c}, res); err != nil {
		t.Fatalf("Peek(%v): %v", c.Key, err)
	}
	return res[0]
}

func sameOutcome(t *testing.T, step int, got driver.Result, want policy.Outcome) {
	t.Helper()
	if got.Allowed != want.Allowed || got.Remaining != want.Remaining ||
		got.RetryAfter != time.Duration(want.RetryAfter) || got.ResetAfter != time.Duration(want.ResetAfter) {
		t.Fatalf("step %d: got allowed=%v remaining=%d retry=%v reset=%v, want allowed=%v remaining=%d retry=%v reset=%v",
			step, got.Allowed, got.Remaining, got.RetryAfter, got.ResetAfter,
			want.Allowed, want.Remaining, time.Duration(want.RetryAfter), time.Duration(want.ResetAfter))
	}
}

func (s *suite) modelTokenBucket(t *testing.T) {
	for _, p := range []driver.Policy{
		{Kind: driver.TokenBucket, Rate: 10, Burst: 1},
		{Kind: driver.TokenBucket, Rate: 1000, Burst: 1},
		{Kind: driver.TokenBucket, Rate: 0.5, Burst: 1},
		{Kind: driver.TokenBucket, Rate: 3, Burst: 5},
	} {
		st, clk := s.clockStore(t)
		start := clk.Now()
		rnd := rand.New(rand.NewPCG(uint64(p.Rate*1000), uint64(p.Burst)))
		interval := int64(p.Interval())
		var tat int64
		for i := range 400 {
			clk.Advance(time.Duration(rnd.Int64N(2 * interval)))
			cost := 1 + rnd.IntN(p.Burst)
			now := int64(clk.Now().Sub(start))
			var want policy.Outcome
			tat, want = policy.BucketTake(tat, now, interval, p.Burst, cost, true)
			got := decide1(t, st, driver.Check{Key: driver.Key{Name: "tb"}, Policy: p, Cost: cost})
			sameOutcome(t, i, got, want)
		}
	}
}

func (s *suite) modelSlidingWindow(t *testing.T) {
	for _, p := range []driver.Policy{
		{Kind: driver.SlidingWindow, Limit: 5, Window: time.Second},
		{Kind: driver.SlidingWindow, Limit: 1, Window: 300 * time.Millisecond},
		{Kind: driver.SlidingWindow, Limit: 20, Window: time.Minute},
	} {
		st, clk := s.clockStore(t)
		start := clk.Now()
		rnd := rand.New(rand.NewPCG(uint64(p.Limit), 7))
		var log policy.Log
		step := int64(p.Window) / int64(p.Limit)
		for i := range 400 {
			// Land exactly on window boundaries now and then.
			if rnd.IntN(10) == 0 {
				clk.Advance(p.Window)
			} else {
				clk.Advance(time.Duration(rnd.Int64N(2 * step)))
			}
			cost := 1 + rnd.IntN(min(p.Limit, 3))
			now := int64(clk.Now().Sub(start))
			want := log.Take(now, int64(p.Window), p.Limit, cost, true)
			got := decide1(t, st, driver.Check{Key: driver.Key{Name: "sw"}, Policy: p, Cost: cost})
			sameOutcome(t, i, got, want)
		}
	}
}

func (s *suite) modelConcurrency(t *testing.T) {
	st, clk := s.clockStore(t)
	start := clk.Now()
	p := driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 3, LeaseTTL: time.Second}
	rnd := rand.New(rand.NewPCG(3, 3))
	var live []policy.Lease
	for i := range 400 {
		clk.Advance(time.Duration(rnd.Int64N(int64(200 * time.Millisecond))))
		now := int64(clk.Now().Sub(start))
		live = policy.ExpireLeases(live, now)
		if len(live) > 0 && rnd.IntN(3) == 0 {
			k := rnd.IntN(len(live))
			if err := st.Release(ctx, driver.Key{Name: "cc"}, live[k].ID); err != nil {
				t.Fatal(err)
			}
			live, _ = policy.RemoveLease(live, live[k].ID)
			continue
		}
		want := policy.LeaseCheck(live, now, p.MaxConcurrent)
		got := decide1(t, st, driver.Check{Key: driver.Key{Name: "cc"}, Policy: p, Cost: 1})
		if want.Allowed {
			if got.Lease == "" {
				t.Fatalf("step %d: granted without a lease id", i)
			}
			live = append(live, policy.Lease{ID: got.Lease, Expiry: now + int64(p.LeaseTTL)})
			want = policy.LeaseCheck(live, now, p.MaxConcurrent)
			want.Allowed = true
		}
		sameOutcome(t, i, got, want)
	}
}

func (s *suite) tokenBucketPacing(t *testing.T) {
	st := s.store(t)
	p := driver.Policy{Kind: driver.TokenBucket, Rate: 10, Burst: 1}
	c := driver.Check{Key: driver.Key{Name: "pace"}, Policy: p, Cost: 1}
	if r := decide1(t, st, c); !r.Allowed || r.Remaining != 0 || r.Limit != 1 {
		t.Fatalf("first: got %+v, want allowed, remaining 0, limit 1", r)
	}
	r := decide1(t, st, c)
	if r.Allowed {
		t.Fatal("second back-to-back request at 10/s with burst 1 was allowed")
	}
	if r.RetryAfter <= 0 || r.RetryAfter > 100*time.Millisecond {
		t.Fatalf("retry after %v, want in (0, 100ms]", r.RetryAfter)
	}
	// Each of 1000/s and 0.5/s paces to its own interval.
	for _, rate := range []float64{1000, 0.5} {
		p := driver.Policy{Kind: driver.TokenBucket, Rate: rate, Burst: 1}
		c := driver.Check{Key: driver.Key{Name: "pace-" + p.Interval().String()}, Policy: p, Cost: 1}
		decide1(t, st, c)
		r := decide1(t, st, c)
		if r.Allowed && rate < 100 {
			t.Fatalf("rate %v: second immediate request allowed", rate)
		}
		if !r.Allowed && (r.RetryAfter <= 0 || r.RetryAfter > p.Interval()) {
			t.Fatalf("rate %v: retry after %v, want in (0, %v]", rate, r.RetryAfter, p.Interval())
		}
	}
}

func (s *suite) tokenBucketBurst(t *testing.T) {
	st := s.store(t)
	c := driver.Check{Key: driver.Key{Name: "burst"}, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 0.01, Burst: 5}, Cost: 1}
	for i := range 5 {
		r := decide1(t, st, c)
		if !r.Allowed || r.Remaining != 4-i || r.Limit != 5 {
			t.Fatalf("request %d: got %+v, want allowed with remaining %d of 5", i, r, 4-i)
		}
	}
	r := decide1(t, st, c)
	if r.Allowed || r.Remaining != 0 {
		t.Fatalf("6th: got %+v, want denied with remaining 0", r)
	}
	if r.RetryAfter <= 99*time.Second || r.RetryAfter > 100*time.Second {
		t.Fatalf("6th: retry after %v, want about 100s", r.RetryAfter)
	}
	c.Cost = 6
	if r := decide1(t, st, driver.Check{Key: driver.Key{Name: "burst-fresh"}, Policy: c.Policy, Cost: 6}); r.Allowed {
		t.Fatal("cost 6 on a burst of 5 was allowed")
	}
}

func (s *suite) slidingWindowLimit(t *testing.T) {
	st := s.store(t)
	c := driver.Check{Key: driver.Key{Name: "win"}, Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 5, Window: time.Minute}, Cost: 1}
	for i := range 5 {
		if r := decide1(t, st, c); !r.Allowed || r.Remaining != 4-i {
			t.Fatalf("request %d: got %+v", i, r)
		}
	}
	r := decide1(t, st, c)
	if r.Allowed || r.Remaining != 0 {
		t.Fatalf("6th: got %+v, want denied", r)
	}
	if r.RetryAfter <= 50*time.Second || r.RetryAfter > time.Minute {
		t.Fatalf("6th: retry after %v, want just under 1m", r.RetryAfter)
	}
	if r.ResetAfter <= 50*time.Second || r.ResetAfter > time.Minute {
		t.Fatalf("6th: reset after %v, want just under 1m", r.ResetAfter)
	}
}

func (s *suite) deniedConsumesNothing(t *testing.T) {
	st := s.store(t)
	win := driver.Policy{Kind: driver.SlidingWindow, Limit: 3, Window: time.Minute}
	conc := driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1, LeaseTTL: time.Minute}
	both := []driver.Check{{Key: driver.Key{Name: "k"}, Policy: win, Cost: 1}, {Key: driver.Key{Name: "k"}, Policy: conc, Cost: 1}}
	res := make([]driver.Result, 2)
	ok, err := st.Decide(ctx, both, res)
	if err != nil || !ok {
		t.Fatalf("first combined decision: ok=%v err=%v", ok, err)
	}
	// The slot is held: three combined tries are refused by concurrency and
	// must not spend the window.
	for i := range 3 {
		ok, err := st.Decide(ctx, both, res)
		if err != nil || ok {
			t.Fatalf("try %d with the slot held: ok=%v err=%v", i, ok, err)
		}
		if !res[0].Allowed || res[1].Allowed {
			t.Fatalf("try %d: window allowed=%v concurrency allowed=%v, want true/false", i, res[0].Allowed, res[1].Allowed)
		}
	}
	if r := peek1(t, st, both[0]); r.Remaining != 2 {
		t.Fatalf("window remaining after refused tries = %d, want 2 (only the admitted request counts)", r.Remaining)
	}
	// A token bucket refusal spends nothing either.
	tb := driver.Check{Key: driver.Key{Name: "t"}, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 0.01, Burst: 2}, Cost: 2}
	decide1(t, st, tb)
	tb.Cost = 1
	for range 3 {
		decide1(t, st, tb)
	}
	if r := peek1(t, st, tb); r.Remaining != 0 || r.RetryAfter < 99*time.Second {
		t.Fatalf("bucket after refusals: %+v, want remaining 0 and about 100s to the next token", r)
	}
}

func (s *suite) compositeAllOrNothing(t *testing.T) {
	st := s.store(t)
	p := driver.Policy{Kind: driver.SlidingWindow, Limit: 2, Window: time.Minute}
	a := driver.Check{Key: driver.Key{Name: "login_ip:1.2.3.4"}, Policy: p, Cost: 1}
	b := driver.Check{Key: driver.Key{Name: "login_account:alice"}, Policy: p, Cost: 1}
	decide1(t, st, b)
	decide1(t, st, b)
	res := make([]driver.Result, 2)
	for range 3 {
		ok, err := st.Decide(ctx, []driver.Check{a, b}, res)
		if err != nil || ok {
			t.Fatalf("composite with b exhausted: ok=%v err=%v", ok, err)
		}
		if !res[0].Allowed || res[1].Allowed {
			t.Fatalf("per-check answers: a=%v b=%v, want a=true b=false", res[0].Allowed, res[1].Allowed)
		}
	}
	if r := peek1(t, st, a); r.Remaining != 2 {
		t.Fatalf("a remaining after denied composites = %d, want 2", r.Remaining)
	}
	// With a concurrency check in the composite, a denial takes no lease.
	c := driver.Check{Key: driver.Key{Name: "slots"}, Policy: driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1, LeaseTTL: time.Minute}, Cost: 1}
	res3 := make([]driver.Result, 3)
	if ok, _ := st.Decide(ctx, []driver.Check{a, c, b}, res3); ok {
		t.Fatal("composite allowed with b exhausted")
	}
	if r := peek1(t, st, c); r.Remaining != 1 {
		t.Fatalf("slots remaining after denied composite = %d, want 1", r.Remaining)
	}
	// The denying check first, then keys never seen before.
	fresh := driver.Check{Key: driver.Key{Name: "never-seen"}, Policy: p, Cost: 1}
	freshSlot := driver.Check{Key: driver.Key{Name: "never-seen-slot"}, Policy: c.Policy, Cost: 1}
	if ok, err := st.Decide(ctx, []driver.Check{b, fresh, freshSlot}, res3); ok || err != nil {
		t.Fatalf("composite with the denial first: ok=%v err=%v", ok, err)
	}
	if res3[0].Allowed || !res3[1].Allowed || res3[1].Remaining != 2 || !res3[2].Allowed || res3[2].Lease != "" {
		t.Fatalf("per-check answers %+v", res3)
	}
	if r := peek1(t, st, fresh); r.Remaining != 2 {
		t.Fatalf("fresh key remaining = %d, want 2", r.Remaining)
	}
}

func (s *suite) releaseIdempotent(t *testing.T) {
	st := s.store(t)
	c := driver.Check{Key: driver.Key{Name: "rel"}, Policy: driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1, LeaseTTL: time.Minute}, Cost: 1}
	r := decide1(t, st, c)
	if !r.Allowed {
		t.Fatal("first lease denied")
	}
	for range 2 {
		if err := st.Release(ctx, driver.Key{Name: "rel"}, r.Lease); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Release(ctx, driver.Key{Name: "rel"}, "no-such-lease"); err != nil {
		t.Fatal(err)
	}
	if err := st.Release(ctx, driver.Key{Name: "never-used"}, "x"); err != nil {
		t.Fatal(err)
	}
	if r := decide1(t, st, c); !r.Allowed {
		t.Fatal("lease denied after release")
	}
	if r := decide1(t, st, c); r.Allowed {
		t.Fatal("double and stray releases raised capacity above 1")
	}
}

func (s *suite) expiredLeasesReclaimed(t *testing.T) {
	p := driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 2, LeaseTTL: 150 * time.Millisecond}
	c := driver.Check{Key: driver.Key{Name: "exp"}, Policy: p, Cost: 1}
	if s.o.NewWithClock != nil {
		st, clk := s.clockStore(t)
		decide1(t, st, c)
		decide1(t, st, c)
		r := decide1(t, st, c)
		if r.Allowed || r.RetryAfter != p.LeaseTTL {
			t.Fatalf("third: %+v, want denied with retry %v", r, p.LeaseTTL)
		}
		clk.Advance(p.LeaseTTL)
		if r := decide1(t, st, c); !r.Allowed || r.Remaining != 1 {
			t.Fatalf("after expiry: %+v, want allowed with 1 remaining", r)
		}
		return
	}
	st := s.store(t)
	decide1(t, st, c)
	decide1(t, st, c)
	r := decide1(t, st, c)
	if r.Allowed || r.RetryAfter <= 0 || r.RetryAfter > p.LeaseTTL {
		t.Fatalf("third: %+v, want denied with retry in (0, %v]", r, p.LeaseTTL)
	}
	time.Sleep(r.RetryAfter + 20*time.Millisecond) // let the store's TTL pass
	if r := decide1(t, st, c); !r.Allowed {
		t.Fatalf("after the TTL: %+v, want allowed", r)
	}
}

func (s *suite) peekConsumesNothing(t *testing.T) {
	st := s.store(t)
	checks := []driver.Check{
		{Key: driver.Key{Name: "p1"}, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 0.01, Burst: 2}, Cost: 1},
		{Key: driver.Key{Name: "p2"}, Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 2, Window: time.Minute}, Cost: 1},
		{Key: driver.Key{Name: "p3"}, Policy: driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 2, LeaseTTL: time.Minute}, Cost: 1},
	}
	res := make([]driver.Result, 3)
	for range 10 {
		if err := st.Peek(ctx, checks, res); err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if !r.Allowed || r.Remaining != 2 || r.Lease != "" {
				t.Fatalf("peek %v: %+v, want allowed, remaining 2, no lease", checks[i].Key, r)
			}
		}
	}
	for _, c := range checks {
		decide1(t, st, c)
		if r := peek1(t, st, c); r.Remaining != 1 || !r.Allowed {
			t.Fatalf("peek %v after one admission: %+v, want remaining 1", c.Key, r)
		}
	}
}

func (s *suite) reset(t *testing.T) {
	st := s.store(t)
	c := driver.Check{Key: driver.Key{Name: "r1"}, Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 1, Window: time.Minute}, Cost: 1}
	c2 := c
	c2.Key = driver.Key{Name: "r2"}
	decide1(t, st, c)
	decide1(t, st, c2)
	if err := st.Reset(ctx, driver.Key{Name: "r1"}); err != nil {
		t.Fatal(err)
	}
	if !decide1(t, st, c).Allowed {
		t.Fatal("r1 still limited after Reset")
	}
	if decide1(t, st, c2).Allowed {
		t.Fatal("Reset of r1 reset r2")
	}
	if err := st.ResetAll(ctx); err != nil {
		t.Fatal(err)
	}
	if !decide1(t, st, c2).Allowed {
		t.Fatal("r2 still limited after ResetAll")
	}
}

func (s *suite) n(base int) int { return max(1, int(float64(base)*s.o.Scale)) }

// hammer runs n goroutines released at once, each calling fn.
func hammer(n int, fn func(i int)) {
	var wg sync.WaitGroup
	startGate := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startGate
			fn(i)
		}()
	}
	close(startGate)
	wg.Wait()
}

func (s *suite) hammerExactlyLimit(t *testing.T) {
	st := s.store(t)
	r := s.registry(t, st, map[string]ratesync.Rule{
		"window": {Algorithm: ratesync.SlidingWindow, Limit: 5, Window: time.Minute},
		"bucket": {RatePerSecond: 0.001, Burst: 5},
		"slots":  {MaxConcurrent: 5},
		"both":   {RatePerSecond: 0.001, Burst: 5, MaxConcurrent: 100},
	})
	for _, name := range []string{"window", "bucket", "slots", "both"} {
		var admitted, errs atomic.Int64
		hammer(100, func(int) {
			d, err := r.Try(ctx, name)
			if err != nil {
				errs.Add(1)
			} else if d.Allowed {
				admitted.Add(1)
			}
		})
		if errs.Load() != 0 || admitted.Load() != 5 {
			t.Errorf("%s: 100 concurrent tries admitted %d (errors %d), want exactly 5", name, admitted.Load(), errs.Load())
		}
	}
}

func (s *suite) hammerTokenBucketBound(t *testing.T) {
	st := s.store(t)
	const rate, burst = 2000.0, 10
	r := s.registry(t, st, map[string]ratesync.Rule{"tb": {RatePerSecond: rate, Burst: burst}})
	l, _ := r.Get("tb")
	per := s.n(1000)
	var admitted, errs atomic.Int64
	start := time.Now()
	hammer(64, func(int) {
		for range per {
			d, err := l.Try(ctx)
			if err != nil {
				errs.Add(1)
			} else if d.Allowed {
				admitted.Add(1)
			}
		}
	})
	elapsed := time.Since(start)
	bound := int64(rate*elapsed.Seconds()) + burst + 1
	t.Logf("64 goroutines x %d tries in %v: admitted %d, bound rate*elapsed+burst = %d", per, elapsed, admitted.Load(), bound)
	if errs.Load() != 0 {
		t.Fatalf("%d errors", errs.Load())
	}
	if admitted.Load() > bound {
		t.Fatalf("admitted %d > rate*elapsed+burst = %d", admitted.Load(), bound)
	}
	if admitted.Load() < burst {
		t.Fatalf("admitted %d < burst %d", admitted.Load(), burst)
	}
}

func (s *suite) hammerConcurrency(t *testing.T) {
	st := s.store(t)
	r := s.registry(t, st, map[string]ratesync.Rule{"upload": {MaxConcurrent: 5, Timeout: time.Minute}})
	var live, peak, done atomic.Int64
	var errs atomic.Int64
	var firstErr atomic.Value
	tasks := s.n(50)
	hammer(tasks, func(int) {
		err := r.Do(ctx, "upload", func(context.Context) error {
			n := live.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(2 * time.Millisecond) // hold the slot for a while
			live.Add(-1)
			done.Add(1)
			return nil
		})
		if err != nil {
			errs.Add(1)
			firstErr.CompareAndSwap(nil, err)
		}
	})
	if errs.Load() != 0 || done.Load() != int64(tasks) {
		t.Fatalf("%d of %d tasks ran, %d errors, the first: %v", done.Load(), tasks, errs.Load(), firstErr.Load())
	}
	if peak.Load() > 5 {
		t.Fatalf("peak live holders %d > max_concurrent 5", peak.Load())
	}
	if peak.Load() < 2 {
		t.Fatalf("peak live holders %d: tasks never overlapped", peak.Load())
	}
	l, _ := r.Get("upload")
	if st, err := l.State(ctx); err != nil || st.Remaining != 5 {
		t.Fatalf("state after all released: %+v %v, want 5 remaining", st, err)
	}
}

func (s *suite) waitPacing(t *testing.T) {
	st := s.store(t)
	r := s.registry(t, st, map[string]ratesync.Rule{"api": {RatePerSecond: 10}})
	start := time.Now()
	for range 3 {
		lease, err := r.Acquire(ctx, "api")
		if err != nil {
			t.Fatal(err)
		}
		lease.Release(ctx)
	}
	// Three acquires at 10/s with burst 1: the 2nd and 3rd wait 100ms each.
	if el := time.Since(start); el < 195*time.Millisecond {
		t.Fatalf("3 acquires at 10/s took %v, want >= 200ms", el)
	}
	l, _ := r.Get("api")
	m := l.Metrics()
	if m.Acquisitions != 3 || m.MaxWait < 90*time.Millisecond || m.TotalWait <= 0 {
		t.Fatalf("metrics %+v", m)
	}
}

func (s *suite) waitGivesUpAtOnce(t *testing.T) {
	st := s.store(t)
	r := s.registry(t, st, map[string]ratesync.Rule{
		"slow":  {RatePerSecond: 1, Timeout: 100 * time.Millisecond},
		"slots": {MaxConcurrent: 1, Timeout: 50 * time.Millisecond},
	})
	if _, err := r.Acquire(ctx, "slow"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := r.Acquire(ctx, "slow")
	if !errors.Is(err, ratesync.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want ErrTimeout and DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 90*time.Millisecond {
		t.Fatalf("gave up after %v; the 1s wait exceeds the 100ms budget, so it should give up at once", el)
	}
	// A context deadline shorter than the rule's timeout wins.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := r.Acquire(cctx, "slow", ratesync.WithTimeout(time.Hour)); !errors.Is(err, ratesync.ErrTimeout) {
		t.Fatalf("ctx deadline: got %v", err)
	}
	// Waiting for a slot ends at the budget.
	held, err := r.Acquire(ctx, "slots")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(ctx)
	start = time.Now()
	if _, err := r.Acquire(ctx, "slots"); !errors.Is(err, ratesync.ErrTimeout) {
		t.Fatalf("slot wait: got %v, want ErrTimeout", err)
	}
	if el := time.Since(start); el < 45*time.Millisecond {
		t.Fatalf("slot wait gave up after %v, before its 50ms budget", el)
	}
	l, _ := r.Get("slots")
	if l.Metrics().Timeouts != 1 {
		t.Fatalf("timeouts = %d, want 1", l.Metrics().Timeouts)
	}
	// A cancelled context is not a timeout.
	cctx2, cancel2 := context.WithCancel(ctx)
	cancel2()
	if _, err := r.Acquire(cctx2, "slots"); !errors.Is(err, context.Canceled) || errors.Is(err, ratesync.ErrTimeout) {
		t.Fatalf("cancelled: got %v, want context.Canceled", err)
	}
}

func (s *suite) concurrencyFIFO(t *testing.T) {
	st := s.store(t)
	r := s.registry(t, st, map[string]ratesync.Rule{"one": {MaxConcurrent: 1, Timeout: 10 * time.Second}})
	l, _ := r.Get("one")
	held, err := l.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	order := make(chan int, 3)
	var wg sync.WaitGroup
	for i := 1; i <= 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lease, err := l.Acquire(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			order <- i
			lease.Release(ctx)
		}()
		// A waiter counts in Waiting once it joined the queue.
		for l.Metrics().Waiting < int64(i) {
			time.Sleep(time.Millisecond)
		}
	}
	held.Release(ctx)
	wg.Wait()
	close(order)
	var got []int
	for i := range order {
		got = append(got, i)
	}
	if len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Fatalf("grant order %v, want [1 2 3]", got)
	}
}

func (s *suite) stateValues(t *testing.T) {
	st := s.store(t)
	r := s.registry(t, st, map[string]ratesync.Rule{
		"win":   {Algorithm: ratesync.SlidingWindow, Limit: 2, Window: time.Minute},
		"tb":    {RatePerSecond: 0.01, Burst: 3},
		"slots": {MaxConcurrent: 5},
	})
	fresh := map[string]int{"win": 2, "tb": 3, "slots": 5}
	for name, limit := range fresh {
		s1, err := r.State(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if !s1.Allowed || s1.Remaining != limit || s1.Limit != limit || s1.CurrentUsage != 0 {
			t.Fatalf("%s fresh: %+v", name, s1)
		}
		if _, err := r.Acquire(ctx, name); err != nil {
			t.Fatal(err)
		}
		s2, _ := r.State(ctx, name)
		if s2.Remaining != limit-1 || s2.CurrentUsage != 1 || !s2.ResetAt.After(time.Now()) {
			t.Fatalf("%s after one: %+v", name, s2)
		}
	}
	for range 1 {
		r.Try(ctx, "win")
	}
	s3, _ := r.State(ctx, "win")
	if s3.Allowed || s3.Remaining != 0 || s3.CurrentUsage != 2 || s3.RetryAfter <= 0 {
		t.Fatalf("win full: %+v", s3)
	}
	for range 10 {
		r.State(ctx, "slots")
	}
	if s4, _ := r.State(ctx, "slots"); s4.Remaining != 4 {
		t.Fatalf("states consumed: %+v", s4)
	}
}
