package ratesync

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Sentinel errors. Errors returned by this package wrap them, so test with
// errors.Is.
var (
	// ErrLimiterNotFound means no limiter of that name is configured.
	ErrLimiterNotFound = errors.New("ratesync: limiter not found")
	// ErrStoreNotFound means a limiter names a store that is not configured.
	ErrStoreNotFound = errors.New("ratesync: store not found")
	// ErrTimeout means a wait for the limit gave up: the rule's timeout, the
	// call's timeout or the context's deadline came first. Errors that wrap
	// it also match context.DeadlineExceeded.
	ErrTimeout = errors.New("ratesync: timed out waiting for the limit")
	// ErrInvalidConfig is wrapped by every configuration and validation
	// error (see ConfigError).
	ErrInvalidConfig = errors.New("ratesync: invalid configuration")
	// ErrEngineNotLinked means a config names an engine whose package is not
	// imported by the program.
	ErrEngineNotLinked = errors.New("ratesync: engine not linked")
	// ErrMissingValue means a template placeholder had no value.
	ErrMissingValue = errors.New("ratesync: missing template value")
	// ErrCostTooHigh means a call asked for more units than the rule's
	// capacity, which can never be granted.
	ErrCostTooHigh = errors.New("ratesync: cost exceeds the rule's capacity")
	// ErrStore wraps errors from a store when the rule fails closed.
	ErrStore = errors.New("ratesync: store error")
	// ErrCircuitOpen is the store error while a store's circuit breaker is
	// open: the store is not called and the rule's failure policy answers
	// at once.
	ErrCircuitOpen = errors.New("ratesync: store circuit breaker is open")
	// ErrCallTimeout is the store error of a decision the store did not
	// answer within its call timeout (call_timeout_seconds).
	ErrCallTimeout = errors.New("ratesync: store call timed out")
	// ErrClosed means the registry was closed.
	ErrClosed = errors.New("ratesync: registry is closed")
)

// TimeoutError reports a wait that gave up. It matches ErrTimeout and
// context.DeadlineExceeded with errors.Is.
type TimeoutError struct {
	Limiter string        // rule name
	Waited  time.Duration // time spent before giving up
	// RetryAfter is the wait the store still asked for when the call gave up
	// (zero when the wait was for a concurrency slot).
	RetryAfter time.Duration
}

func (e *TimeoutError) Error() string {
	s := "ratesync: limiter " + strconv.Quote(e.Limiter) + ": timed out after " + e.Waited.Round(time.Microsecond).String()
	if e.RetryAfter > 0 {
		s += " (the limit allows the next request in " + e.RetryAfter.Round(time.Microsecond).String() + ")"
	}
	return s
}

// Is reports whether target is ErrTimeout or context.DeadlineExceeded.
func (e *TimeoutError) Is(target error) bool {
	return target == ErrTimeout || target == context.DeadlineExceeded
}

// ConfigError is a configuration or validation error. It names where the bad
// value is: the file (when loading one), the table (such as
// "limiters.api"), the key and, when known, the line.
type ConfigError struct {
	File  string
	Table string
	Key   string
	Line  int
	Msg   string
	Err   error // underlying error, if any
}

func (e *ConfigError) Error() string {
	s := "ratesync: "
	if e.File != "" {
		s += e.File
		if e.Line > 0 {
			s += ":" + strconv.Itoa(e.Line)
		}
		s += ": "
	}
	if e.Table != "" {
		s += "[" + e.Table + "] "
	}
	if e.Key != "" {
		s += e.Key + ": "
	}
	s += e.Msg
	if e.Err != nil && e.Err != ErrEngineNotLinked && e.Err != ErrStoreNotFound {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying errors, always including ErrInvalidConfig.
func (e *ConfigError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrInvalidConfig, e.Err}
	}
	return []error{ErrInvalidConfig}
}

func notFound(kind error, name string) error {
	return fmt.Errorf("%w: %q", kind, name)
}
