//! `unifs unify` against real trees in temp dirs.

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A temp dir holding `store/` and guests `g0`, `g1`, … on one filesystem.
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
    fn guest(&self, i: usize) -> PathBuf {
        let p = self.dir.path().join(format!("g{i}"));
        fs::create_dir_all(&p).unwrap();
        p
    }
}

/// The same small "distribution" in a guest, plus what is its own.
fn populate(root: &Path, own: u64) {
    for i in 0..20u64 {
        file(
            root,
            &format!("usr/lib/lib{i}.so"),
            &bytes(i, 1000 + i as usize * 997),
            0o644,
        );
    }
    file(root, "usr/bin/tool", &bytes(99, 50_000), 0o755);
    file(
        root,
        "etc/hostname",
        format!("guest{own}\n").as_bytes(),
        0o644,
    );
    file(root, "usr/share/own", &bytes(1000 + own, 4096), 0o644);
}

#[test]
fn identical_files_share_one_inode_and_different_ones_do_not() {
    if !require_root("identical_files_share_one_inode") {
        return;
    }
    let lab = Lab::new();
    let (a, b, c) = (lab.guest(0), lab.guest(1), lab.guest(2));
    for g in [&a, &b, &c] {
        file(g, "same", b"identical content\n", 0o644);
    }
    file(&a, "content", b"one\n", 0o644);
    file(&b, "content", b"two\n", 0o644);
    file(&a, "mode", b"mode\n", 0o644);
    file(&b, "mode", b"mode\n", 0o600);
    file(&a, "owner", b"owner\n", 0o644);
    file(&b, "owner", b"owner\n", 0o644);
    std::os::unix::fs::chown(b.join("owner"), Some(1000), Some(1000)).unwrap();
    file_at(&a, "mtime", b"mtime\n", 0o644, MTIME);
    file_at(&b, "mtime", b"mtime\n", 0o644, MTIME + 1);
    file(&a, "xattr", b"xattr\n", 0o644);
    file(&b, "xattr", b"xattr\n", 0o644);
    set_xattr(&b.join("xattr"), "user.note", b"x");
    file(&a, "xattr-same", b"xs\n", 0o644);
    file(&b, "xattr-same", b"xs\n", 0o644);
    set_xattr(&a.join("xattr-same"), "user.note", b"y");
    set_xattr(&b.join("xattr-same"), "user.note", b"y");

    let s = unify_json(&lab.store(), &[&a, &b, &c]);
    assert_eq!(s["files_linked"], 3, "{s}");
    assert_eq!(ino(&a.join("same")), ino(&b.join("same")));
    assert_eq!(ino(&a.join("same")), ino(&c.join("same")));
    assert_eq!(
        fs::metadata(a.join("same")).unwrap().nlink(),
        4,
        "3 guests + the store"
    );
    assert_eq!(ino(&a.join("xattr-same")), ino(&b.join("xattr-same")));
    for name in ["content", "mode", "owner", "mtime", "xattr"] {
        assert_ne!(
            ino(&a.join(name)),
            ino(&b.join(name)),
            "{name} must not be shared"
        );
    }
    assert_verify_clean(&lab.store());
}

#[test]
fn unify_is_invisible_and_keeps_guest_hardlinks() {
    if !require_root("unify_is_invisible") {
        return;
    }
    let lab = Lab::new();
    let guests: Vec<PathBuf> = (0..3).map(|i| lab.guest(i)).collect();
    for (i, g) in guests.iter().enumerate() {
        populate(g, i as u64);
        // A hardlink pair the guest made itself (like perl and perl5.36).
        file(g, "usr/bin/perl", &bytes(7, 30_000), 0o755);
        fs::hard_link(g.join("usr/bin/perl"), g.join("usr/bin/perl5.36")).unwrap();
        std::os::unix::fs::symlink("lib0.so", g.join("usr/lib/link.so")).unwrap();
        file(g, "usr/lib/setuid", &bytes(8, 2000), 0o4755);
        set_xattr(&g.join("usr/lib/lib1.so"), "user.origin", b"pkg");
        file(g, "usr/lib/empty", b"", 0o644);
        // Every directory an old mtime, so that any change of one shows.
        set_dir_mtimes(g, MTIME);
    }
    let before: Vec<Snapshot> = guests.iter().map(|g| snapshot(g)).collect();
    let args: Vec<&dyn AsRef<std::ffi::OsStr>> = guests.iter().map(|g| g as _).collect();
    let s = unify_json(&lab.store(), &args);
    assert!(s["files_linked"].as_u64().unwrap() >= 40, "{s}");
    for (g, b) in guests.iter().zip(&before) {
        assert_invisible(b, &snapshot(g), &g.display().to_string());
    }
    // The guest's own pair is still a pair of its own, not shared with the store.
    let m = fs::metadata(guests[0].join("usr/bin/perl")).unwrap();
    assert_eq!(m.nlink(), 2);
    assert_ne!(
        ino(&guests[0].join("usr/bin/perl")),
        ino(&guests[1].join("usr/bin/perl"))
    );
    assert_eq!(
        ino(&guests[0].join("usr/lib/lib1.so")),
        ino(&guests[2].join("usr/lib/lib1.so"))
    );
    assert_eq!(s["guest_hardlinks_left"], 6);
    assert_verify_clean(&lab.store());
}

#[test]
fn dry_run_changes_nothing_and_rerun_reads_nothing() {
    if !require_root("dry_run_changes_nothing") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    populate(&a, 0);
    populate(&b, 1);
    let inodes = |g: &Path| -> Vec<u64> {
        walkdir::WalkDir::new(g)
            .sort_by_file_name()
            .into_iter()
            .map(|e| e.unwrap().metadata().unwrap().ino())
            .collect()
    };
    let (ia, ib) = (inodes(&a), inodes(&b));
    let dry = unify_json(&lab.store(), &[&"--dry-run", &a, &b]);
    assert_eq!(dry["files_linked"], 21, "{dry}");
    assert_eq!(
        dry["bytes_saved"],
        50_000 + (0..20).map(|i| 1000 + i * 997).sum::<u64>()
    );
    assert_eq!((inodes(&a), inodes(&b)), (ia, ib), "dry run changed inodes");
    assert!(!lab.store().exists(), "dry run created the store");

    let first = unify_json(&lab.store(), &[&a, &b]);
    assert_eq!(first["files_linked"], dry["files_linked"]);
    assert_eq!(first["bytes_saved"], dry["bytes_saved"]);
    assert!(first["bytes_hashed"].as_u64().unwrap() > 0);
    let again = unify_json(&lab.store(), &[&a, &b]);
    assert_eq!(again["bytes_hashed"], 0, "{again}");
    assert_eq!(again["files_hashed"], 0);
    assert_eq!(again["files_linked"], 0);
    assert_eq!(again["files_already_linked"], 42);

    // A third guest joins later: it links to the existing objects.
    let c = lab.guest(2);
    populate(&c, 2);
    let third = unify_json(&lab.store(), &[&c]);
    assert_eq!(third["files_linked"], 21, "{third}");
    assert_eq!(third["objects_added"], 0);
    assert_eq!(ino(&a.join("usr/bin/tool")), ino(&c.join("usr/bin/tool")));
}

/// The catalog's `guest_files` rows of one guest: (path, object id).
fn catalog_links(store: &Path, guest: &str) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(store.join("catalog.db")).unwrap();
    let mut st = conn
        .prepare("SELECT path, object_id FROM guest_files WHERE guest = ?1 ORDER BY path")
        .unwrap();
    st.query_map([guest], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// What the filesystem says: every file of `root` that is a store object's
/// inode (same inode as a file under `store/objects`), with that object id.
fn fs_links(store: &Path, root: &Path) -> Vec<(String, String)> {
    let mut objects = std::collections::HashMap::new();
    for e in walkdir::WalkDir::new(store.join("objects")) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let id = e.path().to_string_lossy().replace('/', "");
            let id = id[id.len() - 64..].to_string();
            objects.insert(e.metadata().unwrap().ino(), id);
        }
    }
    let mut out: Vec<(String, String)> = walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let id = objects.get(&e.metadata().unwrap().ino())?;
            let rel = e.path().strip_prefix(root).unwrap();
            Some((rel.to_string_lossy().into_owned(), id.clone()))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn reruns_keep_the_catalog_equal_to_the_guests() {
    if !require_root("reruns_keep_the_catalog_equal_to_the_guests") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    populate(&a, 0);
    populate(&b, 1);
    let store = lab.store();
    let first = unify_json(&store, &[&a, &b]);
    assert_eq!(catalog_links(&store, "g0"), fs_links(&store, &a));
    assert_eq!(catalog_links(&store, "g0").len(), 21);

    // Unchanged: same counts as the first run (linked files are known by
    // their directory entries, not stat'ed), nothing rewritten.
    let again = unify_json(&store, &[&a, &b]);
    for k in ["files_scanned", "bytes_scanned", "files_too_small"] {
        assert_eq!(again[k], first[k], "{k}: {again}");
    }
    assert_eq!(catalog_links(&store, "g0"), fs_links(&store, &a));

    // The guest changes its tree without telling unifs: a linked file
    // removed, one renamed, one replaced by a private copy, one moved to
    // another directory, and a new duplicate of an object added.
    fs::remove_file(a.join("usr/lib/lib0.so")).unwrap();
    fs::rename(a.join("usr/lib/lib1.so"), a.join("usr/lib/lib1.so.bak")).unwrap();
    let private = fs::read(a.join("usr/lib/lib2.so")).unwrap();
    file(&a, "usr/lib/.new", &private, 0o644);
    fs::rename(a.join("usr/lib/.new"), a.join("usr/lib/lib2.so")).unwrap();
    fs::create_dir_all(a.join("opt")).unwrap();
    fs::rename(a.join("usr/lib/lib3.so"), a.join("opt/lib3.so")).unwrap();
    file(&a, "opt/tool-copy", &bytes(99, 50_000), 0o755);
    let third = unify_json(&store, &[&a, &b]);
    let links = catalog_links(&store, "g0");
    assert_eq!(links, fs_links(&store, &a), "{third}");
    let paths: Vec<&str> = links.iter().map(|(p, _)| p.as_str()).collect();
    assert!(!paths.contains(&"usr/lib/lib0.so"), "{paths:?}");
    assert!(paths.contains(&"usr/lib/lib1.so.bak"), "{paths:?}");
    assert!(paths.contains(&"opt/lib3.so"), "{paths:?}");
    assert!(paths.contains(&"opt/tool-copy"), "{paths:?}");
    // lib2.so was a private copy: unify linked it again.
    assert!(paths.contains(&"usr/lib/lib2.so"), "{paths:?}");
    assert_eq!(catalog_links(&store, "g1"), fs_links(&store, &b));

    // And once more: nothing changed since, nothing moves.
    unify_json(&store, &[&a, &b]);
    assert_eq!(catalog_links(&store, "g0"), links);
    assert_verify_clean(&store);
}

/// Directories under `root`, itself included.
fn dir_count(root: &Path) -> u64 {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_dir())
        .count() as u64
}

#[test]
fn reruns_read_only_the_directories_that_changed() {
    if !require_root("reruns_read_only_the_directories_that_changed") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    populate(&a, 0);
    populate(&b, 1);
    let store = lab.store();
    let dirs = dir_count(&a) + dir_count(&b);
    let reads = |s: &serde_json::Value| (s["dirs_read"].as_u64(), s["dirs_from_cache"].as_u64());
    let first = unify_json(&store, &[&a, &b]);
    assert_eq!(reads(&first), (Some(dirs), Some(0)), "{first}");
    // The directories the first run changed were listed again after it:
    // the next run reads none.
    let again = unify_json(&store, &[&a, &b]);
    assert_eq!(reads(&again), (Some(0), Some(dirs)), "{again}");
    assert_eq!(again["files_already_linked"], 42);

    // A new duplicate in one directory: that directory is read, the file
    // linked; then nothing is read again.
    file(&a, "usr/share/tool-copy", &bytes(99, 50_000), 0o755);
    let dry = unify_json(&store, &[&"--dry-run", &a, &b]);
    assert_eq!(reads(&dry), (Some(1), Some(dirs - 1)), "{dry}");
    let changed = unify_json(&store, &[&a, &b]);
    assert_eq!(
        reads(&changed),
        (Some(1), Some(dirs - 1)),
        "the dry run kept nothing: {changed}"
    );
    assert_eq!(changed["files_linked"], 1, "{changed}");
    assert_eq!(
        ino(&a.join("usr/share/tool-copy")),
        ino(&b.join("usr/bin/tool"))
    );
    assert_eq!(reads(&unify_json(&store, &[&a, &b])), (Some(0), Some(dirs)));
    assert_eq!(catalog_links(&store, "g0"), fs_links(&store, &a));

    // --paranoid reads every directory.
    let paranoid = unify_json(&store, &[&"--paranoid", &a, &b]);
    assert_eq!(reads(&paranoid), (Some(dirs), Some(0)), "{paranoid}");

    // A kept listing never stands in for another directory: each guest
    // gets the other's file (valid, but of other inodes), then a torn one.
    let cache = files_named_from(&store.join("cache"), "listings-");
    assert_eq!(cache.len(), 2, "{cache:?}");
    let (ca, cb) = (fs::read(&cache[0]).unwrap(), fs::read(&cache[1]).unwrap());
    fs::write(&cache[0], &cb).unwrap();
    fs::write(&cache[1], &ca).unwrap();
    let swapped = unify_json(&store, &[&a, &b]);
    assert_eq!(reads(&swapped), (Some(dirs), Some(0)), "{swapped}");
    assert_eq!(swapped["files_already_linked"], 43);
    for c in &cache {
        let data = fs::read(c).unwrap();
        fs::write(c, &data[..data.len() / 2]).unwrap();
    }
    let torn = unify_json(&store, &[&a, &b]);
    assert_eq!(reads(&torn), (Some(dirs), Some(0)), "{torn}");
    assert_eq!(torn["files_already_linked"], 43);
    assert_eq!(reads(&unify_json(&store, &[&a, &b])), (Some(0), Some(dirs)));
    assert_eq!(catalog_links(&store, "g0"), fs_links(&store, &a));
    assert_eq!(catalog_links(&store, "g1"), fs_links(&store, &b));
}

#[test]
fn a_kept_listing_naming_a_file_that_is_gone_is_not_trusted() {
    if !require_root("a_kept_listing_naming_a_file_that_is_gone") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    populate(&a, 0);
    populate(&b, 1);
    let store = lab.store();
    let first = unify_json(&store, &[&a, &b]);
    // Forge what a stale listing would be: etc/ of one guest names
    // "hostnamf" (its directory's stat still matching), not "hostname".
    assert_eq!(forge_listings(&store, b"hostname\0", b"hostnamf\0"), 2);
    // The name is gone: both etc/ are read after all, and every file is
    // found as before, with no problem.
    let again = unify_json(&store, &[&a, &b]);
    assert_eq!(again["dirs_read"], 2, "{again}");
    for k in ["files_scanned", "bytes_scanned", "files_too_small"] {
        assert_eq!(again[k], first[k], "{k}: {again}");
    }
    assert_eq!(again["problems"].as_array().unwrap().len(), 0);
    // And kept again, right this time.
    assert_eq!(unify_json(&store, &[&a, &b])["dirs_read"], 0);
}

/// Replaces `from` by `to` (same length) wherever it occurs in the store's
/// kept listings, with their hashes made right again, as a stale listing
/// would be. Returns how many files had it.
fn forge_listings(store: &Path, from: &[u8], to: &[u8]) -> usize {
    let mut forged = 0;
    for e in fs::read_dir(store.join("cache")).unwrap() {
        let path = e.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("listings-")
        {
            continue;
        }
        let mut data = fs::read(&path).unwrap();
        let body = data.len() - 32;
        let Some(at) = data.windows(from.len()).position(|w| w == from) else {
            continue;
        };
        data[at..at + to.len()].copy_from_slice(to);
        let hash = blake3::hash(&data[..body]);
        data[body..].copy_from_slice(hash.as_bytes());
        fs::write(&path, &data).unwrap();
        forged += 1;
    }
    forged
}

#[test]
fn a_kept_listing_naming_a_subdirectory_that_is_gone_is_dropped() {
    if !require_root("a_kept_listing_naming_a_subdirectory_that_is_gone") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    populate(&a, 0);
    populate(&b, 1);
    let store = lab.store();
    let first = unify_json(&store, &[&a, &b]);
    // usr/'s kept listings name a directory "shard" (DT_DIR), not "share".
    assert_eq!(forge_listings(&store, b"\x04share\0", b"\x04shard\0"), 2);
    // This run trusts them (their stat matches), finds "shard" gone and
    // says so; it does not keep them again...
    let stale = unify_json(&store, &[&a, &b]);
    assert_eq!(stale["problems"].as_array().unwrap().len(), 2, "{stale}");
    // ...so the next run reads both usr/ afresh (and usr/share, which the
    // stale run did not walk) and finds all again.
    let again = unify_json(&store, &[&a, &b]);
    assert_eq!(again["dirs_read"], 4, "{again}");
    assert_eq!(again["problems"].as_array().unwrap().len(), 0, "{again}");
    for k in ["files_scanned", "bytes_scanned", "files_too_small"] {
        assert_eq!(again[k], first[k], "{k}: {again}");
    }
    assert_eq!(catalog_links(&store, "g0"), fs_links(&store, &a));
    assert_eq!(unify_json(&store, &[&a, &b])["dirs_read"], 0);
}

/// A btrfs filesystem in an image file, loop-mounted for a test; unmounted
/// (and so its loop device freed) even when the test fails.
struct Btrfs {
    dir: tempfile::TempDir,
}

impl Btrfs {
    fn new() -> Btrfs {
        Btrfs {
            dir: crate::common::mounted_image("btrfs", 256 << 20, &["-q"]),
        }
    }
    fn path(&self) -> PathBuf {
        self.dir.path().join("fs")
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_btrfs_subvolume_inside_a_guest_is_not_entered() {
    if !require_root("a_btrfs_subvolume_inside_a_guest_is_not_entered") {
        return;
    }
    let fs_ = Btrfs::new();
    let (store, a, b) = (
        fs_.path().join("store"),
        fs_.path().join("g0"),
        fs_.path().join("g1"),
    );
    // The subvolume first: its inode numbers start where the guests' do,
    // so they are those of store objects too.
    fs::create_dir(&a).unwrap();
    let made = Command::new("btrfs")
        .args(["subvolume", "create"])
        .arg(a.join("opt"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    for i in 0..40u64 {
        file(&a, &format!("opt/p{i}"), &bytes(5000 + i, 3000), 0o644);
    }
    populate(&a, 0);
    populate(&b, 1);
    let first = unify_json(&store, &[&a, &b]);
    let again = unify_json(&store, &[&a, &b]);
    for s in [&first, &again] {
        // 23 files each, none of opt/.
        assert_eq!(s["files_scanned"], 46, "{s}");
    }
    let links = catalog_links(&store, "g0");
    assert_eq!(links.len(), 21, "{links:?}");
    assert!(
        links.iter().all(|(p, _)| !p.starts_with("opt/")),
        "{links:?}"
    );
    assert_verify_clean(&store);
}

#[test]
fn host_files_behind_guest_symlinks_are_never_touched() {
    if !require_root("host_files_behind_guest_symlinks") {
        return;
    }
    let lab = Lab::new();
    let host = lab.dir.path().join("host");
    let secret = file(&host, "etc/passwd", b"host secret\n", 0o644);
    let host_ino = ino(&secret);
    let (a, b) = (lab.guest(0), lab.guest(1));
    // Both guests hold a copy identical to the host file, plus symlinks to it.
    for g in [&a, &b] {
        file(g, "etc/copy", b"host secret\n", 0o644);
        fs::create_dir_all(g.join("etc")).unwrap();
        std::os::unix::fs::symlink(&secret, g.join("etc/x")).unwrap();
        std::os::unix::fs::symlink(&host, g.join("hostdir")).unwrap();
    }
    unify_json(&lab.store(), &[&"--no-default-excludes", &a, &b]);
    let m = fs::metadata(&secret).unwrap();
    assert_eq!((m.ino(), m.nlink()), (host_ino, 1), "host file was linked");
    assert!(unifs::store::read_marker_path(&secret).unwrap().is_none());
    assert_eq!(fs::read(&secret).unwrap(), b"host secret\n");
    assert_eq!(fs::read_link(a.join("etc/x")).unwrap(), secret);
}

#[test]
fn a_directory_swapped_for_a_symlink_during_unify_never_reaches_the_host() {
    if !require_root("a_directory_swapped_for_a_symlink") {
        return;
    }
    let lab = Lab::new();
    let host = lab.dir.path().join("host");
    for i in 0..50u64 {
        file(&host, &format!("f{i}"), &bytes(i, 3000), 0o644);
    }
    let host_before = snapshot(&host);
    let (a, b) = (lab.guest(0), lab.guest(1));
    for g in [&a, &b] {
        for i in 0..50u64 {
            file(g, &format!("d/f{i}"), &bytes(i, 3000), 0o644);
        }
    }
    // A hostile guest keeps swapping its directory with a symlink to the host.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, a, host) = (stop.clone(), a.clone(), host.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            std::os::unix::fs::symlink(&host, a.join("evil")).unwrap();
            let dir = unifs::sys::open_dir(&a).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Atomic swap of "d" and "evil" (a real dir and a symlink).
                let _ = unifs::sys::rename_exchange(
                    dir.as_fd(),
                    std::ffi::OsStr::new("d"),
                    std::ffi::OsStr::new("evil"),
                );
                n += 1;
            }
            n
        })
    };
    for _ in 0..5 {
        let _ = unifs(&lab.store(), &[&"unify", &"--json", &a, &b]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(swapper.join().unwrap() > 0);
    assert_eq!(snapshot(&host), host_before, "a host file changed");
    for i in 0..50 {
        let m = fs::metadata(host.join(format!("f{i}"))).unwrap();
        assert_eq!(m.nlink(), 1, "host file f{i} was linked");
        assert!(unifs::store::read_marker_path(&host.join(format!("f{i}")))
            .unwrap()
            .is_none());
    }
    assert_verify_clean(&lab.store());
}

#[test]
fn killing_unify_anywhere_loses_nothing_and_the_next_run_finishes() {
    if !require_root("killing_unify_anywhere") {
        return;
    }
    let lab = Lab::new();
    let guests: Vec<PathBuf> = (0..3).map(|i| lab.guest(i)).collect();
    for (i, g) in guests.iter().enumerate() {
        for j in 0..600u64 {
            file(
                g,
                &format!("usr/share/d{}/f{j}", j % 20),
                &bytes(j, 2000 + (j as usize % 7) * 500),
                0o644,
            );
        }
        file(g, "own", &bytes(5000 + i as u64, 100), 0o644);
        set_dir_mtimes(g, MTIME);
    }
    // A killed run leaves the mtime of a directory it was changing that
    // very moment changed (each is put back right after the change), and
    // the next run puts it back; rare at these moments, so not counted on
    // (dirjournal.rs's unit tests make sure of that repair).
    let before: Vec<Snapshot> = guests.iter().map(|g| snapshot(g)).collect();
    let not_tmp = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".unifs-tmp-"))
    };
    // Kill at spread-out moments: during scan, hashing, linking.
    let delays_ms = [5u64, 15, 30, 45, 60, 80, 110, 150, 200, 260];
    let mut killed_mid_run = 0;
    for delay in delays_ms {
        let mut child = Command::new(crate::common::unifs_bin())
            .arg("--store")
            .arg(lab.store())
            .arg("unify")
            .args(&guests)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        if !finished {
            killed_mid_run += 1;
        }
        let after_kills: Vec<Snapshot> = guests.iter().map(|g| snapshot_with(g, not_tmp)).collect();
        for (after, b) in after_kills.iter().zip(&before) {
            assert_invisible(
                &b.clone().without_dir_mtimes(),
                &after.clone().without_dir_mtimes(),
                &format!("after kill at {delay} ms"),
            );
        }
        if lab.store().join("objects").exists() {
            assert_verify_clean(&lab.store());
        }
    }
    assert!(
        killed_mid_run >= 3,
        "only {killed_mid_run} kills landed mid-run"
    );
    let s = unify_json(&lab.store(), &[&guests[0], &guests[1], &guests[2]]);
    assert!(s["problems"].as_array().unwrap().is_empty(), "{s}");
    for (g, b) in guests.iter().zip(&before) {
        // The final run put back the directory mtimes the killed ones left
        // changed, as well as those it changed itself.
        assert_invisible(b, &snapshot(g), "after the final run");
    }
    let records = std::fs::read_dir(lab.store().join("tmp"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("dirtimes-")
        })
        .count();
    assert_eq!(records, 0, "records of directory mtimes left in tmp/");
    // Every shared file is now linked: one inode per path across guests.
    for j in [0u64, 77, 599] {
        let rel = format!("usr/share/d{}/f{j}", j % 20);
        assert_eq!(ino(&guests[0].join(&rel)), ino(&guests[2].join(&rel)));
    }
    let again = unify_json(&lab.store(), &[&guests[0], &guests[1], &guests[2]]);
    assert_eq!(again["files_linked"], 0);
    assert_verify_clean(&lab.store());
}

/// `unifs unify --json ARGS GUESTS` with objects full at `link_max` links.
fn unify_json_link_max(
    store: &Path,
    args: &[&str],
    guests: &[PathBuf],
    link_max: u32,
) -> serde_json::Value {
    let out = Command::new(crate::common::unifs_bin())
        .arg("--store")
        .arg(store)
        .args(["unify", "--json"])
        .args(args)
        .args(guests)
        .env("UNIFS_TEST_LINK_MAX", link_max.to_string())
        .output()
        .unwrap();
    unify_summary(&out)
}

#[test]
fn a_full_object_gets_another_copy() {
    if !require_root("a_full_object_gets_another_copy") {
        return;
    }
    let lab = Lab::new();
    let guests: Vec<PathBuf> = (0..7).map(|i| lab.guest(i)).collect();
    for g in &guests {
        file(g, "shared", b"shared by seven\n", 0o644);
    }
    let s = unify_json_link_max(&lab.store(), &[], &guests, 3);
    assert_eq!(s["files_linked"], 6);
    assert!(s["extra_copies"].as_u64().unwrap() >= 2, "{s}");
    let mut inodes: Vec<u64> = guests.iter().map(|g| ino(&g.join("shared"))).collect();
    for g in &guests {
        assert!(fs::metadata(g.join("shared")).unwrap().nlink() <= 3);
    }
    inodes.sort();
    inodes.dedup();
    assert!(inodes.len() >= 3, "expected several copies, got {inodes:?}");
    let objects = walkdir::WalkDir::new(lab.store().join("objects"))
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .count();
    assert_eq!(objects, inodes.len());
    assert_verify_clean(&lab.store());
}

/// gc leaves a copy no guest links while a higher copy of its object is
/// linked: unify counts copies up from 0, and a gap would hide the higher
/// one (new guests would get a new copy instead of linking it).
#[test]
fn gc_keeps_the_copies_below_a_linked_one() {
    if !require_root("gc_keeps_the_copies_below_a_linked_one") {
        return;
    }
    let lab = Lab::new();
    let guests: Vec<PathBuf> = (0..5).map(|i| lab.guest(i)).collect();
    for g in &guests {
        file(g, "shared", b"shared by five\n", 0o644);
    }
    // Copy 0: the store's name and g0-g2; copy 1: the store's name and g3.
    unify_json_link_max(&lab.store(), &[], &guests[..4], 4);
    let (first, last) = (
        ino(&guests[0].join("shared")),
        ino(&guests[3].join("shared")),
    );
    assert_ne!(first, last, "two copies");
    for g in &guests[..3] {
        fs::remove_file(g.join("shared")).unwrap();
    }
    let out = unifs(&lab.store(), &[&"store", &"gc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // g4 links copy 1, which has room, not a new copy.
    let s = unify_json_link_max(&lab.store(), &[], &guests[3..], 4);
    assert_eq!(s["files_linked"], 1, "{s}");
    assert_eq!(s["objects_added"], 0, "{s}");
    assert_eq!(ino(&guests[4].join("shared")), last);
    assert_verify_clean(&lab.store());
}

#[test]
fn excludes_decide_what_is_left_alone() {
    if !require_root("excludes_decide_what_is_left_alone") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    for g in [&a, &b] {
        for rel in [
            "etc/shadow",
            "var/lib/x",
            "usr/a.pyc",
            "usr/keep/k",
            "usr/plain",
            "var/keep/y",
        ] {
            file(g, rel, rel.as_bytes(), 0o644);
        }
    }
    let list = lab.dir.path().join("excludes");
    fs::write(&list, "# comment\n*.pyc\n").unwrap();
    let s = unify_json(
        &lab.store(),
        &[
            &"--exclude",
            &"/usr/keep",
            &"--exclude",
            &"+/var/keep",
            &"--exclude-from",
            &list,
            &a,
            &b,
        ],
    );
    let linked = |rel: &str| ino(&a.join(rel)) == ino(&b.join(rel));
    assert!(linked("usr/plain"));
    assert!(linked("var/keep/y"), "+ must include again: {s}");
    for rel in ["etc/shadow", "var/lib/x", "usr/a.pyc", "usr/keep/k"] {
        assert!(!linked(rel), "{rel} should be excluded");
    }
    let lab2 = Lab::new();
    let (c, d) = (lab2.guest(0), lab2.guest(1));
    for g in [&c, &d] {
        file(g, "etc/shadow", b"x", 0o644);
    }
    unify_json(&lab2.store(), &[&"--no-default-excludes", &c, &d]);
    assert_eq!(ino(&c.join("etc/shadow")), ino(&d.join("etc/shadow")));
    let bad = unifs(
        &lab2.store(),
        &[&"unify", &"--exclude-from", &"/nonexistent/list", &c],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent/list"));
}

#[test]
fn a_second_writer_gets_store_is_busy_at_once() {
    if !require_root("a_second_writer_gets_store_is_busy") {
        return;
    }
    let lab = Lab::new();
    let a = lab.guest(0);
    file(&a, "f", b"x", 0o644);
    let store = unifs::store::Store::create(&lab.store()).unwrap();
    let lock = store.lock_writer().unwrap();
    let started = Instant::now();
    let out = unifs(&lab.store(), &[&"unify", &a]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is busy"), "{err}");
    assert!(
        err.contains(&std::process::id().to_string()),
        "names the holder: {err}"
    );
    // Waiting would be for good (the lock is held until below): any
    // bound tells it, a generous one on a loaded machine too.
    assert!(started.elapsed() < Duration::from_secs(30), "it waited");
    drop(lock);
    let out = unifs(&lab.store(), &[&"unify", &a]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_file_open_for_writing_is_copied_into_the_store_not_linked() {
    if !require_root("a_file_open_for_writing") {
        return;
    }
    let lab = Lab::new();
    let (a, b, c) = (lab.guest(0), lab.guest(1), lab.guest(2));
    for g in [&a, &b, &c] {
        file(g, "log", &bytes(3, 10_000), 0o644);
    }
    let writer = fs::OpenOptions::new()
        .append(true)
        .open(a.join("log"))
        .unwrap();
    let s = unify_json(&lab.store(), &[&a, &b, &c]);
    assert_eq!(s["objects_copied"], 1, "{s}");
    assert_eq!(
        fs::metadata(a.join("log")).unwrap().nlink(),
        1,
        "the open file became an object"
    );
    // It is listed, so the run ends with status 23 (unify_json checks it).
    let problems = s["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{s}");
    assert_eq!(problems[0]["path"], a.join("log").to_str().unwrap());
    assert_eq!(ino(&b.join("log")), ino(&c.join("log")));
    drop(writer);
    assert_verify_clean(&lab.store());
}

#[test]
fn sparse_files_open_for_writing_are_left_alone_too() {
    if !require_root("sparse_files_open_for_writing_are_left_alone_too") {
        return;
    }
    // Files with holes are not read (a guest could make terabytes of
    // them): none is copied into the store, open for writing or not, and
    // each keeps its holes.
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    let len = 1 << 30;
    for g in [&a, &b] {
        sparse_file(&g.join("var-lib/disk.img"), len);
        set_mtime(&g.join("var-lib/disk.img"), MTIME);
    }
    let writer = fs::OpenOptions::new()
        .append(true)
        .open(a.join("var-lib/disk.img"))
        .unwrap();
    let s = unify_json(&lab.store(), &[&a, &b]);
    drop(writer);
    assert_eq!(s["files_sparse"], 2, "{s}");
    assert_eq!(s["objects_copied"], 0, "{s}");
    assert_eq!(s["bytes_hashed"], 0, "{s}");
    for g in [&a, &b] {
        let img = g.join("var-lib/disk.img");
        assert_eq!(fs::metadata(&img).unwrap().nlink(), 1);
        assert!(allocated(&img) < 4 << 20, "{} allocated", allocated(&img));
    }
    assert_verify_clean(&lab.store());
}

#[test]
fn guests_on_another_filesystem_are_refused_naming_both() {
    if !require_root("guests_on_another_filesystem") {
        return;
    }
    let shm = Path::new("/dev/shm");
    let lab = Lab::new();
    if fs::metadata(shm).map(|m| m.dev()).ok() == Some(fs::metadata(lab.dir.path()).unwrap().dev())
    {
        crate::common::skip(
            "guests_on_another_filesystem",
            "/dev/shm is on the temp dir's filesystem",
        );
        return;
    }
    let other = tempfile::tempdir_in(shm).unwrap();
    file(other.path(), "f", b"x", 0o644);
    let out = unifs(&lab.store(), &[&"unify", &other.path()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another filesystem"), "{err}");
    assert!(err.contains("/dev/shm"), "{err}");
}

/// Unmounts a tmpfs mounted for a test, even when the test fails.
struct TmpfsMount(PathBuf);

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_filesystem_mounted_inside_a_guest_is_not_entered() {
    if !require_root("a_filesystem_mounted_inside_a_guest") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    populate(&a, 0);
    populate(&b, 1);
    let mnt = a.join("mnt/data");
    fs::create_dir_all(&mnt).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &mnt,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let _guard = TmpfsMount(mnt.clone());
    // A duplicate of a shared file, on the mounted filesystem.
    let inside = file(&mnt, "tool", &bytes(99, 50_000), 0o755);
    let before = ino(&inside);
    let s = unify_json(&lab.store(), &[&a, &b]);
    assert_eq!(s["files_linked"], 21, "{s}");
    assert_eq!(s["problems"].as_array().unwrap().len(), 0, "{s}");
    assert_eq!(
        ino(&inside),
        before,
        "a file on another filesystem was replaced"
    );
    assert_eq!(fs::metadata(&inside).unwrap().nlink(), 1);
    // The re-run does not go there either.
    let again = unify_json(&lab.store(), &[&a, &b]);
    assert_eq!(again["files_scanned"], s["files_scanned"], "{again}");
}

#[test]
fn paranoid_mode_links_identical_files() {
    if !require_root("paranoid_mode_links_identical_files") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    populate(&a, 0);
    populate(&b, 1);
    let s = unify_json(&lab.store(), &[&"--paranoid", &a, &b]);
    assert_eq!(s["files_linked"], 21, "{s}");
}

#[test]
fn the_binary_answers_as_vunify() {
    if !require_root("the_binary_answers_as_vunify") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    populate(&a, 0);
    populate(&b, 1);
    let vunify = lab.dir.path().join("vunify");
    std::os::unix::fs::symlink(crate::common::unifs_bin(), &vunify).unwrap();
    let out = Command::new(&vunify)
        .arg("--store")
        .arg(lab.store())
        .arg("--json")
        .args([&a, &b])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["files_linked"], 21);
}

#[test]
fn an_ignore_mtime_store_shares_files_that_differ_only_in_mtime() {
    if !require_root("an_ignore_mtime_store") {
        return;
    }
    let lab = Lab::new();
    let guests: Vec<PathBuf> = (0..5).map(|i| lab.guest(i)).collect();
    for (i, g) in guests.iter().enumerate() {
        file_at(g, "f", b"same bytes\n", 0o644, MTIME + i as u64);
    }
    // The first file is held open for writing: it must be copied in, which
    // rehashes the copy under the store's rules; a low link limit makes
    // unify start extra copies, which rehash too.
    let writer = fs::OpenOptions::new()
        .append(true)
        .open(guests[0].join("f"))
        .unwrap();
    let s = unify_json_link_max(&lab.store(), &["--ignore-mtime"], &guests, 3);
    drop(writer);
    assert_eq!(s["objects_copied"], 1, "{s}");
    assert_eq!(s["files_linked"], 4, "{s}");
    assert!(s["extra_copies"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(ino(&guests[1].join("f")), ino(&guests[2].join("f")));
    assert_verify_clean(&lab.store());
    // The store keeps its rule: asking for the other one is an error.
    let c = lab.guest(9);
    file(&c, "f", b"x", 0o644);
    let out = unifs(&lab.store(), &[&"unify", &c]);
    assert!(
        out.status.success(),
        "the recorded rule applies without the flag"
    );
    let lab2 = Lab::new();
    let d = lab2.guest(0);
    file(&d, "f", b"x", 0o644);
    assert!(unifs(&lab2.store(), &[&"unify", &d]).status.success());
    let out = unifs(&lab2.store(), &[&"unify", &"--ignore-mtime", &d]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ignore-mtime"));
}

#[test]
fn overlapping_guests_and_a_store_inside_a_guest_are_refused() {
    if !require_root("overlapping_guests") {
        return;
    }
    let lab = Lab::new();
    let a = lab.guest(0);
    file(&a, "sub/f", b"x", 0o644);
    let out = unifs(&lab.store(), &[&"unify", &a, &a.join("sub")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("overlap"));
    let inside = a.join("var/lib/unifs");
    let out = unifs(&inside, &[&"unify", &a]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the store") && err.contains("overlap"),
        "{err}"
    );
    assert!(!inside.exists(), "the store was created inside the guest");
}

#[test]
fn writers_opening_guest_files_during_unify_neither_kill_it_nor_lose_writes() {
    if !require_root("writers_opening_guest_files_during_unify") {
        return;
    }
    let lab = Lab::new();
    let guests: Vec<PathBuf> = (0..3).map(|i| lab.guest(i)).collect();
    for g in &guests {
        for j in 0..800u64 {
            file(g, &format!("d{}/f{j}", j % 16), &bytes(j, 3000), 0o644);
        }
    }
    // Running guests hold the files of d0 open for writing (opened before
    // unify starts; in guest 0 they are the first instances, in guest 2
    // duplicates), and guest 0 keeps opening the others for writing, a
    // lease break for unify each time it hits a file unify holds.
    let held: Vec<(PathBuf, fs::File)> = (0..800u64)
        .filter(|k| k % 16 == 0)
        .flat_map(|k| [&guests[0], &guests[2]].map(|g| g.join(format!("d0/f{k}"))))
        .map(|path| {
            let f = fs::OpenOptions::new().append(true).open(&path).unwrap();
            (path, f)
        })
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opener = {
        let (stop, g) = (stop.clone(), guests[0].clone());
        std::thread::spawn(move || {
            let mut j = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let k = j % 800;
                if k % 16 != 0 {
                    let path = g.join(format!("d{}/f{k}", k % 16));
                    let _ = fs::OpenOptions::new().append(true).open(&path);
                }
                j += 1;
            }
        })
    };
    let out = Command::new(crate::common::unifs_bin())
        .arg("--store")
        .arg(lab.store())
        .args(["unify", "--json"])
        .args(&guests)
        .output()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    opener.join().unwrap();
    // Finished (status 0, or 23 with the files it left listed), not died.
    let s = unify_summary(&out);
    assert!(s["files_linked"].as_u64().unwrap() > 0, "{s}");
    // A file held open for writing was left as it was: what the guest writes
    // through its fd lands in its own file, and nowhere else.
    for (path, mut f) in held {
        use std::io::Write;
        assert_eq!(
            f.metadata().unwrap().ino(),
            ino(&path),
            "{} replaced while open for writing",
            path.display()
        );
        f.write_all(b"appended").unwrap();
        assert!(fs::read(&path).unwrap().ends_with(b"appended"));
        let rel = path.strip_prefix(path.ancestors().nth(2).unwrap()).unwrap();
        assert!(!fs::read(guests[1].join(rel))
            .unwrap()
            .ends_with(b"appended"));
    }
    assert_verify_clean(&lab.store());
}

/// A guest file that only looks like one of unify's temp names is the
/// guest's own: unified like any file, never removed as a leftover.
#[test]
fn a_guest_file_named_like_a_temp_name_is_kept() {
    if !require_root("a_guest_file_named_like_a_temp_name_is_kept") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    let data = bytes(5, 5_000);
    file_at(&a, "usr/tool", &data, 0o755, 1_000_000);
    file_at(&b, "usr/tool", &data, 0o755, 1_000_000);
    file_at(&b, "usr/.unifs-tmp-notes", &data, 0o755, 1_000_000);
    let s = unify_json(&lab.store(), &[&a, &b]);
    assert_eq!(s["stale_tmp_removed"], 0, "{s}");
    assert_eq!(fs::read(b.join("usr/.unifs-tmp-notes")).unwrap(), data);
    assert_eq!(
        ino(&b.join("usr/.unifs-tmp-notes")),
        ino(&a.join("usr/tool"))
    );
    assert_verify_clean(&lab.store());
}

/// A guest nesting directories very deep cannot crash unify (the walk
/// recurses a level at a time): the depth is capped and reported.
#[test]
fn very_deep_directories_are_reported_not_a_crash() {
    if !require_root("very_deep_directories_are_reported_not_a_crash") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    let data = bytes(6, 3_000);
    file(&a, "top", &data, 0o644);
    file(&b, "top", &data, 0o644);
    // 3000 levels, made a level at a time from an fd (the path is too long
    // for one call).
    let mut dir = fs::File::open(&b).unwrap();
    for _ in 0..3000 {
        let c = c"d";
        // SAFETY: a valid directory fd and NUL-terminated names.
        unsafe {
            assert_eq!(libc::mkdirat(dir.as_fd().as_raw_fd(), c.as_ptr(), 0o755), 0);
            let fd = libc::openat(
                dir.as_fd().as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY,
            );
            assert!(fd >= 0);
            dir = fs::File::from_raw_fd(fd);
        }
    }
    let s = unify_json(&lab.store(), &[&a, &b]);
    assert_eq!(s["files_linked"], 1, "{s}");
    assert!(
        s["problems"].to_string().contains("nested deeper than"),
        "{s}"
    );
    // The deep tree itself is for the guest to remove; rm -rf copes.
    let rm = Command::new("rm")
        .arg("-rf")
        .arg(b.join("d"))
        .status()
        .unwrap();
    assert!(rm.success());
}

/// Clone files unify cannot make objects (excluded, empty, a pair one guest
/// links twice) are given to every guest but the first as copies of their
/// own, pairs kept; a clone unified without its source is reported, run
/// after run, and nothing is copied unasked.
#[test]
fn clone_files_unify_cannot_share_get_copies_of_their_own() {
    if !require_root("clone_files_unify_cannot_share_get_copies") {
        return;
    }
    let lab = Lab::new();
    let a = lab.guest(0);
    file(&a, "usr/a", &bytes(1, 5_000), 0o644);
    file(&a, "usr/empty", b"", 0o644);
    file(&a, "var/log/x", b"log\n", 0o640);
    set_xattr(&a.join("var/log/x"), "user.k", b"v");
    file(&a, "etc/own", &bytes(2, 100), 0o644);
    fs::hard_link(a.join("etc/own"), a.join("etc/own2")).unwrap();
    let b = lab.dir.path().join("g1");
    let cp = Command::new("cp")
        .arg("-al")
        .arg(&a)
        .arg(&b)
        .status()
        .unwrap();
    assert!(cp.success());
    let before = [snapshot(&a), snapshot(&b)];

    // One guest alone: its files' other links are outside the run. They
    // are reported, not copied unasked, on every run until settled.
    for _ in 0..2 {
        let out = unifs(&lab.store(), &[&"unify", &"--json", &a]);
        assert_eq!(out.status.code(), Some(23));
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            s["problems"]
                .to_string()
                .contains("have links outside the guests given"),
            "{s}"
        );
        assert_eq!(s["clone_paths_split"], 0, "{s}");
    }
    assert_eq!(fs::metadata(a.join("var/log/x")).unwrap().nlink(), 2);

    // A dry run says what it would do and does nothing.
    let s = unify_json(&lab.store(), &[&"--dry-run", &a, &b]);
    assert_eq!(s["clone_paths_split"], 4, "{s}");
    assert_eq!(fs::metadata(b.join("etc/own")).unwrap().nlink(), 4);

    // Both: usr/a becomes an object; b gets its own var/log/x, usr/empty
    // and etc/own pair.
    let s = unify_json(&lab.store(), &[&a, &b]);
    assert_eq!(s["clone_paths_split"], 4, "{s}");
    assert_eq!(s["problems"].as_array().unwrap().len(), 0, "{s}");
    for rel in ["var/log/x", "usr/empty", "etc/own"] {
        assert_ne!(ino(&a.join(rel)), ino(&b.join(rel)), "{rel}");
    }
    assert_eq!(ino(&b.join("etc/own")), ino(&b.join("etc/own2")));
    assert_eq!(fs::metadata(a.join("etc/own")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(a.join("usr/a")).unwrap().nlink(), 3, "object");
    assert_invisible(&before[0], &snapshot(&a), "a");
    assert_invisible(&before[1], &snapshot(&b), "b");
    assert_verify_clean(&lab.store());
    // Nothing left to do.
    let again = unify_json(&lab.store(), &[&a, &b]);
    assert_eq!(again["clone_paths_split"], 0, "{again}");
}

/// A guest (untrusted) with many files of one size, mode, owner and mtime
/// but each of its own content: one bucket of lone ids. Each lone file is
/// left as it was and needs its content hash for its cache row. A first
/// form of 2b7c1df read each again and then scanned the whole bucket
/// (quadratic: 20,000 files took 21 s instead of 0.3 s). The bound is a
/// guard against that, far above any speed this test could be asked for.
#[test]
fn a_bucket_of_many_lone_ids_is_not_quadratic() {
    if !require_root("a_bucket_of_many_lone_ids_is_not_quadratic") {
        return;
    }
    let lab = Lab::new();
    let g = lab.guest(0);
    let n: u64 = 20_000;
    for d in 0..n / 1000 {
        fs::create_dir_all(g.join(format!("opt/d{d}"))).unwrap();
    }
    for i in 0..n {
        let p = g.join(format!("opt/d{}/f{i}", i / 1000));
        fs::write(&p, i.to_le_bytes().repeat(8)).unwrap();
        set_mtime(&p, MTIME);
    }
    let started = Instant::now();
    let s = unify_json(&lab.store(), &[&g]);
    let took = started.elapsed();
    assert_eq!(s["files_hashed"], n, "{s}");
    assert!(took < Duration::from_secs(10), "took {took:?}: {s}");
    let again = unify_json(&lab.store(), &[&g]);
    assert_eq!(again["bytes_hashed"], 0, "{again}");
}

// ---- review: bugs found ----

/// Every regular file under `root` with a single link (a guest's private
/// file, never a store object) must not carry the store marker: the mount
/// takes a marked file for shared and breaks it on the first change.
fn marked_private_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        let m = e.path().symlink_metadata().unwrap();
        if m.nlink() == 1 && unifs::store::read_marker_path(e.path()).unwrap().is_some() {
            out.push(e.path().to_path_buf());
        }
    }
    out
}

/// Guests reached through a bind mount of the store's filesystem have the
/// store's st_dev, so the same-filesystem check passes, but link(2) cannot
/// cross mounts (EXDEV). Unify then marks the first file of every group as
/// a store object (`ingest_by_link` sets the marker before it links) and
/// leaves the marker there when the link fails: every such private file is
/// taken for shared by the mount afterwards. Unify should refuse up front
/// (naming both mount points, as for another filesystem), and must never
/// leave a marker on a file that did not become an object.
#[test]
fn review_guests_behind_a_bind_mount_are_refused_and_never_marked() {
    if !require_root("review_guests_behind_a_bind_mount") {
        return;
    }
    let lab = Lab::new();
    let real = lab.dir.path().join("real");
    for i in 0..2u64 {
        populate(&real.join(format!("g{i}")), i);
    }
    let mnt = lab.dir.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    nix::mount::mount(
        Some(&real),
        &mnt,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let _guard = TmpfsMount(mnt.clone());
    let (a, b) = (mnt.join("g0"), mnt.join("g1"));
    let out = unifs(&lab.store(), &[&"unify", &"--json", &a, &b]);
    let marked = marked_private_files(&real);
    assert!(
        marked.is_empty(),
        "{} private files left marked as store objects, e.g. {:?}; exit {:?}, {}",
        marked.len(),
        marked.first(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
            .chars()
            .take(600)
            .collect::<String>()
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "not refused up front: {}",
        String::from_utf8_lossy(&out.stdout)
            .chars()
            .take(600)
            .collect::<String>()
    );
}

/// The documented catalog restore (`store snapshot`, then copy it back): an
/// object added after the snapshot whose guest paths were since replaced
/// (a package reinstalled: same bytes, mode, owner, mtime) is in the store
/// but unknown to catalog and scan. The next run's `ingest` marks the first
/// file, finds the object name taken (`Ingested::Exists`) and calls
/// `replace`, whose check sees the ctime the marker just changed: the file
/// is reported as "changed while unify ran", keeps the marker though it is
/// private, and nothing is linked (exit 23).
#[test]
fn review_an_object_the_catalog_lost_is_linked_not_reported_and_marked() {
    if !require_root("review_an_object_the_catalog_lost") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    file(&a, "own", b"a\n", 0o644);
    file(&b, "own", b"b\n", 0o644);
    unify_json(&lab.store(), &[&a, &b]);
    let snap = lab.dir.path().join("snap.db");
    let out = unifs(&lab.store(), &[&"store", &"snapshot", &snap]);
    assert!(out.status.success());
    let data = bytes(42, 20_000);
    for g in [&a, &b] {
        file(g, "usr/f", &data, 0o644);
    }
    let s = unify_json(&lab.store(), &[&a, &b]);
    assert_eq!(s["files_linked"], 1, "{s}");
    // The catalog is lost and restored from the snapshot.
    for ext in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(lab.store().join(format!("catalog.db{ext}")));
    }
    fs::copy(&snap, lab.store().join("catalog.db")).unwrap();
    // Both guests reinstall the package: new inodes, same everything.
    for g in [&a, &b] {
        file(g, "usr/.f.new", &data, 0o644);
        fs::rename(g.join("usr/.f.new"), g.join("usr/f")).unwrap();
    }
    let out = unifs(&lab.store(), &[&"unify", &"--json", &a, &b]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let marked: Vec<_> = [&a, &b]
        .iter()
        .flat_map(|g| marked_private_files(g))
        .collect();
    assert!(
        marked.is_empty(),
        "private files left marked: {marked:?}; {text}"
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(ino(&a.join("usr/f")), ino(&b.join("usr/f")), "{text}");
}

/// A host file bind-mounted into guests (a shared config file, as container
/// set-ups do with resolv.conf and the like) is a filesystem mounted inside a guest, which unify is to
/// leave alone without a word, as it does a mounted directory
/// (`a_filesystem_mounted_inside_a_guest_is_not_entered`). The walk's
/// `fstatat` crosses the mount and takes the host file for a candidate of
/// each guest; hashing then fails with EXDEV and every run lists the paths
/// as problems and exits 23.
#[test]
fn review_a_file_bind_mounted_into_guests_is_left_alone_quietly() {
    if !require_root("review_a_file_bind_mounted_into_guests") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    populate(&a, 0);
    populate(&b, 1);
    let host = file(lab.dir.path(), "host/shared.conf", b"shared = yes\n", 0o644);
    let host_ino = ino(&host);
    let mut guards = Vec::new();
    for g in [&a, &b] {
        let target = file(g, "usr/share/shared.conf", b"", 0o644);
        nix::mount::mount(
            Some(&host),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        guards.push(TmpfsMount(target));
    }
    let out = unifs(&lab.store(), &[&"unify", &"--json", &a, &b]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(ino(&host), host_ino);
    assert_eq!(fs::metadata(&host).unwrap().nlink(), 1);
    let s: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(s["files_linked"], 21, "{text}");
    assert_eq!(s["problems"].as_array().unwrap().len(), 0, "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
}

/// A hardlink shares all inode metadata, so files that differ in any of it
/// must not share an inode (DESIGN.md, "Object id"). The inode flags
/// (`chattr`: nodump, noatime, sync, …) are inode metadata the object id
/// leaves out: a guest's nodump+noatime file is replaced by a link to
/// another guest's plain object, and its flags are gone (`lsattr` inside
/// the guest shows the change; backups now dump the file).
#[test]
fn review_inode_flags_are_kept_by_unify() {
    if !require_root("review_inode_flags_are_kept_by_unify") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    let data = bytes(77, 9_000);
    file(&a, "usr/f", &data, 0o644);
    file(&b, "usr/f", &data, 0o644);
    let st = Command::new("chattr")
        .arg("+dA")
        .arg(b.join("usr/f"))
        .status()
        .unwrap();
    assert!(st.success());
    let before = [lsattr(&a.join("usr/f")), lsattr(&b.join("usr/f"))];
    assert!(before[1].contains('d'), "{before:?}");
    let s = unify_json(&lab.store(), &[&a, &b]);
    let after = [lsattr(&a.join("usr/f")), lsattr(&b.join("usr/f"))];
    assert_eq!(before, after, "inode flags changed; {s}");
    assert_eq!(s["files_with_inode_flags"], 1, "{s}");
    assert_ne!(ino(&a.join("usr/f")), ino(&b.join("usr/f")));
}

/// Guest names need not be UTF-8 (invariant 3 covers every path). A
/// problem about such a path (here: a file open for writing) must not stop
/// `unify --json` from printing its summary, which it promises "whatever
/// the exit status" (docs/unify.md): serde refuses a non-UTF-8 PathBuf.
#[test]
fn review_json_summary_survives_a_non_utf8_problem_path() {
    if !require_root("review_json_summary_survives_a_non_utf8_problem_path") {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    let name = std::ffi::OsStr::from_bytes(b"usr/caf\xe9.log");
    let data = bytes(12, 7_000);
    for g in [&a, &b] {
        fs::create_dir_all(g.join("usr")).unwrap();
        fs::write(g.join(name), &data).unwrap();
        set_mtime(&g.join(name), MTIME);
    }
    let writer = fs::OpenOptions::new()
        .append(true)
        .open(a.join(name))
        .unwrap();
    let out = unifs(&lab.store(), &[&"unify", &"--json", &a, &b]);
    drop(writer);
    let s: Result<serde_json::Value, _> = serde_json::from_slice(&out.stdout);
    assert!(
        s.is_ok(),
        "no JSON summary (exit {:?}): stdout {:?} stderr {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(23));
}

/// A guest named by a symlink: a new store is checked against the
/// directory the guest really is, not the filesystem the symlink lies on.
/// (Before, `check_same_fs_as_new_store` took the `lstat` of the name as
/// given: a guest on the store's filesystem named through a symlink on
/// another was refused as "on another filesystem", and a guest on another
/// filesystem named through a symlink on the store's got a store and a
/// catalog made before it was refused, which a refused command must not.)
#[test]
fn review2_a_guest_named_by_a_symlink_is_checked_where_it_really_is() {
    if !require_root("review2_a_guest_named_by_a_symlink") {
        return;
    }
    let shm = Path::new("/dev/shm");
    let lab = Lab::new();
    if fs::metadata(shm).map(|m| m.dev()).ok() == Some(fs::metadata(lab.dir.path()).unwrap().dev())
    {
        crate::common::skip(
            "review2_a_guest_named_by_a_symlink",
            "/dev/shm is on the temp dir's filesystem",
        );
        return;
    }
    // A guest on the store's filesystem, named through a symlink on another.
    let (a, b) = (lab.guest(0), lab.guest(1));
    let data = bytes(5, 6_000);
    file(&a, "usr/f", &data, 0o644);
    file(&b, "usr/f", &data, 0o644);
    let links = tempfile::tempdir_in(shm).unwrap();
    let via = links.path().join("g0");
    std::os::unix::fs::symlink(&a, &via).unwrap();
    let s = unify_json(&lab.store(), &[&via, &b]);
    assert_eq!(s["files_linked"], 1, "{s}");
    assert_eq!(ino(&a.join("usr/f")), ino(&b.join("usr/f")));

    // A guest on another filesystem, named through a symlink on the
    // store's: refused, and no store is made.
    let other = tempfile::tempdir_in(shm).unwrap();
    file(other.path(), "f", b"x", 0o644);
    let link = lab.dir.path().join("elsewhere");
    std::os::unix::fs::symlink(other.path(), &link).unwrap();
    let store2 = lab.dir.path().join("store2");
    let out = unifs(&store2, &[&"unify", &link]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another filesystem"), "{err}");
    assert!(!store2.exists(), "a refused command made a store: {err}");
}

/// `lsattr` flags of an object can be changed by the host (a `chattr` on a
/// guest path of the backing tree, which is the object's inode): a flag the
/// object id does not cover. `store verify` must report it, and unify must
/// not link more guest files to it (they would get the flag: invariant 3).
#[test]
fn review2_an_object_with_inode_flags_is_reported_and_not_linked_to() {
    if !require_root("review2_an_object_with_inode_flags") {
        return;
    }
    let lab = Lab::new();
    let (a, b, c) = (lab.guest(0), lab.guest(1), lab.guest(2));
    let data = bytes(78, 9_000);
    for g in [&a, &b, &c] {
        file(g, "usr/f", &data, 0o644);
    }
    let s = unify_json(&lab.store(), &[&a, &b]);
    assert_eq!(s["files_linked"], 1, "{s}");
    // The host marks one guest's file "no dump": the object's inode.
    let st = Command::new("chattr")
        .arg("+d")
        .arg(a.join("usr/f"))
        .status()
        .unwrap();
    assert!(st.success());
    let out = unifs(&lab.store(), &[&"store", &"verify"]);
    assert!(
        !out.status.success(),
        "verify missed an object with inode flags: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let before = lsattr(&c.join("usr/f"));
    let out = unifs(&lab.store(), &[&"unify", &"--json", &a, &b, &c]);
    let after = lsattr(&c.join("usr/f"));
    assert_eq!(
        before,
        after,
        "a guest file got the object's flags: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_ne!(ino(&a.join("usr/f")), ino(&c.join("usr/f")));
}

/// unify tells a user who is not root to `--dry-run` instead. Such a dry
/// run must read the files it may read: before, every file of another
/// owner failed with "Operation not permitted" (O_NOATIME is for the
/// file's owner or root only), and the dry run reported nothing to save.
#[test]
fn review2_a_dry_run_by_another_user_reads_what_it_may() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !require_root("review2_a_dry_run_by_another_user") {
        return;
    }
    let lab = Lab::new();
    fs::set_permissions(lab.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (a, b) = (lab.guest(0), lab.guest(1));
    let data = bytes(31, 8_000);
    for g in [&a, &b] {
        file(g, "usr/f", &data, 0o644);
    }
    let before = [snapshot(&a), snapshot(&b)];
    let out = Command::new(crate::common::unifs_bin())
        .arg("--store")
        .arg(lab.store())
        .args(["unify", "--dry-run", "--json"])
        .arg(&a)
        .arg(&b)
        .uid(65534)
        .gid(65534)
        .env_remove("UNIFS_TEST_LINK_MAX")
        .output()
        .unwrap();
    let s = unify_summary(&out);
    assert_eq!(s["files_linked"], 1, "{s}");
    assert_eq!(s["problems"].as_array().map(Vec::len), Some(0), "{s}");
    assert_invisible(&before[0], &snapshot(&a), "g0");
    assert_invisible(&before[1], &snapshot(&b), "g1");
    assert!(!lab.store().exists());
}

/// A guest directory that is append-only (`chattr +a`: names can be added,
/// none removed or renamed) or immutable. Linking a file in it swaps a
/// temp name with the file and removes the temp name: in an append-only
/// directory the link succeeds but the swap and the removal fail, which
/// left a `.unifs-tmp-*` link to the object in the guest for good (the
/// guest cannot remove it either) and the directory with a new mtime that
/// cannot be put back (invariant 3). Such a directory's files are left as
/// they are, and no temp name is ever made in it.
#[test]
fn review_s8_files_in_an_append_only_or_immutable_directory_are_left_alone() {
    if !require_root("review_s8_files_in_an_append_only_or_immutable_directory_are_left_alone") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    let data = bytes(81, 7_000);
    for g in [&a, &b] {
        for d in ["usr/app", "usr/imm"] {
            file(g, &format!("{d}/f"), &data, 0o644);
        }
    }
    let _unflag = Unflag(vec![b.join("usr/app"), b.join("usr/imm")]);
    chattr("+a", &b.join("usr/app"));
    chattr("+i", &b.join("usr/imm"));
    set_dir_mtimes(&a, MTIME);
    let before = snapshot(&b);
    let out = unifs(&lab.store(), &[&"unify", &"--json", &a, &b]);
    let s = unify_summary(&out);
    assert_invisible(&before, &snapshot(&b), "append-only/immutable directories");
    for d in ["usr/app", "usr/imm"] {
        assert_ne!(ino(&a.join(d).join("f")), ino(&b.join(d).join("f")), "{d}");
    }
    let problems = s["problems"].to_string();
    assert!(
        problems.contains("append-only") && problems.contains("immutable"),
        "{s}"
    );
    assert_verify_clean(&lab.store());
}

/// The same for a clone's pair that unify gives a copy of its own (see
/// clone_files_unify_cannot_share_get_copies_of_their_own), one of its
/// names in an append-only directory: the copy went to the first name,
/// the second could not be swapped, so the guest's pair was split and a
/// temp name was left. All of the pair's names are checked before any is
/// swapped: the pair stays shared, and is reported.
#[test]
fn review_s8_a_clone_pair_with_a_name_in_an_append_only_directory_stays_whole() {
    if !require_root("review_s8_a_clone_pair_with_a_name_in_an_append_only_directory") {
        return;
    }
    let lab = Lab::new();
    let a = lab.guest(0);
    file(&a, "etc/own", &bytes(3, 100), 0o644);
    fs::create_dir_all(a.join("lib")).unwrap();
    fs::hard_link(a.join("etc/own"), a.join("lib/own2")).unwrap();
    let b = lab.dir.path().join("g1");
    let cp = Command::new("cp")
        .arg("-al")
        .arg(&a)
        .arg(&b)
        .status()
        .unwrap();
    assert!(cp.success());
    let _unflag = Unflag(vec![b.join("lib")]);
    chattr("+a", &b.join("lib"));
    let before = snapshot(&b);
    let out = unifs(&lab.store(), &[&"unify", &"--json", &a, &b]);
    let s = unify_summary(&out);
    assert_invisible(
        &before,
        &snapshot(&b),
        "clone with an append-only directory",
    );
    assert!(s["problems"].to_string().contains("append-only"), "{s}");
}

/// Opens `names` one at a time from `root` (the path is too long for one
/// call), creating the directories if `make`.
fn open_deep(root: &Path, names: &[String], make: bool) -> fs::File {
    let mut dir = fs::File::open(root).unwrap();
    for n in names {
        let c = std::ffi::CString::new(n.as_str()).unwrap();
        // SAFETY: a valid directory fd and a NUL-terminated name.
        unsafe {
            if make {
                assert_eq!(libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755), 0);
            }
            let fd = libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY,
            );
            assert!(fd >= 0);
            dir = fs::File::from_raw_fd(fd);
        }
    }
    dir
}

/// The file `name` in the open directory `dir`: (inode, links, bytes).
fn file_in(dir: &fs::File, name: &str) -> (u64, u64, Vec<u8>) {
    let f = fs::File::open(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd())).unwrap();
    let m = f.metadata().unwrap();
    (
        m.ino(),
        m.nlink(),
        fs::read(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap(),
    )
}

/// Guest paths longer than PATH_MAX (4096 bytes: 25 directories of 200-byte
/// names, as deep node_modules or generated trees reach) were walked, but
/// hashing and linking opened a file by its whole path from the guest root
/// in one call: ENAMETOOLONG, so such files were never shared and every
/// run exited 23 with "File name too long". They are opened a part of the
/// path at a time, and linked like any other. Since s21 a path of 4096
/// bytes or more in the guest is left alone, reported (restore could not
/// rebuild it: review_s21_deep); here 20 levels, 4021 bytes in the guest,
/// over 4096 with the guest's path in front.
#[test]
fn review_s8_files_below_a_path_longer_than_path_max_are_linked() {
    if !require_root("review_s8_files_below_a_path_longer_than_path_max_are_linked") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    let names: Vec<String> = (0..20)
        .map(|i| format!("{i:02}{}", "d".repeat(198)))
        .collect();
    let data = bytes(9, 6_000);
    for g in [&a, &b] {
        let dir = open_deep(g, &names, true);
        let path = format!("/proc/self/fd/{}/f", dir.as_raw_fd());
        fs::write(&path, &data).unwrap();
        set_mtime(Path::new(&path), MTIME);
        let t = libc::timespec {
            tv_sec: MTIME as i64,
            tv_nsec: 0,
        };
        // SAFETY: a valid fd and two initialised timespecs.
        assert_eq!(
            unsafe { libc::futimens(dir.as_raw_fd(), [t, t].as_ptr()) },
            0
        );
    }
    let s = unify_json(&lab.store(), &[&a, &b]);
    assert_eq!(s["problems"].as_array().unwrap().len(), 0, "{s}");
    assert_eq!(s["files_linked"], 1, "{s}");
    let (da, db) = (open_deep(&a, &names, false), open_deep(&b, &names, false));
    let (fa, fb) = (file_in(&da, "f"), file_in(&db, "f"));
    assert_eq!(fa.0, fb.0, "not linked");
    assert_eq!((fa.1, &fb.2), (3, &data));
    for d in [da, db] {
        assert_eq!(d.metadata().unwrap().mtime() as u64, MTIME, "dir mtime");
    }
    assert_verify_clean(&lab.store());
}

/// A guest's own file named exactly as unify names its temp links
/// (`.unifs-tmp-PID-SEQ`), with the content and metadata of an object, was
/// taken for a killed run's leftover and removed (the path was gone from
/// the guest). A plain file a killed run left (the original swapped out,
/// not yet unlinked) looks the same: only a directory the killed run of
/// that pid recorded changing holds leftovers.
#[test]
fn review_s8_a_guest_file_named_exactly_like_a_temp_name_is_kept() {
    if !require_root("review_s8_a_guest_file_named_exactly_like_a_temp_name_is_kept") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    let data = bytes(5, 5_000);
    file(&a, "usr/tool", &data, 0o755);
    file(&b, "usr/tool", &data, 0o755);
    unify_json(&lab.store(), &[&a, &b]);
    file(&b, "usr/.unifs-tmp-1-1", &data, 0o755);
    let before = snapshot(&b);
    let s = unify_json(&lab.store(), &[&a, &b]);
    assert_eq!(s["stale_tmp_removed"], 0, "{s}");
    assert_invisible(
        &before,
        &snapshot(&b),
        "a guest file named like a temp name",
    );
}

#[test]
fn a_guests_file_names_never_reach_the_terminal_raw() {
    if !require_root("a_guests_file_names_never_reach_the_terminal_raw") {
        return;
    }
    // A name that forges a line of output and turns the terminal red.
    let lab = Lab::new();
    let name = "evil\nunifs: all good\x1b[31mRED";
    let guests = [lab.guest(0), lab.guest(1)];
    for g in &guests {
        // One mtime for both copies: written a clock tick apart, they would
        // differ in it and never be linked (this test once failed so).
        file(&g.join("d"), name, b"same content\n", 0o644);
    }
    let raw = |text: &str| text.contains('\x1b') || text.contains("\nunifs: all good");
    // unify's warning: an append-only directory is left alone.
    let chattr = |flag: &str| {
        for g in &guests {
            let ok = Command::new("chattr").arg(flag).arg(g.join("d")).status();
            assert!(ok.unwrap().success(), "chattr {flag}");
        }
    };
    chattr("+a");
    let o = unifs(&lab.store(), &[&"unify", &guests[0], &guests[1]]);
    chattr("-a");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("append-only"), "{err}");
    assert!(!raw(&err), "{err}");
    assert!(err.contains("evil\\nunifs: all good\\x1b[31mRED"), "{err}");
    // store verify names the paths that link a damaged object.
    let o = unifs(&lab.store(), &[&"unify", &guests[0], &guests[1]]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let object = fs::read_dir(lab.store().join("objects"))
        .unwrap()
        .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    // Through the guest's path: the object file itself is read-only.
    fs::set_permissions(&object, fs::Permissions::from_mode(0o600)).unwrap();
    let o = unifs(&lab.store(), &[&"store", &"verify"]);
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("BAD") && out.contains("evil\\n"), "{out}");
    assert!(!raw(&out), "{out}");
}

#[test]
fn a_file_a_running_guest_deletes_during_unify_is_no_problem() {
    if !require_root("a_file_a_running_guest_deletes_during_unify_is_no_problem") {
        return;
    }
    // Two identical files: hashing one takes a while; when unify opens the
    // first of them, the "guest" deletes the other, which unify then finds
    // gone (when it hashes it, or when it links it).
    let lab = Lab::new();
    let g = lab.guest(0);
    let data: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    let files = [g.join("a"), g.join("b")];
    let mtime = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for f in &files {
        fs::write(f, &data).unwrap();
        // One mtime: files that differ in it never share an object, and
        // are not even hashed.
        fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
    // SAFETY: plain syscalls on an fd this test owns.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    assert!(fd >= 0);
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let wds: Vec<i32> = files
        .iter()
        .map(|f| {
            let c = std::ffi::CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: `c` is NUL-terminated; `fd` is an inotify fd.
            unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_OPEN) }
        })
        .collect();
    assert!(wds.iter().all(|&w| w >= 0));
    let deleter = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 16 {
                let wd = i32::from_ne_bytes(buf[..4].try_into().unwrap());
                let other = if wd == wds[0] { &files[1] } else { &files[0] };
                fs::remove_file(other).unwrap();
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    });
    let o = unifs(&lab.store(), &[&"unify", &"--json", &g]);
    assert!(deleter.join().unwrap(), "unify never opened either file");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["files_gone"], 1, "{s}");
    assert_eq!(s["problems"], serde_json::json!([]), "{s}");
}

#[test]
fn a_cp_a_copy_of_a_unified_guest_gets_its_files_linked_to_the_objects() {
    if !require_root("a_cp_a_copy_of_a_unified_guest_gets_its_files_linked_to_the_objects") {
        return;
    }
    // `cp -a` of a unified guest keeps the links among its paths and the
    // store marker: two paths of one object became one inode of the copy,
    // marked but no object. Unify left them as a "guest hardlink group"
    // for good; the mount (rightly) shows them as two files.
    let lab = Lab::new();
    let (g0, g1) = (lab.guest(0), lab.guest(1));
    let data = vec![7u8; 50_000];
    for p in [g0.join("a"), g0.join("b"), g1.join("a")] {
        fs::write(&p, &data).unwrap();
        let mtime = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
    unify_json(&lab.store(), &[&g0, &g1]);
    let copy = lab.dir.path().join("g2");
    let ok = Command::new("cp")
        .arg("-a")
        .arg(&g0)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(ok.success());
    assert_eq!(ino(&copy.join("a")), ino(&copy.join("b")));
    assert_ne!(ino(&copy.join("a")), ino(&g0.join("a")));
    let before = snapshot(&copy);
    let s = unify_json(&lab.store(), &[&g0, &g1, &copy]);
    assert_eq!(s["guest_hardlinks_left"], 0, "{s}");
    assert_eq!(s["files_linked"], 2, "{s}");
    assert_eq!(s["objects_added"], 0, "{s}");
    for p in ["a", "b"] {
        assert_eq!(ino(&copy.join(p)), ino(&g0.join("a")), "{p}");
    }
    assert_eq!(snapshot(&copy), before);
    let o = unifs(&lab.store(), &[&"store", &"verify"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn guests_copied_together_or_unified_into_another_store_get_no_hardlinks_of_their_own() {
    if !require_root("guests_copied_together_or_unified_into_another_store") {
        return;
    }
    // `cp -a` of several unified guests in one go keeps every link among
    // them: one marked inode per object, linked twice by each guest. Unify
    // took it for a cloned hardlink pair and gave each guest a copy linked
    // to both paths: `/etc/motd` and `/usr/share/base-files/motd` became
    // one file (a write to one showed in the other), where the mount had
    // shown two. The same guests unified into a second store were told
    // their files had links outside the run (store A's), exit 23 for good.
    let lab = Lab::new();
    let data = vec![9u8; 40_000];
    let mtime = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let originals = [lab.guest(0), lab.guest(1)];
    for g in &originals {
        for p in [g.join("motd"), g.join("base-motd")] {
            fs::write(&p, &data).unwrap();
            let f = fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(mtime).unwrap();
        }
    }
    unify_json(&lab.store(), &[&originals[0], &originals[1]]);
    let object = ino(&originals[0].join("motd"));
    let copies = lab.dir.path().join("copies");
    fs::create_dir(&copies).unwrap();
    let ok = Command::new("cp")
        .arg("-a")
        .args(&originals)
        .arg(&copies)
        .status()
        .unwrap();
    assert!(ok.success());
    let copied = [copies.join("g0"), copies.join("g1")];
    assert_eq!(
        ino(&copied[0].join("motd")),
        ino(&copied[1].join("base-motd"))
    );
    let s = unify_json(&lab.store(), &[&copied[0], &copied[1]]);
    assert_eq!(s["clone_paths_split"], 0, "{s}");
    assert_eq!(s["files_linked"], 4, "{s}");
    for g in &copied {
        for p in ["motd", "base-motd"] {
            assert_eq!(ino(&g.join(p)), object, "{}", g.join(p).display());
        }
    }

    // Into another store: store 1's objects/ link is outside the run. The
    // inode (its marker is its id, no store's) is the second store's
    // object too.
    let other = lab.dir.path().join("store2");
    // Made on purpose first: a unify that would make it refuses such
    // guests (review_s20_store).
    init_store(&other);
    let s = unify_json(&other, &[&originals[0], &originals[1]]);
    assert_eq!(s["problems"], serde_json::json!([]), "{s}");
    let notices = s["notices"].as_array().unwrap();
    assert_eq!(notices.len(), 1, "{s}");
    assert!(notices[0]["what"]
        .as_str()
        .unwrap()
        .contains("another store"));
    assert_eq!(s["objects_added"], 1, "{s}");
    let objects: Vec<_> = walkdir::WalkDir::new(other.join("objects"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .collect();
    assert_eq!(objects.len(), 1);
    assert_eq!(ino(objects[0].path()), object);
    for g in &originals {
        for p in ["motd", "base-motd"] {
            assert_eq!(ino(&g.join(p)), object, "{}", g.join(p).display());
        }
    }
    for store in [lab.store(), other] {
        let o = unifs(&store, &[&"store", &"verify"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
}

#[test]
fn sparse_files_are_left_alone_unread() {
    if !require_root("sparse_files_are_left_alone_unread") {
        return;
    }
    // A guest's `truncate -s 4G` twice (free to make) took 23 s of reading
    // holes, again whenever it touched them, and reported 4 GiB "saved".
    let lab = Lab::new();
    let guests = [lab.guest(0), lab.guest(1)];
    let mtime = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for g in &guests {
        let sparse = fs::File::create(g.join("sparse")).unwrap();
        sparse.set_len(1 << 33).unwrap();
        sparse.set_modified(mtime).unwrap();
        fs::write(g.join("plain"), vec![3u8; 10_000]).unwrap();
        let plain = fs::File::options()
            .write(true)
            .open(g.join("plain"))
            .unwrap();
        plain.set_modified(mtime).unwrap();
    }
    let s = unify_json(&lab.store(), &[&guests[0], &guests[1]]);
    assert_eq!(s["files_sparse"], 2, "{s}");
    assert_eq!(s["files_linked"], 1, "{s}");
    assert!(s["bytes_hashed"].as_u64().unwrap() < 1 << 20, "{s}");
    assert_eq!(ino(&guests[0].join("plain")), ino(&guests[1].join("plain")));
    assert_ne!(
        ino(&guests[0].join("sparse")),
        ino(&guests[1].join("sparse"))
    );
}

#[test]
fn a_mounts_break_temp_files_are_left_alone() {
    if !require_root("a_mounts_break_temp_files_are_left_alone") {
        return;
    }
    // A killed daemon's copy in progress carries the mount's mark; made an
    // object, it spread the mark to another guest's file of the same
    // content, which that guest's mount then took for its own leftover
    // and removed.
    let lab = Lab::new();
    let (g0, g1) = (lab.guest(0), lab.guest(1));
    let data = vec![9u8; 30_000];
    let mtime = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let leftover = g0.join(".unifs-break.999999.3");
    let own = g1.join(".unifs-break.1.1");
    for p in [&leftover, &own, &g1.join("plain")] {
        fs::write(p, &data).unwrap();
        fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
    set_xattr(&leftover, "trusted.unifs.break", b"");
    // A guest's own hardlink by such a name (the mount allows it): its
    // group, as any other, not a link "outside the guests".
    fs::write(g1.join("conf"), b"conf").unwrap();
    fs::hard_link(g1.join("conf"), g1.join(".unifs-break.9.9")).unwrap();
    let before = ino(&leftover);
    let s = unify_json(&lab.store(), &[&g0, &g1]);
    assert_eq!(s["problems"], serde_json::json!([]), "{s}");
    assert_eq!(s["guest_hardlinks_left"], 2, "{s}");
    assert_eq!(ino(&leftover), before);
    assert_eq!(
        fs::metadata(&leftover).unwrap().nlink(),
        1,
        "made an object"
    );
    // The unmarked one is an ordinary file: unified with its twin.
    assert_eq!(ino(&own), ino(&g1.join("plain")));
    let c = std::ffi::CString::new(own.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is NUL-terminated; a size of 0 asks for the length only.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.unifs.break".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    assert_eq!(n, -1, "the mark reached another guest's file");
}

/// `prlimit --nofile=N:N unifs --store STORE ARGS`.
fn unify_at_fd_limit(limit: u32, store: &Path, args: &[&Path]) -> std::process::Output {
    Command::new("prlimit")
        .arg(format!("--nofile={limit}:{limit}"))
        .arg(crate::common::unifs_bin())
        .arg("--store")
        .arg(store)
        .args(["unify", "--no-progress"])
        .args(args)
        .env_remove("UNIFS_TEST_LINK_MAX")
        .output()
        .expect("prlimit (util-linux)")
}

/// More guests than the open-file limit leaves room for: unify stopped
/// with a bare "guest directory …/g01012: Too many open files", blaming a
/// guest with nothing wrong. It now refuses at the start with the limit and
/// what to do, changing nothing (named guests, and `--all`'s from the
/// catalog).
#[test]
fn more_guests_than_the_open_file_limit_allows_are_refused_saying_so() {
    if !require_root("more_guests_than_the_open_file_limit_allows") {
        return;
    }
    let lab = Lab::new();
    let guests: Vec<PathBuf> = (0..300).map(|i| lab.guest(i)).collect();
    for g in &guests {
        file(g, "etc/a", b"same\n", 0o644);
    }
    let args: Vec<&Path> = guests.iter().map(|g| g.as_path()).collect();
    let refused = |out: &std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("300 guests need about")
                && err.contains("the open-file limit is 256")
                && err.contains("ulimit -n")
                && err.contains("fewer guests per run")
                && !err.contains("Too many open files"),
            "{err}"
        );
    };
    refused(&unify_at_fd_limit(256, &lab.store(), &args));
    assert!(!lab.store().exists(), "a refused run made the store");

    // The catalog's guests, with --all (recorded by runs of 100 guests
    // each): refused too, with no run recorded.
    for chunk in args.chunks(100) {
        let mut cmd: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"unify", &"--json"];
        cmd.extend(chunk.iter().map(|p| p as &dyn AsRef<std::ffi::OsStr>));
        unify_summary(&unifs(&lab.store(), &cmd));
    }
    let runs = || {
        let o = unifs(&lab.store(), &[&"store", &"runs", &"--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_array().unwrap().len()
    };
    assert_eq!(runs(), 3);
    refused(&unify_at_fd_limit(256, &lab.store(), &[Path::new("--all")]));
    assert_eq!(runs(), 3, "a refused run was recorded");
}

/// The text summary named every guest on its first line (4,000 guests: a
/// 32 KB line); it names a few and counts the rest, and `--json` still
/// lists them all.
#[test]
fn the_text_summary_names_a_few_guests_and_counts_the_rest() {
    if !require_root("the_text_summary_names_a_few_guests") {
        return;
    }
    let lab = Lab::new();
    let guests: Vec<PathBuf> = (0..7).map(|i| lab.guest(i)).collect();
    for g in &guests {
        file(g, "etc/a", b"same\n", 0o644);
    }
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"unify", &"--no-progress"];
    args.extend(guests.iter().map(|g| g as &dyn AsRef<std::ffi::OsStr>));
    let out = unifs(&lab.store(), &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("unify: 7 guests (g0, g1, g2 and 4 more), "),
        "{text}"
    );
    args[1] = &"--json";
    let s = unify_summary(&unifs(&lab.store(), &args));
    assert_eq!(s["guests"].as_array().unwrap().len(), 7, "{s}");
}
