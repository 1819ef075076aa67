package storetest

import (
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
)

// OutageOptions says how to take a store's server down and up again.
type OutageOptions struct {
	// Store is a store on a server the test started itself. Its client
	// should use short timeouts (a few hundred milliseconds).
	Store driver.Store
	// Kill stops the server at once (SIGKILL); Restart starts it again on
	// the same address and returns once it accepts connections.
	Kill, Restart func()
}

// Outage runs 6 goroutines of Try through the store, two per failure
// policy (allow, deny, local), kills the server after 0.5 s, keeps the load
// for 2 s, restarts the server and waits for the first real decision. It
// logs the answers by phase and policy, the latency of the answers while
// the server is down, and the time to recover, and fails unless every
// policy answered as documented (allow: failed open, deny: errors, local:
// fallback) with a p99 under 250 ms while down. Bounded: about 5 to 10 s.
func Outage(t *testing.T, o OutageOptions) {
	t.Helper()
	r := ratesync.NewRegistry()
	defer r.Close()
	if err := r.AddStore("store", o.Store); err != nil {
		t.Fatal(err)
	}
	policies := []ratesync.FailurePolicy{ratesync.Allow, ratesync.Deny, ratesync.Local}
	for _, p := range policies {
		rule := ratesync.Rule{Store: "store", RatePerSecond: 1e6, Burst: 1000, OnStoreError: p}
		if p == ratesync.Local {
			rule.FallbackReplicas = 2
		}
		if err := r.ConfigureLimiter(string(p), rule); err != nil {
			t.Fatal(err)
		}
	}
	type tally struct{ real, failedOpen, fallback, errs atomic.Int64 }
	var phase atomic.Int32 // 0 up, 1 down, 2 restarted
	var counts [3][3]tally
	var latMu sync.Mutex
	var downLat []time.Duration
	var recovered atomic.Int64 // unix ns of the first real decision after restart
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := policies[g%3]
			l, _ := r.For(string(p), "client-"+strconv.Itoa(g))
			for {
				select {
				case <-stop:
					return
				default:
				}
				ph := phase.Load()
				t0 := time.Now()
				d, err := l.Try(ctx)
				lat := time.Since(t0)
				tl := &counts[ph][g%3]
				switch {
				case err != nil:
					tl.errs.Add(1)
				case d.Fallback:
					tl.fallback.Add(1)
				case d.FailedOpen:
					tl.failedOpen.Add(1)
				default:
					tl.real.Add(1)
					if ph == 2 {
						recovered.CompareAndSwap(0, time.Now().UnixNano())
					}
				}
				if ph == 1 {
					latMu.Lock()
					downLat = append(downLat, lat)
					latMu.Unlock()
				}
				if d.Lease != nil {
					d.Lease.Release(ctx)
				}
				time.Sleep(time.Millisecond) // pace the load
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	phase.Store(1)
	o.Kill()
	time.Sleep(2 * time.Second)
	o.Restart()
	restarted := time.Now()
	phase.Store(2)
	deadline := time.Now().Add(ratesync.DefaultBreakerCooldown + 8*time.Second)
	for recovered.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()

	for ph, name := range []string{"before", "outage", "after restart"} {
		for i, p := range policies {
			tl := &counts[ph][i]
			t.Logf("%-13s %-5s real %5d  failed-open %5d  fallback %5d  errors %5d", name, p, tl.real.Load(), tl.failedOpen.Load(), tl.fallback.Load(), tl.errs.Load())
		}
	}
	slices.Sort(downLat)
	if len(downLat) > 0 {
		t.Logf("answers during the outage: %d, p50 %v, p99 %v, max %v", len(downLat), downLat[len(downLat)/2], downLat[len(downLat)*99/100], downLat[len(downLat)-1])
	}
	if recovered.Load() == 0 {
		t.Fatal("no real decision after the restart")
	}
	t.Logf("recovery: first real decision %v after the restart", time.Unix(0, recovered.Load()).Sub(restarted).Round(time.Millisecond))

	down := &counts[1]
	if down[0].errs.Load() != 0 || down[0].failedOpen.Load() == 0 {
		t.Errorf("allow during the outage: %d errors, %d failed open; want only failed-open answers", down[0].errs.Load(), down[0].failedOpen.Load())
	}
	if down[1].errs.Load() == 0 || down[1].failedOpen.Load()+down[1].fallback.Load() != 0 {
		t.Errorf("deny during the outage: want errors only")
	}
	if down[2].fallback.Load() == 0 || down[2].errs.Load() != 0 {
		t.Errorf("local during the outage: %d fallback, %d errors; want fallback answers", down[2].fallback.Load(), down[2].errs.Load())
	}
	if p99 := downLat[len(downLat)*99/100]; p99 > 250*time.Millisecond {
		t.Errorf("p99 answer during the outage %v: the breaker should answer at once", p99)
	}
}
