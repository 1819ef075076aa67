package dashboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/memstore"
	"github.com/rate-sync/ratesync-go/server/dashboard"
)

var ctx = context.Background()

// newRegistry returns a registry on the memory store with limiters of each
// kind, closed when the test ends.
func newRegistry(t *testing.T) *ratesync.Registry {
	t.Helper()
	reg := ratesync.NewRegistry()
	t.Cleanup(func() { reg.Close() })
	must(t, reg.ConfigureStore("mem", "memory", nil))
	must(t, reg.ConfigureLimiter("api", ratesync.Rule{Store: "mem", RatePerSecond: 0.001, Burst: 3}))
	must(t, reg.ConfigureLimiter("login", ratesync.Rule{Store: "mem", Limit: 5, Window: time.Minute}))
	must(t, reg.ConfigureLimiter("jobs", ratesync.Rule{Store: "mem", MaxConcurrent: 2}))
	must(t, reg.ConfigureLimiter("trial", ratesync.Rule{Store: "mem", RatePerSecond: 0.001, Burst: 1, Shadow: true}))
	return reg
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func newDashboard(t *testing.T, reg *ratesync.Registry, opts ...dashboard.Option) *dashboard.Dashboard {
	t.Helper()
	d := dashboard.New(reg, opts...)
	t.Cleanup(func() { d.Close() })
	return d
}

// get serves one GET of target and returns the response.
func get(t *testing.T, h http.Handler, target string) *http.Response {
	t.Helper()
	return do(t, h, httptest.NewRequest(http.MethodGet, target, nil))
}

func do(t *testing.T, h http.Handler, req *http.Request) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	must(t, err)
	return string(b)
}

func decode[T any](t *testing.T, res *http.Response, wantStatus int) T {
	t.Helper()
	var v T
	b := body(t, res)
	if res.StatusCode != wantStatus {
		t.Fatalf("status %d, want %d; body %s", res.StatusCode, wantStatus, b)
	}
	if err := json.Unmarshal([]byte(b), &v); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	return v
}

type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// wantProblem checks that res is an RFC 9457 problem with status.
func wantProblem(t *testing.T, res *http.Response, status int) problem {
	t.Helper()
	p := decode[problem](t, res, status)
	if ct := res.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	if p.Status != status || p.Title == "" || p.Detail == "" {
		t.Errorf("problem %+v, want status %d with a title and a detail", p, status)
	}
	return p
}

type overview struct {
	IntervalSeconds float64 `json:"interval_seconds"`
	HistorySeconds  float64 `json:"history_seconds"`
	Limiters        []struct {
		Name, Store, Engine, Policy, Algorithm string
		OnStoreError                           string `json:"on_store_error"`
		Shadow                                 bool
		Rate                                   struct{ Admitted, Denied, Shadow float64 }
		Totals                                 struct {
			Admitted, Denied, Timeouts, Errors int64
			ShadowDenials                      int64 `json:"shadow_denials"`
			Concurrent                         int64
		}
	}
	Stores []struct{ Name, Engine, Breaker string }
}

type series struct {
	Limiter                          string
	IntervalSeconds                  float64 `json:"interval_seconds"`
	T                                []int64
	Admitted, Denied, Shadow, Errors []float64
}

type state struct {
	Limiter      string
	Identifier   *string
	Key          string
	Allowed      bool
	Remaining    int
	Limit        int
	CurrentUsage int `json:"current_usage"`
	Concurrency  bool
}

func TestPage(t *testing.T) {
	d := newDashboard(t, newRegistry(t))
	for _, tc := range []struct {
		path, base string
	}{
		{"/", "dashboard/"},
		{"/dashboard", "dashboard/"},
		{"/dashboard/", ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			res := get(t, d, tc.path)
			page := body(t, res)
			if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
				t.Fatalf("status %d, Content-Type %q", res.StatusCode, res.Header.Get("Content-Type"))
			}
			if got := res.Header.Get("Content-Security-Policy"); got != dashboard.ContentSecurityPolicy {
				t.Errorf("Content-Security-Policy %q, want %q", got, dashboard.ContentSecurityPolicy)
			}
			for _, ref := range []string{`src="` + tc.base + `static/app.js"`, `href="` + tc.base + `static/app.css"`} {
				if !strings.Contains(page, ref) {
					t.Errorf("page lacks %s", ref)
				}
			}
		})
	}
	for path, ct := range map[string]string{
		"/dashboard/static/app.js":      "text/javascript",
		"/dashboard/static/app.css":     "text/css",
		"/dashboard/static/favicon.svg": "image/svg+xml",
	} {
		res := get(t, d, path)
		if b := body(t, res); res.StatusCode != 200 || len(b) == 0 || !strings.HasPrefix(res.Header.Get("Content-Type"), ct) {
			t.Errorf("GET %s: status %d, Content-Type %q, %d bytes; want 200, %s", path, res.StatusCode, res.Header.Get("Content-Type"), len(b), ct)
		}
		if res.Header.Get("Content-Security-Policy") == "" || res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: security headers missing: %v", path, res.Header)
		}
	}
}

// The policy allows no other origin, and the files ask for none: no URL
// with a scheme or a network path (//host) appears in them, but the SVG's
// XML namespace, which is a name, not a fetch.
func TestNoExternalReferences(t *testing.T) {
	if !strings.Contains(dashboard.ContentSecurityPolicy, "default-src 'none'") ||
		regexp.MustCompile(`https?:|\*|//`).MatchString(dashboard.ContentSecurityPolicy) {
		t.Fatalf("policy %q allows more than its own origin", dashboard.ContentSecurityPolicy)
	}
	external := regexp.MustCompile(`(?i)(https?:|wss?:|ftp:)//|(src|href|url)\s*[=(]\s*["']?//|@import`)
	files := []string{"index.html"}
	matches, _ := filepath.Glob("static/*")
	files = append(files, matches...)
	for _, name := range files {
		b, err := os.ReadFile(name)
		must(t, err)
		text := strings.ReplaceAll(string(b), `xmlns="http://www.w3.org/2000/svg"`, "")
		if m := external.FindString(text); m != "" {
			t.Errorf("%s refers to another origin: %q", name, m)
		}
	}
	if len(files) < 4 {
		t.Errorf("found %v, want the page and its static files", files)
	}
}

func TestNotFoundAndMethods(t *testing.T) {
	d := newDashboard(t, newRegistry(t))
	for _, path := range []string{"/nope", "/dashboard/static/", "/dashboard/static/missing.js", "/dashboard/api/", "/dashboard/api/nope", "/dashboard/static/../dashboard.go", "/index.html"} {
		res := get(t, d, path)
		if res.StatusCode != http.StatusNotFound && res.StatusCode != http.StatusMovedPermanently {
			t.Errorf("GET %s: status %d, want 404", path, res.StatusCode)
		}
		if b := body(t, res); strings.Contains(b, "package dashboard") {
			t.Errorf("GET %s served source code", path)
		}
	}
	wantProblem(t, get(t, d, "/nope"), http.StatusNotFound)
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		res := do(t, d, httptest.NewRequest(m, "/dashboard/api/state?limiter=api", strings.NewReader("x")))
		wantProblem(t, res, http.StatusMethodNotAllowed)
		if res.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: Allow %q, want GET, HEAD", m, res.Header.Get("Allow"))
		}
	}
}

func TestOverview(t *testing.T) {
	reg := newRegistry(t)
	d := newDashboard(t, reg)
	for range 5 {
		reg.Try(ctx, "api")
	}
	lease, err := reg.Acquire(ctx, "jobs")
	must(t, err)
	defer lease.Release(ctx)
	reg.Try(ctx, "trial")
	reg.Try(ctx, "trial")

	ov := decode[overview](t, get(t, d, "/dashboard/api/overview"), 200)
	if ov.IntervalSeconds != 1 || ov.HistorySeconds != 300 {
		t.Errorf("interval %v s, history %v s, want the defaults 1 and 300", ov.IntervalSeconds, ov.HistorySeconds)
	}
	type lim struct {
		name, policy, engine, algorithm string
		admitted, denied, shadow, conc  int64
	}
	var got []lim
	for _, l := range ov.Limiters {
		got = append(got, lim{l.Name, l.Policy, l.Engine, l.Algorithm, l.Totals.Admitted, l.Totals.Denied, l.Totals.ShadowDenials, l.Totals.Concurrent})
		if l.Store != "mem" || l.OnStoreError != "local" {
			t.Errorf("%s: store %q, on_store_error %q, want mem, local", l.Name, l.Store, l.OnStoreError)
		}
	}
	want := []lim{
		{"api", "0.001/s, burst 3", "memory", "token_bucket", 3, 2, 0, 0},
		{"jobs", "2 concurrent", "memory", "", 1, 0, 0, 1},
		{"login", "5 per 60 s window", "memory", "sliding_window", 0, 0, 0, 0},
		{"trial", "0.001/s, burst 1, shadow", "memory", "token_bucket", 1, 0, 1, 0},
	}
	if len(got) != len(want) {
		t.Fatalf("limiters %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("limiter %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if len(ov.Stores) != 1 || ov.Stores[0].Name != "mem" || ov.Stores[0].Engine != "memory" || ov.Stores[0].Breaker != "closed" {
		t.Errorf("stores %+v, want mem (memory) closed", ov.Stores)
	}
}

// The sampler turns counters into rates per second, one sample per
// interval, and keeps no more than the history.
func TestSeries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newRegistry(t)
		d := dashboard.New(reg, dashboard.WithInterval(time.Second), dashboard.WithHistory(10*time.Second))
		defer d.Close()
		// Before the dashboard's first interval ends: nothing yet.
		if s := decode[series](t, get(t, d, "/dashboard/api/series"), 200); len(s.T) != 0 {
			t.Fatalf("series before the first sample: %+v", s)
		}
		for range 7 {
			reg.Try(ctx, "api") // 3 admitted, 4 denied
		}
		reg.Try(ctx, "trial")
		reg.Try(ctx, "trial") // 1 admitted, 1 shadow denial (admitted anyway)
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait() // the sampler has read at 1 s

		all := decode[series](t, get(t, d, "/dashboard/api/series"), 200)
		api := decode[series](t, get(t, d, "/dashboard/api/series?limiter=api"), 200)
		trial := decode[series](t, get(t, d, "/dashboard/api/series?limiter=trial"), 200)
		if len(all.T) != 1 || all.Admitted[0] != 4 || all.Denied[0] != 4 || all.Shadow[0] != 1 {
			t.Errorf("all limiters: %+v, want one sample: 4 admitted, 4 denied, 1 shadow", all)
		}
		if api.Limiter != "api" || len(api.T) != 1 || api.Admitted[0] != 3 || api.Denied[0] != 4 || api.Shadow[0] != 0 {
			t.Errorf("api: %+v, want one sample: 3 admitted, 4 denied", api)
		}
		if len(trial.T) != 1 || trial.Admitted[0] != 1 || trial.Denied[0] != 0 || trial.Shadow[0] != 1 {
			t.Errorf("trial: %+v, want one sample: 1 admitted, 0 denied, 1 shadow", trial)
		}
		if all.T[0] != time.Now().Add(-500*time.Millisecond).UnixMilli() {
			t.Errorf("sample time %d, want %d", all.T[0], time.Now().Add(-500*time.Millisecond).UnixMilli())
		}

		// The overview's rates are the last sample's.
		ov := decode[overview](t, get(t, d, "/dashboard/api/overview"), 200)
		if ov.Limiters[0].Name != "api" || ov.Limiters[0].Rate.Admitted != 3 || ov.Limiters[0].Rate.Denied != 4 {
			t.Errorf("overview rate of %s: %+v, want 3 admitted/s, 4 denied/s", ov.Limiters[0].Name, ov.Limiters[0].Rate)
		}

		// A replaced limiter starts its counters again: no negative rate.
		must(t, reg.ConfigureLimiter("api", ratesync.Rule{Store: "mem", RatePerSecond: 0.001, Burst: 3}))
		reg.Try(ctx, "api")
		// A new limiter counts from its first sample.
		must(t, reg.ConfigureLimiter("new", ratesync.Rule{Store: "mem", RatePerSecond: 1000, Burst: 1000}))
		time.Sleep(time.Second)
		synctest.Wait()
		api = decode[series](t, get(t, d, "/dashboard/api/series?limiter=api"), 200)
		if len(api.T) != 2 || api.Admitted[1] < 0 || api.Denied[1] < 0 {
			t.Errorf("after replacing api: %+v, want 2 samples, none negative", api)
		}
		for range 20 {
			reg.Try(ctx, "new")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		nw := decode[series](t, get(t, d, "/dashboard/api/series?limiter=new"), 200)
		if len(nw.T) != 3 || nw.Admitted[1] != 0 || nw.Admitted[2] != 20 {
			t.Errorf("new: %+v, want 0 in the sample that found it, then 20", nw)
		}

		// The ring keeps the history: 10 samples of 1 s, the newest.
		time.Sleep(time.Minute)
		synctest.Wait()
		all = decode[series](t, get(t, d, "/dashboard/api/series"), 200)
		if len(all.T) != 10 || all.T[9] != time.Now().Add(-500*time.Millisecond).UnixMilli() || all.T[9]-all.T[0] != 9000 {
			t.Errorf("after a minute: %d samples from %v to %v, want the last 10 s", len(all.T), all.T[0], all.T[len(all.T)-1])
		}

		wantProblem(t, get(t, d, "/dashboard/api/series?limiter=nope"), http.StatusNotFound)
		wantProblem(t, get(t, d, "/dashboard/api/series?limiter="+strings.Repeat("a", dashboard.MaxIdentifierLength+1)), http.StatusBadRequest)

		// Close stops the sampler; the samples stay served.
		must(t, d.Close())
		must(t, d.Close())
		time.Sleep(5 * time.Second)
		synctest.Wait()
		after := decode[series](t, get(t, d, "/dashboard/api/series"), 200)
		if len(after.T) != 10 || after.T[9] != all.T[9] {
			t.Errorf("after Close: samples up to %d, want still up to %d", after.T[len(after.T)-1], all.T[9])
		}
		reg.Close()
	})
}

func TestState(t *testing.T) {
	reg := newRegistry(t)
	d := newDashboard(t, reg)
	l, _ := reg.For("api", "alice")
	l.Try(ctx)

	// Reading never consumes: many reads, then alice still has 2 of 3.
	for range 50 {
		st := decode[state](t, get(t, d, "/dashboard/api/state?limiter=api&id=alice"), 200)
		if !st.Allowed || st.Remaining != 2 || st.Limit != 3 || st.CurrentUsage != 1 || st.Key != l.Key() || st.Identifier == nil || *st.Identifier != "alice" {
			t.Fatalf("state %+v, want allowed, 2 of 3 left, key %q", st, l.Key())
		}
	}
	if dec, _ := l.Try(ctx); !dec.Allowed || dec.Remaining != 1 {
		t.Fatalf("after 50 reads: %+v, want admitted with 1 left", dec)
	}
	// Without id: the limiter's own key, untouched by alice.
	st := decode[state](t, get(t, d, "/dashboard/api/state?limiter=api"), 200)
	if st.Identifier != nil || st.Remaining != 3 || st.Key != "api" {
		t.Errorf("own key: %+v, want 3 left on key api, identifier null", st)
	}
	// Concurrency: leases held are read too.
	lease, err := reg.Acquire(ctx, "jobs")
	must(t, err)
	defer lease.Release(ctx)
	st = decode[state](t, get(t, d, "/dashboard/api/state?limiter=jobs"), 200)
	if !st.Concurrency || st.Remaining != 1 || st.Limit != 2 {
		t.Errorf("jobs: %+v, want 1 of 2 concurrent left", st)
	}
}

// Hostile input: any bytes are an identifier of their own, escaped in the
// key; too long a one, no limiter or an unknown one are problems, and the
// store is not called.
func TestStateHostileInput(t *testing.T) {
	reg := newRegistry(t)
	d := newDashboard(t, reg)
	for _, id := range []string{"", "a:b", "%3A", "\x00\xff\xfe", "<script>alert(1)</script>", "ünïcødé", strings.Repeat("x", dashboard.MaxIdentifierLength)} {
		l, _ := reg.For("api", id)
		q := "/dashboard/api/state?limiter=api&id=" + urlQuery(id)
		st := decode[state](t, get(t, d, q), 200)
		var want string // the key as JSON carries it: invalid UTF-8 replaced
		b, _ := json.Marshal(l.Key())
		json.Unmarshal(b, &want)
		if st.Key != want || st.Remaining != 3 || st.Identifier == nil || len(*st.Identifier) < len(id)-2 {
			t.Errorf("id %q: key %q, remaining %d, identifier %v, want key %q, 3 and the id", id, st.Key, st.Remaining, st.Identifier, want)
		}
	}
	for _, tc := range []struct {
		name, query string
		status      int
	}{
		{"too long an id", "limiter=api&id=" + strings.Repeat("x", dashboard.MaxIdentifierLength+1), http.StatusBadRequest},
		{"too long a name", "limiter=" + strings.Repeat("x", dashboard.MaxIdentifierLength+1), http.StatusBadRequest},
		{"no limiter", "id=alice", http.StatusBadRequest},
		{"unknown limiter", "limiter=nope&id=alice", http.StatusNotFound},
		{"a template is not a name", "limiter=api:{user}&id=alice", http.StatusNotFound},
		{"a key is not a name", "limiter=api:alice", http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantProblem(t, get(t, d, "/dashboard/api/state?"+tc.query), tc.status)
		})
	}
}

func urlQuery(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteString("%")
		b.WriteString(strings.ToUpper(string("0123456789abcdef"[s[i]>>4]) + string("0123456789abcdef"[s[i]&15])))
	}
	return b.String()
}

// faultStore is a memory store seen as a network store (so the registry
// bounds its calls and guards it with a breaker) whose Peek and Decide
// can be made to fail or hang.
type faultStore struct {
	driver.Store
	peek   func(ctx context.Context) error
	decide func(ctx context.Context) error
}

func (s *faultStore) Peek(ctx context.Context, c []driver.Check, r []driver.Result) error {
	if s.peek != nil {
		return s.peek(ctx)
	}
	return s.Store.Peek(ctx, c, r)
}

func (s *faultStore) Decide(ctx context.Context, c []driver.Check, r []driver.Result) (bool, error) {
	if s.decide != nil {
		return false, s.decide(ctx)
	}
	return s.Store.Decide(ctx, c, r)
}

func hang(ctx context.Context) error { <-ctx.Done(); return driver.Unavailable(ctx.Err()) }

func down(context.Context) error {
	return driver.Unavailable(errors.New("connection refused by 10.0.0.7:6379"))
}

func faultRegistry(t *testing.T, s *faultStore, opts ...ratesync.StoreOption) *ratesync.Registry {
	t.Helper()
	mem := memstore.New()
	t.Cleanup(func() { mem.Close() })
	s.Store = mem
	reg := ratesync.NewRegistry()
	t.Cleanup(func() { reg.Close() })
	must(t, reg.AddStore("net", s, opts...))
	must(t, reg.ConfigureLimiter("api", ratesync.Rule{Store: "net", RatePerSecond: 1, Burst: 5}))
	return reg
}

func TestStateFaults(t *testing.T) {
	t.Run("store hangs", func(t *testing.T) {
		reg := faultRegistry(t, &faultStore{peek: hang}, ratesync.WithCallTimeout(0))
		d := newDashboard(t, reg, dashboard.WithStateTimeout(50*time.Millisecond))
		start := time.Now()
		p := wantProblem(t, get(t, d, "/dashboard/api/state?limiter=api&id=a"), http.StatusGatewayTimeout)
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("answered after %v, want about the 50ms state timeout", el)
		}
		t.Logf("hanging store: %v", p.Detail)
	})
	t.Run("store down", func(t *testing.T) {
		s := &faultStore{peek: down}
		reg := faultRegistry(t, s)
		d := newDashboard(t, reg)
		p := wantProblem(t, get(t, d, "/dashboard/api/state?limiter=api&id=a"), http.StatusServiceUnavailable)
		if strings.Contains(p.Detail, "10.0.0.7") {
			t.Errorf("detail %q shows the store's error", p.Detail)
		}
		// Decisions that fail open the breaker: the overview shows it.
		s.decide = down
		for range ratesync.DefaultBreakerThreshold {
			reg.Try(ctx, "api")
		}
		ov := decode[overview](t, get(t, d, "/dashboard/api/overview"), 200)
		if len(ov.Stores) != 1 || ov.Stores[0].Breaker != "open" || ov.Limiters[0].Totals.Errors == 0 {
			t.Errorf("stores %+v, errors %d, want the breaker open and errors counted", ov.Stores, ov.Limiters[0].Totals.Errors)
		}
		p = wantProblem(t, get(t, d, "/dashboard/api/state?limiter=api&id=a"), http.StatusServiceUnavailable)
		if !strings.Contains(p.Detail, "circuit breaker is open") {
			t.Errorf("detail %q, want it to say the breaker is open", p.Detail)
		}
	})
}

// A caller that goes away ends the store call at once, and nothing is
// written for it.
func TestStateCancelled(t *testing.T) {
	called := make(chan struct{}, 1)
	reg := faultRegistry(t, &faultStore{peek: func(ctx context.Context) error {
		called <- struct{}{}
		return hang(ctx)
	}}, ratesync.WithCallTimeout(0))
	d := newDashboard(t, reg, dashboard.WithStateTimeout(time.Hour))
	rctx, cancel := context.WithCancel(ctx)
	req := httptest.NewRequest(http.MethodGet, "/dashboard/api/state?limiter=api&id=a", nil).WithContext(rctx)
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { defer close(done); d.ServeHTTP(rec, req) }()
	<-called
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler still waits 5 s after its caller left")
	}
	if rec.Body.Len() != 0 || rec.Code != 200 { // 200: nothing was written
		t.Errorf("wrote %d %q to a caller that left", rec.Code, rec.Body.String())
	}
}

// Cost: inspections waiting for a slow store are bounded; one more is
// answered 429 at once instead of adding to the store's load.
func TestStateBounded(t *testing.T) {
	release := make(chan struct{})
	called := make(chan struct{}, 10)
	reg := faultRegistry(t, &faultStore{peek: func(ctx context.Context) error {
		called <- struct{}{}
		select {
		case <-release:
			return driver.Unavailable(errors.New("slow"))
		case <-ctx.Done():
			return driver.Unavailable(ctx.Err())
		}
	}}, ratesync.WithCallTimeout(0))
	d := newDashboard(t, reg, dashboard.WithMaxInspections(2), dashboard.WithStateTimeout(time.Minute))
	done := make(chan int, 2)
	for range 2 {
		go func() {
			rec := httptest.NewRecorder()
			d.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/dashboard/api/state?limiter=api&id=x", nil))
			done <- rec.Code
		}()
	}
	<-called
	<-called
	res := get(t, d, "/dashboard/api/state?limiter=api&id=y")
	wantProblem(t, res, http.StatusTooManyRequests)
	if res.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q, want 1", res.Header.Get("Retry-After"))
	}
	close(release)
	for range 2 {
		if code := <-done; code != http.StatusServiceUnavailable {
			t.Errorf("a slow inspection answered %d, want 503", code)
		}
	}
	// The slots are free again.
	if len(called) != 0 {
		t.Fatalf("the store was called %d more times", len(called))
	}
	d2 := get(t, d, "/dashboard/api/state?limiter=api&id=z")
	wantProblem(t, d2, http.StatusServiceUnavailable)
}
