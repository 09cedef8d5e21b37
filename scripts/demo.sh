#!/usr/bin/env bash
# The local demo: a relay, two emulated devices (auto confirm) and two laptops' clients,
# all real `otc` processes on loopback in a temporary folder, stopped at the end.
set -euo pipefail

work=$(mktemp -d "${TMPDIR:-/tmp}/otc-demo.XXXXXX")
cleanup() {
    local pids
    mapfile -t pids < <(jobs -p)
    if [ ${#pids[@]} -gt 0 ]; then
        kill "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
alice="$work/alice" bob="$work/bob"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# wait_url FILE PATTERN: the URL a background server printed after PATTERN.
wait_url() {
    local file=$1 pattern=$2 _
    for _ in $(seq 1 300); do
        if grep -q "$pattern" "$file" 2>/dev/null; then
            sed -n "s|.*$pattern \(http://[0-9.:]*\).*|\1|p" "$file" | head -n 1
            return 0
        fi
        sleep 0.1
    done
    echo "demo: a server did not start; its output:" >&2
    cat "$file" >&2
    return 1
}

step "A relay (it only ever sees packaged ciphertext)"
otc relay serve --listen 127.0.0.1:0 --db "sqlite:///$work/relay.db" > "$work/relay.out" 2>&1 &
relay=$(wait_url "$work/relay.out" "listening on")
echo "relay at $relay"

step "Two devices are set up"
otc device init --home "$alice" --name alice --no-pin  # a demo: unlocked homes, on purpose
otc device init --home "$bob" --name bob --no-pin

step "They pair in person over loopback and make a 1 MiB pad (alice hosts, so she is the initiator)"
otc pair host --home "$alice" --listen 127.0.0.1:0 --size 1M --confirm auto > "$work/host.out" 2> "$work/host.err" &
host_pid=$!
until grep -q "waiting for the other device on" "$work/host.out" 2>/dev/null; do sleep 0.1; done
port=$(sed -n 's/.*waiting for the other device on 127.0.0.1:\([0-9]*\).*/\1/p' "$work/host.out")
otc pair join --home "$bob" --connect "127.0.0.1:$port" --confirm auto
wait "$host_pid"
grep -v "waiting for" "$work/host.out"

step "Each device serves its RPC (auto confirm: for this demo only) and each laptop pairs with its device"
otc device serve --home "$alice" --listen 127.0.0.1:0 --confirm auto > "$work/alice.out" 2>&1 &
alice_url=$(wait_url "$work/alice.out" "serving on")
otc device serve --home "$bob" --listen 127.0.0.1:0 --confirm auto > "$work/bob.out" 2>&1 &
bob_url=$(wait_url "$work/bob.out" "serving on")
OTC_CLIENT_HOME="$work/alice-laptop" otc client pair --device "$alice_url" --name alice-laptop \
    --code "$(cat "$alice/pairing-code")"
OTC_CLIENT_HOME="$work/bob-laptop" otc client pair --device "$bob_url" --name bob-laptop \
    --code "$(cat "$bob/pairing-code")"

# say WHO TO MESSAGE: `otc send` from WHO's laptop; hear WHO: `otc recv` on WHO's laptop.
say() {
    local who=$1 to=$2 message=$3 url
    url=$([ "$who" = alice ] && echo "$alice_url" || echo "$bob_url")
    OTC_CLIENT_HOME="$work/$who-laptop" otc send --device "$url" --relay "$relay" "$to" "$message" >/dev/null
    printf '  %-5s > %-5s %s\n' "$who" "$to" "$message"
}
hear() {
    local who=$1 url
    url=$([ "$who" = alice ] && echo "$alice_url" || echo "$bob_url")
    OTC_CLIENT_HOME="$work/$who-laptop" otc recv --device "$url" --relay "$relay" --wait 10 |
        sed "s/^/  $who's laptop shows  /"
}

# relay_copy: the newest package the relay holds (base64), as anyone on the relay sees it.
relay_copy() {
    python3 - "$work/relay.db" <<'EOF'
import sqlite3, sys
row = sqlite3.connect(sys.argv[1]).execute("SELECT mailbox, contents FROM messages ORDER BY rowid DESC LIMIT 1").fetchone()
print(*(v.decode() if isinstance(v, bytes) else v for v in row))
EOF
}

step "A conversation through the relay (otc send / otc recv)"
say alice bob "Hi Bob, did the pad arrive?"
read -r mailbox package <<< "$(relay_copy)"
printf '  %15s the relay holds %d bytes of base64 for mailbox %s…: %s…\n' "" "${#package}" "${mailbox:0:8}" \
    "${package:0:40}"
hear bob
say bob alice "It did. Every byte of it is used once and then destroyed."
say bob alice "And the relay only ever sees ciphertext."
hear alice
say alice bob "Nor can it forge anything: Poly1305 keyed with pad bytes. See you tomorrow."
hear bob
step "Delivery receipts come back from the devices"
hear alice

step "A hostile relay replays alice's first package: bob's device refuses it, nothing is shown twice"
python3 - "$relay" "$mailbox" "$package" <<'EOF'
import sys, requests
requests.post(sys.argv[1] + "/v1/send", json={"mailbox": sys.argv[2], "contents": sys.argv[3]}, timeout=10)
EOF
hear bob

step "Status on each device"
otc device status --home "$alice"
echo
otc device status --home "$bob"
