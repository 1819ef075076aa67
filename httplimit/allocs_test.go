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

// An admitted request through Composite (two parts, one store call) costs
// 13 allocations on the memory store: Composite.Check with no options adds
// none for them (it once added one).
func TestAllocsPerCompositeRequest(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{
		"by_ip":   {RatePerSecond: 1e6, Burst: 1000000},
		"by_user": {RatePerSecond: 1e6, Burst: 1000000},
	})
	mw, err := httplimit.Composite(r, ratesync.AllMustPass, []httplimit.Part{
		{Name: "ip", Limiter: "by_ip", Key: httplimit.ClientIP()},
		{Name: "user", Limiter: "by_user", Key: httplimit.Header("X-User")},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := mw(ok)
	req := httptest.NewRequest("GET", "/x", nil)
	req.RemoteAddr = "192.0.2.1:1"
	req.Header.Set("X-User", "alice")
	w := httptest.NewRecorder()
	n := testing.AllocsPerRun(1000, func() {
		clear(w.Header())
		h.ServeHTTP(w, req)
	})
	if n > 13 {
		t.Fatalf("%v allocations per admitted composite request, want at most 13", n)
	}
}
