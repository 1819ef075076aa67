package benchmarks

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/httprate"
	ulule "github.com/ulule/limiter/v3"
	ulstdlib "github.com/ulule/limiter/v3/drivers/middleware/stdlib"
	ululememory "github.com/ulule/limiter/v3/drivers/store/memory"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/httplimit"
)

// The HTTP benchmarks measure a middleware's cost per request: a GET from
// one of 10,000 client IPs through the middleware (every limiter admits
// everything) to a handler that writes "ok", on the memory store, served
// with ServeHTTP on a recorder (no network).
const httpClients = 10_000

var clientAddrs = func() []string {
	a := make([]string, httpClients)
	for i := range a {
		a[i] = "10." + strconv.Itoa(i/65536%256) + "." + strconv.Itoa(i/256%256) + "." + strconv.Itoa(i%256) + ":5000"
	}
	return a
}()

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })

var middlewares = []struct {
	name string
	make func(b *testing.B) func(http.Handler) http.Handler
}{
	{"bare", func(b *testing.B) func(http.Handler) http.Handler {
		return func(h http.Handler) http.Handler { return h }
	}},
	{"ratesync", func(b *testing.B) func(http.Handler) http.Handler {
		r := ratesync.NewRegistry()
		b.Cleanup(func() { r.Close() })
		r.ConfigureStore("mem", "memory", nil)
		if err := r.ConfigureLimiter("api", ratesync.Rule{Store: "mem", RatePerSecond: ratesyncRate, Burst: ratesyncBurst}); err != nil {
			b.Fatal(err)
		}
		l, _ := r.Get("api")
		return httplimit.New(l, httplimit.ClientIP())
	}},
	{"httprate", func(b *testing.B) func(http.Handler) http.Handler {
		return httprate.LimitByIP(1<<30, time.Second)
	}},
	{"ulule", func(b *testing.B) func(http.Handler) http.Handler {
		l := ulule.New(ululememory.NewStore(), ulule.Rate{Period: time.Second, Limit: 1 << 40})
		return ulstdlib.NewMiddleware(l).Handler
	}},
}

func BenchmarkHTTPMiddleware(b *testing.B) {
	for _, mw := range middlewares {
		b.Run(mw.name, func(b *testing.B) {
			h := mw.make(b)(okHandler)
			for _, a := range clientAddrs { // warm every client's state
				req := httptest.NewRequest("GET", "/", nil)
				req.RemoteAddr = a
				h.ServeHTTP(httptest.NewRecorder(), req)
			}
			var next atomic.Uint64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1) * 7919)
				req := httptest.NewRequest("GET", "/", nil)
				for pb.Next() {
					i++
					req.RemoteAddr = clientAddrs[i%httpClients]
					w := httptest.NewRecorder()
					h.ServeHTTP(w, req)
					if w.Code != 200 {
						b.Fatalf("status %d", w.Code)
					}
				}
			})
		})
	}
}
