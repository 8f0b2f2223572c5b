#!/usr/bin/env bash
# Builds the real benchmark corpus for `unifs unify` (issue 2, "Speed"):
# four Debian bookworm roots made with `debootstrap --variant=minbase`, each
# with a different --include package set. About 0.93 GiB and ~29,300 files.
#
# Usage: benches/corpus-debian.sh DIR
#   Creates DIR/<name>/ for each root. Re-runnable: roots already built are
#   skipped (a root is built in DIR/.<name>.partial and renamed when complete).
#   Needs root. Installs debootstrap with apt-get if missing.
# Environment:
#   MIRROR  Debian mirror (default: the first deb.debian.org-style URI of the
#           apt sources, else http://deb.debian.org/debian)
#   SUITE   default bookworm
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "$0: debootstrap needs root" >&2
    exit 1
fi

DIR=$1
SUITE=${SUITE:-bookworm}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

if [[ -z ${MIRROR:-} ]]; then
    # deb822 sources ("URIs: ...") or one-line sources ("deb URL suite ...").
    MIRROR=$(
        {
            grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
            grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'
        } | grep -E '/debian/?$' | head -n1 || true
    )
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

if ! command -v debootstrap >/dev/null; then
    echo "== installing debootstrap"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
fi

# name:include-list (comma separated, may be empty)
ROOTS=(
    "base:"
    "python:python3"
    "perl-ssh-git:perl,openssh-server,git"
    "web-java:apache2,curl,default-jre-headless"
)

# umount_below DIR: unmounts whatever is mounted at or below DIR, deepest
# first: debootstrap mounts /proc and /sys (and may bind /dev) in the root it
# builds, and one that was killed leaves them there. rm -rf of the root would
# then go into them.
umount_below() {
    findmnt -rn -o TARGET | awk -v d="$1" '$0 == d || index($0, d "/") == 1' |
        sort -r | while read -r m; do umount -l "$m" || true; done
}
PARTIAL=
trap '[[ -z $PARTIAL ]] || umount_below "$PARTIAL"' EXIT

# Downloaded .debs are shared between the roots (outside the roots, so they
# are not part of the corpus).
CACHE="$DIR/.debs"
mkdir -p "$CACHE"

for entry in "${ROOTS[@]}"; do
    name=${entry%%:*}
    include=${entry#*:}
    if [[ -d "$DIR/$name" ]]; then
        echo "== $name: already built, skipping"
        continue
    fi
    partial="$DIR/.$name.partial"
    PARTIAL=$partial
    umount_below "$partial"
    rm -rf --one-file-system "$partial"
    args=(--variant=minbase --cache-dir="$CACHE")
    [[ -n $include ]] && args+=(--include="$include")
    echo "== $name: debootstrap ${args[*]} $SUITE $MIRROR"
    start=$SECONDS
    debootstrap "${args[@]}" "$SUITE" "$partial" "$MIRROR" >"$DIR/.$name.log" 2>&1 || {
        echo "debootstrap failed for $name; last lines of $DIR/.$name.log:" >&2
        tail -n 20 "$DIR/.$name.log" >&2
        exit 1
    }
    # Leave nothing mounted inside the root, and no download leftovers.
    umount_below "$partial"
    rm -rf "$partial"/var/cache/apt/archives/*.deb "$partial"/var/lib/apt/lists/*_Packages
    mv "$partial" "$DIR/$name"
    PARTIAL=
    rm -f "$DIR/.$name.log"
    echo "== $name: done in $((SECONDS - start)) s"
done

echo "== corpus in $DIR"
paths=()
for entry in "${ROOTS[@]}"; do
    name=${entry%%:*}
    paths+=("$DIR/$name")
    printf '%-14s %8s files %10s\n' "$name" \
        "$(find "$DIR/$name" -xdev -type f | wc -l)" \
        "$(du -s --apparent-size --block-size=1M "$DIR/$name" | cut -f1) MiB"
done
printf '%-14s %8s files %10s\n' total \
    "$(find "${paths[@]}" -xdev -type f | wc -l)" \
    "$(du -sc --apparent-size --block-size=1M "${paths[@]}" | tail -n1 | cut -f1) MiB"
