#!/usr/bin/env bash
# Create the virtual environment, installing Debian's venv support if this
# Python lacks it (a fresh Debian machine ships python3 without ensurepip).
set -euo pipefail
python=$1 venv=$2
[ -x "$venv/bin/python" ] && exit 0
if ! "$python" -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "make: installing python3-venv with apt-get" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        "$python" -m venv "$venv"
    else
        echo "make: $python cannot create a virtual environment; install python3-venv" >&2
        exit 1
    fi
fi
