// Package routertest checks the router examples the same way.
package routertest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rate-sync/ratesync-go"
)

// Check builds an example's handler on a fresh registry, serves it, and
// checks that GET /hello is served twice per client and then answered 429
// with the rate limit fields.
func Check(t *testing.T, newHandler func(*ratesync.Registry) (http.Handler, error)) {
	t.Helper()
	reg := ratesync.NewRegistry()
	defer reg.Close()
	h, err := newHandler(reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	var codes []int
	var last *http.Response
	for range 3 {
		resp, err := http.Get(srv.URL + "/hello")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
		last = resp
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 429 {
		t.Fatalf("codes %v, want [200 200 429]", codes)
	}
	if last.Header.Get("RateLimit-Policy") != "\"api\";q=2;w=1" || last.Header.Get("Retry-After") != "1" ||
		last.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("429 headers: %v", last.Header)
	}
}
