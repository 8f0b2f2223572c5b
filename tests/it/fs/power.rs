//! Power cuts after unify and during and after a link break (invariant 2:
//! every guest path names a complete file, whatever is cut when), simulated: the
//! image of a loop-mounted ext4 is copied while nothing is synced, which is
//! what its disk held at that moment (see [`Ext4::power_cut`]). Journal
//! commits are 300 s apart ([`slow_commits`]), so that only what the daemon
//! or the test syncs reaches the journal meanwhile.

use super::harness::{Ext4, Mount, World};
use crate::common::require_root;
use crate::tree::{
    assert_invisible, assert_verify_clean, bytes, file, set_dir_mtimes, snapshot, snapshot_with,
    unify_json, Snapshot,
};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A journaled ext4 whose journal commits only when something syncs (or
/// after 300 s): what reaches the disk is what was synced.
fn slow_commits() -> Ext4 {
    Ext4::new(&[], &["commit=300"])
}

/// Guests a and b share `etc/big` (`size` bytes) and `etc/small` in a store
/// on `ext4`; a is mounted.
struct Shared {
    store: PathBuf,
    b: PathBuf,
    old_big: Vec<u8>,
    old_small: Vec<u8>,
    mount: Mount,
}

fn shared(ext4: &Ext4, size: usize) -> Shared {
    let (store, a, b) = (ext4.dir("store"), ext4.dir("a"), ext4.dir("b"));
    let (old_big, old_small) = (bytes(7, size), b"small and shared\n".to_vec());
    for g in [&a, &b] {
        file(g, "etc/big", &old_big, 0o644);
        file(g, "etc/small", &old_small, 0o644);
    }
    let s = unify_json(&store, &[&"--no-default-excludes", &a, &b]);
    assert_eq!(s["files_linked"], 2, "{s}");
    // The unified guests are on disk before the mount breaks anything.
    nix::unistd::sync();
    let mount = Mount::start(&store, &a, &ext4.dir("ma"), &[]);
    Shared {
        store,
        b,
        old_big,
        old_small,
        mount,
    }
}

/// `old` with its first bytes replaced by `patch`.
fn patched(old: &[u8], patch: &[u8]) -> Vec<u8> {
    let mut new = old.to_vec();
    new[..patch.len()].copy_from_slice(patch);
    new
}

/// Writes `patch` at the start of the mounted file `path`, then syncs the
/// file with fdatasync if asked.
fn write_through(path: &Path, patch: &[u8], datasync: bool) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(patch, 0).unwrap();
    if datasync {
        f.sync_data().unwrap();
    }
}

/// A guest's fdatasync after the write that broke the link is a promise:
/// after a power cut its data is under the name. The break's rename is
/// part of that write, and it was left unsynced: the power cut put the old
/// shared file back under the name, without the synced data. A write nobody
/// synced leaves the old file or the new one, complete.
#[test]
fn a_guests_fdatasync_after_a_break_survives_a_power_cut() {
    if !require_root("power_fdatasync_after_a_break") {
        return;
    }
    let ext4 = slow_commits();
    let s = shared(&ext4, 3 << 20);
    let patch = b"synced by the guest\n";
    // In this order: a break fsyncs its copy, which commits the journal
    // with whatever renames it holds.
    write_through(&s.mount.path("etc/small"), b"never synced\n", false);
    write_through(&s.mount.path("etc/big"), patch, true);
    let cut = ext4.power_cut();
    let big = fs::read(cut.root().join("a/etc/big")).unwrap();
    assert!(
        big == patched(&s.old_big, patch),
        "the synced write is lost after a power cut (first bytes {:?})",
        String::from_utf8_lossy(&big[..20])
    );
    let small = fs::read(cut.root().join("a/etc/small")).unwrap();
    assert!(
        small == s.old_small || small == patched(&s.old_small, b"never synced\n"),
        "{small:?}"
    );
    for rel in ["etc/big", "etc/small"] {
        let want = if rel == "etc/big" {
            &s.old_big
        } else {
            &s.old_small
        };
        assert_eq!(&fs::read(cut.root().join("b").join(rel)).unwrap(), want);
        assert_eq!(&fs::read(s.b.join(rel)).unwrap(), want);
    }
    drop(s.mount);
    assert_verify_clean(&s.store);
}

/// The same fdatasync while another process holds the shared file open:
/// the write open splits the path off the reader's node, and the note that
/// the break's rename still needed its directory synced stayed with the old
/// node, so the fdatasync (on the path's new node) did not sync it and the
/// power cut put the old file back.
#[test]
fn a_guests_fdatasync_survives_a_power_cut_while_a_reader_holds_the_file() {
    if !require_root("power_fdatasync_with_a_reader") {
        return;
    }
    let ext4 = slow_commits();
    let s = shared(&ext4, 3 << 20);
    let reader = fs::File::open(s.mount.path("etc/big")).unwrap();
    let patch = b"synced by the guest\n";
    write_through(&s.mount.path("etc/big"), patch, true);
    assert_survives_a_power_cut(&ext4, s, patch, reader);
}

/// After a power cut now, guest a's `etc/big` holds `patch` at its start;
/// then, with `held` closed and the mount gone, the store is sound.
fn assert_survives_a_power_cut(ext4: &Ext4, s: Shared, patch: &[u8], held: fs::File) {
    let cut = ext4.power_cut();
    let big = fs::read(cut.root().join("a/etc/big")).unwrap();
    assert!(
        big == patched(&s.old_big, patch),
        "the synced write is lost after a power cut (first bytes {:?})",
        String::from_utf8_lossy(&big[..20])
    );
    drop(held);
    drop(s.mount);
    assert_verify_clean(&s.store);
}

/// A write through an O_DSYNC open is synced when it returns, but through
/// passthrough it never reaches the daemon as an fsync: the break's rename
/// must be durable by the time the open returns.
#[test]
fn a_write_through_an_o_dsync_open_survives_a_power_cut() {
    if !require_root("power_o_dsync_write") {
        return;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let ext4 = slow_commits();
    let s = shared(&ext4, 3 << 20);
    let patch = b"written O_DSYNC\n";
    let f = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .open(s.mount.path("etc/big"))
        .unwrap();
    f.write_all_at(patch, 0).unwrap();
    assert_survives_a_power_cut(&ext4, s, patch, f);
}

/// A break's copy is on disk before its rename can be: ext4 itself does
/// not order them. With `dioread_nolock` (its default) a file renamed over
/// another is written to unwritten extents that become data only once the
/// disk has it, and a journal commit in between (any fsync on the
/// filesystem) makes the rename durable without the data: after a power cut
/// the guest's file is there, full of zeros. The daemon's writeback runs
/// throttled here, so the disk is still writing the copy when the journal
/// commits, as with a slow disk or a large file. (A break that relied on
/// ext4's documented ordered rename, "auto_da_alloc", instead of an fsync
/// failed this test: the guest's file was all zeros.)
#[test]
fn a_breaks_copy_is_on_disk_before_its_rename() {
    if !require_root("power_break_on_disk_before_rename") {
        return;
    }
    let ext4 = slow_commits();
    ext4.direct_io();
    let s = shared(&ext4, 8 << 20);
    let _slow = Throttle::new(&ext4.root(), 8 << 20, s.mount.pid());
    let patch = b"changed by the guest\n";
    write_through(&s.mount.path("etc/big"), patch, false);
    // Commits the journal, with the break's rename.
    let other = ext4.root().join("other");
    fs::write(&other, b"x").unwrap();
    fs::File::open(&other).unwrap().sync_all().unwrap();
    let cut = ext4.power_cut();
    let big = fs::read(cut.root().join("a/etc/big")).unwrap();
    assert_ne!(
        crate::tree::ino(&cut.root().join("a/etc/big")),
        crate::tree::ino(&cut.root().join("b/etc/big")),
        "the rename was not committed: nothing checked"
    );
    let zeros = big.iter().filter(|&&b| b == 0).count();
    assert!(
        big == s.old_big[..] || big == patched(&s.old_big, patch),
        "the committed break's copy is not whole: {zeros} of {} bytes are zeros",
        big.len()
    );
    assert_eq!(fs::read(cut.root().join("b/etc/big")).unwrap(), s.old_big);
    drop(s.mount);
    assert_verify_clean(&s.store);
}

/// A blkio (v1) group of its own for a process, with its writes to the
/// device of `path` limited to `bps`; the process goes back to the root
/// group and the group is removed when dropped.
struct Throttle {
    dir: PathBuf,
}

impl Throttle {
    fn new(path: &Path, bps: u64, pid: u32) -> Throttle {
        use std::os::unix::fs::MetadataExt;
        let dev = fs::metadata(path).unwrap().dev();
        let dir = PathBuf::from(format!(
            "/sys/fs/cgroup/blkio/unifs-test-power-{}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).expect("a blkio (cgroup v1) hierarchy");
        let t = Throttle { dir };
        let limit = format!("{}:{} {bps}", libc::major(dev), libc::minor(dev));
        fs::write(t.dir.join("blkio.throttle.write_bps_device"), limit).unwrap();
        fs::write(t.dir.join("cgroup.procs"), pid.to_string()).unwrap();
        t
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        let procs = fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines() {
            let _ = fs::write("/sys/fs/cgroup/blkio/cgroup.procs", pid);
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Unify makes a guest's file the object and relinks another guest's path
/// to it. That file may have been written a moment ago, its data still only
/// in the page cache: the other guest's file, on disk for long, then named
/// an inode with no data on disk, and a power cut after the next journal
/// commit left it empty. An object's data is on disk before any other path
/// links it.
#[test]
fn a_path_unify_relinks_names_data_that_is_on_disk() {
    if !require_root("power_unify_relinks_to_data_on_disk") {
        return;
    }
    let ext4 = slow_commits();
    let (store, a, b) = (ext4.dir("store"), ext4.dir("a"), ext4.dir("b"));
    let content = bytes(11, 1 << 20);
    file(&b, "etc/f", &content, 0o644);
    file(&ext4.root(), "x/g", b"gives the store its files\n", 0o644);
    unify_json(&store, &[&"--no-default-excludes", &ext4.root().join("x")]);
    nix::unistd::sync();
    // Written just now: in the page cache only.
    file(&a, "etc/f", &content, 0o644);
    let s = unify_json(&store, &[&"--no-default-excludes", &a, &b]);
    assert_eq!(s["files_linked"], 1, "{s}");
    assert_eq!(
        crate::tree::ino(&b.join("etc/f")),
        crate::tree::ino(&a.join("etc/f")),
        "a's file was to become the object, and b's path its link"
    );
    // Commits the journal, with unify's renames.
    let other = ext4.root().join("other");
    fs::write(&other, b"x").unwrap();
    fs::File::open(&other).unwrap().sync_all().unwrap();
    let cut = ext4.power_cut();
    let got = fs::read(cut.root().join("b/etc/f")).unwrap();
    assert!(
        got == content,
        "b's file, on disk before unify, is {} bytes after a power cut ({} of them zeros)",
        got.len(),
        got.iter().filter(|&&x| x == 0).count()
    );
}

/// The power cut while unify runs, at spread-out moments (scan, hashing,
/// linking): unify is stopped, and the disk is taken as it is. After the
/// power came back every guest path names its complete file, as before;
/// `store verify` is clean, and the next run finishes the work, leaving
/// every guest as it was. (Guests written and synced before: what they had
/// not synced themselves a power cut may take without unify.)
#[test]
fn a_power_cut_anywhere_in_unify_loses_nothing_and_the_next_run_finishes() {
    if !require_root("power_cut_anywhere_in_unify") {
        return;
    }
    let ext4 = slow_commits();
    let store = ext4.dir("store");
    let names = ["g0", "g1", "g2"];
    let guests: Vec<PathBuf> = names.iter().map(|n| ext4.dir(n)).collect();
    for (i, g) in guests.iter().enumerate() {
        for j in 0..600u64 {
            let data = bytes(j, 2000 + (j as usize % 7) * 500);
            file(g, &format!("usr/share/d{}/f{j}", j % 20), &data, 0o644);
        }
        file(g, "own", &bytes(5000 + i as u64, 100), 0o644);
        set_dir_mtimes(g, 1_600_000_000);
    }
    nix::unistd::sync();
    let before: Vec<Snapshot> = guests.iter().map(|g| snapshot(g)).collect();
    // Each step of the run can be on disk when the power goes.
    let _commits = Committer::start(&ext4);
    let temp = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".unifs-tmp-"))
    };
    let mut cut_mid_run = 0;
    for delay in [2u64, 5, 10, 20, 35, 60, 90, 130] {
        let mut child = std::process::Command::new(crate::common::unifs_bin())
            .arg("--store")
            .arg(&store)
            .args(["unify", "--no-default-excludes"])
            .args(&guests)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP);
        if child.try_wait().unwrap().is_none() {
            cut_mid_run += 1;
        }
        let cut = ext4.power_cut_writable();
        let _ = child.kill();
        let _ = child.wait();
        let what = format!("power cut at {delay} ms");
        for (n, b) in names.iter().zip(&before) {
            let after = snapshot_with(&cut.root().join(n), temp);
            assert_invisible(
                &b.clone().without_dir_mtimes(),
                &after.without_dir_mtimes(),
                &format!("{n}, {what}"),
            );
        }
        let cut_store = cut.root().join("store");
        if cut_store.join("objects").exists() {
            assert_verify_clean(&cut_store);
        }
        written_before_this_boot(&cut_store.join("tmp"));
        let cut_guests: Vec<PathBuf> = names.iter().map(|n| cut.root().join(n)).collect();
        let s = unify_json(
            &cut_store,
            &[
                &"--no-default-excludes",
                &cut_guests[0],
                &cut_guests[1],
                &cut_guests[2],
            ],
        );
        assert!(s["files_scanned"].as_u64().unwrap() >= 1803, "{what}: {s}");
        for (g, b) in cut_guests.iter().zip(&before) {
            let temps: Vec<_> = walkdir::WalkDir::new(g)
                .into_iter()
                .filter_map(|e| e.ok())
                .filter(|e| temp(e.path()))
                .map(|e| e.path().to_path_buf())
                .collect();
            assert!(
                temps.is_empty(),
                "{what}: the run after it left {temps:?}: {s}"
            );
            let after = snapshot_with(g, temp);
            assert_invisible(
                &b.clone().without_dir_mtimes(),
                &after.without_dir_mtimes(),
                &format!("{}, the run after the {what}", g.display()),
            );
        }
        let rel = "usr/share/d5/f5";
        assert_eq!(
            crate::tree::ino(&cut_guests[0].join(rel)),
            crate::tree::ino(&cut_guests[2].join(rel)),
            "{what}: the run after it did not finish the work"
        );
        assert_verify_clean(&cut_store);
    }
    assert!(
        cut_mid_run >= 3,
        "only {cut_mid_run} of 8 cuts landed mid-run"
    );
}

/// A guest that breaks many files and never syncs: the daemon notes each
/// break for the guest's fsync (above) up to a bound (here 3), then syncs
/// the backing filesystem once, which makes every rename so far durable,
/// and forgets them: the notes cannot grow without end.
#[test]
fn many_unsynced_breaks_are_made_durable_by_one_syncfs() {
    if !require_root("power_many_unsynced_breaks") {
        return;
    }
    let ext4 = slow_commits();
    let (store, a, b) = (ext4.dir("store"), ext4.dir("a"), ext4.dir("b"));
    let old: Vec<Vec<u8>> = (0..3).map(|i| bytes(20 + i, 100_000)).collect();
    for g in [&a, &b] {
        for (i, data) in old.iter().enumerate() {
            file(g, &format!("etc/f{i}"), data, 0o644);
        }
    }
    let s = unify_json(&store, &[&"--no-default-excludes", &a, &b]);
    assert_eq!(s["files_linked"], 3, "{s}");
    nix::unistd::sync();
    let log = fs::File::create(ext4.root().join("ma.log")).unwrap();
    let env = ["env", "UNIFS_TEST_UNSYNCED_BREAKS_MAX=3"];
    let mount = Mount::start_under(&env, &store, &a, &ext4.dir("ma"), &[], log);
    let patch = b"changed, never synced\n";
    for i in 0..3 {
        write_through(&mount.path(&format!("etc/f{i}")), patch, false);
    }
    let cut = ext4.power_cut();
    for (i, data) in old.iter().enumerate() {
        let rel = format!("etc/f{i}");
        assert_ne!(
            crate::tree::ino(&cut.root().join("a").join(&rel)),
            crate::tree::ino(&cut.root().join("b").join(&rel)),
            "{rel}: the break's rename is not on disk"
        );
        let got = fs::read(cut.root().join("a").join(&rel)).unwrap();
        // The third break's syncfs came before the guest's write to it.
        let want = patched(data, patch);
        assert!(got == want || (i == 2 && got == *data), "{rel}");
    }
}

/// The directory sync that follows a guest's fsync after a break has no
/// name to go by when the guest removed the file meanwhile, or renamed
/// another over it: its fsync still succeeds, as on a local filesystem.
#[test]
fn fsync_of_a_broken_file_whose_name_is_gone_succeeds() {
    if !require_root("power_fsync_of_a_broken_file_whose_name_is_gone") {
        return;
    }
    let w = World::new();
    let (a, b) = (w.dir("a"), w.dir("b"));
    w.shared(b"shared\n", &[a.join("gone"), b.join("gone")]);
    w.shared(b"shared too\n", &[a.join("over"), b.join("over")]);
    let m = w.mount(&a, "ma", &[]);
    let gone = fs::OpenOptions::new()
        .write(true)
        .open(m.path("gone"))
        .unwrap();
    fs::remove_file(m.path("gone")).unwrap();
    gone.write_all_at(b"still written\n", 0).unwrap();
    gone.sync_all().unwrap();
    gone.sync_data().unwrap();
    let over = fs::OpenOptions::new()
        .write(true)
        .open(m.path("over"))
        .unwrap();
    fs::write(m.path("other"), b"other\n").unwrap();
    fs::rename(m.path("other"), m.path("over")).unwrap();
    over.write_all_at(b"still written\n", 0).unwrap();
    over.sync_data().unwrap();
    assert_eq!(fs::read(m.path("over")).unwrap(), b"other\n");
    assert_eq!(fs::read(b.join("gone")).unwrap(), b"shared\n");
    assert_eq!(fs::read(b.join("over")).unwrap(), b"shared too\n");
}

/// The power cut in the middle of a break, at spread-out moments: while the
/// copy is made (an unnamed file), fsynced (writes throttled, so that this
/// takes a while), named, renamed over the guest's path, and after. The
/// daemon is stopped and the disk taken as it is. After the power came
/// back the guest's path holds the old file or the new one, whole; the
/// other guest's file is untouched; and a mount of the recovered guest
/// hides and removes what a cut break left behind.
#[test]
fn a_power_cut_anywhere_in_a_break_leaves_the_old_or_the_new_file_whole() {
    if !require_root("power_cut_anywhere_in_a_break") {
        return;
    }
    let ext4 = slow_commits();
    ext4.direct_io();
    let (store, a, b) = (ext4.dir("store"), ext4.dir("a"), ext4.dir("b"));
    let delays_ms = [0u64, 20, 60, 150, 300, 500, 800, 1500];
    let old: Vec<Vec<u8>> = (0..delays_ms.len() as u64)
        .map(|i| bytes(40 + i, 8 << 20))
        .collect();
    for g in [&a, &b] {
        for (i, data) in old.iter().enumerate() {
            file(g, &format!("etc/f{i}"), data, 0o644);
        }
    }
    let s = unify_json(&store, &[&"--no-default-excludes", &a, &b]);
    assert_eq!(s["files_linked"], delays_ms.len(), "{s}");
    nix::unistd::sync();
    let mount = Mount::start(&store, &a, &ext4.dir("ma"), &[]);
    let _slow = Throttle::new(&ext4.root(), 16 << 20, mount.pid());
    let daemon = nix::unistd::Pid::from_raw(mount.pid() as i32);
    let patch = b"changed by the guest\n";
    // Each step of a break can be on disk when the power goes.
    let _commits = Committer::start(&ext4);
    let (mut cuts_before_the_rename, mut cuts_after_the_rename) = (0, 0);
    for (i, delay) in delays_ms.into_iter().enumerate() {
        let rel = format!("etc/f{i}");
        let path = mount.path(&rel);
        let writer = std::thread::spawn(move || write_through(&path, patch, false));
        std::thread::sleep(std::time::Duration::from_millis(delay));
        nix::sys::signal::kill(daemon, nix::sys::signal::Signal::SIGSTOP).unwrap();
        let cut = ext4.power_cut_writable();
        nix::sys::signal::kill(daemon, nix::sys::signal::Signal::SIGCONT).unwrap();
        writer.join().unwrap();
        let what = format!("{rel}, power cut at {delay} ms");
        let got = fs::read(cut.root().join("a").join(&rel)).unwrap();
        assert!(
            got == old[i] || got == patched(&old[i], patch),
            "{what}: {} bytes, {} of them zeros",
            got.len(),
            got.iter().filter(|&&x| x == 0).count()
        );
        assert_eq!(
            fs::read(cut.root().join("b").join(&rel)).unwrap(),
            old[i],
            "{what}"
        );
        let a_ino = crate::tree::ino(&cut.root().join("a").join(&rel));
        if a_ino == crate::tree::ino(&cut.root().join("b").join(&rel)) {
            cuts_before_the_rename += 1;
        } else {
            cuts_after_the_rename += 1;
        }
        // Back on the recovered disk: what the cut break left is hidden,
        // and removed once the directory is listed.
        let etc = cut.root().join("a/etc");
        let mount_cut = Mount::start(
            &cut.root().join("store"),
            &cut.root().join("a"),
            &ext4_dir(&cut),
            &[],
        );
        let seen: Vec<String> = fs::read_dir(mount_cut.path("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(seen.iter().all(|n| n.starts_with('f')), "{what}: {seen:?}");
        assert_eq!(fs::read(mount_cut.path(&rel)).unwrap(), got, "{what}");
        drop(mount_cut);
        let left: Vec<String> = fs::read_dir(&etc)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('f'))
            .collect();
        assert!(left.is_empty(), "{what}: left in the guest: {left:?}");
    }
    assert!(
        cuts_before_the_rename > 0 && cuts_after_the_rename > 0,
        "cuts before the rename was on disk: {cuts_before_the_rename}, after: \
         {cuts_after_the_rename}"
    );
}

/// A mount point on a power cut's disk.
fn ext4_dir(cut: &super::harness::PowerCut) -> PathBuf {
    let p = cut.root().join("ma");
    fs::create_dir_all(&p).unwrap();
    p
}

/// What a guest writes through the mount, new files and broken ones, is on
/// disk after a plain sync(2) (mount.md: syncfs of the mount is not, a limit
/// of the kernel; a plain sync reaches the backing filesystem).
#[test]
fn a_plain_sync_makes_what_a_guest_wrote_durable() {
    if !require_root("power_plain_sync") {
        return;
    }
    let ext4 = slow_commits();
    let s = shared(&ext4, 1 << 20);
    fs::write(s.mount.path("etc/new"), b"a new file\n").unwrap();
    write_through(&s.mount.path("etc/big"), b"changed", false);
    nix::unistd::sync();
    let cut = ext4.power_cut();
    assert_eq!(
        fs::read(cut.root().join("a/etc/new")).unwrap(),
        b"a new file\n"
    );
    let big = fs::read(cut.root().join("a/etc/big")).unwrap();
    assert!(big == patched(&s.old_big, b"changed"));
    assert_eq!(fs::read(cut.root().join("b/etc/big")).unwrap(), s.old_big);
}

/// Other work on the filesystem, committing its journal every few ms (an
/// fsync of a file of its own), until dropped.
struct Committer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    fn start(ext4: &Ext4) -> Committer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, other) = (stop.clone(), ext4.root().join("other"));
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let f = fs::File::create(&other).unwrap();
                f.sync_all().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
        });
        Committer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Dates the records of unify runs in `tmp` (a store's) an hour before this
/// boot, as a power cut's are when the machine comes back: the copy of a
/// disk these tests take is read without a reboot, and unify takes a record
/// of this boot for one its writer's mapped pages all reached.
pub(crate) fn written_before_this_boot(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    let stat = fs::read_to_string("/proc/stat").unwrap();
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for e in entries {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let pid = name.strip_prefix("dirtimes-").unwrap_or("");
        if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
            crate::tree::set_mtime(&path, btime - 3600);
        }
    }
}

/// What a unify run cut by a power cut leaves: temp names (links to
/// objects) in guest directories, and a record of the directories it changed
/// whose mapped pages never reached the disk (all zeros, or empty). The next
/// run reported the temp names as a guest's own and left them, for the
/// guest to see; now a record of an earlier boot, or one it cannot read,
/// makes its run's temp names known by their pid in any directory, until a
/// run given every guest of the store found none left.
#[test]
fn temp_names_of_a_run_a_power_cut_took_are_removed() {
    if !require_root("power_temp_names_of_a_run_a_power_cut_took") {
        return;
    }
    for (case, record) in [("zero-filled", vec![0u8; 8192]), ("empty", Vec::new())] {
        let w = World::new();
        let store = w.tmp.path().join("real-store");
        let (a, b, c) = (w.dir("a"), w.dir("b"), w.dir("c"));
        for g in [&a, &b, &c] {
            file(g, "usr/lib/f", &bytes(3, 5000), 0o644);
        }
        unify_json(&store, &[&a, &b, &c]);
        let pid = 4_000_001u32;
        let temp = |g: &Path| {
            let t = g.join(format!("usr/lib/.unifs-tmp-{pid}-7"));
            fs::hard_link(g.join("usr/lib/f"), &t).unwrap();
            t
        };
        let (temp_a, temp_c) = (temp(&a), temp(&c));
        let rec = store.join(format!("tmp/dirtimes-{pid}"));
        fs::write(&rec, &record).unwrap();
        written_before_this_boot(&store.join("tmp"));
        let left = store.join("tmp/dirtimes-left");
        let s = unify_json(&store, &[&a, &b]);
        assert!(
            !temp_a.exists(),
            "{case}: the temp name is still there: {s}"
        );
        assert_eq!(s["stale_tmp_removed"], 1, "{case}: {s}");
        assert!(!rec.exists(), "{case}");
        assert!(left.exists(), "{case}: c, not in that run, was forgotten");
        let s = unify_json(&store, &[&c]);
        assert!(
            !temp_c.exists(),
            "{case}: c's temp name is still there: {s}"
        );
        assert_eq!(fs::read(a.join("usr/lib/f")).unwrap(), bytes(3, 5000));
        assert_verify_clean(&store);
        // A run given every guest finds nothing of it: done with.
        unify_json(&store, &[&a, &b, &c]);
        assert!(!left.exists(), "{case}: {:?}", fs::read(&left));
    }
}
