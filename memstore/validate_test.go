package memstore_test

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/memstore"
	"github.com/rate-sync/ratesync-go/storetest"
)

// Policies and costs outside the supported ranges are errors marked
// ErrBadRequest on every path (lone and multi-check decisions, prepared
// decisions, peeks), and consume nothing. Before validation, a bucket at
// 1e-10/s (whose interval overflowed to 1 ns) admitted 1000 of 1000, a rate
// of 7e8/s ran at 5e8/s and a negative cost put tokens back.
func TestInvalidChecksRejected(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	ctx := context.Background()
	valid := driver.Check{Key: driver.Key{Name: "ok"}, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 1, Burst: 1}, Cost: 1}
	bad := []driver.Check{
		{Key: driver.Key{Name: "slow"}, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 1e-10, Burst: 1}, Cost: 1},
		{Key: driver.Key{Name: "fast"}, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 7e8, Burst: 1}, Cost: 1},
		{Key: driver.Key{Name: "burst"}, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 0.01, Burst: 1 << 40}, Cost: 1},
		{Key: driver.Key{Name: "neg"}, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 1, Burst: 1}, Cost: -5},
		{Key: driver.Key{Name: "zero"}, Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 1, Window: time.Second}, Cost: 0},
		{Key: driver.Key{Name: "win"}, Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 1, Window: 1 << 62}, Cost: 1},
		{Key: driver.Key{Name: "lease"}, Policy: driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1, LeaseTTL: -1}, Cost: 1},
		{Key: driver.Key{Name: "kind"}, Policy: driver.Policy{Kind: 7}, Cost: 1},
	}
	for _, c := range bad {
		res := make([]driver.Result, 2)
		admitted, refused := 0, 0
		for range 1000 {
			ok, err := s.Decide(ctx, []driver.Check{c}, res)
			if ok {
				admitted++
			}
			if errors.Is(err, driver.ErrBadRequest) {
				refused++
			}
		}
		if admitted != 0 || refused != 1000 {
			t.Fatalf("%+v: admitted %d of 1000, refused %d as ErrBadRequest, want 0 and 1000", c, admitted, refused)
		}
		// In a decision of several checks, and whatever its place.
		for _, checks := range [][]driver.Check{{valid, c}, {c, valid}} {
			if ok, err := s.Decide(ctx, checks, res); ok || !errors.Is(err, driver.ErrBadRequest) {
				t.Fatalf("%+v in a multi-check decision: ok=%v err=%v, want ErrBadRequest", c, ok, err)
			}
			if err := s.Peek(ctx, checks, res); !errors.Is(err, driver.ErrBadRequest) {
				t.Fatalf("%+v in a peek: err=%v, want ErrBadRequest", c, err)
			}
		}
		p := s.Prepare(c.Key.Name, c.Policy)
		if _, err := p.Decide(ctx, "id", c.Cost); !errors.Is(err, driver.ErrBadRequest) {
			t.Fatalf("%+v prepared: err=%v, want ErrBadRequest", c, err)
		}
	}
	// The valid check of the refused decisions took nothing.
	if ok, err := s.Decide(ctx, []driver.Check{valid}, make([]driver.Result, 1)); !ok || err != nil {
		t.Fatalf("valid check after the refused decisions: ok=%v err=%v", ok, err)
	}
	if p := s.Prepare("x", bad[0].Policy).(*memstore.Prepared); p.Err() == nil || !errors.Is(p.Err(), driver.ErrBadRequest) {
		t.Fatalf("Prepared.Err = %v", p.Err())
	}
	if s.Len() != 1 {
		t.Fatalf("%d keys stored, want 1: refused checks create no state", s.Len())
	}
}

// An extension must be a valid lease TTL: a zero or negative one used to
// be accepted and expire the lease at once.
func TestExtendValidatesTTL(t *testing.T) {
	clk := storetest.NewClock()
	s := memstore.New(memstore.WithClock(clk.Now))
	defer s.Close()
	ctx := context.Background()
	c := driver.Check{Key: driver.Key{Name: "k"}, Policy: driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1, LeaseTTL: time.Second}, Cost: 1}
	res := make([]driver.Result, 1)
	if ok, _ := s.Decide(ctx, []driver.Check{c}, res); !ok {
		t.Fatal("lease denied")
	}
	for _, ttl := range []time.Duration{0, -time.Second, time.Nanosecond, driver.MaxHorizon + 1} {
		if held, err := s.Extend(ctx, c.Key, res[0].Lease, ttl); held || !errors.Is(err, driver.ErrBadRequest) {
			t.Fatalf("Extend(ttl %v) = %v, %v; want ErrBadRequest", ttl, held, err)
		}
	}
	if ok, _ := s.Decide(ctx, []driver.Check{c}, make([]driver.Result, 1)); ok {
		t.Fatal("a refused extension freed the slot")
	}
}

// A sweep interval below the minimum is raised to it: 1 ns used to run the
// sweeper in a loop that spun a core.
func TestSweepIntervalMinimum(t *testing.T) {
	for _, tt := range []struct{ set, want time.Duration }{
		{0, memstore.DefaultSweepInterval},
		{time.Nanosecond, driver.MinSweepInterval},
		{-time.Second, driver.MinSweepInterval},
		{time.Minute, time.Minute},
	} {
		s := memstore.New(memstore.WithSweepInterval(tt.set))
		got := s.SweepInterval()
		s.Close()
		if got != tt.want {
			t.Errorf("WithSweepInterval(%v): sweeps every %v, want %v", tt.set, got, tt.want)
		}
	}
}

// An admission of cost n is one entry in a sliding window: cost 1e6 on a
// window of 1e6 per minute allocates a few hundred bytes, not a slot per
// unit (8 MB before), and later admissions add one entry each.
func TestWindowCostIsOneEntry(t *testing.T) {
	clk := storetest.NewClock()
	s := memstore.New(memstore.WithClock(clk.Now))
	defer s.Close()
	ctx := context.Background()
	p := driver.Policy{Kind: driver.SlidingWindow, Limit: 1_000_000, Window: time.Minute}
	res := make([]driver.Result, 1)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	ok, err := s.Decide(ctx, []driver.Check{{Key: driver.Key{Name: "big"}, Policy: p, Cost: 1_000_000}}, res)
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	if !ok || err != nil || res[0].Remaining != 0 {
		t.Fatalf("cost 1e6: ok=%v err=%v %+v", ok, err, res[0])
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1024 {
		t.Fatalf("cost 1e6 allocated %d bytes, want one entry's worth", n)
	}
	t.Logf("cost 1e6 on a 1e6-per-minute window: %v", took)
	// 1000 admissions of cost 1000, one per ms, fill a window of 1e6 on a
	// key of their own: 1000 entries, 16 bytes each, in a ring of 1024.
	p.Window = time.Second
	clk.Advance(time.Second)
	runtime.ReadMemStats(&before)
	for range 1000 {
		clk.Advance(time.Millisecond)
		if ok, _ := s.Decide(ctx, []driver.Check{{Key: driver.Key{Name: "many"}, Policy: p, Cost: 1000}}, res); !ok {
			t.Fatal("denied below the limit")
		}
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
		t.Fatalf("1000 admissions allocated %d bytes, want about 32 KB (rings of 8 to 1024 entries)", n)
	}
}
