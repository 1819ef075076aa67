package driver

import (
	"context"
	"errors"
)

// Error classes. A store reports what its error means for the limiter
// layer by wrapping it with Unavailable or BadRequest, so that errors.Is
// matches both the class and the client's own error. The limiter layer
// treats the classes differently:
//
//   - ErrUnavailable counts toward the store's circuit breaker: the store
//     cannot answer anyone now (connection refused or reset, a network or
//     call timeout, a server loading its data, read-only or shutting down).
//   - ErrBadRequest never counts toward the breaker: this one request
//     cannot be decided (its key, cost or policy), and other requests are
//     unaffected. A store should avoid these altogether: every identifier
//     and every validated policy must be decidable.
//   - Any other error is internal (a bug, or an answer the store did not
//     expect). It goes through the rule's failure policy like the others,
//     and does not count toward the breaker either.
//
// Every class goes through the rule's failure policy.
var (
	// ErrUnavailable is the class of errors that mean the store cannot be
	// reached or cannot answer now.
	ErrUnavailable = errors.New("store unavailable")
	// ErrBadRequest is the class of errors that mean this one request
	// cannot be decided by the store.
	ErrBadRequest = errors.New("request cannot be decided")
)

// classed is an error with a class: Is matches the class, Unwrap the cause.
type classed struct {
	class error
	err   error
}

func (e *classed) Error() string        { return e.class.Error() + ": " + e.err.Error() }
func (e *classed) Unwrap() error        { return e.err }
func (e *classed) Is(target error) bool { return target == e.class }
func classify(class, err error) error {
	if err == nil || errors.Is(err, class) {
		return err
	}
	return &classed{class: class, err: err}
}

// Unavailable returns err marked as ErrUnavailable (nil for nil).
func Unavailable(err error) error { return classify(ErrUnavailable, err) }

// BadRequest returns err marked as ErrBadRequest (nil for nil).
func BadRequest(err error) error { return classify(ErrBadRequest, err) }

// IsUnavailable reports whether err means the store cannot answer now:
// an error marked Unavailable, or a context deadline (a call that timed
// out). A cancelled context is not unavailability: it says nothing about
// the store.
func IsUnavailable(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}
