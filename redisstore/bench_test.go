package redisstore_test

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/redisstore"
	"github.com/redis/go-redis/v9"
)

// BenchmarkSingleBucket measures one-bucket decisions (the common case)
// with and without the compact paths (decide.lua's fast path and the
// batch's compact form), in one run, at 1, 32 and 256 goroutines on 10k
// keys, every decision admitted and written.
func BenchmarkSingleBucket(b *testing.B) {
	c := client(b)
	for _, g := range []int{1, 32, 256} {
		for _, v := range []struct {
			name string
			opts []redisstore.Option
		}{
			{"compact", nil},
			{"general", []redisstore.Option{redisstore.WithGeneralPaths()}},
		} {
			b.Run("c="+strconv.Itoa(g)+"/"+v.name, func(b *testing.B) {
				s := store(b, c, v.opts...)
				p := driver.Policy{Kind: driver.TokenBucket, Rate: 1e6, Burst: 1e6}
				const nkeys = 10_000
				keys := make([]driver.Key, nkeys)
				for i := range keys {
					keys[i] = driver.Key{Name: "bench", ID: strconv.Itoa(i)}
				}
				var next, failed atomic.Int64
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for range g {
					wg.Add(1)
					go func() {
						defer wg.Done()
						res := make([]driver.Result, 1)
						for {
							i := next.Add(1)
							if i > int64(b.N) {
								return
							}
							ok, err := s.Decide(bg, []driver.Check{{Key: keys[int(i*7919)%nkeys], Policy: p, Cost: 1}}, res)
							if err != nil || !ok {
								failed.Add(1)
							}
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "decisions/s")
				if failed.Load() != 0 {
					b.Fatalf("%d decisions failed or denied", failed.Load())
				}
			})
		}
	}
}

// serverTime returns the microseconds the server spent in EVALSHA and
// EVAL, and how many such calls it ran.
func serverTime(b testing.TB, c *redis.Client) (usec, calls int64) {
	info, err := c.Info(bg, "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		for _, cmd := range []string{"cmdstat_eval:", "cmdstat_evalsha:"} {
			if rest, ok := strings.CutPrefix(line, cmd); ok {
				for _, f := range strings.Split(rest, ",") {
					k, v, _ := strings.Cut(f, "=")
					n, _ := strconv.ParseInt(v, 10, 64)
					switch k {
					case "calls":
						calls += n
					case "usec":
						usec += n
					}
				}
			}
		}
	}
	return usec, calls
}

// BenchmarkSingleBucketServerTime measures the server's time per
// one-bucket decision, on a redis-server of its own, with and without the
// compact paths: alone (one decision per call) and in batches of 256 (as
// decisions that arrive together go). The two variants alternate, b.N
// decisions each, for 8 rounds, and the medians are reported: the server
// shares the machine, so only alternation gives a fair comparison.
func BenchmarkSingleBucketServerTime(b *testing.B) {
	port := freePort(b)
	startRedis(b, port)
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port)})
	defer c.Close()
	p := driver.Policy{Kind: driver.TokenBucket, Rate: 1e6, Burst: 1e6}
	for _, batch := range []int{1, 256} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			stores := []*redisstore.Store{store(b, c), store(b, c, redisstore.WithGeneralPaths())}
			decisions := make([][]driver.Check, batch)
			for i := range decisions {
				decisions[i] = []driver.Check{{Key: driver.Key{Name: "bench", ID: strconv.Itoa(i)}, Policy: p, Cost: 1}}
			}
			res := make([]driver.Result, 1)
			per := [2][]float64{}
			for range 8 {
				for v, s := range stores {
					usec0, _ := serverTime(b, c)
					n := 0
					for n < b.N {
						if batch == 1 {
							if ok, err := s.Decide(bg, decisions[0], res); err != nil || !ok {
								b.Fatal(ok, err)
							}
						} else {
							for _, err := range redisstore.DecideBatchErrs(s, decisions) {
								if err != nil {
									b.Fatal(err)
								}
							}
						}
						n += batch
					}
					usec, _ := serverTime(b, c)
					per[v] = append(per[v], float64(usec-usec0)/float64(n))
				}
			}
			slices.Sort(per[0])
			slices.Sort(per[1])
			b.Logf("server µs per decision, 8 rounds: compact %.1f, general %.1f", per[0], per[1])
			b.ReportMetric(per[0][4], "compact-server-µs/decision")
			b.ReportMetric(per[1][4], "general-server-µs/decision")
		})
	}
}
