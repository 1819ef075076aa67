package storetest

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

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
)

// MultiProcessOptions says how the processes of MultiProcess reach the
// store under test.
type MultiProcessOptions struct {
	// ChildTest names the test function of the store's package that calls
	// MultiProcessChild with the same options; the parent runs the test
	// binary again with -test.run=^ChildTest$ for each process.
	ChildTest string
	// Namespace makes an empty key space (a key prefix, a schema) for one
	// case, in the parent, and registers its cleanup with t.
	Namespace func(t *testing.T) string
	// Open opens the store in namespace ns, in a child process; the store
	// is closed when the child's test ends.
	Open func(t *testing.T, ns string) driver.Store
	// Holders returns the test's own count of lease holders in namespace
	// ns, kept in the store's server (not by the library).
	Holders func(t *testing.T, ns string) Holders
	// MinAcquisitions is how many acquisitions of the concurrency case
	// show that the processes contended (default 50).
	MinAcquisitions int
}

// Holders counts concurrent lease holders across processes.
type Holders interface {
	Enter(ctx context.Context) error // one more holder; records the peak
	Leave(ctx context.Context) error
	Peak(ctx context.Context) (int, error)
}

const (
	hammerProcs      = 4
	hammerGoroutines = 32
	hammerFor        = 2 * time.Second
)

// The rules the processes share, by case.
var hammerRules = map[string]ratesync.Rule{
	"bucket": {RatePerSecond: 200, Burst: 10},
	// The window outlasts the run, so exactly Limit may pass.
	"window":      {Algorithm: ratesync.SlidingWindow, Limit: 300, Window: time.Minute},
	"concurrency": {MaxConcurrent: 5, Timeout: time.Second, LeaseTTL: 10 * time.Second},
}

// MultiProcess runs 4 OS processes of 32 goroutines each for 2 s on one key
// per policy (a token bucket, a sliding window, max_concurrent) and counts
// what was admitted: never above the exact bound, and never more
// concurrent holders than max_concurrent.
func MultiProcess(t *testing.T, o MultiProcessOptions) {
	if os.Getenv("RATESYNC_HAMMER_CHILD") != "" {
		t.Skip("child process")
	}
	if o.MinAcquisitions == 0 {
		o.MinAcquisitions = 50
	}
	for _, tc := range []string{"bucket", "window", "concurrency"} {
		t.Run(tc, func(t *testing.T) {
			ns := o.Namespace(t)
			start := time.Now().Add(300 * time.Millisecond) // all processes start together
			var wg sync.WaitGroup
			counts := make([]int, hammerProcs)
			errs := make([]error, hammerProcs)
			for p := range hammerProcs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					counts[p], errs[p] = runChild(o.ChildTest, tc, ns, start)
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
				// A lower bound that shows the processes were admitted at all
				// (a limiter that starves them fails it), loose enough for a
				// loaded CI machine where processes start late: half the rate.
				if min := int(0.5 * hammerFor.Seconds() * rule.RatePerSecond); total < min {
					t.Fatalf("admitted only %d, want at least %d (the limiter must not starve)", total, min)
				}
			case "window":
				t.Logf("admitted %d with limit %d in one window", total, rule.Limit)
				if total != rule.Limit {
					t.Fatalf("admitted %d, want exactly %d", total, rule.Limit)
				}
			case "concurrency":
				peak, err := o.Holders(t, ns).Peak(ctx)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%d acquisitions, peak holders %d (max %d)", total, peak, rule.MaxConcurrent)
				if peak > rule.MaxConcurrent {
					t.Fatalf("peak holders %d > max_concurrent %d", peak, rule.MaxConcurrent)
				}
				if peak < 2 || total < o.MinAcquisitions {
					t.Fatalf("peak %d, %d acquisitions: the processes did not contend", peak, total)
				}
			}
		})
	}
}

// runChild runs the test binary as one hammering process and returns the
// number of admissions it reports.
func runChild(test, tc, ns string, start time.Time) (int, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		"RATESYNC_HAMMER_CHILD="+tc,
		"RATESYNC_HAMMER_NS="+ns,
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

// MultiProcessChild is the body of one hammering process: call it from the
// test named by o.ChildTest. Outside MultiProcess it skips.
func MultiProcessChild(t *testing.T, o MultiProcessOptions) {
	tc := os.Getenv("RATESYNC_HAMMER_CHILD")
	if tc == "" {
		t.Skip("runs only as a child of MultiProcess")
	}
	if tc == "reload" {
		reloadChild(t, o)
		return
	}
	ns := os.Getenv("RATESYNC_HAMMER_NS")
	st := o.Open(t, ns)
	holders := o.Holders(t, ns)
	r := ratesync.NewRegistry()
	defer r.Close()
	// The hammer measures the store: a generous call timeout, and store
	// errors fail the run instead of going to a local fallback that would
	// admit on its own.
	if err := r.AddStore("s", st, ratesync.WithCallTimeout(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	rule := hammerRules[tc]
	rule.Store = "s"
	rule.OnStoreError = ratesync.Deny
	if err := r.ConfigureLimiter(tc, rule); err != nil {
		t.Fatal(err)
	}
	l, err := r.Get(tc)
	if err != nil {
		t.Fatal(err)
	}
	startNs, _ := strconv.ParseInt(os.Getenv("RATESYNC_HAMMER_START"), 10, 64)
	start := time.Unix(0, startNs)
	time.Sleep(time.Until(start)) // a start line shared by the processes
	runCtx, cancel := context.WithDeadline(context.Background(), start.Add(hammerFor))
	defer cancel()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range hammerGoroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				if tc != "concurrency" {
					d, err := l.Try(runCtx)
					if err != nil {
						if runCtx.Err() == nil {
							firstErr.CompareAndSwap(nil, err)
						}
						return
					}
					if d.Allowed {
						admitted.Add(1)
					}
					continue
				}
				lease, err := l.Acquire(runCtx)
				if errors.Is(err, ratesync.ErrTimeout) || runCtx.Err() != nil {
					continue
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				admitted.Add(1)
				if err := holders.Enter(ctx); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
				time.Sleep(time.Millisecond) // the work done under the lease
				if err := holders.Leave(ctx); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
				if err := lease.Release(ctx); err != nil {
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
