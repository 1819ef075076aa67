package ratesync

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
)

// ErrLeaseLost is returned by Lease.Extend when the lease already expired
// (its slot may have gone to someone else).
var ErrLeaseLost = errors.New("ratesync: lease expired or released")

// Lease is a granted request. For rules with max_concurrent it holds a
// concurrency slot until Release (or until the rule's lease TTL passes); for
// other rules Release is a no-op. A nil *Lease is valid and holds nothing.
// A Lease is safe for concurrent use; Release is idempotent.
type Lease struct {
	refs     []leaseRef
	one      [1]leaseRef
	released atomic.Bool
}

type leaseRef struct {
	rs  *ruleState
	h   *storeHandle
	key driver.Key
	id  string
}

// noLease is the shared lease of admissions that hold no slot.
var noLease = &Lease{}

// Held reports whether the lease holds a concurrency slot that has not been
// released.
func (l *Lease) Held() bool {
	return l != nil && len(l.refs) > 0 && !l.released.Load()
}

// Release frees the lease's concurrency slots and wakes the next waiter. It
// is idempotent and never raises capacity: a second release, or the release
// of a lease that expired, does nothing. The store call ignores ctx's
// cancellation, so a lease is released even from a request whose context is
// done.
func (l *Lease) Release(ctx context.Context) error {
	if l == nil || len(l.refs) == 0 || !l.released.CompareAndSwap(false, true) {
		return nil
	}
	ctx = context.WithoutCancel(ctx)
	var errs []error
	for _, r := range l.refs {
		so := r.rs.reg.storeObs
		var start time.Time
		if so != nil {
			start = time.Now()
		}
		err := r.h.store.Release(ctx, r.key, r.id)
		if so != nil {
			so(StoreCall{Store: r.h.name, Engine: r.h.engine, Op: "release", Duration: time.Since(start), Err: err})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("ratesync: limiter %q: release: %w", r.rs.name, err))
		}
		r.rs.m.leaseReleased()
		if _, ok := r.h.store.(driver.ReleaseNotifier); !ok {
			// A notifying store tells every process, this one included;
			// waking a waiter here too would wake two for one slot.
			r.rs.reg.queues.notify(r.h, r.key)
		}
	}
	return errors.Join(errs...)
}

// Extend sets the lease's expiry to ttl from now (the rule's lease TTL when
// ttl is zero), for holders that work longer than the TTL. It returns
// ErrLeaseLost when the lease already expired or was released, and an error
// when the store cannot extend leases.
func (l *Lease) Extend(ctx context.Context, ttl time.Duration) error {
	if l == nil || len(l.refs) == 0 {
		return nil
	}
	if l.released.Load() {
		return ErrLeaseLost
	}
	for _, r := range l.refs {
		ext, ok := r.h.store.(driver.Extender)
		if !ok {
			return fmt.Errorf("ratesync: limiter %q: store %q cannot extend leases", r.rs.name, r.h.name)
		}
		d := ttl
		if d <= 0 {
			d = r.rs.rule.LeaseTTL
		}
		held, err := ext.Extend(ctx, r.key, r.id, d)
		if err != nil {
			return fmt.Errorf("ratesync: limiter %q: extend: %w", r.rs.name, err)
		}
		if !held {
			return fmt.Errorf("limiter %q: %w", r.rs.name, ErrLeaseLost)
		}
	}
	return nil
}
