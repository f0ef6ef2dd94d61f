#!/usr/bin/env bash
# `make demo`: starts `vireo up`, applies a small manifest, waits until its VMs run, puts a load on
# the web application until its objectives have values, shows them and what the rebalancer would
# do, and keeps running until Ctrl-C. DEMO_SECONDS=N stops it after N seconds instead (for
# unattended runs); DEMO_KEEP=1 leaves the VMs running when it stops.
#
# Each run starts clean: what an earlier run left in the demo's data directory (also after a crash
# or `kill -9`) is removed first, guest images excepted. Stopping removes the demo's VMs, and any QEMU
# of this data directory still running after that is ended, so nothing is left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(swift build --show-bin-path)/vireo"
data="${VIREO_DEMO_DIR:-$PWD/.demo-data}"
# As root, QEMU runs as other uids (docs/security.md) that must reach the data directory: a
# checkout they cannot enter (one under /root) keeps the demo's data in /var/lib/vireo/demo.
if [ -z "${VIREO_DEMO_DIR:-}" ] && [ "$(id -u)" -eq 0 ] \
  && ! setpriv --reuid=1073741824 --regid=1073741824 --clear-groups test -x "$PWD" 2>/dev/null; then
  data=/var/lib/vireo/demo
fi
listen="${VIREO_DEMO_LISTEN:-127.0.0.1:7480}"
export VIREO_SERVER="http://$listen"

say() { printf '\n$ %s\n' "$*"; }
# QEMU processes started for VMs under the demo's data directory (their command lines name it).
leftover_qemus() { pgrep -f -- "qemu-system.*$data/" || true; }

if curl -fsS "$VIREO_SERVER/healthz" >/dev/null 2>&1; then
  echo "demo: something already answers on $listen (another make demo?); stop it first" >&2
  exit 1
fi
# Only a directory the demo made is cleaned (its own .demo-data, or one marked by an earlier run):
# VIREO_DEMO_DIR may name one that holds real data.
if [ -n "${VIREO_DEMO_DIR:-}" ] && [ -d "$data" ] && [ -n "$(ls -A "$data")" ] && [ ! -e "$data/.vireo-demo" ]; then
  echo "demo: $data is not a demo data directory (no .vireo-demo in it); set VIREO_DEMO_DIR to another" >&2
  exit 1
fi
if [ -d "$data" ]; then
  pids=$(leftover_qemus)
  if [ -n "$pids" ]; then
    echo "demo: ending $(echo "$pids" | wc -w) QEMU process(es) an earlier run left behind"
    kill $pids 2>/dev/null || true
    for _ in $(seq 1 50); do [ -z "$(leftover_qemus)" ] && break; sleep 0.1; done
    pids=$(leftover_qemus); [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
  fi
  # The guest images take a while to build and do not change between runs: keep them.
  find "$data" -mindepth 1 -maxdepth 1 ! -name images ! -name .vireo-demo -exec rm -rf {} +
fi
mkdir -p "$data" && touch "$data/.vireo-demo"

# vireo up runs in a session of its own, so Ctrl-C reaches this script alone: the script removes the
# demo's VMs through the API first, then stops vireo.
setsid "$bin" up --data-dir "$data" --listen "$listen" &
pid=$!
load_pids=()
cleanup() {
  trap - INT TERM
  [ ${#load_pids[@]} -eq 0 ] || kill "${load_pids[@]}" 2>/dev/null || true
  if [ -z "${DEMO_KEEP:-}" ] && kill -0 $pid 2>/dev/null; then
    echo; echo "demo: deleting the demo VMs and contexts (DEMO_KEEP=1 keeps them)"
    for context in $("$bin" context list -o json 2>/dev/null | jq -r '.items[].name' 2>/dev/null); do
      "$bin" context close "$context" >/dev/null 2>&1 || true
    done
    "$bin" app delete shop --delete-vms >/dev/null 2>&1 || true
    for vm in $("$bin" vm list -o json 2>/dev/null | jq -r '.[].name' 2>/dev/null); do
      "$bin" vm delete "$vm" >/dev/null 2>&1 || true
    done
    for _ in $(seq 1 300); do
      [ "$("$bin" vm list -o json 2>/dev/null | jq length 2>/dev/null)" = "0" ] && break
      sleep 0.1
    done
  fi
  kill $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  if [ -z "${DEMO_KEEP:-}" ]; then
    pids=$(leftover_qemus)
    if [ -n "$pids" ]; then
      echo "demo: ending QEMU process(es) that outlived vireo: $pids"
      kill $pids 2>/dev/null || true
    fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for _ in $(seq 1 100); do
  curl -fsS "$VIREO_SERVER/healthz" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { echo "demo: vireo up exited; is $listen in use?" >&2; exit 1; }
  sleep 0.1
done

say "vireo apply -f examples/demo.yaml --wait    # builds the guest images on first use"
"$bin" apply -f examples/demo.yaml --wait --timeout 600
say "vireo vm create scratch --memory 256MiB --wait"
"$bin" vm create scratch --memory 256MiB --wait --timeout 300
say "vireo host list"; "$bin" host list
say "vireo vm list"; "$bin" vm list
say "vireo vm show web-1"; "$bin" vm show web-1
address() { "$bin" vm show "$1" -o json | jq -r '.address // empty'; }
web1=$(address web-1)
web2=$(address web-2)
say "curl http://$web1/status    # the web service inside the guest"
curl -fsS "http://$web1/status"
say "vireo vm logs web-1 --tail 3"; "$bin" vm logs web-1 --tail 3

# About 20 requests a second to each web VM, for at most two minutes.
for a in $web1 $web2; do
  (for _ in $(seq 1 2400); do curl -fsS -o /dev/null --max-time 5 "http://$a/" || true; sleep 0.05; done) &
  load_pids+=($!)
done
echo
echo "(a load of about 20 requests/s on web-1 and web-2; waiting until every objective of shop has a value)"
for i in $(seq 1 90); do
  missing=$("$bin" app show shop -o json | jq '[.objectives[] | select(.sli == null or .goodWindows + .badWindows == 0)] | length')
  [ "$missing" = "0" ] && break
  [ "$i" -lt 90 ] || { echo "demo: shop's objectives still have no value after 90 s" >&2; exit 1; }
  sleep 1
done
say "vireo app show shop"; "$bin" app show shop
say "vireo plan --explain    # what the slo rebalancer would move now, and why"
"$bin" plan --explain
kill "${load_pids[@]}" 2>/dev/null || true
load_pids=()

# The desktop half: a disposable context, reset to its clean state (its network of its own is a
# network namespace: root only).
if [ "$(id -u)" -eq 0 ]; then
  say "vireo context open browser --disposable --wait    # a VM of its own, on a network of its own"
  "$bin" context open browser --disposable --wait
  say "vireo context reset browser    # back to the state it had once booted: disk, memory, devices"
  "$bin" context reset browser
  "$bin" context reset browser
  say "vireo context list"; "$bin" context list
else
  echo
  echo "(desktop contexts need root for their networks: run as root to see them; docs/contexts.md)"
fi
echo
echo "Vireo is running at $VIREO_SERVER with data in $data; its web console is at $VIREO_SERVER/ (docs/console.md)."
echo "Try: export VIREO_SERVER=$VIREO_SERVER; $bin vm list; $bin events"
echo "Rebalancing on two hosts, real guests (root): sudo $bin demo noisy-neighbour --policy slo"
if [ -n "${DEMO_SECONDS:-}" ]; then
  sleep "$DEMO_SECONDS"
else
  echo "Press Ctrl-C to stop."
  wait $pid
fi
