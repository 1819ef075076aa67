package redisstore_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/redisstore"
	"github.com/rate-sync/ratesync-go/storetest"
	"github.com/redis/go-redis/v9"
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
	// The second part has more room than the first, so the first is
	// decided first (the tightest group goes first) and passes; then the
	// second, taken whole by another client after the peeks, denies.
	second := driver.Check{Key: driver.Key{Name: "undo-b"}, Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 10, Window: time.Hour}, Cost: 1}
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
					all := b
					all.Cost = 10
					if !decide(t, all) { // another client takes the second part
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

// colocatedLogin returns a registry whose login_ip and login_account rules
// are co-located on a cluster store, the composite of the two, and a count
// of the two-phase decisions the store made.
func colocatedLogin(t *testing.T, ip, account ratesync.Rule) (*ratesync.Registry, *ratesync.Composite, *atomic.Int64) {
	t.Helper()
	var twoPhase atomic.Int64
	s := store(t, clusterClient(t), redisstore.WithColocation("login_ip", "login_account"),
		redisstore.WithBetweenPhases(func(phase int) {
			if phase == 1 {
				twoPhase.Add(1)
			}
		}))
	r := registryOn(t, s, map[string]ratesync.Rule{"login_ip": ip, "login_account": account})
	comp, err := r.Composite(map[string]string{"ip": "login_ip", "account": "login_account"}, ratesync.AllMustPass)
	if err != nil {
		t.Fatal(err)
	}
	return r, comp, &twoPhase
}

// On Cluster, co-located rules make a composite one script call: hammered
// while its per-IP part denies, the per-account part is never seen
// consumed, and every admission consumes it exactly once.
func TestColocatedCompositeHammer(t *testing.T) {
	const goroutines = 32
	t.Run("per-IP part exhausted", func(t *testing.T) {
		r, comp, twoPhase := colocatedLogin(t,
			ratesync.Rule{Algorithm: ratesync.SlidingWindow, Limit: 5, Window: time.Minute},
			ratesync.Rule{Algorithm: ratesync.SlidingWindow, Limit: 100, Window: time.Minute})
		for i := range 5 {
			if res, err := comp.Check(bg, map[string]string{"ip": "203.0.113.7", "account": "warmup-" + strconv.Itoa(i)}); err != nil || !res.Allowed {
				t.Fatal(res, err)
			}
		}
		alice, _ := r.For("login_account", "alice")
		var wrong, seen, looks atomic.Int64
		done := make(chan struct{})
		observed := make(chan struct{})
		go func() {
			defer close(observed)
			for {
				select {
				case <-done:
					return
				default:
				}
				st, err := alice.State(bg)
				if err != nil {
					t.Error(err)
					return
				}
				looks.Add(1)
				if st.CurrentUsage != 0 {
					seen.Add(1)
				}
			}
		}()
		var wg sync.WaitGroup
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 50 {
					res, err := comp.Check(bg, map[string]string{"ip": "203.0.113.7", "account": "alice"})
					if err != nil || res.Allowed || res.TriggeredBy != "ip" {
						wrong.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		close(done)
		<-observed
		t.Logf("%d composites denied by the IP part; the account part looked at %d times", goroutines*50, looks.Load())
		if wrong.Load() != 0 {
			t.Fatalf("%d composites were allowed, failed or blamed on the account part", wrong.Load())
		}
		if seen.Load() != 0 {
			t.Fatalf("the account part was seen consumed %d of %d times", seen.Load(), looks.Load())
		}
		if st, _ := alice.State(bg); st.CurrentUsage != 0 {
			t.Fatalf("the account part ends with %d used, want 0", st.CurrentUsage)
		}
		if twoPhase.Load() != 0 {
			t.Fatalf("%d composites took the two-phase path", twoPhase.Load())
		}
	})
	t.Run("per-IP part at its limit", func(t *testing.T) {
		// The IP part admits one request per 2 ms, so composites race for
		// each of its tokens while the account part always has room.
		r, comp, twoPhase := colocatedLogin(t,
			ratesync.Rule{RatePerSecond: 500},
			ratesync.Rule{Algorithm: ratesync.SlidingWindow, Limit: 1_000_000, Window: time.Hour})
		var admitted, failed atomic.Int64
		var wg sync.WaitGroup
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 100 {
					res, err := comp.Check(bg, map[string]string{"ip": "198.51.100.1", "account": "bob"})
					switch {
					case err != nil:
						failed.Add(1)
					case res.Allowed:
						admitted.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		bob, _ := r.For("login_account", "bob")
		st, err := bob.State(bg)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d composites: %d admitted, the account part used %d", goroutines*100, admitted.Load(), st.CurrentUsage)
		if failed.Load() != 0 {
			t.Fatalf("%d composites failed", failed.Load())
		}
		if int64(st.CurrentUsage) != admitted.Load() {
			t.Fatalf("the account part used %d for %d admitted composites", st.CurrentUsage, admitted.Load())
		}
		if twoPhase.Load() != 0 {
			t.Fatalf("%d composites took the two-phase path", twoPhase.Load())
		}
	})
}

// embeddedCluster is a Cluster client in a wrapper that embeds it: its
// methods, ForEachMaster included, are the Cluster client's.
type embeddedCluster struct{ *redis.ClusterClient }

// hiddenCluster is a Cluster client behind a wrapper that has only the
// methods of redisstore.Client.
type hiddenCluster struct{ c *redis.ClusterClient }

func (h hiddenCluster) Process(ctx context.Context, cmd redis.Cmder) error {
	return h.c.Process(ctx, cmd)
}
func (h hiddenCluster) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	return h.c.ScriptLoad(ctx, script)
}
func (h hiddenCluster) Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	return h.c.Pipelined(ctx, fn)
}
func (h hiddenCluster) Subscribe(ctx context.Context, channels ...string) *redis.PubSub {
	return h.c.Subscribe(ctx, channels...)
}
func (h hiddenCluster) Scan(ctx context.Context, cursor uint64, match string, count int64) *redis.ScanCmd {
	return h.c.Scan(ctx, cursor, match, count)
}
func (h hiddenCluster) Unlink(ctx context.Context, keys ...string) *redis.IntCmd {
	return h.c.Unlink(ctx, keys...)
}
func (h hiddenCluster) Ping(ctx context.Context) *redis.StatusCmd { return h.c.Ping(ctx) }

// A wrapped Cluster client works: composites across slots are decided
// all-or-nothing, and decisions on many keys that arrive together (batched
// on a single server) are answered, whether the wrapper shows the Cluster
// client's methods or hides them.
func TestWrappedClusterClient(t *testing.T) {
	cc := clusterClient(t)
	for _, tt := range []struct {
		name string
		c    redisstore.Client
	}{
		{"embedding", embeddedCluster{cc}},
		{"hiding", hiddenCluster{cc}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The keys are deleted at the end through the Cluster client
			// itself: a wrapper that hides ForEachMaster gives ResetAll one
			// node only.
			prefix := randomPrefix(t)
			store(t, cc, redisstore.WithKeyPrefix(prefix))
			s, err := redisstore.New(tt.c, redisstore.WithKeyPrefix(prefix))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			p := driver.Policy{Kind: driver.SlidingWindow, Limit: 2, Window: time.Minute}
			a := driver.Check{Key: driver.Key{Name: "wrap-a"}, Policy: p, Cost: 1}
			b := driver.Check{Key: driver.Key{Name: "wrap-b"}, Policy: p, Cost: 1}
			res := make([]driver.Result, 2)
			for i := range 2 {
				if ok, err := s.Decide(bg, []driver.Check{a, b}, res); err != nil || !ok {
					t.Fatalf("composite %d: ok=%v err=%v", i, ok, err)
				}
			}
			c := driver.Check{Key: driver.Key{Name: "wrap-c"}, Policy: p, Cost: 1}
			if ok, err := s.Decide(bg, []driver.Check{c, b}, res); err != nil || ok {
				t.Fatalf("composite with b exhausted: ok=%v err=%v", ok, err)
			}
			if err := s.Peek(bg, []driver.Check{c, a}, res); err != nil || res[0].Remaining != 2 || res[1].Remaining != 0 {
				t.Fatalf("peek after the denied composite: %v %+v, want c untouched and a exhausted", err, res)
			}
			var wg sync.WaitGroup
			var bad atomic.Int64
			for g := range 64 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ch := driver.Check{Key: driver.Key{Name: "wrap-many", ID: strconv.Itoa(g)}, Policy: p, Cost: 1}
					r := make([]driver.Result, 1)
					for i := range 3 {
						ok, err := s.Decide(bg, []driver.Check{ch}, r)
						if err != nil || ok != (i < 2) {
							bad.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			if bad.Load() != 0 {
				t.Fatalf("%d of 192 decisions on 64 keys failed or got a wrong answer", bad.Load())
			}
		})
	}
}

// Braces in an identifier do not move its keys: the hash tag is the whole
// limiter key whatever it holds (or, for a co-located rule, the group's),
// so a client cannot gather its keys in one slot.
func TestIdentifierBracesKeepSlots(t *testing.T) {
	c := clusterClient(t)
	s := store(t, c, redisstore.WithColocation("grouped", "other"))
	slot := func(key string) int64 {
		n, err := c.ClusterKeySlot(bg, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	groupSlot := slot("{@grouped}")
	for _, form := range []string{"}%d", "x}%d", "{a}%d", "%d{", "{}%d}", "}{%d"} {
		slots := map[int64]bool{}
		for i := range 100 {
			id := fmt.Sprintf(form, i)
			k := driver.Key{Name: "r", ID: id}
			tb := slot(redisstore.KeyOf(s, k, driver.TokenBucket))
			if sw, cc := slot(redisstore.KeyOf(s, k, driver.SlidingWindow)), slot(redisstore.KeyOf(s, k, driver.Concurrency)); sw != tb || cc != tb {
				t.Fatalf("id %q: the policies' keys are in slots %d, %d, %d", id, tb, sw, cc)
			}
			slots[tb] = true
			if g := slot(redisstore.KeyOf(s, driver.Key{Name: "grouped", ID: id}, driver.SlidingWindow)); g != groupSlot {
				t.Fatalf("id %q of a co-located rule: slot %d, want the group's %d", id, g, groupSlot)
			}
		}
		if len(slots) < 90 {
			t.Errorf("ids of the form %q: 100 ids in %d slots, want them spread (at least 90)", form, len(slots))
		}
	}
}

// A key prefix may hold a whole hash tag (every key in one slot), but not
// a '{' that the keys' own tags would close.
func TestKeyPrefixBraces(t *testing.T) {
	c := client(t)
	for _, p := range []string{"{rl}", "app:{rl}:x", "a}b"} {
		s, err := redisstore.New(c, redisstore.WithKeyPrefix(p))
		if err != nil {
			t.Errorf("prefix %q: %v", p, err)
			continue
		}
		s.Close()
	}
	for _, p := range []string{"a{b", "a{}b", "{"} {
		if s, err := redisstore.New(c, redisstore.WithKeyPrefix(p)); err == nil {
			s.Close()
			t.Errorf("prefix %q accepted", p)
		}
	}
	if s, err := redisstore.New(c, redisstore.WithColocation("a", "b"), redisstore.WithColocation("b", "c")); err == nil {
		s.Close()
		t.Error("a rule in two co-location groups accepted")
	}
}
