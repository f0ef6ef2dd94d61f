#!/usr/bin/env bash
# `make demo`: starts `vireo up`, applies a small manifest, shows what came up, and keeps running
# until Ctrl-C. DEMO_SECONDS=N stops it after N seconds instead (for unattended runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(swift build --show-bin-path)/vireo"
data="${VIREO_DEMO_DIR:-$PWD/.demo-data}"
listen="${VIREO_DEMO_LISTEN:-127.0.0.1:7480}"
export VIREO_SERVER="http://$listen"

"$bin" up --data-dir "$data" --listen "$listen" &
pid=$!
cleanup() {
  # The VMs are real QEMU processes that outlive their agent by design; the demo removes its own.
  if [ -z "${DEMO_KEEP:-}" ] && kill -0 $pid 2>/dev/null; then
    echo; echo "demo: deleting the demo VMs (DEMO_KEEP=1 keeps them)"
    "$bin" app delete shop --delete-vms >/dev/null 2>&1 || true
    for vm in web-1 web-2 batch-1 scratch; do "$bin" vm delete "$vm" >/dev/null 2>&1 || true; done
    for _ in $(seq 1 100); do
      [ "$("$bin" vm list -o json 2>/dev/null | tr -d ' \n')" = "[]" ] && break
      sleep 0.1
    done
  fi
  kill $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  curl -fsS "$VIREO_SERVER/healthz" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { echo "demo: vireo up exited; is $listen in use?" >&2; exit 1; }
  sleep 0.1
done

echo; echo "\$ vireo apply -f examples/demo.yaml"
"$bin" apply -f examples/demo.yaml
echo; echo "\$ vireo vm create scratch --memory 256MiB --wait"
"$bin" vm create scratch --memory 256MiB --wait 2>&1 || true
sleep 2
echo; echo "\$ vireo host list"; "$bin" host list
echo; echo "\$ vireo vm list"; "$bin" vm list
echo; echo "\$ vireo vm show web-1"; "$bin" vm show web-1
address=$("$bin" vm show web-1 -o json | sed -n 's/.*"address" *: *"\([^"]*\)".*/\1/p')
if [ -n "$address" ]; then
  echo; echo "\$ curl http://$address/status    # the web service inside the guest"
  curl -fsS "http://$address/status" || true; echo
fi
echo; echo "\$ vireo vm logs web-1 --tail 3"; "$bin" vm logs web-1 --tail 3 || true
if [ -n "$address" ]; then
  echo; echo "(sending 200 requests to web-1 and waiting for two 10 s windows to be judged)"
  for _ in $(seq 1 200); do curl -fsS -o /dev/null "http://$address/" || true; done
  sleep 15
fi
echo; echo "\$ vireo app show shop"; "$bin" app show shop || true
echo; echo "\$ vireo plan --explain    # what the slo rebalancer would move now, and why"
"$bin" plan --explain || true
echo
echo "Vireo is running at $VIREO_SERVER with data in $data."
echo "Try: export VIREO_SERVER=$VIREO_SERVER; $bin vm list; $bin events"
echo "Rebalancing on two hosts, real guests (root): sudo $bin demo noisy-neighbour --policy slo"
if [ -n "${DEMO_SECONDS:-}" ]; then
  sleep "$DEMO_SECONDS"
else
  echo "Press Ctrl-C to stop."
  wait $pid
fi
