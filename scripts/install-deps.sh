#!/usr/bin/env bash
# Installs what building and testing Vireo needs on Debian 12. Idempotent: installs only what is
# missing, and touches nothing when everything is there.
set -euo pipefail

packages=(
  libsqlite3-dev   # GRDB links the system SQLite
  sqlite3          # inspecting the store by hand
  curl             # the demo's readiness check and its load
  jq               # the demo reads the CLI's -o json
  wrk              # HTTP benchmarks (Benchmarks/, docs/benchmarks.md)
  qemu-system-x86  # the QEMU driver runs real VMs
  qemu-utils       # qemu-img: qcow2 bases and per-VM overlays; qemu-nbd: disks of cold moves
  busybox-static   # the guest images' userland (vireo image build)
  linux-image-cloud-amd64  # the guest kernel and its virtio modules (vireo image build)
  cpio             # packs the guest initramfs
  lz4              # extracts an uncompressed vmlinux for PVH boot
  iproute2         # network namespaces, bridges, taps (vireo testbed)
  iptables         # iptables/ebtables (nf_tables): guests kept off the hosts' services (docs/security.md)
  e2fsprogs        # mkfs.ext4 for guest base disks
  zlib1g-dev       # compress-nio links zlib (gzip for the initramfs and traces)
  gcc              # compiles the web image's guest service (static)
  libc6-dev        # the static C library for it
  libvirt-dev      # the libvirt driver links libvirt's C API (pkg-config libvirt)
  libvirt-daemon-system  # libvirtd and virtlogd for the libvirt driver on qemu:///system
  libvirt-clients  # virsh, to inspect by hand what the libvirt driver defined
  prometheus       # promtool, and a server the tests start as an SLO source (telemetry.source)
  nginx            # the nginx pack's software (tests run it on loopback)
  prometheus-nginx-exporter  # the nginx pack's exporter
  redis-server     # the Redis pack's software, and redis-benchmark (redis-tools) for its load
  prometheus-redis-exporter  # the Redis pack's exporter
  postgresql-15    # the PostgreSQL pack's software, and pgbench for its load
  prometheus-postgres-exporter  # the PostgreSQL pack's exporter
  haproxy          # the HAProxy pack's software (its Prometheus endpoint is built in)
  libjs-chart.js   # Chart.js, which the web console loads from /usr/share/javascript
  chromium         # headless, the browser the web console is tested and timed in
  novnc            # noVNC, with which the web console shows contexts' displays
  systemd          # systemd-analyze checks the units in deploy/systemd
)

# Daemons the tests start on loopback ports of their own: Debian starts each as a service when it
# installs it, which nothing here needs.
services=(
  prometheus nginx redis-server prometheus-nginx-exporter prometheus-redis-exporter postgresql prometheus-postgres-exporter
  haproxy
)

if ! command -v swift >/dev/null 2>&1; then
  if [ -x /opt/swift/usr/bin/swift ]; then
    echo "install-deps: swift is in /opt/swift/usr/bin but not on PATH; add it: export PATH=/opt/swift/usr/bin:\$PATH" >&2
  else
    echo "install-deps: a Swift 6.1 or newer toolchain is required (swift.org); it is not installed" >&2
  fi
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -d /run/systemd/system ]; then
    for service in "${services[@]}"; do
      # Only those just installed: a service the machine ran before is left as it was.
      if printf '%s\n' "${missing[@]}" | grep -qx "$service" \
        || { [ "$service" = postgresql ] && printf '%s\n' "${missing[@]}" | grep -qx postgresql-15; }; then
        $sudo systemctl disable --now "$service" >/dev/null 2>&1 || true
      fi
    done
  fi
fi
