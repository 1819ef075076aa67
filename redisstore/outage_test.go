package redisstore_test

import (
	"net"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/internal/testenv"
	"github.com/rate-sync/ratesync-go/redisstore"
)

// startRedis starts a redis-server of the test's own on a free loopback
// port and returns its port and a function that kills it (SIGKILL).
func startRedis(t *testing.T, port int) func() {
	t.Helper()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		if testenv.Required() {
			t.Fatalf("redis-server: %v", err)
		}
		t.Skipf("redis-server: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("redis-server on %d did not start", port)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var once sync.Once
	kill := func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGKILL) // the server this test started
			cmd.Wait()
		})
	}
	t.Cleanup(kill)
	return kill
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestOutage kills the Redis server under load, keeps the load going,
// restarts it, and records how each failure policy answered, how fast,
// and how long recovery took. Bounded: about 5 seconds.
func TestOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("outage test skipped in -short mode")
	}
	port := freePort(t)
	kill := startRedis(t, port)
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port), MaxRetries: -1,
		DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
	defer c.Close()
	s, err := redisstore.New(c)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := ratesync.NewRegistry()
	defer r.Close()
	r.AddStore("redis", s)
	policies := []ratesync.FailurePolicy{ratesync.Allow, ratesync.Deny, ratesync.Local}
	for _, p := range policies {
		rule := ratesync.Rule{Store: "redis", RatePerSecond: 1e6, Burst: 1000, OnStoreError: p}
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
			l, _ := r.GetOrClone(string(p), "client-"+strconv.Itoa(g))
			for {
				select {
				case <-stop:
					return
				default:
				}
				ph := phase.Load()
				t0 := time.Now()
				d, err := l.Try(bg)
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
					d.Lease.Release(bg)
				}
				time.Sleep(time.Millisecond) // pace the load
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	phase.Store(1)
	kill()
	time.Sleep(2 * time.Second)
	startRedis(t, port)
	restarted := time.Now()
	phase.Store(2)
	deadline := time.Now().Add(ratesync.BreakerCooldown + 5*time.Second)
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
