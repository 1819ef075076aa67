// Command workers runs background workers that call one third-party API
// and share its limit through the store: 4 worker processes with 5
// callers each (the description's 20 Celery workers) make "Stripe" calls
// of 100ms for 2 seconds under stripe_api (90/s, at most 10 in flight).
// The parent starts the workers (this same program, again), collects
// every call they made, and shows that together they stayed within 90/s ×
// the time + 1 (the burst) and never had more than 10 calls in flight.
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/workers
//	POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test go run ./examples/workers
//	go run ./examples/workers     # memory: the workers run as goroutines of one process
//
// Processes cannot share the memory store, so without REDIS_URL or
// POSTGRES_URL the workers are goroutines of this process (it says so).
// KEY_PREFIX (Redis) and PG_SCHEMA (PostgreSQL) keep the example's state
// apart. The limits are in rate-sync.toml beside this file (embedded).
package main

import (
	"bufio"
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/examples/internal/storeenv"
	_ "github.com/rate-sync/ratesync-go/pgstore"    // engine = "postgres"
	_ "github.com/rate-sync/ratesync-go/redisstore" // engine = "redis"
)

//go:embed rate-sync.toml
var config []byte

const (
	workers  = 4
	callers  = 5                      // per worker
	duration = 2 * time.Second        // how long the workers make calls
	callTime = 100 * time.Millisecond // one call to the API

	// childEnv tells a process started by run that it is worker N; the
	// deadline of its calls is in untilEnv (Unix nanoseconds).
	childEnv = "WORKERS_EXAMPLE_CHILD"
	untilEnv = "WORKERS_EXAMPLE_UNTIL"
)

func main() {
	if os.Getenv(childEnv) != "" {
		os.Exit(child())
	}
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// call is one API call a worker made, in Unix nanoseconds.
type call struct {
	worker     int
	start, end int64
}

// work runs one worker's callers until the deadline, reporting each call
// and, first, the time its callers began asking for the limit.
func work(ctx context.Context, reg *ratesync.Registry, id int, until time.Time, began func(int64), report func(call)) error {
	ctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	stripe, err := reg.Get("stripe_api")
	if err != nil {
		return err
	}
	began(time.Now().UnixNano())
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			for {
				err := stripe.Do(ctx, func(context.Context) error {
					c := call{worker: id, start: time.Now().UnixNano()}
					time.Sleep(callTime) // the call to the API
					c.end = time.Now().UnixNano()
					report(c)
					return nil
				})
				if errors.Is(err, ratesync.ErrTimeout) || ctx.Err() != nil {
					return // the deadline: no more calls
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// child is a worker process: it prints "began T", then "call START END"
// for each call, on stdout.
func child() int {
	id, _ := strconv.Atoi(os.Getenv(childEnv))
	ns, err := strconv.ParseInt(os.Getenv(untilEnv), 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker: bad", untilEnv, err)
		return 2
	}
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := storeenv.Apply(reg, "examples/workers/rate-sync.toml", config); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	err = work(context.Background(), reg, id, time.Unix(0, ns),
		func(t int64) { mu.Lock(); fmt.Fprintf(out, "began %d\n", t); mu.Unlock() },
		func(c call) { mu.Lock(); fmt.Fprintf(out, "call %d %d\n", c.start, c.end); mu.Unlock() })
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	return 0
}

func run(ctx context.Context, w io.Writer) error {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := storeenv.Apply(reg, "examples/workers/rate-sync.toml", config); err != nil {
		return err
	}
	if err := storeenv.Reset(ctx, reg); err != nil { // a second run starts afresh
		return err
	}
	fmt.Fprintln(w, storeenv.Describe())
	stripe, err := reg.Get("stripe_api")
	if err != nil {
		return err
	}
	rule := stripe.Rule()

	var (
		mu    sync.Mutex
		calls []call
		began []int64
		pids  = map[int]int{}
	)
	until := time.Now().Add(duration)
	if !storeenv.Shared() {
		fmt.Fprintf(w, "processes cannot share the memory store: the %d workers run as goroutines of this process\n", workers)
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for id := 1; id <= workers; id++ {
			wg.Go(func() {
				errs <- work(ctx, reg, id, until,
					func(t int64) { mu.Lock(); began = append(began, t); mu.Unlock() },
					func(c call) { mu.Lock(); calls = append(calls, c); mu.Unlock() })
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				return err
			}
		}
	} else {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		until = time.Now().Add(duration + time.Second) // the processes take a moment to start
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for id := 1; id <= workers; id++ {
			cmd := exec.CommandContext(ctx, exe)
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", childEnv, id), fmt.Sprintf("%s=%d", untilEnv, until.UnixNano()))
			cmd.Stderr = os.Stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				return err
			}
			if err := cmd.Start(); err != nil {
				return err
			}
			pids[id] = cmd.Process.Pid
			wg.Go(func() {
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					f := strings.Fields(sc.Text())
					mu.Lock()
					switch {
					case len(f) == 2 && f[0] == "began":
						t, _ := strconv.ParseInt(f[1], 10, 64)
						began = append(began, t)
					case len(f) == 3 && f[0] == "call":
						s, _ := strconv.ParseInt(f[1], 10, 64)
						e, _ := strconv.ParseInt(f[2], 10, 64)
						calls = append(calls, call{worker: id, start: s, end: e})
					}
					mu.Unlock()
				}
				if err := cmd.Wait(); err != nil {
					errs <- fmt.Errorf("worker %d: %w", id, err)
				}
			})
		}
		fmt.Fprintf(w, "started %d worker processes: this program again, pids %v\n", workers, slices.Sorted(maps.Values(pids)))
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return err
		}
	}
	if len(calls) == 0 || len(began) != workers {
		return fmt.Errorf("%d calls reported, %d of %d workers began", len(calls), len(began), workers)
	}

	fmt.Fprintf(w, "%d workers × %d callers, calls of %v, under stripe_api (%g/s, max_concurrent %d):\n",
		workers, callers, callTime, rule.RatePerSecond, rule.MaxConcurrent)
	per := map[int]int{}
	for _, c := range calls {
		per[c.worker]++
	}
	for id := 1; id <= workers; id++ {
		fmt.Fprintf(w, "  worker %d: %d calls\n", id, per[id])
	}
	// Every admission happened after the first worker began asking and
	// before the last call started, so the limit allows at most rate × that
	// span + burst calls.
	first := slices.Min(began)
	last := slices.MaxFunc(calls, func(a, b call) int { return cmp.Compare(a.start, b.start) }).start
	span := time.Duration(last - first)
	allowed := rule.RatePerSecond*span.Seconds() + float64(rule.Burst)
	fmt.Fprintf(w, "total: %d calls in %.3fs (%.1f/s); the limit allows at most %g/s × %.3fs + %d = %.1f\n",
		len(calls), span.Seconds(), float64(len(calls))/span.Seconds(), rule.RatePerSecond, span.Seconds(), rule.Burst, allowed)
	fmt.Fprintf(w, "peak in flight across workers: %d (max_concurrent %d)\n", peak(calls), rule.MaxConcurrent)
	return nil
}

// peak returns the largest number of calls in flight at one time.
func peak(calls []call) int {
	type edge struct {
		t     int64
		delta int
	}
	var edges []edge
	for _, c := range calls {
		edges = append(edges, edge{c.start, 1}, edge{c.end, -1})
	}
	// At equal times, ends before starts: a call that ended as another began
	// did not overlap it.
	slices.SortFunc(edges, func(a, b edge) int { return cmp.Or(cmp.Compare(a.t, b.t), cmp.Compare(a.delta, b.delta)) })
	n, top := 0, 0
	for _, e := range edges {
		n += e.delta
		top = max(top, n)
	}
	return top
}
