package driver

import "context"

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
