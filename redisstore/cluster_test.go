package redisstore_test

import (
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/redisstore"
	"github.com/rate-sync/ratesync-go/storetest"
)

// A two-phase decision (keys in two Cluster slots) whose second part is
// taken by another client after the peeks undoes its first part. Between
// its decide and its undo, the first part's key refills or is used by
// another client: the undo must never give back more than the decision
// took, so the admissions that follow stay within the policy's bound.
func TestTwoPhaseUndoNeverCreditsMore(t *testing.T) {
	c := clusterClient(t)
	clk := storetest.NewClock()
	var hook func(phase int)
	s := store(t, c, redisstore.WithClock(clk.Now), redisstore.WithBetweenPhases(func(phase int) { hook(phase) }))
	res := make([]driver.Result, 2)
	decide := func(t *testing.T, checks ...driver.Check) bool {
		t.Helper()
		ok, err := s.Decide(bg, checks, res[:len(checks)])
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	// admissions counts what the first part's key still admits now.
	admissions := func(t *testing.T, a driver.Check) int {
		n := 0
		for decide(t, a) {
			n++
			if n > 100 {
				t.Fatal("more than 100 admissions")
			}
		}
		return n
	}
	second := driver.Check{Key: driver.Key{Name: "undo-b"}, Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 1, Window: time.Hour}, Cost: 1}
	tests := []struct {
		name    string
		policy  driver.Policy
		between func(t *testing.T, a driver.Check) // before the undo
		// exact is what the first part admits after an undo that gives
		// back exactly what the decision took; want what it admits with
		// undo.lua, which gives nothing back when another decision wrote
		// the key since (never more than exact).
		exact, want int
	}{
		{"bucket, untouched", driver.Policy{Kind: driver.TokenBucket, Rate: 1000, Burst: 2}, func(*testing.T, driver.Check) {}, 2, 2},
		{"bucket, refilled", driver.Policy{Kind: driver.TokenBucket, Rate: 1000, Burst: 2}, func(_ *testing.T, a driver.Check) {
			clk.Advance(10 * time.Millisecond)
		}, 2, 2},
		{"bucket, refilled and used by another client", driver.Policy{Kind: driver.TokenBucket, Rate: 1000, Burst: 2}, func(t *testing.T, a driver.Check) {
			clk.Advance(10 * time.Millisecond)
			if !decide(t, a) {
				t.Fatal("the other client's decision on a refilled bucket was denied")
			}
		}, 1, 1},
		{"bucket, used by another client", driver.Policy{Kind: driver.TokenBucket, Rate: 1000, Burst: 3}, func(t *testing.T, a driver.Check) {
			if !decide(t, a) {
				t.Fatal("the other client's decision was denied")
			}
		}, 2, 1},
		{"window, untouched", driver.Policy{Kind: driver.SlidingWindow, Limit: 3, Window: time.Hour}, func(*testing.T, driver.Check) {}, 3, 3},
		{"window, used by another client", driver.Policy{Kind: driver.SlidingWindow, Limit: 3, Window: time.Hour}, func(t *testing.T, a driver.Check) {
			if !decide(t, a) {
				t.Fatal("the other client's decision was denied")
			}
		}, 2, 1},
		{"leases, used by another client", driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 2, LeaseTTL: time.Hour}, func(t *testing.T, a driver.Check) {
			if !decide(t, a) {
				t.Fatal("the other client's lease was denied")
			}
		}, 1, 1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := driver.Check{Key: driver.Key{Name: "undo-a", ID: string(rune('a' + i))}, Policy: tt.policy, Cost: 1}
			b := second
			b.Key.ID = a.Key.ID
			undone := false
			hook = func(phase int) {
				switch phase {
				case 1:
					if !decide(t, b) { // another client takes the second part
						t.Fatal("the other client's decision on the second part was denied")
					}
				case 2:
					undone = true
					tt.between(t, a)
				}
			}
			if decide(t, a, b) {
				t.Fatal("the composite was allowed with its second part taken")
			}
			hook = func(int) {}
			if !undone {
				t.Fatal("the composite never reached its undo: are its keys in one slot?")
			}
			got := admissions(t, a)
			if got > tt.exact {
				t.Fatalf("the first part admits %d after the undo: the undo gave back more than the decision took (at most %d)", got, tt.exact)
			}
			if got != tt.want {
				t.Fatalf("the first part admits %d after the undo, want %d", got, tt.want)
			}
		})
	}
}
