//! Session 34's review of the mount's node table: a break a rename misled
//! (its copy replaced another file's last link).

use crate::common::require_root;
use crate::fs::harness::{ino, Ext4, Mount, World};
use std::fs;
use std::os::unix::fs::FileExt;
use std::time::Duration;

/// The kernel forgets the inodes nothing uses (FORGET to the daemon).
fn drop_caches() {
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
}

/// A break for a write open of `x` (shared) copies slowly; a rename through
/// the mount puts `a` at `x` meanwhile, a file that carries the store's
/// marker but has one link (gc unlinked its object): the mount shows it as
/// a private file, numbered by its own inode. The break then copies `a`'s
/// file and renames the copy over it, freeing its inode, and `a`'s node,
/// private in the table, stayed bound to the freed inode: the guest's file
/// at `x` lost its number (the copy's own showed, here at once), and a new
/// file the filesystem gave the freed inode number could take it.
#[test]
fn s34_a_file_a_misled_break_copied_keeps_its_number_when_forgotten() {
    let test = "s34_a_file_a_misled_break_copied_keeps_its_number_when_forgotten";
    if !require_root(test) {
        return;
    }
    // Many small groups: a new file gets the lowest free inode number of
    // its directory's group, one just freed (as in review_s8_live).
    let ext4 = Ext4::new(&["-g", "4096"], &[]);
    let w = World::new_in(&ext4.root());
    let (g, other) = (w.dir("g"), w.dir("other"));
    let (old_x, old_a) = (vec![b'x'; 20_000], vec![b'a'; 20_000]);
    w.shared(&old_x, &[g.join("x"), other.join("x")]);
    let object = w.shared(&old_a, &[g.join("a")]);
    fs::remove_file(object).unwrap();
    let freed = ino(&g.join("a"));
    let log = fs::File::create(w.tmp.path().join("m.log")).unwrap();
    let env = ["env", "UNIFS_TEST_BREAK_PAUSE_MS=700"];
    let m = Mount::start_under(&env, &w.store, &g, &w.dir("m"), &[], log);
    let (x, a) = (m.path("x"), m.path("a"));
    let a_number = ino(&a);
    assert_eq!(a_number, freed, "a private file's own number");

    let write = {
        let x = x.clone();
        std::thread::spawn(move || {
            fs::OpenOptions::new()
                .write(true)
                .open(&x)
                .and_then(|f| f.write_all_at(b"one", 0))
        })
    };
    std::thread::sleep(Duration::from_millis(250));
    fs::rename(&a, &x).unwrap();
    let r = write.join().unwrap();
    // Its node lost its name: ESTALE, as docs/mount.md allows for an open
    // racing a rename.
    let errno = r.as_ref().err().and_then(|e| e.raw_os_error());
    assert!(matches!(errno, None | Some(libc::ESTALE)), "{r:?}");
    assert_eq!(&fs::read(&x).unwrap()[3..], &old_a[3..], "x is a's file");
    assert_eq!(fs::read(other.join("x")).unwrap(), old_x);
    assert_eq!(ino(&x), a_number, "a renamed keeps its number");
    assert_ne!(
        ino(&g.join("x")),
        freed,
        "the break's copy is another inode"
    );

    drop_caches();
    let mut reused = false;
    for i in 0..16 {
        let f = format!("new{i}");
        fs::write(m.path(&f), b"new").unwrap();
        assert_ne!(ino(&m.path(&f)), a_number, "{f} took x's number");
        if ino(&g.join(&f)) == freed {
            reused = true;
            break;
        }
    }
    assert_eq!(ino(&x), a_number, "x (a's file, broken) after a forget");
    assert_eq!(&fs::read(&x).unwrap()[3..], &old_a[3..]);
    drop(m);
    if !reused {
        crate::common::skip(
            test,
            "the filesystem gave no new file the freed inode number",
        );
    }
}
