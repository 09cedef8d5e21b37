# Shared by image/build.sh and image/test.sh (sourced, not run).
# shellcheck shell=bash
# shellcheck disable=SC2034  # the constants are for the scripts that source this file

IMAGE_NAME=otc-device-arm64.img
ROOT_LABEL=RASPIROOT
FIRMWARE_LABEL=RASPIFIRM
ALIGN_MIB=4  # the first partition starts 4 MiB in, as the Pi's image-specs do

die() {
    echo "image: $*" >&2
    exit 1
}

elapsed() {
    printf '%dm%02ds' $(($1 / 60)) $(($1 % 60))
}

step() {
    echo "== [$(elapsed $((SECONDS - ${START:-0})))] $*"
}

# Debian mirror URIs from this machine's apt sources (APT_ETC, default /etc/apt): "main URI" and "security URI"
# lines. Entries signed by another archive's key are someone else's repository.
host_mirrors() {
    local f apt=${APT_ETC:-/etc/apt}
    for f in "$apt"/sources.list.d/*.sources; do
        [ -e "$f" ] && { cat "$f"; echo; }
    done | awk '
        function flush(   n, s, i) {
            if (f["uris"] != "" && f["types"] ~ /(^| )deb( |$)/ &&
                (f["signed-by"] == "" || f["signed-by"] ~ /debian-archive/)) {
                n = split(f["suites"], s, " ")
                for (i = 1; i <= n; i++) {
                    if (s[i] ~ /-security$/) print "security", f["uris"]
                    else if (s[i] !~ /-/) print "main", f["uris"]
                }
            }
            delete f
        }
        /^[[:space:]]*#/ { next }
        /^[[:space:]]*$/ { flush(); next }
        /^[^[:space:]]/ { key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, ""); f[key] = $0 }
        END { flush() }'
    cat "$apt"/sources.list "$apt"/sources.list.d/*.list 2>/dev/null | awk '
        $1 == "deb" {
            i = 2; opts = ""
            if ($2 ~ /^\[/) { while ($i !~ /\]$/) { opts = opts " " $i; i++ } opts = opts " " $i; i++ }
            if (opts ~ /signed-by=/ && opts !~ /debian-archive/) next
            if ($(i + 1) ~ /-security$/) print "security", $i
            else if ($(i + 1) !~ /-/) print "main", $i
        }'
}

# The image's apt sources, one sources.list line each, for mmdebstrap.
image_sources() {
    local main=${IMAGE_MIRROR:-} security=${IMAGE_SECURITY_MIRROR:-} kind uri
    while read -r kind uri; do
        uri=${uri%% *}
        if [ "$kind" = main ] && [ -z "$main" ]; then main=$uri; fi
        if [ "$kind" = security ] && [ -z "$security" ]; then security=$uri; fi
    done < <(host_mirrors)
    [ -n "$main" ] || return 0
    local keyring="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
    echo "deb $keyring $main bookworm main non-free-firmware"
    echo "deb $keyring $main bookworm-updates main non-free-firmware"
    if [ -n "$security" ]; then
        echo "deb $keyring $security bookworm-security main non-free-firmware"
    fi
}
