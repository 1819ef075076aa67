package ratesync_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var ctx = context.Background()

func newRegistry(t *testing.T, rules map[string]ratesync.Rule, opts ...ratesync.RegistryOption) *ratesync.Registry {
	t.Helper()
	r := ratesync.NewRegistry(opts...)
	t.Cleanup(func() { r.Close() })
	if err := r.ConfigureStore("main", "memory", nil); err != nil {
		t.Fatal(err)
	}
	for name, rule := range rules {
		if rule.Store == "" {
			rule.Store = "main"
		}
		if err := r.ConfigureLimiter(name, rule); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

const quickStart = "[stores.main]\nengine = \"memory\"\n\n[limiters.api]\nstore = \"main\"\nrate_per_second = 10.0\n"

func TestQuickStartAutoLoads(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
	}{
		{"./rate-sync.toml", func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "rate-sync.toml"), quickStart) }},
		{"./config/rate-sync.toml", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "config", "rate-sync.toml"), quickStart)
		}},
		{"RATE_SYNC_CONFIG", func(t *testing.T, dir string) {
			p := filepath.Join(t.TempDir(), "limits.toml")
			writeFile(t, p, quickStart)
			writeFile(t, filepath.Join(dir, "rate-sync.toml"), "this file must not be read")
			t.Setenv(ratesync.ConfigEnv, p)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir)
			tt.setup(t, dir)
			ratesync.ResetDefault()
			t.Cleanup(ratesync.ResetDefault)
			start := time.Now()
			for range 2 {
				lease, err := ratesync.Acquire(ctx, "api")
				if err != nil {
					t.Fatal(err)
				}
				lease.Release(ctx)
			}
			if el := time.Since(start); el < 95*time.Millisecond {
				t.Fatalf("two acquires at 10/s took %v, want about 100ms", el)
			}
		})
	}
}

func TestAutoLoadErrors(t *testing.T) {
	t.Run("broken file is a returned error", func(t *testing.T) {
		dir := t.TempDir()
		t.Chdir(dir)
		writeFile(t, filepath.Join(dir, "rate-sync.toml"), "[limiters.api]\nstore = \"main\"\nrate_per_second = \"x\"\n")
		ratesync.ResetDefault()
		t.Cleanup(ratesync.ResetDefault)
		_, err := ratesync.Acquire(ctx, "api")
		if !errors.Is(err, ratesync.ErrInvalidConfig) || !strings.Contains(err.Error(), "rate-sync.toml:3") {
			t.Fatalf("got %v", err)
		}
		if _, err2 := ratesync.Try(ctx, "api"); err2 == nil {
			t.Fatal("second call forgot the loading error")
		}
		// An explicit LoadConfig replaces the broken automatic load.
		good := filepath.Join(dir, "good.toml")
		writeFile(t, good, quickStart)
		if err := ratesync.LoadConfig(good); err != nil {
			t.Fatal(err)
		}
		if d, err := ratesync.Try(ctx, "api"); err != nil || !d.Allowed {
			t.Fatalf("after LoadConfig: %+v %v", d, err)
		}
	})
	t.Run("missing RATE_SYNC_CONFIG file", func(t *testing.T) {
		t.Chdir(t.TempDir())
		t.Setenv(ratesync.ConfigEnv, "/nonexistent/rate-sync.toml")
		ratesync.ResetDefault()
		t.Cleanup(ratesync.ResetDefault)
		if _, err := ratesync.Try(ctx, "api"); err == nil || !strings.Contains(err.Error(), "RATE_SYNC_CONFIG") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("no file configures nothing", func(t *testing.T) {
		t.Chdir(t.TempDir())
		ratesync.ResetDefault()
		t.Cleanup(ratesync.ResetDefault)
		if _, err := ratesync.Try(ctx, "api"); !errors.Is(err, ratesync.ErrLimiterNotFound) {
			t.Fatalf("got %v", err)
		}
		// Programmatic configuration, no file.
		if err := ratesync.ConfigureStore("main", "memory", nil); err != nil {
			t.Fatal(err)
		}
		if err := ratesync.ConfigureLimiter("api", ratesync.Rule{Store: "main", RatePerSecond: 100}); err != nil {
			t.Fatal(err)
		}
		if err := ratesync.Do(ctx, "api", func(context.Context) error { return nil }); err != nil {
			t.Fatal(err)
		}
	})
}

func TestDoReleasesOnErrorAndPanic(t *testing.T) {
	r := newRegistry(t, map[string]ratesync.Rule{"one": {MaxConcurrent: 1}})
	boom := errors.New("boom")
	if err := r.Do(ctx, "one", func(context.Context) error { return boom }); err != boom {
		t.Fatalf("got %v, want fn's error", err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic was swallowed")
			}
		}()
		r.Do(ctx, "one", func(context.Context) error { panic("in fn") })
	}()
	ran, err := r.TryDo(ctx, "one", func(context.Context) error {
		// While fn runs the slot is held.
		if ran, _ := r.TryDo(ctx, "one", func(context.Context) error { return nil }); ran {
			t.Error("second TryDo ran while the slot was held")
		}
		return nil
	})
	if !ran || err != nil {
		t.Fatalf("TryDo: ran=%v err=%v (a slot leaked on error or panic?)", ran, err)
	}
	l, _ := r.Get("one")
	if m := l.Metrics(); m.CurrentConcurrent != 0 || m.Releases != 3 || m.PeakConcurrent != 1 {
		t.Fatalf("metrics %+v", m)
	}
}

func TestLeaseReleaseIsIdempotent(t *testing.T) {
	r := newRegistry(t, map[string]ratesync.Rule{"one": {MaxConcurrent: 1, LeaseTTL: time.Minute}, "rate": {RatePerSecond: 1}})
	l, _ := r.Get("one")
	lease, err := l.Acquire(ctx)
	if err != nil || !lease.Held() {
		t.Fatal(err)
	}
	if err := lease.Extend(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	lease.Release(ctx)
	lease.Release(ctx)
	if lease.Held() || !errors.Is(lease.Extend(ctx, 0), ratesync.ErrLeaseLost) {
		t.Fatal("released lease still held or extendable")
	}
	var nilLease *ratesync.Lease
	if err := nilLease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	d1, _ := l.Try(ctx)
	d2, _ := l.Try(ctx)
	if !d1.Allowed || d2.Allowed {
		t.Fatalf("double release raised capacity: %v %v", d1.Allowed, d2.Allowed)
	}
	// Rate-only leases hold nothing.
	rl, _ := r.Acquire(ctx, "rate")
	if rl == nil || rl.Held() || rl.Release(ctx) != nil {
		t.Fatal("rate-only lease")
	}
}

func TestCostValidation(t *testing.T) {
	r := newRegistry(t, map[string]ratesync.Rule{"b": {RatePerSecond: 1, Burst: 3}})
	l, _ := r.Get("b")
	if _, err := l.Try(ctx, ratesync.WithCost(4)); !errors.Is(err, ratesync.ErrCostTooHigh) {
		t.Fatalf("cost 4 > burst 3: %v", err)
	}
	if _, err := l.Acquire(ctx, ratesync.WithCost(0)); err == nil {
		t.Fatal("cost 0 accepted")
	}
	if d, err := l.Try(ctx, ratesync.WithCost(3)); err != nil || !d.Allowed || d.Remaining != 0 {
		t.Fatalf("cost 3: %+v %v", d, err)
	}
}

func TestPerKeyLimitsAndTemplates(t *testing.T) {
	r := newRegistry(t, map[string]ratesync.Rule{"api": {Algorithm: ratesync.SlidingWindow, Limit: 1, Window: time.Minute}})
	a, _ := r.For("api", "7")
	tmpl, err := r.Template("api:{user_id}")
	if err != nil {
		t.Fatal(err)
	}
	b, err := tmpl.Resolve(ratesync.Values{"user_id": "7"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Key() != b.Key() || a.Key() != "api:7" {
		t.Fatalf("keys %q %q", a.Key(), b.Key())
	}
	if d, _ := a.Try(ctx); !d.Allowed {
		t.Fatal("user 7 first try denied")
	}
	if d, _ := b.Try(ctx); d.Allowed {
		t.Fatal("template limiter does not share For's state")
	}
	other, _ := r.For("api", "8")
	if d, _ := other.Try(ctx); !d.Allowed {
		t.Fatal("user 8 limited by user 7")
	}
	base, _ := r.Get("api")
	if d, _ := base.Try(ctx); !d.Allowed {
		t.Fatal("base limiter shares state with a per-key one")
	}

	// Separators cannot make two identifier lists collide.
	k1, _ := r.For("api", "a", "b:c")
	k2, _ := r.For("api", "a:b", "c")
	k3, _ := r.For("api", "a:b:c")
	k4, _ := r.For("api", "a%3Ab", "c")
	seen := map[string]bool{}
	for _, k := range []*ratesync.Limiter{k1, k2, k3, k4} {
		if seen[k.Key()] {
			t.Fatalf("key collision: %q", k.Key())
		}
		seen[k.Key()] = true
	}
	if k1.For("x").Key() != "api:a:b%3Ac:x" || k1.For("x").Key() != mustKey(r, "api", "a", "b:c", "x") {
		t.Fatalf("For on a per-key limiter: %q", k1.For("x").Key())
	}

	multi, err := r.Resolve("api:{tenant_id}:user-{user_id}", ratesync.Values{"tenant_id": "t1", "user_id": "u:9"})
	if err != nil || multi.Key() != "api:t1:user-u%3A9" {
		t.Fatalf("multi: %v %v", multi, err)
	}
	if _, err := r.Resolve("api:{tenant_id}:{user_id}", ratesync.Values{"tenant_id": "t1"}); !errors.Is(err, ratesync.ErrMissingValue) || !strings.Contains(err.Error(), "{user_id}") {
		t.Fatalf("missing value: %v", err)
	}
	for _, bad := range []string{"{tenant}:api", "api:{user", "api:user}", "api:{}", "api:{a-b}", ""} {
		if _, err := r.Template(bad); err == nil {
			t.Errorf("template %q accepted", bad)
		}
	}
	if _, err := r.Resolve("nope:{id}", ratesync.Values{"id": "1"}); !errors.Is(err, ratesync.ErrLimiterNotFound) {
		t.Fatalf("unknown base: %v", err)
	}
	if got := tmpl.Placeholders(); len(got) != 1 || got[0] != "user_id" {
		t.Fatalf("placeholders %v", got)
	}
}

func TestCloneAndValidation(t *testing.T) {
	r := newRegistry(t, map[string]ratesync.Rule{"platform_api": {RatePerSecond: 10, Timeout: time.Second}})
	if err := r.Clone("platform_api", "tenant:42", func(rule *ratesync.Rule) { rule.RatePerSecond = 100 }); err != nil {
		t.Fatal(err)
	}
	l, err := r.Get("tenant:42")
	if err != nil || l.Rule().RatePerSecond != 100 || l.Rule().Timeout != time.Second {
		t.Fatalf("clone: %v %+v", err, l.Rule())
	}
	if err := r.Clone("missing", "x", nil); !errors.Is(err, ratesync.ErrLimiterNotFound) {
		t.Fatalf("clone of missing: %v", err)
	}
	if err := r.Clone("platform_api", "bad", func(rule *ratesync.Rule) { rule.RatePerSecond = -1 }); err == nil || !strings.Contains(err.Error(), "[limiters.bad] rate_per_second") {
		t.Fatalf("invalid clone: %v", err)
	}
	if err := r.ConfigureLimiter("x", ratesync.Rule{Store: "nope", RatePerSecond: 1}); !errors.Is(err, ratesync.ErrStoreNotFound) {
		t.Fatalf("unknown store: %v", err)
	}
	if err := r.ConfigureLimiter("a{b}", ratesync.Rule{Store: "main", RatePerSecond: 1}); err == nil {
		t.Fatal("name with braces accepted")
	}
}

// failingStore fails every call, to exercise the failure policy.
type failingStore struct{ driver.Store }

var errDown = errors.New("store down")

func (failingStore) Decide(context.Context, []driver.Check, []driver.Result) (bool, error) {
	return false, errDown
}

func TestFailurePolicy(t *testing.T) {
	r := ratesync.NewRegistry()
	defer r.Close()
	mem := newMem()
	defer mem.Close()
	r.AddStore("down", failingStore{mem})
	r.ConfigureLimiter("open", ratesync.Rule{Store: "down", RatePerSecond: 1, MaxConcurrent: 1, OnStoreError: ratesync.Allow})
	r.ConfigureLimiter("closed", ratesync.Rule{Store: "down", RatePerSecond: 1, OnStoreError: ratesync.Deny})
	d, err := r.Try(ctx, "open")
	if err != nil || !d.Allowed || !d.FailedOpen {
		t.Fatalf("fail open: %+v %v", d, err)
	}
	if err := d.Lease.Release(ctx); err != nil {
		t.Fatalf("a fail-open lease released against the store: %v", err)
	}
	d, err = r.Try(ctx, "closed")
	if d.Allowed || !errors.Is(err, ratesync.ErrStore) || !errors.Is(err, errDown) {
		t.Fatalf("fail closed: %+v %v", d, err)
	}
	if _, err := r.Acquire(ctx, "closed"); !errors.Is(err, errDown) {
		t.Fatalf("acquire fail closed: %v", err)
	}
	l, _ := r.Get("open")
	if l.Metrics().Errors != 1 {
		t.Fatalf("errors metric %d", l.Metrics().Errors)
	}
	// AddStore's store is the caller's: Close leaves it open.
	r.Close()
	if err := mem.Ping(ctx); err != nil {
		t.Fatalf("registry closed a store it did not open: %v", err)
	}
}

func TestObserverGetsOneEventPerDecision(t *testing.T) {
	var mu sync.Mutex
	var events []ratesync.Event
	r := newRegistry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 20}}, ratesync.WithObserver(func(e ratesync.Event) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}))
	l, _ := r.For("api", "user-1")
	l.Try(ctx)
	l.Try(ctx)
	l.Acquire(ctx) // waits ~50ms: one event, not one per retry
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 3 {
		t.Fatalf("%d events: %+v", len(events), events)
	}
	if events[0].Op != ratesync.OpTry || !events[0].Decision.Allowed || events[1].Decision.Allowed {
		t.Fatalf("try events %+v", events[:2])
	}
	e := events[2]
	if e.Op != ratesync.OpAcquire || !e.Decision.Allowed || e.Wait < 40*time.Millisecond || e.Limiter != "api" || e.Key != "api:user-1" {
		t.Fatalf("acquire event %+v", e)
	}
}

func TestCompositeLogin(t *testing.T) {
	r := newRegistry(t, map[string]ratesync.Rule{
		"login_ip":      {Algorithm: ratesync.SlidingWindow, Limit: 20, Window: time.Minute},
		"login_account": {Algorithm: ratesync.SlidingWindow, Limit: 10, Window: time.Minute},
		"slots":         {MaxConcurrent: 1},
	})
	c, err := r.Composite(map[string]string{"by_ip": "login_ip", "by_email": "login_account"}, ratesync.AllMustPass)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{"by_ip": "1.2.3.4", "by_email": ratesync.HashIdentifier("alice@example.com")}
	res, err := c.Check(ctx, ids)
	if err != nil || !res.Allowed || res.TriggeredBy != "" || res.MostRestrictive.Limit != 10 || res.MostRestrictive.Remaining != 9 {
		t.Fatalf("first: %+v %v", res, err)
	}
	for range 9 {
		c.Check(ctx, ids)
	}
	res, _ = c.Check(ctx, ids)
	if res.Allowed || res.TriggeredBy != "by_email" || res.MostRestrictive.Remaining != 0 || res.Results["by_ip"].Remaining != 10 {
		t.Fatalf("11th: %+v", res)
	}
	// The denial consumed nothing from the IP limiter.
	ipl, _ := r.For("login_ip", "1.2.3.4")
	if st, _ := ipl.State(ctx); st.Remaining != 10 {
		t.Fatalf("ip remaining %d, want 10", st.Remaining)
	}
	// Another account from the same IP is fine.
	ids2 := map[string]string{"by_ip": "1.2.3.4", "by_email": ratesync.HashIdentifier("bob@example.com")}
	if res, _ := c.Check(ctx, ids2); !res.Allowed {
		t.Fatalf("bob: %+v", res)
	}
	if _, err := c.Check(ctx, map[string]string{"by_ip": "x"}); err == nil {
		t.Fatal("missing identifier accepted")
	}
	if _, err := r.Composite(nil, ""); err == nil {
		t.Fatal("empty composite accepted")
	}
	if _, err := r.Composite(map[string]string{"a": "login_ip"}, "first_wins"); err == nil {
		t.Fatal("unknown strategy accepted")
	}

	// all_must_pass names the denying part as most restrictive.
	all, _ := r.Composite(map[string]string{"a": "login_account", "b": "login_ip"}, ratesync.AllMustPass)
	res, _ = all.Check(ctx, map[string]string{"a": ids["by_email"], "b": "5.6.7.8"})
	if res.Allowed || res.TriggeredBy != "a" || res.MostRestrictive.Limiter != "a" {
		t.Fatalf("all_must_pass: %+v", res)
	}
	// any_must_pass admits through the first part with room, consuming only it.
	anyc, _ := r.Composite(map[string]string{"a": "login_account", "b": "login_ip"}, ratesync.AnyMustPass)
	res, _ = anyc.Check(ctx, map[string]string{"a": ids["by_email"], "b": "9.9.9.9"})
	if !res.Allowed || res.MostRestrictive.Limiter != "b" {
		t.Fatalf("any_must_pass: %+v", res)
	}

	// Composite concurrency: the lease is held until released.
	cs, _ := r.Composite(map[string]string{"slot": "slots", "ip": "login_ip"}, "")
	res, _ = cs.Check(ctx, map[string]string{"slot": "x", "ip": "7.7.7.7"})
	if !res.Allowed || !res.Lease.Held() {
		t.Fatalf("composite with slots: %+v", res)
	}
	if res2, _ := cs.Check(ctx, map[string]string{"slot": "x", "ip": "7.7.7.7"}); res2.Allowed || res2.TriggeredBy != "slot" {
		t.Fatalf("second with slot held: %+v", res2)
	}
	res.Lease.Release(ctx)
	if res3, _ := cs.Check(ctx, map[string]string{"slot": "x", "ip": "7.7.7.7"}); !res3.Allowed {
		t.Fatalf("after release: %+v", res3)
	}
}

func TestConcurrentRegistryUse(t *testing.T) {
	r := newRegistry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 1e6, Burst: 100}})
	var wg sync.WaitGroup
	var admitted atomic.Int64
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				if j%50 == 0 {
					r.ConfigureLimiter("other", ratesync.Rule{Store: "main", RatePerSecond: float64(i + 1)})
					r.ConfigureStore("spare", "memory", nil)
				}
				if d, err := r.Try(ctx, "api"); err == nil && d.Allowed {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if admitted.Load() == 0 {
		t.Fatal("nothing admitted")
	}
}

func TestTryAllocatesNothing(t *testing.T) {
	r := newRegistry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 1e6, Burst: 1e9}, "win": {Algorithm: ratesync.SlidingWindow, Limit: 1 << 20, Window: time.Millisecond}})
	l, _ := r.Get("api")
	w, _ := r.Get("win")
	l.For("warm").Try(ctx)
	w.Try(ctx)
	tests := map[string]func(){
		"base":         func() { l.Try(ctx) },
		"per key":      func() { l.For("user-42").Try(ctx) },
		"window":       func() { w.Try(ctx) },
		"registry Try": func() { r.Try(ctx, "api") },
	}
	for name, fn := range tests {
		if n := testing.AllocsPerRun(500, fn); n != 0 {
			t.Errorf("%s: %v allocs per Try, want 0", name, n)
		}
	}
}

func mustKey(r *ratesync.Registry, name string, ids ...string) string {
	l, err := r.For(name, ids...)
	if err != nil {
		panic(err)
	}
	return l.Key()
}
