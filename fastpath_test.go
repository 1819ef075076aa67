package ratesync_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/memstore"
	"github.com/rate-sync/ratesync-go/storetest"
)

// Try without options on a single-policy rule on the memory store takes a
// shorter path than the general one (which a registry with an observer
// always takes). Both must give the same decisions, call by call, for every
// kind of key: the rule's own, per-key (plain and escaped identifiers) and
// chained.
func TestTryPathsAgree(t *testing.T) {
	ctx := context.Background()
	rules := map[string]ratesync.Rule{
		"bucket": {RatePerSecond: 5, Burst: 3},
		"window": {Algorithm: ratesync.SlidingWindow, Limit: 4, Window: 2 * time.Second},
	}
	open := func(opts ...ratesync.RegistryOption) (*ratesync.Registry, *storetest.Clock) {
		clk := storetest.NewClock()
		r := ratesync.NewRegistry(opts...)
		t.Cleanup(func() { r.Close() })
		ms := memstore.New(memstore.WithClock(clk.Now))
		t.Cleanup(func() { ms.Close() })
		if err := r.AddStore("m", ms); err != nil {
			t.Fatal(err)
		}
		for name, rule := range rules {
			rule.Store = "m"
			if err := r.ConfigureLimiter(name, rule); err != nil {
				t.Fatal(err)
			}
		}
		return r, clk
	}
	short, shortClk := open()
	events := 0
	general, generalClk := open(ratesync.WithObserver(func(ratesync.Event) { events++ }))

	limiters := func(r *ratesync.Registry, name string) []*ratesync.Limiter {
		base, err := r.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		return []*ratesync.Limiter{base, base.For("user-12345"), base.For("a:b%c"), base.For("t1").For("u:9"), base.For("")}
	}
	for name := range rules {
		ls, lg := limiters(short, name), limiters(general, name)
		for step := range 40 {
			for i := range ls {
				ds, errS := ls[i].Try(ctx)
				dg, errG := lg[i].Try(ctx)
				if errS != nil || errG != nil {
					t.Fatalf("%s step %d key %q: errors %v, %v", name, step, ls[i].Key(), errS, errG)
				}
				if (ds.Lease == nil) != !ds.Allowed || (dg.Lease == nil) != !dg.Allowed {
					t.Fatalf("%s step %d key %q: leases %v and %v for %v and %v", name, step, ls[i].Key(), ds.Lease, dg.Lease, ds.Allowed, dg.Allowed)
				}
				ds.Lease, dg.Lease = nil, nil
				if ds != dg {
					t.Fatalf("%s step %d key %q:\nshort path   %+v\ngeneral path %+v", name, step, ls[i].Key(), ds, dg)
				}
			}
			shortClk.Advance(70 * time.Millisecond)
			generalClk.Advance(70 * time.Millisecond)
		}
		for i := range ls {
			if ms, mg := ls[i].Metrics(), lg[i].Metrics(); !reflect.DeepEqual(ms, mg) {
				t.Fatalf("%s metrics differ: short %+v, general %+v", name, ms, mg)
			}
		}
	}
	if events == 0 {
		t.Fatal("the observed registry saw no events: both registries took the short path")
	}
}
