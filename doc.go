// Package ratesync is distributed rate limiting for Go: declarative rules,
// one atomic store call per decision, and the same answers on every store
// (in-process memory, Redis, PostgreSQL).
//
// It is the Go edition of the Python library rate-sync and reads the same
// rate-sync.toml:
//
//	[stores.main]
//	engine = "memory"
//
//	[limiters.api]
//	store = "main"
//	rate_per_second = 10.0
//
// With that file in the working directory, the package-level functions load
// it on first use:
//
//	lease, err := ratesync.Acquire(ctx, "api") // blocks until the limit allows
//	if err != nil { ... }
//	defer lease.Release(ctx)
//
// # Rules
//
// A rule (Rule, or a [limiters.NAME] table) has a rate policy, a
// concurrency policy, or both:
//
//   - token bucket: rate_per_second, with burst (default 1: one request
//     every 1/rate seconds, the first at once). GCRA, exact at any rate.
//   - sliding window: limit admissions in any window_seconds, counted
//     exactly.
//   - concurrency: max_concurrent leases held at once, each expiring after
//     lease_seconds (DefaultLeaseTTL) if its holder never releases it.
//
// Both policies of a rule are decided together: a refusal by one consumes
// nothing of the other.
//
// # Calls
//
// Limiter.Try makes one attempt and returns a Decision; being limited is a
// result, not an error. Limiter.Acquire waits (sleeping exactly the time the
// store asks for, woken by releases for concurrency) up to the rule's
// timeout, the call's WithTimeout or the context's deadline. Limiter.Do
// runs a function under the limit and always releases. Limiter.State reads
// without consuming.
//
// # Per-key limits
//
// One rule serves any number of identifiers: Registry.For("api",
// userID), Limiter.For, or templates such as "api:{tenant_id}:{user_id}".
// Each identifier has its own state in the store, which expires when idle.
// Composite decides several limiters (per IP and per account) all or
// nothing in one store call.
//
// # Stores
//
// The memory engine is built in (package memstore). Other engines register
// themselves when their package is imported, as database/sql drivers do.
// Store authors implement driver.Store and prove it with package storetest.
package ratesync
