#!/usr/bin/env bash
# `make image`: a Raspberry Pi 3/4 (arm64) SD-card image of the pad device,
# from Debian bookworm packages only.
#
#   1. mmdebstrap a bookworm arm64 root (qemu-user runs the package scripts),
#      with Debian's arm64 kernel and raspi-firmware (image/packages.txt);
#   2. the project and its Python dependencies: Debian's pygame (its SDL has
#      the kmsdrm driver), aarch64 wheels for the rest, fetched by pip on this
#      machine for the image's platform (no pip runs under emulation);
#   3. image/rootfs/ on top: systemd units, the cable-side network, udev rules;
#   4. a FAT firmware partition and an ext4 root, built as files (no loop
#      device) and put into one MBR image with sfdisk and dd.
#
# Downloaded .debs and wheels are kept in IMAGE_CACHE between builds.
# Environment: IMAGE_OUT (default build/image), IMAGE_CACHE (default
# ~/.cache/onetimechat-image), IMAGE_MIRROR / IMAGE_SECURITY_MIRROR (default:
# the Debian mirror this machine's apt uses), PY (the venv's python).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

OUT=${IMAGE_OUT:-$REPO/build/image}
CACHE=${IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/onetimechat-image}
PY=${PY:-$REPO/.venv/bin/python}
ROOT=$OUT/rootfs
IMAGE=$OUT/$IMAGE_NAME
FIRMWARE_MIB=256
START=$SECONDS

[ "$(id -u)" = 0 ] || die "building the image needs root (mmdebstrap's root mode and file ownership)"
bash "$HERE/deps.sh" build
mkdir -p "$OUT" "$CACHE/apt" "$CACHE/pip"

# -- 1. the Debian root -----------------------------------------------------------------
step "Debian bookworm arm64 root (mmdebstrap; package scripts run under qemu-user)"
mirrors=()
while IFS= read -r line; do mirrors+=("$line"); done < <(image_sources)
[ ${#mirrors[@]} -gt 0 ] || die "no Debian mirror found in this machine's apt sources; set IMAGE_MIRROR"
printf '  %s\n' "${mirrors[@]}"
if mountpoint -q "$ROOT/proc" 2>/dev/null; then die "$ROOT/proc is still mounted from an earlier run"; fi
rm -rf "$ROOT"
packages=$(sed -e 's/#.*//' "$HERE/packages.txt" | tr -s ' \n' ',' | sed -e 's/^,//' -e 's/,$//')
# The hooks run in mmdebstrap's shell, where "$1" is the root: single quotes are meant.
# shellcheck disable=SC2016
mmdebstrap --mode=root --variant=minbase --architectures=arm64 \
    --include="$packages" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --skip=essential/unlink \
    --setup-hook='mkdir -p "$1/boot/firmware" "$1/var/cache/apt/archives"' \
    --setup-hook="sync-in '$CACHE/apt' /var/cache/apt/archives/" \
    --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs' \
    --essential-hook='printf "#!/bin/sh\nexit 0\n" > "$1/usr/sbin/update-initramfs"; chmod 755 "$1/usr/sbin/update-initramfs"' \
    --customize-hook="sync-out /var/cache/apt/archives '$CACHE/apt'" \
    --customize-hook='rm "$1/usr/sbin/update-initramfs"; chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs' \
    --customize-hook="sed -i -e 's|^#ROOTPART=.*|ROOTPART=\"LABEL=$ROOT_LABEL\"|' -e 's|^#CONSOLES=.*|CONSOLES=\"ttyS1,115200 tty0\"|' \"\$1/etc/default/raspi-firmware\"" \
    --customize-hook='echo "quiet loglevel=3 consoleblank=0 vt.global_cursor_default=0" > "$1/etc/default/raspi-extra-cmdline"' \
    --customize-hook='echo "image: making the initramfs (MODULES=most, under qemu-user: several minutes)"; chroot "$1" update-initramfs -c -k all' \
    bookworm "$ROOT" "${mirrors[@]}"
rm -f "$CACHE/apt/lock"; rm -rf "$CACHE/apt/partial"

# -- 2. the project and its Python dependencies ----------------------------------------
step "One Time Chat and its Python dependencies (aarch64 wheels)"
site=$ROOT/usr/local/lib/python3.11/dist-packages
wheels=$OUT/wheels
rm -rf "$wheels" "$OUT/site"
mkdir -p "$wheels" "$OUT/site"
"$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation -w "$wheels" "$REPO"
wheel=$(ls "$wheels"/onetimechat-*.whl)
# The device's runtime requirements (the wheel's [device] and [pi] extras: RPi.GPIO over gpiochip), but not
# pygame: Debian's is the one built with SDL's kmsdrm driver.
"$PY" "$HERE/requirements.py" "$wheel" --extra device --extra pi --without pygame > "$OUT/requirements.txt"
# The versions the test suite ran with, where the venv has them.
"$PY" -m pip freeze --disable-pip-version-check --exclude-editable | grep -E '^[A-Za-z0-9_.-]+==' \
    > "$OUT/constraints.txt" || true
sed 's/^/  /' "$OUT/requirements.txt"
# pip does not widen a manylinux tag given with --platform: name every glibc up to bookworm's 2.36.
platforms=(--platform manylinux2014_aarch64 --platform linux_aarch64)
for v in $(seq 17 36); do platforms+=(--platform "manylinux_2_${v}_aarch64"); done
"$PY" -m pip install --quiet --disable-pip-version-check --no-compile --cache-dir "$CACHE/pip" \
    --target "$OUT/site" --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 \
    "${platforms[@]}" \
    -c "$OUT/constraints.txt" -r "$OUT/requirements.txt"
"$PY" -m pip install --quiet --disable-pip-version-check --no-compile --no-deps --target "$OUT/site" "$wheel"
rm -rf "$OUT/site/bin"  # console scripts with this machine's interpreter; the image has its own
"$PY" -m compileall -q -j 0 -d /usr/local/lib/python3.11/dist-packages "$OUT/site" >/dev/null
mkdir -p "$site"
cp -a "$OUT/site/." "$site/"
chown -R root:root "$site"

# -- 3. the device's own files ----------------------------------------------------------
step "systemd units, network, first boot"
(cd "$HERE/rootfs" && find . -type f) | while read -r f; do
    mode=644
    case "$f" in ./usr/local/bin/* | ./usr/local/sbin/*) mode=755 ;; esac
    install -D -o root -g root -m "$mode" "$HERE/rootfs/$f" "$ROOT/$f"
done
# The screens are tested with pygame's bundled font; Debian's pygame links fonts-freefont's newer
# FreeSansBold, which draws characters (U+FFFD) the screens must show as markers. The device gets
# the font its tests ran with.
font=$("$PY" -c 'import importlib.util as u; print(u.find_spec("pygame").submodule_search_locations[0])')/freesansbold.ttf
[ -f "$font" ] || die "no pygame font at $font"
chroot "$ROOT" dpkg-divert --quiet --local --rename --add /usr/lib/python3/dist-packages/pygame/freesansbold.ttf
install -o root -g root -m 644 "$font" "$ROOT/usr/lib/python3/dist-packages/pygame/freesansbold.ttf"
echo otc-device > "$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\totc-device\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOT/etc/hosts"
cat > "$ROOT/etc/fstab" <<FSTAB
LABEL=$ROOT_LABEL / ext4 rw,noatime,errors=remount-ro 0 1
LABEL=$FIRMWARE_LABEL /boot/firmware vfat rw,noatime,umask=0077,nofail 0 2
FSTAB
systemd-sysusers --root="$ROOT" >/dev/null
systemctl --root="$ROOT" enable --quiet systemd-networkd.service otc-firstboot.service otc-device.service \
    otc-hrng.service otc-growroot.service
# No login anywhere: the screen belongs to the device, and no account has a password.
systemctl --root="$ROOT" mask --quiet getty@.service serial-getty@.service autovt@.service \
    systemd-networkd-wait-online.service
# The boot files: the kernel hook wrote them from /etc/default/raspi-firmware; check.
grep -q "root=LABEL=$ROOT_LABEL" "$ROOT/boot/firmware/cmdline.txt" \
    || die "raspi-firmware did not write the expected cmdline.txt"
ls "$ROOT"/boot/firmware/bcm2711-rpi-4-b.dtb "$ROOT"/boot/firmware/bcm2837-rpi-3-b.dtb >/dev/null
# A clean first boot: systemd makes the machine id, nothing left from the build.
: > "$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb
find "$ROOT/var/log" -type f -delete
python3 - "$ROOT" <<'PYCHECK'
import sys, pathlib
root = pathlib.Path(sys.argv[1])
for mod in ("onetimechat", "device", "RPi", "lgpio", "flask", "waitress", "cryptography", "numpy", "spake2"):
    hits = list((root / "usr/local/lib/python3.11/dist-packages").glob(mod)) + \
        list((root / "usr/local/lib/python3.11/dist-packages").glob(mod + ".py"))
    if not hits:
        sys.exit(f"image: {mod} is missing from the image's Python packages")
PYCHECK

# -- 4. partitions and the image ----------------------------------------------------------
step "partitions: FAT firmware, ext4 root; the image"
parts=$OUT/parts
rm -rf "$parts" "$IMAGE" "$IMAGE.bmap"
mkdir -p "$parts"
mkfs.vfat -F 32 -n "$FIRMWARE_LABEL" -C "$parts/firmware.vfat" $((FIRMWARE_MIB * 1024)) >/dev/null
mcopy -s -i "$parts/firmware.vfat" "$ROOT"/boot/firmware/* ::/
mkdir -p "$OUT/bootfiles"
rm -rf "$OUT/bootfiles"/*
cp -a "$ROOT"/boot/firmware/. "$OUT/bootfiles/"  # kept for the boot test's -kernel/-initrd
find "$ROOT/boot/firmware" -mindepth 1 -delete  # a mount point on the root partition
used_kib=$(du -s -k "$ROOT" | cut -f1)  # blocks in use here, 4 KiB each as on ext4
root_mib=$(( (used_kib * 112 / 100) / 1024 + 200 ))  # inode tables, journal; the rest free until otc-growroot
mkfs.ext4 -q -F -L "$ROOT_LABEL" -i 8192 -m 1 -d "$ROOT" "$parts/root.ext4" "${root_mib}M"
total_mib=$((ALIGN_MIB + FIRMWARE_MIB + root_mib))
[ "$total_mib" -le 2048 ] || die "the image would be ${total_mib} MiB, over 2 GiB"
truncate -s "${total_mib}M" "$IMAGE"
sfdisk --quiet "$IMAGE" <<SFDISK
label: dos
unit: sectors
start=$((ALIGN_MIB * 2048)), size=$((FIRMWARE_MIB * 2048)), type=c, bootable
start=$(((ALIGN_MIB + FIRMWARE_MIB) * 2048)), size=$((root_mib * 2048)), type=83
SFDISK
dd if="$parts/firmware.vfat" of="$IMAGE" bs=1M seek="$ALIGN_MIB" conv=notrunc,sparse status=none
dd if="$parts/root.ext4" of="$IMAGE" bs=1M seek=$((ALIGN_MIB + FIRMWARE_MIB)) conv=notrunc,sparse status=none
rm -rf "$parts"
bmaptool -q create -o "$IMAGE.bmap" "$IMAGE"

[ -n "${IMAGE_KEEP_ROOTFS:-}" ] || rm -rf "$ROOT"  # 1.5 GB, all of it in the image now

step "done"
echo "image: $IMAGE"
echo "  size: $(du -h --apparent-size "$IMAGE" | cut -f1) ($(du -h "$IMAGE" | cut -f1) allocated)," \
    "root partition ${root_mib} MiB, firmware ${FIRMWARE_MIB} MiB; built in $(elapsed $((SECONDS - START)))"
echo "  write it: bmaptool copy $IMAGE /dev/sdX   (or dd, see README.md)"
