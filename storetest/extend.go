package storetest

import (
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
)

// extend checks driver.Extender: a live lease is extended to ttl from
// now and keeps its slot that long; a released, expired or unknown lease
// is not extended and frees nothing. With an injected clock the times are
// exact; without one only the answers are checked.
func (s *suite) extend(t *testing.T) {
	var (
		st  driver.Store
		clk *Clock
	)
	if s.o.NewWithClock != nil {
		st, clk = s.clockStore(t)
	} else {
		st = s.store(t)
	}
	ex, ok := st.(driver.Extender)
	if !ok {
		t.Skip("store does not implement driver.Extender")
	}
	key := driver.Key{Name: "extend"}
	p := driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1, LeaseTTL: time.Second}
	c := driver.Check{Key: key, Policy: p, Cost: 1}
	extend := func(lease string, ttl time.Duration) bool {
		t.Helper()
		ok, err := ex.Extend(ctx, key, lease, ttl)
		if err != nil {
			t.Fatalf("Extend(%q): %v", lease, err)
		}
		return ok
	}
	r := decide1(t, st, c)
	if !r.Allowed || r.Lease == "" {
		t.Fatalf("first lease: %+v", r)
	}
	if !extend(r.Lease, 10*time.Second) {
		t.Fatal("a live lease was not extended")
	}
	if extend("no-such-lease", 10*time.Second) {
		t.Fatal("an unknown lease was extended")
	}
	if ok, err := ex.Extend(ctx, driver.Key{Name: "extend-never-used"}, r.Lease, time.Second); ok || err != nil {
		t.Fatalf("a lease extended on a key that never held it: %v %v", ok, err)
	}
	if clk != nil {
		// Past the lease's first TTL, the extended lease still holds the
		// slot, until 10 s after the extension.
		clk.Advance(2 * time.Second)
		if d := decide1(t, st, c); d.Allowed || d.RetryAfter != 8*time.Second {
			t.Fatalf("2s after extending to 10s: %+v, want denied with retry 8s", d)
		}
		clk.Advance(8 * time.Second)
		if extend(r.Lease, 10*time.Second) {
			t.Fatal("an expired lease was extended")
		}
		r = decide1(t, st, c)
		if !r.Allowed {
			t.Fatalf("after the extended lease expired: %+v, want allowed", r)
		}
	}
	if err := st.Release(ctx, key, r.Lease); err != nil {
		t.Fatal(err)
	}
	if extend(r.Lease, 10*time.Second) {
		t.Fatal("a released lease was extended")
	}
	if d := decide1(t, st, c); !d.Allowed {
		t.Fatalf("after the release: %+v, want allowed", d)
	}
	if d := decide1(t, st, c); d.Allowed {
		t.Fatal("failed extensions raised capacity above 1")
	}
}
