#!/usr/bin/env bash
# Get this machine ready for the real image tests (`make image-test-deps`, part of `make test`):
# podman and its helpers, podman settings that work on these machines, and an offline
# Debian base image. Each step is skipped when it is already done, so on a ready machine
# this changes nothing and takes about a second. See images/README.md ("Testing").
#
#   bash images/test-setup.sh [BASE_IMAGE] [LOG_DIR]
set -euo pipefail

base=${1:-localhost/kfnlp-base:bookworm}
logs=${2:-build/image-tests}
mkdir -p "$logs"

fail() {
    echo "image tests: $*" >&2
    exit 1
}

# 1. the tools, from Debian's packages
missing=()
for tool in podman buildah runc debootstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        fail "${missing[*]} missing: install podman buildah runc debootstrap as root, or set KFNLP_IMAGE_TESTS=0"
    fi
    echo "image tests: installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc debootstrap >"$logs/apt.log" 2>&1 ||
        fail "apt-get install failed, see $logs/apt.log"
fi

# 2. podman's defaults ask for more open files and processes than the hard limits here allow
#    ("error setting rlimit type 7", then type 6), and crun fails here ("cgroups in hybrid mode
#    not supported"). Add what the system configuration does not set already, in a drop-in
#    file of our own: an existing setting is never changed. podman lowers its own process
#    limit to kernel.pid_max (seen: hard limit 96365, pid_max and podman 32768), so the
#    containers get at most that.
confs=(/etc/containers/containers.conf /etc/containers/containers.conf.d/*.conf)
settings=""
if ! grep -qs '^[[:space:]]*default_ulimits[[:space:]]*=' "${confs[@]}"; then
    nofile=$(ulimit -Hn)
    nproc=$(ulimit -Hu)
    pid_max=$(cat /proc/sys/kernel/pid_max)
    if [[ $nproc == unlimited ]] || ((nproc > pid_max)); then nproc=$pid_max; fi
    settings+=$'[containers]\n'"default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"$'\n'
fi
if ! grep -qs '^[[:space:]]*runtime[[:space:]]*=' "${confs[@]}"; then
    settings+="[engine]"$'\n''runtime = "runc"'$'\n'
fi
if [[ -n $settings ]]; then
    dropin=/etc/containers/containers.conf.d/50-kfnlp-image-tests.conf
    [[ $(id -u) -eq 0 ]] || fail "podman needs these settings in $dropin (as root):"$'\n'"$settings"
    mkdir -p "$(dirname "$dropin")"
    printf '# Written by kfnlp images/test-setup.sh: podman settings that work on this machine.\n%s' "$settings" >"$dropin"
    echo "image tests: wrote $dropin"
fi

# 3. the base image: registry pulls do not work here, so a Debian rootfs made with debootstrap
#    (python3 3.11, as the wheelhouse), imported once and kept in podman's storage
if ! podman image exists "$base"; then
    mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    echo "image tests: building $base with debootstrap (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >"$logs/debootstrap.log" 2>&1 ||
        fail "debootstrap failed, see $logs/debootstrap.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --quiet - "$base" >/dev/null
fi

# 4. podman really runs a container here
podman run --rm --network=none "$base" true 2>"$logs/podman-run.log" ||
    fail "podman cannot run a container: $(tail -n 1 "$logs/podman-run.log")"
