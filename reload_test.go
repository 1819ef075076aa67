package ratesync_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go"
)

func mustParse(t *testing.T, toml string) *ratesync.Config {
	t.Helper()
	cfg, err := ratesync.ParseConfig("test.toml", []byte(toml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// loaded returns a registry that cfg was loaded into (Reload), closed
// when the test ends.
func loaded(t *testing.T, cfg *ratesync.Config) *ratesync.Registry {
	t.Helper()
	reg := ratesync.NewRegistry()
	t.Cleanup(func() { reg.Close() })
	if err := reg.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	return reg
}

// tryN makes n attempts and returns how many were admitted.
func tryN(t *testing.T, l *ratesync.Limiter, n int) int {
	t.Helper()
	ok := 0
	for range n {
		d, err := l.Try(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			ok++
		}
	}
	return ok
}

const windowConfig = `
[stores.main]
engine = "memory"

[limiters.api]
store = "main"
limit = %d
window_seconds = 60
`

func windowCfg(t *testing.T, limit int) *ratesync.Config {
	return mustParse(t, strings.Replace(windowConfig, "%d", itoa(limit), 1))
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

func TestReloadKeepsStateAndHandlesFollow(t *testing.T) {
	reg := loaded(t, windowCfg(t, 3))
	base, _ := reg.Get("api")
	alice := base.For("alice") // obtained before the reloads
	if got := tryN(t, alice, 5); got != 3 {
		t.Fatalf("limit 3 admitted %d", got)
	}
	if err := reg.Reload(windowCfg(t, 5)); err != nil {
		t.Fatal(err)
	}
	// The 3 admissions stay counted: the raised limit gives exactly 2 more,
	// to the limiter obtained before the reload as to a new one.
	if got := tryN(t, alice, 5); got != 2 {
		t.Fatalf("after raising 3 -> 5 with 3 used: admitted %d more, want 2", got)
	}
	if r := alice.Rule(); r.Limit != 5 {
		t.Fatalf("old handle's Rule().Limit = %d, want 5", r.Limit)
	}
	if err := reg.Reload(windowCfg(t, 2)); err != nil {
		t.Fatal(err)
	}
	if got := tryN(t, alice, 3); got != 0 {
		t.Fatalf("lowered to 2 with 5 used: admitted %d", got)
	}
	bob, _ := reg.For("api", "bob")
	if got := tryN(t, bob, 3); got != 2 {
		t.Fatalf("new key under limit 2 admitted %d", got)
	}
	if m := alice.Metrics(); m.Acquisitions != 7 || m.Denials != 9 {
		t.Fatalf("counters across reloads: %+v, want 7 admitted, 9 denied", m)
	}
	if rs := reg.Reloads(); rs.Succeeded != 3 || rs.Failed != 0 {
		t.Fatalf("Reloads() = %+v", rs)
	}
}

func TestReloadRemovedLimiterNeverFailsOpen(t *testing.T) {
	reg := loaded(t, mustParse(t, `
[stores.main]
engine = "memory"
[limiters.api]
store = "main"
rate_per_second = 1
[limiters.other]
store = "main"
rate_per_second = 1
`))
	old, _ := reg.For("api", "k")
	if err := reg.Reload(mustParse(t, `
[stores.main]
engine = "memory"
[limiters.other]
store = "main"
rate_per_second = 1
`)); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Get("api"); !errors.Is(err, ratesync.ErrLimiterNotFound) {
		t.Fatalf("Get of a removed limiter: %v", err)
	}
	d, err := old.Try(context.Background())
	if !errors.Is(err, ratesync.ErrLimiterNotFound) || d.Allowed {
		t.Fatalf("Try on a handle of a removed limiter: %+v, %v", d, err)
	}
	if _, err := old.Acquire(context.Background()); !errors.Is(err, ratesync.ErrLimiterNotFound) {
		t.Fatalf("Acquire on a handle of a removed limiter: %v", err)
	}
	if _, err := old.State(context.Background()); !errors.Is(err, ratesync.ErrLimiterNotFound) {
		t.Fatalf("State on a handle of a removed limiter: %v", err)
	}
	// Code-added limiters stay across reloads.
	if err := reg.ConfigureLimiter("coded", ratesync.Rule{Store: "main", RatePerSecond: 1}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Reload(mustParse(t, "[stores.main]\nengine = \"memory\"\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Get("coded"); err != nil {
		t.Fatalf("a limiter configured in code was removed by a reload: %v", err)
	}
	if _, err := reg.Get("other"); !errors.Is(err, ratesync.ErrLimiterNotFound) {
		t.Fatalf("other after its removal: %v", err)
	}
}

func TestReloadLeasesHeldAcrossReloads(t *testing.T) {
	conc := func(max int, sweep string) *ratesync.Config {
		return mustParse(t, `
[stores.main]
engine = "memory"
sweep_interval_seconds = `+sweep+`
[limiters.jobs]
store = "main"
max_concurrent = `+itoa(max)+`
`)
	}
	ctx := context.Background()
	reg := loaded(t, conc(2, "30"))
	l1, err := reg.Acquire(ctx, "jobs")
	if err != nil {
		t.Fatal(err)
	}
	l2, _ := reg.Acquire(ctx, "jobs")
	jobs, _ := reg.Get("jobs")
	// Same store settings, a raised limit: the two leases stay counted.
	if err := reg.Reload(conc(3, "30")); err != nil {
		t.Fatal(err)
	}
	d, err := jobs.Try(ctx)
	if err != nil || !d.Allowed {
		t.Fatalf("third slot after raising 2 -> 3: %+v %v", d, err)
	}
	if d2, _ := jobs.Try(ctx); d2.Allowed {
		t.Fatal("a fourth slot with three leases held and max 3")
	}
	if err := l1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if d3, _ := jobs.Try(ctx); !d3.Allowed {
		t.Fatal("a lease taken before the reload, released after it, did not free its slot")
	}
	// A store whose settings change is opened anew (a memory store starts
	// empty); leases of the old one are still released without error.
	if err := reg.Reload(conc(3, "20")); err != nil {
		t.Fatal(err)
	}
	for _, l := range []*ratesync.Lease{l2, d.Lease} {
		if err := l.Release(ctx); err != nil {
			t.Fatalf("releasing a lease of the replaced store: %v", err)
		}
	}
	if got := tryN(t, jobs, 4); got != 3 {
		t.Fatalf("new store, max 3: admitted %d", got)
	}
}

func TestReloadInvalidChangesNothing(t *testing.T) {
	var logs bytes.Buffer
	reg := ratesync.NewRegistry(ratesync.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	defer reg.Close()
	if err := reg.Reload(windowCfg(t, 2)); err != nil {
		t.Fatal(err)
	}
	l, _ := reg.Get("api")
	// Parses, but names a store that does not exist: rejected whole.
	bad := mustParse(t, `
[stores.main]
engine = "memory"
[limiters.api]
store = "main"
limit = 10
window_seconds = 60
[limiters.new]
store = "nowhere"
rate_per_second = 1
`)
	if err := reg.Reload(bad); err == nil {
		t.Fatal("a config naming an undefined store was accepted")
	}
	if got := tryN(t, l, 5); got != 2 {
		t.Fatalf("after a rejected reload the limit is not 2: admitted %d", got)
	}
	if _, err := reg.Get("new"); err == nil {
		t.Fatal("a rejected reload added a limiter")
	}
	rs := reg.Reloads()
	if rs.Failed != 1 || rs.Succeeded != 1 || rs.LastError == nil {
		t.Fatalf("Reloads() = %+v", rs)
	}
	if !strings.Contains(logs.String(), "configuration rejected") || !strings.Contains(logs.String(), "nowhere") {
		t.Fatalf("the rejection was not logged with its error: %q", logs.String())
	}
}

func TestWatchConfigFollowsTheFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rate-sync.toml")
	write := func(s string) {
		t.Helper()
		// Write then rename, as editors and ConfigMaps do.
		tmp := filepath.Join(dir, ".tmp")
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	cfgText := func(limit int) string { return strings.Replace(windowConfig, "%d", itoa(limit), 1) }
	write(cfgText(2))
	reg := ratesync.NewRegistry(ratesync.WithLogger(slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))))
	defer reg.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.WatchConfig(ctx, path) }()
	waitFor := func(what string, cond func(ratesync.ReloadStats) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond(reg.Reloads()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: Reloads() = %+v", what, reg.Reloads())
			}
			time.Sleep(5 * time.Millisecond) // polling a condition, bounded
		}
	}
	waitFor("initial load", func(s ratesync.ReloadStats) bool { return s.Succeeded == 1 })
	l, err := reg.For("api", "k")
	if err != nil {
		t.Fatal(err)
	}
	if got := tryN(t, l, 3); got != 2 {
		t.Fatalf("limit 2 admitted %d", got)
	}
	write(cfgText(4))
	waitFor("reload after the change", func(s ratesync.ReloadStats) bool { return s.Succeeded == 2 })
	if got := tryN(t, l, 3); got != 2 {
		t.Fatalf("limit raised to 4 with 2 used: admitted %d more, want 2", got)
	}
	write("[limiters.api\nstore = ")
	waitFor("invalid file rejected", func(s ratesync.ReloadStats) bool { return s.Failed == 1 })
	if got := tryN(t, l, 1); got != 0 {
		t.Fatal("the invalid file changed the limit")
	}
	if d, err := l.Try(context.Background()); err != nil || d.Limit != 4 {
		t.Fatalf("after the invalid file: %+v %v, want limit 4 in force", d, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("WatchConfig returned %v after cancel", err)
	}
}

func TestWatchConfigInvalidAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rate-sync.toml")
	if err := os.WriteFile(path, []byte("[limiters.x]\nrate_per_second = 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := ratesync.NewRegistry(ratesync.WithLogger(slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))))
	defer reg.Close()
	err := reg.WatchConfig(context.Background(), path)
	var ce *ratesync.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("WatchConfig on an invalid file: %v, want a *ConfigError at once", err)
	}
}

func TestShadowAdmitsAndCountsLikeTheEnforcedRule(t *testing.T) {
	reg := loaded(t, mustParse(t, `
[stores.main]
engine = "memory"
[limiters.enforced]
store = "main"
limit = 3
window_seconds = 60
[limiters.shadowed]
store = "main"
limit = 3
window_seconds = 60
shadow = true
`))
	ctx := context.Background()
	enf, _ := reg.Get("enforced")
	sh, _ := reg.Get("shadowed")
	allowed, shadowDecisions := 0, 0
	for i := range 10 {
		for _, id := range []string{"a", "b"} {
			if _, err := enf.For(id).Try(ctx); err != nil {
				t.Fatal(err)
			}
			d, err := sh.For(id).Try(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed {
				allowed++
			}
			if d.Shadow {
				shadowDecisions++
				if d.Remaining != 0 || d.RetryAfter <= 0 {
					t.Fatalf("attempt %d: a shadow decision reports %+v, want the denial it would have been", i, d)
				}
			}
		}
	}
	if allowed != 20 || shadowDecisions != 14 {
		t.Fatalf("shadow rule: %d of 20 admitted, %d marked Shadow; want 20 and 14", allowed, shadowDecisions)
	}
	em, sm := enf.Metrics(), sh.Metrics()
	if em.Denials != 14 || sm.Denials != em.Denials || sm.ShadowDenials != 14 || sm.Acquisitions != em.Acquisitions {
		t.Fatalf("enforced %+v\nshadow %+v\nwant the same acquisitions and denials, 14 shadow denials", em, sm)
	}
	// Acquire on a shadow rule never waits.
	start := time.Now()
	lease, err := sh.For("a").Acquire(ctx, ratesync.WithTimeout(time.Minute))
	if err != nil || time.Since(start) > 5*time.Second {
		t.Fatalf("Acquire on an exhausted shadow rule: %v after %v", err, time.Since(start))
	}
	lease.Release(ctx)
}

func TestShadowPartOfAComposite(t *testing.T) {
	reg := loaded(t, mustParse(t, `
[stores.main]
engine = "memory"
[limiters.ip]
store = "main"
limit = 5
window_seconds = 60
[limiters.account]
store = "main"
limit = 2
window_seconds = 60
shadow = true
`))
	c, err := reg.Composite(map[string]string{"by_ip": "ip", "by_account": "account"}, ratesync.AllMustPass)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	admitted, shadowed := 0, 0
	for range 7 {
		res, err := c.Check(ctx, map[string]string{"by_ip": "1.2.3.4", "by_account": "alice"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Allowed {
			admitted++
		}
		if res.Results["by_account"].Shadow {
			shadowed++
		}
	}
	// The enforced part (5) binds; the shadow part (2) only counts.
	if admitted != 5 || shadowed != 3 {
		t.Fatalf("admitted %d (want 5, the enforced part's limit), shadow-denied by account %d (want 3)", admitted, shadowed)
	}
	acct, _ := reg.Get("account")
	if m := acct.Metrics(); m.ShadowDenials != 3 || m.Denials != 5 {
		// Denials: what the enforced rule would have counted (3 while the
		// ip part admitted, 2 once both denied); shadow denials: the 3
		// requests it would have denied that were admitted.
		t.Fatalf("account: %d denials, %d shadow denials, want 5 and 3 (%+v)", m.Denials, m.ShadowDenials, m)
	}
}

const overrideConfig = `
[stores.main]
engine = "memory"

[limiters.api]
store = "main"
limit = 2
window_seconds = 60

[limiters.api.overrides]
"tenant:acme" = { limit = 5 }
"tenant:beta" = { limit = 3, shadow = true }
`

func TestOverridesApplyToIdentifiers(t *testing.T) {
	reg := loaded(t, mustParse(t, overrideConfig))
	cases := []struct {
		name string
		l    func() *ratesync.Limiter
		want int
	}{
		{"For one identifier", func() *ratesync.Limiter { l, _ := reg.For("api", "tenant:acme"); return l }, 5},
		{"For a path joined by ':'", func() *ratesync.Limiter { l, _ := reg.For("api", "tenant", "acme"); return l }, 5}, // its own state: a path is not one identifier with ':'
		{"template", func() *ratesync.Limiter {
			l, err := reg.Resolve("api:{t}", ratesync.Values{"t": "tenant:acme"})
			if err != nil {
				t.Fatal(err)
			}
			return l
		}, 0}, // the same key as For("api", "tenant:acme"): used up
		{"other identifier", func() *ratesync.Limiter { l, _ := reg.For("api", "tenant:other"); return l }, 2},
		{"shadow override", func() *ratesync.Limiter { l, _ := reg.For("api", "tenant:beta"); return l }, 8},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := tryN(t, c.l(), 8); got != c.want {
				t.Fatalf("admitted %d of 8, want %d", got, c.want)
			}
		})
	}
	acme, _ := reg.For("api", "tenant:acme")
	if r := acme.Rule(); r.Limit != 5 {
		t.Fatalf("Rule() of an overridden identifier: limit %d", r.Limit)
	}
	// A reload changes an override; the usage stays.
	if err := reg.Reload(mustParse(t, strings.Replace(overrideConfig, "limit = 5", "limit = 7", 1))); err != nil {
		t.Fatal(err)
	}
	if got := tryN(t, acme, 5); got != 2 {
		t.Fatalf("override raised 5 -> 7 with 5 used: admitted %d, want 2", got)
	}
}

func TestOverrideErrors(t *testing.T) {
	cases := []struct{ name, toml, want string }{
		{"store", `"x" = { store = "other" }`, "keeps the limiter's store"},
		{"unknown key", `"x" = { rate = 5 }`, "unknown key"},
		{"zero", `"x" = { limit = 0 }`, "must be > 0"},
		{"not a table", `"x" = 5`, "must be a table of limiter keys"},
		{"empty", `"x" = {}`, "empty"},
		{"invalid rule", `"x" = { limit = 5, rate_per_second = 3 }`, "x"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			toml := "[stores.main]\nengine = \"memory\"\n[limiters.api]\nstore = \"main\"\nlimit = 2\nwindow_seconds = 60\n[limiters.api.overrides]\n" + c.toml + "\n"
			_, err := ratesync.ParseConfig("t.toml", []byte(toml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			var ce *ratesync.ConfigError
			if !errors.As(err, &ce) || ce.Line != 8 {
				t.Fatalf("error %v does not point at line 8", err)
			}
		})
	}
}

func TestCompositeWithCost(t *testing.T) {
	reg := loaded(t, mustParse(t, `
[stores.main]
engine = "memory"
[limiters.a]
store = "main"
limit = 5
window_seconds = 60
[limiters.b]
store = "main"
limit = 8
window_seconds = 60
`))
	ctx := context.Background()
	c, _ := reg.Composite(map[string]string{"pa": "a", "pb": "b"}, ratesync.AllMustPass)
	ids := map[string]string{"pa": "x", "pb": "x"}
	steps := []struct {
		cost    int
		allowed bool
		leftA   int
	}{{3, true, 2}, {3, false, 2}, {2, true, 0}}
	for i, s := range steps {
		res, err := c.Check(ctx, ids, ratesync.WithCost(s.cost))
		if err != nil {
			t.Fatal(err)
		}
		if res.Allowed != s.allowed || res.Results["pa"].Remaining != s.leftA {
			t.Fatalf("step %d (cost %d): allowed %v, a has %d left; want %v and %d", i, s.cost, res.Allowed, res.Results["pa"].Remaining, s.allowed, s.leftA)
		}
	}
	// b took 5 of 8: the denied cost-3 check consumed nothing of it.
	if st, _ := reg.State(ctx, "b"); st.Remaining != 8 {
		t.Fatalf("b's own key should be untouched, has %d left", st.Remaining)
	}
	lb, _ := reg.For("b", "x")
	if st, _ := lb.State(ctx); st.Remaining != 3 {
		t.Fatalf("b:x has %d left, want 3", st.Remaining)
	}
	if _, err := c.Check(ctx, ids, ratesync.WithCost(6)); !errors.Is(err, ratesync.ErrCostTooHigh) {
		t.Fatalf("cost 6 above a's limit 5: %v, want ErrCostTooHigh", err)
	}
	if _, err := c.Check(ctx, ids, ratesync.WithCost(0)); err == nil {
		t.Fatal("cost 0 accepted")
	}
	any, _ := reg.Composite(map[string]string{"pa": "a", "pb": "b"}, ratesync.AnyMustPass)
	res, err := any.Check(ctx, ids, ratesync.WithCost(3))
	if err != nil || !res.Allowed || res.Results["pb"].Remaining != 0 {
		t.Fatalf("AnyMustPass cost 3: %+v %v, want b to admit and have 0 left", res, err)
	}
}

// TestShadowUnderLoad: the same traffic, from many goroutines at once, on
// an enforced rule and on the same rule in shadow mode: the shadow rule
// admits every request and reports the enforced rule's denials.
func TestShadowUnderLoad(t *testing.T) {
	reg := loaded(t, mustParse(t, `
[stores.main]
engine = "memory"
[limiters.enforced]
store = "main"
limit = 500
window_seconds = 600
[limiters.shadowed]
store = "main"
limit = 500
window_seconds = 600
shadow = true
`))
	const goroutines, each = 32, 100
	enf, _ := reg.For("enforced", "k")
	sh, _ := reg.For("shadowed", "k")
	var wg sync.WaitGroup
	var enfAdmitted, shAdmitted, shMarked atomic.Int64
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if d, err := enf.Try(context.Background()); err == nil && d.Allowed {
					enfAdmitted.Add(1)
				}
				d, err := sh.Try(context.Background())
				if err == nil && d.Allowed {
					shAdmitted.Add(1)
				}
				if d.Shadow {
					shMarked.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	total := int64(goroutines * each)
	em, sm := enf.Metrics(), sh.Metrics()
	t.Logf("enforced: %d admitted, %d denied; shadow: %d admitted, %d denials reported (%d shadow)", enfAdmitted.Load(), em.Denials, shAdmitted.Load(), sm.Denials, sm.ShadowDenials)
	if enfAdmitted.Load() != 500 || em.Denials != total-500 {
		t.Fatalf("enforced rule: %d admitted, %d denied; want 500 and %d", enfAdmitted.Load(), em.Denials, total-500)
	}
	if shAdmitted.Load() != total || sm.Denials != em.Denials || sm.ShadowDenials != em.Denials || shMarked.Load() != em.Denials {
		t.Fatalf("shadow rule: %d of %d admitted, %d denials, %d shadow denials, %d marked; want all admitted and %d of each", shAdmitted.Load(), total, sm.Denials, sm.ShadowDenials, shMarked.Load(), em.Denials)
	}
}

// A caller that has left gets its context's error from a shadow rule, as
// from any rule: shadow mode admits what the rule would deny, not calls
// that were never decided.
func TestShadowCancelledCaller(t *testing.T) {
	reg := loaded(t, mustParse(t, "[stores.main]\nengine = \"memory\"\n[limiters.s]\nstore = \"main\"\nlimit = 1\nwindow_seconds = 60\nshadow = true\n"))
	l, _ := reg.For("s", "k")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if d, err := l.Try(ctx); !errors.Is(err, context.Canceled) || d.Allowed {
		t.Fatalf("Try with a cancelled context: %+v, %v; want context.Canceled and no admission", d, err)
	}
	if _, err := l.Acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with a cancelled context: %v, want context.Canceled", err)
	}
	if m := l.Metrics(); m.Acquisitions != 0 || m.ShadowDenials != 0 {
		t.Fatalf("a cancelled caller was counted: %+v", m)
	}
}
