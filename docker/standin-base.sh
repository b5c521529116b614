#!/usr/bin/env bash
# A stand-in for the Dockerfile's default base image, for hosts that reach no container registry:
# Debian bookworm (minbase) with Debian's python3 (3.11, the Python requirements.lock was resolved for)
# and its venv module, debootstrapped from this host's Debian mirror and imported as a local image into each
# engine given (one debootstrap, the same rootfs for all).
# Usage: docker/standin-base.sh ENGINE... IMAGE   (ENGINE: docker or podman, or the path of one; needs root and
# debootstrap). Then: ENGINE build --build-arg BASE_IMAGE=IMAGE ...
set -euo pipefail

(($# >= 2)) || { echo "usage: standin-base.sh ENGINE... IMAGE" >&2; exit 2; }
engines=("${@:1:$#-1}") image="${!#}"
[[ "$(id -u)" == 0 ]] || { echo "standin-base.sh: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "standin-base.sh: apt-get install debootstrap" >&2; exit 1; }

# The first Debian mirror this host's apt uses (deb822 sources or the one-line format), else Debian's CDN.
mirror="$(sed -n -E 's/^URIs: *([^ ]+).*/\1/p; s/^deb +(\[[^]]*\] +)?([^ ]+) +bookworm .*/\2/p' \
    /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list 2>/dev/null || true)"
mirror="${mirror%%$'\n'*}"  # the first one
mirror="${mirror:-http://deb.debian.org/debian}"

root="$(mktemp -d "${TMPDIR:-/tmp}/fewlabels-base.XXXXXX")"
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm from $mirror into $root"
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -n 20 "$root.log" >&2; echo "standin-base.sh: debootstrap failed (log: $root.log)" >&2; exit 1; }
rm -f "$root.log"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb

for engine in "${engines[@]}"; do
    tar --numeric-owner -C "$root" -c . | "$engine" import --change 'CMD ["/bin/bash"]' - "$image"
done
