// Command uploads caps heavy operations with max_concurrent: 25 uploads
// arrive at once, at most 10 run together, and the others get a slot as
// earlier ones finish. Then, with every slot taken, an upload with a short
// wait budget gives up, and one that waits gets the slot a finishing
// upload frees.
//
//	go run ./examples/uploads                                      # memory
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/uploads
//	POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test go run ./examples/uploads
//
// The limits are in rate-sync.toml beside this file (embedded).
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
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
	uploads    = 25
	uploadTime = 200 * time.Millisecond // how long one upload's work takes
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type upload struct {
	n                   int
	arrived, start, end time.Duration
}

func run(ctx context.Context, w io.Writer) error {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := storeenv.Apply(reg, "examples/uploads/rate-sync.toml", config); err != nil {
		return err
	}
	if err := storeenv.Reset(ctx, reg); err != nil { // a second run starts afresh
		return err
	}
	fmt.Fprintln(w, storeenv.Describe())
	limiter, err := reg.Get("upload")
	if err != nil {
		return err
	}
	slots := limiter.Rule().MaxConcurrent

	// 25 uploads at once, each holding a slot for its 200ms of work.
	var (
		mu             sync.Mutex
		inFlight, peak int
		done           []upload
		errs           []error
		wg             sync.WaitGroup
	)
	start := time.Now()
	for i := 1; i <= uploads; i++ {
		wg.Go(func() {
			u := upload{n: i, arrived: time.Since(start)}
			err := limiter.Do(ctx, func(ctx context.Context) error {
				mu.Lock()
				inFlight++
				peak = max(peak, inFlight)
				mu.Unlock()
				u.start = time.Since(start)
				time.Sleep(uploadTime) // the upload's work
				u.end = time.Since(start)
				mu.Lock()
				inFlight--
				mu.Unlock()
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			done = append(done, u)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	slices.SortFunc(done, func(a, b upload) int { return int(a.start - b.start) })
	fmt.Fprintf(w, "\n%d uploads at once, %v of work each, max_concurrent = %d:\n", uploads, uploadTime, slots)
	for _, u := range done {
		fmt.Fprintf(w, "  upload %2d  arrived +%.3fs  started +%.3fs  done +%.3fs  (waited %.3fs for a slot)\n",
			u.n, u.arrived.Seconds(), u.start.Seconds(), u.end.Seconds(), (u.start - u.arrived).Seconds())
	}
	fmt.Fprintf(w, "%d uploads done in %.3fs; peak in flight %d (max_concurrent %d)\n",
		len(done), time.Since(start).Seconds(), peak, slots)

	// Every slot taken: ten uploads in progress.
	var held []*ratesync.Lease
	defer func() {
		for _, l := range held {
			l.Release(ctx)
		}
	}()
	for range slots {
		d, err := limiter.Try(ctx)
		if err != nil {
			return err
		}
		if !d.Allowed {
			return fmt.Errorf("slot %d of %d was not free", len(held)+1, slots)
		}
		held = append(held, d.Lease)
	}
	st, err := limiter.State(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%d uploads in progress (state: %d in use, %d free)\n", len(held), st.CurrentUsage, st.Remaining)
	t0 := time.Now()
	_, err = limiter.Acquire(ctx, ratesync.WithTimeout(100*time.Millisecond))
	if !errors.Is(err, ratesync.ErrTimeout) {
		return fmt.Errorf("an upload found a slot while all were held: %v", err)
	}
	fmt.Fprintf(w, "an upload with a 100ms budget: gave up after %v (ErrTimeout: answer 503, try later)\n", time.Since(t0).Round(10*time.Millisecond))

	// One that waits gets the slot of the upload that finishes next.
	got := make(chan time.Duration, 1)
	t0 = time.Now()
	go func() {
		lease, err := limiter.Acquire(ctx, ratesync.WithTimeout(5*time.Second))
		if err != nil {
			got <- -1
			return
		}
		got <- time.Since(t0)
		lease.Release(ctx)
	}()
	time.Sleep(150 * time.Millisecond) // the first of the ten uploads' work
	held[0].Release(ctx)
	fmt.Fprintf(w, "an upload that waits: upload 1 of the ten finished at +%v,", time.Since(t0).Round(10*time.Millisecond))
	waited := <-got
	if waited < 0 {
		return errors.New("the waiting upload never got the freed slot")
	}
	fmt.Fprintf(w, " the waiting upload got its slot after %v\n", waited.Round(10*time.Millisecond))
	return nil
}
