package ratesync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/rate-sync/ratesync-go/memstore"
)

// Registry holds named stores and limiters. Everything the package-level
// functions do is available on an explicit Registry, which keeps no global
// state: create one with NewRegistry, fill it with LoadConfig or the
// Configure methods, and Close it when done.
//
// The zero Registry is empty and ready to use, with the default options.
// A Registry is safe for concurrent use.
type Registry struct {
	mu       sync.RWMutex
	stores   map[string]*storeHandle
	rules    map[string]*ruleState
	sections map[string]any // settings of registered top-level tables ([http]), by name
	observer Observer
	storeObs StoreObserver
	log      *slog.Logger
	queues   waitQueues
	closed   atomic.Bool
	done     chan struct{}         // closed by Close: ends the waits of Acquire
	retiring map[*storeHandle]bool // replaced stores waiting for their leases
	applyMu  sync.Mutex            // one ApplyConfig or Reload at a time
	reloads  reloadStats

	fbOnce sync.Once
	fb     *storeHandle // in-memory store of the Local failure policy
}

// fallbackStore returns the registry's in-memory store for the Local
// failure policy, creating it on first use; nil once the registry is
// closed.
func (r *Registry) fallbackStore() *storeHandle {
	r.fbOnce.Do(func() {
		if r.closed.Load() {
			return
		}
		r.fb = r.newHandle("(fallback)", "memory", memstore.New(), true)
	})
	return r.fb
}

// newHandle wraps s for the registry, with the defaults: a call timeout
// and a circuit breaker for stores that are not in process.
func (r *Registry) newHandle(name, engine string, s driver.Store, owned bool) *storeHandle {
	h := &storeHandle{name: name, engine: engine, store: s, owned: owned, reg: r}
	if _, ok := s.(driver.InProcess); ok {
		h.inproc = true
		h.prep, _ = s.(driver.Preparer)
		return h
	}
	h.callTimeout.Store(int64(DefaultCallTimeout))
	h.setBreaker(DefaultBreakerThreshold, DefaultBreakerCooldown)
	h.initStats()
	h.work, h.quit = make(chan *task), make(chan struct{})
	h.async, _ = s.(driver.AsyncDecider)
	return h
}

func (h *storeHandle) setBreaker(threshold int, cooldown time.Duration) {
	h.br = newBreaker(threshold, cooldown, func(from, to BreakerState) {
		log := h.reg.logger()
		switch {
		case to == BreakerOpen && from == BreakerClosed:
			log.Warn("ratesync: store failing: circuit breaker open, rules answer by their on_store_error policy",
				"store", h.name, "engine", h.engine, "cooldown", cooldown, "error", h.lastError())
		case to == BreakerClosed:
			log.Info("ratesync: store recovered: circuit breaker closed", "store", h.name, "engine", h.engine)
		}
	})
}

// RegistryOption configures a Registry.
type RegistryOption func(*Registry)

// WithLogger sets the logger of the registry (default: slog.Default()).
// It logs store trouble once per change, never per decision or per key:
// a store's circuit breaker opening (Warn, with the error) and closing
// again (Info). Errors are logged with passwords in URLs removed.
func WithLogger(l *slog.Logger) RegistryOption {
	return func(r *Registry) { r.log = l }
}

func (r *Registry) logger() *slog.Logger {
	if r.log != nil {
		return r.log
	}
	return slog.Default()
}

// WithStoreObserver sets a function that receives one StoreCall per store
// call (with its latency), for store metrics.
func WithStoreObserver(fn StoreObserver) RegistryOption {
	return func(r *Registry) { r.storeObs = fn }
}

// WithObserver sets a function that receives one Event per decision.
func WithObserver(fn Observer) RegistryOption {
	return func(r *Registry) { r.observer = fn }
}

// initLocked makes the maps of a zero Registry; r.mu is held.
func (r *Registry) initLocked() {
	if r.stores == nil {
		r.stores, r.rules = map[string]*storeHandle{}, map[string]*ruleState{}
		r.done = make(chan struct{})
	}
}

// NewRegistry returns an empty registry.
func NewRegistry(opts ...RegistryOption) *Registry {
	r := &Registry{}
	r.initLocked()
	for _, o := range opts {
		o(r)
	}
	return r
}

func checkName(kind, name string) error {
	switch {
	case name == "":
		return &ConfigError{Msg: kind + " name must not be empty"}
	case strings.ContainsAny(name, "{}"):
		return &ConfigError{Msg: fmt.Sprintf("%s name %q must not contain '{' or '}' (they mark template placeholders)", kind, name)}
	}
	return nil
}

// StoreOption changes how the registry calls a store added with AddStore.
type StoreOption func(*storeOptions)

type storeOptions struct {
	callTimeout time.Duration
	threshold   int
	cooldown    time.Duration
}

// check returns the first option out of its range, as the key of a
// store's table with what to change; "" when all are valid.
func (o storeOptions) check() (key, msg string) {
	switch {
	case o.callTimeout < 0:
		return "call_timeout_seconds", fmt.Sprintf("must be >= 0 (0 turns the timeout off), got %v", o.callTimeout.Seconds())
	case o.threshold < 1 || o.threshold > 1_000_000:
		return "breaker_threshold", fmt.Sprintf("must be between 1 and 1000000 consecutive failures, got %d", o.threshold)
	case o.cooldown < time.Millisecond || o.cooldown > time.Hour:
		return "breaker_cooldown_seconds", fmt.Sprintf("must be between 0.001 and 3600 seconds, got %v", o.cooldown.Seconds())
	}
	return "", ""
}

// apply gives h the call timeout and breaker of o; stores in process have
// neither.
func (h *storeHandle) apply(o storeOptions) {
	if !h.inproc {
		h.callTimeout.Store(int64(o.callTimeout))
		h.setBreaker(o.threshold, o.cooldown)
	}
}

// WithCallTimeout bounds each call to the store (default
// DefaultCallTimeout, the call_timeout_seconds of a configured store);
// zero means no bound but the caller's context. In-process stores are
// never bounded.
func WithCallTimeout(d time.Duration) StoreOption {
	return func(o *storeOptions) { o.callTimeout = d }
}

// WithBreaker sets the store's circuit breaker: threshold consecutive
// unavailable answers open it for cooldown (defaults
// DefaultBreakerThreshold and DefaultBreakerCooldown, the
// breaker_threshold and breaker_cooldown_seconds of a configured store).
func WithBreaker(threshold int, cooldown time.Duration) StoreOption {
	return func(o *storeOptions) { o.threshold, o.cooldown = threshold, cooldown }
}

// AddStore registers a store the caller created and owns: the registry never
// closes it. A store of the same name is replaced; limiters on it move to the
// new store, and the old one stays in use for the release of its leases.
// Unless the store decides in process (driver.InProcess), its calls are
// bounded by a call timeout and guarded by a circuit breaker (see
// WithCallTimeout and WithBreaker).
func (r *Registry) AddStore(name string, s driver.Store, opts ...StoreOption) error {
	if err := checkName("store", name); err != nil {
		return err
	}
	if s == nil {
		return &ConfigError{Table: "stores." + name, Msg: "store is nil"}
	}
	o := storeOptions{callTimeout: DefaultCallTimeout, threshold: DefaultBreakerThreshold, cooldown: DefaultBreakerCooldown}
	for _, f := range opts {
		f(&o)
	}
	if key, msg := o.check(); key != "" {
		return &ConfigError{Table: "stores." + name, Key: key, Msg: msg}
	}
	h := r.newHandle(name, fmt.Sprintf("%T", s), s, false)
	h.apply(o)
	return r.putStore(h)
}

// ConfigureStore opens a store with a registered engine ("memory", or
// "redis" and "postgres" when their packages are imported) and the same
// options as a [stores.NAME] table. The registry owns and closes it.
func (r *Registry) ConfigureStore(name, engine string, options map[string]any) error {
	if err := checkName("store", name); err != nil {
		return err
	}
	h, err := r.openStore(&StoreConfig{Name: name, Engine: engine, Options: options})
	if err != nil {
		return err
	}
	return r.putStore(h)
}

func (r *Registry) putStore(h *storeHandle) error {
	r.mu.Lock()
	r.initLocked()
	if r.closed.Load() {
		r.mu.Unlock()
		h.close()
		return ErrClosed
	}
	old := r.stores[h.name]
	r.stores[h.name] = h
	r.subscribe(h)
	r.mu.Unlock()
	if old != nil {
		r.replace(old, h)
	}
	return nil
}

// replace retires old, replaced by h: the rules bound to old (those of
// limiters obtained before a reload too) move to h at their next decision.
func (r *Registry) replace(old, h *storeHandle) {
	old.next.Store(h)
	ttl := max(DefaultLeaseTTL, time.Duration(old.maxTTL.Load()))
	r.mu.RLock()
	for _, rs := range r.rules {
		if rs.rule.Store == h.name {
			ttl = max(ttl, rs.rule.LeaseTTL)
		}
	}
	r.mu.RUnlock()
	old.retire(ttl)
}

// retire closes a replaced store once the decisions on it have ended and
// the leases it granted are released, or after ttl (the longest lease TTL
// of its rules), when the rest have expired: until then, its leases can
// still be released. Registry.Close closes the stores still retiring.
func (h *storeHandle) retire(ttl time.Duration) {
	h.retired.Store(true)
	if h.tryClose() {
		return
	}
	r := h.reg
	r.mu.Lock()
	if r.retiring == nil {
		r.retiring = map[*storeHandle]bool{}
	}
	r.retiring[h] = true
	r.mu.Unlock()
	time.AfterFunc(ttl, func() {
		for { // later decisions go to the new store
			n := h.inflight.Load()
			if n < 0 || h.inflight.CompareAndSwap(n, n+closedMark) {
				break
			}
		}
		h.close()
	})
}

// closedMark, added to a store's in-flight count, says the store was
// closed after its replacement.
const closedMark = math.MinInt64 / 2

// tryClose closes a retired store when no decision is in flight on it and
// it holds no lease; it reports whether it did.
func (h *storeHandle) tryClose() bool {
	// Mark first, then look at the leases: a decision that granted one
	// either counted it before it left (seen below) or is still in flight
	// (the mark fails).
	for {
		if !h.inflight.CompareAndSwap(0, closedMark) {
			return false
		}
		if h.leases.Load() <= 0 {
			h.close()
			return true
		}
		h.inflight.Add(-closedMark)
		// The last lease may have been released while the mark was on,
		// and its tryClose failed on the mark: look again.
		if h.leases.Load() > 0 {
			return false
		}
	}
}

// enter counts a decision on h, or on the store that replaced h when h is
// closed; nil when there is none (the registry was closed). The decision
// counts the leases it was granted, then calls exit.
func (h *storeHandle) enter() *storeHandle {
	for h != nil {
		if h.inflight.Add(1) > 0 {
			return h
		}
		h.inflight.Add(-1)
		h = h.next.Load()
	}
	return nil
}

// exit ends a decision counted by enter.
func (h *storeHandle) exit() {
	if h.inflight.Add(-1) == 0 && h.retired.Load() {
		h.tryClose()
	}
}

// leaseDone records the release of a lease the store granted, and closes
// a retired store with none left.
func (h *storeHandle) leaseDone() {
	if h.leases.Add(-1) <= 0 && h.retired.Load() {
		h.tryClose()
	}
}

// subscribe wires a store's release notifications to the wait queues.
func (r *Registry) subscribe(h *storeHandle) {
	if n, ok := h.store.(driver.ReleaseNotifier); ok {
		h.unsub = n.SubscribeReleases(func(key driver.Key) { r.queues.notify(h, key) })
	}
}

// close unsubscribes from and closes (when the registry opened it) the
// store, once.
func (h *storeHandle) close() (err error) {
	h.closeOnce.Do(func() {
		if h.quit != nil {
			close(h.quit) // idle workers end; busy ones after their call
		}
		if h.retired.Load() {
			h.reg.mu.Lock()
			delete(h.reg.retiring, h)
			h.reg.mu.Unlock()
		}
		if h.unsub != nil {
			h.unsub()
		}
		if h.owned {
			err = h.store.Close()
		}
	})
	return err
}

// ConfigureLimiter adds the limiter name with rule, replacing any limiter of
// that name: limiters obtained before follow the new rule, and the rule's
// counters go on. State stays in the store: a new rule with the same store
// and policies counts what the old one admitted.
func (r *Registry) ConfigureLimiter(name string, rule Rule) error {
	if err := checkName("limiter", name); err != nil {
		return err
	}
	nr, err := rule.normalize()
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.Table = "limiters." + name
		}
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.initLocked()
	if r.closed.Load() {
		return ErrClosed
	}
	h := r.stores[nr.Store]
	if h == nil {
		return &ConfigError{Table: "limiters." + name, Key: "store", Msg: fmt.Sprintf("store %q is not configured (stores: %s)", nr.Store, listNames(r.stores)), Err: ErrStoreNotFound}
	}
	rs := r.newRuleState(name, nr, h, nil)
	r.putRule(rs)
	return nil
}

// putRule makes rs the rule of its name; the rule it replaces, if any,
// hands on its counters and makes limiters obtained before follow rs.
// r.mu is held.
func (r *Registry) putRule(rs *ruleState) {
	old := r.rules[rs.name]
	r.rules[rs.name] = rs
	if old != nil {
		old.succ.Store(rs)
		r.queues.notifyRule(rs.key.Name) // its waiters decide by rs now
	}
}

// removeRule removes the rule name: limiters obtained before answer
// ErrLimiterNotFound, its waiters included. r.mu is held.
func (r *Registry) removeRule(rs *ruleState) {
	delete(r.rules, rs.name)
	rs.succ.Store(removedRule)
	r.queues.notifyRule(rs.key.Name)
}

func listNames[V any](m map[string]V) string {
	if len(m) == 0 {
		return "none"
	}
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}

// newRuleState returns the rule name with store h. Its counters are m, or
// new ones when m is nil; those of the rule it replaces, when it does
// (see putRule).
func (r *Registry) newRuleState(name string, nr Rule, h *storeHandle, m *metrics) *ruleState {
	// Every rule has fallback policies: a composite whose strictest part
	// is local enforces its other parts locally too.
	rs := &ruleState{name: name, rule: nr, policies: nr.policies(), fallback: nr.fallbackPolicies(), reg: r, m: m}
	if m == nil {
		if old := r.rules[name]; old != nil {
			rs.m = old.m
		} else {
			rs.m = newMetrics()
		}
	}
	for _, p := range rs.policies {
		switch p.Kind {
		case driver.Concurrency:
			rs.hasConc = true
		default:
			rs.rateCap = p.Capacity()
		}
	}
	rs.key = driver.Key{Name: driver.EscapeName(name)}
	rs.base = &Limiter{r: rs}
	rs.quick = len(rs.policies) == 1 && !rs.hasConc && !nr.Shadow && r.observer == nil && r.storeObs == nil
	rs.bind.Store(rs.bindTo(h))
	return rs
}

// bindTo returns the rule's binding to store h.
func (rs *ruleState) bindTo(h *storeHandle) *binding {
	b := &binding{h: h}
	if h.prep != nil && len(rs.policies) == 1 {
		b.prep = h.prep.Prepare(rs.key.Name, rs.policies[0])
	}
	return b
}

// Clone adds the limiter name with source's rule, changed by edit when edit
// is not nil (for example to give one tenant a higher rate). The clone has
// its own state.
func (r *Registry) Clone(source, name string, edit func(*Rule)) error {
	r.mu.RLock()
	rs := r.rules[source]
	r.mu.RUnlock()
	if rs == nil {
		return notFound(ErrLimiterNotFound, source)
	}
	rule := rs.rule
	if edit != nil {
		edit(&rule)
	}
	return r.ConfigureLimiter(name, rule)
}

// Get returns the limiter name.
func (r *Registry) Get(name string) (*Limiter, error) {
	r.mu.RLock()
	rs := r.rules[name]
	r.mu.RUnlock()
	if r.closed.Load() {
		return nil, ErrClosed
	}
	if rs == nil {
		return nil, notFound(ErrLimiterNotFound, name)
	}
	return rs.base, nil
}

// For returns the limiter of rule name for one identifier (or a
// path of identifiers, such as tenant then user): the same rule, state of
// its own. Per-key state lives in the store and expires when idle, so any
// number of identifiers can be used. It is Limiter(name) followed by For
// for each identifier.
func (r *Registry) For(name string, ids ...string) (*Limiter, error) {
	l, err := r.Get(name)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		l = l.For(id)
	}
	return l, nil
}

// Try is shorthand for Limiter(name) followed by Try.
func (r *Registry) Try(ctx context.Context, name string, opts ...CallOption) (Decision, error) {
	l, err := r.Get(name)
	if err != nil {
		return Decision{Limiter: name}, err
	}
	return l.Try(ctx, opts...)
}

// Acquire is shorthand for Limiter(name) followed by Acquire.
func (r *Registry) Acquire(ctx context.Context, name string, opts ...CallOption) (*Lease, error) {
	l, err := r.Get(name)
	if err != nil {
		return nil, err
	}
	return l.Acquire(ctx, opts...)
}

// Do is shorthand for Limiter(name) followed by Do.
func (r *Registry) Do(ctx context.Context, name string, fn func(context.Context) error, opts ...CallOption) error {
	l, err := r.Get(name)
	if err != nil {
		return err
	}
	return l.Do(ctx, fn, opts...)
}

// TryDo is shorthand for Limiter(name) followed by TryDo.
func (r *Registry) TryDo(ctx context.Context, name string, fn func(context.Context) error, opts ...CallOption) (bool, error) {
	l, err := r.Get(name)
	if err != nil {
		return false, err
	}
	return l.TryDo(ctx, fn, opts...)
}

// State is shorthand for Limiter(name) followed by State.
func (r *Registry) State(ctx context.Context, name string) (State, error) {
	l, err := r.Get(name)
	if err != nil {
		return State{}, err
	}
	return l.State(ctx)
}

// ResetStore removes every state kept by the store name (every limiter and
// key on it).
func (r *Registry) ResetStore(ctx context.Context, name string) error {
	r.mu.RLock()
	h := r.stores[name]
	r.mu.RUnlock()
	if h == nil {
		return notFound(ErrStoreNotFound, name)
	}
	if h = h.enter(); h == nil {
		return ErrClosed
	}
	defer h.exit()
	if err := h.call(ctx, &storeOp{kind: opResetAll}); err != nil {
		return err
	}
	r.queues.notifyStore(h) // every slot is free
	return nil
}

// Section returns the settings a configuration applied to r gave the
// top-level table name (see RegisterSection), or nil when none did.
func (r *Registry) Section(name string) any {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.sections[name]
}

// StoreInfo describes a configured store.
type StoreInfo struct {
	Name    string
	Engine  string
	Options map[string]string // values as configured, secrets redacted
	// Breaker is the state of the store's circuit breaker (always closed
	// for stores in process).
	Breaker BreakerState
	// Calls counts the calls made to the store, by operation, for stores
	// that are not in process (those are never called through the
	// network); empty until the first call.
	Calls []StoreCalls
}

// StoreCalls counts one operation's calls to a store.
type StoreCalls struct {
	Op     string // "decide", "peek", "release", "extend", "reset" or "reset_all"
	Count  int64  // calls, including those the open breaker kept from the store
	Errors int64  // calls that failed
	// Latency is the time of the calls that reached the store (or timed
	// out waiting for it).
	Latency Histogram
}

// LimiterInfo describes a configured limiter.
type LimiterInfo struct {
	Name    string
	Rule    Rule
	Metrics Metrics
}

// Stores lists the configured stores, sorted by name.
func (r *Registry) Stores() []StoreInfo {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]StoreInfo, 0, len(r.stores))
	for _, name := range slices.Sorted(maps.Keys(r.stores)) {
		h := r.stores[name]
		out = append(out, StoreInfo{Name: name, Engine: h.engine, Options: maps.Clone(h.options), Breaker: h.br.state(), Calls: h.calls()})
	}
	return out
}

// Limiters lists the configured limiters, sorted by name.
func (r *Registry) Limiters() []LimiterInfo {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]LimiterInfo, 0, len(r.rules))
	for _, name := range slices.Sorted(maps.Keys(r.rules)) {
		rs := r.rules[name]
		out = append(out, LimiterInfo{Name: name, Rule: rs.rule, Metrics: rs.m.snapshot()})
	}
	return out
}

// ReloadStats counts a registry's reloads (Reload, WatchConfig).
type ReloadStats struct {
	Succeeded int64     // reloads applied
	Failed    int64     // reloads rejected (invalid file, store that cannot open): nothing changed
	Last      time.Time // when the last reload was tried; zero before the first
	File      string    // the file of the last reload
	LastError error     // why the last reload was rejected; nil when it was applied
}

type reloadStats struct {
	mu sync.Mutex
	s  ReloadStats
}

func (rs *reloadStats) note(file string, err error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if err != nil {
		rs.s.Failed++
	} else {
		rs.s.Succeeded++
	}
	rs.s.Last, rs.s.File, rs.s.LastError = time.Now(), file, err
}

// Reloads returns the counts of the registry's reloads.
func (r *Registry) Reloads() ReloadStats {
	r.reloads.mu.Lock()
	defer r.reloads.mu.Unlock()
	return r.reloads.s
}

// Close closes the stores the registry opened (not those given to
// AddStore). Later calls fail with ErrClosed, on every limiter, including
// those obtained before Close.
func (r *Registry) Close() error {
	r.mu.Lock()
	if r.closed.Swap(true) {
		r.mu.Unlock()
		return nil
	}
	r.initLocked()
	close(r.done)
	stores := slices.Collect(maps.Values(r.stores))
	for h := range r.retiring {
		stores = append(stores, h)
	}
	r.mu.Unlock()
	var errs []error
	for _, h := range stores {
		if err := h.close(); err != nil {
			errs = append(errs, fmt.Errorf("ratesync: close store %q: %w", h.name, err))
		}
	}
	r.fbOnce.Do(func() {}) // no fallback store after Close
	if r.fb != nil {
		r.fb.close()
	}
	return errors.Join(errs...)
}
