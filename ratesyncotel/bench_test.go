package ratesyncotel_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/memstore"
	"github.com/rate-sync/ratesync-go/ratesyncotel"
)

// dropSpans is a span processor that keeps nothing, so that a benchmark
// measures making spans, not storing them.
type dropSpans struct{}

func (dropSpans) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (dropSpans) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (dropSpans) Shutdown(context.Context) error                  { return nil }
func (dropSpans) ForceFlush(context.Context) error                { return nil }

// BenchmarkTry measures what each part of ratesyncotel costs a decision:
// Try on a rule of the memory store (in process) and of a network store
// (the memory store behind the driver interface, so that only the
// registry's network path is measured), with no instruments, with Register
// alone, with empty hooks of the caller's (the registry's general path,
// which any hook takes), and with the histograms (and spans) of Observers on the SDK's
// providers or on no-op ones (the hooks' own cost).
func BenchmarkTry(b *testing.B) {
	for _, store := range []string{"memory", "network"} {
		for _, tc := range []struct {
			name  string
			setup func(b *testing.B) (ratesyncotel.Options, bool)
		}{
			{"none", func(*testing.B) (ratesyncotel.Options, bool) { return ratesyncotel.Options{}, false }},
			{"register", func(b *testing.B) (ratesyncotel.Options, bool) { return ratesyncotel.Options{}, true }},
			{"empty-hooks", func(b *testing.B) (ratesyncotel.Options, bool) {
				return ratesyncotel.Options{Observer: func(ratesync.Event) {}, StoreObserver: func(ratesync.StoreCall) {}}, true
			}},
			{"observers-noop", func(b *testing.B) (ratesyncotel.Options, bool) {
				return ratesyncotel.Options{MeterProvider: noop.NewMeterProvider()}, true
			}},
			{"observers-sdk", func(b *testing.B) (ratesyncotel.Options, bool) {
				mp, _ := metricsProvider(b)
				return ratesyncotel.Options{MeterProvider: mp}, true
			}},
			{"observers-sdk+spans", func(b *testing.B) (ratesyncotel.Options, bool) {
				mp, _ := metricsProvider(b)
				tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(dropSpans{}), sdktrace.WithSampler(sdktrace.AlwaysSample()))
				b.Cleanup(func() { tp.Shutdown(ctx) })
				return ratesyncotel.Options{MeterProvider: mp, TracerProvider: tp}, true
			}},
		} {
			b.Run(store+"/"+tc.name, func(b *testing.B) {
				o, register := tc.setup(b)
				opts, err := ratesyncotel.Observers(o)
				if err != nil {
					b.Fatal(err)
				}
				reg := ratesync.NewRegistry(opts...)
				defer reg.Close()
				if register {
					mp, _ := metricsProvider(b)
					if _, err := ratesyncotel.Register(mp, reg); err != nil {
						b.Fatal(err)
					}
				}
				if store == "memory" {
					reg.ConfigureStore("s", "memory", nil)
				} else {
					mem := memstore.New()
					defer mem.Close()
					reg.AddStore("s", remote{mem})
				}
				if err := reg.ConfigureLimiter("api", ratesync.Rule{Store: "s", RatePerSecond: 1e6, Burst: 1000}); err != nil {
					b.Fatal(err)
				}
				l, _ := reg.For("api", "client")
				b.ReportAllocs()
				for b.Loop() {
					l.Try(ctx)
				}
			})
		}
	}
}
