//! Review s12-store: the store's locks, modes and leftovers, and what
//! unify costs on a large store.

use crate::common::{require_root, require_strace, unifs_bin};
use crate::tree::*;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `flock(op)` on the store's lock file, as another unifs process holds it.
pub(crate) fn hold_lock(store: &Path, op: libc::c_int) -> fs::File {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(store.join("lock"))
        .unwrap();
    // SAFETY: flock on an fd we own.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) }, 0);
    f
}

/// Runs `cmd` until the store is not busy (bounded): a lock this test
/// dropped lives on a moment in a child another test thread forked before
/// its exec closes the fd.
pub(crate) fn when_free(cmd: impl Fn() -> std::process::Output) -> std::process::Output {
    for _ in 0..50 {
        let out = cmd();
        if !String::from_utf8_lossy(&out.stderr).contains("is busy") {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    cmd()
}

/// Guest g1 unified alone (its objects linked by nobody else), its
/// manifest and private files written, then g1 removed: what a restore
/// starts from. Returns the temp dir, store, manifest and private dir.
fn lost_guest() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let g1 = dir.path().join("g1");
    let g2 = dir.path().join("g2");
    for g in [&g1, &g2] {
        file(g, "usr/bin/tool", &bytes(7, 6000), 0o755);
    }
    file(&g1, "etc/own", b"g1's own\n", 0o644);
    unify_json(&store, &[&g1, &g2]);
    let manifest = dir.path().join("g1.jsonl");
    let list = dir.path().join("g1.private");
    ok(&unifs(
        &store,
        &[&"manifest", &g1, &"-o", &manifest, &"--private-list", &list],
    ));
    let private = dir.path().join("private");
    file(&private, "etc/own", b"g1's own\n", 0o644);
    fs::remove_dir_all(&g1).unwrap();
    fs::remove_dir_all(&g2).unwrap();
    (dir, store, manifest, private)
}

/// [`restore`] with `--json`, which must succeed: its report.
fn restore_json(store: &Path, manifest: &Path, private: &Path, target: &Path) -> serde_json::Value {
    let out = unifs(
        store,
        &[
            &"restore",
            &"--manifest",
            &manifest,
            &"--from",
            &private,
            &"--json",
            &target,
        ],
    );
    serde_json::from_str(&ok(&out)).unwrap()
}

/// Restore took no lock: a `store gc` running meanwhile could remove the
/// objects it had checked and was linking (after the loss nobody links
/// them: gc's very candidates), and docs/backup.md could only ask not to
/// run gc meanwhile. It now holds the lock shared: a writer holding it
/// makes restore fail at once with the busy message, writing nothing.
#[test]
fn restore_refuses_a_store_a_writer_holds() {
    if !require_root("restore_refuses_a_store_a_writer_holds") {
        return;
    }
    let (dir, store, manifest, private) = lost_guest();
    let target = dir.path().join("g1r");
    let restore = || restore(&store, &manifest, &private, &target);
    let gc = hold_lock(&store, libc::LOCK_EX);
    let started = std::time::Instant::now();
    let err = failed(&restore());
    assert!(err.contains("is busy"), "{err}");
    // Waiting would be for good (the lock is held until below).
    assert!(started.elapsed().as_secs() < 30, "waited for the lock");
    assert!(!target.exists(), "wrote a target");
    drop(gc);
    ok(&when_free(restore));
    assert_eq!(fs::read(target.join("etc/own")).unwrap(), b"g1's own\n");
}

/// Restores share the lock with one another and with `gc --dry-run`; a
/// writer (gc) finds it busy while one runs.
#[test]
fn restores_share_the_lock_and_keep_gc_out() {
    if !require_root("restores_share_the_lock_and_keep_gc_out") {
        return;
    }
    let (dir, store, manifest, private) = lost_guest();
    let other_restore = hold_lock(&store, libc::LOCK_SH);
    let target = dir.path().join("g1r");
    ok(&restore(&store, &manifest, &private, &target));
    fs::remove_dir_all(&target).unwrap();
    let err = failed(&unifs(&store, &[&"store", &"gc"]));
    assert!(err.contains("is busy"), "{err}");
    // A dry run changes nothing: it shares the lock too (it was busy).
    let dry = ok(&unifs(&store, &[&"store", &"gc", &"--dry-run", &"--json"]));
    let dry: serde_json::Value = serde_json::from_str(&dry).unwrap();
    assert!(dry["objects_removed"].as_u64().unwrap() >= 1, "{dry}");
    drop(other_restore);
    // With no restore, gc removes the lost guest's object.
    ok(&when_free(|| unifs(&store, &[&"store", &"gc"])));
    let objects: Vec<_> = walkdir::WalkDir::new(store.join("objects"))
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .collect();
    assert!(objects.is_empty(), "{objects:?}");
}

/// The busy message named the pid written into the lock file by whoever
/// took it last: with restores sharing it, often one that had exited while
/// another still held it. It now names the processes the kernel says hold
/// it (/proc/locks).
#[test]
fn the_busy_message_names_the_processes_that_hold_the_lock() {
    if !require_root("the_busy_message_names_the_processes_that_hold_the_lock") {
        return;
    }
    let (_dir, store, _, _) = lost_guest();
    // Left by a sharer that is gone.
    fs::write(store.join("lock"), "999999").unwrap();
    let sharer = hold_lock(&store, libc::LOCK_SH);
    let err = failed(&unifs(&store, &[&"store", &"gc"]));
    assert!(err.contains("is busy"), "{err}");
    let me = format!("pid {}", std::process::id());
    assert!(err.contains(&me) && !err.contains("999999"), "{err}");
    drop(sharer);
}

/// `store gc --dry-run` reads a store it cannot write (a read-only bind
/// mount here, a backup copy in use): it took the lock for writing, which
/// failed with EROFS.
#[test]
fn gc_dry_run_reads_a_read_only_store() {
    if !require_root("gc_dry_run_reads_a_read_only_store") {
        return;
    }
    let (dir, store, _, _) = lost_guest();
    let ro = dir.path().join("store-ro");
    fs::create_dir(&ro).unwrap();
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    use nix::mount::{mount, MsFlags};
    mount(
        Some(&store),
        &ro,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let _unmount = Unmount(&ro);
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(None::<&str>, &ro, None::<&str>, flags, None::<&str>).unwrap();
    let dry = ok(&unifs(&ro, &[&"store", &"gc", &"--dry-run", &"--json"]));
    let dry: serde_json::Value = serde_json::from_str(&dry).unwrap();
    assert!(dry["objects_removed"].as_u64().unwrap() >= 1, "{dry}");
    let err = failed(&unifs(&ro, &[&"store", &"gc"]));
    assert!(err.contains("lock"), "{err}");
}

/// Runs `cat PATH` as user nobody; returns whether it could read it and
/// what it printed.
fn cat_as_nobody(path: &Path) -> (bool, Vec<u8>) {
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new("cat")
        .arg(path)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    (out.status.success(), out.stdout)
}

/// The catalog was made 0644 and `cache/` 0755 with its listings 0644, in
/// a store root made 0755: any host user could read the path of every
/// unified guest file (with owner, size and content hash) and every
/// directory listing unify kept, though the guests lie in a directory only
/// root can enter (as docs/store-format.md asks) and the files in
/// directories of the guest's own that hide them. Found by reading them as
/// nobody. A new store's root is now 0700, the catalog 0600 (SQLite gives
/// its -wal and -shm its mode) and `cache/` 0700, its files 0600: even a
/// store whose root an admin opened again hides them.
#[test]
fn a_host_user_cannot_read_guest_paths_in_the_store() {
    use std::os::unix::fs::PermissionsExt;
    if !require_root("a_host_user_cannot_read_guest_paths_in_the_store") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let guests = dir.path().join("guests");
    let store = dir.path().join("store");
    let roots: Vec<PathBuf> = (1..=2).map(|i| guests.join(format!("g{i}"))).collect();
    for g in &roots {
        file(g, "opt/hidden/alice-plans.txt", &bytes(5, 4000), 0o600);
        fs::set_permissions(g.join("opt/hidden"), fs::Permissions::from_mode(0o700)).unwrap();
    }
    fs::set_permissions(&guests, fs::Permissions::from_mode(0o700)).unwrap();
    let s = unify_json(&store, &[&roots[0], &roots[1]]);
    assert_eq!(s["objects_added"], 1, "{s}");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store), 0o700, "a new store's root");
    // The guests' own files are out of reach (the check reads as nobody).
    assert!(!cat_as_nobody(&roots[0].join("opt/hidden/alice-plans.txt")).0);
    // An older store, or one whose root its admin opened: what is in it
    // must still be root's.
    fs::set_permissions(&store, fs::Permissions::from_mode(0o755)).unwrap();
    let mut readable = Vec::new();
    for e in walkdir::WalkDir::new(&store).min_depth(1) {
        let e = e.unwrap();
        if !e.file_type().is_file()
            || e.path().parent() == Some(store.as_path()) && e.file_name() == "lock"
        {
            continue;
        }
        let (read, text) = cat_as_nobody(e.path());
        if read {
            let leaks = text.windows(11).any(|w| w == b"alice-plans");
            readable.push(format!("{} (names the path: {leaks})", e.path().display()));
        }
    }
    assert!(readable.is_empty(), "readable by nobody: {readable:#?}");
    // Its snapshot (docs/backup.md) is the catalog's copy.
    let snap = dir.path().join("catalog-snapshot.db");
    ok(&unifs(&store, &[&"store", &"snapshot", &snap]));
    assert_eq!(mode(&snap), 0o600, "the snapshot");
}

/// `unifs manifest -o FILE --private-list LIST` wrote both 0644 (the
/// umask's), renaming a new file over FILE each time: the paths of every
/// file of the guest, with owners, xattrs and content hashes, readable by
/// any host user, and an admin's `chmod 600` of the last backup's files
/// lost at the next. They are now made 0600, as the catalog is.
#[test]
fn a_manifest_is_written_for_root_alone() {
    use std::os::unix::fs::PermissionsExt;
    if !require_root("a_manifest_is_written_for_root_alone") {
        return;
    }
    let (dir, store, manifest, _private) = lost_guest();
    let g = dir.path().join("g3");
    file(&g, "opt/hidden/alice-plans.txt", b"plans\n", 0o600);
    let list = dir.path().join("g3.private");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&manifest), 0o600, "a new manifest");
    ok(&unifs(
        &store,
        &[&"manifest", &g, &"-o", &manifest, &"--private-list", &list],
    ));
    assert!(fs::read_to_string(&manifest)
        .unwrap()
        .contains("alice-plans"));
    assert_eq!(mode(&manifest), 0o600, "a manifest written over");
    assert_eq!(mode(&list), 0o600, "the private list");
}

/// Names in the store's `tmp/` that are not records of directory mtimes.
fn tmp_leftovers(store: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<_> = fs::read_dir(store.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .filter(|(n, _)| !n.starts_with("dirtimes-"))
        .collect();
    out.sort();
    out
}

/// A unify killed while it staged a copy of a file open for writing
/// (strace kills it at the copy's fchmod, after the data) left the whole
/// copy in `tmp/obj.PID.N`; no later unify removed it (docs/unify.md: the
/// next run "finishes the work"), only a `store gc`: a big file that a
/// cron job's timeout kills unify over leaks its size each time. Unify
/// now empties `tmp/` of such leftovers once it holds the writer lock.
#[test]
fn unify_removes_the_staged_copy_a_killed_run_left() {
    if !require_root("unify_removes_the_staged_copy_a_killed_run_left")
        || !require_strace("unify_removes_the_staged_copy_a_killed_run_left")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (g1, g2) = (dir.path().join("g1"), dir.path().join("g2"));
    let data = bytes(9, 1 << 20);
    file(&g1, "usr/lib/big", &data, 0o644);
    file(&g2, "usr/lib/big", &data, 0o644);
    // Open for writing: unify copies it into the store instead of linking.
    let writer = fs::OpenOptions::new()
        .append(true)
        .open(g1.join("usr/lib/big"))
        .unwrap();
    let killed = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null"])
        .arg("--inject=fchmod:signal=SIGKILL:when=1")
        .arg(unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["unify", "--json", "--no-progress"])
        .args([&g1, &g2])
        .env("UNIFS_THREADS", "1")
        .output()
        .unwrap();
    assert!(!killed.status.success(), "not killed");
    let left = tmp_leftovers(&store);
    assert!(
        left.len() == 1 && left[0].0.starts_with("obj.") && left[0].1 == 1 << 20,
        "the killed run's staged copy: {left:?}"
    );
    let s = unify_json(&store, &[&g1, &g2]);
    assert_eq!(s["objects_copied"], 1, "{s}");
    assert_eq!(tmp_leftovers(&store), [], "left in tmp/");
    drop(writer);
    assert_verify_clean(&store);
}

/// A read-only bind mount of a directory of this test's; detached on drop.
pub(crate) struct RoBind(pub(crate) PathBuf);

impl RoBind {
    pub(crate) fn new(src: &Path, dst: &Path) -> RoBind {
        use nix::mount::{mount, MsFlags};
        fs::create_dir(dst).unwrap();
        mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
        let guard = RoBind(dst.to_path_buf());
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(None::<&str>, dst, None::<&str>, flags, None::<&str>).unwrap();
        guard
    }
}

impl Drop for RoBind {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Restore from a store reached through another mount of its filesystem
/// (here a read-only bind mount, as of a store kept read-only for
/// backups): the target is on the store's device, so restore links
/// objects, and link() across mounts fails with EXDEV, which restore took
/// for a failure ("Invalid cross-device link", the partial tree left)
/// where a full object (EMLINK) is copied instead. It copies them now.
/// (And the shared lock on a read-only store: its lock file is opened
/// read-only.)
#[test]
fn restore_from_a_store_through_another_mount_copies_objects() {
    if !require_root("restore_from_a_store_through_another_mount_copies_objects") {
        return;
    }
    let (dir, store, manifest, private) = lost_guest();
    let ro = RoBind::new(&store, &dir.path().join("ro-store"));
    let target = dir.path().join("g1r");
    let report = restore_json(&ro.0, &manifest, &private, &target);
    assert_eq!(report["objects_copied"], 1, "{report}");
    assert_eq!(
        fs::read(target.join("usr/bin/tool")).unwrap(),
        bytes(7, 6000)
    );
}

/// Lead 1 of this review, checked: unify lists all of `objects/` (to find
/// copies past a gap an old gc left) only for an object the catalog has
/// rows for and whose copy 0 is gone, not for every new object (which has
/// no copy 0 either): a run adding objects to a large store must not read
/// every fan-out directory. Counted by the fan-out directories opened by
/// path, as the listing opens them (unify's own lookups open them below
/// the open `objects/`).
#[test]
fn adding_objects_does_not_list_the_store() {
    if !require_root("adding_objects_does_not_list_the_store")
        || !require_strace("adding_objects_does_not_list_the_store")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let guests: Vec<PathBuf> = (1..=4).map(|i| dir.path().join(format!("g{i}"))).collect();
    for i in 0..40 {
        for g in &guests[..2] {
            file(g, &format!("usr/lib/old{i}"), &bytes(100 + i, 3000), 0o644);
        }
    }
    unify_json(&store, &[&guests[0], &guests[1]]);
    for i in 0..5 {
        for g in &guests[2..] {
            file(g, &format!("usr/lib/new{i}"), &bytes(200 + i, 3000), 0o644);
        }
    }
    let trace = dir.path().join("trace");
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=openat", "-o"])
        .arg(&trace)
        .arg(unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["unify", "--json", "--no-progress"])
        .args(&guests[2..])
        .output()
        .unwrap();
    let s = unify_summary(&out);
    assert_eq!(s["objects_added"], 5, "{s}");
    let fanout = format!("\"{}/objects/", store.display());
    let listed: Vec<String> = fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter(|l| l.contains(&fanout))
        .map(str::to_string)
        .collect();
    assert!(listed.is_empty(), "fan-out directories listed: {listed:#?}");
}

/// A small ext4 (no blocks reserved for root) loop-mounted in a temp dir
/// under /var/tmp; detached (and its loop device freed) on drop.
struct SmallExt4(tempfile::TempDir);

impl SmallExt4 {
    fn new(size: u64) -> SmallExt4 {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let img = dir.path().join("img");
        fs::File::create(&img).unwrap().set_len(size).unwrap();
        let mkfs = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-m", "0"])
            .arg(&img)
            .output()
            .expect("mkfs.ext4 (Debian package e2fsprogs)");
        assert!(mkfs.status.success(), "{mkfs:?}");
        fs::create_dir(dir.path().join("fs")).unwrap();
        let fs = SmallExt4(dir);
        let mount = std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(fs.path(""))
            .output()
            .unwrap();
        assert!(mount.status.success(), "{mount:?}");
        fs
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.path().join("fs").join(rel)
    }
}

impl Drop for SmallExt4 {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path(""), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Writes `path` until the filesystem is full (bounded by its size).
fn fill_up(path: &Path) {
    use std::io::Write;
    let mut f = fs::File::create(path).unwrap();
    for chunk in [1 << 16, 1024] {
        while f.write_all(&vec![0u8; chunk]).is_ok() {}
    }
    let _ = f.sync_all();
}

/// A disk filled by what a killed unify was staging in `tmp/`: `store gc`
/// (the command that frees space) and unify failed at the catalog ("the
/// filesystem holding it is full") before they got to tmp/, and so did
/// every command after, until the admin found the file by hand. Both now
/// empty tmp/ first, once they hold the writer lock.
#[test]
fn a_disk_filled_by_a_killed_runs_staged_copy_is_freed_by_gc() {
    if !require_root("a_disk_filled_by_a_killed_runs_staged_copy_is_freed_by_gc") {
        return;
    }
    let ext4 = SmallExt4::new(32 << 20);
    let store = ext4.path("store");
    let (a, b) = (ext4.path("a"), ext4.path("b"));
    for g in [&a, &b] {
        file(g, "usr/x", &bytes(1, 100_000), 0o644);
    }
    unify_json(&store, &[&a, &b]);
    // As a unify killed while it copied a big file in leaves it.
    fill_up(&store.join("tmp/obj.4194999.0"));
    ok(&unifs(&store, &[&"store", &"gc"]));
    assert_eq!(tmp_leftovers(&store), [], "left in tmp/");
    // And unify, where no gc ran first.
    file(&a, "usr/y", &bytes(2, 50_000), 0o644);
    file(&b, "usr/y", &bytes(2, 50_000), 0o644);
    fill_up(&store.join("tmp/obj.4194999.1"));
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["objects_added"], 1, "{s}");
    assert_eq!(tmp_leftovers(&store), [], "left in tmp/");
}

/// An object whose copy 0 reached the filesystem's link limit (ext4:
/// 65,000; a LICENSE file many packages of many guests carry) has a copy 1
/// with room, which unify links new paths to. Restore tried copy 0 alone
/// and, on EMLINK, copied the object: the restored guest got a private
/// copy of every such file (docs/backup.md: "the restored guest is unified
/// at once"). It now links the next copy, as unify does.
#[test]
fn restore_links_the_next_copy_of_a_full_object() {
    if !require_root("restore_links_the_next_copy_of_a_full_object") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let guests: Vec<PathBuf> = (0..4).map(|i| dir.path().join(format!("g{i}"))).collect();
    for g in &guests {
        file(g, "usr/share/LICENSE", &bytes(11, 5000), 0o644);
    }
    // Copies 0 (g0-g2) and 1 (g3), as a link limit of 4 makes them.
    let out = std::process::Command::new(unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["unify", "--json"])
        .args(&guests)
        .env("UNIFS_TEST_LINK_MAX", "4")
        .output()
        .unwrap();
    assert_eq!(unify_summary(&out)["extra_copies"], 1);
    let manifest = dir.path().join("g0.jsonl");
    ok(&unifs(&store, &[&"manifest", &guests[0], &"-o", &manifest]));
    fs::remove_dir_all(&guests[0]).unwrap();
    // Copy 0 filled up to the filesystem's own limit.
    let copy0 = guests[1].join("usr/share/LICENSE");
    let fill = dir.path().join("fill");
    fs::create_dir(&fill).unwrap();
    let mut n = 0;
    loop {
        match fs::hard_link(&copy0, fill.join(n.to_string())) {
            Ok(()) => n += 1,
            Err(e) if e.raw_os_error() == Some(libc::EMLINK) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(n < 1 << 20, "no link limit here");
    }
    let private = dir.path().join("private");
    fs::create_dir(&private).unwrap();
    let target = dir.path().join("g0r");
    let report = restore_json(&store, &manifest, &private, &target);
    assert_eq!(
        (&report["objects_linked"], &report["objects_copied"]),
        (&1.into(), &0.into()),
        "{report}"
    );
    assert_eq!(
        ino(&target.join("usr/share/LICENSE")),
        ino(&guests[3].join("usr/share/LICENSE")),
        "linked to copy 1"
    );
    fs::remove_dir_all(&fill).unwrap();
}

/// A store busy because of a reader (`gc --dry-run`, a restore, which take
/// the lock shared) was said to be busy with "another unifs process (pid N)
/// writing to it": the operator went looking for a writer. The message now
/// says what each holder runs (review s21).
#[test]
fn review_s21_a_busy_store_names_what_its_holder_runs() {
    if !require_root("review_s21_a_busy_store_names_what_its_holder_runs") {
        return;
    }
    let (_dir, store, _manifest, _private) = lost_guest();
    let reader = hold_lock(&store, libc::LOCK_SH);
    let err = failed(&unifs(&store, &[&"store", &"gc"]));
    let me = std::env::current_exe().unwrap();
    let me = me.file_name().unwrap().to_string_lossy();
    // This process, or (seen once in a whole-suite run) another pid running
    // this binary: a child another test thread forked, and had not yet
    // exec'd, with the lock's fd.
    let want = format!(": `{me}");
    assert!(
        err.contains("is busy") && err.contains("(pid ") && err.contains(&want),
        "{err}"
    );
    assert!(!err.contains("writing to it"), "{err}");
    drop(reader);
}
