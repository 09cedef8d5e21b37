#!/usr/bin/env bash
# `make image-test`: boot the built image under qemu-system-aarch64 (software
# emulation, -M virt with the image's own kernel and initrd), with the guest's
# cable-side port forwarded to this machine; wait for the device RPC's health
# call to answer, and check the device's units are active and that nothing
# listens anywhere but on the cable side.
#
# The boot test provisions a *copy* of the image, never the image itself:
#   - the device home as first boot would leave it (a test name, a random PIN,
#     PIN-locked: the device serves only health until unlocked, as a real one
#     does right after boot);
#   - a report unit that prints the units' states and the listening sockets on
#     the serial console, since the image has no login of any kind.
# Environment: IMAGE_OUT (default build/image), IMAGE_TEST_TIMEOUT (seconds to
# wait for health, default 1800), PY (the venv's python).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

OUT=${IMAGE_OUT:-$REPO/build/image}
PY=${PY:-$REPO/.venv/bin/python}
IMAGE=$OUT/$IMAGE_NAME
WORK=$OUT/test
TIMEOUT=${IMAGE_TEST_TIMEOUT:-1800}
DEVICE_PORT=8470
START=$SECONDS

[ -f "$IMAGE" ] || die "no image at $IMAGE: run \`make image\` first"
bash "$HERE/deps.sh"
rm -rf "$WORK"
mkdir -p "$WORK"

step "a copy of the image, provisioned as after first boot"
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

otc_ids=$(debugfs -R "cat /etc/passwd" "$root" 2>/dev/null | awk -F: '$1 == "otc" { print $3, $4 }')
[ -n "$otc_ids" ] || die "the image has no otc user"
read -r otc_uid otc_gid <<<"$otc_ids"

seed=$WORK/seed
mkdir -p "$seed"
"$PY" -c 'import secrets; print("".join(secrets.choice("0123456789") for _ in range(8)))' > "$WORK/pin"
"$PY" -m onetimechat.cli device init --home "$seed/otc" --name qemu-test --pin-file "$WORK/pin" >/dev/null
{
    echo "mkdir /var/lib/otc"
    (cd "$seed/otc" && find . -mindepth 1 -type d) | while read -r d; do echo "mkdir /var/lib/otc/${d#./}"; done
    (cd "$seed/otc" && find . -type f) | while read -r f; do
        echo "write $seed/otc/${f#./} /var/lib/otc/${f#./}"
        echo "set_inode_field /var/lib/otc/${f#./} mode 0100600"
    done
    (cd "$seed/otc" && find . -mindepth 1) | while read -r p; do
        echo "set_inode_field /var/lib/otc/${p#./} uid $otc_uid"
        echo "set_inode_field /var/lib/otc/${p#./} gid $otc_gid"
    done
    for d in /var/lib/otc $(cd "$seed/otc" && find . -mindepth 1 -type d | sed 's|^\.|/var/lib/otc|'); do
        echo "set_inode_field $d mode 040700"
        echo "set_inode_field $d uid $otc_uid"
        echo "set_inode_field $d gid $otc_gid"
    done
    echo "write $HERE/test/otc-image-test-report /usr/local/sbin/otc-image-test-report"
    echo "set_inode_field /usr/local/sbin/otc-image-test-report mode 0100755"
    echo "write $HERE/test/otc-image-test-report.service /etc/systemd/system/otc-image-test-report.service"
    echo "set_inode_field /etc/systemd/system/otc-image-test-report.service mode 0100644"
    echo "symlink /etc/systemd/system/multi-user.target.wants/otc-image-test-report.service" \
        "/etc/systemd/system/otc-image-test-report.service"
} > "$WORK/debugfs.cmds"
debugfs -w -f "$WORK/debugfs.cmds" "$root" >"$WORK/debugfs.log" 2>&1
if grep -Ei "error|not found|no such|could not" "$WORK/debugfs.log"; then die "writing the test's files into the copy failed"; fi

step "boot under qemu-system-aarch64 (TCG; virtio disk, NIC, RNG and GPU)"
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
serial=$WORK/serial.log
qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 2048 -nodefaults -display none -vnc "unix:$WORK/vnc.sock" \
    -kernel "$WORK/vmlinuz" -initrd "$WORK/initrd.img" \
    -append "root=LABEL=$ROOT_LABEL rw rootwait fsck.repair=yes net.ifnames=0 console=ttyAMA0" \
    -drive "file=$disk,format=raw,if=none,id=disk,cache=unsafe" -device virtio-blk-pci,drive=disk \
    -netdev "user,id=net0,net=10.77.0.0/24,host=10.77.0.2,dhcpstart=10.77.0.100,hostfwd=tcp:127.0.0.1:$port-10.77.0.1:$DEVICE_PORT" \
    -device virtio-net-pci,netdev=net0,romfile= \
    -device virtio-rng-pci -device virtio-gpu-pci,xres=800,yres=480 -device virtio-keyboard-pci -device virtio-tablet-pci \
    -serial "file:$serial" -monitor "unix:$WORK/monitor.sock,server,nowait" &
qemu=$!
trap 'kill "$qemu" 2>/dev/null || true' EXIT
echo "  qemu pid $qemu; serial console in $serial; the device's port $DEVICE_PORT is 127.0.0.1:$port here"

step "waiting for the device's health call (GET /v1/health), at most ${TIMEOUT}s"
health=""
deadline=$((SECONDS + TIMEOUT))
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
[ -n "$health" ] || die "no answer from the device's health call within ${TIMEOUT}s; see $serial"
echo "  health: $health"
case "$health" in *'"status": "ok"'*) ;; *) die "health did not say ok" ;; esac

step "the device's report on the serial console"
while ! grep -aq OTC-REPORT-END "$serial"; do
    [ $SECONDS -lt $deadline ] || die "no report on the serial console; see $serial"
    kill -0 "$qemu" 2>/dev/null || die "qemu exited; see $serial"
    sleep 3
done
report=$(sed -n '/OTC-REPORT-BEGIN/,/OTC-REPORT-END/p' "$serial" | tr -d '\r' | grep -av '^\s*\[.*\(OK\|FAILED\).*\]')
while IFS= read -r line; do echo "  $line"; done <<<"$report"
"$PY" "$HERE/check_report.py" --listen "10.77.0.1:$DEVICE_PORT" <<<"$report"

# What the panel shows, for a person to look at (the report checks that the touchscreen holds the
# display; its pixels are not checked). Known: under QEMU's virtio-gpu without virgl, SDL's kmsdrm
# over Mesa's kms_swrast takes the display (the console's cursor goes) but its frames stay black,
# even a bare full-screen fill; the Pi's own GPU driver is a different path. Frames are taken
# until one is not blank, or for a minute.
"$PY" - "$WORK" <<'PY' || echo "  (no screenshot: $WORK/screen.ppm could not be made)"
import os, socket, sys, time
work = sys.argv[1]
os.environ["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"
import pygame
sock = socket.socket(socket.AF_UNIX)
sock.connect(os.path.join(work, "monitor.sock"))
frame = f"{work}/screen.ppm"
deadline = time.monotonic() + 60
while True:
    if os.path.exists(frame):
        os.unlink(frame)
    sock.sendall(f"screendump {frame}\n".encode())
    for _ in range(50):
        if os.path.exists(frame) and os.path.getsize(frame) > 0:
            break
        time.sleep(0.2)
    time.sleep(1)
    image = pygame.image.load(frame)
    lit = pygame.mask.from_threshold(image, (0, 0, 0), (8, 8, 8, 255)).count() < image.get_width() * image.get_height()
    if lit or time.monotonic() > deadline:
        break
    time.sleep(5)
pygame.image.save(image, f"{work}/screen.png")
size = "x".join(map(str, image.get_size()))
print(f"  the panel ({size}, {'drawn' if lit else 'still blank after a minute'}; not checked): {work}/screen.png")
PY

step "done: the image boots and its device answers"
echo "image-test: passed in $(elapsed $((SECONDS - START)))"
