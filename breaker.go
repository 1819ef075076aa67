package ratesync

import (
	"sync/atomic"
	"time"
)

// Circuit breaker settings of every store.
const (
	// BreakerThreshold is how many consecutive store failures open a
	// store's circuit breaker.
	BreakerThreshold = 5
	// BreakerCooldown is how long an open breaker answers without calling
	// the store before one probe call is let through.
	BreakerCooldown = 2 * time.Second
)

// breaker is a store's circuit breaker: closed (calls go through), open
// (no calls until the cool-down ends), half-open (one probe call; its
// success closes the breaker, its failure opens it again). The zero value
// is closed.
type breaker struct {
	failures  atomic.Int32
	openUntil atomic.Int64 // unix ns; 0 when closed
	probing   atomic.Bool
}

// allow reports whether a call may go to the store.
func (b *breaker) allow() bool {
	until := b.openUntil.Load()
	if until == 0 {
		return true
	}
	if time.Now().UnixNano() < until {
		return false
	}
	return b.probing.CompareAndSwap(false, true) // half-open: one probe at a time
}

// clean reports whether the breaker is closed with no failure counted, so
// that a success would change nothing.
func (b *breaker) clean() bool {
	return b.openUntil.Load() == 0 && b.failures.Load() == 0
}

// success records a good call and reports whether it closed an open
// breaker.
func (b *breaker) success() (closed bool) {
	if b.failures.Load() != 0 || b.openUntil.Load() != 0 {
		b.failures.Store(0)
		closed = b.openUntil.Swap(0) != 0
		b.probing.Store(false)
	}
	return closed
}

// failure records a failed call and reports whether the breaker opened
// (from closed) because of it.
func (b *breaker) failure() (opened bool) {
	n := b.failures.Add(1)
	if n >= BreakerThreshold || b.probing.Load() {
		was := b.openUntil.Swap(time.Now().Add(BreakerCooldown).UnixNano())
		b.probing.Store(false)
		return was == 0
	}
	return false
}

// BreakerState is the state of a store's circuit breaker.
type BreakerState string

// The breaker states.
const (
	BreakerClosed   BreakerState = "closed"
	BreakerOpen     BreakerState = "open"
	BreakerHalfOpen BreakerState = "half-open"
)

func (b *breaker) state() BreakerState {
	until := b.openUntil.Load()
	switch {
	case until == 0:
		return BreakerClosed
	case time.Now().UnixNano() < until:
		return BreakerOpen
	}
	return BreakerHalfOpen
}
