// Package driver defines the interface that rate limit stores implement.
//
// Most programs never import driver: they use the root package ratesync and a
// store package (memstore, redisstore, pgstore). Store authors implement
// [Store]; the conformance suite in package storetest proves that an
// implementation gives the same answers as the reference model.
//
// The contract has one central call, [Store.Decide]: a request is a list of
// checks, each a (key, policy, cost) triple, and the store applies all of them
// or none, atomically, on its own clock. A token bucket plus a concurrency
// limit is two checks; a composite "per IP and per account" decision is
// several. A denied decision consumes nothing.
package driver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Kind says which algorithm a [Policy] applies.
type Kind uint8

const (
	// TokenBucket is a GCRA token bucket: Rate tokens per second, at most
	// Burst at once.
	TokenBucket Kind = iota + 1
	// SlidingWindow admits at most Limit units in any (now-Window, now]
	// interval, counted exactly.
	SlidingWindow
	// Concurrency admits at most MaxConcurrent live leases; a lease expires
	// LeaseTTL after it was granted unless it is released or extended first.
	Concurrency
)

// String returns the configuration name of the kind.
func (k Kind) String() string {
	switch k {
	case TokenBucket:
		return "token_bucket"
	case SlidingWindow:
		return "sliding_window"
	case Concurrency:
		return "concurrency"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Policy is the limit one check applies. Only the fields of its Kind are
// read. A policy is valid when Validate accepts it; stores reject a check
// whose policy or cost is not valid (see Check.Validate), so that no value
// can overflow their arithmetic.
type Policy struct {
	Kind Kind

	// Token bucket.
	Rate  float64 // tokens per second, in [MinRate, MaxRate]
	Burst int     // bucket capacity, in [1, MaxCount]; Burst/Rate <= MaxHorizon

	// Sliding window.
	Limit  int           // units per window, in [1, MaxCount]
	Window time.Duration // in [MinWindow, MaxHorizon]

	// Concurrency.
	MaxConcurrent int           // in [1, MaxCount]
	LeaseTTL      time.Duration // in [MinLeaseTTL, MaxHorizon]
}

// The supported ranges of policy values. Inside them every store enforces a
// policy exactly: a token bucket admits at most Rate per second (plus
// Burst) and at least Rate/1.001, windows and leases count time in whole
// nanoseconds (microseconds on stores whose clock has microseconds), and no
// sum or product of values overflows int64 nanoseconds or loses precision
// in the float64 arithmetic of scripts.
const (
	// MinRate is the lowest token bucket rate, in tokens per second: one
	// token per MaxHorizon.
	MinRate = 1e-8
	// MaxRate is the highest token bucket rate, in tokens per second. A
	// bucket's emission interval is 1e9/Rate ns rounded up to a whole
	// nanosecond, at least 1000 ns up to MaxRate, so rounding slows a rate
	// by less than 0.1 %. Count larger units to limit more: a cost per KiB
	// rather than per byte.
	MaxRate = 1e6
	// MaxHorizon is the longest time a policy spans: its Window, its
	// LeaseTTL, or the time a drained bucket takes to refill (Burst/Rate).
	MaxHorizon = 1e8 * time.Second
	// MinWindow is the shortest sliding window: on stores with a
	// microsecond clock a window is exact to 0.1 % from there.
	MinWindow = time.Millisecond
	// MinLeaseTTL is the shortest lease lifetime, for the same reason.
	MinLeaseTTL = time.Millisecond
	// MaxCount is the largest Burst, Limit, MaxConcurrent and check Cost:
	// below 2^53, so that counts and their sums stay exact in float64.
	MaxCount int64 = 1e15
	// MinSweepInterval is the shortest interval between two sweeps of
	// idle state (see ValidateSweepInterval): a sweep visits every key, so
	// sweeping more often spends a core for no gain in memory.
	MinSweepInterval = time.Second
)

// PolicyError is the error of Policy.Validate and the other validators of
// this package. It names the field, the value and the supported range, and
// says what to change.
type PolicyError struct {
	// Kind is the kind of the policy, zero for values that belong to none
	// (a sweep interval).
	Kind Kind
	// Field is the Go name of the invalid value: "Rate", "Burst",
	// "Limit", "Window", "MaxConcurrent", "LeaseTTL", "Kind", "Cost",
	// "TTL" (of an extension) or "SweepInterval".
	Field string
	// Msg says what is wrong and what to change, without the field's
	// configuration name, so that callers can put it in their own terms.
	Msg string
}

// Error returns the message prefixed with "ratesync: " and the policy kind.
func (e *PolicyError) Error() string {
	if e.Kind == 0 {
		return "ratesync: " + e.Msg
	}
	return "ratesync: " + e.Kind.String() + " policy: " + e.Msg
}

func policyErr(k Kind, field, format string, args ...any) error {
	return &PolicyError{Kind: k, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// seconds formats a duration in seconds, as configuration files give them,
// to the nanosecond.
func seconds(d time.Duration) string {
	sign, u := "", uint64(d)
	if d < 0 {
		sign, u = "-", -u
	}
	s := strconv.FormatUint(u/1e9, 10)
	if ns := u % 1e9; ns != 0 {
		s += strings.TrimRight(fmt.Sprintf(".%09d", ns), "0")
	}
	return sign + s + " s"
}

// Validate reports whether p is inside the supported ranges (see MinRate
// and the constants after it). The error is a *PolicyError naming the
// field, the value and the range.
func (p Policy) Validate() error {
	switch p.Kind {
	case TokenBucket:
		return p.validateBucket()
	case SlidingWindow:
		if err := validateCount(p.Kind, "Limit", "limit", int64(p.Limit)); err != nil {
			return err
		}
		return validateSpan(p.Kind, "Window", "window", p.Window, MinWindow)
	case Concurrency:
		if err := validateCount(p.Kind, "MaxConcurrent", "max concurrent", int64(p.MaxConcurrent)); err != nil {
			return err
		}
		return validateSpan(p.Kind, "LeaseTTL", "lease TTL", p.LeaseTTL, MinLeaseTTL)
	}
	return policyErr(p.Kind, "Kind", "unknown policy kind %d: use TokenBucket, SlidingWindow or Concurrency", int(p.Kind))
}

func (p Policy) validateBucket() error {
	const rng = "[1e-08, 1e+06] per second"
	r := p.Rate
	switch {
	case !(r > 0): // NaN too
		return policyErr(p.Kind, "Rate", "rate %v per second is not in the supported range %s", r, rng)
	case r < MinRate:
		return policyErr(p.Kind, "Rate", "rate %g per second is below the supported range %s (one token per 1e8 s, about 3.2 years): use a larger rate", r, rng)
	case r > MaxRate:
		return policyErr(p.Kind, "Rate", "rate %g per second is above the supported range %s, where whole-nanosecond intervals are exact to 0.1 %%: count larger units (a cost per KiB rather than per byte) so that the rate is at most 1e6", r, rng)
	}
	if err := validateCount(p.Kind, "Burst", "burst", int64(p.Burst)); err != nil {
		return err
	}
	if iv := int64(p.Interval()); int64(p.Burst) > int64(MaxHorizon)/iv {
		return policyErr(p.Kind, "Burst", "burst %d at rate %g per second takes %.4g s to refill, more than the supported horizon of 1e8 s (about 3.2 years): lower the burst or raise the rate", p.Burst, r, float64(p.Burst)/r)
	}
	return nil
}

func validateCount(k Kind, field, name string, n int64) error {
	if n < 1 || n > MaxCount {
		return policyErr(k, field, "%s %d is outside the supported range [1, 1e15]", name, n)
	}
	return nil
}

func validateSpan(k Kind, field, name string, d, least time.Duration) error {
	if d < least || d > MaxHorizon {
		return policyErr(k, field, "%s %s is outside the supported range [%s, 1e8 s]", name, seconds(d), seconds(least))
	}
	return nil
}

// ValidateCost reports whether cost is a valid check cost: in [1,
// MaxCount]. A cost above the policy's capacity is valid; such a check is
// denied, with a RetryAfter of never.
func ValidateCost(cost int) error {
	if cost < 1 || int64(cost) > MaxCount {
		return policyErr(0, "Cost", "cost %d is outside the supported range [1, 1e15]", cost)
	}
	return nil
}

// ValidateLeaseTTL reports whether ttl is a valid lease lifetime for
// Extender.Extend: in [MinLeaseTTL, MaxHorizon].
func ValidateLeaseTTL(ttl time.Duration) error {
	return validateSpan(Concurrency, "TTL", "lease TTL", ttl, MinLeaseTTL)
}

// ValidateSweepInterval reports whether d is a valid interval between two
// sweeps of a store's idle state: in [MinSweepInterval, MaxHorizon].
func ValidateSweepInterval(d time.Duration) error {
	if d < MinSweepInterval || d > MaxHorizon {
		return policyErr(0, "SweepInterval", "sweep interval %s is outside the supported range [1 s, 1e8 s]", seconds(d))
	}
	return nil
}

// Capacity returns the policy's quota: Burst, Limit or MaxConcurrent.
func (p Policy) Capacity() int {
	switch p.Kind {
	case TokenBucket:
		return p.Burst
	case SlidingWindow:
		return p.Limit
	case Concurrency:
		return p.MaxConcurrent
	}
	return 0
}

// Interval returns the emission interval of a token bucket policy: the time
// one token takes to refill, 1e9/Rate ns rounded up to the nanosecond so
// that rounding never admits more than Rate per second. For a valid policy
// it is in [1 µs, MaxHorizon] and exact to 0.1 %; for others it saturates
// (0 for a rate that is not positive, math.MaxInt64 for one too low).
func (p Policy) Interval() time.Duration {
	if !(p.Rate > 0) {
		return 0
	}
	ns := 1e9 / p.Rate
	if ns >= math.MaxInt64 {
		return math.MaxInt64
	}
	i := int64(ns)
	if float64(i) < ns {
		i++
	}
	return time.Duration(max(i, 1))
}

// Key identifies the state of one limiter for one identifier: Name is the
// rule's key (its name escaped by EscapeName), ID the identifiers of a
// per-key limiter (escaped and joined by ':'), empty for the rule's own
// limiter. Keeping the two apart
// lets in-process stores decide without building a string per call; stores
// that need one string use String.
type Key struct {
	Name string
	ID   string
}

// String returns Name, or Name + ":" + ID.
func (k Key) String() string {
	if k.ID == "" {
		return k.Name
	}
	return k.Name + ":" + k.ID
}

// Encoded returns k as one string for stores that key state by string:
// the name with '%' and ':' escaped (%25, %3A), then ':' and the ID. The
// name ends at the first ':', so different keys never encode alike;
// DecodeKey reverses it.
func (k Key) Encoded() string {
	name := k.Name
	if strings.ContainsAny(name, ":%") {
		name = strings.NewReplacer("%", "%25", ":", "%3A").Replace(name)
	}
	if k.ID == "" {
		return name
	}
	return name + ":" + k.ID
}

// DecodeKey returns the key that Encoded turned into s.
func DecodeKey(s string) Key {
	name, id, _ := strings.Cut(s, ":")
	if strings.Contains(name, "%") {
		name = strings.NewReplacer("%3A", ":", "%25", "%").Replace(name)
	}
	return Key{Name: name, ID: id}
}

// Check is one element of a decision: a key, the policy to apply to it, and
// the cost (units of quota) to take. For Concurrency checks a granted check
// takes one lease whatever the cost.
type Check struct {
	Key    Key
	Policy Policy
	Cost   int
}

// Validate reports whether c's policy and cost are valid (Policy.Validate,
// ValidateCost). A store answers a check that is not valid with an error
// marked BadRequest, before it consumes anything.
func (c *Check) Validate() error {
	if err := c.Policy.Validate(); err != nil {
		return err
	}
	return ValidateCost(c.Cost)
}

// Result is a store's answer for one [Check].
//
// In a denied decision every Result still reports whether its own check
// would have passed on its own (Allowed), so that callers can say which rule
// triggered the denial; nothing was consumed.
type Result struct {
	// Allowed reports whether this check passes.
	Allowed bool
	// Limit is the policy's capacity (Burst, Limit or MaxConcurrent).
	Limit int
	// Remaining is the quota left after this decision (before it, when the
	// decision was denied).
	Remaining int
	// RetryAfter is how long until this check could pass; zero when it
	// passes. For Concurrency it is the time until the earliest lease
	// expires, the latest moment a slot frees without a release.
	RetryAfter time.Duration
	// ResetAfter is how long until the quota is fully restored: the bucket
	// full, the window empty, every lease expired.
	ResetAfter time.Duration
	// Lease identifies the lease a granted Concurrency check took; empty
	// otherwise.
	Lease string
}

// Store is a rate limit backend. Implementations must be safe for concurrent
// use. Constructors do no network I/O; a Store never closes a client it was
// given. Every call honours ctx: it returns once ctx is done, whatever the
// network does. Errors say their class (see Unavailable and BadRequest).
type Store interface {
	// Decide applies checks atomically: either every check passes and all
	// are consumed, or nothing is consumed. It fills results[i] for
	// checks[i] (len(results) >= len(checks)) and reports whether the
	// decision was allowed. An error means the store could not decide; the
	// results are then undefined.
	Decide(ctx context.Context, checks []Check, results []Result) (bool, error)

	// Peek fills results as Decide would for checks, without consuming
	// anything and without expiring anything observable.
	Peek(ctx context.Context, checks []Check, results []Result) error

	// Release frees the lease of a Concurrency check on key. Releasing an
	// unknown, expired or already released lease is a no-op, never an error
	// and never a gain in capacity.
	Release(ctx context.Context, key Key, lease string) error

	// Reset removes every state kept for key.
	Reset(ctx context.Context, key Key) error

	// ResetAll removes every state this store keeps (and only that: stores
	// that share a server through a prefix or schema leave the others).
	ResetAll(ctx context.Context) error

	// Ping checks that the store can be reached.
	Ping(ctx context.Context) error

	// Close releases the store's resources (background goroutines, clients
	// the store created itself). It is safe to call more than once.
	Close() error
}

// Extender is implemented by stores that can extend a held lease.
type Extender interface {
	// Extend sets the expiry of a live lease to ttl from now. It reports
	// false when the lease is no longer held.
	Extend(ctx context.Context, key Key, lease string, ttl time.Duration) (bool, error)
}

// ReleaseNotifier is implemented by stores whose releases can come from
// other processes. The limiter layer calls Subscribe once per store; fn is
// called with the key of every release the store observes (its own and other
// processes'), so that local waiters wake without polling.
type ReleaseNotifier interface {
	SubscribeReleases(fn func(key Key)) (unsubscribe func())
}

var (
	leasePrefix  = newLeasePrefix()
	leaseCounter atomic.Uint64
)

func newLeasePrefix() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("ratesync/driver: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// NewLeaseID returns an identifier that is unique across processes: a
// random per-process prefix and a counter.
func NewLeaseID() string {
	return leasePrefix + "-" + strconv.FormatUint(leaseCounter.Add(1), 36)
}

// nameEscaper writes '%' and ':' as %25 and %3A.
var nameEscaper = strings.NewReplacer("%", "%25", ":", "%3A")

// EscapeName returns a rule name as Key.Name holds it: '%' and ':' written
// %25 and %3A, so that a name never contains the ':' that separates the
// identifiers. Stores that key state by rule name (Redis co-location)
// use it to find a rule's keys.
func EscapeName(name string) string {
	if !strings.ContainsAny(name, "%:") {
		return name
	}
	return nameEscaper.Replace(name)
}
