#!/usr/bin/env bash
# `make image-test`: boot the built image under qemu-system-aarch64 (software
# emulation, -M virt with the image's own kernel and initrd), with the guest's
# cable-side port forwarded to this machine; wait for the device RPC's health
# call to answer, and check the device's units are active and that nothing
# listens anywhere but on the cable side.
#
# The copy boots as a new device does, with no home: image/e2e.py is its
# owner and its laptop, through QEMU's monitor (QMP): it reads the panel with
# screendump (the device draws on /dev/fb0, virtio-gpu's fbdev emulation) and
# taps with input-send-event (virtio-tablet, read by the device from evdev):
# name and PIN on the first-start screens, unlock, pair this machine as the
# laptop with the code read off the screen, make a pad with a device emulated
# here, send a message and tap Accept (the other device reads it), send
# another and tap Decline (refused). Each screen is compared region by region
# with the same screen drawn here by the device's code; the screendumps and
# their scores are kept in build/image/test/ (scores.json).
# The copy gets two things the image lacks: a report unit that prints the
# units' states and the listening sockets on the serial console, since the
# image has no login of any kind; and a narrow local port range, so that the
# port a ceremony listens on is one QEMU forwards.
# Environment: IMAGE_OUT (default build/image), IMAGE_TEST_TIMEOUT (seconds
# for the end-to-end run, default 600), PY (the venv's python).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

OUT=${IMAGE_OUT:-$REPO/build/image}
PY=${PY:-$REPO/.venv/bin/python}
IMAGE=$OUT/$IMAGE_NAME
WORK=$OUT/test
TIMEOUT=${IMAGE_TEST_TIMEOUT:-600}
DEVICE_PORT=8470
START=$SECONDS

[ -f "$IMAGE" ] || die "no image at $IMAGE: run \`make image\` first"
bash "$HERE/deps.sh"
rm -rf "$WORK"
mkdir -p "$WORK"

step "a copy of the image, with the test's report unit"
disk=$WORK/disk.img
cp --sparse=always "$IMAGE" "$disk"
truncate -s +512M "$disk"  # room for otc-growroot to grow the root into, as on a bigger SD card
# Partition starts and sizes in sectors, from the image's own partition table.
starts=$(sfdisk --dump "$disk" | sed -n 's/.*start= *\([0-9]*\),.*/\1/p' | tr '\n' ' ')
read -r fat_start root_start <<<"$starts"
[ -n "${root_start:-}" ] || die "the image has no second partition"
fat="$disk@@$((fat_start * 512))"
root="$disk?offset=$((root_start * 512))"

kernel=$(mdir -b -i "$fat" ::/ | sed -n 's|^::/\(vmlinuz-.*\)|\1|p' | tail -n 1)
initrd=$(mdir -b -i "$fat" ::/ | sed -n 's|^::/\(initrd.img-.*\)|\1|p' | tail -n 1)
if [ -z "$kernel" ] || [ -z "$initrd" ]; then die "no kernel or initrd on the firmware partition"; fi
mcopy -n -i "$fat" "::/$kernel" "$WORK/vmlinuz"
mcopy -n -i "$fat" "::/$initrd" "$WORK/initrd.img"
echo "  kernel $kernel, initrd $initrd (from the image's firmware partition)"

# A ceremony carried by the laptop has the device listen on a port of its own (any free one) that the laptop
# connects to over the cable. QEMU's user network forwards only the ports it is told: the copy's kernel picks
# such ports from 8 that are free here, each forwarded to the same port on this machine.
ceremony_base=$("$PY" - <<'PY'
import socket
for base in range(20100, 30000, 8):
    held = []
    try:
        for p in range(base, base + 8):
            s = socket.socket()
            held.append(s)
            s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        for s in held:
            s.close()
    print(base)
    break
PY
)
[ -n "$ceremony_base" ] || die "no 8 free ports here for the ceremonies' forwarding"
echo "net.ipv4.ip_local_port_range = $ceremony_base $((ceremony_base + 7))" > "$WORK/90-otc-image-test.conf"
forwards=""
for p in $(seq "$ceremony_base" $((ceremony_base + 7))); do forwards="$forwards,hostfwd=tcp:127.0.0.1:$p-10.77.0.1:$p"; done

{
    echo "write $WORK/90-otc-image-test.conf /etc/sysctl.d/90-otc-image-test.conf"
    echo "set_inode_field /etc/sysctl.d/90-otc-image-test.conf mode 0100644"
    echo "write $HERE/test/otc-image-test-report /usr/local/sbin/otc-image-test-report"
    echo "set_inode_field /usr/local/sbin/otc-image-test-report mode 0100755"
    echo "write $HERE/test/otc-image-test-report.service /etc/systemd/system/otc-image-test-report.service"
    echo "set_inode_field /etc/systemd/system/otc-image-test-report.service mode 0100644"
    echo "symlink /etc/systemd/system/multi-user.target.wants/otc-image-test-report.service" \
        "/etc/systemd/system/otc-image-test-report.service"
} > "$WORK/debugfs.cmds"
debugfs -w -f "$WORK/debugfs.cmds" "$root" >"$WORK/debugfs.log" 2>&1
if grep -Ei "error|not found|no such|could not" "$WORK/debugfs.log"; then die "writing the test's files into the copy failed"; fi

step "boot under qemu-system-aarch64 (TCG; virtio disk, NIC, RNG, GPU and tablet)"
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
serial=$WORK/serial.log
qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 2048 -nodefaults -display none -vnc "unix:$WORK/vnc.sock" \
    -kernel "$WORK/vmlinuz" -initrd "$WORK/initrd.img" \
    -append "root=LABEL=$ROOT_LABEL rw rootwait fsck.repair=yes net.ifnames=0 console=ttyAMA0 consoleblank=0 vt.global_cursor_default=0" \
    -drive "file=$disk,format=raw,if=none,id=disk,cache=unsafe" -device virtio-blk-pci,drive=disk \
    -netdev "user,id=net0,net=10.77.0.0/24,host=10.77.0.2,dhcpstart=10.77.0.100,hostfwd=tcp:127.0.0.1:$port-10.77.0.1:$DEVICE_PORT$forwards" \
    -device virtio-net-pci,netdev=net0,romfile= \
    -device virtio-rng-pci -device virtio-gpu-pci,xres=800,yres=480 -device virtio-keyboard-pci -device virtio-tablet-pci \
    -serial "file:$serial" -qmp "unix:$WORK/qmp.sock,server,nowait" &
qemu=$!
trap 'kill "$qemu" 2>/dev/null || true' EXIT
echo "  qemu pid $qemu; serial console in $serial; the device's port $DEVICE_PORT is 127.0.0.1:$port here"

step "the owner at the panel and the laptop on the cable (image/e2e.py; at most ${TIMEOUT}s)"
for _ in $(seq 1 50); do [ -S "$WORK/qmp.sock" ] && break; sleep 0.2; done
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PY" "$HERE/e2e.py" --qmp "$WORK/qmp.sock" --port "$port" \
    --work "$WORK" --timeout "$TIMEOUT" || die "the end-to-end run failed; screendumps in $WORK, console in $serial"

step "the device's health call (GET /v1/health)"
health=""
deadline=$((SECONDS + 300))
last=$SECONDS
while [ $SECONDS -lt $deadline ]; do
    kill -0 "$qemu" 2>/dev/null || die "qemu exited; see $serial"
    health=$("$PY" - "$port" <<'PY' 2>/dev/null || true
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v1/health", timeout=5) as r:
    print(json.dumps(json.load(r)))
PY
)
    [ -n "$health" ] && break
    if [ $((SECONDS - last)) -ge 30 ]; then
        last=$SECONDS
        echo "  [$(elapsed $((SECONDS - START)))] no answer yet; console: $(grep -a -v '^\s*$' "$serial" | tail -n 1 | cut -c1-100)"
    fi
    sleep 3
done
[ -n "$health" ] || die "no answer from the device's health call; see $serial"
echo "  health: $health"
case "$health" in *'"status": "ok"'*) ;; *) die "health did not say ok" ;; esac

step "the device's report on the serial console"
while ! grep -aq OTC-REPORT-END "$serial"; do
    [ $SECONDS -lt $deadline ] || die "no report on the serial console; see $serial"
    kill -0 "$qemu" 2>/dev/null || die "qemu exited; see $serial"
    sleep 3
done
report=$(sed -n '/OTC-REPORT-BEGIN/,/OTC-REPORT-END/{p;/OTC-REPORT-END/q}' "$serial" | tr -d '\r' | grep -av '^\s*\[.*\(OK\|FAILED\).*\]')
while IFS= read -r line; do echo "  $line"; done <<<"$report"
"$PY" "$HERE/check_report.py" --listen "10.77.0.1:$DEVICE_PORT" <<<"$report"

step "done: the image boots, its panel shows the screens and takes taps, and its device answers"
echo "image-test: passed in $(elapsed $((SECONDS - START)))"
