//! Session 35's review of a break a rename misled when the kernel forgets
//! the node of the file it copied before the break's table update.

use crate::common::{require_root, wait_for_pause};
use crate::fs::harness::{ino, Mount, World};
use crate::review_s33_etxtbsy::write_in_thread;
use crate::review_s34_nodes::drop_caches;
use std::fs;

/// A break for a write open of shared `x` copies slowly; a rename through
/// the mount puts `a` at `x` meanwhile (`shared`: a store object's link,
/// else a file with the store's marker but one link), and the break then
/// copies `a`'s file and renames the copy over it. The kernel forgets
/// `a`'s node before the break updates the table (drop_caches here; memory
/// pressure in a guest): no node was left to bind to the copy, and the
/// next lookup numbered the file at `x` by the copy's own inode, so the
/// guest saw its number change (invariant 5).
fn misled_break_copy_forgotten(shared: bool) {
    let _forgets = crate::common::forgets_held();
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    let (old_x, old_a) = (vec![b'x'; 20_000], vec![b'a'; 20_000]);
    w.shared(&old_x, &[g.join("x"), other.join("x")]);
    if shared {
        w.shared(&old_a, &[g.join("a"), other.join("a")]);
    } else {
        fs::remove_file(w.shared(&old_a, &[g.join("a")])).unwrap();
    }
    let log = fs::File::create(w.tmp.path().join("m.log")).unwrap();
    let env = ["env", "UNIFS_TEST_BREAK_PAUSE_MS=700"];
    let m = Mount::start_under(&env, &w.store, &g, &w.dir("m"), &[], log);
    let (x, a) = (m.path("x"), m.path("a"));
    let a_number = ino(&a);

    let write = write_in_thread(&x, b"one");
    wait_for_pause(m.pid(), 700);
    fs::rename(&a, &x).unwrap();
    // Forgotten now, while the break copies `a`'s file (it pauses 700 ms
    // after that copy too) and before it takes the table's lock.
    drop_caches();
    let r = write.join().unwrap();
    let errno = r.as_ref().err().and_then(|e| e.raw_os_error());
    assert!(matches!(errno, None | Some(libc::ESTALE)), "{r:?}");
    assert_eq!(ino(&x), a_number, "x (a's file, broken) after a forget");
    assert_eq!(&fs::read(&x).unwrap()[3..], &old_a[3..], "x is a's file");
    assert_eq!(fs::read(other.join("x")).unwrap(), old_x, "isolation");
    drop(m);
}

/// Review s35: `a` a file with the store's marker but one link.
#[test]
fn s35_a_misled_break_keeps_a_marked_files_number_when_its_node_is_forgotten() {
    let test = "s35_a_misled_break_keeps_a_marked_files_number_when_its_node_is_forgotten";
    if require_root(test) {
        misled_break_copy_forgotten(false);
    }
}

/// Review s35: `a` a link of a store object (numbered by its path).
#[test]
fn s35_a_misled_break_keeps_a_shared_files_number_when_its_node_is_forgotten() {
    let test = "s35_a_misled_break_keeps_a_shared_files_number_when_its_node_is_forgotten";
    if require_root(test) {
        misled_break_copy_forgotten(true);
    }
}
