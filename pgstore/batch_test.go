package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/internal/testenv"
	"github.com/rate-sync/ratesync-go/pgstore"
)

// batchCounter counts the batch statements sent on a pool and the
// decisions they carried.
type batchCounter struct{ statements, decisions, largest atomic.Int64 }

func (b *batchCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.HasPrefix(d.SQL, "WITH r AS MATERIALIZED") && len(d.Args) > 0 {
		if keys, ok := d.Args[0].([][]byte); ok {
			n := int64(len(keys))
			b.statements.Add(1)
			b.decisions.Add(n)
			for {
				l := b.largest.Load()
				if n <= l || b.largest.CompareAndSwap(l, n) {
					break
				}
			}
		}
	}
	return ctx
}
func (b *batchCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// Under load, lone bucket decisions share statements, and every key still
// admits exactly its burst: two rules (batched apart), 200 keys, 48
// goroutines each deciding on every key.
func TestBatchesUnderLoad(t *testing.T) {
	var bc batchCounter
	p := pool(t, &bc)
	s := store(t, p)
	if err := s.Ping(bg); err != nil {
		t.Fatal(err)
	}
	rules := []driver.Policy{
		{Kind: driver.TokenBucket, Rate: 0.001, Burst: 5},
		{Kind: driver.TokenBucket, Rate: 0.001, Burst: 3},
	}
	const nkeys, goroutines = 200, 48
	var admitted [nkeys]atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Int64
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := make([]driver.Result, 1)
			for i := range nkeys {
				k := (i + g*7) % nkeys
				c := driver.Check{Key: driver.Key{Name: fmt.Sprint("r", k%2), ID: fmt.Sprint(k)}, Policy: rules[k%2], Cost: 1}
				ok, err := s.Decide(bg, []driver.Check{c}, res)
				switch {
				case err != nil:
					failed.Add(1)
					t.Error(err)
				case ok:
					admitted[k].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.FailNow()
	}
	for k := range nkeys {
		if got, want := admitted[k].Load(), int64(rules[k%2].Burst); got != want {
			t.Errorf("key %d: %d admitted, want its burst %d", k, got, want)
		}
	}
	st, d := bc.statements.Load(), bc.decisions.Load()
	t.Logf("%d decisions: %d in %d batch statements (largest %d)", nkeys*goroutines, d, st, bc.largest.Load())
	if bc.largest.Load() < 2 {
		t.Errorf("no batch carried more than one decision (%d statements, %d decisions)", st, d)
	}
}

// The planner keeps one generic plan for each bucket statement: a plan
// made anew per execution costs more than the decisions it makes.
func TestBucketStatementsPlannedOnce(t *testing.T) {
	for _, c := range []struct {
		name, prefix string
		opts         []pgstore.Option
	}{
		{"statement", "WITH c AS MATERIALIZED", nil},
		{"batch", "WITH r AS MATERIALIZED", []pgstore.Option{pgstore.WithAllBatched()}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := pgxpool.ParseConfig(testenv.PostgresURL(t))
			if err != nil {
				t.Fatal(err)
			}
			cfg.MaxConns = 1 // one connection: one set of prepared statements
			p, err := pgxpool.NewWithConfig(bg, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Close)
			s := store(t, p, c.opts...)
			pol := driver.Policy{Kind: driver.TokenBucket, Rate: 100, Burst: 10}
			res := make([]driver.Result, 1)
			for i := range 10 {
				if _, err := s.Decide(bg, []driver.Check{{Key: driver.Key{Name: "plan", ID: fmt.Sprint(i)}, Policy: pol, Cost: 1}}, res); err != nil {
					t.Fatal(err)
				}
			}
			var generic, custom int64
			err = p.QueryRow(bg, "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE $1 || '%'", c.prefix).Scan(&generic, &custom)
			if err != nil {
				t.Fatal(err)
			}
			if custom > 5 || generic < 5 {
				t.Errorf("10 executions: %d generic plans, %d custom plans; want the generic plan after the first 5", generic, custom)
			}
		})
	}
}

// A row held for long (here by another transaction for 1.5 s) holds up
// the decisions on that row only: a batch gives up waiting for it after
// its lock timeout and its decisions are made alone, so the other keys of
// the batch are answered at once, and the held key's decision waits for
// the row and decides on the clock read after it.
func TestBatchHeldRowHoldsUpOnlyItsKey(t *testing.T) {
	p := pool(t, nil)
	s := store(t, p, pgstore.WithAllBatched(), pgstore.WithBatching(1, 64))
	pol := driver.Policy{Kind: driver.TokenBucket, Rate: 1, Burst: 1}
	held := driver.Key{Name: "held"}
	if err := s.Ping(bg); err != nil {
		t.Fatal(err)
	}
	release, err := pgstore.Hold(bg, s, held, driver.TokenBucket)
	if err != nil {
		t.Fatal(err)
	}
	const hold = 1500 * time.Millisecond
	start := time.Now()
	var released time.Time
	var wg sync.WaitGroup
	took := make([]time.Duration, 21)
	results := make([]driver.Result, 21)
	for i := range 21 {
		key := held
		if i > 0 {
			key = driver.Key{Name: "free", ID: fmt.Sprint(i)}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := results[i : i+1]
			if _, err := s.Decide(bg, []driver.Check{{Key: key, Policy: pol, Cost: 1}}, res); err != nil {
				t.Error(err)
			}
			took[i] = time.Since(start)
		}()
		if i == 0 {
			time.Sleep(20 * time.Millisecond) // the held key's decision goes first
		}
	}
	time.Sleep(time.Until(start.Add(hold)))
	released = time.Now()
	if err := release(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i := 1; i < 21; i++ {
		if !results[i].Allowed {
			t.Errorf("free key %d denied", i)
		}
		if took[i] > hold/3 {
			t.Errorf("free key %d answered after %v, while another key was held for %v", i, took[i], hold)
		}
	}
	if !results[0].Allowed || took[0] < released.Sub(start) {
		t.Errorf("held key: allowed %v after %v, want admitted after the hold ended at %v", results[0].Allowed, took[0], released.Sub(start))
	}
}

// Close answers the decisions in flight and queued: none hangs, each gets
// an answer or ErrClosed (unavailable), and no goroutine is left (TestMain).
func TestCloseDuringBatches(t *testing.T) {
	p := pool(t, nil)
	s := store(t, p, pgstore.WithAllBatched())
	if err := s.Ping(bg); err != nil {
		t.Fatal(err)
	}
	pol := driver.Policy{Kind: driver.TokenBucket, Rate: 1000, Burst: 1000}
	var wg sync.WaitGroup
	var answered, closed atomic.Int64
	stop := make(chan struct{})
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := make([]driver.Result, 1)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, err := s.Decide(bg, []driver.Check{{Key: driver.Key{Name: "c", ID: fmt.Sprint(g, "-", i%50)}, Policy: pol, Cost: 1}}, res)
				switch {
				case err == nil:
					answered.Add(1)
				case errors.Is(err, pgstore.ErrClosed) && driver.IsUnavailable(err):
					closed.Add(1)
				default:
					t.Errorf("decision during Close: %v", err)
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	s.Close()
	time.Sleep(50 * time.Millisecond)
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("decisions still waiting 5 s after Close")
	}
	if answered.Load() == 0 || closed.Load() == 0 {
		t.Errorf("%d answered, %d closed: want both", answered.Load(), closed.Load())
	}
}
