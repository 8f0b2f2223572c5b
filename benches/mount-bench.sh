#!/usr/bin/env bash
# Benchmarks of `unifs mount` next to the native backing filesystem and
# fuse-overlayfs (if installed), in one run, on the same files.
#
#   sudo benches/mount-bench.sh [WORKDIR]
#
# WORKDIR (new or empty) is kept afterwards; without it a temp dir in /var/tmp is used and
# removed. Env: UNIFS (binary, default target/release/unifs), SIZE_MB (sequential read
# file, 1024), FILES (find+stat tree, 50000), BREAK_MB (first write to a
# shared file, 100), MEM_FILES (daemon memory guest, 30000), REPS (runs of
# the cold read, the walk and the break, 5), LOOP_EXT4 (1: the break also on a journaled
# ext4 on a loop device with direct I/O, 2 GiB image in WORKDIR; default 0),
# COLD_WALK (0: skip the walks with dentries and inodes dropped, which drop
# them for the whole machine; default 1).
# Cold reads drop only the files' own page cache (dd iflag=nocache), never the
# whole machine's. The reads (cold and warm), the walk and the break run REPS times, interleaved with
# what they are compared to (each walk on a fresh mount, between two native
# walks of the same, warm tree; each break of a fresh shared file after a cp
# and a cp+fsync of it); the table gives medians and ranges. Prints a
# markdown table.
set -euo pipefail

UNIFS=$(realpath -m "${UNIFS:-$(dirname "$0")/../target/release/unifs}")
[ -x "$UNIFS" ] || { echo "unifs binary not found: $UNIFS (cargo build --release, or set UNIFS)" >&2; exit 1; }
SIZE_MB=${SIZE_MB:-1024}
FILES=${FILES:-50000}
BREAK_MB=${BREAK_MB:-100}
MEM_FILES=${MEM_FILES:-30000}
REPS=${REPS:-5}
LOOP_EXT4=${LOOP_EXT4:-0}
COLD_WALK=${COLD_WALK:-1}
# A work dir of our own (no WORKDIR given) is removed at the end; a given one
# is kept for a look.
OWN_W=0
if [ $# -eq 0 ]; then OWN_W=1; fi
W=$(realpath -m "${1:-$(mktemp -d /var/tmp/unifs-bench.XXXXXX)}")
# A kept WORKDIR of an earlier run holds its shared files: writing them anew
# would write into its store's objects, and linking them fails half-way.
if [ "$OWN_W" = 0 ] && [ -e "$W" ] && [ -n "$(ls -A -- "$W")" ]; then
    echo "$0: $W is not empty (an earlier run's?); name a new or empty WORKDIR" >&2
    exit 1
fi
mkdir -p "$W"/{store/objects,store/tmp,g,bg,m,m2,fm,ovl/upper,ovl/work,ovl/merged,mem,memm}
DAEMONS=()

XFS_MOUNTED=0
LOOP_DEV=
cleanup() {
    for mp in "$W/m" "$W/m2" "$W/fm" "$W/ovl/merged" "$W/memm" "$W/xfs/fs/m" "$W/ext4/fs/m"; do
        umount -l "$mp" 2>/dev/null || true
    done
    for p in "${DAEMONS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$XFS_MOUNTED" = 1 ]; then umount -l "$W/xfs/fs" 2>/dev/null || true; fi
    if [ -n "$LOOP_DEV" ]; then
        umount -l "$W/ext4/fs" 2>/dev/null || true
        losetup -d "$LOOP_DEV" 2>/dev/null || true
    fi
    rm -f "$W/xfs/img" "$W/ext4/img"
    if [ "$OWN_W" = 1 ] && ! grep -q " $W/" /proc/self/mountinfo; then rm -rf -- "$W"; fi
}
trap cleanup EXIT

now() { echo "$EPOCHREALTIME"; }
since() { awk -v s="$1" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.3f", e - s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
drop() { dd if="$1" iflag=nocache count=0 status=none; }
mounted() { grep -q " $1 " /proc/self/mountinfo; }
wait_mounted() {
    for _ in $(seq 200); do mounted "$1" && return 0; sleep 0.05; done
    echo "mount at $1 did not come up" >&2; exit 1
}

# Marks $1 as a store object and links it into the store, as unify does.
share() {
    local hex; hex=$(printf '%064x' "$2")
    setfattr -n trusted.unifs.object -v "$hex" "$1"
    mkdir -p "$W/store/objects/${hex:0:2}"
    ln "$1" "$W/store/objects/${hex:0:2}/${hex:2}"
}

mount_unifs() { # guest mountpoint [store] -> daemon pid in $PID
    "$UNIFS" --store "${3:-$W/store}" mount -f "$1" "$2" 2>>"$W/daemon.log" &
    PID=$!
    DAEMONS+=("$PID")
    wait_mounted "$2"
}

unmount_unifs() { # mountpoint; waits for its daemon ($PID)
    umount "$1"
    wait "$PID" 2>/dev/null || true
}

# median and range of the numbers on stdin, "median (min–max)", with $1
# decimals (default 3)
stats() { sort -g | awk -v d="${1:-3}" '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; f = "%." d "f"; printf f " (" f "–" f ")", m, v[1], v[NR] }'; }

# REPS breaks of fresh shared BREAK_MB files in guest dir $1 (store $2, mount
# point $3), each after a cp and a cp+fsync of the same file (page cache warm
# for all three, writeback settled in between). Appends "cp cpfsync break"
# lines to $4.
break_reps() {
    local g=$1 store=$2 mp=$3 out=$4 r hex s t_cp t_cpf t_br
    dd if=/dev/urandom of="$g/../break-src" bs=1M count="$BREAK_MB" status=none
    for ((r = 0; r < REPS; r++)); do
        cp "$g/../break-src" "$g/shared$r"
        hex=$(printf '%064x' $((1000 + r)))
        setfattr -n trusted.unifs.object -v "$hex" "$g/shared$r"
        mkdir -p "$store/objects/${hex:0:2}"
        ln "$g/shared$r" "$store/objects/${hex:0:2}/${hex:2}"
        cat "$g/shared$r" >/dev/null
        sync
        mount_unifs "$g" "$mp" "$store"
        s=$(now); cp "$g/shared$r" "$g/../cp-copy"; t_cp=$(since "$s"); sync
        s=$(now); dd if="$g/shared$r" of="$g/../cp-sync" bs=1M conv=fsync status=none; t_cpf=$(since "$s"); sync
        s=$(now); printf x | dd of="$mp/shared$r" conv=notrunc status=none; t_br=$(since "$s"); sync
        check_break "$mp/shared$r" "$g/shared$r" "$store/objects/${hex:0:2}/${hex:2}" "$g/../break-src"
        unmount_unifs "$mp"
        rm -f "$g/shared$r" "$store/objects/${hex:0:2}/${hex:2}" "$g/../cp-copy" "$g/../cp-sync"
        echo "$t_cp $t_cpf $t_br" >>"$out"
    done
    rm -f "$g/../break-src"
}

# check_break MOUNTED GUEST OBJECT ORIGINAL: the write went to a private copy
# (a break), not into the object the guests share, and the copy holds the
# rest of the data. Else the figure would time a plain write.
check_break() {
    if [ "$(stat -c %i "$2")" = "$(stat -c %i "$3")" ] || ! cmp -s "$3" "$4"; then
        echo "break: the write through $1 did not go to a private copy: the shared object $3 changed" >&2
        exit 1
    fi
    [ "$(head -c 1 "$2")" = x ] && cmp -s <(tail -c +2 "$2") <(tail -c +2 "$4") ||
        { echo "break: the private copy $2 holds other data" >&2; exit 1; }
}

mount_ovl() {
    fuse-overlayfs -o "lowerdir=$W/g,upperdir=$W/ovl/upper,workdir=$W/ovl/work" "$W/ovl/merged"
    wait_mounted "$W/ovl/merged"
}

echo "setting up in $W ..." >&2
dd if=/dev/urandom of="$W/g/big" bs=1M count="$SIZE_MB" status=none
dd if=/dev/urandom of="$W/g/shared" bs=1M count="$BREAK_MB" status=none
share "$W/g/shared" 1
mkdir -p "$W/g/tree"
for ((d = 0; d < (FILES + 499) / 500; d++)); do
    mkdir "$W/g/tree/d$d"
    (cd "$W/g/tree/d$d" && seq -f "f%g" 0 $((FILES / ((FILES + 499) / 500) - 1)) | xargs touch)
done
for ((d = 0; d < (MEM_FILES + 499) / 500; d++)); do
    mkdir "$W/mem/d$d"
    (cd "$W/mem/d$d" && seq -f "f%g" 0 499 | xargs touch)
done
sync

read_time() { # file, cold|warm
    if [ "$2" = cold ]; then drop "$1"; else cat "$1" >/dev/null; fi
    local s; s=$(now)
    dd if="$1" of=/dev/null bs=1M status=none
    since "$s"
}
find_time() {
    local s; s=$(now)
    find "$1" -printf '%s %i\n' >/dev/null
    since "$s"
}

mount_unifs "$W/g" "$W/m"
HAVE_OVL=0
if command -v fuse-overlayfs >/dev/null; then
    mount_ovl && HAVE_OVL=1
else
    echo "fuse-overlayfs not found (Debian: apt-get install fuse-overlayfs): its column stays empty" >&2
fi

declare -A T
# One read first: a VM's disk may be cached by its host, which would favour
# whichever cold read came second. Then REPS pairs, which of the two goes
# first alternating: a host's cache makes single cold reads vary by 3x.
read_time "$W/g/big" cold >/dev/null
: >"$W/reads.txt"
for ((r = 0; r < REPS; r++)); do
    # (the mount's file is dropped through its backing file: with
    # passthrough the pages are the backing file's)
    if ((r % 2)); then
        drop "$W/g/big"; u=$(read_time "$W/m/big" cold); n=$(read_time "$W/g/big" cold)
    else
        n=$(read_time "$W/g/big" cold); drop "$W/g/big"; u=$(read_time "$W/m/big" cold)
    fi
    echo "$n $u" >>"$W/reads.txt"
done
T[read_cold_native]=$(awk '{ print $1 }' "$W/reads.txt" | stats)
T[read_cold_unifs]=$(awk '{ print $2 }' "$W/reads.txt" | stats)
T[read_cold_ratio]=$(awk '{ printf "%.3f\n", $1 / $2 }' "$W/reads.txt" | stats 2)
# Warm: REPS pairs too (one warm read is ~60 ms, and varies by 10 ms).
: >"$W/warm-reads.txt"
for ((r = 0; r < REPS; r++)); do
    if ((r % 2)); then
        u=$(read_time "$W/m/big" warm); n=$(read_time "$W/g/big" warm)
    else
        n=$(read_time "$W/g/big" warm); u=$(read_time "$W/m/big" warm)
    fi
    echo "$n $u" >>"$W/warm-reads.txt"
done
T[read_warm_native]=$(awk '{ print $1 }' "$W/warm-reads.txt" | stats)
T[read_warm_unifs]=$(awk '{ print $2 }' "$W/warm-reads.txt" | stats)
T[read_warm_ratio]=$(awk '{ printf "%.3f\n", $1 / $2 }' "$W/warm-reads.txt" | stats 2)
if [ $HAVE_OVL = 1 ]; then
    drop "$W/g/big"
    T[read_cold_ovl]=$(read_time "$W/ovl/merged/big" cold)
    T[read_warm_ovl]=$(read_time "$W/ovl/merged/big" warm)
fi

# One mount per guest at a time (unifs refuses a second): the reads' mount
# goes before the walks mount the guest afresh.
unmount_unifs "$W/m"

find "$W/g/tree" >/dev/null # the backing fs warm for everyone
: >"$W/find.txt"
for ((r = 0; r < REPS; r++)); do
    mount_unifs "$W/g" "$W/fm"
    n1=$(find_time "$W/g/tree")
    u1=$(find_time "$W/fm/tree")
    u2=$(find_time "$W/fm/tree")
    n2=$(find_time "$W/g/tree")
    unmount_unifs "$W/fm"
    echo "$n1 $n2 $u1 $u2 $(cut -d' ' -f1 /proc/loadavg)" >>"$W/find.txt"
done
if [ $HAVE_OVL = 1 ]; then
    T[find_ovl]=$(find_time "$W/ovl/merged/tree")
fi
# The same walk with the kernel's dentries and inodes dropped before each
# (echo 2 > drop_caches; the page cache, and so the disk blocks, stay): a
# native walk that must build its inodes again against the mount's first
# walk, which must build both the backing inodes and its own.
T[findc_native]=-; T[findc_unifs]=-; T[findc_ratio]=-
: >"$W/findcold.txt"
if [ "$COLD_WALK" = 1 ] && sync && { echo 2 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
    for ((r = 0; r < REPS; r++)); do
        sync; echo 2 >/proc/sys/vm/drop_caches
        n1=$(find_time "$W/g/tree")
        mount_unifs "$W/g" "$W/fm"
        sync; echo 2 >/proc/sys/vm/drop_caches
        u1=$(find_time "$W/fm/tree")
        unmount_unifs "$W/fm"
        echo "$n1 $u1" >>"$W/findcold.txt"
    done
    T[findc_native]=$(awk '{ print $1 }' "$W/findcold.txt" | stats)
    T[findc_unifs]=$(awk '{ print $2 }' "$W/findcold.txt" | stats)
    T[findc_ratio]=$(awk '{ printf "%.3f\n", $2 / $1 }' "$W/findcold.txt" | stats 2)
fi
T[find_native]=$(awk '{ print $1; print $2 }' "$W/find.txt" | stats)
T[find_unifs]=$(awk '{ print $3 }' "$W/find.txt" | stats)
T[find2_unifs]=$(awk '{ print $4 }' "$W/find.txt" | stats)
# per run: the first walk over the mean of the native walks around it
T[find_ratio]=$(awk '{ printf "%.3f\n", $3 / (($1 + $2) / 2) }' "$W/find.txt" | stats 2)
T[find2_ratio]=$(awk '{ printf "%.3f\n", $4 / (($1 + $2) / 2) }' "$W/find.txt" | stats 2)

: >"$W/break.txt"
break_reps "$W/bg" "$W/store" "$W/m2" "$W/break.txt"
T[cp]=$(awk '{ print $1 }' "$W/break.txt" | stats)
T[cp_fsync]=$(awk '{ print $2 }' "$W/break.txt" | stats)
T[break_unifs]=$(awk '{ print $3 }' "$W/break.txt" | stats)
T[break_ratio]=$(awk '{ printf "%.3f\n", $3 / $1 }' "$W/break.txt" | stats 2)
T[break_ratio_f]=$(awk '{ printf "%.3f\n", $3 / $2 }' "$W/break.txt" | stats 2)
if [ $HAVE_OVL = 1 ]; then
    s=$(now); printf x | dd of="$W/ovl/merged/shared" conv=notrunc status=none; T[break_ovl]=$(since "$s")
fi

# The break on a journaled ext4 (loop device with direct I/O), if asked.
T[break_ext4]=-
if [ "$LOOP_EXT4" = 1 ]; then
    E="$W/ext4"
    mkdir -p "$E/fs"
    truncate -s 2G "$E/img"
    mkfs.ext4 -q "$E/img"
    LOOP_DEV=$(losetup --direct-io=on -f --show "$E/img")
    mount "$LOOP_DEV" "$E/fs"
    mkdir -p "$E/fs/store/objects" "$E/fs/store/tmp" "$E/fs/g" "$E/fs/m"
    : >"$W/break-ext4.txt"
    break_reps "$E/fs/g" "$E/fs/store" "$E/fs/m" "$W/break-ext4.txt"
    T[cp_ext4]=$(awk '{ print $1 }' "$W/break-ext4.txt" | stats)
    T[cp_fsync_ext4]=$(awk '{ print $2 }' "$W/break-ext4.txt" | stats)
    T[break_ext4]=$(awk '{ print $3 }' "$W/break-ext4.txt" | stats)
    T[break_ext4_ratio]=$(awk '{ printf "%.3f\n", $3 / $1 }' "$W/break-ext4.txt" | stats 2)
fi

# The break on a reflink filesystem: xfs on a loop device, if mkfs.xfs is there.
T[break_xfs]=-
if ! command -v mkfs.xfs >/dev/null || [ ! -e /dev/loop-control ]; then
    echo "mkfs.xfs or /dev/loop-control missing (Debian: apt-get install xfsprogs): no break on xfs" >&2
else
    X="$W/xfs"
    mkdir -p "$X/fs"
    truncate -s $((BREAK_MB * 3 + 400))M "$X/img"
    mkfs.xfs -q -m reflink=1 "$X/img"
    mount -o loop "$X/img" "$X/fs"
    XFS_MOUNTED=1
    mkdir -p "$X/fs/store/objects" "$X/fs/store/tmp" "$X/fs/g" "$X/fs/m"
    dd if=/dev/urandom of="$X/fs/src" bs=1M count="$BREAK_MB" status=none
    cp --reflink=never "$X/fs/src" "$X/fs/g/shared"
    hex=$(printf '%064x' 2)
    setfattr -n trusted.unifs.object -v "$hex" "$X/fs/g/shared"
    mkdir -p "$X/fs/store/objects/${hex:0:2}"
    ln "$X/fs/g/shared" "$X/fs/store/objects/${hex:0:2}/${hex:2}"
    sync
    "$UNIFS" --store "$X/fs/store" mount -f "$X/fs/g" "$X/fs/m" 2>>"$W/daemon.log" &
    DAEMONS+=("$!")
    wait_mounted "$X/fs/m"
    s=$(now); printf x | dd of="$X/fs/m/shared" conv=notrunc status=none; T[break_xfs]=$(since "$s")
    check_break "$X/fs/m/shared" "$X/fs/g/shared" "$X/fs/store/objects/${hex:0:2}/${hex:2}" "$X/fs/src"
    umount "$X/fs/m"
fi

mount_unifs "$W/mem" "$W/memm"
find "$W/memm" -printf '%s\n' >/dev/null
RSS_KB=$(awk '/VmRSS/ { print $2 }' "/proc/$PID/status")

cat <<EOF
| benchmark | native | unifs | ratio | fuse-overlayfs | target |
|---|---|---|---|---|---|
| sequential read ${SIZE_MB} MiB, cold (s) | ${T[read_cold_native]} | ${T[read_cold_unifs]} | ${T[read_cold_ratio]} x speed | ${T[read_cold_ovl]:--} | ≥ 0.9x speed |
| sequential read ${SIZE_MB} MiB, warm (s) | ${T[read_warm_native]} | ${T[read_warm_unifs]} | ${T[read_warm_ratio]} x speed | ${T[read_warm_ovl]:--} | ≥ 0.9x speed |
| find + stat, ${FILES} files, first walk after mount (s) | ${T[find_native]} | ${T[find_unifs]} | ${T[find_ratio]} x time | ${T[find_ovl]:--} | ≤ 2x time |
| find + stat, ${FILES} files, dentries and inodes dropped before each: native, and first walk after mount (s) | ${T[findc_native]} | ${T[findc_unifs]} | ${T[findc_ratio]} x time | | ≤ 2x time |
| find + stat, ${FILES} files, second walk (s) | ${T[find_native]} | ${T[find2_unifs]} | ${T[find2_ratio]} x time | | ≤ 2x time |
| first write to a shared ${BREAK_MB} MiB file (s) | cp ${T[cp]}, cp+fsync ${T[cp_fsync]} | ${T[break_unifs]} | ${T[break_ratio]} x cp; ${T[break_ratio_f]} x cp+fsync | ${T[break_ovl]:--} | ≤ 1.2x cp |
| same on journaled ext4, loop device (s) | cp ${T[cp_ext4]:--}, cp+fsync ${T[cp_fsync_ext4]:--} | ${T[break_ext4]} | ${T[break_ext4_ratio]:--} x cp | | ≤ 1.2x cp |
| first write to a shared ${BREAK_MB} MiB file on xfs (reflink) (s) | | ${T[break_xfs]} | | | near 0 |
| daemon RSS after walking ${MEM_FILES} files (MiB) | | $((RSS_KB / 1024)) | | | ≤ 64 MiB |
EOF
echo "Walk and break: median (min–max) of $REPS runs; ratios are medians of per-run ratios." >&2
echo "load average during the walks: $(awk '{ print $5 }' "$W/find.txt" | tr '\n' ' ')" >&2
echo "kernel $(uname -r); backing fs $(stat -f -c %T "$W/g"); work dir $W" >&2
