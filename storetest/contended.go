package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
)

// clockSlack absorbs the store clock's resolution (PostgreSQL has
// microseconds) and the test's own clock readings: far below the
// hundreds of milliseconds a stale clock is off by.
const clockSlack = 5 * time.Millisecond

// holdFor is how long the contended-clock tests hold a key while
// decisions queue behind it.
const holdFor = 600 * time.Millisecond

// contendedClock checks the clock rule: the time a decision uses is read
// after the state it changes is held. A decision that waited behind a
// held key must be stamped no earlier than the moment the key was let go.
func (s *suite) contendedClock(t *testing.T) {
	if s.o.Hold == nil {
		t.Skip("Options.Hold not set: the store cannot hold a key from outside a decision")
	}
	t.Run("TokenBucket", s.contendedBucket)
	t.Run("SlidingWindow", s.contendedWindow)
}

// timed is one decision's call interval.
type timed struct {
	start, end time.Time
	r          driver.Result
	err        error
}

// decideDuringHold holds key, starts n decisions of check spread over the
// hold (one every holdFor/(n+1)), lets the key go after holdFor and
// returns each call's interval and the moment just before the release.
func (s *suite) decideDuringHold(t *testing.T, st driver.Store, checks func(i int) []driver.Check, n int) ([]timed, time.Time) {
	t.Helper()
	key := checks(0)[0]
	release := s.o.Hold(t, st, key.Key, key.Policy.Kind)
	held := time.Now()
	out := make([]timed, n)
	var wg sync.WaitGroup
	for i := range n {
		// Spread the starts over the hold, so that a store that read its
		// clock before waiting would stamp them with distinct stale times.
		time.Sleep(time.Until(held.Add(holdFor * time.Duration(i+1) / time.Duration(n+1))))
		wg.Add(1)
		go func() {
			defer wg.Done()
			cs := checks(i)
			res := make([]driver.Result, len(cs))
			out[i].start = time.Now()
			_, out[i].err = st.Decide(ctx, cs, res)
			out[i].end = time.Now()
			out[i].r = res[0]
		}()
	}
	time.Sleep(time.Until(held.Add(holdFor)))
	letGo := time.Now()
	release()
	wg.Wait()
	for i, d := range out {
		if d.err != nil {
			t.Fatalf("decision %d: %v", i, d.err)
		}
		if d.r.Allowed && d.end.Before(letGo) {
			t.Fatalf("decision %d was admitted at %v, before the hold ended at %v: Hold did not hold the key",
				i, d.end.Sub(held), letGo.Sub(held))
		}
	}
	return out, letGo
}

// contendedBucket: 24 decisions on a 1/s burst-1 bucket queue behind a
// held key; one is admitted when it is let go, and the next admission
// must come at least 1 s after that, not 1 s after the stale moment the
// first one started.
func (s *suite) contendedBucket(t *testing.T) {
	st := s.store(t)
	p := driver.Policy{Kind: driver.TokenBucket, Rate: 1, Burst: 1}
	c := driver.Check{Key: driver.Key{Name: "contended-bucket"}, Policy: p, Cost: 1}
	out, letGo := s.decideDuringHold(t, st, func(int) []driver.Check { return []driver.Check{c} }, 24)
	admitted := 0
	for _, d := range out {
		if d.r.Allowed {
			admitted++
		}
	}
	if admitted != 1 {
		t.Fatalf("%d of 24 decisions queued behind the hold were admitted, want 1 (burst 1)", admitted)
	}
	// The next admission, trying again after each retry-after.
	var next time.Time
	for range 100 {
		r := decide1(t, st, c)
		if r.Allowed {
			next = time.Now()
			break
		}
		time.Sleep(r.RetryAfter)
	}
	if next.IsZero() {
		t.Fatal("no admission after the held one")
	}
	gap := next.Sub(letGo)
	t.Logf("admissions: 1 at the release of a %v hold, the next %v after the release", holdFor, gap.Round(time.Millisecond))
	if gap < time.Second-clockSlack {
		t.Fatalf("a 1/s burst-1 bucket admitted twice %v apart: the decision that waited for the held key used a clock read before it waited", gap.Round(time.Millisecond))
	}
}

// contendedWindow: 24 goroutines each admit one unit on a window of 24
// while the key is held. Every entry must be stamped after the release,
// and the log must stay in time order: the retry-after of a cost-k check
// on the full window is when its k-th oldest entry leaves, so it cannot
// decrease as k grows.
func (s *suite) contendedWindow(t *testing.T) {
	st := s.store(t)
	const n = 24
	w := 10 * time.Second
	p := driver.Policy{Kind: driver.SlidingWindow, Limit: n, Window: w}
	key := driver.Key{Name: "contended-window"}
	out, letGo := s.decideDuringHold(t, st, func(int) []driver.Check { return []driver.Check{{Key: key, Policy: p, Cost: 1}} }, n)
	for i, d := range out {
		if !d.r.Allowed {
			t.Fatalf("decision %d denied on a window of %d with %d decisions: %+v", i, n, n, d.r)
		}
	}
	// One peek of n checks, costs 1..n, all answered at one instant.
	checks := make([]driver.Check, n)
	for k := range checks {
		checks[k] = driver.Check{Key: key, Policy: p, Cost: k + 1}
	}
	res := make([]driver.Result, n)
	if err := st.Peek(ctx, checks, res); err != nil {
		t.Fatal(err)
	}
	peeked := time.Now()
	disorder := 0
	var worst time.Duration
	for k := 1; k < n; k++ {
		if d := res[k-1].RetryAfter - res[k].RetryAfter; d > 0 {
			disorder++
			worst = max(worst, d)
		}
	}
	// The oldest entry was stamped after the release: it leaves the
	// window no earlier than letGo + w.
	stale := letGo.Add(w).Sub(peeked.Add(res[0].RetryAfter))
	t.Logf("%d admissions queued behind a %v hold: %d of %d log neighbours out of time order (worst %v); oldest entry stamped %v before the release",
		n, holdFor, disorder, n-1, worst.Round(time.Millisecond), max(stale, 0).Round(time.Millisecond))
	if disorder > 0 {
		t.Errorf("the window log is out of time order: %d of %d neighbours, worst by %v", disorder, n-1, worst.Round(time.Millisecond))
	}
	if stale > clockSlack {
		t.Errorf("the oldest entry was stamped %v before the held key was let go: a clock read before the wait", stale.Round(time.Millisecond))
	}
}
