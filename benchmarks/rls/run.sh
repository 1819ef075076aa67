#!/usr/bin/env bash
# run.sh: ratesync serve and envoyproxy/ratelimit side by side (TestSideBySide).
#
# Builds envoyproxy/ratelimit's service (no tagged release: the
# pseudo-version @latest resolved to) into a temporary directory, then runs
# the comparison against the Redis of RATESYNC_TEST_REDIS_URL (default
# redis://127.0.0.1:6379/0). Both services and the load generator run on
# this machine, on loopback; every key they write is deleted at the end.
#
# usage: benchmarks/rls/run.sh
# env: RATESYNC_BENCH_RLS_DURATION (10s), RATESYNC_BENCH_RLS_ROUNDS (3),
#      RATESYNC_BENCH_RLS_CONCURRENCY (32,256), RATESYNC_BENCH_RLS_CONNS (4),
#      RATESYNC_BENCH_RLS_ENVOY (a built service binary: skips the build),
#      RATESYNC_BENCH_RLS_ENVOY_ENV (extra settings for it, e.g. "REDIS_POOL_SIZE=64")
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY_RATELIMIT_VERSION=v1.4.1-0.20260122083618-3fb702589d36
if [ -z "${RATESYNC_BENCH_RLS_ENVOY:-}" ]; then
	bin=$(mktemp -d)
	trap 'rm -rf "$bin"' EXIT
	GOBIN="$bin" go install "github.com/envoyproxy/ratelimit/src/service_cmd@$ENVOY_RATELIMIT_VERSION"
	export RATESYNC_BENCH_RLS_ENVOY="$bin/service_cmd"
fi
RATESYNC_BENCH_RLS=1 go test -count=1 -run '^TestSideBySide$' -v -timeout 60m ./rls
