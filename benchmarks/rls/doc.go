// Package rls compares `ratesync serve` with envoyproxy/ratelimit as Envoy
// rate limit services (RLS v3 over gRPC): both on the same Redis, the same
// rule (1,000 requests per second per remote address), the same load from
// a Go load generator in this package's tests.
//
// The package holds tests only. TestSideBySide runs the comparison (it
// needs RATESYNC_BENCH_RLS=1; run.sh builds envoyproxy/ratelimit's service
// and runs it); BenchmarkRLS sends b.N decisions to each service, and
// skips envoyproxy/ratelimit when its binary is not given. See
// benchmarks/README.md.
package rls
