package pgstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/internal/testenv"
	"github.com/rate-sync/ratesync-go/pgstore"
	"github.com/rate-sync/ratesync-go/storetest"
)

var leakOptions = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
	goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).triggerHealthCheck.func1"),
}

// TestMain fails the run when a test left a goroutine or one of the
// schemas it created behind.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if left := leftSchemas(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: tests left schemas behind: %v\n", left)
			code = 1
		}
	}
	if code == 0 {
		if err := goleak.Find(leakOptions...); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	schemasMu sync.Mutex
	schemas   []string // created by this process's tests
)

func randomSchema() string {
	var b [5]byte
	rand.Read(b[:])
	s := "rstest_" + hex.EncodeToString(b[:])
	schemasMu.Lock()
	schemas = append(schemas, s)
	schemasMu.Unlock()
	return s
}

// leftSchemas returns the schemas of randomSchema that still exist.
func leftSchemas() []string {
	url := os.Getenv("RATESYNC_TEST_POSTGRES_URL")
	schemasMu.Lock()
	names := schemas
	schemasMu.Unlock()
	if url == "" || len(names) == 0 {
		return nil
	}
	c, err := pgx.Connect(bg, url)
	if err != nil {
		return []string{"(cannot check: " + err.Error() + ")"}
	}
	defer c.Close(bg)
	var left []string
	if err := c.QueryRow(bg, "SELECT coalesce(array_agg(nspname::text), '{}') FROM pg_namespace WHERE nspname = ANY($1)", names).Scan(&left); err != nil {
		return []string{"(cannot check: " + err.Error() + ")"}
	}
	return left
}

var bg = context.Background()

// queryCounter counts the statements sent on a pool.
type queryCounter struct{ n atomic.Int64 }

func (q *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if !strings.HasPrefix(d.SQL, "LISTEN") { // the release listener's own connection
		q.n.Add(1)
	}
	return ctx
}
func (q *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func pool(t testing.TB, tracer pgx.QueryTracer) *pgxpool.Pool {
	t.Helper()
	url := testenv.PostgresURL(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 40
	if tracer != nil {
		cfg.ConnConfig.Tracer = tracer
	}
	p, err := pgxpool.NewWithConfig(bg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// store returns a store in a schema of its own, dropped when the test ends.
func store(t testing.TB, p *pgxpool.Pool, opts ...pgstore.Option) *pgstore.Store {
	t.Helper()
	return storeIn(t, p, randomSchema(), opts...)
}

// storeIn returns a store in schema, dropped when the test ends.
func storeIn(t testing.TB, p *pgxpool.Pool, schema string, opts ...pgstore.Option) *pgstore.Store {
	t.Helper()
	s, err := pgstore.New(p, append([]pgstore.Option{pgstore.WithSchema(schema)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		if _, err := p.Exec(bg, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) { conformance(t) }

// TestConformanceBatched holds the batch statement to the same answers:
// every lone token-bucket decision goes through a batch.
func TestConformanceBatched(t *testing.T) { conformance(t, pgstore.WithAllBatched()) }

func conformance(t *testing.T, opts ...pgstore.Option) {
	p := pool(t, nil)
	storetest.Run(t, storetest.Options{
		New: func(t *testing.T) driver.Store { return store(t, p, opts...) },
		NewWithClock: func(t *testing.T, now func() time.Time) driver.Store {
			return store(t, p, append(opts, pgstore.WithClock(now))...)
		},
		// One hot row serialises its decisions on the row lock (each holds
		// it until its commit), so the hammer tests run smaller here.
		Scale: 0.25,
		Hold: func(t *testing.T, st driver.Store, key driver.Key, kind driver.Kind) func() {
			release, err := pgstore.Hold(bg, st.(*pgstore.Store), key, kind)
			if err != nil {
				t.Fatal(err)
			}
			return func() {
				if err := release(); err != nil {
					t.Error(err)
				}
			}
		},
	})
}

// Every decision is one statement, whatever it combines.
func TestOneRoundTripPerDecision(t *testing.T) {
	var qc queryCounter
	p := pool(t, &qc)
	s := store(t, p)
	if err := s.Ping(bg); err != nil { // creates the schema
		t.Fatal(err)
	}
	r := ratesync.NewRegistry()
	defer r.Close()
	r.AddStore("pg", s, ratesync.WithCallTimeout(10*time.Second)) // count the store's own calls only
	for name, rule := range map[string]ratesync.Rule{
		"bucket":   {RatePerSecond: 1000, Burst: 1000},
		"combined": {Algorithm: ratesync.SlidingWindow, Limit: 1000, Window: time.Minute, MaxConcurrent: 1000},
		"ip":       {Algorithm: ratesync.SlidingWindow, Limit: 1000, Window: time.Minute},
		"account":  {Algorithm: ratesync.SlidingWindow, Limit: 1000, Window: time.Minute},
	} {
		rule.Store = "pg"
		if err := r.ConfigureLimiter(name, rule); err != nil {
			t.Fatal(err)
		}
	}
	comp, _ := r.Composite(map[string]string{"ip": "ip", "account": "account"}, ratesync.AllMustPass)
	bucket, _ := r.Get("bucket")
	combined, _ := r.For("combined", "u1")
	for name, run := range map[string]func() error{
		"token bucket": func() error { _, err := bucket.Try(bg); return err },
		"window+lease": func() error {
			d, err := combined.Try(bg)
			if err == nil {
				qc.n.Add(-1) // the release below is its own statement
				d.Lease.Release(bg)
			}
			return err
		},
		"composite": func() error {
			_, err := comp.Check(bg, map[string]string{"ip": "10.0.0.1", "account": "bob"})
			return err
		},
	} {
		before := qc.n.Load()
		for range 20 {
			if err := run(); err != nil {
				t.Fatal(err)
			}
		}
		if got := qc.n.Load() - before; got != 20 {
			t.Errorf("%s: %d statements for 20 decisions, want 20", name, got)
		} else {
			t.Logf("%s: 20 decisions, 20 statements", name)
		}
	}
}

// Many processes' stores can create the schema at once.
func TestConcurrentMigrations(t *testing.T) {
	p := pool(t, nil)
	schema := randomSchema()
	t.Cleanup(func() { p.Exec(bg, "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, _ := pgstore.New(p, pgstore.WithSchema(schema))
			defer s.Close()
			errs <- s.Migrate(bg)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var v int
	if err := p.QueryRow(bg, "SELECT version FROM "+schema+".rate_limiter_state_version").Scan(&v); err != nil || v != pgstore.SchemaVersion {
		t.Fatalf("version %d, %v", v, err)
	}
}

// Without auto-create, a missing schema is a clear error.
func TestNoAutoCreate(t *testing.T) {
	p := pool(t, nil)
	s := store(t, p, pgstore.WithAutoCreate(false))
	res := make([]driver.Result, 1)
	_, err := s.Decide(bg, []driver.Check{{Key: driver.Key{Name: "x"}, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 1, Burst: 1}, Cost: 1}}, res)
	if err == nil {
		t.Fatal("decided without a schema")
	}
	t.Log(err)
	if err := s.Migrate(bg); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Decide(bg, []driver.Check{{Key: driver.Key{Name: "x"}, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 1, Burst: 1}, Cost: 1}}, res); !ok || err != nil {
		t.Fatal(ok, err)
	}
}

// Idle rows are swept, at most 2^36 ns (about 69 s) after they idled;
// rows in use are not.
func TestSweep(t *testing.T) {
	p := pool(t, nil)
	schema := randomSchema()
	clk := storetest.NewClock()
	s := storeIn(t, p, schema, pgstore.WithClock(clk.Now))
	res := make([]driver.Result, 1)
	short := driver.Check{Key: driver.Key{Name: "short"}, Policy: driver.Policy{Kind: driver.SlidingWindow, Limit: 5, Window: 50 * time.Millisecond}, Cost: 1}
	long := driver.Check{Key: driver.Key{Name: "long"}, Policy: driver.Policy{Kind: driver.Concurrency, MaxConcurrent: 5, LeaseTTL: time.Hour}, Cost: 1}
	for _, c := range []driver.Check{short, long} {
		if ok, err := s.Decide(bg, []driver.Check{c}, res); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if n, err := s.Sweep(bg); n != 0 || err != nil {
		t.Fatalf("sweep of rows in use deleted %d, %v", n, err)
	}
	clk.Advance(1<<36 + 1)
	if n, err := s.Sweep(bg); n != 1 || err != nil {
		t.Fatalf("sweep 69s later deleted %d rows, %v; want the idle window's", n, err)
	}
	var rows int
	p.QueryRow(bg, "SELECT count(*) FROM "+schema+".rate_limiter_state").Scan(&rows)
	if rows != 1 {
		t.Fatalf("%d rows left, want the held lease's row", rows)
	}
}

// The engine opens from TOML, shares one pool, and decides.
func TestEngineFromTOML(t *testing.T) {
	url := testenv.PostgresURL(t)
	schema := randomSchema()
	p := pool(t, nil)
	t.Cleanup(func() { p.Exec(bg, "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
	cfg, err := ratesync.ParseConfig("test.toml", []byte(`
[stores.db]
engine = "postgres"
url = "`+url+`"
schema_name = "`+schema+`"
pool_max_size = 4
call_timeout_seconds = 10 # the first decision creates the schema

[limiters.api]
store = "db"
algorithm = "sliding_window"
limit = 2
window_seconds = 60
`))
	if err != nil {
		t.Fatal(err)
	}
	r := ratesync.NewRegistry()
	defer r.Close()
	if err := r.ApplyConfig(cfg); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, true, false} {
		l, _ := r.For("api", "user-7")
		d, err := l.Try(bg)
		if err != nil || d.Allowed != want {
			t.Fatalf("try %d: %+v %v, want allowed=%v", i, d, err, want)
		}
	}
	bad, _ := ratesync.ParseConfig("bad.toml", []byte("[stores.db]\nengine = \"postgres\"\nurl = \""+url+"\"\ntiming_margin_ms = 10.0\n"))
	if err := ratesync.NewRegistry().ApplyConfig(bad); err == nil || !strings.Contains(err.Error(), "timing_margin_ms") {
		t.Fatalf("timing_margin_ms: %v", err)
	}
}

// All waiters of a store share one LISTEN connection, and a release wakes
// a waiter long before the lease would expire.
func TestReleaseWakesWaitersThroughOneListener(t *testing.T) {
	p := pool(t, nil)
	schema := randomSchema()
	channel := schema + ".rate_limiter_state_released"
	storetest.ReleaseWakesWaiters(t, storetest.WakeOptions{
		Store: storeIn(t, p, schema),
		Listeners: func(t *testing.T) int {
			var n int
			if err := p.QueryRow(bg, "SELECT count(*) FROM pg_stat_activity WHERE query = $1", `LISTEN "`+channel+`"`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		},
		What:   "LISTEN connections for " + channel,
		Within: 10 * time.Second,
	})
}

// The network bounds are read from the store's table, reach the
// connections, and bad values are errors that name the key.
func TestEngineBounds(t *testing.T) {
	url := testenv.PostgresURL(t)
	schema := randomSchema()
	p := pool(t, nil)
	t.Cleanup(func() { p.Exec(bg, "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
	cfg, err := ratesync.ParseConfig("bounds.toml", []byte(`
[stores.db]
engine = "postgres"
url = "`+url+`"
schema_name = "`+schema+`"
connect_timeout_seconds = 1.5
keepalive_seconds = 20
tcp_user_timeout_seconds = 30
statement_timeout_seconds = 0.75
batch_workers = 3
batch_size = 16
`))
	if err != nil {
		t.Fatal(err)
	}
	s, err := pgstore.FromConfig(cfg.Stores[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := pgstore.Setting(bg, s, "statement_timeout"); err != nil || v != "750ms" {
		t.Fatalf("statement_timeout on the store's connections = %q, %v; want 750ms", v, err)
	}
	if w, n := pgstore.Batching(s); w != 3 || n != 16 {
		t.Errorf("batching %d workers of %d decisions, want 3 of 16", w, n)
	}
	for key, bad := range map[string]string{
		"connect_timeout_seconds":   "0",
		"keepalive_seconds":         "-1",
		"tcp_user_timeout_seconds":  "-1",
		"statement_timeout_seconds": "0",
		"batch_workers":             "-1",
		"batch_size":                "-1",
	} {
		cfg, err := ratesync.ParseConfig("bad.toml", []byte("[stores.db]\nengine = \"postgres\"\nurl = \""+url+"\"\n"+key+" = "+bad+"\n"))
		if err == nil {
			_, err = pgstore.FromConfig(cfg.Stores[0])
		}
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s = %s: %v, want an error naming the key", key, bad, err)
		}
	}
}

// TestFirstMigrationOutlivesTheCallTimeout: with auto_create, the first
// call on a new schema starts its migration, which may take longer than
// the call timeout (another process holds the migration lock here). The
// migration must not be cancelled with the call that started it: it was,
// and each call then started it again and was cut again. It goes on in
// the background and the schema is created without another call. (The
// store is used alone: through a registry, its release listener also
// migrates, in the background.)
func TestFirstMigrationOutlivesTheCallTimeout(t *testing.T) {
	p := pool(t, nil)
	schema := randomSchema()
	s := storeIn(t, p, schema) // auto-create on, nothing migrated yet
	// Another process migrating the same schema holds the lock.
	holder, err := p.Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(bg)
	if _, err := holder.Exec(bg, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "ratesync:"+schema+"."+pgstore.DefaultTable); err != nil {
		t.Fatal(err)
	}
	checks := []driver.Check{{Key: driver.Key{Name: "api"}, Policy: driver.Policy{Kind: driver.TokenBucket, Rate: 1000, Burst: 1000}, Cost: 1}}
	results := make([]driver.Result, 1)
	cctx, cancel := context.WithTimeout(bg, 50*time.Millisecond) // a call timeout
	_, err = s.Decide(cctx, checks, results)
	cancel()
	if err == nil {
		t.Fatal("a decision while another process holds the migration lock did not wait for it")
	}
	if err := holder.Rollback(bg); err != nil { // the other process is done
		t.Fatal(err)
	}
	// No more calls: the migration the first call started finishes alone.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var v int
		err := p.QueryRow(bg, "SELECT version FROM "+schema+"."+pgstore.DefaultTable+"_version").Scan(&v)
		if err == nil && v == pgstore.SchemaVersion {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the schema was not created within 10 s of the lock's release: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // polling the database, bounded
	}
	if ok, err := s.Decide(bg, checks, results); err != nil || !ok {
		t.Fatalf("after the migration: %v %v", ok, err)
	}
}
