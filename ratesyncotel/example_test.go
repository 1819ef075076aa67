package ratesyncotel_test

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/ratesyncotel"
)

// The counters and gauges of a registry on your MeterProvider, read from
// the registry when the provider's readers collect: decisions cost
// nothing more. Here an in-memory reader stands for your exporter.
func ExampleRegister() {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())

	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ConfigureStore("main", "memory", nil)
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "main", RatePerSecond: 0.001, Burst: 2})
	if _, err := ratesyncotel.Register(mp, reg); err != nil {
		panic(err)
	}
	for range 3 {
		l, _ := reg.For("api", "203.0.113.9") // the identifier is no attribute
		l.Try(context.Background())
	}

	var rm metricdata.ResourceMetrics
	reader.Collect(context.Background(), &rm)
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name == "ratesync.decisions" {
			for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
				result, _ := p.Attributes.Value(attribute.Key("ratesync.result"))
				fmt.Println(m.Name, m.Unit, result.AsString(), p.Value)
			}
		}
	}
	// Unordered output:
	// ratesync.decisions {decision} allowed 2
	// ratesync.decisions {decision} denied 1
	// ratesync.decisions {decision} timeout 0
}

// The histograms and the spans of store calls are recorded by registry
// hooks, which Observers returns for NewRegistry. A registry has one hook
// of each kind: a program with its own passes it in Options, to be called
// after ratesyncotel's.
func ExampleObservers() {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())

	denied := 0
	opts, err := ratesyncotel.Observers(ratesyncotel.Options{
		MeterProvider: mp, // and TracerProvider: tp, for spans of store calls
		Observer: func(e ratesync.Event) { // your own hook
			if !e.Decision.Allowed {
				denied++
			}
		},
	})
	if err != nil {
		panic(err)
	}
	reg := ratesync.NewRegistry(opts...)
	defer reg.Close()
	reg.ConfigureStore("main", "memory", nil)
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "main", RatePerSecond: 0.001, Burst: 2})
	for range 3 {
		reg.Try(context.Background(), "api")
	}

	var rm metricdata.ResourceMetrics
	reader.Collect(context.Background(), &rm)
	for _, m := range rm.ScopeMetrics[0].Metrics {
		h := m.Data.(metricdata.Histogram[float64])
		fmt.Println(m.Name, m.Unit, "count", h.DataPoints[0].Count)
	}
	fmt.Println("denied, by my own hook:", denied)
	// Output:
	// ratesync.acquisition.duration s count 2
	// denied, by my own hook: 1
}
