#!/bin/bash
# What reading the kernel's log for OOM kills costs (docs/benchmarks.md,
# "OOM watch"): N `unifs run`s of a sleeping command, each with its
# oom-watch thread (the one a named guest's keeper, `unifs run` and `guest
# exec` have), measured per thread (CPU time from /proc/PID/task/TID/
# schedstat, wake-ups as its context switches) over SECS seconds with a
# quiet log, then with RATE records a second written to /dev/kmsg.
# Root needed; the root from busybox-static.
#
#   benches/oom-log-cost.sh [N [SECS [RATE]]]   (default 100 10 1000)
#
# A flood much above 1000 records a second fills the kernel's ring buffer
# (128 KiB here) faster than half a second: every reader of /dev/kmsg on
# the host (other guests' keepers too) then loses records.
set -euo pipefail
n=${1:-100}
secs=${2:-10}
rate=${3:-1000}
here=$(cd "$(dirname "$0")/.." && pwd)
unifs=${UNIFS:-$here/target/release/unifs}
[ -x "$unifs" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "needs /bin/busybox (apt-get install busybox-static)" >&2; exit 1; }

work=$(mktemp -d /tmp/oom-log-cost.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
root=$work/root
mkdir -p "$root"/{bin,proc,dev,sys,run,tmp,etc}
cp /bin/busybox "$root/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done

life=$((3 * secs + 60))
for ((i = 0; i < n; i++)); do
    "$unifs" run --net host --root-mount bind --root "$root" -- /bin/sleep "$life" \
        </dev/null >/dev/null 2>"$work/err.$i" &
    pids+=($!)
done

# Each run's oom-watch thread, once all have one (bounded: 60 s).
threads() {
    for p in "${pids[@]}"; do
        for t in /proc/"$p"/task/*; do
            [ "$(cat "$t/comm" 2>/dev/null)" = oom-watch ] && echo "$t"
        done
    done
}
for ((w = 0; w < 600; w++)); do
    [ "$(threads | wc -l)" -ge "$n" ] && break
    sleep 0.1
done
mapfile -t watch < <(threads)
[ "${#watch[@]}" -ge "$n" ] || { echo "only ${#watch[@]} of $n oom-watch threads" >&2; exit 1; }

# Sum over the threads: CPU ns and context switches.
sample() {
    local cpu=0 sw=0 t
    for t in "${watch[@]}"; do
        read -r ns _ <"$t/schedstat"
        cpu=$((cpu + ns))
        sw=$((sw + $(awk '/ctxt_switches/ { s += $2 } END { print s }' "$t/status")))
    done
    echo "$cpu $sw"
}
measure() {
    local a b
    read -r -a a < <(sample)
    sleep "$secs"
    read -r -a b < <(sample)
    awk -v c=$((b[0] - a[0])) -v s=$((b[1] - a[1])) -v n="${#watch[@]}" -v t="$secs" -v what="$1" \
        'BEGIN { printf "%-34s CPU %8.1f us/s per reader (%.2f%% of a core for all %d), %.2f wake-ups/s per reader\n", what, c / 1000 / t / n, c / 1e7 / t, n, s / t / n }'
}

echo "readers: ${#watch[@]}; ${secs}s each; kernel $(uname -r); $(nproc) CPUs"
measure "quiet log"
# Each record from its own open file: /dev/kmsg limits one file's writes
# (printk_devkmsg=ratelimit, 10 in 5 s).
python3 - "$rate" "$((secs + 2))" <<'PY' &
import os, sys, time
rate, secs = int(sys.argv[1]), float(sys.argv[2])
start = time.monotonic()
sent = 0
while time.monotonic() - start < secs:
    due = int((time.monotonic() - start) * rate)
    while sent < due:
        fd = os.open("/dev/kmsg", os.O_WRONLY)
        os.write(fd, b"<7>oom-log-cost: flood record %d\n" % sent)
        os.close(fd)
        sent += 1
    time.sleep(0.005)
PY
flood=$!
pids+=("$flood")
sleep 1
measure "log flood, $rate records/s"
wait "$flood" 2>/dev/null || true
