package httplimit_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
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
