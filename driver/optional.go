package driver

import (
	"context"
	"time"
)

// Optional interfaces. A store implements them when it can; the limiter
// layer finds them by type assertion, as database/sql does with its
// drivers. A wrapper that embeds a store promotes its methods, so a
// wrapper that changes Decide must not embed a store that implements
// these (hold it in a named field instead).

// InProcess is implemented by stores that decide in the calling process,
// without I/O (the memory store). The limiter layer calls them directly:
// no call timeout and no circuit breaker, since they cannot be
// unavailable.
type InProcess interface {
	Store
	// InProcess marks the store; it does nothing.
	InProcess()
}

// Prepared decides lone checks of one policy under one key name, for an
// identifier: what Decide answers for the single check
// {Key{Name: name, ID: id}, policy, cost}. It is safe for concurrent use.
type Prepared interface {
	Decide(ctx context.Context, id string, cost int) (Result, error)
}

// Preparer is implemented by in-process stores that decide a lone check
// faster when its policy and key name are prepared once (per rule) rather
// than passed with every call. The answers are Decide's.
type Preparer interface {
	InProcess
	// Prepare returns p prepared for keys named name. p has been
	// validated.
	Prepare(name string, p Policy) Prepared
}

// AsyncDecider is implemented by network stores that send decisions from
// goroutines of their own (to batch them, say). The registry then starts
// a decision and waits for its end itself, bounded by the caller's
// context and the call timeout, rather than running Decide on a goroutine
// of its own: one hand-off between goroutines per decision instead of
// two.
type AsyncDecider interface {
	Store
	// DecideAsync starts Decide(ctx, checks, results) and returns; it
	// calls done.DecideDone exactly once, from any goroutine, with what
	// Decide would return, once results are filled in: also when ctx ends
	// first (a decision already sent is waited for, so that nothing the
	// store admitted goes unreported).
	//
	// When deadline is zero, DecideAsync must not block on I/O. When it
	// is not, the registry stops waiting then, and the store may instead
	// make the call on the caller's goroutine, calling done before it
	// returns, provided it returns by deadline whatever the server does,
	// and only for a decision that takes no concurrency slot (the answer
	// of a call cut at its deadline is lost: it must cost nothing but the
	// units it consumed).
	DecideAsync(ctx context.Context, deadline time.Time, checks []Check, results []Result, done DecideDone)
}

// DecideDone receives the end of a decision started by
// AsyncDecider.DecideAsync.
type DecideDone interface {
	DecideDone(ok bool, err error)
}
