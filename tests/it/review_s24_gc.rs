//! Stores and guests moved and copied around (session 24): gc and a store
//! put back from a backup, "bytes saved" after a copy, a store moved during
//! a unify, and the messages for a store behind a dangling symlink or a
//! bind mount.

use crate::common::{require_root, unifs_bin};
use crate::tree::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Three guests with `n` files each, the same in every guest, unified.
fn three_guests_unified(root: &Path, n: usize) -> (PathBuf, Vec<PathBuf>) {
    let store = root.join("st");
    let guests: Vec<_> = ["a", "b", "c"].iter().map(|g| root.join(g)).collect();
    for g in &guests {
        for i in 0..n {
            file_at(
                g,
                &format!("usr/lib/lib{i}.so"),
                &bytes(i as u64, 3000),
                0o644,
                1_700_000_000,
            );
        }
    }
    let s = unify_json(&store, &[&guests[0], &guests[1], &guests[2]]);
    assert_eq!(s["files_linked"], 2 * n, "{s}");
    (store, guests)
}

fn tar(args: &[&dyn AsRef<std::ffi::OsStr>]) {
    let mut cmd = Command::new("tar");
    cmd.args(["--xattrs", "--xattrs-include=*"]);
    for a in args {
        cmd.arg(a.as_ref());
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "tar: {}", stderr(&out));
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn object_of(store: &Path, guest_file: &Path) -> PathBuf {
    let id = unifs::store::read_marker_path(guest_file)
        .unwrap()
        .expect("a marked guest file")
        .to_hex();
    store.join("objects").join(&id[..2]).join(&id[2..])
}

fn catalog_objects(store: &Path) -> i64 {
    rusqlite::Connection::open(store.join("catalog.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM object_files", [], |r| r.get(0))
        .unwrap()
}

/// One object file put back from objects.tar (tar without
/// --skip-old-files): the store name is a new inode, the three guests
/// still link the old one. gc took the catalog to the new inode, then
/// removed it as linked by no guest: the object left the store and the
/// catalog, and verify said nothing. Now gc gives the store name back to
/// the inode the guests link (the copy is freed), and its dry run removes
/// nothing either.
#[test]
fn review_s24_gc_keeps_an_object_put_back_while_guests_link_its_old_inode() {
    if !require_root("review_s24_gc_keeps_an_object_put_back_while_guests_link_its_old_inode") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, guests) = three_guests_unified(dir.path(), 5);
    let objects_tar = dir.path().join("objects.tar");
    tar(&[&"-C", &store, &"-cf", &objects_tar, &"objects"]);
    let guest_file = guests[0].join("usr/lib/lib3.so");
    let object = object_of(&store, &guest_file);
    let rel = object.strip_prefix(&store).unwrap().to_path_buf();
    let old = ino(&guest_file);
    assert_eq!(ino(&object), old);
    tar(&[&"-xpf", &objects_tar, &"-C", &store, &rel]);
    assert_ne!(ino(&object), old, "tar gave the object file a new inode");
    let before = catalog_objects(&store);

    let dry = unifs(&store, &[&"store", &"gc", &"--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        !stdout(&dry).contains("would remove /"),
        "the dry run would remove an object guests link: {}",
        stdout(&dry)
    );
    let out = unifs(&store, &[&"store", &"gc", &"--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let gc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(gc["objects_removed"], 0, "{gc}");
    assert!(object.exists(), "gc removed the object: {gc}");
    assert_eq!(
        ino(&object),
        old,
        "the store name is the guests' inode again: {gc}"
    );
    assert_eq!(fs::metadata(&object).unwrap().nlink(), 4, "{gc}");
    assert_eq!(catalog_objects(&store), before, "{gc}");
    assert_verify_clean(&store);
    // A second gc has nothing to do, and unify finds every path linked.
    let again = unifs(&store, &[&"store", &"gc", &"--json"]);
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["objects_removed"], 0, "{again}");
    let s = unify_json(&store, &[&"--all"]);
    assert_eq!(s["files_linked"], 0, "{s}");
}

/// docs/backup.md case B with the guests intact: objects.tar and the
/// catalog snapshot put back into an empty store directory. gc (before
/// any unify) renumbered every object and removed each as unused: the
/// store ended empty while every guest still shared the old inodes.
#[test]
fn review_s24_gc_before_unify_keeps_a_restored_store() {
    if !require_root("review_s24_gc_before_unify_keeps_a_restored_store") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let n = 6;
    let (store, guests) = three_guests_unified(dir.path(), n);
    let bk = dir.path().join("bk");
    fs::create_dir(&bk).unwrap();
    let snap = unifs(&store, &[&"store", &"snapshot", &bk.join("catalog.db")]);
    assert!(snap.status.success(), "{}", stderr(&snap));
    tar(&[&"-C", &store, &"-cf", &bk.join("objects.tar"), &"objects"]);
    fs::remove_dir_all(&store).unwrap();
    fs::create_dir(&store).unwrap();
    tar(&[&"-xpf", &bk.join("objects.tar"), &"-C", &store]);
    fs::copy(bk.join("catalog.db"), store.join("catalog.db")).unwrap();

    let dry = unifs(&store, &[&"store", &"gc", &"--dry-run", &"--json"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let dry: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(dry["objects_removed"], 0, "{dry}");
    let out = unifs(&store, &[&"store", &"gc", &"--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let gc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(gc["objects_removed"], 0, "{gc}");
    for i in 0..n {
        let f = guests[0].join(format!("usr/lib/lib{i}.so"));
        let object = object_of(&store, &f);
        assert!(object.exists(), "gc removed {}: {gc}", object.display());
        assert_eq!(ino(&object), ino(&f), "{gc}");
        assert_eq!(fs::metadata(&f).unwrap().nlink(), 4, "{gc}");
    }
    assert_eq!(catalog_objects(&store), n as i64);
    assert_verify_clean(&store);
}

/// Guests copied apart from their store (`rsync -aH` of the guests alone):
/// a shared file is one inode across the guests, not the store's. unify
/// links each path back to the object and counted every path's size as
/// saved, though the paths shared one inode (3x what it freed; its own
/// dry run said the right figure). A path whose inode keeps a name
/// outside the store frees nothing (the dry run counted it).
#[test]
fn review_s24_bytes_saved_counts_each_freed_inode_once() {
    if !require_root("review_s24_bytes_saved_counts_each_freed_inode_once") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, guests) = three_guests_unified(dir.path(), 2);
    // lib0.so: one new inode, the same content, linked by all three guests.
    let f0 = guests[0].join("usr/lib/lib0.so");
    let copy = dir.path().join("lib0.copy");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&f0)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    for g in &guests {
        let p = g.join("usr/lib/lib0.so");
        fs::remove_file(&p).unwrap();
        fs::hard_link(&copy, &p).unwrap();
    }
    fs::remove_file(&copy).unwrap();
    // lib1.so of guest a: its own copy, with one more name outside any guest.
    let f1 = guests[0].join("usr/lib/lib1.so");
    let outside = dir.path().join("lib1.outside");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&f1)
        .arg(&outside)
        .status()
        .unwrap();
    assert!(st.success());
    fs::remove_file(&f1).unwrap();
    fs::hard_link(&outside, &f1).unwrap();

    let dry = unify_json(&store, &[&"--dry-run", &"--all"]);
    assert_eq!(dry["bytes_saved"], 3000, "{dry}");
    let s = unify_json(&store, &[&"--all"]);
    assert_eq!(s["files_linked"], 4, "{s}");
    assert_eq!(
        s["bytes_saved"], 3000,
        "one inode of 3000 bytes was freed (dry run: {dry}): {s}"
    );
    assert_eq!(fs::metadata(&outside).unwrap().nlink(), 1);
    assert_verify_clean(&store);
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// A unify kills its child on drop if it is still running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The store moved (mv, same filesystem) while a unify ran: the run went
/// on in the moved store, but at its end made STORE/cache/ again at the
/// old path (its listings saved by path), a stray directory that is no
/// store (`store init` then refuses it as not empty).
#[test]
fn review_s24_a_store_moved_during_unify_gets_no_cache_dir_at_its_old_path() {
    if !require_root("review_s24_a_store_moved_during_unify_gets_no_cache_dir_at_its_old_path") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let n = 40;
    for g in ["a", "b"] {
        for i in 0..n {
            file_at(
                &root.join(g),
                &format!("usr/d/f{i}"),
                &bytes(i, 1000),
                0o644,
                1_700_000_000,
            );
        }
    }
    let store = root.join("st");
    init_store(&store);
    let mut unify = Child(
        Command::new(unifs_bin())
            .arg("--store")
            .arg(&store)
            .args(["unify", "--no-progress", "a", "b"])
            .current_dir(root)
            // One linking thread, pausing after each change: the run
            // lasts seconds.
            .env("UNIFS_THREADS", "1")
            .env("UNIFS_TEST_DIRTIMES_PAUSE_MS", "50")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let linked = || fs::metadata(root.join("b/usr/d/f0")).is_ok_and(|m| m.nlink() > 1);
    let started = wait_until(Duration::from_secs(60), || {
        linked() || unify.0.try_wait().unwrap().is_some()
    });
    let moved = root.join("st-moved");
    let in_time = started && unify.0.try_wait().unwrap().is_none();
    fs::rename(&store, &moved).unwrap();
    assert!(
        wait_until(Duration::from_secs(120), || unify
            .0
            .try_wait()
            .unwrap()
            .is_some()),
        "unify did not end"
    );
    assert!(in_time, "the store was not moved while unify ran");
    assert!(unify.0.wait().unwrap().success());
    assert!(
        !store.exists(),
        "the old store path was made again: {:?}",
        walkdir::WalkDir::new(&store)
            .into_iter()
            .filter_map(|e| e.ok())
            .map(|e| e.into_path())
            .collect::<Vec<_>>()
    );
    assert!(moved.join("cache").is_dir(), "the listings went elsewhere");
    assert_verify_clean(&moved);
}

/// Guests a and b under `root`, one identical file each.
fn two_guests(root: &Path) {
    for g in ["a", "b"] {
        file_at(
            &root.join(g),
            "usr/f",
            &bytes(1, 2000),
            0o644,
            1_700_000_000,
        );
    }
}

/// The store named through a symlink whose target moved away: stats said
/// "create one with `store init`", and init and unify failed with "cannot
/// create …: File exists". Each now says the path is a symlink to a
/// directory that does not exist.
#[test]
fn review_s24_a_store_path_that_is_a_dangling_symlink_is_named_so() {
    if !require_root("review_s24_a_store_path_that_is_a_dangling_symlink_is_named_so") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    two_guests(root);
    let target = root.join("srv/unifs");
    fs::create_dir_all(&target).unwrap();
    let link = root.join("store-link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    unify_json(&link, &[&root.join("a"), &root.join("b")]);
    fs::rename(&target, root.join("srv/unifs.moved")).unwrap();
    let want = format!(
        "{} is a symlink to {}, which does not exist",
        link.display(),
        target.display()
    );
    for args in [
        vec!["store", "stats"],
        vec!["store", "init"],
        vec!["unify", "a", "b"],
        vec!["unify", "--all"],
    ] {
        let mut cmd = Command::new(unifs_bin());
        let out = cmd
            .arg("--store")
            .arg(&link)
            .args(&args)
            .current_dir(root)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: {err}");
        assert!(
            !err.contains("File exists") && !err.contains("create one with"),
            "{args:?}: {err}"
        );
    }
    assert!(!target.exists(), "something made the target again");
}

/// A bind mount of a directory, unmounted on drop.
struct Bind {
    at: PathBuf,
}

impl Bind {
    fn new(from: &Path, at: &Path) -> Bind {
        fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .arg("--bind")
            .arg(from)
            .arg(at)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        Bind { at: at.into() }
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.at, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// --store naming a bind mount of the store (same filesystem as the
/// guests): unify --all and unify GUEST advised `unifs store forget` for
/// every guest, none of which moved. The advice now is to name the store
/// by a path on the guests' mount.
#[test]
fn review_s24_a_store_named_through_a_bind_mount_gets_the_right_advice() {
    if !require_root("review_s24_a_store_named_through_a_bind_mount_gets_the_right_advice") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    two_guests(root);
    let store = root.join("st");
    unify_json(&store, &[&root.join("a"), &root.join("b")]);
    let bst = root.join("bst");
    let _bind = Bind::new(&store, &bst);
    let all = unifs(&bst, &[&"unify", &"--all"]);
    assert_eq!(all.status.code(), Some(1), "{}", stderr(&all));
    let err = stderr(&all);
    assert!(
        err.contains("name the store by a path on the guests' mount"),
        "{err}"
    );
    assert!(!err.contains("store forget"), "{err}");
    let one = unifs(&bst, &[&"unify", &root.join("a")]);
    assert_eq!(one.status.code(), Some(1), "{}", stderr(&one));
    let err = stderr(&one);
    assert!(
        err.contains("name the store by a path on the guest's mount"),
        "{err}"
    );
    // Nothing was forgotten or changed: through its own path all is well.
    let s = unify_json(&store, &[&"--all"]);
    assert_eq!(s["files_already_linked"], 2, "{s}");
}

/// The same on a full filesystem, where gc removes unused object files
/// before it can read the catalog: the copy put back over the object went
/// with its rows. Now its rows stay, and the second pass gives the name
/// back from a guest path still linking the inode the catalog lists.
#[test]
fn review_s24_gc_on_a_full_disk_keeps_an_object_put_back_while_guests_link_it() {
    if !require_root("review_s24_gc_on_a_full_disk_keeps_an_object_put_back") {
        return;
    }
    let ext4 = crate::review_s9_exhaust::Ext4::new(32 << 20);
    let store = ext4.path("st");
    let guests: Vec<_> = ["a", "b", "c"].iter().map(|g| ext4.path(g)).collect();
    for g in &guests {
        file_at(g, "usr/f", &bytes(7, 300_000), 0o644, 1_700_000_000);
    }
    unify_json(&store, &[&guests[0], &guests[1], &guests[2]]);
    let guest_file = guests[0].join("usr/f");
    let object = object_of(&store, &guest_file);
    let rel = object.strip_prefix(&store).unwrap().to_path_buf();
    let objects_tar = ext4.path("objects.tar");
    tar(&[&"-C", &store, &"-cf", &objects_tar, &"objects"]);
    tar(&[&"-xpf", &objects_tar, &"-C", &store, &rel]);
    fs::remove_file(&objects_tar).unwrap();
    let old = ino(&guest_file);
    assert_ne!(ino(&object), old, "tar gave the object file a new inode");
    ext4.fill(0);
    let out = unifs(&store, &[&"store", &"gc", &"--json"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("is full"),
        "gc did not take the full-disk way: {}",
        stderr(&out)
    );
    ext4.unfill();
    assert!(object.exists(), "gc removed the object: {}", stdout(&out));
    assert_eq!(ino(&object), old, "{}", stdout(&out));
    assert_eq!(fs::metadata(&object).unwrap().nlink(), 4);
    assert_eq!(catalog_objects(&store), 1);
    assert_verify_clean(&store);
}
