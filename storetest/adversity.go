package storetest

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/internal/policy"
)

// The subtests of this file take the store at its limits: the extreme
// values of every supported range, out-of-range policies, a cost of a
// million, lease extension, and decisions of several checks against the
// reference model. They call the store directly (driver level) on fresh
// random keys, which they reset when they end.

// keys returns a maker of fresh random keys on st (one random name, the
// argument as the ID); every key it made is reset when the test ends.
func keys(t *testing.T, st driver.Store) func(id string) driver.Key {
	t.Helper()
	name := "storetest-" + strconv.FormatUint(rand.Uint64(), 36)
	var mu sync.Mutex
	var made []driver.Key
	t.Cleanup(func() { // before the store's Close, registered earlier
		for _, k := range made {
			if err := st.Reset(context.Background(), k); err != nil {
				t.Errorf("cleanup: Reset(%v): %v", k, err)
			}
		}
	})
	return func(id string) driver.Key {
		k := driver.Key{Name: name, ID: id}
		mu.Lock()
		made = append(made, k)
		mu.Unlock()
		return k
	}
}

// within reports whether got is within 0.1 % of want.
func within(got, want float64) bool { return math.Abs(got-want) <= 0.001*math.Abs(want) }

// extremeRates checks the lowest and highest supported token bucket rates
// (and rates just inside the top, where whole-nanosecond intervals round
// most) for exactness within 0.1 % on the store's clock: after a drained
// bucket's clock moves by d, exactly the tokens the rate refilled are
// available, a denial's RetryAfter is one interval, and the lowest rate
// admits its second token after 1e8 s and not before. Rates just outside
// the range must fail Validate.
func (s *suite) extremeRates(t *testing.T) {
	for _, r := range []float64{driver.MaxRate * 1.0000001, 7e8, 1e9, driver.MinRate * 0.999, 1e-10} {
		if err := (driver.Policy{Kind: driver.TokenBucket, Rate: r, Burst: 1}).Validate(); err == nil {
			t.Errorf("rate %v outside the range passed Validate", r)
		}
	}
	if s.o.NewWithClock == nil {
		// On the real clock: a drained bucket at the top rate denies with a
		// retry of about one interval.
		st := s.store(t)
		key := keys(t, st)
		c := driver.Check{Key: key("top"), Policy: driver.Policy{Kind: driver.TokenBucket, Rate: driver.MaxRate, Burst: 1000}, Cost: 1000}
		if r := decide1(t, st, c); !r.Allowed {
			t.Fatalf("top rate, cost = burst: %+v", r)
		}
		if r := decide1(t, st, c); r.Allowed == (r.RetryAfter != 0) || r.RetryAfter > time.Millisecond {
			t.Fatalf("top rate, second drain: %+v, want a retry of at most 1 ms", r)
		}
		return
	}
	st, clk := s.clockStore(t)
	key := keys(t, st)
	for _, rate := range []float64{driver.MaxRate, math.Nextafter(driver.MaxRate, 0), 999_000.5, 654_321.7, 123_456.789} {
		const burst = 1_000_000
		p := driver.Policy{Kind: driver.TokenBucket, Rate: rate, Burst: burst}
		c := driver.Check{Key: key("rate-" + strconv.FormatFloat(rate, 'g', -1, 64)), Policy: p, Cost: burst}
		if r := decide1(t, st, c); !r.Allowed || r.Remaining != 0 {
			t.Fatalf("rate %v: draining the burst: %+v", rate, r)
		}
		c.Cost = 1
		r := decide1(t, st, c)
		if r.Allowed || !within(float64(r.RetryAfter), 1e9/rate) || float64(r.RetryAfter) < 1e9/rate {
			t.Fatalf("rate %v: drained bucket: %+v, want denied with a retry of 1/rate (%v ns) to 0.1 %%", rate, r, 1e9/rate)
		}
		for _, d := range []time.Duration{250 * time.Millisecond, 333 * time.Millisecond} {
			clk.Advance(d)
			want := rate * d.Seconds()
			got := peek1(t, st, c).Remaining
			// Whole tokens: within 0.1 %, less the fraction of one.
			if float64(got) > want || float64(got) < want/1.001-1 {
				t.Fatalf("rate %v: %d tokens after %v, want %.1f to 0.1 %% (and no more)", rate, got, d, want)
			}
			c.Cost = got
			if r := decide1(t, st, c); !r.Allowed || r.Remaining != 0 {
				t.Fatalf("rate %v: taking the %d tokens refilled: %+v", rate, got, r)
			}
			c.Cost = 1
			if r := decide1(t, st, c); r.Allowed {
				t.Fatalf("rate %v: a token more than refilled in %v was admitted", rate, d)
			}
		}
	}
	horizon := driver.MaxHorizon
	for _, tt := range []struct {
		rate  float64
		burst int
	}{{driver.MinRate, 1}, {2 * driver.MinRate, 2}, {1.0 / (24 * 3600), 1000}} {
		p := driver.Policy{Kind: driver.TokenBucket, Rate: tt.rate, Burst: tt.burst}
		iv := time.Duration(1e9/tt.rate) + 1
		c := driver.Check{Key: key("low-" + strconv.FormatFloat(tt.rate, 'g', -1, 64)), Policy: p, Cost: tt.burst}
		if r := decide1(t, st, c); !r.Allowed || !within(float64(r.ResetAfter), float64(tt.burst)*1e9/tt.rate) {
			t.Fatalf("rate %v: the burst: %+v, want allowed with a reset of burst/rate", tt.rate, r)
		}
		c.Cost = 1
		r := decide1(t, st, c)
		if r.Allowed || !within(float64(r.RetryAfter), 1e9/tt.rate) || r.RetryAfter > horizon {
			t.Fatalf("rate %v: drained: %+v, want a retry of 1/rate to 0.1 %%", tt.rate, r)
		}
		clk.Advance(r.RetryAfter - time.Millisecond)
		if r := decide1(t, st, c); r.Allowed {
			t.Fatalf("rate %v: admitted 1 ms before its retry time", tt.rate)
		}
		// The rest, and what the clock's resolution may truncate.
		clk.Advance(time.Millisecond + max(s.o.Resolution-1, 0))
		if r := decide1(t, st, c); !r.Allowed {
			t.Fatalf("rate %v: denied at its retry time (interval about %v): %+v", tt.rate, iv, r)
		}
	}
}

// extremeValues decides with every other bound of the supported ranges:
// the largest limit, max_concurrent and cost, the longest window and lease
// TTL, the shortest window and lease TTL, and the largest burst a rate
// allows. The store must decide them exactly as the model does.
func (s *suite) extremeValues(t *testing.T) {
	st := s.store(t)
	key := keys(t, st)
	mc := int(driver.MaxCount)
	// A store whose cost is not O(1) would take for ever below: make sure
	// first that a cost of 1e6 is quick.
	start := time.Now()
	decide1(t, st, driver.Check{Key: key("probe"), Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 1_000_000, Window: time.Minute}, Cost: 1_000_000})
	if took := time.Since(start); took > time.Second {
		t.Fatalf("cost 1e6 took %v: the cost of an admission must be O(1) before a cost of 1e15 is tried", took)
	}
	// The largest window and limit take the largest cost, and then nothing.
	c := driver.Check{Key: key("wide"), Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: mc, Window: driver.MaxHorizon}, Cost: mc}
	if r := decide1(t, st, c); !r.Allowed || r.Remaining != 0 || r.Limit != mc || r.ResetAfter != driver.MaxHorizon {
		t.Fatalf("limit 1e15 over 1e8 s, cost 1e15: %+v", r)
	}
	c.Cost = 1
	if r := decide1(t, st, c); r.Allowed || r.RetryAfter <= driver.MaxHorizon-time.Minute || r.RetryAfter > driver.MaxHorizon {
		t.Fatalf("limit 1e15 full: %+v, want a retry of about 1e8 s", r)
	}
	// The largest max_concurrent with the longest TTL.
	cc := driver.Check{Key: key("slots"), Policy: driver.Policy{Kind: driver.Concurrency, MaxConcurrent: mc, LeaseTTL: driver.MaxHorizon}, Cost: 1}
	r := decide1(t, st, cc)
	if !r.Allowed || r.Remaining != mc-1 || r.ResetAfter <= driver.MaxHorizon-time.Minute || r.ResetAfter > driver.MaxHorizon {
		t.Fatalf("max_concurrent 1e15, TTL 1e8 s: %+v", r)
	}
	if err := st.Release(ctx, cc.Key, r.Lease); err != nil {
		t.Fatal(err)
	}
	// The largest burst at the top rate, and the cost above it.
	tb := driver.Check{Key: key("burst"), Policy: driver.Policy{Kind: driver.TokenBucket, Rate: driver.MaxRate, Burst: int(int64(driver.MaxHorizon) / 1000)}, Cost: mc}
	if r := decide1(t, st, tb); r.Allowed || r.RetryAfter < time.Duration(math.MaxInt64/2) {
		t.Fatalf("cost 1e15 above a burst of 1e14: %+v, want denied for ever", r)
	}
	tb.Cost = tb.Policy.Burst
	if r := decide1(t, st, tb); !r.Allowed || r.Remaining != 0 || r.ResetAfter != driver.MaxHorizon {
		t.Fatalf("burst 1e14 at 1e6/s, cost 1e14: %+v, want allowed with a reset of 1e8 s", r)
	}
	// The shortest window and lease.
	if s.o.NewWithClock == nil {
		return
	}
	cst, clk := s.clockStore(t)
	ckey := keys(t, cst)
	short := driver.Check{Key: ckey("short"), Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 1, Window: driver.MinWindow}, Cost: 1}
	lease := driver.Check{Key: ckey("lease"), Policy: driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1, LeaseTTL: driver.MinLeaseTTL}, Cost: 1}
	for _, c := range []driver.Check{short, lease} {
		decide1(t, cst, c)
		if r := decide1(t, cst, c); r.Allowed || r.RetryAfter != time.Millisecond {
			t.Fatalf("%v: second at once: %+v, want denied for 1 ms", c.Policy.Kind, r)
		}
		clk.Advance(time.Millisecond - time.Microsecond)
		if r := decide1(t, cst, c); r.Allowed {
			t.Fatalf("%v: admitted 1 µs early", c.Policy.Kind)
		}
		clk.Advance(time.Microsecond)
		if r := decide1(t, cst, c); !r.Allowed {
			t.Fatalf("%v: denied after 1 ms: %+v", c.Policy.Kind, r)
		}
	}
}

// invalidChecksRejected: a policy or cost outside the supported ranges is
// an error marked driver.ErrBadRequest, from Decide (alone or beside a
// valid check) and Peek, and consumes nothing; Extend rejects an invalid
// TTL the same way.
func (s *suite) invalidChecksRejected(t *testing.T) {
	st := s.store(t)
	key := keys(t, st)
	valid := driver.Check{Key: key("valid"), Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 1, Window: time.Minute}, Cost: 1}
	tb := func(rate float64, burst int) driver.Policy {
		return driver.Policy{Kind: driver.TokenBucket, Rate: rate, Burst: burst}
	}
	bad := []driver.Check{
		{Policy: tb(1e-10, 1), Cost: 1},
		{Policy: tb(7e8, 1), Cost: 1},
		{Policy: tb(math.Nextafter(driver.MaxRate, math.Inf(1)), 1), Cost: 1},
		{Policy: tb(math.NaN(), 1), Cost: 1},
		{Policy: tb(driver.MinRate, 2), Cost: 1},
		{Policy: tb(1, 0), Cost: 1},
		{Policy: tb(1, 1), Cost: 0},
		{Policy: tb(1, 1), Cost: -3},
		{Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: int(driver.MaxCount) + 1, Window: time.Minute}, Cost: 1},
		{Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 10, Window: driver.MaxHorizon + 1}, Cost: 1},
		{Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 10, Window: time.Microsecond}, Cost: 1},
		{Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 10, Window: time.Minute}, Cost: int(driver.MaxCount) + 1},
		{Policy: driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 0, LeaseTTL: time.Minute}, Cost: 1},
		{Policy: driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1, LeaseTTL: 0}, Cost: 1},
		{Policy: driver.Policy{Kind: 0}, Cost: 1},
	}
	res := make([]driver.Result, 2)
	for i, c := range bad {
		c.Key = key("bad-" + strconv.Itoa(i))
		if err := c.Validate(); err == nil {
			t.Fatalf("%+v passed Check.Validate", c)
		}
		for _, checks := range [][]driver.Check{{c}, {valid, c}, {c, valid}} {
			if ok, err := st.Decide(ctx, checks, res); ok || !errors.Is(err, driver.ErrBadRequest) {
				t.Fatalf("Decide(%+v): ok=%v err=%v, want an error marked ErrBadRequest", checks, ok, err)
			}
			if err := st.Peek(ctx, checks, res); !errors.Is(err, driver.ErrBadRequest) {
				t.Fatalf("Peek(%+v): err=%v, want an error marked ErrBadRequest", checks, err)
			}
		}
	}
	if r := peek1(t, st, valid); r.Remaining != 1 {
		t.Fatalf("the valid check of the refused decisions: %+v, want nothing consumed", r)
	}
	ext, ok := st.(driver.Extender)
	if !ok {
		return
	}
	cc := driver.Check{Key: key("lease"), Policy: driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1, LeaseTTL: time.Minute}, Cost: 1}
	l := decide1(t, st, cc).Lease
	for _, ttl := range []time.Duration{0, -time.Second, time.Microsecond, driver.MaxHorizon + 1} {
		if held, err := ext.Extend(ctx, cc.Key, l, ttl); held || !errors.Is(err, driver.ErrBadRequest) {
			t.Fatalf("Extend(ttl %v) = %v, %v; want an error marked ErrBadRequest", ttl, held, err)
		}
	}
	if r := peek1(t, st, cc); r.Remaining != 0 {
		t.Fatalf("the lease after refused extensions: %+v, want still held", r)
	}
}

// costMillion takes a cost of 1e6 on a sliding window of 1e6 per minute:
// one admission, in bounded time (it must not grow with the cost), that
// fills the window exactly; a composite denied by it takes nothing of its
// other part's million.
func (s *suite) costMillion(t *testing.T) {
	const million = 1_000_000
	const bound = time.Second
	st := s.store(t)
	key := keys(t, st)
	p := driver.Policy{Kind: driver.SlidingWindow, Limit: million, Window: time.Minute}
	c := driver.Check{Key: key("full"), Policy: p, Cost: million}
	start := time.Now()
	r := decide1(t, st, c)
	took := time.Since(start)
	t.Logf("cost 1e6 on a window of 1e6 per minute: %v", took)
	if !r.Allowed || r.Remaining != 0 {
		t.Fatalf("cost 1e6: %+v, want allowed with 0 remaining", r)
	}
	if took > bound {
		t.Fatalf("cost 1e6 took %v, more than %v: the cost must be one entry", took, bound)
	}
	c.Cost = 1
	if r := decide1(t, st, c); r.Allowed || r.RetryAfter <= 0 || r.RetryAfter > time.Minute || r.Remaining != 0 {
		t.Fatalf("cost 1 after: %+v, want denied until the million leaves", r)
	}
	other := driver.Check{Key: key("other"), Policy: p, Cost: million}
	full := driver.Check{Key: c.Key, Policy: p, Cost: million}
	res := make([]driver.Result, 2)
	start = time.Now()
	ok, err := st.Decide(ctx, []driver.Check{other, full}, res)
	if took := time.Since(start); took > bound {
		t.Fatalf("a composite of two costs of 1e6 took %v", took)
	}
	if ok || err != nil || !res[0].Allowed || res[1].Allowed {
		t.Fatalf("composite with the full window: ok=%v err=%v %+v", ok, err, res)
	}
	if r := peek1(t, st, other); r.Remaining != million {
		t.Fatalf("the other part after the denied composite: %+v, want %d remaining", r, million)
	}
	if s.o.NewWithClock == nil {
		return
	}
	// Two halves, 30 s apart: a minute after the first, half is free, and
	// the other half frees 30 s later, exactly.
	cst, clk := s.clockStore(t)
	ckey := keys(t, cst)
	h := driver.Check{Key: ckey("halves"), Policy: p, Cost: million / 2}
	decide1(t, cst, h)
	clk.Advance(30 * time.Second)
	decide1(t, cst, h)
	clk.Advance(30 * time.Second)
	if r := peek1(t, cst, h); !r.Allowed || r.Remaining != million/2 || r.ResetAfter != 30*time.Second {
		t.Fatalf("a window after the first half: %+v, want %d remaining, reset in 30s", r, million/2)
	}
	h.Cost = million/2 + 1
	if r := decide1(t, cst, h); r.Allowed || r.RetryAfter != 30*time.Second {
		t.Fatalf("one more than the free half: %+v, want denied for 30s", r)
	}
	clk.Advance(30 * time.Second)
	h.Cost = million
	start = time.Now()
	r = decide1(t, cst, h)
	if took := time.Since(start); !r.Allowed || took > bound {
		t.Fatalf("cost 1e6 on the emptied window: %+v in %v", r, took)
	}
}

// extend: Extend moves a live lease's expiry to ttl from now, reports false
// for a released, expired or unknown lease (or one of another key), and
// never raises capacity: an extension of a lease that is gone does not
// bring it back.
func (s *suite) extend(t *testing.T) {
	var st driver.Store
	var clk *Clock
	if s.o.NewWithClock != nil {
		st, clk = s.clockStore(t)
	} else {
		st = s.store(t)
	}
	ext, ok := st.(driver.Extender)
	if !ok {
		t.Skip("store does not implement driver.Extender")
	}
	key := keys(t, st)
	p := driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 2, LeaseTTL: time.Second}
	if clk == nil {
		p.LeaseTTL = time.Minute // no lease may expire on the real clock
	}
	c := driver.Check{Key: key("slots"), Policy: p, Cost: 1}
	extend := func(k driver.Key, lease string, ttl time.Duration) bool {
		t.Helper()
		held, err := ext.Extend(ctx, k, lease, ttl)
		if err != nil {
			t.Fatalf("Extend(%v, %q, %v): %v", k, lease, ttl, err)
		}
		return held
	}
	a, b := decide1(t, st, c), decide1(t, st, c)
	if !a.Allowed || !b.Allowed {
		t.Fatalf("two leases of 2: %+v %+v", a, b)
	}
	if !extend(c.Key, a.Lease, 10*time.Second) {
		t.Fatal("Extend of a live lease reported false")
	}
	if extend(c.Key, "no-such-lease", time.Minute) || extend(key("never-used"), a.Lease, time.Minute) {
		t.Fatal("Extend of an unknown lease, or of a lease on another key, reported true")
	}
	if r := decide1(t, st, c); r.Allowed {
		t.Fatal("a third lease of 2 was granted after extensions")
	}
	if clk != nil {
		// b expired at 1 s; a was extended to 10 s. Extend b before any
		// decision on the key expires it.
		clk.Advance(5 * time.Second)
		if extend(c.Key, b.Lease, time.Minute) {
			t.Fatal("Extend of a lease expired (and not yet removed) reported true")
		}
		r := decide1(t, st, c)
		if !r.Allowed || r.Remaining != 0 {
			t.Fatalf("after b expired: %+v, want b's slot with 0 remaining", r)
		}
		if r2 := decide1(t, st, c); r2.Allowed || r2.RetryAfter != time.Second {
			t.Fatalf("with a extended and the new lease: %+v, want denied until the new lease expires in 1s", r2)
		}
		if extend(c.Key, b.Lease, time.Minute) {
			t.Fatal("Extend of an expired lease reported true")
		}
		if r2 := decide1(t, st, c); r2.Allowed {
			t.Fatal("the extension of an expired lease raised capacity")
		}
		if !extend(c.Key, a.Lease, 2*time.Second) { // shortens: ttl from now
			t.Fatal("second Extend of a live lease reported false")
		}
		if r2 := peek1(t, st, c); r2.RetryAfter != time.Second || r2.ResetAfter != 2*time.Second {
			t.Fatalf("after shortening a to 2s: %+v, want retry 1s, reset 2s", r2)
		}
		if err := st.Release(ctx, c.Key, r.Lease); err != nil {
			t.Fatal(err)
		}
	} else if err := st.Release(ctx, c.Key, b.Lease); err != nil {
		t.Fatal(err)
	}
	// a is the one lease held; released, it cannot be extended.
	if err := st.Release(ctx, c.Key, a.Lease); err != nil {
		t.Fatal(err)
	}
	if extend(c.Key, a.Lease, time.Minute) {
		t.Fatal("Extend of a released lease reported true")
	}
	if r := peek1(t, st, c); r.Remaining != 2 {
		t.Fatalf("after releasing both: %+v, want 2 remaining", r)
	}
	decide1(t, st, c)
	decide1(t, st, c)
	if r := decide1(t, st, c); r.Allowed {
		t.Fatal("the extension of a released lease raised capacity")
	}
}

// modelState is the reference model's state of one key.
type modelState struct {
	tat    int64
	log    policy.Log
	leases []policy.Lease
}

// modelCheck answers c on m at now (consuming when take is true); lease is
// the store's lease id of a granted concurrency check.
func modelCheck(m *modelState, c *driver.Check, now int64, take bool, lease string) policy.Outcome {
	p := &c.Policy
	switch p.Kind {
	case driver.TokenBucket:
		tat, o := policy.BucketTake(m.tat, now, int64(p.Interval()), p.Burst, c.Cost, take)
		if take {
			m.tat = tat
		}
		return o
	case driver.SlidingWindow:
		return m.log.Take(now, int64(p.Window), p.Limit, c.Cost, take)
	}
	m.leases = policy.ExpireLeases(m.leases, now)
	o := policy.LeaseCheck(m.leases, now, p.MaxConcurrent)
	if take && o.Allowed {
		m.leases = append(m.leases, policy.Lease{ID: lease, Expiry: now + int64(p.LeaseTTL)})
		o = policy.LeaseCheck(m.leases, now, p.MaxConcurrent)
		o.Allowed = true
	}
	return o
}

// modelMultiCheck compares decisions and peeks of one to four checks with
// the reference model on random sequences: composites of several keys,
// rate plus concurrency on one key, random costs, releases and clock
// steps. Every answer of every check must be the model's: a denied
// decision consumes nothing and answers each check on the state before it.
func (s *suite) modelMultiCheck(t *testing.T) {
	for seed := range uint64(3) {
		st, clk := s.clockStore(t)
		key := keys(t, st)
		start := clk.Now()
		rnd := rand.New(rand.NewPCG(seed, 13))
		type pick struct {
			key driver.Key
			p   driver.Policy
		}
		k := []driver.Key{key("a"), key("b"), key("c"), key("d"), key("e")}
		picks := []pick{
			{k[0], driver.Policy{Kind: driver.TokenBucket, Rate: 10, Burst: 3}},
			{k[1], driver.Policy{Kind: driver.SlidingWindow, Limit: 5, Window: time.Second}},
			{k[2], driver.Policy{Kind: driver.TokenBucket, Rate: 3, Burst: 2}},
			{k[2], driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 2, LeaseTTL: 1500 * time.Millisecond}},
			{k[3], driver.Policy{Kind: driver.SlidingWindow, Limit: 4, Window: 700 * time.Millisecond}},
			{k[3], driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1, LeaseTTL: 900 * time.Millisecond}},
			{k[4], driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 2, LeaseTTL: time.Second}},
		}
		model := map[driver.Key]*modelState{}
		for _, kk := range k {
			model[kk] = new(modelState)
		}
		type held struct {
			key driver.Key
			id  string
		}
		var leases []held
		checks := make([]driver.Check, 0, 4)
		res := make([]driver.Result, 4)
		want := make([]policy.Outcome, 4)
		admitted, denied := 0, 0
		for step := range 500 {
			if rnd.IntN(4) != 0 {
				clk.Advance(time.Duration(rnd.Int64N(int64(300 * time.Millisecond))))
			}
			now := int64(clk.Now().Sub(start))
			if len(leases) > 0 && rnd.IntN(8) == 0 {
				i := rnd.IntN(len(leases))
				l := leases[i]
				leases = append(leases[:i], leases[i+1:]...)
				if err := st.Release(ctx, l.key, l.id); err != nil {
					t.Fatal(err)
				}
				m := model[l.key]
				m.leases, _ = policy.RemoveLease(m.leases, l.id)
				continue
			}
			checks = checks[:0]
			for _, i := range rnd.Perm(len(picks))[:1+rnd.IntN(4)] {
				checks = append(checks, driver.Check{Key: picks[i].key, Policy: picks[i].p, Cost: 1 + rnd.IntN(3)})
			}
			peek := rnd.IntN(6) == 0
			var ok bool
			var err error
			if peek {
				err = st.Peek(ctx, checks, res)
			} else {
				ok, err = st.Decide(ctx, checks, res)
			}
			if err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
			// The checks of one decision are on distinct (key, kind) pairs,
			// so each is answered on the state before the decision; the
			// decision passes when all pass, and then consumes them all.
			wantOK := true
			for i := range checks {
				want[i] = modelCheck(model[checks[i].Key], &checks[i], now, false, "")
				wantOK = wantOK && want[i].Allowed
			}
			if !peek && wantOK {
				for i := range checks {
					want[i] = modelCheck(model[checks[i].Key], &checks[i], now, true, res[i].Lease)
				}
			}
			if !peek && ok != wantOK {
				t.Fatalf("seed %d step %d: decision of %v: allowed=%v, model says %v (%+v)", seed, step, describe(checks), ok, wantOK, res[:len(checks)])
			}
			for i := range checks {
				granted := !peek && wantOK && checks[i].Policy.Kind == driver.Concurrency
				if granted != (res[i].Lease != "") {
					t.Fatalf("seed %d step %d: check %d (%v) lease %q, want one only when granted", seed, step, i, checks[i].Policy.Kind, res[i].Lease)
				}
				if granted {
					leases = append(leases, held{checks[i].Key, res[i].Lease})
				}
				if res[i].Limit != checks[i].Policy.Capacity() {
					t.Fatalf("seed %d step %d: check %d limit %d, want %d", seed, step, i, res[i].Limit, checks[i].Policy.Capacity())
				}
				sameOutcome(t, step, res[i], want[i])
			}
			if !peek {
				if ok {
					admitted++
				} else {
					denied++
				}
			}
		}
		if admitted < 50 || denied < 50 {
			t.Fatalf("seed %d: %d admitted and %d denied decisions: the sequence tests too little of one side", seed, admitted, denied)
		}
	}
}

func describe(checks []driver.Check) string {
	s := ""
	for i, c := range checks {
		if i > 0 {
			s += ", "
		}
		s += c.Key.ID + "/" + c.Policy.Kind.String() + " cost " + strconv.Itoa(c.Cost)
	}
	return "[" + s + "]"
}

// hammerWindowCosts hammers one sliding window of 1000 units from many
// goroutines with lone checks of random cost, composites that pass (with a
// second, wide window) and composites that can never pass (with an
// exhausted window): the units admitted must be exactly 1000, every
// composite that passed must show in the wide window, and none that
// cannot pass may take anything.
func (s *suite) hammerWindowCosts(t *testing.T) {
	st := s.store(t)
	key := keys(t, st)
	const limit = 1000
	hour := time.Hour
	w := driver.Check{Key: key("w"), Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: limit, Window: hour}, Cost: 1}
	v := driver.Check{Key: key("v"), Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 1 << 40, Window: hour}, Cost: 1}
	x := driver.Check{Key: key("x"), Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 1, Window: hour}, Cost: 1}
	decide1(t, st, x)
	var units, wide, wrong, errs atomic.Int64
	hammer(s.n(16), func(g int) {
		rnd := rand.New(rand.NewPCG(uint64(g), 5))
		res := make([]driver.Result, 3)
		for i := 0; ; i++ {
			cost := 1 + rnd.IntN(5)
			a, b := w, v
			a.Cost, b.Cost = cost, cost
			switch i % 4 {
			case 0: // a lone probe of cost 1 ends the goroutine once the window is full
				a.Cost = 1
				ok, err := st.Decide(ctx, []driver.Check{a}, res)
				if err != nil {
					errs.Add(1)
					return
				}
				if !ok {
					return
				}
				units.Add(1)
			case 1:
				if ok, err := st.Decide(ctx, []driver.Check{a}, res); err != nil {
					errs.Add(1)
				} else if ok {
					units.Add(int64(cost))
				}
			case 2:
				checks := []driver.Check{b, a}
				if rnd.IntN(2) == 0 {
					checks[0], checks[1] = a, b
				}
				if ok, err := st.Decide(ctx, checks, res); err != nil {
					errs.Add(1)
				} else if ok {
					units.Add(int64(cost))
					wide.Add(int64(cost))
				}
			default:
				if ok, err := st.Decide(ctx, []driver.Check{a, b, x}, res); err != nil {
					errs.Add(1)
				} else if ok {
					wrong.Add(1)
				}
			}
		}
	})
	if errs.Load() != 0 || wrong.Load() != 0 {
		t.Fatalf("%d errors, %d decisions passed an exhausted window", errs.Load(), wrong.Load())
	}
	if got := units.Load(); got != limit {
		t.Fatalf("admitted %d units into a window of %d", got, limit)
	}
	if r := peek1(t, st, w); r.Remaining != 0 || r.Allowed {
		t.Fatalf("w after the hammer: %+v, want full", r)
	}
	if r := peek1(t, st, v); int64(r.Remaining) != 1<<40-wide.Load() {
		t.Fatalf("v remaining %d, want %d: composites that were denied took from it", r.Remaining, 1<<40-wide.Load())
	}
}
