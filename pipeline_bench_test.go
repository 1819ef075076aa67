package ratesync_test

import (
	"context"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/memstore"
)

// netStore is a memory store seen as a network store (driver.Store only),
// so that its calls take the pipeline's bounded path.
type netStore struct{ driver.Store }

// BenchmarkStoreCall measures the pipeline around one decision on a store
// that answers at once: bounded by a call timeout (a worker runs the
// call), and unbounded (the caller's goroutine runs it).
func BenchmarkStoreCall(b *testing.B) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration
	}{{"bounded", time.Second}, {"unbounded", 0}} {
		b.Run(tc.name, func(b *testing.B) {
			mem := memstore.New()
			defer mem.Close()
			r := ratesync.NewRegistry()
			defer r.Close()
			r.AddStore("n", netStore{mem}, ratesync.WithCallTimeout(tc.timeout))
			r.ConfigureLimiter("api", ratesync.Rule{Store: "n", RatePerSecond: 1e6, Burst: 1e9})
			l, _ := r.Get("api")
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if d, err := l.Try(ctx); err != nil || !d.Allowed {
						b.Fatal(d, err)
					}
				}
			})
		})
	}
}
