// Package ratesyncotel exports ratesync metrics and traces to
// OpenTelemetry, on the MeterProvider and TracerProvider the caller passes
// (never the global ones). It is the only package of the module that
// imports the OpenTelemetry API.
//
// Register adds the counters and gauges as observable instruments, read
// from the registries' own counters (Limiter.Metrics, Registry.Stores) when
// the SDK collects: nothing is added to a decision, and Try keeps its
// in-process fast path.
//
//	r, err := ratesyncotel.Register(mp)      // the package functions' registry (ratesync.Default)
//	r, err := ratesyncotel.Register(mp, reg) // or registries of your own
//
// OpenTelemetry has no asynchronous histogram, so the two histograms (the
// wait of admitted requests, the latency of store calls) and the spans of
// store calls are recorded as they happen, by the registry hooks that
// Observers returns:
//
//	opts, err := ratesyncotel.Observers(ratesyncotel.Options{MeterProvider: mp, TracerProvider: tp})
//	reg := ratesync.NewRegistry(opts...)
//
// These cost every decision something: see docs/opentelemetry.md for the
// numbers.
//
// The instruments measure what package ratesyncprom exports, named by
// OpenTelemetry's conventions: ratesync.decisions ({decision}), by
// ratesync.limiter and ratesync.result, and so on. Attributes carry rule,
// store, engine and operation names only, never a per-key identifier, so
// cardinality stays bounded by the configuration.
package ratesyncotel

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/rate-sync/ratesync-go"
)

// ScopeName is the instrumentation scope of the meters and tracers this
// package creates.
const ScopeName = "github.com/rate-sync/ratesync-go/ratesyncotel"

// Attribute keys.
const (
	limiterKey   = attribute.Key("ratesync.limiter")   // rule name
	engineKey    = attribute.Key("ratesync.engine")    // store engine
	resultKey    = attribute.Key("ratesync.result")    // allowed, denied, timeout
	storeKey     = attribute.Key("ratesync.store")     // store name
	operationKey = attribute.Key("ratesync.operation") // decide, peek, release, extend, reset, reset_all
	breakerKey   = attribute.Key("ratesync.circuit_breaker.state")
)

// Instrument names and attribute values.
const (
	acquisitionsName   = "ratesync.acquisitions"
	decisionsName      = "ratesync.decisions"
	shadowDenialsName  = "ratesync.shadow_denials"
	reloadsName        = "ratesync.config.reloads"
	timeoutsName       = "ratesync.timeouts"
	fallbacksName      = "ratesync.fallback_decisions"
	ruleErrorsName     = "ratesync.rule_store_errors"
	waitingName        = "ratesync.waiting"
	leasesName         = "ratesync.leases_in_use"
	waitName           = "ratesync.acquisition.duration"
	storeCallName      = "ratesync.store.call.duration"
	storeErrorsName    = "ratesync.store.errors"
	breakerName        = "ratesync.store.circuit_breaker.state"
	fallbackActiveName = "ratesync.store.fallback_active"

	resultAllowed = "allowed"
	resultDenied  = "denied"
	resultTimeout = "timeout"

	breakerClosed   = "closed"
	breakerHalfOpen = "half_open"
	breakerOpen     = "open"
)

// instruments are the observable instruments of Register.
type instruments struct {
	regs []*ratesync.Registry

	acquisitions, decisions, shadowDenials, timeouts, fallbacks, ruleErrors metric.Int64ObservableCounter
	waiting, leases                                                         metric.Int64ObservableUpDownCounter
	storeErrors, reloads                                                    metric.Int64ObservableCounter
	breaker, fallbackActive                                                 metric.Int64ObservableGauge
}

// Register creates the observable counters and gauges of the limiters and
// stores of regs on a meter of mp, with one callback that reads them when
// mp's readers collect; with no registry, it reads ratesync.Default(), the
// registry of the package functions (loaded on first use, as they do; a
// loading error is the callback's error). Several registries must not have
// limiters or stores of the same name. Unregister the returned Registration
// to stop reading them.
//
// The histograms are not among them: see Observers.
func Register(mp metric.MeterProvider, regs ...*ratesync.Registry) (metric.Registration, error) {
	if mp == nil {
		return nil, errors.New("ratesyncotel: Register: nil MeterProvider (pass your own, such as the SDK's)")
	}
	m := mp.Meter(ScopeName)
	in := &instruments{regs: regs}
	var errs []error
	counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	updown := func(name, unit, desc string) metric.Int64ObservableUpDownCounter {
		c, err := m.Int64ObservableUpDownCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	gauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		g, err := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return g
	}
	in.acquisitions = counter(acquisitionsName, "{request}", "Requests admitted, by rule.")
	in.decisions = counter(decisionsName, "{decision}", "Requests by rule and result: allowed (admitted), denied (Try and composite checks this rule denied), timeout (Acquire gave up).")
	in.shadowDenials = counter(shadowDenialsName, "{decision}", "Requests a shadow rule would have denied and admitted anyway; they are among its denied decisions too.")
	in.timeouts = counter(timeoutsName, "{call}", "Acquire calls that gave up, by rule.")
	in.fallbacks = counter(fallbacksName, "{decision}", "Decisions that the rule's on_store_error policy answered because the store could not (local or allow).")
	in.ruleErrors = counter(ruleErrorsName, "{decision}", "Decisions of the rule that its store could not make, whatever the failure policy did.")
	in.waiting = updown(waitingName, "{call}", "Acquire calls waiting now, by rule.")
	in.leases = updown(leasesName, "{lease}", "Concurrency leases held by this process, by rule.")
	in.storeErrors = counter(storeErrorsName, "{call}", "Store calls that failed, by store and operation; calls the open circuit breaker skipped count too.")
	in.breaker = gauge(breakerName, "1", "Circuit breaker of each store: 1 for its current state (closed, half_open or open), 0 for the others.")
	in.reloads = counter(reloadsName, "{reload}", "Configuration reloads (Registry.Reload, WatchConfig), by result: success, or failure (the file was rejected and nothing changed).")
	in.fallbackActive = gauge(fallbackActiveName, "1", "1 while a store's breaker is not closed, so its rules' failure policies answer.")
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m.RegisterCallback(in.observe, in.acquisitions, in.decisions, in.shadowDenials, in.timeouts, in.fallbacks, in.ruleErrors,
		in.waiting, in.leases, in.storeErrors, in.reloads, in.breaker, in.fallbackActive)
}

// observe is the callback: one snapshot of every limiter and store.
func (in *instruments) observe(_ context.Context, o metric.Observer) error {
	regs := in.regs
	if len(regs) == 0 {
		reg, err := ratesync.Default()
		if err != nil {
			return err
		}
		regs = []*ratesync.Registry{reg}
	}
	var applied, rejected int64
	for _, reg := range regs {
		rs := reg.Reloads()
		applied, rejected = applied+rs.Succeeded, rejected+rs.Failed
		engines := map[string]string{}
		for _, s := range reg.Stores() {
			engines[s.Name] = s.Engine
			in.observeStore(o, s)
		}
		for _, l := range reg.Limiters() {
			in.observeRule(o, l, engines[l.Rule.Store])
		}
	}
	o.ObserveInt64(in.reloads, applied, reloadSuccess)
	o.ObserveInt64(in.reloads, rejected, reloadFailure)
	return nil
}

var (
	reloadSuccess = attrs(resultKey.String("success"))
	reloadFailure = attrs(resultKey.String("failure"))
)

func attrs(kvs ...attribute.KeyValue) metric.ObserveOption {
	return metric.WithAttributeSet(attribute.NewSet(kvs...))
}

func (in *instruments) observeRule(o metric.Observer, l ratesync.LimiterInfo, engine string) {
	m, name := l.Metrics, limiterKey.String(l.Name)
	byRule := attrs(name)
	byEngine := attrs(name, engineKey.String(engine))
	o.ObserveInt64(in.acquisitions, m.Acquisitions, byEngine)
	o.ObserveInt64(in.decisions, m.Acquisitions, attrs(name, resultKey.String(resultAllowed)))
	o.ObserveInt64(in.decisions, m.Denials, attrs(name, resultKey.String(resultDenied)))
	o.ObserveInt64(in.decisions, m.Timeouts, attrs(name, resultKey.String(resultTimeout)))
	o.ObserveInt64(in.shadowDenials, m.ShadowDenials, byRule)
	o.ObserveInt64(in.timeouts, m.Timeouts, byEngine)
	o.ObserveInt64(in.fallbacks, m.Fallbacks, byRule)
	o.ObserveInt64(in.ruleErrors, m.Errors, byRule)
	o.ObserveInt64(in.waiting, m.Waiting, byRule)
	o.ObserveInt64(in.leases, m.CurrentConcurrent, byRule)
}

func (in *instruments) observeStore(o metric.Observer, s ratesync.StoreInfo) {
	store := storeKey.String(s.Name)
	for _, c := range s.Calls {
		o.ObserveInt64(in.storeErrors, c.Errors, attrs(store, operationKey.String(c.Op)))
	}
	state, active := breakerClosed, int64(0)
	switch s.Breaker {
	case ratesync.BreakerHalfOpen:
		state, active = breakerHalfOpen, 1
	case ratesync.BreakerOpen:
		state, active = breakerOpen, 1
	}
	for _, st := range []string{breakerClosed, breakerHalfOpen, breakerOpen} {
		v := int64(0)
		if st == state {
			v = 1
		}
		o.ObserveInt64(in.breaker, v, attrs(store, breakerKey.String(st)))
	}
	o.ObserveInt64(in.fallbackActive, active, attrs(store))
}
