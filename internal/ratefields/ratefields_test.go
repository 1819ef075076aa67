package ratefields

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go"
)

func TestDescribe(t *testing.T) {
	tests := []struct {
		name     string
		policy   string
		rule     ratesync.Rule
		field    string
		rate     string // Binding(false).Name
		conc     string // Binding(true).Name
		rateOnly bool   // no concurrency quota
	}{
		{name: "bucket", policy: "api", rule: ratesync.Rule{RatePerSecond: 10, Burst: 5},
			field: `"api";q=10;w=1`, rate: "api", conc: "api"},
		{name: "slow bucket", policy: "api", rule: ratesync.Rule{RatePerSecond: 0.5, Burst: 2},
			field: `"api";q=2;w=4`, rate: "api", conc: "api"},
		{name: "burst over a fraction of seconds", policy: "api", rule: ratesync.Rule{RatePerSecond: 3, Burst: 10},
			field: `"api";q=12;w=4`, rate: "api", conc: "api"}, // w = ceil(10/3), q = 3*4
		{name: "burst above the sustained rate", policy: "api", rule: ratesync.Rule{RatePerSecond: 100, Burst: 1000},
			field: `"api";q=1000;w=10`, rate: "api", conc: "api"},
		{name: "window", policy: "api", rule: ratesync.Rule{Algorithm: ratesync.SlidingWindow, Limit: 3, Window: 90 * time.Second},
			field: `"api";q=3;w=90`, rate: "api", conc: "api"},
		{name: "window rounded up", policy: "api", rule: ratesync.Rule{Algorithm: ratesync.SlidingWindow, Limit: 3, Window: 1500 * time.Millisecond},
			field: `"api";q=3;w=2`, rate: "api", conc: "api"},
		{name: "concurrency", policy: "api", rule: ratesync.Rule{MaxConcurrent: 2, LeaseTTL: time.Minute},
			field: `"api";q=2;qu="concurrent-requests"`, rate: "api", conc: "api"},
		{name: "both", policy: "api", rule: ratesync.Rule{RatePerSecond: 10, Burst: 3, MaxConcurrent: 1},
			field: `"api";q=10;w=1, "api-concurrency";q=1;qu="concurrent-requests"`, rate: "api", conc: "api-concurrency"},
		{name: "quote and backslash in the name", policy: `a"b\c`, rule: ratesync.Rule{RatePerSecond: 1, Burst: 1},
			field: `"a\"b\\c";q=1;w=1`, rate: `a"b\c`, conc: `a"b\c`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Describe(tt.policy, tt.rule)
			if len(p.Field) != 1 || p.Field[0] != tt.field {
				t.Errorf("Field %q, want [%q]", p.Field, tt.field)
			}
			if got := p.Binding(false).Name; got != tt.rate {
				t.Errorf("Binding(false) %q, want %q", got, tt.rate)
			}
			if got := p.Binding(true).Name; got != tt.conc {
				t.Errorf("Binding(true) %q, want %q", got, tt.conc)
			}
		})
	}
}

func TestDescribeRuleWithNoQuota(t *testing.T) {
	p := Describe("api", ratesync.Rule{})
	if p.Rate != nil || p.Conc != nil || p.Field[0] != "" {
		t.Fatalf("rate %v, conc %v, field %q: want none", p.Rate, p.Conc, p.Field[0])
	}
}

// The items of several rules make one field, as for a composite's parts;
// a rule with no quota adds nothing.
func TestWriteItemsJoinsRules(t *testing.T) {
	var b strings.Builder
	Describe("by_ip", ratesync.Rule{RatePerSecond: 1, Burst: 5}).WriteItems(&b)
	Describe("none", ratesync.Rule{}).WriteItems(&b)
	Describe("all", ratesync.Rule{Algorithm: ratesync.SlidingWindow, Limit: 100, Window: time.Minute, MaxConcurrent: 4}).WriteItems(&b)
	want := `"by_ip";q=5;w=5, "all";q=100;w=60, "all-concurrency";q=4;qu="concurrent-requests"`
	if b.String() != want {
		t.Fatalf("%q, want %q", b.String(), want)
	}
}

func TestItem(t *testing.T) {
	q := Describe("api", ratesync.Rule{RatePerSecond: 10, Burst: 5}).Rate
	tests := []struct {
		name  string
		d     ratesync.Decision
		retry time.Duration
		want  string
	}{
		{"allowed, reset rounded up", ratesync.Decision{Allowed: true, Remaining: 4, ResetAfter: 1500 * time.Millisecond}, 0, `"api";r=4;t=2`},
		{"allowed and full", ratesync.Decision{Allowed: true, Remaining: 5}, 0, `"api";r=5`},
		{"negative remaining", ratesync.Decision{Allowed: true, Remaining: -3, ResetAfter: time.Second}, 0, `"api";r=0;t=1`},
		{"denied: the advertised retry", ratesync.Decision{RetryAfter: 100 * time.Millisecond, ResetAfter: time.Minute}, 2100 * time.Millisecond, `"api";r=0;t=3`},
		{"denied with no retry: the reset", ratesync.Decision{ResetAfter: 4 * time.Second}, 0, `"api";r=0;t=4`},
		{"reset beyond a year", ratesync.Decision{Allowed: true, ResetAfter: 1000 * 24 * time.Hour}, 0, `"api";r=0;t=31622400`},
		{"reset of a check that can never pass", ratesync.Decision{Allowed: true, ResetAfter: math.MaxInt64}, 0, `"api";r=0;t=31622400`},
		{"retry of a check that can never pass", ratesync.Decision{RetryAfter: math.MaxInt64}, math.MaxInt64, `"api";r=0;t=86400`},
		{"retry beyond a day", ratesync.Decision{RetryAfter: 48 * time.Hour}, 48 * time.Hour, `"api";r=0;t=86400`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Item(q, tt.d, FieldTime(tt.d, tt.retry))
			if got != tt.want {
				t.Errorf("%q, want %q", got, tt.want)
			}
			if b := AppendItem([]byte("x, "), q, tt.d, FieldTime(tt.d, tt.retry)); string(b) != "x, "+tt.want {
				t.Errorf("AppendItem %q, want %q", b, "x, "+tt.want)
			}
		})
	}
}

// A name longer than Item's stack buffer still makes the whole item.
func TestItemLongName(t *testing.T) {
	name := strings.Repeat("n", 200)
	q := Describe(name, ratesync.Rule{MaxConcurrent: 1}).Conc
	got := Item(q, ratesync.Decision{Allowed: true, Remaining: 1234567}, 0)
	if want := `"` + name + `";r=1234567`; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
}

func TestRetrySeconds(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want int64
	}{
		{-time.Second, 1},
		{0, 1},
		{1, 1},
		{time.Second, 1},
		{time.Second + 1, 2},
		{90 * time.Second, 90},
		{24 * time.Hour, 86400},
		{24*time.Hour + 1, 86400},
		{math.MaxInt64, 86400}, // a check that can never pass: no overflow to 1
	}
	for _, tt := range tests {
		if got := RetrySeconds(tt.d); got != tt.want {
			t.Errorf("RetrySeconds(%v) = %d, want %d", tt.d, got, tt.want)
		}
	}
}

func TestCeilSeconds(t *testing.T) {
	const year = 86400 * 366
	tests := []struct {
		d    time.Duration
		want int64
	}{
		{-time.Second, 0},
		{0, 0},
		{1, 1},
		{time.Second, 1},
		{time.Second + 1, 2},
		{48 * time.Hour, 172800}, // no day bound, unlike RetrySeconds
		{year * time.Second, year},
		{year*time.Second + 1, year},
		{math.MaxInt64 - time.Second + 2, year}, // rounding up would overflow
		{math.MaxInt64, year},
	}
	for _, tt := range tests {
		if got := CeilSeconds(tt.d); got != tt.want {
			t.Errorf("CeilSeconds(%v) = %d, want %d", tt.d, got, tt.want)
		}
	}
}

// A rate denial advertises the store's exact retry; a concurrency denial
// the estimate from the hold times, bounded by the store's and the TTL.
func TestRetryAfter(t *testing.T) {
	p := Describe("api", ratesync.Rule{RatePerSecond: 10, Burst: 3, MaxConcurrent: 2, LeaseTTL: 30 * time.Second})
	rate := ratesync.Decision{RetryAfter: 1234 * time.Millisecond}
	if got := p.RetryAfter(rate); got != rate.RetryAfter {
		t.Errorf("rate denial: %v, want the store's %v", got, rate.RetryAfter)
	}
	conc := ratesync.Decision{Concurrency: true, RetryAfter: 20 * time.Second}
	if got := p.RetryAfter(conc); got != time.Second {
		t.Errorf("concurrency denial before any hold: %v, want 1s", got)
	}
	for range 50 {
		p.ObserveHold(6 * time.Second)
	}
	if got := p.RetryAfter(conc); got != 3*time.Second {
		t.Errorf("concurrency denial, holds of 6s over 2 slots: %v, want 3s", got)
	}
	conc.RetryAfter = 0 // no store bound: the lease TTL bounds it
	p.ObserveHold(time.Hour)
	for range 50 {
		p.ObserveHold(time.Hour)
	}
	if got := p.RetryAfter(conc); got != 30*time.Second {
		t.Errorf("concurrency denial, holds of an hour: %v, want the 30s lease TTL", got)
	}
	// A concurrency-only rule's denials are concurrency denials, flagged
	// or not.
	only := Describe("c", ratesync.Rule{MaxConcurrent: 1, LeaseTTL: 5 * time.Second})
	if got := only.RetryAfter(ratesync.Decision{RetryAfter: 4 * time.Second}); got != time.Second {
		t.Errorf("concurrency-only rule: %v, want the 1s estimate", got)
	}
}

// Concurrent callers of one rule get one description; another rule
// (a reload, an override) gets its own.
func TestCache(t *testing.T) {
	c := NewCache("api")
	r1 := ratesync.Rule{RatePerSecond: 10, Burst: 5}
	r2 := ratesync.Rule{RatePerSecond: 20, Burst: 5}
	got := make([]*Policy, 16)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() { got[i] = c.Of(r1) })
	}
	wg.Wait()
	for i, p := range got {
		if p != got[0] {
			t.Fatalf("caller %d got description %p, caller 0 %p", i, p, got[0])
		}
	}
	p2 := c.Of(r2)
	if p2 == got[0] {
		t.Fatal("two rules share a description")
	}
	if p2.Field[0] != `"api";q=20;w=1` || got[0].Field[0] != `"api";q=10;w=1` {
		t.Fatalf("fields %q and %q", got[0].Field, p2.Field)
	}
	if c.Of(r1) != got[0] {
		t.Fatal("a rule met again is described again")
	}
}

func ExampleDescribe() {
	p := Describe("api", ratesync.Rule{RatePerSecond: 10, Burst: 20, MaxConcurrent: 4})
	d := ratesync.Decision{Allowed: true, Remaining: 17, ResetAfter: 300 * time.Millisecond}
	fmt.Println(p.Field[0])
	fmt.Println(Item(p.Binding(d.Concurrency), d, FieldTime(d, 0)))
	// Output:
	// "api";q=20;w=2, "api-concurrency";q=4;qu="concurrent-requests"
	// "api";r=17;t=1
}
