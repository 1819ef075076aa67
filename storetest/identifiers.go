package storetest

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
)

// hostileBound is how long one call on a hostile key may take: identifiers
// come from clients, so none may make a store slow (a 1 MB key included).
const hostileBound = 2 * time.Second

// hostileIDs are identifiers a client can send: bytes a store may not hold
// as they are, separators, markup and lengths.
func hostileIDs() []string {
	mb := strings.Repeat("x", 1<<20)
	long := strings.Repeat("k", 300)
	return []string{
		"", "\x00", "a\x00b\x00", "\xff\xfe\xc3(", "\x80", "\xed\xa0\x80", // NUL, invalid UTF-8, a surrogate
		"{", "}", "{user}", ":", "a:b:", "%", "%3A%25", "\n", "line\r\nnext",
		"'); DELETE FROM rate_limiter_state; --", `\x00\\`, `"'`, "é 日本 🙂", " ",
		long, long + "\x00", long + "\xff", // past any short-key bound, alike in their first 300 bytes
		mb, mb + "y", "y" + mb[1:], // 1 MB, alike but for one byte
	}
}

// hostileKeys are distinct keys built from hostileIDs, in Key.Name and in
// Key.ID, with pairs that naive encodings would merge.
func hostileKeys() []driver.Key {
	var keys []driver.Key
	seen := map[driver.Key]bool{}
	add := func(k driver.Key) {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	for _, v := range hostileIDs() {
		add(driver.Key{Name: v})
		add(driver.Key{Name: "rule", ID: v})
		add(driver.Key{Name: v, ID: v})
	}
	for _, k := range []driver.Key{
		{Name: "a", ID: "b:c"}, {Name: "a:b", ID: "c"}, {Name: "a:b:c"},
		{Name: "", ID: "x"}, {Name: "x"}, {Name: ":x"}, {Name: "x:"},
		{Name: "a%3Ab"}, {Name: "a:b"}, {Name: "a%253Ab"},
	} {
		add(k)
	}
	return keys
}

// hostileIdentifiers checks that every byte sequence of any length is a
// valid, distinct key, in Key.Name and Key.ID, for every store call:
// decide, peek, extend, release and reset on a window, a bucket and a
// concurrency limit, and composites of hostile keys.
func (s *suite) hostileIdentifiers(t *testing.T) {
	st := s.store(t)
	keys := hostileKeys()
	win := driver.Policy{Kind: driver.SlidingWindow, Limit: 1, Window: time.Hour}
	tb := driver.Policy{Kind: driver.TokenBucket, Rate: 0.001, Burst: 1}
	conc := driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1, LeaseTTL: time.Hour}
	show := func(k driver.Key) string {
		q := func(s string) string {
			if len(s) > 40 {
				return strconv.Quote(s[:40]) + "...(" + strconv.Itoa(len(s)) + " bytes)"
			}
			return strconv.Quote(s)
		}
		return "{Name: " + q(k.Name) + ", ID: " + q(k.ID) + "}"
	}
	var slowest time.Duration
	var slowKey driver.Key
	timedCall := func(k driver.Key, what string, call func() error) {
		t.Helper()
		start := time.Now()
		err := call()
		el := time.Since(start)
		if el > slowest {
			slowest, slowKey = el, k
		}
		if err != nil {
			t.Fatalf("%s %s: %v", what, show(k), err)
		}
		if el > hostileBound {
			t.Fatalf("%s %s took %v, more than %v", what, show(k), el, hostileBound)
		}
	}
	decide := func(k driver.Key, p driver.Policy) driver.Result {
		t.Helper()
		res := make([]driver.Result, 1)
		timedCall(k, "Decide "+p.Kind.String(), func() error {
			_, err := st.Decide(ctx, []driver.Check{{Key: k, Policy: p, Cost: 1}}, res)
			return err
		})
		return res[0]
	}
	// Each key's first admission on a window of 1 passes: no two keys
	// share state. The second is denied: the key holds its state.
	for _, k := range keys {
		if r := decide(k, win); !r.Allowed || r.Remaining != 0 {
			t.Fatalf("first decision on %s: %+v, want allowed with 0 remaining (another key shares its state?)", show(k), r)
		}
	}
	for _, k := range keys {
		if r := decide(k, win); r.Allowed {
			t.Fatalf("second decision on %s allowed on a window of 1", show(k))
		}
		res := make([]driver.Result, 1)
		timedCall(k, "Peek", func() error { return st.Peek(ctx, []driver.Check{{Key: k, Policy: win, Cost: 1}}, res) })
		if res[0].Allowed || res[0].Remaining != 0 {
			t.Fatalf("peek on %s: %+v, want denied with 0 remaining", show(k), res[0])
		}
	}
	// Buckets of burst 1: the same, on the single-check bucket path.
	for _, k := range keys {
		if r := decide(k, tb); !r.Allowed {
			t.Fatalf("first bucket decision on %s denied: %+v", show(k), r)
		}
	}
	for _, k := range keys {
		if r := decide(k, tb); r.Allowed {
			t.Fatalf("second bucket decision on %s allowed with burst 1", show(k))
		}
	}
	// Leases: take, extend, refuse, release, take again.
	ext, _ := st.(driver.Extender)
	for _, k := range keys {
		r := decide(k, conc)
		if !r.Allowed || r.Lease == "" {
			t.Fatalf("lease on %s: %+v", show(k), r)
		}
		if ext != nil {
			var ok bool
			timedCall(k, "Extend", func() (err error) { ok, err = ext.Extend(ctx, k, r.Lease, 2*time.Hour); return err })
			if !ok {
				t.Fatalf("Extend of a live lease on %s reported it gone", show(k))
			}
		}
		if r2 := decide(k, conc); r2.Allowed {
			t.Fatalf("second lease on %s granted with max 1", show(k))
		}
		timedCall(k, "Release", func() error { return st.Release(ctx, k, r.Lease) })
		r3 := decide(k, conc)
		if !r3.Allowed {
			t.Fatalf("lease on %s denied after its release: %+v", show(k), r3)
		}
		timedCall(k, "Release", func() error { return st.Release(ctx, k, r3.Lease) })
	}
	// Composites of two hostile keys: all or nothing. Each window is full,
	// so every composite that includes one is denied and takes no lease.
	for i := 0; i+1 < len(keys); i++ {
		a, b := keys[i], keys[i+1]
		checks := []driver.Check{{Key: a, Policy: conc, Cost: 1}, {Key: b, Policy: win, Cost: 1}}
		res := make([]driver.Result, 2)
		var ok bool
		timedCall(a, "composite Decide", func() (err error) { ok, err = st.Decide(ctx, checks, res); return err })
		if ok || !res[0].Allowed || res[1].Allowed || res[0].Lease != "" {
			t.Fatalf("composite of %s (free slot) and %s (full window): ok=%v %+v", show(a), show(b), ok, res)
		}
	}
	// Reset frees exactly its own key.
	for i, k := range keys {
		timedCall(k, "Reset", func() error { return st.Reset(ctx, k) })
		if r := decide(k, win); !r.Allowed {
			t.Fatalf("window on %s still full after its Reset", show(k))
		}
		if i+1 < len(keys) {
			if r := decide(keys[i+1], win); r.Allowed {
				t.Fatalf("Reset of %s freed %s", show(k), show(keys[i+1]))
			}
		}
	}
	t.Logf("%d hostile keys; slowest call %v, on %s", len(keys), slowest.Round(time.Microsecond), show(slowKey))
}
