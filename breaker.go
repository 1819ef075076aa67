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
	// failures; bits 48 and up count failures being reported.
	w    *atomic.Uint64
	fast func(error) // the outcome of a call made without asking
}

const (
	brClean     = 1
	brFailure   = 2
	brReporting = 1 << 48
)

// allow asks the breaker for a call, and returns the function that takes
// its outcome. While the breaker is closed with no failure since the
// success reported last, a success changes nothing in it: the call is
// then made without asking, and only a failure is reported, which ends
// that (two locks and two clock readings less per call on the main
// path). A success reported while no failure was being reported, nor
// happened since it was asked, starts it again: the breaker sees every
// failure and, after each, every success, so it counts consecutive
// failures exactly.
func (b breaker) allow() (func(error), error) {
	w0 := b.w.Load()
	if w0&brClean != 0 {
		return b.fast, nil
	}
	done, err := b.cb.Allow()
	if err != nil {
		return nil, err
	}
	return func(err error) {
		if driver.IsUnavailable(err) {
			b.failed(err, done)
			return
		}
		done(err)
		if err == nil || !errors.Is(err, errAbandoned) {
			if w0>>48 == 0 && b.cb.State() == gobreaker.StateClosed {
				b.w.CompareAndSwap(w0, w0|brClean)
			}
		}
	}, nil
}

// failed reports a failure; done is nil for a call made without asking.
func (b breaker) failed(err error, done func(error)) {
	b.w.Add(brReporting + brFailure)
	b.w.And(^uint64(brClean))
	if done == nil {
		if d, aerr := b.cb.Allow(); aerr == nil {
			done = d
		}
	}
	if done != nil {
		done(err)
	}
	b.w.Add(^uint64(brReporting - 1)) // - brReporting
}

func newBreaker(threshold int, cooldown time.Duration, onChange func(from, to BreakerState)) breaker {
	b := breaker{w: new(atomic.Uint64)}
	b.w.Store(brClean)
	b.fast = func(err error) {
		if err != nil && driver.IsUnavailable(err) {
			b.failed(err, nil)
		}
	}
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		MaxRequests: 1,
		Timeout:     cooldown,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(threshold) },
		IsSuccessful: func(err error) bool {
			return !driver.IsUnavailable(err)
		},
		IsExcluded: func(err error) bool { return errors.Is(err, errAbandoned) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
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
