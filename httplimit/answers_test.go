package httplimit_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/httplimit"
)

// A concurrency 429 tells the client when a slot is likely to free, from
// the hold times the middleware observed, not when the holders' leases
// expire (30 s here, 300 by default); a client that obeys it is served as
// soon as slots free. Through a real server and client.
func TestConcurrencyRetryAfterIsHonest(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"export": {MaxConcurrent: 2, LeaseTTL: 30 * time.Second}})
	gate := make(chan struct{})
	entered := make(chan struct{}, 2)
	work := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("gate") != "" {
			entered <- struct{}{}
			<-gate
			return
		}
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond) // the work
	})
	srv := httptest.NewServer(httplimit.New(limiter(t, r, "export"), httplimit.ClientIP())(work))
	defer srv.Close()
	call := func(query string) *http.Response {
		resp, err := http.Get(srv.URL + "/export?" + query)
		if err != nil {
			t.Error(err)
			return nil
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	// The middleware learns that exports take about 200 ms.
	for range 4 {
		if resp := call("ms=200"); resp == nil || resp.StatusCode != 200 {
			t.Fatal("warm-up request not served")
		}
	}
	// Both slots taken; they free in 500 ms (or when the test fails).
	var held sync.WaitGroup
	var once sync.Once
	free := func() { once.Do(func() { close(gate) }) }
	defer held.Wait()
	defer free()
	for range 2 {
		held.Go(func() { call("gate=1") })
		<-entered
	}
	resp := call("ms=0")
	if resp == nil || resp.StatusCode != 429 {
		t.Fatalf("with both slots held: %v, want 429", resp)
	}
	ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if ra < 1 || ra > 2 {
		t.Fatalf("Retry-After %q with holds of 200 ms on 2 slots (lease TTL 30 s), want 1 or 2", resp.Header.Get("Retry-After"))
	}
	if got := resp.Header.Get("RateLimit"); got != `"export";r=0;t=`+strconv.Itoa(ra) {
		t.Fatalf("RateLimit %q disagrees with Retry-After %d", got, ra)
	}
	time.AfterFunc(500*time.Millisecond, free)
	// A client obeying Retry-After.
	start := time.Now()
	for attempt := 1; ; attempt++ {
		time.Sleep(time.Duration(ra) * time.Second)
		resp := call("ms=0")
		if resp == nil {
			return
		}
		if resp.StatusCode == 200 {
			t.Logf("served on retry %d, %v after the 429", attempt, time.Since(start).Round(time.Millisecond))
			break
		}
		if attempt == 3 {
			t.Fatalf("still %d after %d retries", resp.StatusCode, attempt)
		}
		ra, _ = strconv.Atoi(resp.Header.Get("Retry-After"))
	}
}

// The problem body, the RateLimit fields and the legacy fields name one
// quota with one meaning: the policy's q, not the burst.
func TestOneQuotaEverywhere(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{
		"items":  {RatePerSecond: 20, Burst: 5},
		"report": {RatePerSecond: 1000, Burst: 100, MaxConcurrent: 1},
	})
	h := httplimit.New(limiter(t, r, "items"), httplimit.ClientIP(), httplimit.LegacyHeaders())(ok)
	var w *httptest.ResponseRecorder
	for range 6 {
		w = get(t, h, "192.0.2.1:1", nil)
	}
	if w.Code != 429 {
		t.Fatalf("6th request in a burst of 5: %d", w.Code)
	}
	hd := w.Header()
	if hd.Get("RateLimit-Policy") != `"items";q=20;w=1` || hd.Get("X-RateLimit-Limit") != "20" || hd.Get("Retry-After") != "1" {
		t.Fatalf("headers %v", hd)
	}
	p := problem(t, w)
	if p.Limit != 20 || p.Detail != "Rate limit exceeded for items; retry after 1 second." {
		t.Fatalf("problem %+v: want limit 20 (q of RateLimit-Policy) and 'retry after 1 second.'", p)
	}

	// A rule with a rate and a concurrency limit, denied by the second.
	entered, release := make(chan struct{}), make(chan struct{})
	slow := httplimit.New(limiter(t, r, "report"), httplimit.ClientIP(), httplimit.LegacyHeaders())(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	go get(t, slow, "192.0.2.1:1", nil)
	<-entered
	w = get(t, slow, "192.0.2.1:1", nil)
	close(release)
	hd = w.Header()
	if w.Code != 429 || hd.Get("RateLimit-Policy") != `"report";q=1000;w=1, "report-concurrency";q=1;qu="concurrent-requests"` ||
		hd.Get("RateLimit") != `"report-concurrency";r=0;t=1` || hd.Get("X-RateLimit-Limit") != "1" {
		t.Fatalf("concurrency denial: %d %v", w.Code, hd)
	}
	p = problem(t, w)
	if p.Limit != 1 || len(p.ViolatedPolicies) != 1 || p.ViolatedPolicies[0] != "report-concurrency" ||
		p.Detail != "Too many concurrent requests for report-concurrency; retry after 1 second." {
		t.Fatalf("problem %+v", p)
	}
}

// Each HTTP request counts once, as a reader of the dashboard counts
// them: the 200s are the admissions (and the wait histogram's count), the
// 429s the denials and timeouts, with Wait too.
func TestMetricsCountRequests(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{
		"paced": {RatePerSecond: 20, Burst: 1, Timeout: 120 * time.Millisecond},
		"plain": {RatePerSecond: 0.001, Burst: 3},
	})
	for _, tt := range []struct {
		name string
		opts []httplimit.Option
	}{{"paced", []httplimit.Option{httplimit.Wait()}}, {"plain", nil}} {
		t.Run(tt.name, func(t *testing.T) {
			l := limiter(t, r, tt.name)
			srv := httptest.NewServer(httplimit.New(l, httplimit.ClientIP(), tt.opts...)(ok))
			defer srv.Close()
			var codes [600]atomic.Int64
			var wg sync.WaitGroup
			for range 20 {
				wg.Go(func() {
					resp, err := http.Get(srv.URL)
					if err != nil {
						t.Error(err)
						return
					}
					resp.Body.Close()
					codes[resp.StatusCode].Add(1)
				})
			}
			wg.Wait()
			m := l.Metrics()
			ok, denied := codes[200].Load(), codes[429].Load()
			t.Logf("%d 200s, %d 429s; metrics %d admitted, %d denied, %d timeouts", ok, denied, m.Acquisitions, m.Denials, m.Timeouts)
			if ok+denied != 20 || ok == 0 || denied == 0 {
				t.Fatalf("%d 200s and %d 429s of 20 requests", ok, denied)
			}
			if m.Acquisitions != ok || m.Denials+m.Timeouts != denied || m.Wait.Count != ok {
				t.Fatalf("%d 200s and %d 429s counted as %d admissions (histogram %d), %d denials and %d timeouts",
					ok, denied, m.Acquisitions, m.Wait.Count, m.Denials, m.Timeouts)
			}
		})
	}
}

// A login composite counts each attempt under each part's own rule: every
// part counts the admissions, and only the part that denied counts a
// denial.
func TestCompositeMetricsPerPart(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{
		"login_ip":      {Algorithm: ratesync.SlidingWindow, Limit: 5, Window: time.Minute},
		"login_account": {Algorithm: ratesync.SlidingWindow, Limit: 3, Window: time.Minute},
	})
	mw, err := httplimit.Composite(r, ratesync.AllMustPass, []httplimit.Part{
		{Name: "by_ip", Limiter: "login_ip", Key: httplimit.ClientIP()},
		{Name: "by_account", Limiter: "login_account", Key: httplimit.Hashed(httplimit.FormField("email"))},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mw(ok))
	defer srv.Close()
	codes := map[int]int{}
	for i := range 8 {
		email := "alice@example.com"
		if i >= 6 {
			email = "bob" + strconv.Itoa(i) + "@example.com"
		}
		resp, err := http.PostForm(srv.URL+"/login", url.Values{"email": {email}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes[resp.StatusCode]++
	}
	// alice: 3 admitted, 3 denied by the account; bob6, bob7: 2 admitted
	// by the account but the IP is then at 5: both admitted (5 in all).
	ip, acct := limiter(t, r, "login_ip").Metrics(), limiter(t, r, "login_account").Metrics()
	if codes[200] != 5 || codes[429] != 3 {
		t.Fatalf("codes %v", codes)
	}
	if ip.Acquisitions != 5 || ip.Denials != 0 || acct.Acquisitions != 5 || acct.Denials != 3 {
		t.Fatalf("login_ip %d admitted %d denied; login_account %d admitted %d denied; want 5/0 and 5/3",
			ip.Acquisitions, ip.Denials, acct.Acquisitions, acct.Denials)
	}
}

// Parts on different stores are an error when the middleware is built,
// naming the parts and stores, not a 503 on every request.
func TestCompositeAcrossStoresFailsAtConstruction(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"login_ip": {RatePerSecond: 1}})
	r.ConfigureStore("other", "memory", nil)
	r.ConfigureLimiter("login_account", ratesync.Rule{Store: "other", RatePerSecond: 1})
	_, err := httplimit.Composite(r, ratesync.AllMustPass, []httplimit.Part{
		{Name: "by_ip", Limiter: "login_ip", Key: httplimit.ClientIP()},
		{Name: "by_account", Limiter: "login_account", Key: httplimit.FormField("email")},
	})
	if !errors.Is(err, ratesync.ErrInvalidConfig) || !strings.Contains(err.Error(), `by_account on store "other"`) || !strings.Contains(err.Error(), `by_ip on store "mem"`) {
		t.Fatalf("got %v, want an error naming the parts and their stores", err)
	}
}

// Without a wait budget, Wait makes one attempt (and counts one denial).
func TestWaitWithoutBudget(t *testing.T) {
	r := registry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 0.001, Burst: 1}})
	l := limiter(t, r, "api")
	h := httplimit.New(l, httplimit.ClientIP(), httplimit.Wait())(ok)
	if get(t, h, "192.0.2.1:1", nil).Code != 200 || get(t, h, "192.0.2.1:1", nil).Code != 429 {
		t.Fatal("want 200 then 429")
	}
	// With a request deadline, it waits within it, and a wait that cannot
	// fit gives up at once.
	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = "192.0.2.1:1"
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	w := httptest.NewRecorder()
	start := time.Now()
	h.ServeHTTP(w, req.WithContext(ctx))
	if w.Code != 429 || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("%d after %v", w.Code, time.Since(start))
	}
	if m := l.Metrics(); m.Acquisitions != 1 || m.Denials+m.Timeouts != 2 {
		t.Fatalf("metrics %+v", m)
	}
}
