package grpclimit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/internal/ratefields"
)

// Denial describes a denied call, for an OnDenied function.
type Denial struct {
	// FullMethod is the called method ("/package.Service/Method").
	FullMethod string
	// Decision is the store's decision.
	Decision ratesync.Decision
	// Policy names the violated policy, as in ratelimit-policy: the
	// limiter's name (or PolicyName's), with "-concurrency" appended for
	// the concurrency quota of a rule that also has a rate.
	Policy string
	// Limit is the violated policy's quota: its q in ratelimit-policy.
	Limit int64
	// Window is the violated policy's window, its w in ratelimit-policy
	// (whole seconds); zero for a concurrency quota.
	Window time.Duration
	// Concurrency reports that the violated policy is max_concurrent.
	Concurrency bool
	// RetryAfter is the wait the denial advertises in RetryInfo (the
	// retry-after metadata is it in whole seconds, rounded up): the
	// store's exact retry, or for a concurrency limit an estimate from the
	// observed hold times.
	RetryAfter time.Duration
}

// Option configures an interceptor.
type Option func(*config)

type config struct {
	wait       bool
	noMetadata bool
	policyName string
	include    []string
	exclude    []string
	denied     func(context.Context, Denial) error
	failed     func(context.Context, error) error
	keyError   func(context.Context, error) error
}

// Wait makes a denied call wait, up to the rule's timeout and the call's
// deadline, before it is denied: for concurrency rules until a slot frees,
// for rate rules exactly the retry-after. When the needed wait already
// passes the deadline the call is denied at once. A call with neither a
// rule timeout nor a deadline makes one attempt, as without Wait.
func Wait() Option { return func(c *config) { c.wait = true } }

// NoMetadata leaves out the ratelimit and ratelimit-policy metadata of
// admitted calls (a denial still carries them).
func NoMetadata() Option { return func(c *config) { c.noMetadata = true } }

// PolicyName names the policy in metadata and QuotaFailure (default: the
// limiter's name). It applies to the interceptors of one limiter; those of
// Methods name each policy after its limiter.
func PolicyName(name string) Option { return func(c *config) { c.policyName = name } }

// Include limits only the methods that match one of the patterns; Exclude
// lets through, unlimited, the methods that match one. A pattern is a full
// method name ("/pkg.Service/Method"), a service ("/pkg.Service/") or "/"
// for every method. Exclude wins. The interceptors panic on another
// pattern.
func Include(patterns ...string) Option {
	return func(c *config) { c.include = append(c.include, patterns...) }
}

// Exclude: see Include.
func Exclude(patterns ...string) Option {
	return func(c *config) { c.exclude = append(c.exclude, patterns...) }
}

// OnDenied replaces the error a denied call gets (DeniedError by default).
// The ratelimit metadata and retry-after are already set when it runs.
func OnDenied(fn func(ctx context.Context, d Denial) error) Option {
	return func(c *config) { c.denied = fn }
}

// OnError replaces the error of a call that the limiter could not decide:
// a store error under a rule with on_store_error = "deny" (fail_closed),
// or a closed registry. By default it is codes.Unavailable. A call whose
// own context ended gets the context's code (Canceled or DeadlineExceeded)
// without it.
func OnError(fn func(ctx context.Context, err error) error) Option {
	return func(c *config) { c.failed = fn }
}

// OnKeyError replaces the error of a call the key function cannot identify
// (codes.InvalidArgument by default).
func OnKeyError(fn func(ctx context.Context, err error) error) Option {
	return func(c *config) { c.keyError = fn }
}

// DeniedError returns the error of a denied call: codes.ResourceExhausted
// with a google.rpc.RetryInfo (the retry) and a google.rpc.QuotaFailure
// whose violation names the policy (subject and quota_id), its quota
// (quota_value) and what it limits. It never includes the call's key.
func DeniedError(d Denial) error {
	retry := min(max(d.RetryAfter, time.Millisecond), 24*time.Hour)
	what, desc := "rate limit exceeded for ", fmt.Sprintf("at most %d calls in %v", d.Limit, d.Window)
	if d.Concurrency {
		what, desc = "too many concurrent calls for ", fmt.Sprintf("at most %d concurrent calls", d.Limit)
	}
	st := status.New(codes.ResourceExhausted, what+d.Policy+"; retry after "+retry.Round(time.Millisecond).String())
	st, err := st.WithDetails(
		&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)},
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
			Subject:     d.Policy,
			Description: desc,
			QuotaId:     d.Policy,
			QuotaValue:  d.Limit,
		}}},
	)
	if err != nil { // details that cannot be marshalled: never, for these
		return status.Error(codes.ResourceExhausted, what+d.Policy)
	}
	return st.Err()
}

// DefaultError answers a call the limiter could not decide with
// codes.Unavailable.
func DefaultError(ctx context.Context, err error) error {
	return status.Error(codes.Unavailable, "the rate limiter cannot decide now; try again later")
}

// DefaultKeyError answers a call the key function cannot identify with
// codes.InvalidArgument. The message does not repeat the key function's
// error, which may quote what the client sent.
func DefaultKeyError(ctx context.Context, err error) error {
	return status.Error(codes.InvalidArgument, "the call cannot be identified for rate limiting")
}

func newConfig(opts []Option) *config {
	c := &config{
		denied:   func(_ context.Context, d Denial) error { return DeniedError(d) },
		failed:   DefaultError,
		keyError: DefaultKeyError,
	}
	for _, o := range opts {
		o(c)
	}
	for _, p := range append(append([]string(nil), c.include...), c.exclude...) {
		mustPattern(p)
	}
	return c
}

// mustPattern panics unless p is "/", "/svc/" or "/svc/Method".
func mustPattern(p string) {
	if p == "/" {
		return
	}
	rest, ok := strings.CutPrefix(p, "/")
	svc, method, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || svc == "" || strings.Contains(method, "/") {
		panic(fmt.Sprintf("grpclimit: method pattern %q: want \"/pkg.Service/Method\", \"/pkg.Service/\" or \"/\"", p))
	}
}

// matches reports whether the method pattern p matches fullMethod.
func matches(p, fullMethod string) bool {
	if strings.HasSuffix(p, "/") {
		return strings.HasPrefix(fullMethod, p)
	}
	return p == fullMethod
}

func (c *config) applies(fullMethod string) bool {
	for _, p := range c.exclude {
		if matches(p, fullMethod) {
			return false
		}
	}
	if len(c.include) == 0 {
		return true
	}
	for _, p := range c.include {
		if matches(p, fullMethod) {
			return true
		}
	}
	return false
}

// route is one limiter and the descriptions of the rules it has met (see
// ratefields.Cache).
type route struct {
	l    *ratesync.Limiter
	pols *ratefields.Cache
}

func newRoute(l *ratesync.Limiter, name string) *route {
	if l == nil {
		panic("grpclimit: nil limiter")
	}
	if name == "" {
		name = l.Name()
	}
	return &route{l: l, pols: ratefields.NewCache(name)}
}

// table routes a method to its limiter: the exact method first, then its
// service, then "/".
type table struct {
	c        *config
	key      KeyFunc
	methods  map[string]*route
	services map[string]*route
	all      *route
}

func (t *table) lookup(fullMethod string) *route {
	if !t.c.applies(fullMethod) {
		return nil
	}
	if r, ok := t.methods[fullMethod]; ok {
		return r
	}
	if i := strings.LastIndexByte(fullMethod, '/'); i > 0 {
		if r, ok := t.services[fullMethod[:i+1]]; ok {
			return r
		}
	}
	return t.all
}

func single(l *ratesync.Limiter, key KeyFunc, opts []Option) *table {
	c := newConfig(opts)
	if key == nil {
		panic("grpclimit: nil key function")
	}
	return &table{c: c, key: key, all: newRoute(l, c.policyName)}
}

// UnaryServerInterceptor returns a unary server interceptor that limits
// calls with l, per key. A denied call gets codes.ResourceExhausted with
// RetryInfo and QuotaFailure (see DeniedError); every limited call carries
// the ratelimit-policy and ratelimit header metadata, and a denial
// retry-after. A concurrency rule's lease is held while the handler runs
// and released when it returns or panics.
func UnaryServerInterceptor(l *ratesync.Limiter, key KeyFunc, opts ...Option) grpc.UnaryServerInterceptor {
	return single(l, key, opts).unary()
}

// StreamServerInterceptor returns a stream server interceptor that limits
// streams with l, per key, as UnaryServerInterceptor limits calls: each
// stream is decided once, when it opens, and a concurrency rule's lease is
// held until the stream's handler returns.
func StreamServerInterceptor(l *ratesync.Limiter, key KeyFunc, opts ...Option) grpc.StreamServerInterceptor {
	return single(l, key, opts).stream()
}

// Methods maps method patterns to limiters, for limits per method: a full
// method name ("/pkg.Service/Method"), a service ("/pkg.Service/") or "/"
// for every other method. A call is limited by the limiter of its method,
// else of its service, else of "/"; a call that matches none passes
// unlimited. Policies are named after their limiters. The interceptors
// read the table when they are made: later changes to the map do not
// reach them.
type Methods map[string]*ratesync.Limiter

func (m Methods) table(key KeyFunc, opts []Option) *table {
	c := newConfig(opts)
	if key == nil {
		panic("grpclimit: nil key function")
	}
	t := &table{c: c, key: key, methods: map[string]*route{}, services: map[string]*route{}}
	for p, l := range m {
		mustPattern(p)
		r := newRoute(l, "")
		switch {
		case p == "/":
			t.all = r
		case strings.HasSuffix(p, "/"):
			t.services[p] = r
		default:
			t.methods[p] = r
		}
	}
	return t
}

// UnaryServerInterceptor returns a unary server interceptor that limits
// each call with the limiter of its method (see Methods), per key, as the
// package's UnaryServerInterceptor does with one limiter. It panics on an
// invalid pattern or a nil limiter.
func (m Methods) UnaryServerInterceptor(key KeyFunc, opts ...Option) grpc.UnaryServerInterceptor {
	return m.table(key, opts).unary()
}

// StreamServerInterceptor returns a stream server interceptor that limits
// each stream with the limiter of its method (see Methods), per key.
func (m Methods) StreamServerInterceptor(key KeyFunc, opts ...Option) grpc.StreamServerInterceptor {
	return m.table(key, opts).stream()
}

func (t *table) unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		r := t.lookup(info.FullMethod)
		if r == nil {
			return handler(ctx, req)
		}
		lease, pol, err := t.admit(ctx, r, info.FullMethod, func(md metadata.MD) { grpc.SetHeader(ctx, md) })
		if err != nil {
			return nil, err
		}
		if lease.Held() {
			defer release(ctx, pol, lease, time.Now())
		}
		return handler(ctx, req)
	}
}

func (t *table) stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		r := t.lookup(info.FullMethod)
		if r == nil {
			return handler(srv, ss)
		}
		ctx := ss.Context()
		lease, pol, err := t.admit(ctx, r, info.FullMethod, func(md metadata.MD) { ss.SetHeader(md) })
		if err != nil {
			return err
		}
		if lease.Held() {
			defer release(ctx, pol, lease, time.Now())
		}
		return handler(srv, ss)
	}
}

// release frees a concurrency lease after the handler (also when it
// panics), even when the call's context is done, and records the hold.
func release(ctx context.Context, pol *ratefields.Policy, lease *ratesync.Lease, start time.Time) {
	pol.ObserveHold(time.Since(start))
	lease.Release(context.WithoutCancel(ctx))
}

// admit decides one call. It sets the response metadata with setHeader and
// returns the lease to release after the handler and the policy of the
// rule that decided, or the call's error.
func (t *table) admit(ctx context.Context, r *route, fullMethod string, setHeader func(metadata.MD)) (*ratesync.Lease, *ratefields.Policy, error) {
	c := t.c
	id, err := t.key(ctx, fullMethod)
	if err != nil {
		return nil, nil, c.keyError(ctx, err)
	}
	kl := r.l.For(id)
	rule := kl.Rule() // in force for this key: a reload or an override may have changed it
	pol := r.pols.Of(rule)
	var d ratesync.Decision
	if c.wait {
		d, err = acquire(ctx, kl)
	} else {
		d, err = kl.Try(ctx)
	}
	if err != nil {
		if ctx.Err() != nil { // the caller left: its own code, not the limiter's
			return nil, nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, nil, c.failed(ctx, err)
	}
	// A shadow rule's limit is not in force: nothing to tell the client.
	if !d.Allowed {
		q, retry := pol.Binding(d.Concurrency), pol.RetryAfter(d)
		if !rule.Shadow {
			setHeader(fields(pol, q, d, retry))
		}
		return nil, nil, c.denied(ctx, Denial{FullMethod: fullMethod, Decision: d, Policy: q.Name, Limit: q.Limit, Concurrency: q.Concurrent,
			Window: time.Duration(q.Window) * time.Second, RetryAfter: retry})
	}
	if !c.noMetadata && !d.FailedOpen && !d.Shadow && !rule.Shadow {
		setHeader(fields(pol, pol.Binding(d.Concurrency), d, 0))
	}
	return d.Lease, pol, nil
}

// acquire waits for l like Limiter.Acquire, counted as one call (an
// admission or a timeout), and returns the decision that admitted it with
// the state after the admission, or the denial when the wait budget ran
// out. Without a budget (no rule timeout, no deadline) it makes one
// attempt.
func acquire(ctx context.Context, l *ratesync.Limiter) (ratesync.Decision, error) {
	rule := l.Rule()
	if _, ok := ctx.Deadline(); rule.Timeout <= 0 && !ok {
		return l.Try(ctx)
	}
	lease, err := l.Acquire(ctx)
	if err != nil {
		var te *ratesync.TimeoutError
		if !errors.As(err, &te) || ctx.Err() != nil {
			return ratesync.Decision{Limiter: l.Name()}, err
		}
		// Denied by the quota that ran out: none of it is left. A timeout
		// with no rate retry was a wait for a concurrency slot.
		return ratesync.Decision{Limiter: l.Name(), RetryAfter: te.RetryAfter, Concurrency: te.RetryAfter == 0 && rule.MaxConcurrent > 0}, nil
	}
	d := ratesync.Decision{Allowed: true, Limiter: l.Name(), Lease: lease, FailedOpen: lease.FailedOpen(), Fallback: lease.Fallback()}
	if !d.FailedOpen && !rule.Shadow {
		if st, err := l.State(context.WithoutCancel(ctx)); err == nil {
			d.Limit, d.Remaining, d.Concurrency = st.Limit, st.Remaining, st.Concurrency
			d.ResetAfter = max(time.Until(st.ResetAt), 0)
		}
	}
	return d, nil
}
