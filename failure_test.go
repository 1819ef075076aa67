package ratesync_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/memstore"
)

// flakyStore is a memory store that fails every call while down, and
// counts the calls that reach it. It embeds the driver.Store interface,
// not the memory store, so that it is not seen as an in-process store
// (driver.InProcess), which the limiter layer calls without a timeout or
// a breaker.
type flakyStore struct {
	driver.Store
	down     atomic.Bool
	calls    atomic.Int64
	releases atomic.Int64
}

var errRefused = errors.New("connection refused")

func (f *flakyStore) Decide(ctx context.Context, c []driver.Check, r []driver.Result) (bool, error) {
	f.calls.Add(1)
	if f.down.Load() {
		return false, driver.Unavailable(errRefused)
	}
	return f.Store.Decide(ctx, c, r)
}

func (f *flakyStore) Release(ctx context.Context, k driver.Key, lease string) error {
	f.releases.Add(1)
	return f.Store.Release(ctx, k, lease)
}

func flakyRegistry(t *testing.T, rules map[string]ratesync.Rule) (*ratesync.Registry, *flakyStore) {
	t.Helper()
	fs := &flakyStore{Store: memstore.New()}
	t.Cleanup(func() { fs.Store.Close() })
	r := ratesync.NewRegistry()
	t.Cleanup(func() { r.Close() })
	if err := r.AddStore("flaky", fs); err != nil {
		t.Fatal(err)
	}
	for name, rule := range rules {
		rule.Store = "flaky"
		if err := r.ConfigureLimiter(name, rule); err != nil {
			t.Fatal(err)
		}
	}
	return r, fs
}

func TestFailurePolicies(t *testing.T) {
	r, fs := flakyRegistry(t, map[string]ratesync.Rule{
		"allow": {RatePerSecond: 1, Burst: 1, OnStoreError: ratesync.Allow},
		"deny":  {RatePerSecond: 1, Burst: 1, OnStoreError: ratesync.Deny},
		"local": {RatePerSecond: 0.001, Burst: 10, MaxConcurrent: 4, OnStoreError: ratesync.Local, FallbackReplicas: 2},
	})
	fs.down.Store(true)
	d, err := r.Try(ctx, "allow")
	if err != nil || !d.Allowed || !d.FailedOpen {
		t.Fatalf("allow: %+v %v", d, err)
	}
	if _, err := r.Try(ctx, "deny"); !errors.Is(err, ratesync.ErrStore) || !errors.Is(err, errRefused) {
		t.Fatalf("deny: %v, want ErrStore wrapping the store's error", err)
	}
	// Local: burst 10 and 4 slots shared by 2 replicas: 5 tokens, 2 slots here.
	l, _ := r.For("local", "u1")
	var leases []*ratesync.Lease
	for i := range 3 {
		d, err := l.Try(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if i < 2 && (!d.Allowed || !d.Fallback || d.Limit != 2) {
			t.Fatalf("local %d: %+v, want allowed by the fallback with 2 slots", i, d)
		}
		if i == 2 && d.Allowed {
			t.Fatalf("local: third concurrent lease allowed with max_concurrent 4 / 2 replicas")
		}
		leases = append(leases, d.Lease)
	}
	before := fs.releases.Load()
	for _, le := range leases {
		le.Release(ctx)
	}
	if fs.releases.Load() != before {
		t.Fatal("a lease granted by the fallback was released against the real store")
	}
	// Tokens: 5 per replica (slots are free again).
	admitted := 0
	for range 10 {
		if d, _ := l.Try(ctx); d.Allowed {
			admitted++
			d.Lease.Release(ctx)
		}
	}
	if admitted != 3 { // 2 taken above, 3 left of 5
		t.Fatalf("local fallback admitted %d more, want 3 (burst 10 / 2 replicas)", admitted)
	}
}

func TestCircuitBreaker(t *testing.T) {
	r, fs := flakyRegistry(t, map[string]ratesync.Rule{"api": {RatePerSecond: 1000, Burst: 1000, OnStoreError: ratesync.Allow}})
	fs.down.Store(true)
	for range 20 {
		if d, err := r.Try(ctx, "api"); err != nil || !d.FailedOpen {
			t.Fatalf("%+v %v", d, err)
		}
	}
	if n := fs.calls.Load(); n != ratesync.DefaultBreakerThreshold {
		t.Fatalf("store called %d times for 20 decisions, want %d before the breaker opened", n, ratesync.DefaultBreakerThreshold)
	}
	if st := r.Stores()[0].Breaker; st != ratesync.BreakerOpen {
		t.Fatalf("breaker %s, want open", st)
	}
	// After the cool-down one probe goes through; the store is back.
	fs.down.Store(false)
	deadline := time.Now().Add(ratesync.DefaultBreakerCooldown + 5*time.Second)
	for r.Stores()[0].Breaker != ratesync.BreakerHalfOpen {
		if time.Now().After(deadline) {
			t.Fatal("breaker never half-open")
		}
		time.Sleep(50 * time.Millisecond)
	}
	d, err := r.Try(ctx, "api")
	if err != nil || !d.Allowed || d.FailedOpen {
		t.Fatalf("probe: %+v %v, want a real decision", d, err)
	}
	if st := r.Stores()[0].Breaker; st != ratesync.BreakerClosed {
		t.Fatalf("breaker %s after a good probe, want closed", st)
	}
}

func TestFailurePolicyConfig(t *testing.T) {
	for _, tc := range []struct{ toml, err string }{
		{"on_store_error = \"local\"\nfallback_replicas = 3\n", ""},
		{"on_store_error = \"panic\"\n", `unknown policy "panic"`},
		{"fail_closed = true\non_store_error = \"allow\"\n", "contradicts"},
		{"fallback_replicas = 2\n", ""}, // local is the default
		{"on_store_error = \"allow\"\nfallback_replicas = 2\n", "needs on_store_error"},
		{"fail_closed = false\non_store_error = \"local\"\n", "contradicts"},
		{"on_store_error = \"local\"\nfallback_replicas = 0\n", "must be > 0"},
	} {
		_, err := ratesync.ParseConfig("f.toml", []byte("[stores.m]\nengine = \"memory\"\n[limiters.a]\nstore = \"m\"\nrate_per_second = 1.0\n"+tc.toml))
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%q: %v, want %q", tc.toml, err, tc.err)
		}
	}
}

type secretErrStore struct{ *flakyStore }

var errWithURL = errors.New("dial redis://:s3cret@10.0.0.9:6379: connection refused")

func (s secretErrStore) Decide(ctx context.Context, c []driver.Check, r []driver.Result) (bool, error) {
	return false, driver.Unavailable(errWithURL)
}

// Store trouble is logged once per breaker change, never per decision,
// and without passwords.
func TestLogsOncePerBreakerChange(t *testing.T) {
	var buf strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}), nil))
	fs := &flakyStore{Store: memstore.New()}
	defer fs.Store.Close()
	r := ratesync.NewRegistry(ratesync.WithLogger(log))
	defer r.Close()
	r.AddStore("s", secretErrStore{fs})
	r.ConfigureLimiter("api", ratesync.Rule{Store: "s", RatePerSecond: 100})
	for i := range 50 {
		r.For("api", "client-"+string(rune('a'+i%26)))
		r.Try(ctx, "api")
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if n := strings.Count(out, "\n"); n != 1 || !strings.Contains(out, "circuit breaker open") {
		t.Fatalf("%d log lines for 50 failing decisions, want 1:\n%s", n, out)
	}
	if strings.Contains(out, "s3cret") || strings.Contains(out, "client-") {
		t.Fatalf("log leaks a password or a key:\n%s", out)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// slowStore answers only when unblocked.
type slowStore struct {
	*flakyStore
	unblock chan struct{}
}

func (s slowStore) Decide(ctx context.Context, c []driver.Check, r []driver.Result) (bool, error) {
	<-s.unblock
	// A store that ignores its context (as a client without context
	// deadlines does) answers even after the call timed out.
	return s.flakyStore.Decide(context.WithoutCancel(ctx), c, r)
}

// A store that does not answer within the call timeout gets the failure
// policy's answer; the lease it grants late is released, not leaked.
func TestCallTimeout(t *testing.T) {
	fs := &flakyStore{Store: memstore.New()}
	defer fs.Store.Close()
	slow := slowStore{fs, make(chan struct{})}
	r := ratesync.NewRegistry()
	defer r.Close()
	if err := r.AddStore("slow", slow, ratesync.WithCallTimeout(20*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	r.ConfigureLimiter("jobs", ratesync.Rule{Store: "slow", MaxConcurrent: 1, OnStoreError: ratesync.Deny})
	_, err := r.Try(ctx, "jobs")
	if !errors.Is(err, ratesync.ErrCallTimeout) || !errors.Is(err, ratesync.ErrStore) {
		t.Fatalf("Try on a store that does not answer: %v, want ErrStore wrapping ErrCallTimeout", err)
	}
	close(slow.unblock) // the store now answers the abandoned call: a lease
	deadline := time.Now().Add(5 * time.Second)
	for fs.releases.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the lease granted after the timeout was never released")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The slot is free again: a decision in time gets it.
	d, err := r.Try(ctx, "jobs")
	if err != nil || !d.Allowed {
		t.Fatalf("after the late release: %+v %v", d, err)
	}
	d.Lease.Release(ctx)
	if err := r.AddStore("neg", slow, ratesync.WithCallTimeout(-time.Second)); !errors.Is(err, ratesync.ErrInvalidConfig) {
		t.Fatalf("a negative call timeout: %v, want ErrInvalidConfig", err)
	}
}
