package ratesyncotel

import (
	"context"
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
)

// Options says what Observers records. The zero Options records nothing.
type Options struct {
	// MeterProvider receives the histograms: ratesync.acquisition.duration
	// (how long admitted requests waited, by rule) and
	// ratesync.store.call.duration (the latency of store calls, by store
	// and operation). Nil means no histograms.
	MeterProvider metric.MeterProvider
	// TracerProvider receives one span per store call, a child of the
	// caller's span. Nil means no spans.
	TracerProvider trace.TracerProvider
	// Observer and StoreObserver are the caller's own hooks, called after
	// this package's with the same argument: a registry has one of each
	// (ratesync.WithObserver and WithStoreObserver), so a program that has
	// its own passes them here. Nil means none.
	Observer      ratesync.Observer
	StoreObserver ratesync.StoreObserver
}

// Observers returns the registry options that record what o asks for,
// to pass to ratesync.NewRegistry. It returns no option for a hook with
// nothing to do, since a registry with a hook sends every decision through
// its general path: the wait histogram needs the Observer, the store-call
// histogram and the spans the StoreObserver.
//
// Calls to in-process stores (the memory engine) are neither timed nor
// traced: they make no call over a network, and Registry.Stores (hence
// ratesyncprom) keeps no latency for them either.
func Observers(o Options) ([]ratesync.RegistryOption, error) {
	ob, err := newObservers(o)
	if err != nil {
		return nil, err
	}
	var opts []ratesync.RegistryOption
	switch {
	case ob.wait != nil:
		opts = append(opts, ratesync.WithObserver(ob.observe))
	case ob.next != nil:
		opts = append(opts, ratesync.WithObserver(ob.next))
	}
	switch {
	case ob.storeCall != nil || ob.tracer != nil:
		opts = append(opts, ratesync.WithStoreObserver(ob.observeStore))
	case ob.nextStore != nil:
		opts = append(opts, ratesync.WithStoreObserver(ob.nextStore))
	}
	return opts, nil
}

func newObservers(o Options) (*observers, error) {
	ob := &observers{next: o.Observer, nextStore: o.StoreObserver}
	if o.MeterProvider != nil {
		m := o.MeterProvider.Meter(ScopeName)
		var err1, err2 error
		ob.wait, err1 = m.Float64Histogram(waitName, metric.WithUnit("s"),
			metric.WithDescription("Time admitted requests waited, by rule: Acquire's waits, and Try's and composite checks' admissions as zero."),
			metric.WithExplicitBucketBoundaries(waitBounds...))
		ob.storeCall, err2 = m.Float64Histogram(storeCallName, metric.WithUnit("s"),
			metric.WithDescription("Latency of store calls, by store and operation (decide, peek, release, extend, reset, reset_all)."),
			metric.WithExplicitBucketBoundaries(storeBounds...))
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
	}
	if o.TracerProvider != nil {
		ob.tracer = o.TracerProvider.Tracer(ScopeName)
	}
	return ob, nil
}

// Bucket bounds, in seconds: those of ratesync's own histograms (rate-sync's
// for waits), so that both exports count alike.
var (
	waitBounds  = []float64{.001, .005, .01, .025, .05, .075, .1, .25, .5, .75, 1, 2.5, 5, 7.5, 10}
	storeBounds = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}
)

type observers struct {
	wait, storeCall metric.Float64Histogram // nil without a MeterProvider
	tracer          trace.Tracer            // nil without a TracerProvider
	next            ratesync.Observer
	nextStore       ratesync.StoreObserver

	ruleAttrs  cache[[2]string, []metric.RecordOption]   // rule, engine
	storeAttrs cache[[2]string, []metric.RecordOption]   // store, op
	spanAttrs  cache[[3]string, []trace.SpanStartOption] // store, engine, op
}

// observe records the wait of an admitted request: its Count is then
// Metrics.Acquisitions, as the wait histogram of Limiter.Metrics. A request
// a shadow rule admitted only because it is in shadow mode is a denial.
func (ob *observers) observe(e ratesync.Event) {
	if e.Err == nil && e.Decision.Allowed && !e.Decision.Shadow {
		opts := ob.ruleAttrs.get([2]string{e.Limiter, e.Engine}, func(k [2]string) []metric.RecordOption {
			return []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(limiterKey.String(k[0]), engineKey.String(k[1])))}
		})
		// An Event has no context: exemplars cannot name the caller's span.
		ob.wait.Record(context.Background(), e.Wait.Seconds(), opts...)
	}
	if ob.next != nil {
		ob.next(e)
	}
}

// observeStore records the latency of a store call (but of one the open
// breaker kept from the store, which has none) and its span.
func (ob *observers) observeStore(c ratesync.StoreCall) {
	if !c.InProcess {
		end := time.Now()
		ctx := c.Context
		if ctx == nil {
			ctx = context.Background()
		}
		if ob.storeCall != nil && !errors.Is(c.Err, ratesync.ErrCircuitOpen) {
			opts := ob.storeAttrs.get([2]string{c.Store, c.Op}, func(k [2]string) []metric.RecordOption {
				return []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(storeKey.String(k[0]), operationKey.String(k[1])))}
			})
			ob.storeCall.Record(ctx, c.Duration.Seconds(), opts...)
		}
		if ob.tracer != nil {
			ob.span(ctx, c, end)
		}
	}
	if ob.nextStore != nil {
		ob.nextStore(c)
	}
}

// span records the store call c, which ended at end, as a client span
// under the caller's span.
func (ob *observers) span(ctx context.Context, c ratesync.StoreCall, end time.Time) {
	opts := ob.spanAttrs.get([3]string{c.Store, c.Engine, c.Op}, func(k [3]string) []trace.SpanStartOption {
		kvs := []attribute.KeyValue{storeKey.String(k[0]), engineKey.String(k[1]), semconv.DBOperationName(k[2])}
		switch k[1] {
		case "redis":
			kvs = append(kvs, semconv.DBSystemNameRedis)
		case "postgres":
			kvs = append(kvs, semconv.DBSystemNamePostgreSQL)
		}
		return []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(kvs...)}
	})
	opts = append(opts[:len(opts):len(opts)], trace.WithTimestamp(end.Add(-c.Duration)))
	_, span := ob.tracer.Start(ctx, "ratesync."+c.Op, opts...)
	if c.Err != nil {
		span.SetAttributes(semconv.ErrorTypeKey.String(errorType(c.Err)))
		span.SetStatus(codes.Error, c.Err.Error())
	}
	span.End(trace.WithTimestamp(end))
}

// errorType is the error.type of a failed store call: a few kinds that
// say what to look at, never the error's text.
func errorType(err error) string {
	switch {
	case errors.Is(err, ratesync.ErrCircuitOpen):
		return "circuit_open"
	case errors.Is(err, ratesync.ErrCallTimeout):
		return "call_timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline_exceeded"
	case driver.IsUnavailable(err):
		return "unavailable"
	}
	return semconv.ErrorTypeOther.Value.AsString()
}

// cache maps names to what is derived from them once (attribute sets,
// span options), so that recording allocates nothing: reads load an
// immutable map, writes copy it. Its size is bounded by the
// configuration's names.
type cache[K comparable, V any] struct {
	mu sync.Mutex
	m  atomic.Pointer[map[K]V]
}

func (c *cache[K, V]) get(k K, derive func(K) V) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[K]V
	if p := c.m.Load(); p != nil {
		old = *p
	}
	if v, ok := old[k]; ok {
		return v
	}
	m := maps.Clone(old)
	if m == nil {
		m = map[K]V{}
	}
	v := derive(k)
	m[k] = v
	c.m.Store(&m)
	return v
}
