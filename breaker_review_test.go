package ratesync_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
)

// Found by a review of the breaker's shortcut, finding A. The breaker's shortcut (allow returns b.fast while
// the breaker is closed and clean) drops the success of a call that was
// started while clean and answers after another call's failure: gobreaker
// never sees it, so it does not reset the consecutive-failure count.
// Plain gobreaker sees: fail(a), success(b), fail(c): 1 failure in a row.
// With the shortcut it sees fail(a), fail(c): 2 in a row, and opens.
func TestReviewBreakerDropsSuccessAfterFailure(t *testing.T) {
	s := newHookStore(t)
	var mu sync.Mutex
	gates := map[string]chan error{"a": make(chan error), "b": make(chan error)}
	entered := make(chan string, 4)
	s.setHooks(func(ctx context.Context, cs []driver.Check) error {
		id := cs[0].Key.ID
		mu.Lock()
		g := gates[id]
		mu.Unlock()
		if g == nil {
			return errUnavailable // "c": fails at once
		}
		entered <- id
		return <-g
	}, nil)
	r := hookRegistry(t, s, map[string]ratesync.Rule{"api": {RatePerSecond: 1e6, Burst: 1000000, OnStoreError: ratesync.Deny}},
		ratesync.WithBreaker(2, time.Hour), ratesync.WithCallTimeout(time.Minute))
	api, _ := r.Get("api")
	res := map[string]chan error{"a": make(chan error, 1), "b": make(chan error, 1)}
	for _, id := range []string{"a", "b"} {
		go func() {
			_, err := api.For(id).Try(ctx)
			res[id] <- err
		}()
	}
	<-entered
	<-entered // both calls are in the store, both started while clean
	gates["a"] <- errUnavailable
	if err := <-res["a"]; err == nil {
		t.Fatal("a: want an error")
	}
	gates["b"] <- nil // b succeeds after a's failure
	if err := <-res["b"]; err != nil {
		t.Fatalf("b: %v", err)
	}
	api.For("c").Try(ctx) // fails: one failure since b's success
	if st := breakerOf2(r, "h"); st != ratesync.BreakerClosed {
		t.Fatalf("breaker %s after fail, success, fail (threshold 2): the success was not counted", st)
	}
}

// Found by a review of the breaker's shortcut, finding B. A failure of a call started while the breaker was
// closed and clean is reported after the breaker opened and its cool-down
// passed: failed asks gobreaker for a fresh Allow, takes the half-open
// probe slot with it and reopens the breaker, although no probe was made.
// Plain gobreaker drops an outcome of an earlier generation.
func TestReviewStaleFailureTakesTheProbe(t *testing.T) {
	s := newHookStore(t)
	gate := make(chan error)
	entered := make(chan struct{}, 1)
	s.setHooks(func(ctx context.Context, cs []driver.Check) error {
		switch cs[0].Key.ID {
		case "x":
			entered <- struct{}{}
			return <-gate
		case "a":
			return errUnavailable
		}
		return nil // the store has recovered
	}, nil)
	r := hookRegistry(t, s, map[string]ratesync.Rule{"api": {RatePerSecond: 1e6, Burst: 1000000, OnStoreError: ratesync.Deny}},
		ratesync.WithBreaker(1, 50*time.Millisecond), ratesync.WithCallTimeout(time.Minute))
	api, _ := r.Get("api")
	xdone := make(chan struct{})
	go func() { api.For("x").Try(ctx); close(xdone) }()
	<-entered             // x started while clean
	api.For("a").Try(ctx) // opens the breaker (threshold 1)
	if st := breakerOf2(r, "h"); st != ratesync.BreakerOpen {
		t.Fatalf("breaker %s, want open", st)
	}
	time.Sleep(80 * time.Millisecond) // the cool-down passes
	gate <- errUnavailable            // x, asked before the breaker opened, fails now
	<-xdone
	if _, err := api.For("p").Try(ctx); err != nil {
		t.Fatalf("the first call after the cool-down was refused (%v): a stale failure took the probe and reopened the breaker", err)
	}
}

// Found by a review of the breaker's shortcut, finding D. The release of a replaced store's last lease races
// the release call's own exit: end's exit runs tryClose (inflight 0, marks
// it, sees leases 1: unmarks) while the caller's leaseDone takes leases to
// 0 and its tryClose finds the mark (fails). Nobody closes the store until
// the retire timer (the longest lease TTL, 5 min by default).
func TestReviewReplacedStoreClosesAfterLastRelease(t *testing.T) {
	misses := 0
	for i := range 300 {
		id := fmt.Sprint("rv2-old-", i)
		old := ownedHookStore(t, id)
		ownedHookStore(t, id+"-new")
		r := ratesync.NewRegistry(ratesync.WithLogger(quiet))
		if err := r.ConfigureStore("s", "adversarial-hook", map[string]any{"id": id, "call_timeout_seconds": 30}); err != nil {
			t.Fatal(err)
		}
		r.ConfigureLimiter("slots", ratesync.Rule{Store: "s", MaxConcurrent: 1, LeaseTTL: time.Minute, OnStoreError: ratesync.Deny})
		slots, _ := r.Get("slots")
		lease, err := slots.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.ConfigureStore("s", "adversarial-hook", map[string]any{"id": id + "-new", "call_timeout_seconds": 30}); err != nil {
			t.Fatal(err)
		}
		if err := lease.Release(ctx); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Second)
		for old.closeCalls.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if old.closeCalls.Load() == 0 {
			misses++
		}
		r.Close()
	}
	if misses > 0 {
		t.Fatalf("%d of 300 replaced stores stayed open after their last lease was released", misses)
	}
}
