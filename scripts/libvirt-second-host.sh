#!/usr/bin/env bash
# A second libvirt "host" on this machine, for live migration tests: libvirt refuses to migrate a
# domain to the daemon it comes from (it compares host UUIDs), and a root libvirtd keeps its state
# in fixed places (/run/libvirt, /var/lib/libvirt, /etc/libvirt, ...). So the second libvirtd runs
# in a mount namespace where those directories are private ones under DIR, with its own host UUID,
# its own virtlogd, and its sockets in DIR/sock, reachable from outside the namespace as
#   qemu+unix:///system?socket=DIR/sock/libvirt-sock
#
#   scripts/libvirt-second-host.sh start DIR   # prints that URI once the daemon answers
#   scripts/libvirt-second-host.sh stop DIR    # destroys its domains, ends both daemons, removes DIR
#
# Its migration certificates (migrate_tls_x509_cert_dir) go in DIR/tls.
#
# Needs root and libvirt-daemon-system. The system daemon (qemu:///system) is not touched.
set -euo pipefail

command=${1:-}
dir=${2:-}
if [[ -z "$command" || -z "$dir" ]]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 2
fi
uri="qemu+unix:///system?socket=$dir/sock/libvirt-sock"

start() {
    mkdir -p "$dir"/{sock,run,lib,etc,cache,log}
    cp -a /etc/libvirt/. "$dir/etc/"
    # The system daemon's networks are not this host's business: no autostart here.
    rm -f "$dir"/etc/qemu/networks/autostart/*
    cat >>"$dir/etc/libvirtd.conf" <<EOF
host_uuid = "$(cat /proc/sys/kernel/random/uuid)"
unix_sock_dir = "$dir/sock"
EOF
    # No cgroups: both daemons would name their domains' cgroups machine/qemu-<id>-<name>, and a
    # migrated domain keeps its name while its new id can be the one it had at the source.
    echo 'cgroup_controllers = [ ]' >>"$dir/etc/qemu.conf"
    # Migration certificates: the agent's migration-tls-dir. QEMU runs as libvirt-qemu here, and
    # reads the key through the directory's group.
    mkdir -p "$dir/tls"
    chgrp "$(id -g libvirt-qemu)" "$dir/tls"
    chmod 0750 "$dir/tls"
    echo "migrate_tls_x509_cert_dir = \"$dir/tls\"" >>"$dir/etc/qemu.conf"
    unshare --mount --propagation private bash -euc '
        dir=$1
        mount --bind "$dir/run" /run/libvirt
        mount --bind "$dir/lib" /var/lib/libvirt
        mount --bind "$dir/etc" /etc/libvirt
        mount --bind "$dir/cache" /var/cache/libvirt
        mount --bind "$dir/log" /var/log/libvirt
        mkdir -p /var/lib/libvirt/qemu /var/lib/libvirt/images
        virtlogd --daemon --pid-file "$dir/virtlogd.pid"
        libvirtd --daemon --pid-file "$dir/libvirtd.pid"
    ' _ "$dir"
    for _ in $(seq 1 300); do
        if virsh -c "$uri" version >/dev/null 2>&1; then
            echo "$uri"
            return 0
        fi
        sleep 0.1
    done
    echo "the second libvirtd did not answer on $uri within 30 s; see $dir/log/libvirtd.log" >&2
    stop
    exit 1
}

stop() {
    if [[ -S "$dir/sock/libvirt-sock" ]]; then
        for domain in $(virsh -c "$uri" list --all --name 2>/dev/null); do
            virsh -c "$uri" destroy "$domain" >/dev/null 2>&1 || true
            virsh -c "$uri" undefine "$domain" >/dev/null 2>&1 || true
        done
    fi
    for daemon in libvirtd virtlogd; do
        local pidfile="$dir/$daemon.pid"
        [[ -f "$pidfile" ]] || continue
        local pid
        pid=$(cat "$pidfile")
        if kill -TERM "$pid" 2>/dev/null; then
            for _ in $(seq 1 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$dir"
}

case "$command" in
start) start ;;
stop) stop ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
