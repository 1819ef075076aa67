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
	refs []leaseRef
	one  [1]leaseRef
	// failedOpen, fallback: how the lease was granted (see FailedOpen and
	// Fallback).
	failedOpen, fallback bool

	// state: leaseHeld, leaseReleasing (one Release call owns the refs),
	// leaseReleased.
	state atomic.Int32
}

const (
	leaseHeld = iota
	leaseReleasing
	leaseReleased
)

type leaseRef struct {
	rs       *ruleState
	h        *storeHandle
	key      driver.Key
	id       string
	released bool // written by the Release call that owns the lease
}

// Shared leases of admissions that hold no slot.
var (
	noLease         = &Lease{}
	failedOpenLease = &Lease{failedOpen: true}
	fallbackLease   = &Lease{fallback: true}
)

// Held reports whether the lease holds a concurrency slot that has not been
// released.
func (l *Lease) Held() bool {
	if l == nil || len(l.refs) == 0 {
		return false
	}
	return l.state.Load() != leaseReleased
}

// FailedOpen reports that the store could not decide and the rule's Allow
// failure policy granted the request without a limit.
func (l *Lease) FailedOpen() bool { return l != nil && l.failedOpen }

// Fallback reports that the store could not decide and the rule's Local
// failure policy granted the request in process.
func (l *Lease) Fallback() bool { return l != nil && l.fallback }

// Release frees the lease's concurrency slots and wakes the next waiter. It
// is idempotent and never raises capacity: a second release, or the release
// of a lease that expired, does nothing (a Release while another one runs
// returns at once).
//
// Release returns within the store's call timeout, or when ctx ends if
// that comes first: the release itself ignores ctx's cancellation and goes
// on (bounded by the call timeout), so a lease is released even from a
// request whose context is done. When the store is unavailable, Release
// tries again within the call timeout, then returns the error; the lease
// stays held, so Release can be called again, and the slot frees itself
// at the end of the lease TTL in any case.
func (l *Lease) Release(ctx context.Context) error {
	if l == nil || len(l.refs) == 0 {
		return nil
	}
	if !l.state.CompareAndSwap(leaseHeld, leaseReleasing) {
		return nil // released, or being released by another call
	}
	if ctx.Done() == nil || l.inProcess() {
		// Nothing can end it early; an in-process store answers at once,
		// and must not refuse a caller whose context is done.
		return l.release(context.WithoutCancel(ctx))
	}
	// The release goes on without the caller's cancellation (so that a
	// request whose context is done still frees its slot), bounded by the
	// call timeout; the caller waits at most until its context ends.
	done := make(chan error, 1)
	go func() { done <- l.release(context.WithoutCancel(ctx)) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("ratesync: release: %w (the release goes on within the store's call timeout)", ctx.Err())
	}
}

// inProcess reports whether every slot is held by an in-process store,
// which answers at once.
func (l *Lease) inProcess() bool {
	for i := range l.refs {
		if !l.refs[i].h.inproc {
			return false
		}
	}
	return true
}

// release releases the refs not released yet, and leaves the lease
// released, or held again when a release failed.
func (l *Lease) release(ctx context.Context) error {
	var errs []error
	for i := range l.refs {
		r := &l.refs[i]
		if r.released {
			continue
		}
		err := r.release(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("ratesync: limiter %q: release: %w", r.rs.name, err))
			continue
		}
		r.released = true
		r.rs.m.leaseReleased()
		// Wake a waiter of this process at once; a store that notifies
		// releases may wake another one too, which then finds no slot and
		// waits again.
		// Waiters queue under the rule's store, also for a fallback
		// lease, and for a lease of a store replaced since.
		q := &r.rs.reg.queues
		cur := r.rs.handle()
		q.notify(cur, r.key)
		if r.h != cur && r.h != r.rs.reg.fb {
			q.notify(r.h, r.key)
		}
		r.h.leaseDone()
	}
	if len(errs) == 0 {
		l.state.Store(leaseReleased)
		return nil
	}
	l.state.Store(leaseHeld)
	return errors.Join(errs...)
}

// release makes the store call, retrying on unavailability until the
// store's call timeout (or ctx's earlier deadline).
func (r *leaseRef) release(ctx context.Context) error {
	bound := r.h.timeout()
	if bound <= 0 {
		bound = DefaultCallTimeout
	}
	budget, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	backoff := 5 * time.Millisecond
	for {
		err := r.h.call(budget, &storeOp{kind: opRelease, key: r.key, lease: r.id})
		if err == nil || !driver.IsUnavailable(err) {
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-budget.Done():
			t.Stop()
			return err
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// Extend sets the lease's expiry to ttl from now (the rule's lease TTL when
// ttl is zero), for holders that work longer than the TTL. It returns
// ErrLeaseLost when the lease already expired or was released, and an error
// when the store cannot extend leases.
func (l *Lease) Extend(ctx context.Context, ttl time.Duration) error {
	if l == nil || len(l.refs) == 0 {
		return nil
	}
	if !l.Held() {
		return ErrLeaseLost
	}
	if ttl != 0 {
		if err := driver.ValidateLeaseTTL(ttl); err != nil {
			return err
		}
	}
	for i := range l.refs {
		r := &l.refs[i]
		d := ttl
		if d <= 0 {
			d = r.rs.rule.LeaseTTL
		}
		o := &storeOp{kind: opExtend, key: r.key, lease: r.id, ttl: d}
		if err := r.h.call(ctx, o); err != nil {
			return fmt.Errorf("ratesync: limiter %q: extend: %w", r.rs.name, err)
		}
		if !o.ok {
			return fmt.Errorf("limiter %q: %w", r.rs.name, ErrLeaseLost)
		}
		r.h.noteTTL(d)
	}
	return nil
}
