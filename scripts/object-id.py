#!/usr/bin/env python3
"""Recompute the unifs object id of files, from docs/store-format.md alone.

    object-id.py [--ignore-mtime] FILE...

Prints "ID  FILE" for each file. Run as root to read trusted.* xattrs. Needs the
`blake3` module (pip install blake3). Written independently of unifs's code, to
check that the format document is complete.
"""
import os
import struct
import sys

import blake3

STORE_PREFIX = b"trusted.unifs."


def header(path, ignore_mtime):
    st = os.lstat(path)
    h = b"unifs-object\0" + bytes([1])
    h += struct.pack("<III", st.st_mode & 0o7777, st.st_uid, st.st_gid)
    if ignore_mtime:
        h += b"\0"
    else:
        sec, nsec = divmod(st.st_mtime_ns, 1_000_000_000)
        h += b"\1" + struct.pack("<qI", sec, nsec)
    names = sorted(
        n.encode("utf-8", "surrogateescape")
        for n in os.listxattr(path, follow_symlinks=False)
    )
    names = [n for n in names if not n.startswith(STORE_PREFIX)]
    h += struct.pack("<I", len(names))
    for n in names:
        v = os.getxattr(path, n, follow_symlinks=False)
        h += struct.pack("<I", len(n)) + n + struct.pack("<I", len(v)) + v
    h += struct.pack("<Q", st.st_size)
    return h


def object_id(path, ignore_mtime=False):
    hasher = blake3.blake3(header(path, ignore_mtime))
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def main(argv):
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        return 0
    ignore_mtime = "--ignore-mtime" in argv
    files = [a for a in argv if a != "--ignore-mtime"]
    if not files:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    unknown = [a for a in files if a.startswith("-") and not os.path.exists(a)]
    if unknown:
        print(f"object-id.py: unknown option {unknown[0]} (see --help)", file=sys.stderr)
        return 2
    for f in files:
        print(f"{object_id(f, ignore_mtime)}  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
