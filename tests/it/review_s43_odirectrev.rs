//! Review s43-odirectrev (of 3a657d7, ac35b82): ext4's old EOFBLOCKS bit
//! (0x400000), which a guest may set through its mount since 3a657d7, was
//! no inode flag to unify: a file with it became the store's object, or
//! was linked to one, and every other guest's file showed a flag its guest
//! never set (invariants 1 and 5). And an O_DIRECT read starting
//! misaligned in a hole and running into data read where ext4 refuses it.

use crate::common::require_root;
use crate::fs::harness::{ino, Mount};
use crate::review_s36_attrflags::flags;
use crate::review_s42_stressng::set_flags;
use crate::review_s43_odirect::{pread, twins_on_ext4, Pages};
use crate::tree::{init_store, set_mtime, unifs, unify_json};
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const EXT4_EOFBLOCKS_FL: u32 = 0x40_0000;
const MTIME: u64 = 1_600_000_000;

/// Guest b sets 0x400000 on its own `f` through its mount; unify of a and
/// b leaves b's `f` alone (a file with inode flags) and a's `f` never shows
/// the bit. And an object that has the bit (set on the host, as Linux
/// before 5.7 did by itself) gets no file linked to it: guest c's `g`
/// stays its own. Before, a's `f` and c's `g` showed 0x400000.
#[test]
fn s43_a_guests_eofblocks_bit_is_never_shared_by_unify() {
    if !require_root("s43_a_guests_eofblocks_bit_is_never_shared_by_unify") {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("odirectrev-")
        .tempdir()
        .unwrap();
    let store = tmp.path().join("store");
    init_store(&store);
    let [a, b, c] = ["a", "b", "c"].map(|n| tmp.path().join(n));
    for g in [&a, &b, &c] {
        fs::create_dir(g).unwrap();
        for (rel, text) in [("f", "same f\n"), ("g", "same g\n")] {
            fs::write(g.join(rel), text).unwrap();
            set_mtime(&g.join(rel), MTIME);
        }
    }
    let mp = tmp.path().join("mb");
    fs::create_dir(&mp).unwrap();
    let m = Mount::start(&store, &b, &mp, &[]);
    let (r, after) = set_flags(&m.path("f"), flags(&m.path("f")) | EXT4_EOFBLOCKS_FL);
    r.unwrap();
    assert_ne!(after & EXT4_EOFBLOCKS_FL, 0, "ext4 did not keep the bit");
    drop(m);
    set_mtime(&b.join("f"), MTIME);

    let s = unify_json(&store, &[&a, &b]);
    let shown = |g: &std::path::PathBuf| flags(&g.join("f")) & EXT4_EOFBLOCKS_FL;
    assert_ne!(
        ino(&a.join("f")),
        ino(&b.join("f")),
        "a's and b's f were linked: a's shows {:#x}, b's {:#x} (b set 0x400000): {s}",
        shown(&a),
        shown(&b)
    );
    assert_eq!(shown(&a), 0);
    assert_ne!(shown(&b), 0);
    assert_eq!(s["files_with_inode_flags"], 1, "{s}");

    // a's and b's g are one object now: give it the bit from the host.
    assert_eq!(ino(&a.join("g")), ino(&b.join("g")));
    let (r, _) = set_flags(&a.join("g"), flags(&a.join("g")) | EXT4_EOFBLOCKS_FL);
    r.unwrap();
    let out = unifs(&store, &[&"unify", &"--json", &a, &b, &c]);
    assert_eq!(
        flags(&c.join("g")) & EXT4_EOFBLOCKS_FL,
        0,
        "guest c's g was linked to an object with the bit: {out:?}"
    );
    assert_ne!(ino(&c.join("g")), ino(&a.join("g")));
    // verify reports the object, with a way to take the bit off that
    // works: `chattr` has no letter for it, `chattr =e` sets e alone.
    let out = unifs(&store, &[&"store", &"verify"]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("0x400000") && text.contains("chattr =e"),
        "{text}"
    );
    let (r, _) = set_flags(&a.join("g"), flags(&a.join("g")) & !EXT4_EOFBLOCKS_FL);
    r.unwrap();
}

/// (offset, length) of O_DIRECT reads of a [`lay_out`] file (data, hole
/// [4096, 8192), data to 20,000) that start misaligned in the hole: ext4
/// refuses every one with data after the hole (the caller's buffer is
/// misaligned by the time the read reaches data), also when it ends past
/// the end of file. Those that end in the hole or at the data read.
const HOLE_FIRST: &[(i64, usize)] = &[
    (4196, 20000),
    (4196, 16000),
    (4196, 8000),
    (4196, 3996),
    (4097, 100),
];

/// [`HOLE_FIRST`] on an O_DIRECT open of `path`: "offset+length: answer".
fn hole_first_reads(path: &Path) -> Vec<String> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let mut buf = Box::new(Pages([0; 32768]));
    HOLE_FIRST
        .iter()
        .map(|&(off, len)| {
            format!(
                "{off}+{len}: {}",
                pread(f.as_raw_fd(), &mut buf.0[..len], off)
            )
        })
        .collect()
}

/// The reads of [`HOLE_FIRST`] through a mount with `opts` (a shared and
/// a private file) and on their twins on the same ext4.
fn hole_first_through_mount_and_on_ext4(opts: &[&str]) {
    let (m, plain, _w, _ext4) = twins_on_ext4(opts, |_| ());
    for name in ["shared", "private"] {
        let on_ext4 = hole_first_reads(&plain.join(name));
        assert_eq!(
            hole_first_reads(&m.path(name)),
            on_ext4,
            "{opts:?} {name}: through the mount, then on ext4"
        );
        assert_eq!(on_ext4[0], "4196+20000: EINVAL", "ext4 changed its mind");
    }
    drop(m);
}

/// An O_DIRECT read that starts misaligned in a hole, runs into data and
/// ends past the end of file fails with EINVAL as on ext4 (and xfs), with
/// passthrough and without: since 3a657d7 the mount read it (20,000 at
/// 4,196 read 15,804 bytes).
#[test]
fn s43_a_direct_read_from_a_hole_into_data_is_refused_as_on_ext4() {
    if !require_root("s43_a_direct_read_from_a_hole_into_data_is_refused_as_on_ext4") {
        return;
    }
    hole_first_through_mount_and_on_ext4(&[]);
    hole_first_through_mount_and_on_ext4(&["nopassthrough"]);
}
