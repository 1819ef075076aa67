package httplimit_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/httplimit"
)

// Login protection: at most 5 attempts per IP and 3 per account in 15
// minutes, decided together; a denial consumes nothing.
func ExampleComposite() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ConfigureStore("mem", "memory", nil)
	reg.ConfigureLimiter("login_ip", ratesync.Rule{Store: "mem", Algorithm: ratesync.SlidingWindow, Limit: 5, Window: 15 * time.Minute})
	reg.ConfigureLimiter("login_account", ratesync.Rule{Store: "mem", Algorithm: ratesync.SlidingWindow, Limit: 3, Window: 15 * time.Minute})
	protect, err := httplimit.Composite(reg, ratesync.AllMustPass, []httplimit.Part{
		{Name: "by_ip", Limiter: "login_ip", Key: httplimit.ClientIP()},
		{Name: "by_account", Limiter: "login_account", Key: httplimit.Hashed(httplimit.FormField("email"))},
	})
	if err != nil {
		panic(err)
	}
	login := protect(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "checking password for", r.FormValue("email"))
	}))
	for range 4 {
		req := httptest.NewRequest("POST", "/login", strings.NewReader(url.Values{"email": {"alice@example.com"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		login.ServeHTTP(w, req)
		fmt.Println(w.Code, w.Header().Get("RateLimit"))
	}
	// Output:
	// 200 "by_ip";r=4;t=900, "by_account";r=2;t=900
	// 200 "by_ip";r=3;t=900, "by_account";r=1;t=900
	// 200 "by_ip";r=2;t=900, "by_account";r=0;t=900
	// 429 "by_ip";r=2;t=900, "by_account";r=0;t=900
}

type tierKey struct{}

// API tiering: one limiter per plan, cloned per API key; the request's plan
// picks the middleware.
func ExampleNew_tiers() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ConfigureStore("mem", "memory", nil)
	plans := map[string]int{"free": 100, "pro": 1000, "enterprise": 10000} // requests per hour
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	byTier := map[string]http.Handler{}
	for plan, perHour := range plans {
		reg.ConfigureLimiter("api_"+plan, ratesync.Rule{Store: "mem", Algorithm: ratesync.SlidingWindow, Limit: perHour, Window: time.Hour})
		l, _ := reg.Get("api_" + plan)
		byTier[plan] = httplimit.New(l, httplimit.Hashed(httplimit.Header("X-API-Key")))(handler)
	}
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plan, _ := r.Context().Value(tierKey{}).(string) // set by your auth middleware
		byTier[plan].ServeHTTP(w, r)
	})
	req := httptest.NewRequest("GET", "/v1/things", nil)
	req.Header.Set("X-API-Key", "k-123")
	req = req.WithContext(context.WithValue(req.Context(), tierKey{}, "pro"))
	w := httptest.NewRecorder()
	api.ServeHTTP(w, req)
	fmt.Println(w.Code, w.Header().Get("RateLimit-Policy"))
	// Output: 200 "api_pro";q=1000;w=3600
}

type tenantKey struct{}

// Multi-tenant fairness: each tenant (from the request context) gets its
// own share of one rule.
func ExampleContextValue() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ConfigureStore("mem", "memory", nil)
	reg.ConfigureLimiter("platform_api", ratesync.Rule{Store: "mem", RatePerSecond: 50, Burst: 100})
	l, _ := reg.Get("platform_api")
	perTenant := httplimit.New(l, httplimit.ContextValue(tenantKey{}))
	h := perTenant(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	req := httptest.NewRequest("GET", "/", nil)
	req = req.WithContext(context.WithValue(req.Context(), tenantKey{}, "acme"))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	fmt.Println(w.Code, w.Header().Get("RateLimit"))
	// Output: 200 "platform_api";r=99;t=1
}

// Per-IP limiting of one route: RateLimit fields on every response, and a
// 429 with Retry-After and a problem body when the quota is spent.
func ExampleNew() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ConfigureStore("mem", "memory", nil)
	reg.ConfigureLimiter("items", ratesync.Rule{Store: "mem", RatePerSecond: 20, Burst: 2})
	items, _ := reg.Get("items")
	mux := http.NewServeMux()
	mux.Handle("GET /items", httplimit.New(items, httplimit.ClientIP(httplimit.FromConfig(reg)))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "[]")
	})))
	for range 3 {
		req := httptest.NewRequest("GET", "/items", nil)
		req.RemoteAddr = "203.0.113.9:51000"
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, req)
		fmt.Println(w.Code, w.Header().Get("RateLimit-Policy"), "|", w.Header().Get("RateLimit"))
		if w.Code == 429 {
			fmt.Print("Retry-After: ", w.Header().Get("Retry-After"), "\n", w.Body.String())
		}
	}
	// Output:
	// 200 "items";q=20;w=1 | "items";r=1;t=1
	// 200 "items";q=20;w=1 | "items";r=0;t=1
	// 429 "items";q=20;w=1 | "items";r=0;t=1
	// Retry-After: 1
	// {"type":"https://iana.org/assignments/http-problem-types#quota-exceeded","title":"Too Many Requests","status":429,"detail":"Rate limit exceeded for items; retry after 1 second.","violated-policies":["items"],"retry_after_seconds":1,"limit":20}
}

// A whole endpoint limited as one (a global key): a key function that
// gives every request the same identifier.
func ExampleNew_global() {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ConfigureStore("mem", "memory", nil)
	reg.ConfigureLimiter("search", ratesync.Rule{Store: "mem", Algorithm: ratesync.SlidingWindow, Limit: 2, Window: time.Second})
	search, _ := reg.Get("search")
	everyone := func(*http.Request) (string, error) { return "all", nil }
	h := httplimit.New(search, everyone)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for _, client := range []string{"192.0.2.1:1", "192.0.2.2:1", "192.0.2.3:1"} {
		req := httptest.NewRequest("GET", "/search", nil)
		req.RemoteAddr = client
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		fmt.Println(client, w.Code)
	}
	// Output:
	// 192.0.2.1:1 200
	// 192.0.2.2:1 200
	// 192.0.2.3:1 429
}

// Behind a load balancer: its X-Forwarded-For is believed (right to left),
// a client's own is not; IPv6 clients are keyed by their /64.
func ExampleClientIP() {
	key := httplimit.ClientIP(httplimit.TrustProxies(netip.MustParsePrefix("10.0.0.0/8")))
	for _, tt := range []struct{ peer, xff string }{
		{"10.0.0.2:40000", "203.0.113.5"},              // through the balancer
		{"10.0.0.2:40000", "6.6.6.6, 203.0.113.5"},     // the client wrote 6.6.6.6 itself
		{"203.0.113.5:40000", "6.6.6.6"},               // no balancer: the header is ignored
		{"10.0.0.2:40000", "2001:db8:1:2:aaaa::1"},     // an IPv6 client
		{"10.0.0.2:40000", "198.51.100.9:61000, junk"}, // malformed: the peer
		{"[2001:db8:1:2:bbbb::7]:443", ""},             // the same /64, directly
	} {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = tt.peer
		if tt.xff != "" {
			req.Header.Set("X-Forwarded-For", tt.xff)
		}
		id, _ := key(req)
		fmt.Println(id)
	}
	// Output:
	// 203.0.113.5
	// 203.0.113.5
	// 203.0.113.5
	// 2001:db8:1:2::/64
	// 10.0.0.2
	// 2001:db8:1:2::/64
}

// The [http] table of rate-sync.toml ([fastapi] in files written for
// rate-sync) configures ClientIP through FromConfig.
func ExampleFromConfig() {
	cfg, err := ratesync.ParseConfig("rate-sync.toml", []byte(`
[http]
trusted_proxy_networks = ["10.0.0.0/8"]
proxy_header = "Forwarded"
ipv6_prefix_length = 56
`))
	if err != nil {
		panic(err)
	}
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ApplyConfig(cfg)
	key := httplimit.ClientIP(httplimit.FromConfig(reg))
	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = "10.0.0.2:40000"
	req.Header.Set("Forwarded", `for="[2001:db8:1:2ff::9]:4711";proto=https`)
	id, _ := key(req)
	fmt.Println(id)
	// Output: 2001:db8:1:200::/56
}
