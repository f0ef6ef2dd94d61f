#!/bin/sh
echo "vireo: power button, shutting down" >/dev/ttyS0
killall vireo-web 2>/dev/null
sync
umount /data 2>/dev/null
sync
poweroff -f
