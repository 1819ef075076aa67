// Command observability shows what a limiter tells about itself: its
// state without consuming anything (rate-sync's get_state() is
// Limiter.State), its counters (Limiter.Metrics), and the Prometheus
// series of package ratesyncprom, scraped from /metrics.
//
//	go run ./examples/observability                                # memory
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/observability
//	POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test go run ./examples/observability
//
// The limits are in rate-sync.toml beside this file (embedded).
package main

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/examples/internal/storeenv"
	_ "github.com/rate-sync/ratesync-go/pgstore" // engine = "postgres"
	"github.com/rate-sync/ratesync-go/ratesyncprom"
	_ "github.com/rate-sync/ratesync-go/redisstore" // engine = "redis"
)

//go:embed rate-sync.toml
var config []byte

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer) error {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := storeenv.Apply(reg, "examples/observability/rate-sync.toml", config); err != nil {
		return err
	}
	if err := storeenv.Reset(ctx, reg); err != nil { // a second run starts afresh
		return err
	}
	fmt.Fprintln(w, storeenv.Describe())
	api, err := reg.Get("api")
	if err != nil {
		return err
	}
	state := func() error {
		st, err := api.State(ctx) // reads, consumes nothing
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  State: allowed=%v remaining=%d limit=%d in use=%d retry after %v, reset in %v\n",
			st.Allowed, st.Remaining, st.Limit, st.CurrentUsage, st.RetryAfter.Round(time.Second), time.Until(st.ResetAt).Round(time.Second))
		return nil
	}
	try := func(n int) (admitted, denied int, err error) {
		for range n {
			d, err := api.Try(ctx)
			if err != nil {
				return admitted, denied, err
			}
			if d.Allowed {
				admitted++
			} else {
				denied++
			}
		}
		return admitted, denied, nil
	}

	fmt.Fprintln(w, "\n8 requests, then the state (rate-sync: LimiterState(allowed=True, remaining=42, ...)):")
	if _, _, err := try(8); err != nil {
		return err
	}
	if err := state(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\n45 more requests:")
	admitted, denied, err := try(45)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  %d admitted, %d denied\n", admitted, denied)
	if err := state(); err != nil {
		return err
	}
	_, err = api.Acquire(ctx, ratesync.WithTimeout(time.Second))
	if !errors.Is(err, ratesync.ErrTimeout) {
		return fmt.Errorf("acquire on an exhausted quota: %v", err)
	}
	fmt.Fprintln(w, "  Acquire with a 1s budget: gave up at once, ErrTimeout (the wait needed is the window's)")

	m := api.Metrics()
	fmt.Fprintf(w, "\nMetrics: acquisitions=%d denials=%d timeouts=%d errors=%d fallbacks=%d waiting=%d\n",
		m.Acquisitions, m.Denials, m.Timeouts, m.Errors, m.Fallbacks, m.Waiting)

	// Prometheus: ratesyncprom reads the same counters at scrape time.
	promReg := prometheus.NewRegistry()
	if err := ratesyncprom.Register(promReg, reg); err != nil {
		return err
	}
	srv := httptest.NewServer(ratesyncprom.Handler(promReg))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	fmt.Fprintln(w, "\nGET /metrics (the api series):")
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "ratesync_") && strings.Contains(line, `group_id="api"`) && !strings.Contains(line, "_bucket{") {
			fmt.Fprintln(w, " ", line)
		}
	}
	return sc.Err()
}
