// Command quickstart is rate-sync's quick start in Go: a rate-sync.toml
// with one limiter, "api", at 10 requests per second, and calls that block
// until the limit allows them.
//
//	go run ./examples/quickstart
//
// It uses ./rate-sync.toml (or $RATE_SYNC_CONFIG) when there is one, as every
// program using the package-level functions does; otherwise it loads the
// copy that sits beside this file.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rate-sync/ratesync-go"
)

//go:embed rate-sync.toml
var exampleConfig []byte

func main() {
	if err := run(context.Background(), os.Stdout, 10); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer, n int) error {
	path, err := ratesync.FindConfig()
	if err != nil {
		return err
	}
	if path == "" {
		fmt.Fprintf(w, "no rate-sync.toml in the working directory; using the example's:\n\n%s\n", exampleConfig)
		cfg, err := ratesync.ParseConfig("examples/quickstart/rate-sync.toml", exampleConfig)
		if err != nil {
			return err
		}
		reg, err := ratesync.Default()
		if err != nil {
			return err
		}
		if err := reg.ApplyConfig(cfg); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(w, "using %s\n\n", path)
	}

	start := time.Now()
	fmt.Fprintf(w, "%d calls to ratesync.Acquire(ctx, \"api\") at 10/s:\n", n)
	for i := 1; i <= n; i++ {
		lease, err := ratesync.Acquire(ctx, "api") // blocks until the limit allows
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  +%.3fs  request %d admitted\n", time.Since(start).Seconds(), i)
		lease.Release(ctx) // a no-op for pure rate limits; needed with max_concurrent
	}

	d, err := ratesync.Try(ctx, "api") // one attempt, no waiting
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nratesync.Try right after: allowed=%v, retry after %v\n", d.Allowed, d.RetryAfter.Round(time.Millisecond))

	err = ratesync.Do(ctx, "api", func(ctx context.Context) error {
		fmt.Fprintf(w, "ratesync.Do ran its function at +%.3fs\n", time.Since(start).Seconds())
		return nil
	})
	return err
}
