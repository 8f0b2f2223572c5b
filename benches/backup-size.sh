#!/usr/bin/env bash
# Backup size and incremental time (issue 5 "Measure"): for a corpus of guest
# roots, compare a plain tar of all guests with tar of the store + manifests +
# private files, then add a fifth guest and time the incremental backup.
#
#   benches/backup-size.sh CORPUS_DIR [WORK_DIR]
#
# CORPUS_DIR holds guest roots (e.g. the four from benches/corpus-debian.sh);
# the fifth guest is a copy of the first one with a small application added.
# WORK_DIR (default /var/tmp/unifs-backup-bench) must be on one filesystem and
# is removed at the end; it must not exist yet, be empty, or be one this
# script made (it is emptied first).
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ] || [ ! -d "$1" ]; then
    echo "usage: $0 CORPUS_DIR [WORK_DIR]" >&2
    exit 2
fi
corpus=$(realpath "$1")
work=$(realpath -m "${2:-/var/tmp/unifs-backup-bench}")
unifs=${UNIFS:-$(dirname "$0")/../target/release/unifs}
unifs=$(realpath -m "$unifs")
[ -x "$unifs" ] || { echo "unifs binary not found: $unifs (cargo build --release, or set UNIFS)" >&2; exit 1; }
# The work dir is removed whole: never one that holds anything else.
marker=.unifs-backup-bench
if [ -e "$work" ] && [ ! -e "$work/$marker" ] && [ -n "$(ls -A -- "$work")" ]; then
    echo "$0: $work is not empty and not a work dir of this script; refusing (name a new one)" >&2
    exit 1
fi
rm -rf "$work"; mkdir -p "$work/guests" "$work/backup" "$work/incr"; : >"$work/$marker"
trap 'rm -rf "$work"' EXIT
export UNIFS_STORE=$work/store
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
size() { stat -c %s "$1"; }
now() { date +%s.%N; }

mapfile -t roots < <(find "$corpus" -mindepth 1 -maxdepth 1 -type d -not -name '.*' | sort)
for r in "${roots[@]}"; do cp -a "$r" "$work/guests/"; done
sync
names=(); for r in "${roots[@]}"; do names+=("$(basename "$r")"); done
echo "corpus: ${names[*]}"

tar --xattrs --xattrs-include='*' -C "$work/guests" -cf "$work/plain.tar" .
plain=$(size "$work/plain.tar"); rm "$work/plain.tar"

"$unifs" unify --no-progress "$work"/guests/* >/dev/null
B=$work/backup
"$unifs" store snapshot "$B/catalog.db" >/dev/null
tar --xattrs --xattrs-include='*' -C "$UNIFS_STORE" -cf "$B/objects.tar" objects
for n in "${names[@]}"; do
  "$unifs" manifest "$n" -o "$B/$n.jsonl"
  "$unifs" manifest "$n" --format private-paths -0 |
    tar --xattrs --xattrs-include='*' --null -C "$work/guests/$n" -T - -cf "$B/$n.private.tar"
done
last=$("$unifs" store runs --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["run"])')
objects=$(size "$B/objects.tar")
manifests=$(cat "$B"/*.jsonl | wc -c)
private=$(cat "$B"/*.private.tar | wc -c)
catalog=$(size "$B/catalog.db")
total=$((objects + manifests + private + catalog))

# A fifth guest: a copy of the first, with an application of its own.
fifth=$work/guests/guest5
cp -a "${roots[0]}" "$fifth"
mkdir -p "$fifth/opt/app"
head -c 20000000 /dev/urandom > "$fifth/opt/app/app.bin"
sync
t0=$(now)
"$unifs" unify --no-progress "$fifth" >/dev/null
t1=$(now)
I=$work/incr
"$unifs" store snapshot "$I/catalog.db" >/dev/null
"$unifs" store ls --since "$last" -0 |
  tar --xattrs --xattrs-include='*' --null -C "$UNIFS_STORE" -T - -cf "$I/objects-new.tar"
"$unifs" manifest guest5 -o "$I/guest5.jsonl"
"$unifs" manifest guest5 --format private-paths -0 |
  tar --xattrs --xattrs-include='*' --null -C "$fifth" -T - -cf "$I/guest5.private.tar"
t2=$(now)
incr=$(du -cb "$I"/* | tail -1 | cut -f1)

printf '\n| what | MiB |\n|---|---|\n'
printf '| tar of all %d guests | %s |\n' "${#names[@]}" "$(mib "$plain")"
printf '| store objects (tar) | %s |\n' "$(mib "$objects")"
printf '| manifests | %s |\n' "$(mib "$manifests")"
printf '| private files (tar) | %s |\n' "$(mib "$private")"
printf '| catalog snapshot | %s |\n' "$(mib "$catalog")"
printf '| **unifs backup total** | **%s** (%.2fx the plain tar) |\n' "$(mib "$total")" "$(echo "$total/$plain" | bc -l)"
printf '\nfifth guest: unify %.2f s; incremental backup (new objects + manifest + private files + catalog) %.2f s, %s MiB\n' \
  "$(echo "$t1-$t0" | bc -l)" "$(echo "$t2-$t1" | bc -l)" "$(mib "$incr")"
