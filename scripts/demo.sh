#!/usr/bin/env bash
# The local demo: two emulated devices, a development pad, messages both ways.
# Every step is a real `otc` command on real device homes in a temporary folder.
set -euo pipefail

work=$(mktemp -d "${TMPDIR:-/tmp}/otc-demo.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
alice="$work/alice" bob="$work/bob"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Two devices are set up"
otc device init --home "$alice" --name alice
otc device init --home "$bob" --name bob

step "They pair in person over loopback and make a 1 MiB pad (alice hosts, so she is the initiator)"
otc pair host --home "$alice" --listen 127.0.0.1:0 --size 1M --confirm auto > "$work/host.out" 2> "$work/host.err" &
host_pid=$!
until grep -q "waiting for the other device on" "$work/host.out" 2>/dev/null; do sleep 0.1; done
port=$(sed -n 's/.*waiting for the other device on 127.0.0.1:\([0-9]*\).*/\1/p' "$work/host.out")
otc pair join --home "$bob" --connect "127.0.0.1:$port" --confirm auto
wait "$host_pid"
grep -v "waiting for" "$work/host.out"

# send FROM_HOME FROM TO_HOME MESSAGE: package on the sender, unpackage on the receiver.
send() {
    local from_home=$1 from=$2 to_home=$3 to=$4 message=$5 package reply
    package=$(printf '%s' "$message" | otc device package --home "$from_home" "$to")
    reply=$(printf '%s\n' "$package" | otc device unpackage --home "$to_home")
    printf '  %-6s -> %-6s %s\n' "$from" "$to" "$message"
    printf '  %15s package: %d bytes on the wire (%d base64 chars)\n' "" \
        "$(printf '%s' "$package" | base64 -d | wc -c)" "${#package}"
    printf '  %15s %s decrypted: %s\n' "" "$to" "$reply"
}

step "A conversation"
send "$alice" alice "$bob" bob "Hi Bob, did the pad arrive?"
send "$bob" bob "$alice" alice "It did. Every byte of it is used once and then destroyed."
send "$alice" alice "$bob" bob "And the relay can't read any of this."
send "$bob" bob "$alice" alice "Nor forge it: Poly1305 keyed with pad bytes. See you tomorrow."

step "A replayed package is refused"
package=$(printf 'pay the bearer' | otc device package --home "$alice" bob)
printf '%s\n' "$package" | otc device unpackage --home "$bob" >/dev/null
if printf '%s\n' "$package" | otc device unpackage --home "$bob"; then
    echo "demo: the replay was accepted, which must never happen" >&2
    exit 1
fi

step "Status on each device"
otc device status --home "$alice"
echo
otc device status --home "$bob"
