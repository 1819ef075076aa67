// Command tenants shows per-tenant fairness: each tenant gets a clone of
// the platform_api limiter (rate-sync's clone_limiter("platform_api",
// f"tenant:{tenant_id}") is reg.Clone("platform_api", "tenant:"+id, nil)),
// so a noisy tenant is limited while a quiet one still passes, and a
// premium tenant's clone has a higher rate.
//
//	go run ./examples/tenants                                      # memory
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/tenants
//	POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test go run ./examples/tenants
//
// The limits are in rate-sync.toml beside this file (embedded).
package main

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
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

func run(ctx context.Context, w io.Writer) error {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := storeenv.Apply(reg, "examples/tenants/rate-sync.toml", config); err != nil {
		return err
	}
	fmt.Fprintln(w, storeenv.Describe())

	// Each tenant gets its own enforced limit; initech pays for 50/s.
	for _, id := range []string{"acme", "globex"} {
		if err := reg.Clone("platform_api", "tenant:"+id, nil); err != nil {
			return err
		}
	}
	err := reg.Clone("platform_api", "tenant:initech", func(r *ratesync.Rule) { r.RatePerSecond, r.Burst = 50, 50 })
	if err != nil {
		return err
	}
	if err := storeenv.Reset(ctx, reg); err != nil { // a second run starts afresh
		return err
	}

	start := time.Now()
	fmt.Fprintln(w, "\na burst at once (Try, no waiting):")
	burst := func(id string, n int) error {
		admitted := 0
		var last ratesync.Decision
		for range n {
			d, err := reg.Try(ctx, "tenant:"+id)
			if err != nil {
				return err
			}
			if d.Allowed {
				admitted++
			} else {
				last = d
			}
		}
		l, _ := reg.Get("tenant:" + id)
		fmt.Fprintf(w, "  tenant %-8s (%2.0f/s, burst %2d) sent %2d: %2d admitted, %2d denied", id, l.Rule().RatePerSecond, l.Rule().Burst, n, admitted, n-admitted)
		if admitted < n {
			fmt.Fprintf(w, " (retry in %v)", last.RetryAfter.Round(time.Millisecond))
		}
		fmt.Fprintln(w)
		return nil
	}
	if err := burst("acme", 50); err != nil { // the noisy one
		return err
	}
	if err := burst("globex", 3); err != nil { // the quiet one, right after
		return err
	}
	if err := burst("initech", 60); err != nil { // premium
		return err
	}

	fmt.Fprintln(w, "\nthen acme waits for its rate (Acquire) while globex still passes at once:")
	for i := 1; i <= 5; i++ {
		t0 := time.Now()
		lease, err := reg.Acquire(ctx, "tenant:acme", ratesync.WithTimeout(2*time.Second))
		if err != nil {
			return err
		}
		lease.Release(ctx)
		fmt.Fprintf(w, "  +%.3fs  acme   acquire %d admitted after waiting %v\n", time.Since(start).Seconds(), i, time.Since(t0).Round(time.Millisecond))
		d, err := reg.Try(ctx, "tenant:globex")
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  +%.3fs  globex try       allowed=%v, %d left\n", time.Since(start).Seconds(), d.Allowed, d.Remaining)
	}
	return nil
}
