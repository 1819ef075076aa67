#!/usr/bin/env bash
# compare.sh: interleaved runs of two libraries' benchmarks, with the
# ratio of their times taken round by round.
#
# Wall-clock time on a shared VM drifts by up to 2x within minutes, so
# running library A for a while and then library B compares two different
# machines. This script builds the benchmark binary once, then alternates:
# each round runs every benchmark group for A and then for B, back to back.
# It prints each library's median ns/op and the median of the per-round
# ratios A/B, which drift cancels out of.
#
# usage: ./compare.sh [rounds] [libA] [libB] [groups...]
#   defaults: 7 ratesync sethvargo MemoryHotKey Memory100kKeys
# env: CPUS (default 1,2), BENCHTIME (default 300000x)
set -euo pipefail
cd "$(dirname "$0")"
rounds=${1:-7}
a=${2:-ratesync}
b=${3:-sethvargo}
shift $(( $# < 3 ? $# : 3 ))
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(MemoryHotKey Memory100kKeys)
bin=$(mktemp -d)/bench.test
out=$(mktemp)
go test -c -o "$bin" .
for _ in $(seq "$rounds"); do
	for g in "${groups[@]}"; do
		for lib in "$a" "$b"; do
			"$bin" -test.run '^$' -test.bench "^Benchmark$g\$/^$lib\$" -test.cpu "${CPUS:-1,2}" \
				-test.benchtime "${BENCHTIME:-300000x}" -test.benchmem | grep '^Benchmark' >>"$out"
		done
	done
done
printf "%-34s %12s %12s %10s %s\n" benchmark "$a ns/op" "$b ns/op" "$a/$b" "(allocs/op)"
awk -v a="$a" -v b="$b" '
function median(arr, n,   i, j, t) {
	for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
	return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
}
{
	split($1, p, "/"); lib = p[2]; cpu = 1
	if (lib ~ /-[0-9]+$/) { cpu = lib; sub(/.*-/, "", cpu); sub(/-[0-9]+$/, "", lib) }
	k = p[1] " cpu=" cpu
	if (lib == a) { pend[k] = $3; na[k]++; va[k, na[k]] = $3; al[k] = $7 }
	else if (lib == b && (k in pend)) { nb[k]++; vb[k, nb[k]] = $3; nr[k]++; vr[k, nr[k]] = pend[k] / $3; delete pend[k]; bl[k] = $7 }
}
END {
	for (k in nr) {
		n = nr[k]
		for (i = 1; i <= n; i++) { x[i] = va[k, i]; y[i] = vb[k, i]; r[i] = vr[k, i] }
		printf "%-34s %12.1f %12.1f %10.2f (%s, %s; %d rounds)\n", k, median(x, n), median(y, n), median(r, n), al[k], bl[k], n
	}
}' "$out" | sort
rm -rf "$(dirname "$bin")" "$out"
