// Command tiers gives each API customer the quota of its tier: free 100
// requests per hour, pro 1,000, enterprise 10,000 (scaled down ten times:
// 10, 100 and 1,000 per 6 minutes), each API key with a state of its own (rate-sync's get_or_clone_limiter(f"api_{tier}",
// api_key) is ratesync.For("api_"+tier, key)).
//
//	go run ./examples/tiers                                        # memory
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/tiers
//	POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test go run ./examples/tiers
//
// Four customers (two on free) each send their quota and 10 more requests
// at once, from 8 goroutines: each is admitted exactly its quota, whatever
// the others do, and has none left until its window slides. The limits are
// in rate-sync.toml beside this file (embedded); it says how to write the
// description's hourly numbers.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/examples/internal/storeenv"
	_ "github.com/rate-sync/ratesync-go/pgstore"    // engine = "postgres"
	_ "github.com/rate-sync/ratesync-go/redisstore" // engine = "redis"
)

//go:embed rate-sync.toml
var config []byte

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type customer struct{ name, tier, apiKey string }

func run(ctx context.Context, w io.Writer) error {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := storeenv.Apply(reg, "examples/tiers/rate-sync.toml", config); err != nil {
		return err
	}
	if err := storeenv.Reset(ctx, reg); err != nil { // a second run starts afresh
		return err
	}
	fmt.Fprintln(w, storeenv.Describe())
	fmt.Fprintln(w, "each customer sends its quota + 10 requests at once, from 8 goroutines:")
	customers := []customer{
		{"alice", "free", "sk_live_alice_0001"},
		{"bob", "free", "sk_live_bob_0002"},
		{"carol", "pro", "sk_live_carol_0003"},
		{"dave", "enterprise", "sk_live_dave_0004"},
	}
	for _, c := range customers {
		start := time.Now()
		// get_or_clone_limiter(f"api_{tier}", api_key); the key is hashed so
		// that raw API keys never become store keys.
		l, err := reg.For("api_"+c.tier, ratesync.HashIdentifier(c.apiKey))
		if err != nil {
			return err
		}
		quota := l.Rule().Limit
		var admitted, denied atomic.Int64
		var firstErr error
		var once sync.Once
		var wg sync.WaitGroup
		next := atomic.Int64{}
		for range 8 {
			wg.Go(func() {
				for next.Add(1) <= int64(quota+10) {
					d, err := l.Try(ctx)
					if err != nil {
						once.Do(func() { firstErr = err })
						return
					}
					if d.Allowed {
						admitted.Add(1)
					} else {
						denied.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if firstErr != nil {
			return firstErr
		}
		st, err := l.State(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  %-6s %-10s %-15s %5d per %v: %5d admitted, %d denied in %.2fs; now remaining %d, next request in %v\n",
			c.name, c.tier, "api_"+c.tier, quota, l.Rule().Window, admitted.Load(), denied.Load(),
			time.Since(start).Seconds(), st.Remaining, st.RetryAfter.Round(time.Second))
	}
	return nil
}
