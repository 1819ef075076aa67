package pgstore_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/pgstore"
)

const (
	hammerProcs      = 4
	hammerGoroutines = 32
	hammerFor        = 2 * time.Second
)

// The rules the processes share, by test case.
var hammerRules = map[string]ratesync.Rule{
	"bucket": {RatePerSecond: 200, Burst: 10},
	// The window outlasts the run, so exactly Limit may pass.
	"window":      {Algorithm: ratesync.SlidingWindow, Limit: 300, Window: time.Minute},
	"concurrency": {MaxConcurrent: 5, Timeout: 100 * time.Millisecond, LeaseTTL: 10 * time.Second},
}

// The test counts holders in PostgreSQL itself, in a table of its own:
// holders is incremented after an acquisition and decremented before the
// release; peak keeps the highest value seen.
const holdersDDL = `CREATE TABLE %s.holders (id int PRIMARY KEY, holders int NOT NULL, peak int NOT NULL);
INSERT INTO %s.holders VALUES (1, 0, 0)`

// TestMultiProcessAccuracy runs 4 OS processes of 32 goroutines each on one
// key per policy and counts what was admitted: never above the exact bound,
// and never more concurrent holders (counted in PostgreSQL by the test)
// than max_concurrent, and no error surfaced.
func TestMultiProcessAccuracy(t *testing.T) {
	if os.Getenv("RATESYNC_HAMMER_CHILD") != "" {
		t.Skip("child process")
	}
	p := pool(t, nil) // skips or fails when the server is missing
	rawURL := os.Getenv("RATESYNC_TEST_POSTGRES_URL")
	for _, tc := range []string{"bucket", "window", "concurrency"} {
		t.Run(tc, func(t *testing.T) {
			prefix := randomSchema()
			s, _ := pgstore.New(p, pgstore.WithSchema(prefix))
			if err := s.Migrate(bg); err != nil {
				t.Fatal(err)
			}
			s.Close()
			if _, err := p.Exec(bg, fmt.Sprintf(holdersDDL, prefix, prefix)); err != nil {
				t.Fatal(err)
			}
			defer p.Exec(bg, "DROP SCHEMA "+prefix+" CASCADE")
			start := time.Now().Add(300 * time.Millisecond) // all processes start together
			var wg sync.WaitGroup
			counts := make([]int, hammerProcs)
			errs := make([]error, hammerProcs)
			for p := range hammerProcs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					counts[p], errs[p] = runChild(tc, rawURL, prefix, start)
				}()
			}
			wg.Wait()
			total := 0
			for p := range hammerProcs {
				if errs[p] != nil {
					t.Fatalf("process %d: %v", p, errs[p])
				}
				total += counts[p]
			}
			rule := hammerRules[tc]
			switch tc {
			case "bucket":
				// Admissions happen within [start, start+hammerFor+slack]:
				// slack covers a decision sent just before the end.
				span := hammerFor + 50*time.Millisecond
				bound := rule.Burst + int(span.Seconds()*rule.RatePerSecond)
				t.Logf("admitted %d in %v at %v/s burst %d: bound %d", total, hammerFor, rule.RatePerSecond, rule.Burst, bound)
				if total > bound {
					t.Fatalf("admitted %d > exact bound %d", total, bound)
				}
				if min := int(0.9 * hammerFor.Seconds() * rule.RatePerSecond); total < min {
					t.Fatalf("admitted only %d, want at least %d (the limiter must not starve)", total, min)
				}
			case "window":
				t.Logf("admitted %d with limit %d in one window", total, rule.Limit)
				if total != rule.Limit {
					t.Fatalf("admitted %d, want exactly %d", total, rule.Limit)
				}
			case "concurrency":
				var peak int
				if err := p.QueryRow(bg, "SELECT peak FROM "+prefix+".holders").Scan(&peak); err != nil {
					t.Fatal(err)
				}
				t.Logf("%d acquisitions, peak holders %d (max %d)", total, peak, rule.MaxConcurrent)
				if peak > rule.MaxConcurrent {
					t.Fatalf("peak holders %d > max_concurrent %d", peak, rule.MaxConcurrent)
				}
				// Every decision on the one hot row takes its lock until
				// commit, so PostgreSQL serves far fewer than Redis here.
				if peak < 2 || total < 20 {
					t.Fatalf("peak %d, %d acquisitions: the processes did not contend", peak, total)
				}
			}
		})
	}
}

// runChild runs this test binary as one hammering process and returns the
// number of admissions it reports.
func runChild(tc, url, prefix string, start time.Time) (int, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHammerChild$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		"RATESYNC_HAMMER_CHILD="+tc,
		"RATESYNC_HAMMER_URL="+url,
		"RATESYNC_HAMMER_PREFIX="+prefix,
		"RATESYNC_HAMMER_START="+strconv.FormatInt(start.UnixNano(), 10),
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%v\n%s", err, out)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "ADMITTED "); ok {
			return strconv.Atoi(n)
		}
	}
	return 0, fmt.Errorf("no ADMITTED line in:\n%s", out)
}

// TestHammerChild is the body of one hammering process; it runs only when
// TestMultiProcessAccuracy starts it.
func TestHammerChild(t *testing.T) {
	tc := os.Getenv("RATESYNC_HAMMER_CHILD")
	if tc == "" {
		t.Skip("runs only as a child of TestMultiProcessAccuracy")
	}
	cfg, err := pgxpool.ParseConfig(os.Getenv("RATESYNC_HAMMER_URL"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 8
	c, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	prefix := os.Getenv("RATESYNC_HAMMER_PREFIX")
	s, err := pgstore.New(c, pgstore.WithSchema(prefix))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := ratesync.NewRegistry()
	defer r.Close()
	if err := r.AddStore("pg", s); err != nil {
		t.Fatal(err)
	}
	rule := hammerRules[tc]
	rule.Store = "pg"
	if err := r.ConfigureLimiter(tc, rule); err != nil {
		t.Fatal(err)
	}
	l, err := r.Limiter(tc)
	if err != nil {
		t.Fatal(err)
	}
	startNs, _ := strconv.ParseInt(os.Getenv("RATESYNC_HAMMER_START"), 10, 64)
	start := time.Unix(0, startNs)
	time.Sleep(time.Until(start)) // a start line shared by the processes
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(hammerFor))
	defer cancel()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range hammerGoroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if tc != "concurrency" {
					d, err := l.Try(ctx)
					if err != nil {
						if ctx.Err() == nil {
							firstErr.CompareAndSwap(nil, err)
						}
						return
					}
					if d.Allowed {
						admitted.Add(1)
					}
					continue
				}
				lease, err := l.Acquire(ctx)
				if errors.Is(err, ratesync.ErrTimeout) || ctx.Err() != nil {
					continue
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				admitted.Add(1)
				bg := context.Background()
				if _, err := c.Exec(bg, "UPDATE "+prefix+".holders SET holders = holders + 1, peak = greatest(peak, holders + 1)"); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
				time.Sleep(time.Millisecond) // the work done under the lease
				if _, err := c.Exec(bg, "UPDATE "+prefix+".holders SET holders = holders - 1"); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
				if err := lease.Release(bg); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("ADMITTED %d\n", admitted.Load())
}
