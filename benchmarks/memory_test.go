package benchmarks

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go"
	sethvargo "github.com/sethvargo/go-limiter"
	"github.com/sethvargo/go-limiter/memorystore"
	ulule "github.com/ulule/limiter/v3"
	ululememory "github.com/ulule/limiter/v3/drivers/store/memory"
	"golang.org/x/time/rate"
)

// Every limiter is configured so that every decision is allowed, so each
// benchmark measures the cost of one decision on the admitted path: lookup,
// policy maths, state update. The peers get a huge rate; ratesync's highest
// supported rate is driver.MaxRate (1e6/s), so it gets that rate with a
// burst of 1e9 tokens (1000 s of refill): a benchmark run decides far fewer
// than 1e9 times on one limiter, so no decision is denied either.
const (
	hugeRate      = 1e9
	ratesyncRate  = 1e6
	ratesyncBurst = 1_000_000_000
	numKeys       = 100_000
)

var keys = func() []string {
	k := make([]string, numKeys)
	for i := range k {
		k[i] = "user-" + strconv.Itoa(i)
	}
	return k
}()

// decider is one library's "decide for key k" call.
type decider func(ctx context.Context, key string) bool

func benchDecider(b *testing.B, d decider, hot bool) {
	ctx := context.Background()
	for _, k := range keys { // warm every key: steady state, not first use
		d(ctx, k)
	}
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1) * 7919)
		for pb.Next() {
			k := keys[0]
			if !hot {
				i++
				k = keys[i%numKeys]
			}
			if !d(ctx, k) {
				b.Fatal("denied")
			}
		}
	})
}

func ratesyncDecider(b *testing.B) decider {
	r := ratesync.NewRegistry()
	b.Cleanup(func() { r.Close() })
	if err := r.ConfigureStore("mem", "memory", nil); err != nil {
		b.Fatal(err)
	}
	if err := r.ConfigureLimiter("api", ratesync.Rule{Store: "mem", RatePerSecond: ratesyncRate, Burst: ratesyncBurst}); err != nil {
		b.Fatal(err)
	}
	l, _ := r.Get("api")
	return func(ctx context.Context, key string) bool {
		d, err := l.For(key).Try(ctx)
		return err == nil && d.Allowed && !d.FailedOpen // a store error is no decision
	}
}

func xtimeDecider(b *testing.B) decider {
	var mu sync.Mutex
	m := map[string]*rate.Limiter{}
	return func(_ context.Context, key string) bool {
		mu.Lock()
		l, ok := m[key]
		if !ok {
			l = rate.NewLimiter(hugeRate, 1_000_000)
			m[key] = l
		}
		mu.Unlock()
		return l.Allow()
	}
}

func sethvargoDecider(b *testing.B) decider {
	var s sethvargo.Store
	s, err := memorystore.New(&memorystore.Config{Tokens: 1 << 40, Interval: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close(context.Background()) })
	return func(ctx context.Context, key string) bool {
		_, _, _, ok, err := s.Take(ctx, key)
		return err == nil && ok
	}
}

func ululeDecider(b *testing.B) decider {
	l := ulule.New(ululememory.NewStore(), ulule.Rate{Period: time.Second, Limit: 1 << 40})
	return func(ctx context.Context, key string) bool {
		c, err := l.Get(ctx, key)
		return err == nil && !c.Reached
	}
}

var libraries = []struct {
	name string
	make func(b *testing.B) decider
}{
	{"ratesync", ratesyncDecider},
	{"sethvargo", sethvargoDecider},
	{"xtime-map", xtimeDecider},
	{"ulule", ululeDecider},
}

func BenchmarkMemoryHotKey(b *testing.B) {
	for _, lib := range libraries {
		b.Run(lib.name, func(b *testing.B) { benchDecider(b, lib.make(b), true) })
	}
}

func BenchmarkMemory100kKeys(b *testing.B) {
	for _, lib := range libraries {
		b.Run(lib.name, func(b *testing.B) { benchDecider(b, lib.make(b), false) })
	}
}
