#!/usr/bin/env bash
# Generates a synthetic corpus for `unifs unify` benchmarks, for machines
# without debootstrap (see corpus-debian.sh for the real one).
#
# Usage: benches/corpus-generated.sh DIR [SCALE]
#   Writes DIR/g1 .. DIR/gN (N = $GUESTS, default 4). SCALE (default 1)
#   multiplies the file count: SCALE=1 gives ~29,500 files and ~1.2 GiB, the
#   same order as the Debian corpus. Deterministic: same SEED, SCALE and
#   GUESTS give the same trees (names, contents, modes, owners, mtimes,
#   xattrs, links). DIR is replaced if it holds an earlier generated corpus
#   (or what a run stopped half-way left);
#   any other non-empty DIR is refused.
#
# What each guest holds:
#   - most of a shared base (each base file is in a guest with p=0.9), same
#     content and metadata in every guest: the part a dedup tool can share;
#   - in some guests, base files that differ only in mode, only in owner,
#     only in mtime, only in an xattr value, or in content (edited configs);
#   - a few hardlink pairs inside the guest, relative and absolute symlinks,
#     user.* xattrs on some files, empty files, and private (unique) files.
# Owner variants need root and xattrs need a filesystem with user xattrs;
# either is skipped with a note if not available.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 DIR [SCALE]" >&2
    exit 2
fi
DIR=$1
SCALE=${2:-1}
GUESTS=${GUESTS:-4}
SEED=${SEED:-42}
MARKER=.unifs-generated-corpus

if [[ -e $DIR ]]; then
    if [[ -e $DIR/$MARKER ]]; then
        rm -rf -- "$DIR"
    elif [[ -n $(ls -A -- "$DIR") ]]; then
        echo "$0: $DIR is not empty and not a generated corpus; refusing" >&2
        exit 1
    fi
fi
mkdir -p -- "$DIR"
# The marker goes first, so that a run stopped half-way (Ctrl-C) leaves a
# DIR the next run recognises and replaces; its content says "incomplete"
# until the trees are done.
echo incomplete >"$DIR/$MARKER"

python3 - "$DIR" "$SCALE" "$GUESTS" "$SEED" <<'PY'
import os, random, sys, time

root, scale, nguests, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
is_root = os.geteuid() == 0
notes = []

# A 32 MiB block of seeded pseudo-random bytes; file contents are slices of
# it behind a unique header, so distinct files differ and creation is fast.
BLOCK = random.Random(seed ^ 0x5EED).randbytes(32 << 20)

def content(tag, size):
    head = (tag + "\n").encode()
    if size <= len(head):
        return head[:size]
    off = rng.randrange(0, len(BLOCK) - size) if size < len(BLOCK) else 0
    body = BLOCK[off:off + size - len(head)]
    while len(body) < size - len(head):
        body += BLOCK[: size - len(head) - len(body)]
    return head + body

def pick_size():
    r = rng.random()
    if r < 0.65:
        return rng.randint(100, 4 << 10)
    if r < 0.93:
        return rng.randint(4 << 10, 64 << 10)
    if r < 0.995:
        return rng.randint(64 << 10, 512 << 10)
    return rng.randint(512 << 10, 4 << 20)

TOP = ["usr/bin", "usr/sbin", "usr/lib", "usr/share/doc", "usr/share/locale",
       "usr/share/man/man1", "usr/lib/python3/dist-packages", "etc", "var/lib/dpkg/info"]
BASE_MTIME = 1_700_000_000

# The shared base: (path, size, mode, mtime, xattrs, content tag)
nbase = int(7000 * scale)
base = []
for i in range(nbase):
    top = rng.choice(TOP)
    sub = f"pkg{rng.randrange(max(1, nbase // 40)):04d}"
    path = f"{top}/{sub}/f{i:06d}" + rng.choice([".so", ".py", ".txt", ".gz", "", ".conf"])
    mode = 0o755 if top.endswith("bin") or rng.random() < 0.1 else 0o644
    xattrs = {"user.origin": f"pkg{i % 97}".encode()} if rng.random() < 0.02 else {}
    base.append((path, pick_size(), mode, BASE_MTIME + rng.randrange(10**7), xattrs, f"base {i}"))

xattr_ok = True

def write(path, data, mode, mtime, uid=0, gid=0, xattrs=None):
    global xattr_ok
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        if xattrs and xattr_ok:
            for k, v in xattrs.items():
                try:
                    os.setxattr(fd, k, v)
                except OSError as e:
                    xattr_ok = False
                    notes.append(f"xattrs skipped: {e}")
        if is_root:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.utime(path, (mtime, mtime))

counts = {}
def bump(k, n=1):
    counts[k] = counts.get(k, 0) + n

# Base contents are generated once and written to every guest that has them.
base_data = [content(tag, size) for (_, size, _, _, _, tag) in base]

t0 = time.time()
for g in range(1, nguests + 1):
    groot = os.path.join(root, f"g{g}")
    grng = random.Random(seed * 1000 + g)
    present = []
    for i, (path, size, mode, mtime, xattrs, tag) in enumerate(base):
        if grng.random() >= 0.9:
            continue
        data, uid, gid, xa = base_data[i], 0, 0, xattrs
        r = grng.random()
        if g > 1 and r < 0.01:
            mode ^= 0o111 if mode & 0o111 else 0o100; bump("differ: mode")
        elif g > 1 and r < 0.02 and is_root:
            uid = gid = 1000; bump("differ: owner")
        elif g > 1 and r < 0.03:
            mtime += 3600; bump("differ: mtime")
        elif g > 1 and r < 0.035:
            xa = dict(xattrs); xa["user.guest"] = f"g{g}".encode(); bump("differ: xattr")
        elif g > 1 and r < 0.05:
            data = content(f"{tag} edited in g{g}", size); bump("differ: content")
        else:
            bump("shared-base files")
        write(os.path.join(groot, path), data, mode, mtime, uid, gid, xa)
        present.append(path)
    # Private files: unique content (logs, keys, app data).
    for j in range(int(1000 * scale)):
        p = os.path.join(groot, f"var/lib/app{g}/d{j % 50:02d}/private{j:05d}.dat")
        write(p, content(f"private g{g} {j}", pick_size()), 0o640, BASE_MTIME + j)
        bump("private files")
    # Hardlink pairs inside the guest (both names then count as one inode).
    for path in grng.sample(present, min(len(present), int(20 * scale))):
        os.link(os.path.join(groot, path), os.path.join(groot, path + ".hardlink"))
        bump("hardlinks (extra names)")
    # Symlinks: relative into the base, and absolute (must not be followed).
    for j, path in enumerate(grng.sample(present, min(len(present), int(300 * scale)))):
        link = os.path.join(groot, "usr/local/links", f"l{j:05d}")
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.relpath(os.path.join(groot, path), os.path.dirname(link)), link)
        os.utime(link, (BASE_MTIME, BASE_MTIME), follow_symlinks=False)
        bump("symlinks")
    os.makedirs(os.path.join(groot, "etc/alternatives"), exist_ok=True)
    for target, name in (("/etc/passwd", "host-passwd"), ("/usr/bin", "host-bin")):
        link = os.path.join(groot, "etc/alternatives", name)
        os.symlink(target, link)
        os.utime(link, (BASE_MTIME, BASE_MTIME), follow_symlinks=False)
    bump("symlinks", 2)
    # Empty files (never unified).
    for j in range(int(50 * scale)):
        write(os.path.join(groot, f"var/lib/empty/e{j:04d}"), b"", 0o644, BASE_MTIME)
        bump("empty files")

# Directory mtimes too, deepest first, so the trees are fully reproducible.
for dirpath, _, _ in os.walk(root, topdown=False):
    if dirpath != root:
        os.utime(dirpath, (BASE_MTIME, BASE_MTIME))

open(os.path.join(root, ".unifs-generated-corpus"), "w").write(
    f"seed={seed} scale={scale} guests={nguests}\n")
if not is_root:
    notes.append("not root: owner variants skipped")
print(f"generated {nguests} guests in {root} in {time.time() - t0:.1f} s (seed {seed}, scale {scale})")
for k in sorted(counts):
    print(f"  {k:26s} {counts[k]:8d}")
for n in sorted(set(notes)):
    print("  note:", n)
PY

files=$(find "$DIR" -mindepth 1 -xdev -type f ! -name "$MARKER" | wc -l)
mib=$(du -s --apparent-size --block-size=1M "$DIR" | cut -f1)
echo "total: $files regular files (names), $mib MiB apparent"
