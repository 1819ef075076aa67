package benchmarks

import (
	"context"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"github.com/throttled/throttled/v2"
	throttledredis "github.com/throttled/throttled/v2/store/goredisstore.v9"
	ulule "github.com/ulule/limiter/v3"
	ululeredis "github.com/ulule/limiter/v3/drivers/store/redis"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/redisstore"
)

// The Redis benchmarks use database 9 of the server named by
// RATESYNC_TEST_REDIS_URL (default redis://127.0.0.1:6379) and empty it
// before and after each library.
const (
	redisBenchDB = 9
	redisKeys    = 10_000
	// redisRate is every library's rate per key (and burst): far above
	// what the benchmark sends to one key, so every call is admitted and is
	// a real read-modify-write. Not higher: at 1e9/s redis_rate's
	// floating-point GCRA loses the increment (1e-9 s against a time of
	// 3e8 s) and then never writes its key, so it would be measured
	// doing less than the others (INFO commandstats: no SET at all).
	redisRate = 1_000_000
)

func redisClient(b *testing.B) *redis.Client {
	url := os.Getenv("RATESYNC_TEST_REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379"
	}
	o, err := redis.ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	o.DB = redisBenchDB
	o.PoolSize = 300               // enough for 256 goroutines holding one connection each
	o.ContextTimeoutEnabled = true // calls end at their context's deadline
	c := redis.NewClient(o)
	if err := c.Ping(context.Background()).Err(); err != nil {
		c.Close()
		b.Skipf("no Redis at %s: %v", o.Addr, err)
	}
	c.FlushDB(context.Background())
	b.Cleanup(func() {
		c.FlushDB(context.Background())
		c.Close()
	})
	return c
}

var redisLibraries = []struct {
	name string
	make func(b *testing.B, c *redis.Client) decider
}{
	{"ratesync", func(b *testing.B, c *redis.Client) decider {
		s, err := redisstore.New(c)
		if err != nil {
			b.Fatal(err)
		}
		r := ratesync.NewRegistry()
		b.Cleanup(func() { r.Close(); s.Close() })
		// A call timeout well past any stall of the shared machine: a
		// decision that the local fallback answered is not the store's.
		r.AddStore("redis", s, ratesync.WithCallTimeout(10*time.Second))
		if err := r.ConfigureLimiter("api", ratesync.Rule{Store: "redis", RatePerSecond: redisRate, Burst: redisRate}); err != nil {
			b.Fatal(err)
		}
		l, _ := r.Get("api")
		return func(ctx context.Context, key string) bool {
			d, err := l.For(key).Try(ctx)
			return err == nil && d.Allowed && !d.Fallback && !d.FailedOpen
		}
	}},
	{"redis_rate", func(b *testing.B, c *redis.Client) decider {
		l := redis_rate.NewLimiter(c)
		lim := redis_rate.Limit{Rate: redisRate, Burst: redisRate, Period: time.Second}
		return func(ctx context.Context, key string) bool {
			res, err := l.Allow(ctx, key, lim)
			return err == nil && res.Allowed > 0
		}
	}},
	{"ulule", func(b *testing.B, c *redis.Client) decider {
		st, err := ululeredis.NewStore(c)
		if err != nil {
			b.Fatal(err)
		}
		l := ulule.New(st, ulule.Rate{Period: time.Second, Limit: redisRate})
		return func(ctx context.Context, key string) bool {
			res, err := l.Get(ctx, key)
			return err == nil && !res.Reached
		}
	}},
	{"throttled", func(b *testing.B, c *redis.Client) decider {
		st, err := throttledredis.NewCtx(c, "throttled:")
		if err != nil {
			b.Fatal(err)
		}
		l, err := throttled.NewGCRARateLimiterCtx(st, throttled.RateQuota{MaxRate: throttled.PerSec(redisRate), MaxBurst: redisRate})
		if err != nil {
			b.Fatal(err)
		}
		return func(ctx context.Context, key string) bool {
			limited, _, err := l.RateLimitCtx(ctx, key, 1)
			return err == nil && !limited
		}
	}},
}

// benchConcurrent runs b.N decisions from c goroutines on keys spread over
// redisKeys keys and reports decisions/s and the p50 and p99 latency of
// one decision.
func benchConcurrent(b *testing.B, d decider, c int) { benchConcurrentN(b, d, c, redisKeys) }

// benchConcurrentN is benchConcurrent on nkeys keys.
func benchConcurrentN(b *testing.B, d decider, c, nkeys int) {
	ctx := context.Background()
	for i := range nkeys { // first use creates the key: measure steady state
		d(ctx, keys[i])
	}
	lat := make([][]time.Duration, c)
	var next atomic.Int64
	var denied atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for g := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ls := make([]time.Duration, 0, b.N/c+1)
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					break
				}
				t0 := time.Now()
				if !d(ctx, keys[int(i*7919)%nkeys]) {
					denied.Add(1)
				}
				ls = append(ls, time.Since(t0))
			}
			lat[g] = ls
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := denied.Load(); n > 0 {
		b.Fatalf("%d decisions denied or failed", n)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
}

// BenchmarkRedis10kKeys compares one decision on Redis, on 10k keys, at 1,
// 32 and 256 concurrent goroutines.
func BenchmarkRedis10kKeys(b *testing.B) {
	for _, c := range []int{1, 32, 256} {
		for _, lib := range redisLibraries {
			b.Run("c="+strconv.Itoa(c)+"/"+lib.name, func(b *testing.B) {
				cl := redisClient(b)
				benchConcurrent(b, lib.make(b, cl), c)
			})
		}
	}
}
