package pgstore_test

import (
	_ "embed"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/pgstore"
	"github.com/rate-sync/ratesync-go/storetest"
)

//go:embed testdata/schema_v1.sql
var schemaV1 string

// A version 1 table with rows (text keys, one window entry per unit, out
// of time order as the old clock left them) is upgraded in place by
// Migrate: every row keeps its state under the key it belonged to.
func TestUpgradeFromV1(t *testing.T) {
	p := pool(t, nil)
	schema := randomSchema()
	t.Cleanup(func() { p.Exec(bg, "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
	v1 := strings.NewReplacer("{{S}}", schema, "{{T}}", "rate_limiter_state", "{{UNLOGGED}}", "", "{{P}}", "rate_limiter_state_").Replace(schemaV1)
	if _, err := p.Exec(bg, v1+"CREATE TABLE "+schema+".rate_limiter_state_version (version int NOT NULL); INSERT INTO "+schema+".rate_limiter_state_version VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixNano()
	long := strings.Repeat("L", 1000) // a key version 1 could hold, longer than version 2 keeps as it is
	T := schema + ".rate_limiter_state"
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{"INSERT INTO " + T + " (key, kind, tat, expires_at) VALUES ($1, 1, $2, $2)", []any{"bucket:u1", now + int64(time.Hour)}},
		{"INSERT INTO " + T + " (key, kind, entries, expires_at) VALUES ($1, 2, $2, $3)", []any{"window:u1", []int64{now - 2e9, now - 3e9, now - 1e9}, now + int64(time.Hour)}},
		{"INSERT INTO " + T + " (key, kind, lease_ids, lease_exps, expires_at) VALUES ($1, 3, $2, $3, $4)", []any{"slots:u1", []string{"lease-1"}, []int64{now + int64(time.Hour)}, now + int64(time.Hour)}},
		{"INSERT INTO " + T + " (key, kind, entries, expires_at) VALUES ($1, 2, $2, $3)", []any{long, []int64{now - 1e9}, now + int64(time.Hour)}},
		{"INSERT INTO " + T + " (key, kind, tat, ok, expires_at) VALUES ($1, 1, $2, true, $2)", []any{`back\slash`, now + int64(time.Hour)}},
	} {
		if _, err := p.Exec(bg, q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	s := storeIn(t, p, schema, pgstore.WithAutoCreate(false))
	if err := s.Migrate(bg); err != nil {
		t.Fatal(err)
	}
	var v, overloads int
	if err := p.QueryRow(bg, "SELECT version FROM "+schema+".rate_limiter_state_version").Scan(&v); err != nil || v != pgstore.SchemaVersion {
		t.Fatalf("version %d, %v; want %d", v, err, pgstore.SchemaVersion)
	}
	p.QueryRow(bg, "SELECT count(*) FROM pg_proc WHERE pronamespace = $1::regnamespace AND proname = 'rate_limiter_state_decide'", schema).Scan(&overloads)
	if overloads != 1 {
		t.Fatalf("%d rate_limiter_state_decide functions after the upgrade, want 1 (the text-key version dropped)", overloads)
	}
	res := make([]driver.Result, 1)
	peek := func(k driver.Key, p driver.Policy) driver.Result {
		t.Helper()
		if err := s.Peek(bg, []driver.Check{{Key: k, Policy: p, Cost: 1}}, res); err != nil {
			t.Fatal(err)
		}
		return res[0]
	}
	tb := driver.Policy{Kind: driver.TokenBucket, Rate: 1, Burst: 1}
	win := driver.Policy{Kind: driver.SlidingWindow, Limit: 5, Window: time.Minute}
	for _, k := range []driver.Key{{Name: "bucket", ID: "u1"}, {Name: `back\slash`}} {
		if r := peek(k, tb); r.Allowed || r.RetryAfter < 59*time.Minute {
			t.Fatalf("bucket %v after the upgrade: %+v, want the hour-long wait it had", k, r)
		}
	}
	if r := peek(driver.Key{Name: "window", ID: "u1"}, win); r.Remaining != 2 {
		t.Fatalf("window after the upgrade: %+v, want 3 of 5 used", r)
	}
	// The oldest entry (3 s ago) now comes first: it leaves first.
	checks := []driver.Check{{Key: driver.Key{Name: "window", ID: "u1"}, Policy: win, Cost: 3}}
	if err := s.Peek(bg, checks, res); err != nil || res[0].RetryAfter > 57*time.Second+500*time.Millisecond {
		t.Fatalf("window cost 3 after the upgrade: %+v %v, want a retry when the oldest entry (3s ago) leaves", res[0], err)
	}
	if r := peek(driver.Key{Name: long}, win); r.Remaining != 4 {
		t.Fatalf("long key after the upgrade: %+v, want its 1 entry (the key hashed as version 2 stores it)", r)
	}
	slots := driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1, LeaseTTL: time.Minute}
	if r := peek(driver.Key{Name: "slots", ID: "u1"}, slots); r.Allowed {
		t.Fatalf("slots after the upgrade: %+v, want the held lease", r)
	}
	if err := s.Release(bg, driver.Key{Name: "slots", ID: "u1"}, "lease-1"); err != nil {
		t.Fatal(err)
	}
	if r := peek(driver.Key{Name: "slots", ID: "u1"}, slots); !r.Allowed {
		t.Fatalf("slots after releasing the upgraded lease: %+v", r)
	}
	// Migrate again: nothing to do.
	if err := s.Migrate(bg); err != nil {
		t.Fatal(err)
	}
}

// rowVersion returns the row's xmin and xmax: an update changes the first,
// a row lock the second.
func rowVersion(t *testing.T, p *pgxpool.Pool, schema string, key driver.Key, kind driver.Kind) string {
	t.Helper()
	var v string
	if err := p.QueryRow(bg, "SELECT xmin::text || '/' || xmax::text FROM "+schema+".rate_limiter_state WHERE key = $1 AND kind = $2", pgstore.StoredKey(key), int16(kind)).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// A denied decision writes nothing and locks nothing: the single-bucket
// statement and the function answer refusals on the committed row.
func TestDenialWritesNothing(t *testing.T) {
	p := pool(t, nil)
	schema := randomSchema()
	s := storeIn(t, p, schema)
	for _, c := range []driver.Check{
		{Key: driver.Key{Name: "bucket"}, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 0.01, Burst: 1}, Cost: 1},
		{Key: driver.Key{Name: "window"}, Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 1, Window: time.Hour}, Cost: 1},
		{Key: driver.Key{Name: "slots"}, Policy: driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1, LeaseTTL: time.Hour}, Cost: 1},
	} {
		res := make([]driver.Result, 1)
		if ok, err := s.Decide(bg, []driver.Check{c}, res); !ok || err != nil {
			t.Fatalf("%v: first decision %v %v", c.Key, ok, err)
		}
		before := rowVersion(t, p, schema, c.Key, c.Policy.Kind)
		for range 5 {
			if ok, err := s.Decide(bg, []driver.Check{c}, res); ok || err != nil {
				t.Fatalf("%v: decision on a full limit: %v %v", c.Key, ok, err)
			}
		}
		if after := rowVersion(t, p, schema, c.Key, c.Policy.Kind); after != before {
			t.Fatalf("%v: 5 denials changed the row's xmin/xmax from %s to %s: a denial wrote or locked it", c.Key, before, after)
		}
	}
}

// Extend keeps a lease alive past its TTL, on the server, and reports a
// lease that expired or was never held as gone.
func TestExtend(t *testing.T) {
	p := pool(t, nil)
	clk := storetest.NewClock()
	s := store(t, p, pgstore.WithClock(clk.Now))
	key := driver.Key{Name: "job", ID: "7"}
	c := driver.Check{Key: key, Policy: driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1, LeaseTTL: time.Second}, Cost: 1}
	res := make([]driver.Result, 1)
	decide := func() driver.Result {
		t.Helper()
		if _, err := s.Decide(bg, []driver.Check{c}, res); err != nil {
			t.Fatal(err)
		}
		return res[0]
	}
	r := decide()
	if !r.Allowed {
		t.Fatal("first lease denied")
	}
	clk.Advance(900 * time.Millisecond)
	if ok, err := s.Extend(bg, key, r.Lease, 2*time.Second); !ok || err != nil {
		t.Fatalf("extend a live lease: %v %v", ok, err)
	}
	clk.Advance(time.Second) // past the original expiry, within the extended one
	if r2 := decide(); r2.Allowed || r2.RetryAfter != time.Second {
		t.Fatalf("after the original TTL: %+v, want denied for 1s more (extended at 0.9s by 2s)", r2)
	}
	if ok, err := s.Extend(bg, key, "no-such-lease", time.Hour); ok || err != nil {
		t.Fatalf("extend an unknown lease: %v %v", ok, err)
	}
	clk.Advance(time.Second)
	if ok, err := s.Extend(bg, key, r.Lease, time.Hour); ok || err != nil {
		t.Fatalf("extend an expired lease: %v %v", ok, err)
	}
	if r3 := decide(); !r3.Allowed {
		t.Fatalf("after the extended TTL: %+v", r3)
	}
}

// The sweeper's DELETE finds idle rows through the expires_at index.
func TestSweepUsesIndex(t *testing.T) {
	p := pool(t, nil)
	schema := randomSchema()
	s := storeIn(t, p, schema)
	if err := s.Ping(bg); err != nil {
		t.Fatal(err)
	}
	tx, err := p.Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(bg)
	tx.Exec(bg, "SET LOCAL enable_seqscan = off")
	var plan strings.Builder
	rows, err := tx.Query(bg, "EXPLAIN SELECT ctid FROM "+schema+".rate_limiter_state WHERE expires_at <= 1 LIMIT 1000")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var line string
		rows.Scan(&line)
		plan.WriteString(line + "\n")
	}
	if !strings.Contains(plan.String(), "rate_limiter_state_expires") {
		t.Fatalf("the sweep's scan does not use the expires_at index:\n%s", plan.String())
	}
}

// A release on a key far longer than pg_notify's 8000-byte payload
// commits, and wakes the store's subscribers with the key.
func TestLongKeyRelease(t *testing.T) {
	p := pool(t, nil)
	s := store(t, p)
	key := driver.Key{Name: "upload", ID: strings.Repeat("u", 20000)}
	got := make(chan driver.Key, 1)
	unsub := s.SubscribeReleases(func(k driver.Key) {
		if k == key {
			select {
			case got <- k:
			default:
			}
		}
	})
	defer unsub()
	c := driver.Check{Key: key, Policy: driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 1, LeaseTTL: time.Hour}, Cost: 1}
	res := make([]driver.Result, 1)
	if ok, err := s.Decide(bg, []driver.Check{c}, res); !ok || err != nil {
		t.Fatal(ok, err)
	}
	lease := res[0].Lease
	// The listener may not be listening yet: release, and take and
	// release again, until a notification arrives (each release commits
	// or the next decision is denied).
	deadline := time.After(10 * time.Second)
	for {
		if err := s.Release(bg, key, lease); err != nil {
			t.Fatalf("release: %v", err)
		}
		if ok, err := s.Decide(bg, []driver.Check{c}, res); !ok || err != nil {
			t.Fatalf("decision after the release: %v %v (the release did not commit)", ok, err)
		}
		lease = res[0].Lease
		select {
		case <-got:
			s.Release(bg, key, lease)
			return
		case <-deadline:
			t.Fatal("no release notification for the long key")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// A window of 1e6 per minute takes a cost of 1e6 as one entry: fast, and a
// row of a few hundred bytes.
func TestCostMillion(t *testing.T) {
	p := pool(t, nil)
	schema := randomSchema()
	s := storeIn(t, p, schema)
	if err := s.Ping(bg); err != nil {
		t.Fatal(err)
	}
	w := driver.Policy{Kind: driver.SlidingWindow, Limit: 1_000_000, Window: time.Minute}
	res := make([]driver.Result, 1)
	start := time.Now()
	ok, err := s.Decide(bg, []driver.Check{{Key: driver.Key{Name: "bulk"}, Policy: w, Cost: 1_000_000}}, res)
	el := time.Since(start)
	if !ok || err != nil || res[0].Remaining != 0 {
		t.Fatalf("cost 1e6 on 1e6 per minute: %v %v %+v", ok, err, res[0])
	}
	if ok, _ := s.Decide(bg, []driver.Check{{Key: driver.Key{Name: "bulk"}, Policy: w, Cost: 1}}, res); ok || res[0].RetryAfter < 59*time.Second {
		t.Fatalf("one more: %+v, want denied for about a minute", res[0])
	}
	var size int
	p.QueryRow(bg, "SELECT pg_column_size(t.*) FROM "+schema+".rate_limiter_state t").Scan(&size)
	t.Logf("cost 1e6: decided in %v, row of %d bytes", el, size)
	if el > 50*time.Millisecond {
		t.Errorf("cost 1e6 took %v", el)
	}
	if size > 500 {
		t.Errorf("row of %d bytes for one admission", size)
	}
}
