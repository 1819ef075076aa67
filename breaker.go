package ratesync

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/rate-sync/ratesync-go/driver"
	"github.com/sony/gobreaker/v2"
)

// Circuit breaker defaults. Each store of a configuration can set its own
// (breaker_threshold, breaker_cooldown_seconds), and a store added in code
// with WithBreaker.
const (
	// DefaultBreakerThreshold is how many consecutive unavailable answers
	// open a store's circuit breaker.
	DefaultBreakerThreshold = 5
	// DefaultBreakerCooldown is how long an open breaker answers without
	// calling the store before one probe call is let through.
	DefaultBreakerCooldown = 2 * time.Second
)

// BreakerState is the state of a store's circuit breaker.
type BreakerState string

// The breaker states.
const (
	BreakerClosed   BreakerState = "closed"
	BreakerOpen     BreakerState = "open"
	BreakerHalfOpen BreakerState = "half-open"
)

// errAbandoned is the outcome reported to the breaker for a call whose
// caller left before the store answered and whose answer never came within
// the call timeout either: it says nothing about the store, and frees the
// probe slot of a half-open breaker.
var errAbandoned = errors.New("ratesync: store call abandoned")

// breaker is a store's circuit breaker (sony/gobreaker): closed, open for
// the cool-down after threshold consecutive unavailable answers, then
// half-open with one probe call, whose answer closes or reopens it. Only
// unavailability (driver.IsUnavailable) counts as a failure; any other
// answer shows the store is up.
type breaker struct {
	cb *gobreaker.TwoStepCircuitBreaker[struct{}]
	// w lets the main path skip the breaker (see allow). Bit 0: closed,
	// and no failure since the success reported last; bits 1 to 47 count
	// failures; bits 48 and up count failures being reported. epoch counts
	// the breaker's changes of state.
	w, epoch *atomic.Uint64
}

const (
	brClean     = 1
	brFailure   = 2
	brReporting = 1 << 48
)

// ticket is a call's leave to go: gobreaker's, or the shortcut's.
type ticket struct {
	done   func(error) // gobreaker's outcome; nil for a call made without asking
	w0, e0 uint64      // w and epoch when the call was let through
}

// allow asks the breaker for a call. While the breaker is closed with no
// failure since the success reported last, a success changes nothing in
// it: the call is then made without asking, and its outcome is reported
// (outcome) only when it is a failure, or a success that follows failures
// of calls made beside it, and only when the breaker has not changed
// state since (gobreaker drops such outcomes too). A success reported
// while no failure was being reported, nor happened since, starts the
// shortcut again. So gobreaker sees every failure and, after each, every
// success, and counts consecutive failures as it would alone.
func (b breaker) allow() (ticket, error) {
	w0 := b.w.Load()
	if w0&brClean != 0 {
		return ticket{w0: w0, e0: b.epoch.Load()}, nil
	}
	done, err := b.cb.Allow()
	if err != nil {
		return ticket{}, err
	}
	return ticket{done: done, w0: w0}, nil
}

// clean reports whether the breaker is closed, with no failure since the
// success reported last.
func (b breaker) clean() bool { return b.w.Load()&brClean != 0 }

// outcome reports the outcome of a call let through with t.
func (b breaker) outcome(t ticket, err error) {
	failure := err != nil && driver.IsUnavailable(err)
	success := !failure && (err == nil || !errors.Is(err, errAbandoned))
	if t.done == nil {
		if !failure && !success {
			return // abandoned: says nothing
		}
		if b.epoch.Load() != t.e0 || (success && b.w.Load() == t.w0) {
			return // an outcome of before a change of state; or nothing to change
		}
		d, aerr := b.cb.Allow() // closed, as when the call was let through
		if aerr != nil {
			return
		}
		t.done = d
	}
	if failure {
		b.w.Add(brReporting + brFailure)
		b.w.And(^uint64(brClean))
		t.done(err)
		b.w.Add(^uint64(brReporting - 1)) // - brReporting
		return
	}
	w1 := b.w.Load()
	t.done(err)
	if success && w1&brClean == 0 && w1>>48 == 0 && b.cb.State() == gobreaker.StateClosed {
		b.w.CompareAndSwap(w1, w1|brClean)
	}
}

func newBreaker(threshold int, cooldown time.Duration, onChange func(from, to BreakerState)) breaker {
	b := breaker{w: new(atomic.Uint64), epoch: new(atomic.Uint64)}
	b.w.Store(brClean)
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		MaxRequests: 1,
		Timeout:     cooldown,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(threshold) },
		IsSuccessful: func(err error) bool {
			return !driver.IsUnavailable(err)
		},
		IsExcluded: func(err error) bool { return errors.Is(err, errAbandoned) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			b.epoch.Add(1)
			b.w.And(^uint64(brClean))
			if onChange != nil {
				onChange(stateOf(from), stateOf(to))
			}
		},
	})
	return b
}

func stateOf(s gobreaker.State) BreakerState {
	switch s {
	case gobreaker.StateOpen:
		return BreakerOpen
	case gobreaker.StateHalfOpen:
		return BreakerHalfOpen
	}
	return BreakerClosed
}

// state returns the breaker's state; in-process stores have none and are
// always closed.
func (b breaker) state() BreakerState {
	if b.cb == nil {
		return BreakerClosed
	}
	return stateOf(b.cb.State())
}
