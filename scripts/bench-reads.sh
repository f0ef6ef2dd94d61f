#!/usr/bin/env bash
# Reads of `GET /v1/vms` while VMs are created (docs/benchmarks.md, "Reads while VMs are created").
#
#   scripts/bench-reads.sh [controller|up] [RUNS] [PORT]
#
# Starts a release `vireo controller` (no hosts: the VMs stay pending) or `vireo up` (its local
# simulated host runs them) on 127.0.0.1:PORT in a fresh data directory under /tmp, creates 1,000
# VMs, measures `wrk -t1 -c16 -d10s` at rest, then RUNS times while `vireo bench create
# --concurrency 2` creates VMs, and stops everything it started. Needs `wrk` (scripts/install-deps.sh)
# and `swift build -c release --scratch-path .build-release --product vireo`.
set -euo pipefail
mode=${1:-controller}
runs=${2:-3}
port=${3:-7593}
bin=${VIREO_BIN:-.build-release/release/vireo}
case $mode in controller | up) ;; *)
    echo "bench-reads: mode must be controller or up, not '$mode'" >&2
    exit 2
    ;;
esac
[[ -x $bin ]] || {
    echo "bench-reads: no $bin; build it with: swift build -c release --scratch-path .build-release --product vireo" >&2
    exit 2
}
command -v wrk > /dev/null || {
    echo "bench-reads: wrk is missing; run scripts/install-deps.sh" >&2
    exit 2
}
dir=$(mktemp -d /tmp/vireo-bench-reads.XXXXXX)
server=
creator=
cleanup() {
    [[ -n $creator ]] && kill "$creator" 2> /dev/null || true
    [[ -n $server ]] && kill "$server" 2> /dev/null || true
    wait 2> /dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
url=http://127.0.0.1:$port
if [[ $mode == up ]]; then
    "$bin" up --data-dir "$dir/data" --listen "127.0.0.1:$port" --log-level warning \
        --driver simulated --driver-opt cpus=100000 --driver-opt memory=100TiB > "$dir/server.log" 2>&1 &
else
    "$bin" controller --data-dir "$dir/data" --listen "127.0.0.1:$port" --log-level warning > "$dir/server.log" 2>&1 &
fi
server=$!
for _ in $(seq 1 100); do
    curl -fs "$url/healthz" > /dev/null 2>&1 && break
    sleep 0.1
done
"$bin" bench create --server "$url" --count 1000 --prefix g > /dev/null 2>&1
measure() { wrk -t1 -c16 -d10s --latency "$url/v1/vms" | awk '/ 50%| 99%/ {printf "%s %s  ", $1, $2} /Requests\/sec/ {printf "%s requests/s", $2}'; }
echo "$mode, at rest: $(measure)"
for i in $(seq 1 "$runs"); do
    "$bin" bench create --server "$url" --count 100000 --concurrency 2 --prefix "c$i-" > "$dir/create.log" 2>&1 &
    creator=$!
    sleep 2
    result=$(measure)
    kill "$creator" 2> /dev/null || true
    wait "$creator" 2> /dev/null || true
    creator=
    echo "$mode, while 2 clients create (run $i): $result; $(grep -o 'created [0-9]*' "$dir/create.log" | tail -1) VMs by then"
done
