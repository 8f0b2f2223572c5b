//! Session 35's review of two leftovers: a break a rename misled onto a file
//! the guest hardlinked itself (a node with several names).

use crate::common::require_root;
use crate::fs::harness::{ino, Mount, World};
use crate::review_s33_etxtbsy::write_in_thread;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::Duration;

/// A break for a write open of shared `x` copies slowly (`pause`); `change`
/// puts a hardlink pair the guest made (`a`, `b`) at `x` meanwhile, through
/// the mount. The pair's file is the guest's own (no marker), so the break
/// finds it private and copies nothing: its node, with both names, keeps
/// its number, `b` (stat'ed, and an fd opened on it before) shows the file
/// at `x` with its two links, and a write through one name shows through
/// the other (invariant 5: the guest sees exactly the hardlinks it made).
fn pair_put_over_a_breaking_name(change: impl FnOnce(&Mount)) {
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    let old_x = vec![b'x'; 20_000];
    w.shared(&old_x, &[g.join("x"), other.join("x")]);
    let log = fs::File::create(w.tmp.path().join("m.log")).unwrap();
    let env = ["env", "UNIFS_TEST_BREAK_PAUSE_MS=700"];
    let m = Mount::start_under(&env, &w.store, &g, &w.dir("m"), &[], log);
    let (x, a, b) = (m.path("x"), m.path("a"), m.path("b"));
    fs::write(&a, vec![b'a'; 20_000]).unwrap();
    fs::hard_link(&a, &b).unwrap();
    let number = ino(&a);
    assert_eq!(ino(&b), number, "a guest-made pair is one file");
    let held = fs::File::open(&b).unwrap();
    fs::metadata(&x).unwrap();

    let write = write_in_thread(&x, b"one");
    std::thread::sleep(Duration::from_millis(250));
    change(&m);
    let r = write.join().unwrap();
    let errno = r.as_ref().err().and_then(|e| e.raw_os_error());
    assert!(matches!(errno, None | Some(libc::ESTALE)), "{r:?}");

    // No fresh lookup of b: the kernel's entry and attributes, and the fd.
    let (by_name, by_fd) = (fs::metadata(&b).unwrap(), held.metadata().unwrap());
    assert_eq!(by_name.ino(), number, "b's number after the break");
    assert_eq!(by_fd.ino(), number, "the fd on b after the break");
    assert_eq!(ino(&x), number, "x (the pair's file) keeps its number");
    assert_eq!(by_name.nlink(), 2, "x and b, the guest's two links");
    fs::OpenOptions::new()
        .write(true)
        .open(&x)
        .unwrap()
        .write_all_at(b"zz", 0)
        .unwrap();
    let mut head = [0u8; 2];
    held.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(&head, b"zz", "a write through x shows through b's fd");
    assert_eq!(&fs::read(&b).unwrap()[..2], b"zz");
    assert_eq!(held.metadata().unwrap().ino(), number);
    assert_eq!(fs::read(other.join("x")).unwrap(), old_x, "isolation");
    assert_eq!(ino(&g.join("x")), ino(&g.join("b")), "one backing file");
}

/// Review s35: the pair renamed over `x` (`a` → `x`) while `x`'s break
/// copies.
#[test]
fn s35_a_hardlink_pair_renamed_over_a_breaking_name_keeps_its_number() {
    if !require_root("s35_a_hardlink_pair_renamed_over_a_breaking_name_keeps_its_number") {
        return;
    }
    pair_put_over_a_breaking_name(|m| fs::rename(m.path("a"), m.path("x")).unwrap());
}

/// Review s35: `x` unlinked and linked again to the pair (`a` → `x`, a
/// third name, `a` then removed) while `x`'s break copies.
#[test]
fn s35_a_hardlink_pair_linked_at_a_breaking_name_keeps_its_number() {
    if !require_root("s35_a_hardlink_pair_linked_at_a_breaking_name_keeps_its_number") {
        return;
    }
    pair_put_over_a_breaking_name(|m| {
        fs::remove_file(m.path("x")).unwrap();
        fs::hard_link(m.path("a"), m.path("x")).unwrap();
        fs::remove_file(m.path("a")).unwrap();
    });
}
