package memstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/memstore"
	"github.com/rate-sync/ratesync-go/storetest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Options{
		New: func(t *testing.T) driver.Store { return memstore.New() },
		NewWithClock: func(t *testing.T, now func() time.Time) driver.Store {
			return memstore.New(memstore.WithClock(now))
		},
	})
}

func TestIdleKeysAreSwept(t *testing.T) {
	clk := storetest.NewClock()
	s := memstore.New(memstore.WithClock(clk.Now))
	defer s.Close()
	ctx := context.Background()
	tb := driver.Policy{Kind: driver.TokenBucket, Rate: 100, Burst: 1}
	win := driver.Policy{Kind: driver.SlidingWindow, Limit: 5, Window: time.Second}
	conc := driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1, LeaseTTL: 3 * time.Second}
	res := make([]driver.Result, 1)
	for i := range 10000 {
		p := []driver.Policy{tb, win}[i%2]
		s.Decide(ctx, []driver.Check{{Key: driver.Key{Name: "ip:" + string(rune('a'+i%26)) + time.Duration(i).String()}, Policy: p, Cost: 1}}, res)
	}
	s.Decide(ctx, []driver.Check{{Key: driver.Key{Name: "held"}, Policy: conc, Cost: 1}}, res)
	if n := s.Len(); n != 10001 {
		t.Fatalf("keys = %d, want 10001", n)
	}
	clk.Advance(time.Second)
	s.Sweep()
	if n := s.Len(); n != 1 {
		t.Fatalf("after the window: %d keys, want 1 (the held lease)", n)
	}
	clk.Advance(2 * time.Second)
	s.Sweep()
	if n := s.Len(); n != 0 {
		t.Fatalf("after the lease TTL: %d keys, want 0", n)
	}
}

func TestClosed(t *testing.T) {
	s := memstore.New()
	s.Close()
	s.Close()
	if err := s.Ping(context.Background()); err != memstore.ErrClosed {
		t.Fatalf("Ping after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Decide(context.Background(), []driver.Check{{Key: driver.Key{Name: "k"}, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 1, Burst: 1}, Cost: 1}}, make([]driver.Result, 1)); err != memstore.ErrClosed {
		t.Fatalf("Decide after Close = %v, want ErrClosed", err)
	}
}

func TestDecideAllocsNothing(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	ctx := context.Background()
	checks := []driver.Check{{Key: driver.Key{Name: "hot"}, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 1e6, Burst: 10}, Cost: 1}}
	multi := []driver.Check{checks[0], {Key: driver.Key{Name: "other"}, Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 1 << 20, Window: time.Millisecond}, Cost: 1}}
	res := make([]driver.Result, 2)
	s.Decide(ctx, multi, res)
	if n := testing.AllocsPerRun(1000, func() { s.Decide(ctx, checks, res) }); n != 0 {
		t.Fatalf("single-check Decide allocates %v per call", n)
	}
	if n := testing.AllocsPerRun(1000, func() { s.Decide(ctx, multi, res) }); n != 0 {
		t.Fatalf("two-check Decide allocates %v per call", n)
	}
}
