package ratesync

import (
	"errors"
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
}

func newBreaker(threshold int, cooldown time.Duration, onChange func(from, to BreakerState)) breaker {
	return breaker{cb: gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
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
	})}
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
