#!/usr/bin/env bash
# Start (or stop) a 3-node Redis Cluster on loopback ports 7001-7003 for the
# redisstore Cluster tests, then print the variable the tests read:
#
#   eval "$(scripts/redis-cluster.sh)"     # start, export RATESYNC_TEST_REDIS_CLUSTER
#   scripts/redis-cluster.sh stop
#
# Data lives in a temporary directory and nothing is saved to disk.
set -euo pipefail
ports=(7001 7002 7003)
dir="${RATESYNC_CLUSTER_DIR:-/tmp/ratesync-redis-cluster}"

if [ "${1:-start}" = stop ]; then
	for p in "${ports[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
	rm -rf "$dir"
	exit 0
fi

addrs=()
for p in "${ports[@]}"; do addrs+=("127.0.0.1:$p"); done
list=$(IFS=,; echo "${addrs[*]}")

# Already up and healthy: reuse it.
if redis-cli -p "${ports[0]}" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then
	echo "export RATESYNC_TEST_REDIS_CLUSTER=$list"
	exit 0
fi

mkdir -p "$dir"
for p in "${ports[@]}"; do
	redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
	mkdir -p "$dir/$p"
	rm -f "$dir/$p/nodes.conf"
	redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
		--cluster-config-file "$dir/$p/nodes.conf" --dir "$dir/$p" \
		--save "" --appendonly no --daemonize yes --logfile "$dir/$p/redis.log" >&2
done
for p in "${ports[@]}"; do
	for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >&2
for _ in $(seq 100); do
	ok=1
	for p in "${ports[@]}"; do
		redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' || ok=0
	done
	[ "$ok" = 1 ] && break
	sleep 0.1
done
echo "export RATESYNC_TEST_REDIS_CLUSTER=$list"
