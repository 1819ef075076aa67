package driver

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestKeyEncoding(t *testing.T) {
	keys := []Key{{Name: "api"}, {Name: "api", ID: "u1"}, {Name: "a:b"}, {Name: "a", ID: "b"}, {Name: "a%3Ab"}, {Name: "x%", ID: "y:z"}}
	seen := map[string]Key{}
	for _, k := range keys {
		e := k.Encoded()
		if other, dup := seen[e]; dup {
			t.Fatalf("%+v and %+v both encode as %q", k, other, e)
		}
		seen[e] = k
		if got := DecodeKey(e); got != k {
			t.Fatalf("DecodeKey(%q) = %+v, want %+v", e, got, k)
		}
	}
}

func TestValidate(t *testing.T) {
	tb := func(rate float64, burst int) Policy { return Policy{Kind: TokenBucket, Rate: rate, Burst: burst} }
	sw := func(limit int, w time.Duration) Policy { return Policy{Kind: SlidingWindow, Limit: limit, Window: w} }
	cc := func(n int, ttl time.Duration) Policy {
		return Policy{Kind: Concurrency, MaxConcurrent: n, LeaseTTL: ttl}
	}
	valid := []Policy{
		tb(MinRate, 1), tb(MaxRate, 1), tb(MaxRate, int(int64(MaxHorizon)/1000)), tb(1, 100_000_000), tb(0.02, 2_000_000),
		sw(1, MinWindow), sw(int(MaxCount), MaxHorizon), sw(1_000_000, time.Minute),
		cc(1, MinLeaseTTL), cc(int(MaxCount), MaxHorizon),
	}
	for _, p := range valid {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v: %v, want valid", p, err)
		}
	}
	invalid := []struct {
		p     Policy
		field string
		says  []string // the value and the range
	}{
		{tb(1e-10, 1), "Rate", []string{"1e-10", "[1e-08, 1e+06]"}},      // Interval overflowed to 1 ns
		{tb(0.02/2e9, 1), "Rate", []string{"1e-11", "[1e-08, 1e+06]"}},   // fallback_replicas = 2e9
		{tb(7e8, 1), "Rate", []string{"7e+08", "[1e-08, 1e+06]", "KiB"}}, // ran at 5e8/s
		{tb(math.Nextafter(MaxRate, 2e6), 1), "Rate", []string{"1e+06", "[1e-08, 1e+06]"}},
		{tb(math.NaN(), 1), "Rate", []string{"NaN"}},
		{tb(math.Inf(1), 1), "Rate", []string{"+Inf"}},
		{tb(-1, 1), "Rate", []string{"-1"}},
		{tb(0, 1), "Rate", []string{"0"}},
		{tb(1, 0), "Burst", []string{"burst 0", "[1, 1e15]"}},
		{tb(1, -5), "Burst", []string{"burst -5"}},
		{tb(MinRate, 2), "Burst", []string{"burst 2", "2e+08 s", "1e8 s"}}, // burst*interval past the horizon
		{tb(1, 1<<62), "Burst", []string{"[1, 1e15]"}},                     // burst*interval overflowed int64
		{sw(0, time.Second), "Limit", []string{"limit 0", "[1, 1e15]"}},
		{sw(int(MaxCount)+1, time.Second), "Limit", []string{"1000000000000001"}},
		{sw(1, MinWindow-1), "Window", []string{"0.000999999 s", "[0.001 s, 1e8 s]"}},
		{sw(1, MaxHorizon+1), "Window", []string{"window 100000000.000000001 s"}},
		{sw(1, -time.Second), "Window", []string{"-1 s"}},
		{sw(1, math.MinInt64), "Window", []string{"-9223372036.854775808 s"}},
		{cc(0, time.Second), "MaxConcurrent", []string{"max concurrent 0"}},
		{cc(1, 0), "LeaseTTL", []string{"lease TTL 0 s", "[0.001 s, 1e8 s]"}},
		{cc(1, math.MaxInt64), "LeaseTTL", []string{"[0.001 s, 1e8 s]"}},
		{Policy{Kind: 9, Rate: 1, Burst: 1}, "Kind", []string{"unknown policy kind 9"}},
		{Policy{}, "Kind", []string{"unknown policy kind 0"}},
	}
	for _, tt := range invalid {
		err := tt.p.Validate()
		var pe *PolicyError
		if !errors.As(err, &pe) {
			t.Errorf("%+v: got %v, want a *PolicyError", tt.p, err)
			continue
		}
		if pe.Field != tt.field {
			t.Errorf("%+v: field %q, want %q (%v)", tt.p, pe.Field, tt.field, err)
		}
		for _, s := range tt.says {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%+v: %q does not say %q", tt.p, err, s)
			}
		}
	}
}

func TestValidateCostAndDurations(t *testing.T) {
	for _, c := range []int{1, 1_000_000, int(MaxCount)} {
		if err := ValidateCost(c); err != nil {
			t.Errorf("cost %d: %v", c, err)
		}
	}
	for _, c := range []int{0, -1, int(MaxCount) + 1, math.MaxInt} {
		if err := ValidateCost(c); err == nil || !strings.Contains(err.Error(), "[1, 1e15]") {
			t.Errorf("cost %d: got %v, want an error naming the range", c, err)
		}
	}
	c := Check{Policy: Policy{Kind: SlidingWindow, Limit: 1, Window: time.Second}, Cost: 0}
	if err := c.Validate(); err == nil {
		t.Error("Check.Validate accepted cost 0")
	}
	if err := ValidateLeaseTTL(time.Nanosecond); err == nil {
		t.Error("lease TTL of 1 ns accepted")
	}
	if err := ValidateLeaseTTL(time.Minute); err != nil {
		t.Error(err)
	}
	// A sweep every nanosecond spins a core.
	for _, d := range []time.Duration{time.Nanosecond, 0, -time.Second, MinSweepInterval - 1, MaxHorizon + 1} {
		if err := ValidateSweepInterval(d); err == nil || !strings.Contains(err.Error(), "[1 s, 1e8 s]") {
			t.Errorf("sweep interval %v: got %v, want an error naming the range", d, err)
		}
	}
	if err := ValidateSweepInterval(30 * time.Second); err != nil {
		t.Error(err)
	}
}

// Inside the supported range, the rate a bucket enforces, one token per
// Interval, is within 0.1 % of Rate and never above it.
func TestIntervalExact(t *testing.T) {
	rates := []float64{MinRate, MaxRate, math.Nextafter(MaxRate, 0), 999_999, 999_000.5, 654_321.7, 1e3 + 1e-9, 3, 1.0 / 3, 2.5e-8}
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		rates = append(rates, math.Pow(10, -8+14*rnd.Float64())) // log-uniform over [1e-8, 1e6]
	}
	for _, r := range rates {
		p := Policy{Kind: TokenBucket, Rate: r, Burst: 1}
		if err := p.Validate(); err != nil {
			t.Fatalf("rate %v: %v", r, err)
		}
		iv := p.Interval()
		got := 1e9 / float64(iv)
		if got > r*(1+1e-15) || got < r/1.001 { // 1e-15: float64 rounding of 1e9/r
			t.Fatalf("rate %v: interval %d ns enforces %v per second, want within 0.1 %% below", r, iv, got)
		}
	}
	// Outside, Interval saturates instead of wrapping.
	if iv := (Policy{Kind: TokenBucket, Rate: 1e-12}).Interval(); iv != math.MaxInt64 {
		t.Fatalf("interval at 1e-12/s = %d, want MaxInt64", iv)
	}
}
