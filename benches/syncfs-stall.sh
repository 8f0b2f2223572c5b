#!/usr/bin/env bash
# How long name operations (create, rename, unlink) of a mount stall while a
# guest breaks many shared files and the daemon syncs the backing filesystem
# for the breaks nobody synced (docs/mount.md, "Power cuts").
#
#   sudo benches/syncfs-stall.sh WORKDIR [FILES] [BOUND]
#
# WORKDIR: a new directory on the filesystem to measure (kept). FILES shared
# files are broken one after another (3000) while another thread creates,
# renames and unlinks files; the daemon syncs after every BOUND unsynced
# breaks (1000; UNIFS_TEST_UNSYNCED_BREAKS_MAX, 10,000 in use: a test hook,
# so UNIFS must be built with them: cargo build --release --features
# test-hooks). Env: UNIFS (binary), HOST_DIRTY_MIB (written to WORKDIR by dd, unsynced, 3 s in: dirty
# data a syncfs must wait for; default 1500), WRAP (a wrapper for the daemon,
# e.g. strace -f -qq --seccomp-bpf -T -e trace=syncfs -o FILE).
set -euo pipefail
UNIFS=$(realpath -m "${UNIFS:-$(dirname "$0")/../target/release/unifs}")
base=$1 n=${2:-3000} bound=${3:-1000} dirty=${HOST_DIRTY_MIB:-1500}
grep -q UNIFS_TEST_UNSYNCED_BREAKS_MAX "$UNIFS" ||
  { echo "$UNIFS has no test hooks: cargo build --release --features test-hooks" >&2; exit 1; }
mkdir -p "$base/a" "$base/b" "$base/m"
python3 - "$base" "$n" <<'PY'
import os, sys
base, n = sys.argv[1], int(sys.argv[2])
for g in "ab":
    os.makedirs(f"{base}/{g}/scratch", exist_ok=True)
    for i in range(n):
        os.makedirs(f"{base}/{g}/d{i % 50}", exist_ok=True)
        p = f"{base}/{g}/d{i % 50}/f{i}"
        with open(p, "wb") as f:
            f.write(str(i).encode() * 400)
        os.utime(p, (1e9, 1e9))
PY
"$UNIFS" --store "$base/s" unify --no-default-excludes "$base/a" "$base/b" >/dev/null
UNIFS_TEST_UNSYNCED_BREAKS_MAX=$bound ${WRAP:-} "$UNIFS" --store "$base/s" mount -f "$base/a" "$base/m" 2>"$base/m.log" &
pid=$!
trap 'umount "$base/m" 2>/dev/null || true; wait || true; rm -f "$base/host-dirty"' EXIT
for _ in $(seq 100); do mountpoint -q "$base/m" && break; sleep 0.1; done
sync
(sleep 3; dd if=/dev/zero of="$base/host-dirty" bs=1M count="$dirty" status=none) &
python3 - "$base/m" "$n" <<'PY'
import os, sys, threading, time
mp, n = sys.argv[1], int(sys.argv[2])
done = threading.Event()
lat = []
def breaker():
    t0 = time.monotonic()
    for i in range(n):
        os.close(os.open(f"{mp}/d{i % 50}/f{i}", os.O_WRONLY))
    done.set()
    print(f"{n} breaks in {time.monotonic() - t0:.1f} s")
def names():
    d, i = f"{mp}/scratch", 0
    while not done.is_set():
        for op in ("create", "rename", "unlink"):
            s = time.monotonic()
            if op == "create":
                with open(f"{d}/n{i}", "wb") as f:
                    f.write(b"x")
            elif op == "rename":
                os.rename(f"{d}/n{i}", f"{d}/m{i}")
            else:
                os.unlink(f"{d}/m{i}")
            lat.append((time.monotonic() - s, op))
        i += 1
        time.sleep(0.001)
ts = [threading.Thread(target=breaker), threading.Thread(target=names)]
for t in ts: t.start()
for t in ts: t.join()
ms = lambda x: f"{x * 1000:.0f} ms"
for op in ("create", "rename", "unlink"):
    w = sorted(l[0] for l in lat if l[1] == op)
    print(f"{op}: {len(w)}, worst {ms(w[-1])}, p99 {ms(w[int(len(w) * 0.99)])}")
PY
