//go:build !race

package httplimit_test

import (
	"net/http/httptest"
	"testing"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/httplimit"
)

// An admitted request through New costs 3 allocations on the memory store
// (the recorder's included), as before the fields were reworked: the
// RateLimit item is built on the stack. Not under -race, which allocates
// more.
func TestAllocsPerRequest(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 1e6, Burst: 1000000}})
	h := httplimit.New(limiter(t, r, "api"), httplimit.ClientIP())(ok)
	req := httptest.NewRequest("GET", "/x", nil)
	req.RemoteAddr = "192.0.2.1:1"
	w := httptest.NewRecorder()
	n := testing.AllocsPerRun(1000, func() {
		clear(w.Header())
		h.ServeHTTP(w, req)
	})
	if n > 3 {
		t.Fatalf("%v allocations per admitted request, want at most 3", n)
	}
}
