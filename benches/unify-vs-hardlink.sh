#!/usr/bin/env bash
# Times `unifs unify` side by side with util-linux `hardlink -X` on fresh
# copies of the same guest trees (issue 2, "Speed").
#
# Usage: benches/unify-vs-hardlink.sh CORPUS_DIR
#   CORPUS_DIR holds one directory per guest (names starting with "." are
#   ignored), e.g. the output of corpus-debian.sh or corpus-generated.sh. It
#   is never modified: every run works on its own `cp -a` copy, made in a
#   work directory next to CORPUS_DIR (same filesystem for copies and store)
#   and removed at the end.
#
# Runs (each on a fresh copy; "warm" = copy synced and read once, "cold" =
# `sync; echo 3 > /proc/sys/vm/drop_caches` just before):
#   hardlink -X                                   warm, cold
#   unifs unify --no-default-excludes --json      warm, cold, then re-runs on
#                                                 the unchanged guests (warm, cold)
#   unifs unify --json (default excludes)         warm
#   memory growth: unifs on generated corpora at SCALE 1 and 2
#
# Environment:
#   UNIFS        unifs binary (default: target/release/unifs, built if missing
#                or older than the sources)
#   BENCH_WORK   where to make the work directory (default: CORPUS_DIR/..)
#   RUN_TIMEOUT  seconds before a single run is killed (default 300)
#   GROWTH       0 to skip the memory-growth runs (default 1)
#   GROWTH_SCALES  the two SCALEs of the generated corpus for the memory-growth
#                runs (default "1 2")
#   COLD         0 to skip the cold-cache runs (default 1)
#   REPS         warm runs of each tool, alternating (default 2)
#   COLD_REPS    cold runs of each tool (default 1)
#   LOOPFS       e.g. 20G: run in a fresh ext4 filesystem (journal, default
#                mount options) made in an image file of that size in the work
#                directory and loop-mounted, instead of in BENCH_WORK's own
#                filesystem (useful when that one is mounted with `discard` or
#                has no journal, which makes every freed block cost a
#                synchronous discard). Needs root and a loop device.
#   LOOP_DIRECT_IO  1 (default) to set up that loop device with direct I/O
#                (`losetup --direct-io=on`): its writes then go straight to the
#                image file instead of through a second page cache, whose
#                writeback would otherwise run on the same CPUs as the tools
#                being timed. 0 for a plain `mount -o loop`.
#   RESULTS      also write the summary (markdown) to this file
set -euo pipefail

if [[ $# -ne 1 || ! -d $1 ]]; then
    echo "usage: $0 CORPUS_DIR" >&2
    exit 2
fi
CORPUS=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
GROWTH=${GROWTH:-1}
COLD=${COLD:-1}
REPS=${REPS:-2}
COLD_REPS=${COLD_REPS:-1}
GROWTH_SCALES=${GROWTH_SCALES:-1 2}

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools -----------------------------------------------------------------
if [[ ! -x /usr/bin/time ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        log "installing package time (for /usr/bin/time)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null
    else
        die "/usr/bin/time is missing (Debian: apt-get install time)"
    fi
fi
command -v hardlink >/dev/null || die "hardlink (util-linux) is missing"
if [[ -z ${UNIFS:-} ]]; then
    UNIFS=$REPO/target/release/unifs
    log "building unifs (cargo build --release)"
    (cd "$REPO" && cargo build --release --quiet --bin unifs) || die "cargo build failed"
fi
[[ -x $UNIFS ]] || die "unifs binary not found: $UNIFS"

mapfile -t NAMES < <(find "$CORPUS" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%f\n' | sort)
((${#NAMES[@]} > 0)) || die "no guest directories in $CORPUS"

WORK=$(mktemp -d "${BENCH_WORK:-$(dirname "$CORPUS")}/.unify-bench.XXXXXX")
OUTER=$WORK
# Copies are removed only at the end: on a filesystem mounted with discard,
# deleting a tree keeps the disk busy for a while and would slow the next run.
cleanup() {
    log "removing $OUTER"
    if [[ $WORK != "$OUTER" ]] && mountpoint -q "$WORK"; then
        # A tool stopped by a signal may take a moment to exit.
        for _ in 1 2 3 4 5 6 7 8 9 10; do umount "$WORK" 2>/dev/null && break; sleep 0.5; done
        if mountpoint -q "$WORK"; then umount "$WORK" || umount -l "$WORK" || true; fi
    fi
    if [[ -n ${LOOP_DEV:-} ]]; then
        losetup -d "$LOOP_DEV" 2>/dev/null || true
    fi
    rm -rf -- "$OUTER"
}
trap cleanup EXIT
if [[ -n ${LOOPFS:-} ]]; then
    truncate -s "$LOOPFS" "$OUTER/fs.img"
    mkfs.ext4 -q -F "$OUTER/fs.img"
    mkdir "$OUTER/mnt"
    if [[ ${LOOP_DIRECT_IO:-1} == 1 ]]; then
        LOOP_DEV=$(losetup --direct-io=on -f --show "$OUTER/fs.img") \
            || die "cannot set up a loop device (LOOPFS)"
        mount "$LOOP_DEV" "$OUTER/mnt" || die "cannot mount $LOOP_DEV (LOOPFS)"
    else
        mount -o loop "$OUTER/fs.img" "$OUTER/mnt" || die "cannot loop-mount an ext4 image (LOOPFS)"
    fi
    WORK=$OUTER/mnt
fi

# A Ctrl-C or TERM must stop the timed command at once, and before the work
# directory is removed under it. So it runs under `timeout --foreground`
# (plain `timeout` moves it to a process group of its own, which neither the
# terminal's Ctrl-C nor a TERM to the script's group reaches), in the
# background and waited for: /usr/bin/time ignores SIGINT, and bash runs a
# trap only once a foreground command is done (up to RUN_TIMEOUT).
CHILD=
stop_child() {
    [[ -n $CHILD ]] || return 0
    log "stopping the run in progress"
    pkill -TERM -P "$CHILD" 2>/dev/null || true # timeout hands it on
    wait "$CHILD" 2>/dev/null || true
    CHILD=
}
trap 'stop_child; exit 130' INT
trap 'stop_child; exit 143' TERM

# --- helpers ---------------------------------------------------------------

# can_drop: 0 if the page cache can be dropped here.
CAN_DROP=0
if [[ $COLD == 1 ]]; then
    if sync && { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
        CAN_DROP=1
    else
        log "NOTE: cannot drop caches (echo 3 > /proc/sys/vm/drop_caches not permitted): cold runs skipped"
    fi
fi
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# fresh_copy NAME: copies every guest of CORPUS to WORK/NAME/ in one cp
# (hardlinks inside the corpus stay hardlinks), then syncs.
fresh_copy() {
    local dst=$WORK/$1
    mkdir -p "$dst"
    cp -a "${NAMES[@]/#/$CORPUS/}" "$dst/"
    sync
}
guests_of() { local n; for n in "${NAMES[@]}"; do printf '%s\n' "$WORK/$1/$n"; done; }

# warm DIR: reads every file once so data and metadata are in the cache.
warm() { find "$1" -xdev -type f -print0 | xargs -0 -r cat >/dev/null; }

# du_bytes PATH...: apparent bytes, each inode counted once.
# (A path a failed run did not make, e.g. its store, counts as 0.)
du_bytes() { { du -scb -- "$@" 2>/dev/null || true; } | tail -n1 | cut -f1; }
inodes() { find "$@" -xdev -type f -printf '%i\n' | sort -u | wc -l; }

# run LABEL CMD...: runs CMD under timeout and /usr/bin/time; sets RC, WALL
# (seconds), CPU (user+sys seconds) and RSS_KB (peak). stdout/stderr go to
# WORK/LABEL.out / .err.
run() {
    local label=$1
    shift
    local t0 t1 tl
    RC=0
    t0=$(date +%s%N)
    /usr/bin/time -f '%M %U %S' -o "$WORK/$label.time" \
        timeout --foreground "$RUN_TIMEOUT" "$@" >"$WORK/$label.out" 2>"$WORK/$label.err" &
    CHILD=$!
    wait "$CHILD" || RC=$?
    CHILD=
    t1=$(date +%s%N)
    WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    tl=$(tail -n1 "$WORK/$label.time" 2>/dev/null || true)
    read -r RSS_KB CPU <<<"$(awk '{ printf "%d %.2f", $1, $2 + $3 }' <<<"${tl:-0 0 0}")"
    if ((RC != 0)); then
        if ((RC == 124)); then
            log "$label: TIMEOUT after $RUN_TIMEOUT s"
        else
            log "$label: exit code $RC; stderr tail:"
            tail -n 5 "$WORK/$label.err" >&2 || true
        fi
    fi
}

# json_num FILE KEY: a number from unifs --json output (any formatting).
json_num() {
    grep -o "\"$2\"[[:space:]]*:[[:space:]]*[0-9.eE+-]*" "$1" 2>/dev/null | head -n1 | sed 's/.*:[[:space:]]*//' || true
}

# hardlink_saved FILE: bytes from hardlink's "Saved: 749.04 MiB" line.
hardlink_saved() {
    awk '/^Saved:/ {
        v = $2; u = $3
        m = (u == "KiB") ? 1024 : (u == "MiB") ? 1048576 : (u == "GiB") ? 1073741824 : (u == "TiB") ? 1099511627776 : 1
        printf "%.0f", v * m
    }' "$1"
}

mib() { awk -v b="${1:-}" 'BEGIN { if (b == "") print "-"; else printf "%.1f", b / 1048576 }'; }
ratio() { awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.3f", a / b }'; }
verdict() { # verdict VALUE OP TARGET
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
        if (v == "-" || v == "") { print "n/a"; exit }
        ok = (op == "<=") ? (v + 0 <= t + 0) : (v + 0 >= t + 0)
        print ok ? "met" : "**missed**"
    }'
}

# Results, per run label; GROUP[g] lists the labels of one kind of run.
declare -A R_WALL R_CPU R_RSS R_SAVED R_DU R_INODES R_NOTE R_HASHED R_SCANNED R_STORE_META GROUP R_GFILES

# record GROUP LABEL SAVED_BYTES DU_SAVED INODES
# (The R_* arrays are read through the nameref in values(), which shellcheck
# cannot follow.)
# shellcheck disable=SC2034
record() {
    local grp=$1 l=$2
    GROUP[$grp]="${GROUP[$grp]:-} $l"
    R_WALL[$l]=$WALL
    R_CPU[$l]=$CPU
    R_RSS[$l]=$RSS_KB
    R_SAVED[$l]=$3
    R_DU[$l]=$4
    R_INODES[$l]=$5
    if ((RC == 124)); then R_NOTE[$l]="timeout"; elif ((RC != 0)); then R_NOTE[$l]="exit $RC"; else R_NOTE[$l]=""; fi
    log "$(printf '%-28s %8.3f s  cpu %6.2f s  rss %6.1f MiB  saved %s MiB (du: %s MiB) %s' \
        "$l" "$WALL" "$CPU" "$(mib $((RSS_KB * 1024)))" "$(mib "$3")" "$(mib "$4")" "${R_NOTE[$l]}")"
}

# Aggregates over the runs of a group: min, median, max of a field.
values() {
    local -n arr=$1
    local l
    for l in ${GROUP[$2]:-}; do printf '%s\n' "${arr[$l]:-}"; done | grep -v '^$' || true
}
g_min() { values "$1" "$2" | sort -g | head -n1; }
g_max() { values "$1" "$2" | sort -g | tail -n1; }
g_med() { values "$1" "$2" | sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%.3f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
g_last() { values "$1" "$2" | tail -n1; }
g_notes() { values R_NOTE "$1" | sort -u | paste -sd, -; }

# cpu_busy SECONDS: percentage of all cores busy (anyone's) over SECONDS.
cpu_busy() {
    local a b
    a=$(head -n1 /proc/stat)
    sleep "$1"
    b=$(head -n1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {
        n = split(a, x); split(b, y); tot = 0
        for (i = 2; i <= n; i++) tot += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.0f", tot ? 100 * (tot - idle) / tot : 0
    }'
}

# --- the corpus ------------------------------------------------------------
CORPUS_PATHS=("${NAMES[@]/#/$CORPUS/}")
BEFORE=$(du_bytes "${CORPUS_PATHS[@]}")
FILES=$(find "${CORPUS_PATHS[@]}" -xdev -type f | wc -l)
INODES_BEFORE=$(inodes "${CORPUS_PATHS[@]}")
log "corpus $CORPUS: ${#NAMES[@]} guests (${NAMES[*]}), $FILES files, $(mib "$BEFORE") MiB"
log "unifs: $UNIFS; $(hardlink --version)"
log "work dir: $WORK; warm runs: $REPS each, cold runs: $COLD_REPS each"
BUSY_BEFORE=$(cpu_busy 3)
log "CPU busy before start (other load on this machine): $BUSY_BEFORE%"

# hardlink_case GROUP LABEL COLD
hardlink_case() {
    local grp=$1 label=$2 cold=$3
    fresh_copy "$label"
    mapfile -t g < <(guests_of "$label")
    if [[ $cold == 1 ]]; then drop_caches; else warm "$WORK/$label"; fi
    run "$label" hardlink -X "${g[@]}"
    record "$grp" "$label" "$(hardlink_saved "$WORK/$label.out")" \
        $((BEFORE - $(du_bytes "${g[@]}"))) "$(inodes "${g[@]}")"
}

# unifs_case GROUP LABEL COLD RERUN [unify options...]
#   RERUN=1 also times re-runs on the unchanged guests (warm, then cold).
unifs_case() {
    local grp=$1 label=$2 cold=$3 rerun=$4
    shift 4
    local store=$WORK/$label/.store r
    fresh_copy "$label"
    mapfile -t g < <(guests_of "$label")
    if [[ $cold == 1 ]]; then drop_caches; else warm "$WORK/$label"; fi
    run "$label" "$UNIFS" --store "$store" unify --json "$@" "${g[@]}"
    record "$grp" "$label" "$(json_num "$WORK/$label.out" bytes_saved)" \
        $((BEFORE - $(du_bytes "${g[@]}" "$store"))) "$(inodes "${g[@]}")"
    R_HASHED[$label]=$(json_num "$WORK/$label.out" bytes_hashed)
    R_SCANNED[$label]=$(json_num "$WORK/$label.out" files_scanned)
    R_STORE_META[$label]=$(($(du_bytes "$store" 2>/dev/null) - $(du_bytes "$store/objects" 2>/dev/null)))
    if [[ $rerun == 1 ]]; then
        for r in rerun rerun-cold; do
            if [[ $r == rerun-cold ]]; then
                [[ $CAN_DROP == 1 ]] || continue
                drop_caches
            else
                # A re-run comes later, when the first run's changes are on
                # disk; not while the kernel still writes them back.
                sync
            fi
            run "$label-$r" "$UNIFS" --store "$store" unify --json "$@" "${g[@]}"
            record "$grp-$r" "$label-$r" "$(json_num "$WORK/$label-$r.out" bytes_saved)" "" ""
            R_HASHED[$label-$r]=$(json_num "$WORK/$label-$r.out" bytes_hashed)
        done
    fi
}

# Warm runs alternate between the two tools, so both see the same background
# load; the tables use the fastest run (and show the median).
for i in $(seq 1 "$REPS"); do
    hardlink_case hardlink-warm "hardlink-warm-$i" 0
    unifs_case unifs-warm "unifs-warm-$i" 0 1 --no-default-excludes
done
unifs_case unifs-defexcl-warm unifs-defexcl-warm 0 0
if [[ $CAN_DROP == 1 ]]; then
    for i in $(seq 1 "$COLD_REPS"); do
        hardlink_case hardlink-cold "hardlink-cold-$i" 1
        unifs_case unifs-cold "unifs-cold-$i" 1 0 --no-default-excludes
    done
fi

# --- memory growth -----------------------------------------------------------
read -r -a SCALES <<<"$GROWTH_SCALES"
if [[ $GROWTH == 1 ]]; then
    ((${#SCALES[@]} == 2)) || die "GROWTH_SCALES needs two values"
    for k in 0 1; do
        s=${SCALES[$k]}
        label=growth-$k
        log "generating corpus SCALE=$s"
        "$REPO/benches/corpus-generated.sh" "$WORK/gen-$k" "$s" >"$WORK/gen-$k.log"
        mapfile -t g < <(find "$WORK/gen-$k" -mindepth 1 -maxdepth 1 -type d ! -name '.*' | sort)
        R_GFILES[$k]=$(find "${g[@]}" -xdev -type f | wc -l)
        sync
        warm "$WORK/gen-$k"
        run "$label" "$UNIFS" --store "$WORK/gen-$k/.store" unify --json --no-default-excludes "${g[@]}"
        record "$label" "$label" "$(json_num "$WORK/$label.out" bytes_saved)" "" ""
    done
fi
BUSY_AFTER=$(cpu_busy 3)

# --- summary -----------------------------------------------------------------
rss_mib() { local k; k=$(g_max R_RSS "$1"); [[ -n $k ]] && mib $((k * 1024)) || echo -; }
row() { # row GROUP TOOL CACHE
    local grp=$1 n
    [[ -n ${GROUP[$grp]:-} ]] || return 0
    n=$(values R_WALL "$grp" | wc -l)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" "$3" "$n" \
        "$(g_min R_WALL "$grp")" "$(g_med R_WALL "$grp")" "$(g_med R_CPU "$grp")" \
        "$(mib "$(g_last R_SAVED "$grp")")" "$(mib "$(g_last R_DU "$grp")")" \
        "$(rss_mib "$grp")" "$(g_notes "$grp")"
}

# fs_desc: the work filesystem: type, mount options, journal or not.
fs_desc() {
    local src j=""
    src=$(findmnt -no SOURCE -T "$WORK")
    if [[ $(findmnt -no FSTYPE -T "$WORK") == ext4 ]]; then
        if compgen -G "/proc/fs/jbd2/$(basename "$src")-*" >/dev/null; then j=", journal"; else j=", no journal"; fi
    fi
    printf '%s on %s (%s%s)%s' "$(findmnt -no FSTYPE -T "$WORK")" "$src" \
        "$(findmnt -no OPTIONS -T "$WORK")" "$j" "${LOOPFS:+, loop-mounted image of $LOOPFS (LOOPFS$([[ ${LOOP_DIRECT_IO:-1} == 1 ]] && echo ", direct I/O"))}"
}

# pair_ratios: unifs-warm-i / hardlink-warm-i for each warm pair (run back
# to back, so under the same background load): "median (min-max)".
pair_ratios() {
    local i
    for i in $(seq 1 "$REPS"); do
        echo "$(ratio "${R_WALL[unifs-warm-$i]:-}" "${R_WALL[hardlink-warm-$i]:-}")"
    done | grep -E '^[0-9.]+$' | sort -g |
        awk '{ v[NR] = $1 } END { if (!NR) { print "-"; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.3f (%.3f-%.3f)\n", m, v[1], v[NR] }'
}

summary() {
    echo
    echo "### Unify benchmark: $(basename "$CORPUS")"
    echo
    echo "Corpus: \`$CORPUS\`, ${#NAMES[@]} guests (${NAMES[*]}), $FILES regular files," \
        "$INODES_BEFORE inodes, $(mib "$BEFORE") MiB."
    echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM," \
        "$(fs_desc), kernel $(uname -r)." \
        "CPU busy with other work just before/after the runs: $BUSY_BEFORE% / $BUSY_AFTER%."
    echo "unifs $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?'), $(hardlink --version)."
    echo
    echo "| run | cache | runs | wall s (min) | wall s (median) | CPU s (median) | saved MiB (tool says) | saved MiB (du) | peak RSS MiB (max) | note |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    row hardlink-warm "hardlink -X" warm
    row unifs-warm "unifs --no-default-excludes" warm
    row unifs-warm-rerun "unifs re-run (unchanged guests)" warm
    row unifs-warm-rerun-cold "unifs re-run (unchanged guests)" cold
    row unifs-defexcl-warm "unifs (default excludes)" warm
    row hardlink-cold "hardlink -X" cold
    row unifs-cold "unifs --no-default-excludes" cold
    row growth-0 "unifs, generated SCALE=${SCALES[0]:-} (${R_GFILES[0]:-?} files)" warm
    row growth-1 "unifs, generated SCALE=${SCALES[1]:-} (${R_GFILES[1]:-?} files)" warm
    if [[ $COLD == 1 && $CAN_DROP == 0 ]]; then
        echo "| cold runs | | | | | | | | | not run: drop_caches not permitted |"
    fi
    echo
    local l1=unifs-warm-1
    echo "unifs first run: files_scanned ${R_SCANNED[$l1]:--}, bytes_hashed $(mib "${R_HASHED[$l1]:-}") MiB," \
        "inodes after $(g_last R_INODES unifs-warm) (hardlink: $(g_last R_INODES hardlink-warm); before: $INODES_BEFORE);" \
        "re-run bytes_hashed: ${R_HASHED[$l1-rerun]:--} (warm), ${R_HASHED[$l1-rerun-cold]:--} (cold)." \
        "Store size besides objects (catalog etc.): $(mib "${R_STORE_META[$l1]:-}") MiB, counted in \"saved (du)\"."
    echo
    local r1 r1m r1p r1c r2 r2c r3 r3d rss
    r1=$(ratio "$(g_min R_WALL unifs-warm)" "$(g_min R_WALL hardlink-warm)")
    r1m=$(ratio "$(g_med R_WALL unifs-warm)" "$(g_med R_WALL hardlink-warm)")
    r1p=$(pair_ratios)
    r1c=$(ratio "$(g_min R_WALL unifs-cold)" "$(g_min R_WALL hardlink-cold)")
    r2=$(ratio "$(g_min R_WALL unifs-warm-rerun)" "$(g_min R_WALL unifs-warm)")
    r2c=$(ratio "$(g_min R_WALL unifs-warm-rerun-cold)" "$(g_min R_WALL unifs-cold)")
    r3=$(ratio "$(g_last R_SAVED unifs-warm)" "$(g_last R_SAVED hardlink-warm)")
    r3d=$(ratio "$(g_last R_DU unifs-warm)" "$(g_last R_DU hardlink-warm)")
    rss=$(rss_mib unifs-warm)
    echo "| ratio | value | target | |"
    echo "|---|---:|---:|---|"
    echo "| unifs first run / hardlink -X, warm (min wall) | $r1 | <= 0.5 | $(verdict "$r1" '<=' 0.5) |"
    echo "| unifs first run / hardlink -X, warm (median wall) | $r1m | <= 0.5 | $(verdict "$r1m" '<=' 0.5) |"
    echo "| unifs first run / hardlink -X, warm (median of the $REPS back-to-back pairs, range) | $r1p | <= 0.5 | $(verdict "${r1p%% *}" '<=' 0.5) |"
    echo "| unifs first run / hardlink -X, cold (min wall) | $r1c | <= 0.5 | $(verdict "$r1c" '<=' 0.5) |"
    echo "| unifs re-run / first run, warm | $r2 | <= 0.05 | $(verdict "$r2" '<=' 0.05) |"
    echo "| unifs re-run after drop_caches / cold first run | $r2c | <= 0.05 | $(verdict "$r2c" '<=' 0.05) |"
    echo "| bytes saved unifs / hardlink (as each tool reports) | $r3 | >= 1.0 | $(verdict "$r3" '>=' 1.0) |"
    echo "| bytes saved unifs / hardlink (du, store included) | $r3d | >= 1.0 | $(verdict "$r3d" '>=' 1.0) |"
    echo "| unifs peak RSS, MiB (first run, warm) | $rss | <= 64 | $(verdict "$rss" '<=' 64) |"
    if [[ -n ${GROUP[growth-0]:-} && -n ${GROUP[growth-1]:-} ]]; then
        local fr rr
        fr=$(ratio "${R_GFILES[1]}" "${R_GFILES[0]}")
        rr=$(ratio "${R_RSS[growth-1]}" "${R_RSS[growth-0]}")
        echo "| unifs peak RSS ratio, generated corpus at ${SCALES[1]}x / ${SCALES[0]}x scale | $rr | <= $fr (linear) | $(verdict "$rr" '<=' "$fr") |"
    fi
}

if [[ -n ${RESULTS:-} ]]; then
    summary | tee "$RESULTS"
else
    summary
fi
