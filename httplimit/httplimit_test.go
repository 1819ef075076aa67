package httplimit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/httplimit"
)

func registry(t *testing.T, rules map[string]ratesync.Rule) *ratesync.Registry {
	t.Helper()
	r := ratesync.NewRegistry()
	t.Cleanup(func() { r.Close() })
	if err := r.ConfigureStore("mem", "memory", nil); err != nil {
		t.Fatal(err)
	}
	for name, rule := range rules {
		rule.Store = "mem"
		if err := r.ConfigureLimiter(name, rule); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func limiter(t *testing.T, r *ratesync.Registry, name string) *ratesync.Limiter {
	t.Helper()
	l, err := r.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })

func get(t *testing.T, h http.Handler, remote string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("GET", "/x", nil)
	req.RemoteAddr = remote
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func problem(t *testing.T, w *httptest.ResponseRecorder) httplimit.Problem {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json", ct)
	}
	var p httplimit.Problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatalf("body %q: %v", w.Body.String(), err)
	}
	return p
}

func TestTokenBucket429AndHeaders(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 0.5, Burst: 3}})
	h := httplimit.New(limiter(t, r, "api"), httplimit.ClientIP(), httplimit.LegacyHeaders())(ok)
	for i := range 3 {
		w := get(t, h, "192.0.2.1:1234", nil)
		if w.Code != 200 {
			t.Fatalf("request %d: %d", i, w.Code)
		}
		if got, want := w.Header().Get("RateLimit-Policy"), `"api";q=3;w=6`; got != want {
			t.Fatalf("RateLimit-Policy %q, want %q", got, want)
		}
		wantRL := `"api";r=` + string(rune('2'-i)) + `;t=` + []string{"2", "4", "6"}[i]
		if got := w.Header().Get("RateLimit"); got != wantRL {
			t.Fatalf("request %d: RateLimit %q, want %q", i, got, wantRL)
		}
	}
	w := get(t, h, "192.0.2.1:1234", nil)
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("4th request: %d, want 429", w.Code)
	}
	hd := w.Header()
	if hd.Get("Retry-After") != "2" || hd.Get("Cache-Control") != "no-store" || hd.Get("RateLimit") != `"api";r=0;t=2` {
		t.Fatalf("429 headers: %v", hd)
	}
	if hd.Get("X-RateLimit-Limit") != "3" || hd.Get("X-RateLimit-Remaining") != "0" || hd.Get("X-RateLimit-Reset") != "2" {
		t.Fatalf("legacy headers: %v", hd)
	}
	p := problem(t, w)
	if p.Type != httplimit.QuotaExceeded || p.Status != 429 || p.Title == "" || p.Detail == "" ||
		len(p.ViolatedPolicies) != 1 || p.ViolatedPolicies[0] != "api" || p.RetryAfterSeconds != 2 || p.Limit != 3 {
		t.Fatalf("problem %+v", p)
	}
	// Another client has its own bucket.
	if w := get(t, h, "192.0.2.2:1234", nil); w.Code != 200 {
		t.Fatalf("other client: %d", w.Code)
	}
}

func TestSlidingWindow(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"otp": {Algorithm: ratesync.SlidingWindow, Limit: 2, Window: 90 * time.Second}})
	h := httplimit.New(limiter(t, r, "otp"), httplimit.Header("X-Phone"))(ok)
	phone := map[string]string{"X-Phone": "+15550100"}
	for range 2 {
		if w := get(t, h, "192.0.2.1:1", phone); w.Code != 200 || w.Header().Get("RateLimit-Policy") != `"otp";q=2;w=90` {
			t.Fatalf("%d %v", w.Code, w.Header())
		}
	}
	w := get(t, h, "192.0.2.1:1", phone)
	if w.Code != 429 {
		t.Fatalf("third: %d", w.Code)
	}
	if ra := w.Header().Get("Retry-After"); ra != "90" {
		t.Fatalf("Retry-After %q, want 90 (the first entry leaves the window in 90s, rounded up)", ra)
	}
	// No header: cannot identify, 400, and nothing consumed.
	if w := get(t, h, "192.0.2.1:1", nil); w.Code != 400 {
		t.Fatalf("no key: %d, want 400", w.Code)
	}
}

func TestConcurrencyHoldsLeaseAndReleasesOnPanic(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"export": {MaxConcurrent: 1}})
	l := limiter(t, r, "export")
	entered, release := make(chan struct{}), make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("panic") != "" {
			panic("handler failed")
		}
		entered <- struct{}{}
		<-release
	})
	h := httplimit.New(l, httplimit.ClientIP())(slow)
	srv := httptest.NewServer(h)
	defer srv.Close()
	done := make(chan int)
	go func() {
		resp, err := http.Get(srv.URL + "/export")
		if err != nil {
			t.Error(err)
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	<-entered
	resp, err := http.Get(srv.URL + "/export")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("RateLimit-Policy") != `"export";q=1;qu="concurrent-requests"` {
		t.Fatalf("second while the first runs: %d %v", resp.StatusCode, resp.Header)
	}
	close(release)
	if code := <-done; code != 200 {
		t.Fatalf("first: %d", code)
	}
	if m := l.Metrics(); m.CurrentConcurrent != 0 {
		t.Fatalf("%d leases held after the handler returned", m.CurrentConcurrent)
	}
	// A panicking handler releases its lease too (net/http recovers it).
	req := httptest.NewRequest("GET", "/export?panic=1", nil)
	func() {
		defer func() { recover() }()
		h.ServeHTTP(httptest.NewRecorder(), req)
	}()
	if m := l.Metrics(); m.CurrentConcurrent != 0 {
		t.Fatalf("%d leases held after a panic", m.CurrentConcurrent)
	}
}

func TestWaitForSlot(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"one": {MaxConcurrent: 1, Timeout: 5 * time.Second}})
	l := limiter(t, r, "one")
	h := httplimit.New(l, httplimit.ClientIP(), httplimit.Wait())(ok)
	held, err := l.For("192.0.2.9").Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int)
	go func() { got <- get(t, h, "192.0.2.9:1", nil).Code }()
	for l.Metrics().Waiting == 0 { // the request is waiting
		time.Sleep(time.Millisecond)
	}
	held.Release(context.Background())
	if code := <-got; code != 200 {
		t.Fatalf("waiting request: %d, want 200 once the slot is released", code)
	}
	// Without a timeout budget left it answers 429.
	r2 := registry(t, map[string]ratesync.Rule{"one": {MaxConcurrent: 1, Timeout: 50 * time.Millisecond}})
	l2 := limiter(t, r2, "one")
	held, _ = l2.For("192.0.2.9").Acquire(context.Background())
	defer held.Release(context.Background())
	if w := get(t, httplimit.New(l2, httplimit.ClientIP(), httplimit.Wait())(ok), "192.0.2.9:1", nil); w.Code != 429 {
		t.Fatalf("after the timeout: %d", w.Code)
	}
}

func TestCompositeLogin(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{
		"login_ip":      {Algorithm: ratesync.SlidingWindow, Limit: 3, Window: time.Minute},
		"login_account": {Algorithm: ratesync.SlidingWindow, Limit: 2, Window: time.Minute},
	})
	mw, err := httplimit.Composite(r, ratesync.AllMustPass, []httplimit.Part{
		{Name: "by_ip", Limiter: "login_ip", Key: httplimit.ClientIP()},
		{Name: "by_account", Limiter: "login_account", Key: httplimit.Hashed(httplimit.FormField("email"))},
	})
	if err != nil {
		t.Fatal(err)
	}
	var seen string
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r.FormValue("email") }))
	login := func(ip, email string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/login", strings.NewReader(url.Values{"email": {email}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = ip + ":5000"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	for i := range 2 {
		w := login("198.51.100.1", "alice@example.com")
		if w.Code != 200 || seen != "alice@example.com" {
			t.Fatalf("attempt %d: %d, handler saw %q", i, w.Code, seen)
		}
		if got := w.Header().Get("RateLimit-Policy"); got != `"by_ip";q=3;w=60, "by_account";q=2;w=60` {
			t.Fatalf("RateLimit-Policy %q", got)
		}
	}
	w := login("198.51.100.1", "alice@example.com")
	if w.Code != 429 {
		t.Fatalf("third attempt on the account: %d", w.Code)
	}
	if p := problem(t, w); len(p.ViolatedPolicies) != 1 || p.ViolatedPolicies[0] != "by_account" {
		t.Fatalf("violated %v, want [by_account]", p.ViolatedPolicies)
	}
	if got := w.Header().Get("RateLimit"); !strings.Contains(got, `"by_account";r=0`) || !strings.Contains(got, `"by_ip";r=1`) {
		t.Fatalf("RateLimit %q: the denial must not have consumed the IP's quota", got)
	}
	// The IP still has one attempt left: the denial consumed nothing.
	if w := login("198.51.100.1", "bob@example.com"); w.Code != 200 {
		t.Fatalf("other account from the same IP: %d", w.Code)
	}
	if w := login("198.51.100.1", "carol@example.com"); w.Code != 429 {
		t.Fatalf("fourth attempt from the IP: %d", w.Code)
	}
}

func TestJSONFieldKeepsBody(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"a": {Algorithm: ratesync.SlidingWindow, Limit: 1, Window: time.Minute}})
	var body string
	h := httplimit.New(limiter(t, r, "a"), httplimit.JSONField("account"))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var v map[string]any
		json.NewDecoder(r.Body).Decode(&v)
		body = v["account"].(string)
	}))
	send := func(s string) int {
		req := httptest.NewRequest("POST", "/", strings.NewReader(s))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	if c := send(`{"account":"acme"}`); c != 200 || body != "acme" {
		t.Fatalf("%d %q", c, body)
	}
	if c := send(`{"account":"acme"}`); c != 429 {
		t.Fatalf("second: %d", c)
	}
	if c := send(`{"other":1}`); c != 400 {
		t.Fatalf("no field: %d", c)
	}
}

func TestClientIPTrustedProxies(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	key := httplimit.ClientIP(httplimit.TrustProxies(proxies...))
	tests := []struct {
		name, remote string
		xff          []string
		realIP       string
		want         string
	}{
		{"direct client", "203.0.113.5:1", nil, "", "203.0.113.5"},
		{"direct client spoofing XFF", "203.0.113.5:1", []string{"1.2.3.4"}, "", "203.0.113.5"},
		{"direct client spoofing X-Real-IP", "203.0.113.5:1", nil, "1.2.3.4", "203.0.113.5"},
		{"through a proxy", "10.0.0.2:1", []string{"203.0.113.5"}, "", "203.0.113.5"},
		{"spoofed entry left of the real one", "10.0.0.2:1", []string{"1.2.3.4, 203.0.113.5"}, "", "203.0.113.5"},
		{"two trusted hops", "10.0.0.2:1", []string{"203.0.113.5, 10.0.0.7"}, "", "203.0.113.5"},
		{"several headers", "10.0.0.2:1", []string{"1.2.3.4", "203.0.113.5"}, "", "203.0.113.5"},
		{"X-Real-IP from a proxy", "10.0.0.2:1", nil, "203.0.113.5", "203.0.113.5"},
		{"IPv6 peer keyed by its /64", "[2001:db8::1]:443", nil, "", "2001:db8::/64"},
		{"IPv6 client through a proxy keyed by its /64", "10.0.0.2:1", []string{"2001:db8:0:7:a:b:c:d"}, "", "2001:db8:0:7::/64"},
		{"IPv4-mapped", "[::ffff:203.0.113.5]:1", nil, "", "203.0.113.5"},
		{"garbage in XFF stops the walk", "10.0.0.2:1", []string{"203.0.113.5, junk"}, "", "10.0.0.2"},
		// A malformed entry means the peer, never a header the client sets.
		{"malformed XFF entry with X-Real-IP", "10.0.0.2:1", []string{"198.51.100.9:61000"}, "6.6.6.6", "10.0.0.2"},
		{"empty XFF with X-Real-IP", "10.0.0.2:1", []string{""}, "6.6.6.6", "10.0.0.2"},
		{"zoned XFF entry", "10.0.0.2:1", []string{"fe80::1%eth0"}, "6.6.6.6", "10.0.0.2"},
		{"client garbage left of a good entry", "10.0.0.2:1", []string{"junk, 203.0.113.5"}, "6.6.6.6", "203.0.113.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/", nil)
			req.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				req.Header["X-Forwarded-For"] = append(req.Header["X-Forwarded-For"], v)
			}
			if tt.realIP != "" {
				req.Header.Set("X-Real-IP", tt.realIP)
			}
			got, err := key(req)
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	// No usable address: an error, not a shared bucket.
	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = "@"
	if _, err := key(req); !errors.Is(err, httplimit.ErrNoKey) {
		t.Fatalf("unix-socket peer: %v, want ErrNoKey", err)
	}
}

// A client cannot escape its limit by sending X-Forwarded-For.
func TestSpoofedForwardedForShareTheLimit(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 0.001, Burst: 2}})
	h := httplimit.New(limiter(t, r, "api"), httplimit.ClientIP(httplimit.TrustProxies(netip.MustParsePrefix("10.0.0.0/8"))))(ok)
	codes := []int{}
	for _, fake := range []string{"1.1.1.1", "2.2.2.2", "3.3.3.3"} {
		codes = append(codes, get(t, h, "203.0.113.5:1", map[string]string{"X-Forwarded-For": fake}).Code)
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 429 {
		t.Fatalf("codes %v, want [200 200 429]", codes)
	}
}

func TestIncludeExclude(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 0.001, Burst: 1}})
	h := httplimit.New(limiter(t, r, "api"), httplimit.ClientIP(), httplimit.Include("/api/"), httplimit.Exclude("/api/health", "*.css"))(ok)
	call := func(p string) int {
		req := httptest.NewRequest("GET", p, nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	if call("/api/a") != 200 || call("/api/b") != 429 {
		t.Fatal("included paths are not limited together")
	}
	for _, p := range []string{"/api/health", "/home", "/x.css"} {
		for range 3 {
			if c := call(p); c != 200 {
				t.Fatalf("%s: %d, want unlimited", p, c)
			}
		}
	}
}

// failingStore fails every call, for the failure-policy tests.
type failingStore struct{ driver.Store }

var errDown = errors.New("store down")

func (failingStore) Decide(context.Context, []driver.Check, []driver.Result) (bool, error) {
	return false, errDown
}
func (failingStore) Close() error { return nil }

func TestStoreErrorsFollowTheRule(t *testing.T) {
	r := ratesync.NewRegistry()
	defer r.Close()
	r.AddStore("down", failingStore{})
	r.ConfigureLimiter("open", ratesync.Rule{Store: "down", RatePerSecond: 1, OnStoreError: ratesync.Allow})
	r.ConfigureLimiter("closed", ratesync.Rule{Store: "down", RatePerSecond: 1, OnStoreError: ratesync.Deny})
	if w := get(t, httplimit.New(limiter(t, r, "open"), httplimit.ClientIP())(ok), "192.0.2.1:1", nil); w.Code != 200 || w.Header().Get("RateLimit") != "" {
		t.Fatalf("fail open: %d %v (no invented quota values)", w.Code, w.Header())
	}
	w := get(t, httplimit.New(limiter(t, r, "closed"), httplimit.ClientIP())(ok), "192.0.2.1:1", nil)
	if w.Code != 503 {
		t.Fatalf("fail closed: %d, want 503", w.Code)
	}
	var gotErr error
	custom := httplimit.New(limiter(t, r, "closed"), httplimit.ClientIP(), httplimit.OnError(func(w http.ResponseWriter, r *http.Request, err error) {
		gotErr = err
		w.WriteHeader(502)
	}))(ok)
	if w := get(t, custom, "192.0.2.1:1", nil); w.Code != 502 || !errors.Is(gotErr, errDown) {
		t.Fatalf("custom error handler: %d %v", w.Code, gotErr)
	}
}

func TestPathValueWithServeMux(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"tenant": {RatePerSecond: 0.001, Burst: 1}})
	mux := http.NewServeMux()
	mux.Handle("GET /t/{tenant}/items", httplimit.New(limiter(t, r, "tenant"), httplimit.PathValue("tenant"))(ok))
	call := func(p string) int {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest("GET", p, nil))
		return w.Code
	}
	if call("/t/acme/items") != 200 || call("/t/acme/items") != 429 || call("/t/globex/items") != 200 {
		t.Fatal("tenants are not limited separately")
	}
}

func TestCustomDenied(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 0.001, Burst: 1}})
	var mu sync.Mutex
	var got httplimit.Denial
	h := httplimit.New(limiter(t, r, "api"), httplimit.ClientIP(), httplimit.OnDenied(func(w http.ResponseWriter, r *http.Request, d httplimit.Denial) {
		mu.Lock()
		got = d
		mu.Unlock()
		w.WriteHeader(418)
	}))(ok)
	get(t, h, "192.0.2.1:1", nil)
	w := get(t, h, "192.0.2.1:1", nil)
	if w.Code != 418 || got.RetryAfter < 999 || w.Header().Get("Retry-After") == "" {
		t.Fatalf("%d %+v %v", w.Code, got, w.Header())
	}
}

func TestClientIPForwarded(t *testing.T) {
	key := httplimit.ClientIP(httplimit.TrustProxies(netip.MustParsePrefix("10.0.0.0/8")), httplimit.ProxyHeader("Forwarded"))
	tests := []struct {
		name, remote string
		fwd          []string
		want         string
	}{
		{"one hop", "10.0.0.2:1", []string{"for=203.0.113.5;proto=https"}, "203.0.113.5"},
		{"quoted IPv6 with port", "10.0.0.2:1", []string{`for="[2001:db8:cafe::17]:4711"`}, "2001:db8:cafe::/64"},
		{"IPv4 with port", "10.0.0.2:1", []string{`For="203.0.113.5:80"`}, "203.0.113.5"},
		{"spoofed element left of the real one", "10.0.0.2:1", []string{"for=1.2.3.4, for=203.0.113.5"}, "203.0.113.5"},
		{"trusted hops skipped", "10.0.0.2:1", []string{"for=203.0.113.5, for=10.1.1.1;by=10.0.0.2"}, "203.0.113.5"},
		{"lines in order", "10.0.0.2:1", []string{"for=1.2.3.4", "for=203.0.113.5"}, "203.0.113.5"},
		{"a garbled client line does not hide the proxy's", "10.0.0.2:1", []string{`for="1.2.3.4`, "for=203.0.113.5"}, "203.0.113.5"},
		{"unknown stops the walk", "10.0.0.2:1", []string{"for=203.0.113.5, for=unknown"}, "10.0.0.2"},
		{"obfuscated stops the walk", "10.0.0.2:1", []string{"for=_hidden"}, "10.0.0.2"},
		{"no for= stops the walk", "10.0.0.2:1", []string{"proto=https"}, "10.0.0.2"},
		{"unbracketed IPv6 is malformed", "10.0.0.2:1", []string{`for="2001:db8::1"`}, "10.0.0.2"},
		{"X-Forwarded-For is not read", "10.0.0.2:1", nil, "10.0.0.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/", nil)
			req.RemoteAddr = tt.remote
			req.Header["Forwarded"] = tt.fwd
			req.Header.Set("X-Forwarded-For", "6.6.6.6")
			if tt.fwd != nil {
				req.Header.Set("X-Real-IP", "7.7.7.7")
			}
			got, err := key(req)
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// One IPv6 subscriber (one /64) cannot take a fresh key per address: the
// /64 shares one limit, and another /64 has its own.
func TestIPv6PrefixSharesTheLimit(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 0.001, Burst: 5}})
	h := httplimit.New(limiter(t, r, "api"), httplimit.ClientIP())(ok)
	admitted := 0
	for i := range 1000 {
		remote := fmt.Sprintf("[2001:db8:1:2:%x:%x::1]:443", i/256, i%256)
		if get(t, h, remote, nil).Code == 200 {
			admitted++
		}
	}
	if admitted != 5 {
		t.Fatalf("1000 addresses of one /64 had %d requests admitted, want the burst of 5", admitted)
	}
	if get(t, h, "[2001:db8:1:3::1]:443", nil).Code != 200 {
		t.Fatal("another /64 was limited with the first")
	}
	// Configurable: /128 keys each address.
	h = httplimit.New(limiter(t, r, "api"), httplimit.ClientIP(httplimit.PrefixLengths(0, 128)))(ok)
	for i := range 10 {
		if c := get(t, h, fmt.Sprintf("[2001:db8:9::%x]:443", i+1), nil).Code; c != 200 {
			t.Fatalf("address %d of a /64 keyed per address: %d", i, c)
		}
	}
}

func TestClientIPOptionsPanicWhenInvalid(t *testing.T) {
	for name, opt := range map[string]httplimit.IPOption{
		"v4 33":      httplimit.PrefixLengths(33, 0),
		"v6 -1":      httplimit.PrefixLengths(0, -1),
		"bad header": httplimit.ProxyHeader("X-Real-IP"),
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: ClientIP did not panic", name)
				}
			}()
			httplimit.ClientIP(opt)
		}()
	}
}
