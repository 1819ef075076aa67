package ratesyncotel

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/rate-sync/ratesync-go"
)

type dropSpans struct{}

func (dropSpans) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (dropSpans) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (dropSpans) Shutdown(context.Context) error                  { return nil }
func (dropSpans) ForceFlush(context.Context) error                { return nil }

// BenchmarkObserve measures the hooks alone, per call: the wait histogram
// per decision, and the store-call histogram and span per store call.
func BenchmarkObserve(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(dropSpans{}), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer tp.Shutdown(context.Background())
	ev := ratesync.Event{Op: ratesync.OpTry, Limiter: "api", Store: "main", Engine: "redis", Key: "api:client", Decision: ratesync.Decision{Allowed: true}}
	call := ratesync.StoreCall{Context: context.Background(), Store: "main", Engine: "redis", Op: "decide", Duration: 300 * time.Microsecond}
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"noop-meter", Options{MeterProvider: noop.NewMeterProvider()}},
		{"sdk-meter", Options{MeterProvider: mp}},
		{"sdk-meter+tracer", Options{MeterProvider: mp, TracerProvider: tp}},
	} {
		ob, err := newObservers(tc.o)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("decision/"+tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ob.observe(ev)
			}
		})
		b.Run("storecall/"+tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ob.observeStore(call)
			}
		})
	}
}
