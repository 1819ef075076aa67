package redisstore_test

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/internal/policy"
	"github.com/rate-sync/ratesync-go/internal/testenv"
	"github.com/rate-sync/ratesync-go/redisstore"
	"github.com/rate-sync/ratesync-go/storetest"
)

// scriptCalls returns how many EVAL and EVALSHA calls the server has run.
func scriptCalls(t *testing.T, c *redis.Client) int {
	t.Helper()
	info, err := c.Info(bg, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(info, "\n") {
		for _, cmd := range []string{"cmdstat_eval:", "cmdstat_evalsha:"} {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), cmd); ok {
				calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
				v, err := strconv.Atoi(calls)
				if err != nil {
					t.Fatalf("commandstats line %q: %v", line, err)
				}
				n += v
			}
		}
	}
	return n
}

// registryOn returns a registry whose rules, each on the store s (named
// "r"), are the given ones.
func registryOn(t *testing.T, s *redisstore.Store, rules map[string]ratesync.Rule) *ratesync.Registry {
	t.Helper()
	r := ratesync.NewRegistry()
	t.Cleanup(func() { r.Close() })
	// These tests check the store's answers: a slow call under load must
	// not be answered by a failure policy instead.
	if err := r.AddStore("r", s, ratesync.WithCallTimeout(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	for name, rule := range rules {
		rule.Store = "r"
		if rule.OnStoreError == "" {
			rule.OnStoreError = ratesync.Deny
		}
		if err := r.ConfigureLimiter(name, rule); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// Every decision is exactly one script call, whatever it combines;
// decisions that arrive together share calls (batched), never more than one
// each.
func TestOneScriptCallPerDecision(t *testing.T) {
	c := client(t)
	s := store(t, c)
	r := registryOn(t, s, map[string]ratesync.Rule{
		"bucket":   {RatePerSecond: 1000, Burst: 1000},
		"combined": {Algorithm: ratesync.SlidingWindow, Limit: 1000, Window: time.Minute, MaxConcurrent: 1000},
		"ip":       {Algorithm: ratesync.SlidingWindow, Limit: 1000, Window: time.Minute},
		"account":  {Algorithm: ratesync.SlidingWindow, Limit: 1000, Window: time.Minute},
	})
	if err := s.Ping(bg); err != nil { // loads the scripts
		t.Fatal(err)
	}
	comp, err := r.Composite(map[string]string{"ip": "ip", "account": "account"}, ratesync.AllMustPass)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		n       int
		batched bool
		run     func(t *testing.T) (releases int)
	}{
		{"token bucket", 50, false, func(t *testing.T) int {
			l, _ := r.Get("bucket")
			for range 50 {
				if d, err := l.Try(bg); err != nil || !d.Allowed {
					t.Fatal(d, err)
				}
			}
			return 0
		}},
		{"window+lease on one key", 50, false, func(t *testing.T) int {
			l, _ := r.For("combined", "user-1")
			var leases []*ratesync.Lease
			for range 50 {
				d, err := l.Try(bg)
				if err != nil || !d.Allowed {
					t.Fatal(d, err)
				}
				leases = append(leases, d.Lease)
			}
			for _, le := range leases {
				le.Release(bg)
			}
			return len(leases)
		}},
		{"composite per IP and per account", 50, false, func(t *testing.T) int {
			for i := range 50 {
				res, err := comp.Check(bg, map[string]string{"ip": "10.0.0.1", "account": "a" + strconv.Itoa(i%3)})
				if err != nil || !res.Allowed {
					t.Fatal(res, err)
				}
			}
			return 0
		}},
		{"64 goroutines at once", 640, true, func(t *testing.T) int {
			l, _ := r.For("bucket", "concurrent")
			var wg sync.WaitGroup
			for range 64 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 10 {
						if _, err := l.Try(bg); err != nil {
							t.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			return 0
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := scriptCalls(t, c)
			releases := tc.run(t)
			got := scriptCalls(t, c) - before
			t.Logf("%d decisions + %d releases: %d script calls", tc.n, releases, got)
			if tc.batched {
				// Decisions that queue up together share one batch call.
				if got < 1 || got > tc.n {
					t.Fatalf("%d script calls for %d concurrent decisions, want between 1 and %d", got, tc.n, tc.n)
				}
				return
			}
			if got != tc.n+releases {
				t.Fatalf("%d script calls for %d decisions and %d releases, want exactly one each", got, tc.n, releases)
			}
		})
	}
}

// Every key has a TTL that matches its policy; a held lease keeps its key
// alive; idle keys disappear.
func TestKeyTTLs(t *testing.T) {
	c := client(t)
	s := store(t, c)
	k := driver.Key{Name: "ttl", ID: "u:1"}
	checks := []driver.Check{
		{Key: k, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 10, Burst: 5}, Cost: 5},
		{Key: k, Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 3, Window: 2 * time.Second}, Cost: 1},
		{Key: k, Policy: driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 2, LeaseTTL: 30 * time.Second}, Cost: 1},
	}
	res := make([]driver.Result, 3)
	if ok, err := s.Decide(bg, checks, res); err != nil || !ok {
		t.Fatal(ok, err)
	}
	want := map[driver.Kind]time.Duration{
		driver.TokenBucket:   500 * time.Millisecond, // 5 tokens at 10/s refill in 0.5s
		driver.SlidingWindow: 2 * time.Second,
		driver.Concurrency:   30 * time.Second,
	}
	for kind, ttl := range want {
		key := redisstore.KeyOf(s, k, kind)
		got, err := c.PTTL(bg, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got <= 0 || got > ttl || got < ttl-200*time.Millisecond {
			t.Errorf("%s: PTTL %v, want about %v", key, got, ttl)
		}
		if tag := key[strings.IndexByte(key, '{'):]; !strings.HasPrefix(tag, "{ttl:u:1}:") {
			t.Errorf("%s: hash tag is not the limiter key", key)
		}
	}
	// The bucket key goes when the bucket is full again.
	deadline := time.Now().Add(3 * time.Second)
	for c.Exists(bg, redisstore.KeyOf(s, k, driver.TokenBucket)).Val() == 1 {
		if time.Now().After(deadline) {
			t.Fatal("idle bucket key still present after 3s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A window admission is one member whatever its cost, and admissions in
// the same microsecond are distinct members.
func TestWindowOneMemberPerAdmission(t *testing.T) {
	c := client(t)
	frozen := time.Unix(1_800_000_000, 123_456_000)
	s := store(t, c, redisstore.WithClock(func() time.Time { return frozen }))
	ch := driver.Check{Key: driver.Key{Name: "same-us"}, Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 10, Window: time.Second}, Cost: 2}
	res := make([]driver.Result, 1)
	for i := range 5 {
		ok, err := s.Decide(bg, []driver.Check{ch}, res)
		if err != nil || !ok || res[0].Remaining != 10-2*(i+1) {
			t.Fatalf("decision %d: %v %v %+v", i, ok, err, res[0])
		}
	}
	if ok, _ := s.Decide(bg, []driver.Check{ch}, res); ok {
		t.Fatal("11th and 12th units admitted")
	}
	if n := c.ZCard(bg, redisstore.KeyOf(s, ch.Key, driver.SlidingWindow)).Val(); n != 5 {
		t.Fatalf("window holds %d members, want 5 (one per admission)", n)
	}
}

// An admission of cost 1e6 on a window of 1e6 per minute takes one
// member and about the time of any decision; the next unit is denied
// until the admission leaves the window.
func TestWindowCostMillion(t *testing.T) {
	c := client(t)
	s := store(t, c)
	ch := driver.Check{Key: driver.Key{Name: "million"}, Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 1_000_000, Window: time.Minute}, Cost: 1_000_000}
	res := make([]driver.Result, 1)
	start := time.Now()
	ok, err := s.Decide(bg, []driver.Check{ch}, res)
	took := time.Since(start)
	if err != nil || !ok || res[0].Remaining != 0 {
		t.Fatalf("cost 1e6: ok=%v err=%v %+v", ok, err, res[0])
	}
	key := redisstore.KeyOf(s, ch.Key, driver.SlidingWindow)
	members := c.ZCard(bg, key).Val()
	mem := c.MemoryUsage(bg, key).Val()
	t.Logf("cost 1e6: %v, %d member(s), %d bytes", took, members, mem)
	if members != 1 || mem > 1024 {
		t.Fatalf("cost 1e6 stored %d members in %d bytes, want one member in under 1 KB", members, mem)
	}
	ch.Cost = 1
	if ok, _ := s.Decide(bg, []driver.Check{ch}, res); ok || res[0].RetryAfter < 59*time.Second || res[0].RetryAfter > time.Minute {
		t.Fatalf("the next unit: ok=%v %+v, want denied for about a minute", ok, res[0])
	}
}

// Windows of admissions of many sizes answer as the reference model,
// including the retry time of a denial that needs many admissions to leave
// (the binary search over the members' running counts).
func TestWindowModelManySizes(t *testing.T) {
	c := client(t)
	clk := storetest.NewClock()
	s := store(t, c, redisstore.WithClock(clk.Now))
	start := clk.Now()
	p := driver.Policy{Kind: driver.SlidingWindow, Limit: 1000, Window: 10 * time.Second}
	rnd := rand.New(rand.NewPCG(5, 5))
	var log policy.Log
	res := make([]driver.Result, 1)
	for i := range 3000 {
		clk.Advance(time.Duration(rnd.Int64N(int64(20*time.Millisecond))) / time.Microsecond * time.Microsecond)
		cost := 1 + rnd.IntN(40)
		if rnd.IntN(50) == 0 {
			cost = 1 + rnd.IntN(p.Limit) // a large one, usually denied
		}
		now := int64(clk.Now().Sub(start))
		want := log.Take(now, int64(p.Window), p.Limit, cost, true)
		if _, err := s.Decide(bg, []driver.Check{{Key: driver.Key{Name: "sizes"}, Policy: p, Cost: cost}}, res); err != nil {
			t.Fatal(err)
		}
		got := res[0]
		if got.Allowed != want.Allowed || got.Remaining != want.Remaining ||
			got.RetryAfter != time.Duration(want.RetryAfter) || got.ResetAfter != time.Duration(want.ResetAfter) {
			t.Fatalf("step %d (cost %d): got %+v, want %+v", i, cost, got, want)
		}
	}
}

// ResetAll deletes the store's keys and nothing under another prefix.
func TestResetAllKeepsOtherPrefixes(t *testing.T) {
	c := client(t)
	a, b := store(t, c), store(t, c)
	ch := []driver.Check{{Key: driver.Key{Name: "x"}, Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 1, Window: time.Minute}, Cost: 1}}
	res := make([]driver.Result, 1)
	for _, s := range []*redisstore.Store{a, b} {
		for i := range 3 {
			ch[0].Key.ID = strconv.Itoa(i)
			if ok, err := s.Decide(bg, ch, res); !ok || err != nil {
				t.Fatal(ok, err)
			}
		}
	}
	if err := a.ResetAll(bg); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		ch[0].Key.ID = strconv.Itoa(i)
		if ok, _ := a.Decide(bg, ch, res); !ok {
			t.Fatalf("store a, key %d: still limited after ResetAll", i)
		}
		if ok, _ := b.Decide(bg, ch, res); ok {
			t.Fatalf("store b, key %d: reset by another prefix's ResetAll", i)
		}
	}
}

// Keys of names holding the separator do not collide with ids.
func TestKeysDoNotCollide(t *testing.T) {
	c := client(t)
	s := store(t, c)
	p := driver.Policy{Kind: driver.SlidingWindow, Limit: 1, Window: time.Minute}
	res := make([]driver.Result, 1)
	for _, k := range []driver.Key{{Name: "a:b"}, {Name: "a", ID: "b"}, {Name: "a%3Ab"}} {
		if ok, err := s.Decide(bg, []driver.Check{{Key: k, Policy: p, Cost: 1}}, res); !ok || err != nil {
			t.Fatalf("%+v: denied (%v): its key collides with an earlier one", k, err)
		}
	}
}

// All waiters of a store share one subscription, and a release wakes a
// waiter long before the lease would expire.
func TestReleaseWakesWaitersThroughOneSubscription(t *testing.T) {
	c := client(t)
	s := store(t, c)
	channel := strings.TrimSuffix(redisstore.KeyOf(s, driver.Key{Name: "x"}, driver.Concurrency), ":{x}:cc") + ":released"
	storetest.ReleaseWakesWaiters(t, storetest.WakeOptions{
		Store:     s,
		Listeners: func(*testing.T) int { return int(c.PubSubNumSub(bg, channel).Val()[channel]) },
		What:      "subscriptions to " + channel,
		Within:    5 * time.Second,
	})
}

// Lone bucket decisions that arrive together go to Redis in batches (in
// their compact form, mixed with other decisions): each caller gets its
// own decision's answer. On a bucket that does not refill in the test's
// time, the admitted callers see every remaining count from burst-1 down
// to 0 exactly once, and a window decision batched alongside is answered
// as a window.
func TestBatchedAnswersReachTheirCallers(t *testing.T) {
	c := client(t)
	s := store(t, c)
	const burst = 300
	r := registryOn(t, s, map[string]ratesync.Rule{
		"bucket": {RatePerSecond: 0.001, Burst: burst},
		"window": {Algorithm: ratesync.SlidingWindow, Limit: 1 << 20, Window: time.Hour},
	})
	bucket, _ := r.Get("bucket")
	window, _ := r.Get("window")
	calls0 := scriptCalls(t, c)
	var mu sync.Mutex
	seen := make(map[int]int)
	denied, windowBad := 0, 0
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 8 {
				if g%8 == 0 {
					d, err := window.For(strconv.Itoa(g)).Try(bg)
					if err != nil || !d.Allowed || d.Limit != 1<<20 || d.Remaining != 1<<20-i-1 {
						mu.Lock()
						windowBad++
						mu.Unlock()
					}
					continue
				}
				d, err := bucket.Try(bg)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if d.Allowed {
					seen[d.Remaining]++
				} else {
					denied++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d decisions in %d script calls", 64*8, scriptCalls(t, c)-calls0)
	if windowBad != 0 {
		t.Fatalf("%d window decisions got another decision's answer", windowBad)
	}
	if len(seen) != burst || denied != 56*8-burst {
		t.Fatalf("%d distinct remaining counts among the admitted, %d denied; want %d and %d", len(seen), denied, burst, 56*8-burst)
	}
	for rem := range burst {
		if seen[rem] != 1 {
			t.Fatalf("remaining %d seen %d times, want once", rem, seen[rem])
		}
	}
}

// The store's errors say their class: a key of the wrong type is this
// request's problem (driver.ErrBadRequest), a server that cannot be
// reached is unavailability (driver.ErrUnavailable).
func TestErrorClassesThroughDecide(t *testing.T) {
	c := client(t)
	s := store(t, c)
	k := driver.Key{Name: "wrongtype"}
	if err := c.HSet(bg, redisstore.KeyOf(s, k, driver.TokenBucket), "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	res := make([]driver.Result, 1)
	_, err := s.Decide(bg, []driver.Check{{Key: k, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 1, Burst: 1}, Cost: 1}}, res)
	if !errors.Is(err, driver.ErrBadRequest) || driver.IsUnavailable(err) {
		t.Fatalf("decision on a key of the wrong type: %v, want a driver.ErrBadRequest", err)
	}

	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(freePort(t)), MaxRetries: -1})
	defer down.Close()
	ds, err := redisstore.New(down)
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	_, err = ds.Decide(bg, []driver.Check{{Key: k, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 1, Burst: 1}, Cost: 1}}, res)
	if !driver.IsUnavailable(err) {
		t.Fatalf("decision with no server: %v, want a driver.ErrUnavailable", err)
	}
	if err := ds.Ping(bg); !driver.IsUnavailable(err) {
		t.Fatalf("Ping with no server: %v, want a driver.ErrUnavailable", err)
	}
}

// A batch in which one decision fails (its key holds another type) answers
// every other decision exactly once: the failing decision fails alone, and
// nothing the batch already applied is applied again.
func TestBatchWithOneFailingDecision(t *testing.T) {
	c := client(t)
	s := store(t, c)
	bucket := driver.Policy{Kind: driver.TokenBucket, Rate: 0.001, Burst: 2}
	window := driver.Policy{Kind: driver.SlidingWindow, Limit: 2, Window: time.Hour}
	const n, bad = 400, 200
	decisions := make([][]driver.Check, n)
	for i := range decisions {
		p := window
		if i%4 == 0 {
			p = bucket // the batch's compact form
		}
		decisions[i] = []driver.Check{{Key: driver.Key{Name: "batch", ID: strconv.Itoa(i)}, Policy: p, Cost: 1}}
	}
	badKey := redisstore.KeyOf(s, decisions[bad][0].Key, driver.TokenBucket)
	if err := c.HSet(bg, badKey, "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	oks, results, errs := redisstore.DecideBatch(s, decisions)
	for i := range decisions {
		if i == bad {
			if !errors.Is(errs[i], driver.ErrBadRequest) {
				t.Errorf("decision %d on a key of the wrong type: %v, want a driver.ErrBadRequest", i, errs[i])
			}
			continue
		}
		if errs[i] != nil || !oks[i] || results[i][0].Remaining != 1 {
			t.Errorf("decision %d, the first on its key: ok=%v err=%v %+v, want allowed with 1 remaining", i, oks[i], errs[i], results[i][0])
		}
	}
	// Every key was consumed exactly once.
	res := make([]driver.Result, 1)
	twice := 0
	for i, checks := range decisions {
		if i == bad {
			continue
		}
		if err := s.Peek(bg, checks, res); err != nil {
			t.Fatal(err)
		}
		if res[0].Remaining != 1 {
			twice++
		}
	}
	if twice > 0 {
		t.Fatalf("%d of %d keys consumed more than once", twice, n-1)
	}
}

// The colocate option of a configured store takes groups of rule names.
func TestColocateOption(t *testing.T) {
	url := testenv.RedisURL(t)
	for _, tt := range []struct {
		name    string
		value   any
		wantErr string
	}{
		{"from TOML", []any{[]any{"login_ip", "login_account"}, []any{"a", "b", "c"}}, ""},
		{"from code", [][]string{{"login_ip", "login_account"}}, ""},
		{"flat list", []any{"login_ip", "login_account"}, "item 1: want a list of groups"},
		{"not a list", "login_ip", "want a list of groups"},
		{"one rule", []any{[]any{"login_ip"}}, "group 1: name at least two rules"},
		{"not a name", []any{[]any{"login_ip", 3}}, "group 1: want rule names"},
		{"rule in two groups", []any{[]any{"a", "b"}, []any{"b", "c"}}, `rule "b" is in two groups`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := ratesync.NewRegistry()
			defer r.Close()
			err := r.ConfigureStore("s", "redis", map[string]any{"url": url, "colocate": tt.value})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "colocate") {
				t.Fatalf("got %v, want an error about colocate saying %q", err, tt.wantErr)
			}
		})
	}
}

// delayingProxy forwards connections to upstream and holds the first
// reply that starts with prefix for delay.
func delayingProxy(t *testing.T, upstream, prefix string, delay time.Duration) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held atomic.Bool
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(up, c); up.Close() }()
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := up.Read(buf)
					if err != nil {
						return
					}
					if strings.HasPrefix(string(buf[:n]), prefix) && held.CompareAndSwap(false, true) {
						time.Sleep(delay)
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// A decision is never applied twice by the client's retries: go-redis
// retries a command whose reply came late (a read timeout) or was lost,
// which would run the script again; the store sends decisions as commands
// that go-redis does not retry. Checked on a store opened from
// configuration and on one given a client with go-redis's default retries.
func TestDecisionNotResentByClient(t *testing.T) {
	o, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	c := client(t)
	p := driver.Policy{Kind: driver.SlidingWindow, Limit: 10, Window: time.Hour}
	for _, configured := range []bool{true, false} {
		t.Run(map[bool]string{true: "configured", false: "caller's client"}[configured], func(t *testing.T) {
			// Hold the first reply of an admitted one-check decision past
			// the socket timeout.
			proxy := delayingProxy(t, o.Addr, "*5\r\n:1\r\n", 300*time.Millisecond)
			prefix := randomPrefix(t)
			s := store(t, c, redisstore.WithKeyPrefix(prefix)) // reads the key, deletes it at the end
			var decide func() (bool, error)
			if configured {
				r := ratesync.NewRegistry()
				t.Cleanup(func() { r.Close() })
				url := fmt.Sprintf("redis://%s/%d", proxy, o.DB)
				if err := r.ConfigureStore("proxied", "redis", map[string]any{"url": url, "key_prefix": prefix, "socket_timeout": 0.1}); err != nil {
					t.Fatal(err)
				}
				if err := r.ConfigureLimiter("w", ratesync.Rule{Store: "proxied", Algorithm: ratesync.SlidingWindow, Limit: 10, Window: time.Hour, OnStoreError: ratesync.Deny}); err != nil {
					t.Fatal(err)
				}
				l, _ := r.Get("w")
				decide = func() (bool, error) { d, err := l.Try(bg); return d.Allowed, err }
			} else {
				pc := redis.NewClient(&redis.Options{Addr: proxy, DB: o.DB, ReadTimeout: 100 * time.Millisecond})
				t.Cleanup(func() { pc.Close() })
				ps := store(t, pc, redisstore.WithKeyPrefix(prefix))
				decide = func() (bool, error) {
					return ps.Decide(bg, []driver.Check{{Key: driver.Key{Name: "w"}, Policy: p, Cost: 1}}, make([]driver.Result, 1))
				}
			}
			ok, err := decide()
			t.Logf("decision with its reply held 300 ms past a 100 ms read timeout: %v, %v", ok, err)
			res := make([]driver.Result, 1)
			if err := s.Peek(bg, []driver.Check{{Key: driver.Key{Name: "w"}, Policy: p, Cost: 1}}, res); err != nil {
				t.Fatal(err)
			}
			if used := 10 - res[0].Remaining; used != 1 {
				t.Fatalf("one decision used %d units: its script ran %d times", used, used)
			}
		})
	}
}

// Every identifier is a distinct key that Redis holds in a few hundred
// bytes: NUL, invalid UTF-8, braces, separators, newlines, SQL, empty, and
// a megabyte.
func TestHostileIdentifiers(t *testing.T) {
	c := client(t)
	prefix := randomPrefix(t)
	s := store(t, c, redisstore.WithKeyPrefix(prefix))
	r := registryOn(t, s, map[string]ratesync.Rule{"login": {Algorithm: ratesync.SlidingWindow, Limit: 1, Window: time.Hour}})
	mega := strings.Repeat("x", 1<<20)
	ids := []string{"", "\x00", "a\x00b", "\xff\xfe\xfd", "{", "}", "{x}", "}x{", ":", "a:b", "%", "%7D", "%3A",
		"\n", "line\nnext", "'; DROP TABLE rate_limits; --", mega, mega + "y", strings.Repeat("é", 200), strings.Repeat("é", 200) + "!"}
	for round, want := range []bool{true, false} {
		for _, id := range ids {
			l, err := r.For("login", id)
			if err != nil {
				t.Fatal(err)
			}
			d, err := l.Try(bg)
			if err != nil || d.Allowed != want {
				t.Fatalf("round %d, id %.40q (%d bytes): allowed=%v err=%v, want allowed=%v (a distinct key, decided)", round, id, len(id), d.Allowed, err, want)
			}
		}
	}
	keys, err := c.Keys(bg, prefix+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != len(ids) {
		t.Fatalf("%d keys for %d identifiers", len(keys), len(ids))
	}
	for _, k := range keys {
		if len(k) > 512 {
			t.Errorf("a key of %d bytes (%.60q...)", len(k), k)
		}
	}
}
