package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rate-sync/ratesync-go/driver"
)

// BenchmarkSingleBucket compares, in one run, the paths of a lone
// token-bucket decision: batched (the default: batchSQL once decisions
// queue up), the single statement alone (bucketSQL, batching off), and
// the function that decides everything else; 32 goroutines on 10,000
// keys, a pool of 40, every decision admitted, as in
// benchmarks/postgres_test.go. Each path is kept only while it earns its
// place here. WAL-B/op and
// index-kB are deterministic where the timings are not (a shared machine):
// the WAL a decision writes, and the indexes' size at the end.
func BenchmarkSingleBucket(b *testing.B) {
	url := os.Getenv("RATESYNC_TEST_POSTGRES_URL")
	if url == "" {
		b.Skip("RATESYNC_TEST_POSTGRES_URL is not set")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = 40
	for _, unlogged := range []bool{false, true} {
		for _, path := range []string{"batched", "statement", "function"} {
			name := "logged/" + path
			if unlogged {
				name = "unlogged/" + path
			}
			b.Run(name, func(b *testing.B) {
				p, err := pgxpool.NewWithConfig(context.Background(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close()
				var r [5]byte
				rand.Read(r[:])
				schema := "rsbench_" + hex.EncodeToString(r[:])
				defer p.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
				s, _ := New(p, WithSchema(schema), WithUnlogged(unlogged))
				defer s.Close()
				s.noBucket = path == "function"
				if path == "statement" {
					s.batchSize = 1
				}
				benchBuckets(b, s, p)
				var idx int64
				p.QueryRow(context.Background(), "SELECT pg_indexes_size($1::regclass)", schema+".rate_limiter_state").Scan(&idx)
				b.ReportMetric(float64(idx)/1024, "index-kB")
			})
		}
	}
}

func benchBuckets(b *testing.B, s *Store, p *pgxpool.Pool) {
	ctx := context.Background()
	const nkeys, conc = 10_000, 32
	pol := driver.Policy{Kind: driver.TokenBucket, Rate: 1e6, Burst: 1_000_000_000} // admits everything
	keys := make([]driver.Key, nkeys)
	res := make([]driver.Result, 1)
	for i := range keys {
		keys[i] = driver.Key{Name: "api", ID: "user-" + strconv.Itoa(i)}
		if _, err := s.Decide(ctx, []driver.Check{{Key: keys[i], Policy: pol, Cost: 1}}, res); err != nil {
			b.Fatal(err)
		}
	}
	wal := func() (lsn int64) {
		p.QueryRow(ctx, "SELECT pg_current_wal_lsn() - '0/0'").Scan(&lsn)
		return lsn
	}
	wal0 := wal()
	lat := make([][]time.Duration, conc)
	var next, failed atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := make([]driver.Result, 1)
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				t0 := time.Now()
				ok, err := s.Decide(ctx, []driver.Check{{Key: keys[int(i*7919)%nkeys], Policy: pol, Cost: 1}}, res)
				if !ok || err != nil {
					failed.Add(1)
				}
				lat[g] = append(lat[g], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(wal()-wal0)/float64(b.N), "WAL-B/op")
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d decisions denied or failed", n)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/el.Seconds(), "decisions/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
}
