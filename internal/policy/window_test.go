package policy

import (
	"math/rand/v2"
	"testing"
	"time"
)

// unitLog is the sliding-window log with one entry per unit: the model
// the counted Log must agree with.
type unitLog struct{ ts []int64 }

func (l *unitLog) take(now, window int64, limit, cost int, consume bool) Outcome {
	cut := now - window
	i := 0
	for i < len(l.ts) && l.ts[i] <= cut {
		i++
	}
	l.ts = l.ts[i:]
	count := len(l.ts)
	o := Outcome{Remaining: max(limit-count, 0)}
	if count > 0 {
		o.ResetAfter = l.ts[count-1] + window - now
	}
	if cost > limit {
		o.RetryAfter = Never
		return o
	}
	if count+cost > limit {
		o.RetryAfter = l.ts[count+cost-limit-1] + window - now
		return o
	}
	o.Allowed = true
	if !consume {
		return o
	}
	for range cost {
		l.ts = append(l.ts, now)
	}
	o.Remaining = limit - len(l.ts)
	o.ResetAfter = window
	return o
}

func (l *unitLog) unappend(n int) { l.ts = l.ts[:max(len(l.ts)-n, 0)] }

// compareLogs runs the same random operations on a Log and a unitLog and
// fails at the first different answer. ops drives the choices, so that a
// fuzzer can steer them.
func compareLogs(t *testing.T, ops []byte, window int64, limit int) {
	t.Helper()
	var l Log
	var u unitLog
	var now int64
	var taken []int // costs of the consumed takes not yet undone, newest last
	for i := 0; i+2 < len(ops); i += 3 {
		op, a, b := ops[i], int64(ops[i+1]), int(ops[i+2])
		switch op % 8 {
		case 0, 1, 2, 3, 4:
			// Time steps of 0 (admissions at one time share an entry), small,
			// and about a window; costs up to twice the limit.
			switch a % 4 {
			case 0:
			case 1:
				now += window
			default:
				now += a * window / 200
			}
			cost := 1 + b%(2*limit)
			consume := op%8 != 4
			got := l.Take(now, window, limit, cost, consume)
			want := u.take(now, window, limit, cost, consume)
			if got != want {
				t.Fatalf("op %d: Take(now=%d, cost=%d, consume=%v) = %+v, per-unit log says %+v", i/3, now, cost, consume, got, want)
			}
			if got.Allowed && consume {
				taken = append(taken, cost)
			}
		case 5:
			// Undo the newest consumed takes, as a denied composite does,
			// unless expiry has dropped their units since.
			if n := len(taken); n > 0 && int64(len(u.ts)) == l.Count() && l.Count() >= int64(taken[n-1]) {
				l.Unappend(taken[n-1])
				u.unappend(taken[n-1])
				taken = taken[:n-1]
			}
		default:
			l.Expire(now, window)
			u.take(now, window, limit, limit+1, false)
		}
		if l.Count() != int64(len(u.ts)) {
			t.Fatalf("op %d: %d units held, per-unit log holds %d", i/3, l.Count(), len(u.ts))
		}
		if l.Len() > min(limit, len(u.ts)) {
			t.Fatalf("op %d: %d entries for %d units (limit %d)", i/3, l.Len(), len(u.ts), limit)
		}
	}
}

// TestLogMatchesUnitLog: the counted log gives the answers of the log with
// one entry per unit on random sequences of takes, peeks, undos and expiry,
// at several limits, including sequences long enough to wrap and grow the
// ring and to restart the running totals.
func TestLogMatchesUnitLog(t *testing.T) {
	for _, small := range []bool{false, true} {
		if small {
			old := rebaseAt
			rebaseAt = 50 // restart the totals often
			defer func() { rebaseAt = old }()
		}
		for seed := range uint64(40) {
			rnd := rand.New(rand.NewPCG(seed, 9))
			ops := make([]byte, 3*2000)
			for i := range ops {
				ops[i] = byte(rnd.UintN(256))
			}
			limit := []int{1, 2, 3, 7, 20, 100}[seed%6]
			compareLogs(t, ops, int64(time.Second), limit)
		}
	}
}

func FuzzLogMatchesUnitLog(f *testing.F) {
	f.Add([]byte{0, 0, 3, 0, 0, 1, 4, 2, 2, 5, 0, 0, 0, 1, 9}, uint8(5))
	f.Fuzz(func(t *testing.T, ops []byte, limit uint8) {
		compareLogs(t, ops, 1000, 1+int(limit%50))
	})
}

// An admission of cost n is one entry: a million units on a
// million-per-window log take one entry and no time.
func TestLogCostIsOneEntry(t *testing.T) {
	var l Log
	w := int64(time.Minute)
	if o := l.Take(0, w, 1_000_000, 1_000_000, true); !o.Allowed || o.Remaining != 0 {
		t.Fatalf("cost 1e6: %+v", o)
	}
	if l.Len() != 1 || l.Count() != 1_000_000 || cap(l.es) > 8 {
		t.Fatalf("%d entries (ring of %d) for %d units, want 1 entry", l.Len(), cap(l.es), l.Count())
	}
	if o := l.Take(1, w, 1_000_000, 1, true); o.Allowed || o.RetryAfter != w-1 {
		t.Fatalf("cost 1 after: %+v, want denied until the window passes", o)
	}
	for i := range int64(1000) {
		l.Take(w+i, w, 1_000_000, 1000, true)
	}
	if l.Len() != 1000 || l.Count() != 1_000_000 {
		t.Fatalf("%d entries for %d units, want 1000 for 1e6", l.Len(), l.Count())
	}
	// A denial on a full log of many entries finds its retry time by search.
	if o := l.Take(w+1000, w, 1_000_000, 500_500, false); o.Allowed || o.RetryAfter != w+500-(w+1000)+w {
		t.Fatalf("cost 500500: %+v, want retry when the 501st entry leaves", o)
	}
	if n := testing.AllocsPerRun(100, func() { l.Take(2*w+1000, w, 1_000_000, 1, false) }); n != 0 {
		t.Fatalf("a peek allocates %v", n)
	}
}
