package ratesync_test

import (
	"testing"

	"github.com/rate-sync/ratesync-go"
)

// Decision.Concurrency says which limit a decision reports: the rate (or
// window) or max_concurrent, for rules and composite parts that have both.
func TestDecisionConcurrency(t *testing.T) {
	r := ratesync.NewRegistry()
	defer r.Close()
	r.ConfigureStore("mem", "memory", nil)
	r.ConfigureLimiter("both", ratesync.Rule{Store: "mem", RatePerSecond: 1000, Burst: 2, MaxConcurrent: 2})
	r.ConfigureLimiter("slow", ratesync.Rule{Store: "mem", RatePerSecond: 0.001, Burst: 1, MaxConcurrent: 5})
	both, _ := r.Get("both")
	d1, _ := both.Try(ctx)
	d2, _ := both.Try(ctx)
	d3, err := both.Try(ctx)
	if err != nil || !d1.Allowed || !d2.Allowed || d3.Allowed {
		t.Fatalf("decisions %v %v %v, %v", d1.Allowed, d2.Allowed, d3.Allowed, err)
	}
	if !d3.Concurrency || d3.Limit != 2 {
		t.Fatalf("denied with both slots held: Concurrency %v, Limit %d; want the concurrency limit", d3.Concurrency, d3.Limit)
	}
	d1.Lease.Release(ctx)
	d2.Lease.Release(ctx)
	slow, _ := r.Get("slow")
	s1, _ := slow.Try(ctx)
	s2, _ := slow.Try(ctx)
	if !s1.Allowed || s2.Allowed || s2.Concurrency {
		t.Fatalf("rate denial: %+v", s2)
	}
	s1.Lease.Release(ctx)

	c, err := r.Composite(map[string]string{"a": "both", "b": "slow"}, ratesync.AllMustPass)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Check(ctx, map[string]string{"a": "k", "b": "k"})
	if err != nil || !res.Allowed {
		t.Fatalf("%+v %v", res, err)
	}
	res2, _ := c.Check(ctx, map[string]string{"a": "k", "b": "k"})
	if res2.Allowed || res2.TriggeredBy != "b" || res2.MostRestrictive.Concurrency {
		t.Fatalf("second check: %+v, want denied by b's rate", res2)
	}
	res.Lease.Release(ctx)
}

func TestStateConcurrency(t *testing.T) {
	r := ratesync.NewRegistry()
	defer r.Close()
	r.ConfigureStore("mem", "memory", nil)
	r.ConfigureLimiter("rate", ratesync.Rule{Store: "mem", RatePerSecond: 0.001, Burst: 2, MaxConcurrent: 5})
	r.ConfigureLimiter("slots", ratesync.Rule{Store: "mem", RatePerSecond: 0.001, Burst: 10, MaxConcurrent: 3})
	rate, _ := r.Get("rate")
	if st, _ := rate.State(ctx); st.Concurrency || st.Limit != 2 || st.Remaining != 2 {
		t.Fatalf("idle, 2 tokens and 5 slots: %+v, want the bucket's 2 of 2", st)
	}
	slots, _ := r.Get("slots")
	var held []*ratesync.Lease
	for range 3 {
		lease, err := slots.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, lease)
	}
	if st, _ := slots.State(ctx); !st.Concurrency || st.Limit != 3 || st.Remaining != 0 {
		t.Fatalf("7 tokens and no slot left: %+v, want the concurrency limit's 0 of 3", st)
	}
	for _, h := range held {
		h.Release(ctx)
	}
}
