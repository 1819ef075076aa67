package ratesyncotel_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/ratesyncotel"
)

var ctx = context.Background()

// point is one data point of an instrument, by attribute set.
type point struct {
	Value   int64     // counters, up-down counters, gauges
	Count   uint64    // histograms
	Sum     float64   // histograms
	Bounds  []float64 // histograms
	Buckets []uint64  // histograms: per bucket, len(Bounds)+1
}

// instrument is what the reader collected of one instrument.
type instrument struct {
	Unit   string
	Kind   string           // counter, updown, gauge, histogram
	Points map[string]point // by attributes, encoded "k=v,k=v" (sorted)
	Keys   [][]attribute.KeyValue
}

// collect reads every instrument of the ratesyncotel scope from r.
func collect(t testing.TB, r *sdkmetric.ManualReader) map[string]instrument {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(ctx, &rm); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	out := map[string]instrument{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != ratesyncotel.ScopeName {
			t.Fatalf("scope %q, want %q", sm.Scope.Name, ratesyncotel.ScopeName)
		}
		for _, m := range sm.Metrics {
			in := instrument{Unit: m.Unit, Points: map[string]point{}}
			add := func(set attribute.Set, p point) {
				k := set.Encoded(attribute.DefaultEncoder())
				if _, dup := in.Points[k]; dup {
					t.Fatalf("%s: two points for {%s}", m.Name, k)
				}
				in.Points[k] = p
				in.Keys = append(in.Keys, set.ToSlice())
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				in.Kind = "updown"
				if d.IsMonotonic {
					in.Kind = "counter"
				}
				if d.Temporality != metricdata.CumulativeTemporality {
					t.Fatalf("%s: temporality %v", m.Name, d.Temporality)
				}
				for _, dp := range d.DataPoints {
					add(dp.Attributes, point{Value: dp.Value})
				}
			case metricdata.Gauge[int64]:
				in.Kind = "gauge"
				for _, dp := range d.DataPoints {
					add(dp.Attributes, point{Value: dp.Value})
				}
			case metricdata.Histogram[float64]:
				in.Kind = "histogram"
				for _, dp := range d.DataPoints {
					add(dp.Attributes, point{Count: dp.Count, Sum: dp.Sum, Bounds: dp.Bounds, Buckets: dp.BucketCounts})
				}
			default:
				t.Fatalf("%s: unexpected data %T", m.Name, m.Data)
			}
			out[m.Name] = in
		}
	}
	return out
}

// values returns the points of a sum or gauge as "attrs=value" lines, sorted.
func (in instrument) values() []string {
	var out []string
	for k, p := range in.Points {
		out = append(out, fmt.Sprintf("{%s} %d", k, p.Value))
	}
	slices.Sort(out)
	return out
}

// metricsProvider returns an SDK MeterProvider and its in-memory reader.
func metricsProvider(t testing.TB) (*sdkmetric.MeterProvider, *sdkmetric.ManualReader) {
	t.Helper()
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() { mp.Shutdown(ctx) })
	return mp, r
}

// tracesProvider returns an SDK TracerProvider that records every span.
func tracesProvider(t testing.TB) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { tp.Shutdown(ctx) })
	return tp, sr
}

// newRegistry returns a registry with ratesyncotel's observers for o and
// its observable instruments registered on mp (when not nil).
func newRegistry(t testing.TB, o ratesyncotel.Options) *ratesync.Registry {
	t.Helper()
	opts, err := ratesyncotel.Observers(o)
	if err != nil {
		t.Fatal(err)
	}
	reg := ratesync.NewRegistry(append(opts, ratesync.WithLogger(slog.New(slog.DiscardHandler)))...)
	t.Cleanup(func() { reg.Close() })
	if o.MeterProvider != nil {
		r, err := ratesyncotel.Register(o.MeterProvider, reg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Unregister() })
	}
	return reg
}

// remote is a memory store seen through the driver.Store interface only,
// so that the registry calls it as a network store (per-call stats, a
// call timeout, a breaker).
type remote struct{ driver.Store }

// faulty is a network store whose calls fail as unavailable, or, while
// block is set, wait for it to close (or for their context) after saying
// so on started.
type faulty struct {
	remote
	mu      sync.Mutex
	fail    bool
	block   chan struct{}
	started chan struct{}
}

func (f *faulty) Decide(ctx context.Context, checks []driver.Check, results []driver.Result) (bool, error) {
	f.mu.Lock()
	fail, block, started := f.fail, f.block, f.started
	f.mu.Unlock()
	if block != nil {
		started <- struct{}{}
		select {
		case <-block:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	if fail {
		return false, driver.Unavailable(fmt.Errorf("faulty store: connection refused"))
	}
	return f.remote.Decide(ctx, checks, results)
}

// checkAgainstSnapshots holds every instrument to the registry's own
// counters (Limiter.Metrics, Registry.Stores), which ratesyncprom exports:
// the two exports report the same numbers for the same traffic.
func checkAgainstSnapshots(t *testing.T, got map[string]instrument, reg *ratesync.Registry) {
	t.Helper()
	engines := map[string]string{}
	for _, s := range reg.Stores() {
		engines[s.Name] = s.Engine
		for _, c := range s.Calls {
			at := fmt.Sprintf("ratesync.operation=%s,ratesync.store=%s", c.Op, s.Name)
			wantValue(t, got, "ratesync.store.errors", at, c.Errors)
			if c.Latency.Count == 0 {
				if _, ok := got["ratesync.store.call.duration"].Points[at]; ok {
					t.Errorf("store call latency {%s} recorded, none in Registry.Stores", at)
				}
				continue
			}
			wantHistogram(t, got, "ratesync.store.call.duration", at, c.Latency)
		}
		state := map[ratesync.BreakerState]string{ratesync.BreakerClosed: "closed", ratesync.BreakerHalfOpen: "half_open", ratesync.BreakerOpen: "open"}[s.Breaker]
		for _, st := range []string{"closed", "half_open", "open"} {
			want := int64(0)
			if st == state {
				want = 1
			}
			wantValue(t, got, "ratesync.store.circuit_breaker.state", fmt.Sprintf("ratesync.circuit_breaker.state=%s,ratesync.store=%s", st, s.Name), want)
		}
		active := int64(0)
		if s.Breaker != ratesync.BreakerClosed {
			active = 1
		}
		wantValue(t, got, "ratesync.store.fallback_active", "ratesync.store="+s.Name, active)
	}
	for _, l := range reg.Limiters() {
		m, rule := l.Metrics, "ratesync.limiter="+l.Name
		byEngine := fmt.Sprintf("ratesync.engine=%s,ratesync.limiter=%s", engines[l.Rule.Store], l.Name)
		wantValue(t, got, "ratesync.acquisitions", byEngine, m.Acquisitions)
		wantValue(t, got, "ratesync.decisions", rule+",ratesync.result=allowed", m.Acquisitions)
		wantValue(t, got, "ratesync.decisions", rule+",ratesync.result=denied", m.Denials)
		wantValue(t, got, "ratesync.decisions", rule+",ratesync.result=timeout", m.Timeouts)
		wantValue(t, got, "ratesync.shadow_denials", rule, m.ShadowDenials)
		wantValue(t, got, "ratesync.timeouts", byEngine, m.Timeouts)
		wantValue(t, got, "ratesync.fallback_decisions", rule, m.Fallbacks)
		wantValue(t, got, "ratesync.rule_store_errors", rule, m.Errors)
		wantValue(t, got, "ratesync.waiting", rule, m.Waiting)
		wantValue(t, got, "ratesync.leases_in_use", rule, m.CurrentConcurrent)
		if m.Acquisitions > 0 {
			wantHistogram(t, got, "ratesync.acquisition.duration", byEngine, m.Wait)
		}
	}
}

func wantValue(t *testing.T, got map[string]instrument, name, attrs string, want int64) {
	t.Helper()
	p, ok := got[name].Points[attrs]
	if !ok {
		t.Errorf("%s{%s}: no point (have %v)", name, attrs, got[name].values())
		return
	}
	if p.Value != want {
		t.Errorf("%s{%s} = %d, want %d", name, attrs, p.Value, want)
	}
}

// wantHistogram compares an OpenTelemetry histogram (counts per bucket)
// with a ratesync one (cumulative counts).
func wantHistogram(t *testing.T, got map[string]instrument, name, attrs string, h ratesync.Histogram) {
	t.Helper()
	p, ok := got[name].Points[attrs]
	if !ok {
		t.Errorf("%s{%s}: no histogram (have %v)", name, attrs, slices.Sorted(maps.Keys(got[name].Points)))
		return
	}
	if p.Count != uint64(h.Count) {
		t.Errorf("%s{%s}: count %d, want %d", name, attrs, p.Count, h.Count)
	}
	if len(p.Bounds) != len(h.Bounds) {
		t.Fatalf("%s{%s}: bounds %v, want %v", name, attrs, p.Bounds, h.Bounds)
	}
	var cum uint64
	for i, b := range h.Bounds {
		if p.Bounds[i] != b.Seconds() {
			t.Errorf("%s{%s}: bound %d = %v, want %v", name, attrs, i, p.Bounds[i], b.Seconds())
		}
		cum += p.Buckets[i]
		if cum != uint64(h.Counts[i]) {
			t.Errorf("%s{%s}: %d at most %v, want %d", name, attrs, cum, b, h.Counts[i])
		}
	}
	if d := math.Abs(p.Sum - h.Sum.Seconds()); d > 1e-6 {
		t.Errorf("%s{%s}: sum %v, want %v", name, attrs, p.Sum, h.Sum.Seconds())
	}
}

// within reports whether d is within tol of want.
func within(d, want, tol time.Duration) bool { return d >= want-tol && d <= want+tol }
