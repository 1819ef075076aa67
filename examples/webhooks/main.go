// Command webhooks delivers a burst of events to three local endpoints,
// each paced by a limiter of its own (rate-sync's get_or_clone_limiter(
// "webhook_endpoint", endpoint_url) is reg.For("webhook_endpoint", url)),
// and gives up on a delivery that would wait longer than its budget
// (rate-sync's acquire_context(timeout=30.0) is Acquire with WithTimeout;
// 1.2 seconds here so that the example ends quickly).
//
//	go run ./examples/webhooks                                     # memory
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/webhooks
//	POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test go run ./examples/webhooks
//
// Endpoint A takes the default 10/s; the owners of B and C asked for 4/s
// and 2/s, which are clones of the rule. Each gets 8 events at once: A
// receives them 100ms apart, B 250ms apart, C 500ms apart, and the events
// that could not be delivered within the budget are reported, to be sent
// again later. The limits are in rate-sync.toml beside this file
// (embedded).
package main

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
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
	events = 8                       // per endpoint, all at once
	budget = 1200 * time.Millisecond // how long a delivery may wait for its endpoint
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// endpoint is a customer's webhook receiver.
type endpoint struct {
	name string
	rate float64 // what its owner asked for; 0 is the rule's default
	srv  *httptest.Server

	mu       sync.Mutex
	arrivals []time.Duration // when each delivery arrived
	gaveUp   []int           // events given up
}

func run(ctx context.Context, w io.Writer) error {
	reg := ratesync.NewRegistry()
	defer reg.Close()
	if err := storeenv.Apply(reg, "examples/webhooks/rate-sync.toml", config); err != nil {
		return err
	}
	fmt.Fprintln(w, storeenv.Describe())

	start := time.Now()
	endpoints := []*endpoint{{name: "A"}, {name: "B", rate: 4}, {name: "C", rate: 2}}
	limiters := map[*endpoint]*ratesync.Limiter{}
	for _, ep := range endpoints {
		ep.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			ep.mu.Lock()
			ep.arrivals = append(ep.arrivals, time.Since(start))
			ep.mu.Unlock()
		}))
		defer ep.srv.Close()
		var err error
		if ep.rate == 0 {
			limiters[ep], err = reg.For("webhook_endpoint", ep.srv.URL)
		} else { // the owner's own rate: a clone of the rule
			name := "webhook_endpoint:" + ep.name
			if err = reg.Clone("webhook_endpoint", name, func(r *ratesync.Rule) { r.RatePerSecond = ep.rate }); err == nil {
				limiters[ep], err = reg.Get(name)
			}
		}
		if err != nil {
			return err
		}
	}
	if err := storeenv.Reset(ctx, reg); err != nil { // a second run starts afresh
		return err
	}
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()

	// The burst: every event is sent at once, each waiting for its endpoint.
	start = time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(endpoints)*events)
	for _, ep := range endpoints {
		for n := 1; n <= events; n++ {
			wg.Go(func() {
				lease, err := limiters[ep].Acquire(ctx, ratesync.WithTimeout(budget))
				if errors.Is(err, ratesync.ErrTimeout) {
					ep.mu.Lock()
					ep.gaveUp = append(ep.gaveUp, n)
					ep.mu.Unlock()
					return
				}
				if err != nil {
					errs <- err
					return
				}
				defer lease.Release(ctx)
				body := fmt.Sprintf(`{"event":%d,"type":"import.row_created"}`, n)
				req, err := http.NewRequestWithContext(ctx, "POST", ep.srv.URL, strings.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			})
		}
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	if err := errors.Join(all...); err != nil {
		return err
	}

	fmt.Fprintf(w, "\n%d events at once to each endpoint, a wait budget of %v per delivery:\n", events, budget)
	for _, ep := range endpoints {
		l := limiters[ep]
		slices.Sort(ep.arrivals)
		slices.Sort(ep.gaveUp)
		var at bytes.Buffer
		for _, a := range ep.arrivals {
			fmt.Fprintf(&at, " +%.3f", a.Seconds())
		}
		fmt.Fprintf(w, "  endpoint %s (%g/s): arrivals at%s\n", ep.name, l.Rule().RatePerSecond, at.String())
		fmt.Fprintf(w, "  endpoint %s (%g/s): %d delivered, %d given up", ep.name, l.Rule().RatePerSecond, len(ep.arrivals), len(ep.gaveUp))
		if len(ep.gaveUp) > 0 {
			fmt.Fprintf(w, " (events %v would have waited past %v: reported, to send again later)", ep.gaveUp, budget)
		}
		fmt.Fprintln(w)
	}
	return nil
}
