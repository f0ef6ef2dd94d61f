rm -f /run/vireo-web.ready
vireo-web "$NAME" 80 >/run/vireo-web.log 2>&1 &
i=0
while [ ! -e /run/vireo-web.ready ] && [ $i -lt 500 ]; do usleep 10000; i=$((i + 1)); done
[ -e /run/vireo-web.ready ] || echo "vireo-init: vireo-web did not start" >/dev/ttyS0
