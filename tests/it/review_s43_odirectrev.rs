//! Review s43-odirectrev (of 3a657d7, ac35b82): ext4's old EOFBLOCKS bit
//! (0x400000), which a guest may set through its mount since 3a657d7, was
//! no inode flag to unify: a file with it became the store's object, or
//! was linked to one, and every other guest's file showed a flag its guest
//! never set (invariants 1 and 5).

use crate::common::require_root;
use crate::fs::harness::{ino, Mount};
use crate::review_s36_attrflags::flags;
use crate::review_s42_stressng::set_flags;
use crate::tree::{init_store, set_mtime, unifs, unify_json};
use std::fs;

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
