#!/usr/bin/env bash
# The host tools `make image` and `make image-test` need, installed with apt-get
# when missing (fresh machines and CI run as root on Debian), and qemu-user's
# binfmt_misc handler for arm64, which running the image's own package scripts needs.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have mmdebstrap || need+=(mmdebstrap)
have qemu-aarch64-static || need+=(qemu-user-static)
have update-binfmts || need+=(binfmt-support)
have qemu-system-aarch64 || need+=(qemu-system-arm)
have mkfs.vfat || need+=(dosfstools)
have mcopy || need+=(mtools)
have sfdisk || need+=(fdisk)
have mkfs.ext4 || need+=(e2fsprogs)
have debugfs || need+=(e2fsprogs)
have bmaptool || need+=(bmap-tools)
have arch-test || need+=(arch-test)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)

if [ ${#need[@]} -gt 0 ]; then
    if have apt-get && [ "$(id -u)" = 0 ]; then
        echo "image: installing ${need[*]} with apt-get" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "image: the image recipe needs ${need[*]}; install them (apt-get install ${need[*]})" >&2
        exit 1
    fi
fi

# Only the build runs foreign (arm64) programs; the boot test emulates a whole machine.
if [ "${1:-}" = build ]; then
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || {
            echo "image: binfmt_misc is not mounted and cannot be (mount -t binfmt_misc failed)" >&2
            exit 1
        }
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        update-binfmts --enable qemu-aarch64 || true
    fi
    if ! arch-test arm64 >/dev/null 2>&1; then
        echo "image: this machine cannot run arm64 programs through qemu-user (binfmt_misc)" >&2
        exit 1
    fi
fi
