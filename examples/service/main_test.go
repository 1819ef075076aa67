package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/rate-sync/ratesync-go"
)

func TestService(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	t.Setenv(ratesync.ConfigEnv, "")
	reg := ratesync.NewRegistry()
	defer reg.Close()
	h, err := newService(reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(path string) *http.Response {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	// A burst of 5 items, then 429 with the policy's quota.
	codes := ""
	var last *http.Response
	for range 6 {
		last = get("/items")
		codes += last.Status[:3] + " "
	}
	if codes != "200 200 200 200 200 429 " || last.Header.Get("X-RateLimit-Limit") != "20" || last.Header.Get("Retry-After") != "1" {
		t.Fatalf("items: %s %v", codes, last.Header)
	}
	// Two exports at once, the third is 429 with a short Retry-After.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { get("/export?ms=1500") })
	}
	export, _ := reg.Get("export")
	for export.Metrics().CurrentConcurrent < 2 { // both exports have their slot
		runtime.Gosched()
	}
	third := get("/export?ms=0")
	wg.Wait()
	if third.StatusCode != 429 || third.Header.Get("Retry-After") != "1" {
		t.Fatalf("third export: %d %v", third.StatusCode, third.Header)
	}
	// Logins: 3 per account.
	codes = ""
	for range 4 {
		resp, err := http.PostForm(srv.URL+"/login", url.Values{"email": {"alice@example.com"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes += resp.Status[:3] + " "
	}
	if codes != "200 200 200 429 " {
		t.Fatalf("logins: %s", codes)
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`ratesync_decisions_total{group_id="login_account",result="denied"} 1`, `ratesync_decisions_total{group_id="login_ip",result="allowed"} 3`,
		`ratesync_decisions_total{group_id="items",result="denied"} 1`, `ratesync_decisions_total{group_id="export",result="denied"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
