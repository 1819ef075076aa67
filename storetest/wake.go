package storetest

import (
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
)

// WakeOptions says how to count the listeners a store holds for release
// notifications.
type WakeOptions struct {
	// Store is the store under test; it must implement
	// driver.ReleaseNotifier.
	Store driver.Store
	// Listeners counts, on the server, the store's subscriptions (or
	// listening connections) to its release channel.
	Listeners func(t *testing.T) int
	// What names the listeners in messages ("subscriptions to X").
	What string
	// Within is how soon after the release the waiters must have been
	// served: far below the lease TTL of one minute.
	Within time.Duration
}

// ReleaseWakesWaiters holds the one slot of a max_concurrent = 1 rule,
// starts 5 waiters, checks that the store serves them all through exactly
// one listener, then releases the slot and checks that the waiters are
// woken one after another by releases, well before the one-minute lease
// TTL. Bounded: about Within plus 5 s.
func ReleaseWakesWaiters(t *testing.T, o WakeOptions) {
	t.Helper()
	r := ratesync.NewRegistry()
	defer r.Close()
	if err := r.AddStore("store", o.Store); err != nil {
		t.Fatal(err)
	}
	if err := r.ConfigureLimiter("one", ratesync.Rule{Store: "store", MaxConcurrent: 1, LeaseTTL: time.Minute, Timeout: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	l, _ := r.Get("one")
	held, err := l.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const waiters = 5
	got := make(chan *ratesync.Lease, waiters)
	for range waiters {
		go func() {
			le, err := l.Acquire(ctx)
			if err != nil {
				t.Error(err)
			}
			got <- le
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := o.Listeners(t)
		if n == 1 {
			break
		}
		if n > 1 || time.Now().After(deadline) {
			t.Fatalf("%d %s, want 1", n, o.What)
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	held.Release(ctx)
	for i := range waiters {
		le := <-got
		if d := time.Since(start); d > o.Within {
			t.Fatalf("waiter %d woke after %v: not by the release", i, d)
		}
		le.Release(ctx)
	}
	t.Logf("%d waiters served one after another in %v (lease TTL 1m)", waiters, time.Since(start))
}
