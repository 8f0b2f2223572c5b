//! Session 34's review of the mount's node table: a break a rename misled
//! (its copy replaced another file's last link), and what the table keeps
//! for files a long churn creates and deletes.

use crate::common::{require_root, wait_for_pause};
use crate::fs::harness::{ino, Ext4, Mount, World};
use crate::review_s33_etxtbsy::write_in_thread;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

/// The kernel forgets the inodes nothing uses (FORGET to the daemon).
pub(crate) fn drop_caches() {
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
    let _forgets = crate::common::forgets_held();
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

    let write = write_in_thread(&x, b"one");
    // The break copied, paused before its rename.
    wait_for_pause(m.pid(), 700);
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

/// `key` (VmRSS, VmHWM) of process `pid`, in bytes.
fn vm(pid: u32, key: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Creates, stats and deletes `n` files named `{tag}{i}` in `dir`, then
/// has the kernel forget them.
fn churn(dir: &Path, tag: &str, n: usize) {
    for i in 0..n {
        let f = dir.join(format!("{tag}{i}"));
        fs::write(&f, b"x").unwrap();
        fs::metadata(&f).unwrap();
        fs::remove_file(&f).unwrap();
    }
    drop_caches();
}

/// A guest creating, stat'ing and deleting files for long (a build, a mail
/// queue): the daemon keeps nothing for a file that is gone and forgotten,
/// so its memory does not grow with their number, while files that live on
/// keep their numbers (invariant 5: shared paths and a broken copy, the
/// ones whose numbers the table keeps after a forget). Nothing grew here
/// (200,000 files: 28 KB); with the numbers of deleted shared paths kept,
/// as before session 20, the daemon grew 42 bytes a file.
#[test]
fn s34_a_long_create_and_delete_churn_does_not_grow_the_daemon() {
    let _forgets = crate::common::forgets_held();
    if !require_root("s34_a_long_create_and_delete_churn_does_not_grow_the_daemon") {
        return;
    }
    let files: usize = std::env::var("UNIFS_S34_CHURN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    const BATCH: usize = 10_000;
    const SHARED: usize = 10_000;
    const BROKEN: usize = 500;
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    fs::create_dir(g.join("churn")).unwrap();
    fs::create_dir(g.join("live")).unwrap();
    fs::create_dir(other.join("live")).unwrap();
    for i in 0..20 {
        let name = format!("live/s{i}");
        w.shared(name.as_bytes(), &[g.join(&name), other.join(&name)]);
    }
    // Paths linking one store object, each a file of its own to the guest
    // whose number the table keeps for its path: deleted in the churn,
    // some after a break made them private copies (kept by inode).
    fs::create_dir(g.join("shared")).unwrap();
    let shared: Vec<_> = (0..SHARED).map(|i| format!("shared/s{i}")).collect();
    let paths: Vec<_> = shared.iter().map(|p| g.join(p)).collect();
    w.shared(b"object", &paths);
    let mut m = w.mount(&g, "m", &[]);
    m.watch_for(Duration::from_secs(900));
    let live: Vec<_> = (0..20).map(|i| m.path(&format!("live/s{i}"))).collect();
    // Half of them broken (private copies), all seen once.
    for f in &live[..10] {
        fs::OpenOptions::new()
            .write(true)
            .open(f)
            .unwrap()
            .write_all_at(b"!", 0)
            .unwrap();
    }
    let numbers: Vec<u64> = live.iter().map(|f| ino(f)).collect();
    let dir = m.path("churn");
    // The first batch grows the daemon's maps to what one batch needs.
    churn(&dir, "warm", BATCH);
    let before = vm(m.pid(), "VmRSS:");
    let mut done = 0;
    while done < files {
        churn(&dir, &format!("b{done}-"), BATCH.min(files - done));
        done += BATCH;
    }
    for (i, p) in shared.iter().enumerate() {
        let f = m.path(p);
        fs::metadata(&f).unwrap();
        if i % (SHARED / BROKEN) == 0 {
            fs::OpenOptions::new()
                .write(true)
                .open(&f)
                .unwrap()
                .write_all_at(b"!", 0)
                .unwrap();
        }
        fs::remove_file(&f).unwrap();
    }
    drop_caches();
    let files = files + SHARED;
    let after = vm(m.pid(), "VmRSS:");
    let hwm = vm(m.pid(), "VmHWM:");
    let per_file = after.saturating_sub(before) / files as u64;
    eprintln!(
        "daemon RSS {before} -> {after} bytes (peak {hwm}) over {files} files: {per_file} a file"
    );
    // An entry kept per deleted file costs some 50-150 bytes; allocator
    // noise over the run is a few hundred KB at most, a few bytes a file
    // (200,000 files: 28 KB).
    assert!(
        per_file < 16,
        "the daemon grew by {per_file} bytes a deleted file ({before} -> {after} bytes over {files})"
    );
    drop_caches();
    let now: Vec<u64> = live.iter().map(|f| ino(f)).collect();
    assert_eq!(now, numbers, "live files' numbers after the churn");
    drop(m);
}
