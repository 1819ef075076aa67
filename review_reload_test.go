package ratesync_test

// Review of Reload, WatchConfig, shadow mode and per-key overrides: each
// test here shows a defect of the current code, and fails until it is
// fixed.

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/memstore"
)

func reviewConc(t *testing.T, max int, extra string) *ratesync.Config {
	t.Helper()
	return mustParse(t, `
[stores.main]
engine = "memory"
[limiters.jobs]
store = "main"
max_concurrent = `+itoa(max)+`
`+extra)
}

// waitFor polls cond (state, not time) until it holds or 5 s pass.
func reviewWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

type acquired struct {
	lease *ratesync.Lease
	err   error
	at    time.Duration
}

func acquireAsync(ctx context.Context, l *ratesync.Limiter, opts ...ratesync.CallOption) <-chan acquired {
	ch := make(chan acquired, 1)
	start := time.Now()
	go func() {
		lease, err := l.Acquire(ctx, opts...)
		ch <- acquired{lease, err, time.Since(start)}
	}()
	return ch
}

// TestReviewReloadWaiterGetsRaisedSlot shows that an Acquire waiting for a
// concurrency slot when a reload raises max_concurrent keeps deciding with
// the rule it started with: the slot the reload added is free, yet the
// waiter never takes it and times out (the docs: a raised max_concurrent
// "applies at once to the usage already counted").
func TestReviewReloadWaiterGetsRaisedSlot(t *testing.T) {
	ctx := context.Background()
	reg := loaded(t, reviewConc(t, 1, ""))
	jobs, _ := reg.Get("jobs")
	held, err := jobs.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(ctx)
	res := acquireAsync(ctx, jobs, ratesync.WithTimeout(3*time.Second))
	reviewWait(t, "the waiter", func() bool { return jobs.Metrics().Waiting == 1 })
	if err := reg.Reload(reviewConc(t, 2, "")); err != nil {
		t.Fatal(err)
	}
	if d, _ := jobs.Try(ctx); d.Allowed { // the new rule has a free slot
		d.Lease.Release(ctx)
	} else {
		t.Fatal("no free slot after raising max_concurrent 1 -> 2 with one held")
	}
	got := <-res
	if got.err != nil {
		t.Fatalf("waiter after max_concurrent was raised 1 -> 2 (one held): %v after %v; want the free slot", got.err, got.at)
	}
	got.lease.Release(ctx)
}

// TestReviewReloadWaiterOverAdmitsLoweredLimit shows that a waiter admitted
// after a reload lowered max_concurrent is decided with the old, higher
// limit: with max_concurrent lowered 2 -> 1 and one lease still held, the
// waiter is granted a second concurrent lease (a reload over-admits).
func TestReviewReloadWaiterOverAdmitsLoweredLimit(t *testing.T) {
	ctx := context.Background()
	reg := loaded(t, reviewConc(t, 2, ""))
	jobs, _ := reg.Get("jobs")
	a, _ := jobs.Acquire(ctx)
	b, _ := jobs.Acquire(ctx)
	defer a.Release(ctx)
	res := acquireAsync(ctx, jobs, ratesync.WithTimeout(400*time.Millisecond))
	reviewWait(t, "the waiter", func() bool { return jobs.Metrics().Waiting == 1 })
	if err := reg.Reload(reviewConc(t, 1, "")); err != nil {
		t.Fatal(err)
	}
	b.Release(ctx) // one lease (a) still held: max 1 is reached
	got := <-res
	if got.err == nil {
		got.lease.Release(ctx)
		t.Fatalf("a waiter was admitted with a lease held and max_concurrent lowered to 1 (after %v)", got.at)
	}
	if !errors.Is(got.err, ratesync.ErrTimeout) {
		t.Fatalf("waiter: %v, want a timeout", got.err)
	}
}

// TestReviewReloadWaiterOfRemovedRule shows that an Acquire waiting when a
// reload removes its rule keeps waiting (until its context ends) instead
// of failing with ErrLimiterNotFound; and when a slot frees, it is
// admitted by a rule that no longer exists.
func TestReviewReloadWaiterOfRemovedRule(t *testing.T) {
	ctx := context.Background()
	reg := loaded(t, reviewConc(t, 1, "[limiters.keep]\nstore = \"main\"\nrate_per_second = 1\n"))
	jobs, _ := reg.Get("jobs")
	held, _ := jobs.Acquire(ctx)
	defer held.Release(ctx)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	res := acquireAsync(wctx, jobs) // no timeout but the context's
	reviewWait(t, "the waiter", func() bool { return jobs.Metrics().Waiting == 1 })
	if err := reg.Reload(mustParse(t, "[stores.main]\nengine = \"memory\"\n[limiters.keep]\nstore = \"main\"\nrate_per_second = 1\n")); err != nil {
		t.Fatal(err)
	}
	got := <-res
	if got.err == nil {
		got.lease.Release(ctx)
	}
	if !errors.Is(got.err, ratesync.ErrLimiterNotFound) {
		t.Fatalf("waiter of a removed rule: %v after %v, want ErrLimiterNotFound at once", got.err, got.at)
	}
}

// TestReviewReloadShadowMakesCallersWait shows that after a reload puts a
// concurrency rule in shadow mode, Acquire still waits behind the waiters
// of the enforced rule (which keep waiting), although the docs say
// "Acquire never waits for a shadow rule".
func TestReviewReloadShadowMakesCallersWait(t *testing.T) {
	ctx := context.Background()
	reg := loaded(t, reviewConc(t, 1, ""))
	jobs, _ := reg.Get("jobs")
	held, _ := jobs.Acquire(ctx)
	defer held.Release(ctx)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	first := acquireAsync(wctx, jobs)
	reviewWait(t, "the waiter", func() bool { return jobs.Metrics().Waiting == 1 })
	if err := reg.Reload(reviewConc(t, 1, "shadow = true\n")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	lease, err := jobs.Acquire(ctx, ratesync.WithTimeout(1500*time.Millisecond))
	waited := time.Since(start)
	if err != nil {
		t.Fatalf("Acquire on a shadow rule: %v after %v; want a shadow admission at once", err, waited)
	}
	lease.Release(ctx)
	if waited > 500*time.Millisecond {
		t.Fatalf("Acquire on a shadow rule waited %v (behind the enforced rule's waiter), want no wait", waited)
	}
	cancel()
	<-first
}

// reviewGate is the engine "review-gated": opening a store of it signals
// entered, then blocks until release is closed, so that a test can run a
// second reload between the first reload's look at the open stores and its
// swap.
var reviewGate struct {
	once    sync.Once
	mu      sync.Mutex
	entered chan struct{}
	release chan struct{}
}

func reviewGatedEngine(t *testing.T) (entered <-chan struct{}, release func()) {
	reviewGate.once.Do(func() {
		ratesync.RegisterEngine("review-gated", func(*ratesync.StoreConfig) (driver.Store, error) {
			reviewGate.mu.Lock()
			en, rel := reviewGate.entered, reviewGate.release
			reviewGate.mu.Unlock()
			if en != nil {
				close(en)
				<-rel
			}
			return memstore.New(), nil
		})
	})
	en, rel := make(chan struct{}), make(chan struct{})
	reviewGate.mu.Lock()
	reviewGate.entered, reviewGate.release = en, rel
	reviewGate.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			reviewGate.mu.Lock()
			reviewGate.entered, reviewGate.release = nil, nil
			reviewGate.mu.Unlock()
			close(rel)
		})
	}
	t.Cleanup(release)
	return en, release
}

// TestReviewReloadConcurrentReloadsBindClosedStore shows that two reloads
// that overlap break a limiter for good. Reload A keeps store "main" as it
// is (unchanged settings) and, while it opens another store, reload B
// removes "main" (no rule uses it any more), which closes it. A then binds
// its rule "api" to the closed store it looked at before: A succeeds, the
// registry is open, yet every decision of "api" fails with ErrClosed, and
// "main" is missing from Stores() although A, the last applied, defines
// it.
func TestReviewReloadConcurrentReloadsBindClosedStore(t *testing.T) {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	ctx := context.Background()
	base := `
[stores.main]
engine = "memory"
[limiters.api]
store = "main"
rate_per_second = 100
burst = 100
`
	if err := reg.Reload(mustParse(t, base)); err != nil {
		t.Fatal(err)
	}
	entered, release := reviewGatedEngine(t)
	done := make(chan error, 1)
	go func() {
		done <- reg.Reload(mustParse(t, base+"\n[stores.slow]\nengine = \"review-gated\"\n"))
	}()
	<-entered // A has kept "main" and is opening "slow"
	// B, while A is in the middle: reloads are applied one at a time, so
	// B applies after A, and the registry ends as B says.
	doneB := make(chan error, 1)
	go func() {
		doneB <- reg.Reload(mustParse(t, `
[stores.other]
engine = "memory"
[limiters.api]
store = "other"
rate_per_second = 100
`))
	}()
	release()
	if err := <-done; err != nil {
		t.Fatalf("reload A: %v", err)
	}
	if err := <-doneB; err != nil {
		t.Fatalf("reload B: %v", err)
	}
	d, err := reg.Try(ctx, "api")
	if err != nil || !d.Allowed {
		t.Fatalf("api after the reloads: %+v, %v; want it decided on store other", d, err)
	}
	var names []string
	for _, s := range reg.Stores() {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "other" {
		t.Fatalf("stores after reload B (the last applied): %v, want [other]", names)
	}
}

// TestReviewReloadConcurrentReloadsLoseStoreSettings shows the lost
// update behind the previous test with a store that both reloads keep:
// A keeps "main" with sweep_interval_seconds = 30 while B, in between,
// reopens it with 20. A, applied last, reports success, yet "main" runs
// with B's settings.
func TestReviewReloadConcurrentReloadsLoseStoreSettings(t *testing.T) {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	cfg := func(sweep, extra string) *ratesync.Config {
		return mustParse(t, `
[stores.main]
engine = "memory"
sweep_interval_seconds = `+sweep+`
[limiters.api]
store = "main"
rate_per_second = 100
`+extra)
	}
	if err := reg.Reload(cfg("30", "")); err != nil {
		t.Fatal(err)
	}
	entered, release := reviewGatedEngine(t)
	done := make(chan error, 1)
	go func() { done <- reg.Reload(cfg("30", "[stores.slow]\nengine = \"review-gated\"\n")) }()
	<-entered
	doneB := make(chan error, 1)
	go func() { doneB <- reg.Reload(cfg("20", "")) }() // applied after A, which is in the middle
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-doneB; err != nil {
		t.Fatal(err)
	}
	for _, s := range reg.Stores() {
		if s.Name == "main" && s.Options["sweep_interval_seconds"] != "20" {
			t.Fatalf("store main after the last reload (sweep 20) succeeded: options %v", s.Options)
		}
	}
}

// reviewPeekStore is a memory store whose Peek, while a gate is set,
// signals entered and waits for release before it runs.
type reviewPeekStore struct {
	driver.Store
}

func (reviewPeekStore) InProcess() {}

var reviewPeek struct {
	once             sync.Once
	mu               sync.Mutex
	entered, release chan struct{}
}

func (s reviewPeekStore) Peek(ctx context.Context, checks []driver.Check, results []driver.Result) error {
	reviewPeek.mu.Lock()
	en, rel := reviewPeek.entered, reviewPeek.release
	reviewPeek.entered = nil // once
	reviewPeek.mu.Unlock()
	if en != nil {
		close(en)
		<-rel
	}
	return s.Store.Peek(ctx, checks, results)
}

// TestReviewReloadStateDuringStoreSwap shows that State (like Reset and
// Registry.ResetStore, which also call the store without counting the
// call in flight) can run on a store that a reload closes under it: the
// replaced store is closed while the call is in it, and State fails with
// "store is closed" on an open registry whose rule is fine.
func TestReviewReloadStateDuringStoreSwap(t *testing.T) {
	reviewPeek.once.Do(func() {
		ratesync.RegisterEngine("review-peek", func(c *ratesync.StoreConfig) (driver.Store, error) {
			if _, err := c.Int("version", 0); err != nil {
				return nil, err
			}
			return reviewPeekStore{memstore.New()}, nil
		})
	})
	cfg := func(version int) *ratesync.Config {
		return mustParse(t, `
[stores.main]
engine = "review-peek"
version = `+itoa(version)+`
[limiters.api]
store = "main"
rate_per_second = 10
`)
	}
	ctx := context.Background()
	reg := loaded(t, cfg(1))
	en, rel := make(chan struct{}), make(chan struct{})
	reviewPeek.mu.Lock()
	reviewPeek.entered, reviewPeek.release = en, rel
	reviewPeek.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		_, err := reg.State(ctx, "api")
		done <- err
	}()
	<-en // State is in the store
	if err := reg.Reload(cfg(2)); err != nil {
		t.Fatal(err)
	}
	close(rel)
	if err := <-done; err != nil {
		t.Fatalf("State during a reload that replaced the store: %v", err)
	}
}

// TestReviewReloadSharedConfig shows that a parsed *Config cannot be
// applied by two reloads at once (two registries, or one registry reloaded
// from two places): opening its stores writes the StoreConfig's record of
// the keys read, so a valid config is rejected at random ("unknown key
// for engine") and the race detector reports the writes.
func TestReviewReloadSharedConfig(t *testing.T) {
	cfg := mustParse(t, `
[stores.main]
engine = "memory"
sweep_interval_seconds = 30
call_timeout_seconds = 1
[limiters.api]
store = "main"
rate_per_second = 10
`)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				reg := ratesync.NewRegistry()
				err := reg.Reload(cfg)
				reg.Close()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("applying a valid config shared by two registries: %v", err)
	}
}

// reviewWatch runs WatchConfig on path until the test ends, once the
// file is loaded; done receives WatchConfig's result.
func reviewWatch(t *testing.T, path string) (reg *ratesync.Registry, done <-chan error) {
	t.Helper()
	reg = ratesync.NewRegistry(ratesync.WithLogger(slog.New(slog.DiscardHandler)))
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- reg.WatchConfig(ctx, path) }()
	t.Cleanup(func() {
		cancel()
		<-ch
		reg.Close()
	})
	reviewWait(t, "the initial load", func() bool { return reg.Reloads().Succeeded == 1 })
	return reg, ch
}

// reviewFollowed waits up to 3 s for a second successful reload, or for
// WatchConfig to return an error (saying it no longer follows the file);
// it reports whether either happened.
func reviewFollowed(reg *ratesync.Registry, done <-chan error) (bool, error) {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if reg.Reloads().Succeeded >= 2 {
			return true, nil
		}
		select {
		case err := <-done:
			return err != nil, err
		default:
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, bounded
	}
	return false, nil
}

// TestReviewReloadWatchDirectoryRecreated shows that once the watched
// file's directory is removed (a volume remounted, a deploy that replaces
// the directory), WatchConfig silently stops following the file: it keeps
// running, the directory and file come back with a new configuration, and
// nothing is reloaded, logged or returned.
func TestReviewReloadWatchDirectoryRecreated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "conf")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "rate-sync.toml")
	if err := os.WriteFile(path, []byte(strings.Replace(windowConfig, "%d", "2", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	reg, done := reviewWatch(t, path)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	reviewWait(t, "the removal noticed", func() bool { return reg.Reloads().Failed == 1 })
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(windowConfig, "%d", "3", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if ok, _ := reviewFollowed(reg, done); !ok {
		t.Fatalf("the file recreated with its directory was not reloaded, and WatchConfig still runs: Reloads() = %+v", reg.Reloads())
	}
}

// TestReviewReloadWatchSymlinkTarget shows that WatchConfig misses every
// change of a configuration file reached through a symlink to another
// directory (a file linked from a shared or templated location): only the
// symlink's directory is watched, so writes to the file itself are never
// seen, although the doc says every change of the file reloads it.
func TestReviewReloadWatchSymlinkTarget(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"etc", "shared"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	target := filepath.Join(root, "shared", "limits.toml")
	if err := os.WriteFile(target, []byte(strings.Replace(windowConfig, "%d", "2", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "etc", "rate-sync.toml")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	reg, done := reviewWatch(t, path)
	if err := os.WriteFile(target, []byte(strings.Replace(windowConfig, "%d", "3", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if ok, err := reviewFollowed(reg, done); !ok {
		t.Fatalf("a write to the symlinked file was not reloaded (%v): Reloads() = %+v", err, reg.Reloads())
	}
}

// TestReviewReloadOverrideSwitchesAlgorithm shows that an override cannot
// give an identifier the other algorithm, although the docs allow "any
// limiter key but store" (algorithm included): the override inherits the
// limiter's rate_per_second (or limit and window_seconds), which it cannot
// unset (0 is refused), and the error blames a key the override does not
// have.
func TestReviewReloadOverrideSwitchesAlgorithm(t *testing.T) {
	for name, text := range map[string]string{
		"to sliding_window": `
[stores.m]
engine = "memory"
[limiters.api]
store = "m"
rate_per_second = 10
[limiters.api.overrides]
"tenant:acme" = { algorithm = "sliding_window", limit = 500, window_seconds = 60 }
`,
		"to token_bucket": `
[stores.m]
engine = "memory"
[limiters.api]
store = "m"
limit = 100
window_seconds = 60
[limiters.api.overrides]
"tenant:acme" = { algorithm = "token_bucket", rate_per_second = 50 }
`,
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := ratesync.ParseConfig("test.toml", []byte(text))
			if err != nil {
				t.Fatalf("an override giving the other algorithm with its keys: %v", err)
			}
			o := cfg.Limiters[0].Overrides["tenant:acme"]
			if o.RatePerSecond != 0 && o.Limit != 0 {
				t.Fatalf("override keeps both algorithms' keys: %+v", o)
			}
		})
	}
}

// TestReviewReloadOverrideFailClosed shows that fail_closed and
// on_store_error are not symmetric in an override: an override's
// on_store_error replaces the limiter's fail_closed, but an override's
// fail_closed is refused against the limiter's on_store_error ("keep
// one"), which the override cannot remove.
func TestReviewReloadOverrideFailClosed(t *testing.T) {
	cfg, err := ratesync.ParseConfig("test.toml", []byte(`
[stores.m]
engine = "memory"
[limiters.api]
store = "m"
rate_per_second = 10
on_store_error = "deny"
[limiters.api.overrides]
"tenant:free" = { fail_closed = false }
`))
	if err != nil {
		t.Fatalf("an override's fail_closed against the limiter's on_store_error: %v", err)
	}
	if got := cfg.Limiters[0].Overrides["tenant:free"].OnStoreError; got != ratesync.Allow {
		t.Fatalf("override on_store_error = %q, want allow (fail_closed = false)", got)
	}
}

// TestReviewReloadShadowFailsClosed shows that a shadow rule is enforced
// after all when its store fails: with on_store_error = "deny" (or
// rate-sync's fail_closed = true, kept when a rule is copied into shadow
// mode to measure it), every request gets an error during an outage,
// although a shadow rule "admits every request". In a composite, the
// shadow part's deny policy is the strictest and fails the enforced parts
// too, which alone would have answered locally.
func TestReviewReloadShadowFailsClosed(t *testing.T) {
	r, fs := flakyRegistry(t, map[string]ratesync.Rule{
		"measured": {RatePerSecond: 100, Burst: 100, OnStoreError: ratesync.Deny, Shadow: true},
		"enforced": {RatePerSecond: 100, Burst: 100, OnStoreError: ratesync.Local},
	})
	fs.down.Store(true)
	ctx := context.Background()
	t.Run("limiter", func(t *testing.T) {
		d, err := r.Try(ctx, "measured")
		if err != nil || !d.Allowed {
			t.Fatalf("shadow rule, store down: %+v, %v; want admitted", d, err)
		}
	})
	t.Run("composite", func(t *testing.T) {
		c, err := r.Composite(map[string]string{"a": "enforced", "b": "measured"}, "")
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.Check(ctx, map[string]string{"a": "x", "b": "x"})
		if err != nil || !res.Allowed {
			t.Fatalf("composite with a shadow part, store down: %+v, %v; want the enforced part's local answer", res, err)
		}
	})
}

// TestReviewReloadShadowPartOfAnyMustPass shows that a shadow part of an
// AnyMustPass composite turns the enforced parts off: when every enforced
// part denies, the shadow part, which would deny too, admits the request.
// A shadow rule is not in force; the composite should answer as its
// enforced parts do (as AllMustPass does, deciding them again without the
// shadow parts).
func TestReviewReloadShadowPartOfAnyMustPass(t *testing.T) {
	reg := loaded(t, mustParse(t, `
[stores.main]
engine = "memory"
[limiters.enforced]
store = "main"
limit = 1
window_seconds = 60
[limiters.measured]
store = "main"
limit = 1
window_seconds = 60
shadow = true
`))
	c, err := reg.Composite(map[string]string{"a": "enforced", "b": "measured"}, ratesync.AnyMustPass)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ids := map[string]string{"a": "k", "b": "k"}
	for range 2 { // exhaust both
		if _, err := c.Check(ctx, ids); err != nil {
			t.Fatal(err)
		}
	}
	res, err := c.Check(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if res.Allowed {
		t.Fatalf("AnyMustPass: the enforced part denies, the shadow part would deny: admitted %+v", res.Results)
	}
}

// TestReviewReloadConfigureStoreIsCode shows that a store added in code
// with ConfigureStore is taken for one of the previous configuration's:
// a reload removes it when no rule uses it yet, and refuses a file whose
// limiter names it ("store is not defined"), while a store added with
// AddStore is kept and usable. The docs: "Limiters and stores added in
// code stay."
func TestReviewReloadConfigureStoreIsCode(t *testing.T) {
	file := mustParse(t, `
[limiters.api]
store = "shared"
rate_per_second = 10
`)
	t.Run("AddStore", func(t *testing.T) { // for comparison: holds
		reg := ratesync.NewRegistry()
		defer reg.Close()
		s := memstore.New()
		defer s.Close()
		if err := reg.AddStore("shared", s); err != nil {
			t.Fatal(err)
		}
		if err := reg.Reload(file); err != nil {
			t.Fatalf("reload naming a store added with AddStore: %v", err)
		}
	})
	t.Run("ConfigureStore used by the file", func(t *testing.T) {
		reg := ratesync.NewRegistry()
		defer reg.Close()
		if err := reg.ConfigureStore("shared", "memory", nil); err != nil {
			t.Fatal(err)
		}
		if err := reg.Reload(file); err != nil {
			t.Fatalf("reload naming a store added with ConfigureStore: %v", err)
		}
	})
	t.Run("ConfigureStore not used yet", func(t *testing.T) {
		reg := ratesync.NewRegistry()
		defer reg.Close()
		if err := reg.ConfigureStore("spare", "memory", nil); err != nil {
			t.Fatal(err)
		}
		if err := reg.Reload(mustParse(t, "[stores.main]\nengine = \"memory\"\n")); err != nil {
			t.Fatal(err)
		}
		if err := reg.ConfigureLimiter("later", ratesync.Rule{Store: "spare", RatePerSecond: 1}); err != nil {
			t.Fatalf("the store added in code before the reload: %v", err)
		}
	})
}

// TestReviewReloadRemovedStoreClosedBeforeLeaseTTL shows that a store a
// reload removes (here, the rule moved to another store, as when a store
// is renamed) is closed after DefaultLeaseTTL (5 min) whatever its rules'
// lease_seconds: a lease of a 1 h job, still live, can no longer be
// released (on Redis or PostgreSQL its slot then stays taken, for every
// process, until its TTL). A store replaced under the same name waits for
// the longest lease TTL of its rules instead.
func TestReviewReloadRemovedStoreClosedBeforeLeaseTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := ratesync.NewRegistry()
		defer reg.Close()
		ctx := context.Background()
		if err := reg.Reload(mustParse(t, "[stores.old]\nengine = \"memory\"\n[limiters.jobs]\nstore = \"old\"\nmax_concurrent = 2\nlease_seconds = 3600\n")); err != nil {
			t.Fatal(err)
		}
		l, err := reg.Acquire(ctx, "jobs")
		if err != nil {
			t.Fatal(err)
		}
		if err := reg.Reload(mustParse(t, "[stores.new]\nengine = \"memory\"\n[limiters.jobs]\nstore = \"new\"\nmax_concurrent = 2\nlease_seconds = 3600\n")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if err := l.Release(ctx); err != nil {
			t.Errorf("release of a lease within its TTL after its store's removal: %v", err)
		}
	})
}
