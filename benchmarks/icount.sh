#!/usr/bin/env bash
# icount.sh: instructions per decision of one benchmark, counted by
# valgrind's callgrind, which does not drift as wall-clock time does.
#
# It runs the benchmark at two iteration counts and divides the difference
# of the two totals by the difference of the counts, so set-up (warming
# 100k keys, the test binary's start) cancels out; the harness's own loop
# is included.
#
# usage: ./icount.sh BENCHMARK-REGEXP   e.g. 'BenchmarkMemoryHotKey/ratesync$'
set -euo pipefail
cd "$(dirname "$0")"
[ $# -eq 1 ] || { echo "usage: $0 BENCHMARK-REGEXP" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "icount.sh: valgrind is not installed" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
go test -c -o "$dir/bench.test" .
total() {
	GOGC=off GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind --callgrind-out-file="$dir/out" \
		"$dir/bench.test" -test.run '^$' -test.bench "$1" -test.cpu 1 -test.benchtime "$2x" >/dev/null 2>&1
	awk '/^totals:/ {print $2}' "$dir/out"
}
lo=$(total "$1" 200000)
hi=$(total "$1" 600000)
echo "$1: $(( (hi - lo) / 400000 )) instructions/op"
