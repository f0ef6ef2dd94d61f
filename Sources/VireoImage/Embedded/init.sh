#!/bin/sh
# Vireo guest init. PID 1 must never exit: a kernel panic follows.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /run /tmp /data
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run

# Drivers the kernel has as modules, in dependency order (no modprobe/depmod in the image).
for m in @MODULES@; do
    insmod /lib/modules/$m.ko || echo "vireo-init: insmod $m failed" >/dev/ttyS0
done

NAME=vireo; ADDR=; GW=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vireo.name=*) NAME="${arg#vireo.name=}" ;;
        vireo.ip=*) ADDR="${arg#vireo.ip=}" ;;
        vireo.gw=*) GW="${arg#vireo.gw=}" ;;
    esac
done
hostname "$NAME"
echo "$NAME" >/run/vireo-name

ip link set lo up
if ip link show eth0 >/dev/null 2>&1; then
    ip link set eth0 up
    [ -n "$ADDR" ] && ip addr add "$ADDR" dev eth0
    [ -n "$GW" ] && ip route add default via "$GW"
fi

# The VM's persistent disk (a qcow2 overlay on the image's empty ext4 base disk).
if [ -b /dev/vda ]; then
    mount -t ext4 /dev/vda /data || echo "vireo-init: cannot mount /dev/vda" >/dev/ttyS0
fi

# ACPI power button (QMP system_powerdown) -> /etc/acpi/PWRF/00000080. Wait until acpid
# has the input devices open: a button press before that is lost, and a driver may press
# it right after the ready marker.
acpid -f -c /etc/acpi -l /run/acpid.log &
i=0
until ls -l /proc/$!/fd 2>/dev/null | grep -q /dev/input/event || [ $i -ge 200 ]; do
    usleep 10000; i=$((i + 1))
done

@SERVICE@

# Leading newline: the firmware leaves the serial line mid-line ("Booting from ROM..").
printf '\nVIREO-READY name=%s ip=%s\n' "$NAME" "${ADDR:-none}" >/dev/ttyS0

# Stay alive; a shell on the console would compete with the driver for the serial line.
while true; do sleep 3600; done
