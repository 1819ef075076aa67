package policy

import (
	"testing"
	"time"
)

const sec = int64(time.Second)

func interval(rate float64) int64 {
	ns := 1e9 / rate
	i := int64(ns)
	if float64(i) < ns {
		i++
	}
	return i
}

// A saturated bucket admits exactly rate*t + burst over any span, at high
// and low rates: no drift, no timing margin.
func TestBucketExactUnderSaturation(t *testing.T) {
	tests := []struct {
		name  string
		rate  float64
		burst int
		span  int64
	}{
		{"1000/s burst 1", 1000, 1, 10 * sec},
		{"10/s burst 1", 10, 1, 60 * sec},
		{"0.5/s burst 1", 0.5, 1, 600 * sec},
		{"3/s burst 5 (interval rounds)", 3, 5, 3600 * sec},
		{"100/s burst 20", 100, 20, 60 * sec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iv := interval(tt.rate)
			var tat int64
			admitted := 0
			// Try every 100µs; count admissions.
			for now := int64(0); now <= tt.span; now += 100_000 {
				for {
					var o Outcome
					tat, o = BucketTake(tat, now, iv, tt.burst, 1, true)
					if !o.Allowed {
						if o.RetryAfter <= 0 {
							t.Fatalf("denied with retry %d at %d", o.RetryAfter, now)
						}
						break
					}
					admitted++
				}
			}
			want := int(float64(tt.span)/float64(iv)) + tt.burst
			if admitted != want && admitted != want-1 {
				t.Fatalf("admitted %d over %v, want %d", admitted, time.Duration(tt.span), want)
			}
			if max := int(tt.rate*float64(tt.span)/1e9) + tt.burst; admitted > max {
				t.Fatalf("admitted %d > rate*t+burst = %d", admitted, max)
			}
		})
	}
}

func TestBucketRetryIsExact(t *testing.T) {
	iv := interval(10) // 100ms
	tat, o := BucketTake(0, 0, iv, 1, 1, true)
	if !o.Allowed || o.Remaining != 0 || o.ResetAfter != iv {
		t.Fatalf("first: %+v", o)
	}
	_, o = BucketTake(tat, 30*int64(time.Millisecond), iv, 1, 1, true)
	if o.Allowed || o.RetryAfter != 70*int64(time.Millisecond) {
		t.Fatalf("second at 30ms: %+v, want retry 70ms", o)
	}
	// Exactly at the retry time it passes.
	if _, o = BucketTake(tat, iv, iv, 1, 1, true); !o.Allowed {
		t.Fatalf("at retry time: %+v", o)
	}
	// Peeking changes nothing.
	if tat2, o := BucketTake(tat, 0, iv, 1, 1, false); tat2 != tat || o.Allowed {
		t.Fatalf("peek: tat %d→%d, %+v", tat, tat2, o)
	}
	if _, o := BucketTake(0, 0, iv, 2, 3, true); o.Allowed || o.RetryAfter != Never {
		t.Fatalf("cost > burst: %+v", o)
	}
}

func TestLogBoundaries(t *testing.T) {
	var l Log
	w := 10 * sec
	for i := range 3 {
		if o := l.Take(int64(i)*sec, w, 3, 1, true); !o.Allowed || o.Remaining != 2-i {
			t.Fatalf("take %d: %+v", i, o)
		}
	}
	o := l.Take(5*sec, w, 3, 1, true)
	if o.Allowed || o.RetryAfter != 5*sec || o.ResetAfter != 7*sec {
		t.Fatalf("full: %+v, want retry 5s (entry at 0 leaves at 10s), reset 7s", o)
	}
	// An entry at t is in the window (now-w, now]: at now = t+w it is out.
	if o := l.Take(10*sec, w, 3, 1, true); !o.Allowed {
		t.Fatalf("at 10s: %+v", o)
	}
	if o := l.Take(10*sec, w, 3, 2, false); o.Allowed || o.RetryAfter != 2*sec {
		t.Fatalf("cost 2 at 10s: %+v, want retry 2s (two oldest at 1s and 2s)", o)
	}
	l.Unappend(1)
	if l.Len() != 2 || l.Count() != 2 {
		t.Fatalf("after unappend: %d entries, %d units, want 2 and 2", l.Len(), l.Count())
	}
	// Growth keeps order across the ring's wrap.
	var g Log
	for i := range 100 {
		g.Take(int64(i), 50, 1000, 1, true)
	}
	e := g.Entries()
	if len(e) != 50 || e[0].Time != 50 || e[49].Time != 99 {
		t.Fatalf("entries %v", e)
	}
}

func TestLeases(t *testing.T) {
	ls := []Lease{{"a", 10}, {"b", 20}, {"c", 30}}
	ls = ExpireLeases(ls, 10)
	if len(ls) != 2 || ls[0].ID != "b" {
		t.Fatalf("expire: %v", ls)
	}
	o := LeaseCheck(ls, 15, 2)
	if o.Allowed || o.RetryAfter != 5 || o.ResetAfter != 15 || o.Remaining != 0 {
		t.Fatalf("full: %+v", o)
	}
	ls, ok := RemoveLease(ls, "b")
	if !ok || len(ls) != 1 {
		t.Fatalf("remove: %v %v", ls, ok)
	}
	if _, ok := RemoveLease(ls, "b"); ok {
		t.Fatal("removed twice")
	}
	if o := LeaseCheck(ls, 15, 2); !o.Allowed || o.Remaining != 1 {
		t.Fatalf("after release: %+v", o)
	}
}
