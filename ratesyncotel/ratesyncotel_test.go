package ratesyncotel_test

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/memstore"
	"github.com/rate-sync/ratesync-go/ratesyncotel"
)

// The instruments, their units and kinds: one table, so that a rename
// shows here first.
var wantInstruments = map[string][2]string{
	"ratesync.acquisitions":                {"{request}", "counter"},
	"ratesync.decisions":                   {"{decision}", "counter"},
	"ratesync.shadow_denials":              {"{decision}", "counter"},
	"ratesync.timeouts":                    {"{call}", "counter"},
	"ratesync.fallback_decisions":          {"{decision}", "counter"},
	"ratesync.rule_store_errors":           {"{decision}", "counter"},
	"ratesync.waiting":                     {"{call}", "updown"},
	"ratesync.leases_in_use":               {"{lease}", "updown"},
	"ratesync.acquisition.duration":        {"s", "histogram"},
	"ratesync.store.call.duration":         {"s", "histogram"},
	"ratesync.store.errors":                {"{call}", "counter"},
	"ratesync.store.circuit_breaker.state": {"1", "gauge"},
	"ratesync.store.fallback_active":       {"1", "gauge"},
	"ratesync.config.reloads":              {"{reload}", "counter"},
}

func TestInstruments(t *testing.T) {
	mp, reader := metricsProvider(t)
	reg := newRegistry(t, ratesyncotel.Options{MeterProvider: mp})
	reg.ConfigureStore("mem", "memory", nil)
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "mem", RatePerSecond: 0.001, Burst: 2})
	reg.ConfigureLimiter("jobs", ratesync.Rule{Store: "mem", MaxConcurrent: 1, Timeout: 20 * time.Millisecond})
	reg.ConfigureLimiter("paced", ratesync.Rule{Store: "mem", RatePerSecond: 50})
	mem := memstore.New()
	defer mem.Close()
	reg.AddStore("net", remote{mem})
	reg.ConfigureLimiter("remote", ratesync.Rule{Store: "net", MaxConcurrent: 2})

	api, _ := reg.Get("api")
	for i := range 100 { // 100 clients: the attributes must not grow with them
		for range 3 {
			api.For("client-" + strconv.Itoa(i)).Try(ctx)
		}
	}
	jobs, _ := reg.Get("jobs")
	held, err := jobs.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(ctx)
	if _, err := jobs.Acquire(ctx); !errors.Is(err, ratesync.ErrTimeout) {
		t.Fatalf("second acquire: %v", err)
	}
	paced, _ := reg.Get("paced")
	for range 2 { // the second waits for the rate (20 ms): a wait that is not zero
		if _, err := paced.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rl, _ := reg.Get("remote")
	for range 3 {
		d, err := rl.Try(ctx)
		if err != nil || !d.Allowed {
			t.Fatalf("remote: %+v %v", d, err)
		}
		d.Lease.Release(ctx)
	}

	got := collect(t, reader)
	for name, want := range wantInstruments {
		in, ok := got[name]
		if !ok {
			t.Errorf("instrument %s missing", name)
			continue
		}
		if in.Unit != want[0] || in.Kind != want[1] {
			t.Errorf("%s: unit %q kind %s, want %q %s", name, in.Unit, in.Kind, want[0], want[1])
		}
	}
	for name := range got {
		if _, ok := wantInstruments[name]; !ok {
			t.Errorf("unexpected instrument %s", name)
		}
	}
	// The numbers of the traffic, as ratesyncprom_test.go counts the same.
	for name, want := range map[string][]string{
		"ratesync.acquisitions": {
			"{ratesync.engine=memory,ratesync.limiter=api} 200",
			"{ratesync.engine=memory,ratesync.limiter=jobs} 1",
			"{ratesync.engine=memory,ratesync.limiter=paced} 2",
			"{ratesync.engine=ratesyncotel_test.remote,ratesync.limiter=remote} 3",
		},
		"ratesync.decisions": {
			"{ratesync.limiter=api,ratesync.result=allowed} 200",
			"{ratesync.limiter=api,ratesync.result=denied} 100",
			"{ratesync.limiter=api,ratesync.result=timeout} 0",
			"{ratesync.limiter=jobs,ratesync.result=allowed} 1",
			"{ratesync.limiter=jobs,ratesync.result=denied} 0",
			"{ratesync.limiter=jobs,ratesync.result=timeout} 1",
			"{ratesync.limiter=paced,ratesync.result=allowed} 2",
			"{ratesync.limiter=paced,ratesync.result=denied} 0",
			"{ratesync.limiter=paced,ratesync.result=timeout} 0",
			"{ratesync.limiter=remote,ratesync.result=allowed} 3",
			"{ratesync.limiter=remote,ratesync.result=denied} 0",
			"{ratesync.limiter=remote,ratesync.result=timeout} 0",
		},
		"ratesync.leases_in_use": {
			"{ratesync.limiter=api} 0", "{ratesync.limiter=jobs} 1", "{ratesync.limiter=paced} 0", "{ratesync.limiter=remote} 0",
		},
		"ratesync.store.errors": {
			"{ratesync.operation=decide,ratesync.store=net} 0", "{ratesync.operation=release,ratesync.store=net} 0",
		},
		"ratesync.store.circuit_breaker.state": {
			"{ratesync.circuit_breaker.state=closed,ratesync.store=mem} 1",
			"{ratesync.circuit_breaker.state=closed,ratesync.store=net} 1",
			"{ratesync.circuit_breaker.state=half_open,ratesync.store=mem} 0",
			"{ratesync.circuit_breaker.state=half_open,ratesync.store=net} 0",
			"{ratesync.circuit_breaker.state=open,ratesync.store=mem} 0",
			"{ratesync.circuit_breaker.state=open,ratesync.store=net} 0",
		},
	} {
		if v := got[name].values(); !slices.Equal(v, want) {
			t.Errorf("%s:\n got %q\nwant %q", name, v, want)
		}
	}
	// Histograms: every admission, Try's as zero waits; store calls of the
	// network store only (the memory store makes none).
	for at, want := range map[string]uint64{
		"ratesync.engine=memory,ratesync.limiter=api":                      200,
		"ratesync.engine=memory,ratesync.limiter=jobs":                     1,
		"ratesync.engine=memory,ratesync.limiter=paced":                    2,
		"ratesync.engine=ratesyncotel_test.remote,ratesync.limiter=remote": 3,
	} {
		if c := got["ratesync.acquisition.duration"].Points[at].Count; c != want {
			t.Errorf("acquisition.duration{%s}: count %d, want %d", at, c, want)
		}
	}
	if p := got["ratesync.acquisition.duration"].Points["ratesync.engine=memory,ratesync.limiter=paced"]; p.Sum < 0.015 || p.Sum > 1 {
		t.Errorf("paced waited %v s in all, want about 0.02", p.Sum)
	}
	if keys := slices.Sorted(maps.Keys(got["ratesync.store.call.duration"].Points)); !slices.Equal(keys, []string{
		"ratesync.operation=decide,ratesync.store=net", "ratesync.operation=release,ratesync.store=net"}) {
		t.Errorf("store.call.duration series %q", keys)
	}
	checkAgainstSnapshots(t, got, reg)
}

// Register alone adds nothing to a decision: Try keeps its in-process
// path, which allocates nothing.
func TestRegisterKeepsTheFastPath(t *testing.T) {
	mp, reader := metricsProvider(t)
	reg := newRegistry(t, ratesyncotel.Options{}) // no hooks
	if _, err := ratesyncotel.Register(mp, reg); err != nil {
		t.Fatal(err)
	}
	reg.ConfigureStore("mem", "memory", nil)
	if err := reg.ConfigureLimiter("api", ratesync.Rule{Store: "mem", RatePerSecond: 0.001, Burst: 2}); err != nil {
		t.Fatal(err)
	}
	api, _ := reg.Get("api")
	if n := testing.AllocsPerRun(1000, func() { api.For("client").Try(ctx) }); n != 0 {
		t.Fatalf("Try with instruments registered: %v allocations, want 0", n)
	}
	got := collect(t, reader)
	wantValue(t, got, "ratesync.decisions", "ratesync.limiter=api,ratesync.result=allowed", 2)
	wantValue(t, got, "ratesync.decisions", "ratesync.limiter=api,ratesync.result=denied", 999)
}

// Observers returns a hook only when it has something to do with it.
func TestObserversOptions(t *testing.T) {
	mp, _ := metricsProvider(t)
	tp, _ := tracesProvider(t)
	mine := func(ratesync.Event) {}
	mineStore := func(ratesync.StoreCall) {}
	for _, tc := range []struct {
		name string
		o    ratesyncotel.Options
		want int
	}{
		{"zero", ratesyncotel.Options{}, 0},
		{"meter", ratesyncotel.Options{MeterProvider: mp}, 2},
		{"tracer", ratesyncotel.Options{TracerProvider: tp}, 1},
		{"own observer", ratesyncotel.Options{Observer: mine}, 1},
		{"own both", ratesyncotel.Options{Observer: mine, StoreObserver: mineStore}, 2},
		{"tracer and own observer", ratesyncotel.Options{TracerProvider: tp, Observer: mine}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := ratesyncotel.Observers(tc.o)
			if err != nil || len(opts) != tc.want {
				t.Fatalf("Observers: %d options, %v; want %d", len(opts), err, tc.want)
			}
		})
	}
}

// The caller's own hooks see every event after this package's.
func TestObserversChain(t *testing.T) {
	mp, reader := metricsProvider(t)
	tp, sr := tracesProvider(t)
	var events []ratesync.Event
	var calls []ratesync.StoreCall
	reg := newRegistry(t, ratesyncotel.Options{MeterProvider: mp, TracerProvider: tp,
		Observer:      func(e ratesync.Event) { events = append(events, e) },
		StoreObserver: func(c ratesync.StoreCall) { calls = append(calls, c) },
	})
	mem := memstore.New()
	defer mem.Close()
	reg.AddStore("net", remote{mem})
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "net", RatePerSecond: 0.001})
	for range 2 {
		reg.Try(ctx, "api")
	}
	if len(events) != 2 || !events[0].Decision.Allowed || events[1].Decision.Allowed {
		t.Fatalf("own observer saw %+v", events)
	}
	if len(calls) != 2 || len(sr.Ended()) != 2 {
		t.Fatalf("own store observer saw %d calls, %d spans", len(calls), len(sr.Ended()))
	}
	// A span lasts the call's Duration and ends when the call is reported.
	for i, s := range sr.Ended() {
		if d := s.EndTime().Sub(s.StartTime()); d != calls[i].Duration {
			t.Errorf("span %d lasts %v, the call %v", i, d, calls[i].Duration)
		}
	}
	wantValue(t, collect(t, reader), "ratesync.decisions", "ratesync.limiter=api,ratesync.result=denied", 1)
}

// Spans: one per call to a network store, a client span under the
// caller's span, lasting the call; none for the memory store.
func TestSpans(t *testing.T) {
	tp, sr := tracesProvider(t)
	var calls []ratesync.StoreCall
	reg := newRegistry(t, ratesyncotel.Options{TracerProvider: tp, StoreObserver: func(c ratesync.StoreCall) { calls = append(calls, c) }})
	reg.ConfigureStore("mem", "memory", nil)
	reg.ConfigureLimiter("local", ratesync.Rule{Store: "mem", MaxConcurrent: 2})
	mem := memstore.New()
	defer mem.Close()
	reg.AddStore("net", remote{mem})
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "net", MaxConcurrent: 2})

	pctx, parent := tp.Tracer("test").Start(ctx, "handler")
	if err := reg.Do(pctx, "local", func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if n := len(sr.Ended()); n != 0 || len(calls) != 2 {
		t.Fatalf("memory store: %d spans (want none), %d calls to the observer", n, len(calls))
	}
	if err := reg.Do(pctx, "api", func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	parent.End()
	spans := sr.Ended()
	if len(spans) != 3 { // decide, release, handler
		t.Fatalf("%d spans, want 3", len(spans))
	}
	for i, op := range []string{"decide", "release"} {
		s := spans[i]
		if s.Name() != "ratesync."+op || s.SpanKind() != trace.SpanKindClient {
			t.Errorf("span %d: %s %v", i, s.Name(), s.SpanKind())
		}
		if s.Parent().SpanID() != parent.SpanContext().SpanID() || s.SpanContext().TraceID() != parent.SpanContext().TraceID() {
			t.Errorf("span %s: parent %v, want the caller's %v", s.Name(), s.Parent().SpanID(), parent.SpanContext().SpanID())
		}
		if s.Status().Code != codes.Unset {
			t.Errorf("span %s: status %v", s.Name(), s.Status())
		}
		if d := s.EndTime().Sub(s.StartTime()); d != calls[2+i].Duration || d <= 0 {
			t.Errorf("span %s lasts %v, the call %v", s.Name(), d, calls[2+i].Duration)
		}
		got := map[string]string{}
		for _, kv := range s.Attributes() {
			got[string(kv.Key)] = kv.Value.Emit()
		}
		want := map[string]string{"ratesync.store": "net", "ratesync.engine": "ratesyncotel_test.remote", "db.operation.name": op}
		if !mapsEqual(got, want) {
			t.Errorf("span %s attributes %v, want %v", s.Name(), got, want)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// A failing store: error spans, the failures counted, the breaker that
// opens seen as a state and as calls skipped (counted as errors, without a
// latency of their own).
func TestFailingStore(t *testing.T) {
	mp, reader := metricsProvider(t)
	tp, sr := tracesProvider(t)
	reg := newRegistry(t, ratesyncotel.Options{MeterProvider: mp, TracerProvider: tp})
	mem := memstore.New()
	defer mem.Close()
	f := &faulty{remote: remote{mem}, fail: true}
	reg.AddStore("net", f, ratesync.WithBreaker(2, time.Hour))
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "net", RatePerSecond: 100}) // on_store_error local
	reg.ConfigureLimiter("strict", ratesync.Rule{Store: "net", RatePerSecond: 100, OnStoreError: ratesync.Deny})
	for range 2 {
		d, err := reg.Try(ctx, "api")
		if err != nil || !d.Fallback {
			t.Fatalf("failing store, local policy: %+v %v", d, err)
		}
	}
	if _, err := reg.Try(ctx, "strict"); !errors.Is(err, ratesync.ErrStore) {
		t.Fatalf("open breaker, deny policy: %v", err)
	}
	spans := sr.Ended()
	if len(spans) != 3 {
		t.Fatalf("%d spans, want 3", len(spans))
	}
	for i, want := range []string{"unavailable", "unavailable", "circuit_open"} {
		s := spans[i]
		var et string
		for _, kv := range s.Attributes() {
			if kv.Key == "error.type" {
				et = kv.Value.AsString()
			}
		}
		if s.Status().Code != codes.Error || et != want {
			t.Errorf("span %d: status %v, error.type %q; want Error, %q", i, s.Status(), et, want)
		}
		if i == 2 && !s.EndTime().Equal(s.StartTime()) {
			t.Errorf("call the open breaker skipped lasts %v", s.EndTime().Sub(s.StartTime()))
		}
	}
	got := collect(t, reader)
	wantValue(t, got, "ratesync.store.errors", "ratesync.operation=decide,ratesync.store=net", 3)
	wantValue(t, got, "ratesync.store.circuit_breaker.state", "ratesync.circuit_breaker.state=open,ratesync.store=net", 1)
	wantValue(t, got, "ratesync.store.fallback_active", "ratesync.store=net", 1)
	wantValue(t, got, "ratesync.fallback_decisions", "ratesync.limiter=api", 2)
	wantValue(t, got, "ratesync.rule_store_errors", "ratesync.limiter=strict", 1)
	if c := got["ratesync.store.call.duration"].Points["ratesync.operation=decide,ratesync.store=net"].Count; c != 2 {
		t.Errorf("store call latency of %d calls, want the 2 that reached the store", c)
	}
	checkAgainstSnapshots(t, got, reg)
}

// A caller that leaves during a store call: its call ends with its
// context's error, and the span says so, under the caller's span.
func TestCancelledCaller(t *testing.T) {
	mp, reader := metricsProvider(t)
	tp, sr := tracesProvider(t)
	reg := newRegistry(t, ratesyncotel.Options{MeterProvider: mp, TracerProvider: tp})
	mem := memstore.New()
	defer mem.Close()
	f := &faulty{remote: remote{mem}, block: make(chan struct{}), started: make(chan struct{}, 1)}
	reg.AddStore("net", f, ratesync.WithCallTimeout(time.Minute))
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "net", RatePerSecond: 100, OnStoreError: ratesync.Deny})

	pctx, parent := tp.Tracer("test").Start(ctx, "handler")
	cctx, cancel := context.WithCancel(pctx)
	go func() { <-f.started; cancel() }()
	start := time.Now()
	_, err := reg.Try(cctx, "api")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Try of a caller that left: %v", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("Try returned after %v", el)
	}
	close(f.block) // the store call may end now; its span is the caller's
	parent.End()
	spans := sr.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want the store call's and the handler's", len(spans))
	}
	s := spans[0]
	if s.Parent().SpanID() != parent.SpanContext().SpanID() || s.Status().Code != codes.Error {
		t.Fatalf("span %s: parent %v status %v", s.Name(), s.Parent().SpanID(), s.Status())
	}
	if !slices.ContainsFunc(s.Attributes(), func(kv attribute.KeyValue) bool { return kv.Key == "error.type" && kv.Value.AsString() == "canceled" }) {
		t.Errorf("span attributes %v: want error.type canceled", s.Attributes())
	}
	// A cancelled caller is not a store failure: nothing opens the breaker.
	got := collect(t, reader)
	wantValue(t, got, "ratesync.store.circuit_breaker.state", "ratesync.circuit_breaker.state=closed,ratesync.store=net", 1)
	// A caller already gone calls no store: no span.
	reg.Try(cctx, "api")
	if n := len(sr.Ended()); n != 2 {
		t.Errorf("a call with a done context made %d more spans", n-2)
	}
}

// No identifier, however hostile, reaches an attribute, a span name or a
// status: the series and spans are those of the rule names.
func TestHostileIdentifiers(t *testing.T) {
	mp, reader := metricsProvider(t)
	tp, sr := tracesProvider(t)
	reg := newRegistry(t, ratesyncotel.Options{MeterProvider: mp, TracerProvider: tp})
	mem := memstore.New()
	defer mem.Close()
	reg.AddStore("net", remote{mem})
	reg.ConfigureStore("mem", "memory", nil)
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "net", RatePerSecond: 0.001, Burst: 1})
	reg.ConfigureLimiter("login_ip", ratesync.Rule{Store: "mem", Limit: 1, Window: time.Hour})
	reg.ConfigureLimiter("login_account", ratesync.Rule{Store: "mem", Limit: 1, Window: time.Hour})
	hostile := []string{
		"", "\x00", "\xff\xfe", "ratesync.limiter=api", "api", "login_ip", "a,b=c", "{}", "%3A:%25",
		"line\nbreak", "\r\n# HELP x", "🚀", strings.Repeat("A", 64<<10), "client-secret-7",
	}
	for i := range 200 {
		hostile = append(hostile, "user-"+strconv.Itoa(i)+"@example.com")
	}
	login, err := reg.Composite(map[string]string{"ip": "login_ip", "account": "login_account"}, ratesync.AllMustPass)
	if err != nil {
		t.Fatal(err)
	}
	pctx, parent := tp.Tracer("test").Start(ctx, "handler")
	tmpl, _ := reg.Template("api:{user}")
	for _, id := range hostile {
		l, _ := reg.For("api", id, id)
		l.Try(pctx)
		l, _ = tmpl.Resolve(ratesync.Values{"user": id})
		l.Try(pctx, ratesync.WithCost(1))
		login.Check(pctx, map[string]string{"ip": id, "account": id})
	}
	parent.End()

	allowed := map[string]bool{ // every name an attribute may carry
		"api": true, "login_ip": true, "login_account": true, "net": true, "mem": true, "memory": true,
		"ratesyncotel_test.remote": true, "decide": true, "release": true, "allowed": true, "denied": true,
		"timeout": true, "closed": true, "half_open": true, "open": true, "success": true, "failure": true,
	}
	got := collect(t, reader)
	for name, in := range got {
		for _, kvs := range in.Keys {
			for _, kv := range kvs {
				if v := kv.Value.Emit(); !allowed[v] {
					t.Errorf("%s: attribute %s=%.40q is no configured name", name, kv.Key, v)
				}
			}
		}
	}
	if n := len(got["ratesync.decisions"].Points); n != 9 {
		t.Errorf("ratesync.decisions: %d series for 3 rules, want 9", n)
	}
	checkAgainstSnapshots(t, got, reg)
	spans := sr.Ended()
	if len(spans) != 2*len(hostile)+1 {
		t.Errorf("%d spans, want %d", len(spans), 2*len(hostile)+1)
	}
	for _, s := range spans[:len(spans)-1] {
		if s.Name() != "ratesync.decide" || s.Status().Description != "" || len(s.Events()) != 0 {
			t.Errorf("span %q status %v events %v", s.Name(), s.Status(), s.Events())
		}
		for _, kv := range s.Attributes() {
			if v := kv.Value.Emit(); !allowed[v] && v != "ratesync.decide" {
				t.Errorf("span attribute %s=%.40q is no configured name", kv.Key, v)
			}
		}
	}
}

// Shadow rules: the requests they would have denied, admitted anyway, are
// counted apart (and among the rule's denials, as Limiter.Metrics does).
func TestShadowDenials(t *testing.T) {
	mp, reader := metricsProvider(t)
	reg := newRegistry(t, ratesyncotel.Options{MeterProvider: mp})
	reg.ConfigureStore("mem", "memory", nil)
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "mem", RatePerSecond: 0.001, Burst: 1, Shadow: true})
	for range 3 {
		d, err := reg.Try(ctx, "api")
		if err != nil || !d.Allowed {
			t.Fatalf("shadow rule: %+v %v", d, err)
		}
	}
	got := collect(t, reader)
	wantValue(t, got, "ratesync.shadow_denials", "ratesync.limiter=api", 2)
	checkAgainstSnapshots(t, got, reg)
}

func TestConfigReloads(t *testing.T) {
	mp, reader := metricsProvider(t)
	reg := newRegistry(t, ratesyncotel.Options{MeterProvider: mp})
	good, err := ratesync.ParseConfig("t.toml", []byte("[stores.m]\nengine = \"memory\"\n[limiters.api]\nstore = \"m\"\nrate_per_second = 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	bad, _ := ratesync.ParseConfig("t.toml", []byte("[limiters.api]\nstore = \"gone\"\nrate_per_second = 1\n"))
	for _, cfg := range []*ratesync.Config{good, bad, good} {
		reg.Reload(cfg)
	}
	got := collect(t, reader)
	wantValue(t, got, "ratesync.config.reloads", "ratesync.result=success", 2)
	wantValue(t, got, "ratesync.config.reloads", "ratesync.result=failure", 1)
}

// With no registry, the package functions' registry is read.
func TestDefaultRegistry(t *testing.T) {
	defaultRuns++ // a rule of its own per run: -count=2 reuses the default registry
	rule := "api" + strconv.Itoa(defaultRuns)
	path := filepath.Join(t.TempDir(), "rate-sync.toml")
	os.WriteFile(path, []byte("[stores.main]\nengine = \"memory\"\n[limiters."+rule+"]\nstore = \"main\"\nrate_per_second = 1.0\n"), 0o600)
	if err := ratesync.LoadConfig(path); err != nil {
		t.Fatal(err)
	}
	mp, reader := metricsProvider(t)
	r, err := ratesyncotel.Register(mp)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Unregister()
	ratesync.Try(ctx, rule)
	ratesync.Try(ctx, rule)
	got := collect(t, reader)
	wantValue(t, got, "ratesync.decisions", "ratesync.limiter="+rule+",ratesync.result=allowed", 1)
	wantValue(t, got, "ratesync.decisions", "ratesync.limiter="+rule+",ratesync.result=denied", 1)
}

var defaultRuns int

func TestNilMeterProvider(t *testing.T) {
	if _, err := ratesyncotel.Register(nil); err == nil {
		t.Fatal("nil MeterProvider accepted")
	}
}

// Unregister stops the reading: the registry's instruments are gone from
// the next collection.
func TestUnregister(t *testing.T) {
	mp, reader := metricsProvider(t)
	reg := ratesync.NewRegistry()
	defer reg.Close()
	reg.ConfigureStore("mem", "memory", nil)
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "mem", RatePerSecond: 1})
	r, err := ratesyncotel.Register(mp, reg)
	if err != nil {
		t.Fatal(err)
	}
	if len(collect(t, reader)["ratesync.decisions"].Points) != 3 {
		t.Fatal("no decisions before Unregister")
	}
	if err := r.Unregister(); err != nil {
		t.Fatal(err)
	}
	if n := len(collect(t, reader)["ratesync.decisions"].Points); n != 0 {
		t.Fatalf("%d points after Unregister", n)
	}
}

// The noop providers of the API work too (and are what the benchmark
// measures as the hooks' own cost).
func TestNoopProviders(t *testing.T) {
	tp, _ := tracesProvider(t)
	reg := newRegistry(t, ratesyncotel.Options{MeterProvider: noop.NewMeterProvider(), TracerProvider: tp})
	reg.ConfigureStore("mem", "memory", nil)
	reg.ConfigureLimiter("api", ratesync.Rule{Store: "mem", RatePerSecond: 1})
	if d, err := reg.Try(ctx, "api"); err != nil || !d.Allowed {
		t.Fatalf("%+v %v", d, err)
	}
}
