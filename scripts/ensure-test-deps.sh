#!/usr/bin/env bash
# System packages that tests need for real servers, installed with apt-get
# when missing (CI and fresh machines run as root with Debian's registry).
set -euo pipefail
need=()
command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)  # the image recipe's shell scripts
if [ ${#need[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "make: installing ${need[*]} with apt-get" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "make: tests need ${need[*]}; install them (apt-get install ${need[*]})" >&2
        exit 1
    fi
fi
