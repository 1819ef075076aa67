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
// read. Policies are validated by the root package before they reach a store.
type Policy struct {
	Kind Kind

	// Token bucket.
	Rate  float64 // tokens per second, > 0
	Burst int     // bucket capacity, >= 1

	// Sliding window.
	Limit  int           // units per window, >= 1
	Window time.Duration // > 0

	// Concurrency.
	MaxConcurrent int           // >= 1
	LeaseTTL      time.Duration // > 0
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
// one token takes to refill, rounded up to the nanosecond so that rounding
// never admits more than Rate per second.
func (p Policy) Interval() time.Duration {
	if p.Rate <= 0 {
		return 0
	}
	ns := 1e9 / p.Rate
	i := int64(ns)
	if float64(i) < ns {
		i++
	}
	if i < 1 {
		i = 1
	}
	return time.Duration(i)
}

// Key identifies the state of one limiter for one identifier: Name is the
// rule's key (escaped), ID the identifiers of a per-key limiter (escaped and
// joined by ':'), empty for the rule's own limiter. Keeping the two apart
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
