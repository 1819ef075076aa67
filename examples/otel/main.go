// Command otel shows ratesync's OpenTelemetry instruments and spans
// (package ratesyncotel): it runs some traffic through a registry, then
// prints the instruments as an in-memory reader of the OpenTelemetry SDK
// collects them, and the spans of store calls a span recorder kept.
//
//	go run ./examples/otel                                    # memory store
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/otel # Redis: store calls, with spans
//
// A real program gives ratesyncotel the MeterProvider and TracerProvider
// of its exporters (OTLP, Prometheus) instead of the in-memory ones.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/ratesyncotel"
	_ "github.com/rate-sync/ratesync-go/redisstore"
)

func main() {
	if err := run(context.Background(), os.Stdout, os.Getenv("REDIS_URL")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// run makes the traffic on a memory store, or on Redis when redisURL is
// set (under a key prefix of its own, deleted at the end), and prints what
// OpenTelemetry received.
func run(ctx context.Context, w io.Writer, redisURL string) error {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(ctx)
	recorder := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	defer tp.Shutdown(ctx)

	// The histograms and spans are recorded by registry hooks...
	opts, err := ratesyncotel.Observers(ratesyncotel.Options{MeterProvider: mp, TracerProvider: tp})
	if err != nil {
		return err
	}
	reg := ratesync.NewRegistry(opts...)
	defer reg.Close()
	// ...the counters and gauges are read from the registry when collected.
	if _, err := ratesyncotel.Register(mp, reg); err != nil {
		return err
	}

	if redisURL == "" {
		err = reg.ConfigureStore("main", "memory", nil)
	} else {
		var b [6]byte
		rand.Read(b[:])
		err = reg.ConfigureStore("main", "redis", map[string]any{"url": redisURL, "key_prefix": "otel-example-" + hex.EncodeToString(b[:])})
		defer reg.ResetStore(context.WithoutCancel(ctx), "main")
	}
	if err != nil {
		return err
	}
	for name, rule := range map[string]ratesync.Rule{
		"api":  {Store: "main", RatePerSecond: 0.001, Burst: 3},                                               // 3 requests per client, then one per 1000 s
		"jobs": {Store: "main", MaxConcurrent: 1, Timeout: 10 * time.Millisecond},                             // one at a time, wait up to 10 ms
		"beta": {Store: "main", Algorithm: ratesync.SlidingWindow, Limit: 2, Window: time.Hour, Shadow: true}, // measured, not enforced
	} {
		if err := reg.ConfigureLimiter(name, rule); err != nil {
			return err
		}
	}

	// The traffic, as from one request handler: its span is the parent of
	// the store calls' spans.
	ctx, handler := tp.Tracer("examples/otel").Start(ctx, "GET /items")
	for _, client := range []string{"alice", "bob"} {
		l, err := reg.For("api", client) // per-client state; the client is no attribute
		if err != nil {
			return err
		}
		for range 5 {
			d, err := l.Try(ctx)
			if err != nil {
				return err
			}
			d.Lease.Release(ctx)
		}
	}
	held, err := reg.Acquire(ctx, "jobs")
	if err != nil {
		return err
	}
	if _, err := reg.Acquire(ctx, "jobs"); !errors.Is(err, ratesync.ErrTimeout) {
		return fmt.Errorf("second job: %v, want a timeout", err)
	}
	for range 4 {
		if d, err := reg.Try(ctx, "beta"); err != nil || !d.Allowed {
			return fmt.Errorf("shadow rule: %+v %v", d, err)
		}
	}
	handler.End()

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil { // while the job holds its lease
		return err
	}
	held.Release(ctx)
	fmt.Fprintln(w, "instruments:")
	printMetrics(w, rm)
	fmt.Fprintln(w, "spans:")
	printSpans(w, recorder.Ended())
	if redisURL == "" {
		fmt.Fprintln(w, "  (the memory store decides in process: no store calls, so no store-call spans; set REDIS_URL)")
	}
	return nil
}

func printMetrics(w io.Writer, rm metricdata.ResourceMetrics) {
	for _, sm := range rm.ScopeMetrics {
		ms := slices.Clone(sm.Metrics)
		slices.SortFunc(ms, func(a, b metricdata.Metrics) int { return strings.Compare(a.Name, b.Name) })
		for _, m := range ms {
			var lines []string
			kind := ""
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				kind = "up-down counter"
				if d.IsMonotonic {
					kind = "counter"
				}
				for _, p := range d.DataPoints {
					lines = append(lines, fmt.Sprintf("{%s} %d", enc(p.Attributes), p.Value))
				}
			case metricdata.Gauge[int64]:
				kind = "gauge"
				for _, p := range d.DataPoints {
					lines = append(lines, fmt.Sprintf("{%s} %d", enc(p.Attributes), p.Value))
				}
			case metricdata.Histogram[float64]:
				kind = "histogram"
				for _, p := range d.DataPoints {
					// The count; sums are times, which vary from run to run.
					lines = append(lines, fmt.Sprintf("{%s} count=%d", enc(p.Attributes), p.Count))
				}
			}
			slices.Sort(lines)
			fmt.Fprintf(w, "  %s (%s, %s)\n", m.Name, m.Unit, kind)
			if len(lines) == 0 {
				fmt.Fprintln(w, "    (no data points)")
			}
			for _, l := range lines {
				fmt.Fprintf(w, "    %s\n", l)
			}
		}
	}
}

func enc(s attribute.Set) string { return s.Encoded(attribute.DefaultEncoder()) }

func printSpans(w io.Writer, spans []sdktrace.ReadOnlySpan) {
	names := map[trace.SpanID]string{}
	for _, s := range spans {
		names[s.SpanContext().SpanID()] = s.Name()
	}
	for _, s := range spans {
		var attrs []string
		for _, kv := range s.Attributes() {
			attrs = append(attrs, string(kv.Key)+"="+kv.Value.Emit())
		}
		parent := "none"
		if s.Parent().IsValid() {
			parent = names[s.Parent().SpanID()]
		}
		fmt.Fprintf(w, "  %s (%s, parent %s) {%s} status=%s\n", s.Name(), s.SpanKind(), parent, strings.Join(attrs, ","), s.Status().Code)
	}
}
