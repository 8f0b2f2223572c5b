//! Review s41-breakrev of e46075b (the syncfs of many unsynced breaks runs
//! without the notes' lock; the notes it covers stay, as `syncing`, until
//! it returns) and 16afaac (a daemon that cannot take a user's ids says
//! so). A directory made immutable or append-only breaks its shared files
//! with the mount's name lock held, and its syncfs ran under that lock
//! still; the rest is shown sound here, power cuts included.

use crate::common::{require_root, wait_for_pause};
use crate::fs::harness::{Ext4, Mount, World};
use crate::review_s41_breaklock::{
    installed, log_of_a_mount_under, open_for_writing, setpriv_world, BOUND, SYNCFS_PAUSE_MS,
};
use crate::tree::{bytes, chattr, file, unify_json, Unflag};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

/// `env` arguments that lower the notes' bound to 2 and pause each syncfs.
fn two_notes_slow_syncfs() -> [String; 3] {
    [
        "env".into(),
        "UNIFS_TEST_UNSYNCED_BREAKS_MAX=2".into(),
        format!("UNIFS_TEST_SYNCFS_PAUSE_MS={SYNCFS_PAUSE_MS}"),
    ]
}

/// `chattr +a` of a directory through the mount breaks the shared files in
/// it first (see lock_dir), each with the name lock read-held; the second
/// break's note starts the syncfs. Meanwhile an unlink and a rename
/// elsewhere in the mount do not wait for it. Fails before: they waited the
/// whole pause (the syncfs ran with the name lock held).
#[test]
fn s41_locking_a_directory_does_not_hold_name_operations_through_the_syncfs() {
    let test = "s41_locking_a_directory_does_not_hold_name_operations_through_the_syncfs";
    if !require_root(test) {
        return;
    }
    let w = World::new();
    let (a, b) = (w.dir("a"), w.dir("b"));
    for d in [&a, &b] {
        fs::create_dir(d.join("d")).unwrap();
    }
    for i in 0..2 {
        let content = format!("shared {i}\n");
        let paths = [a.join(format!("d/f{i}")), b.join(format!("d/f{i}"))];
        w.shared(content.as_bytes(), &paths);
    }
    for name in ["gone", "old"] {
        fs::write(a.join(name), name).unwrap();
    }
    let _unflag = Unflag(vec![a.join("d")]);
    let mp = w.dir("m");
    let log = File::create(mp.with_extension("log")).unwrap();
    let env = two_notes_slow_syncfs();
    let env: Vec<&str> = env.iter().map(String::as_str).collect();
    let m = Mount::start_under(&env, &w.store, &a, &mp, &[], log);
    let locking = {
        let d = m.path("d");
        std::thread::spawn(move || chattr("+a", &d))
    };
    wait_for_pause(m.pid(), SYNCFS_PAUSE_MS);

    let start = Instant::now();
    fs::remove_file(m.path("gone")).unwrap();
    fs::rename(m.path("old"), m.path("new")).unwrap();
    let took = start.elapsed();
    assert!(
        took < BOUND,
        "an unlink and a rename took {took:?}: they waited for the syncfs"
    );
    assert!(
        !locking.is_finished(),
        "the syncfs pause was over before the name operations: nothing shown"
    );
    locking.join().unwrap();
    assert_eq!(fs::read(b.join("d/f1")).unwrap(), b"shared 1\n");
    assert_ne!(
        crate::tree::ino(&a.join("d/f1")),
        crate::tree::ino(&b.join("d/f1"))
    );
}

/// Guests a and b share `etc/f0` and `etc/f1` (100 kB each) in a store on
/// a journaled ext4 that commits only when something syncs; a is mounted
/// with the daemon run by `wrapper`. Returns the old contents too.
pub(crate) fn two_shared_on_ext4(ext4: &Ext4, wrapper: &[&str]) -> (Mount, Vec<Vec<u8>>) {
    let (store, a, b) = (ext4.dir("store"), ext4.dir("a"), ext4.dir("b"));
    let old: Vec<Vec<u8>> = (0..2).map(|i| bytes(40 + i, 100_000)).collect();
    for g in [&a, &b] {
        for (i, data) in old.iter().enumerate() {
            file(g, &format!("etc/f{i}"), data, 0o644);
        }
    }
    let s = unify_json(&store, &[&"--no-default-excludes", &a, &b]);
    assert_eq!(s["files_linked"], 2, "{s}");
    nix::unistd::sync();
    let log = File::create(ext4.root().join("ma.log")).unwrap();
    let m = Mount::start_under(wrapper, &store, &a, &ext4.dir("ma"), &[], log);
    (m, old)
}

pub(crate) const PATCH: &[u8] = b"synced by the guest\n";

/// After a power cut now, a's `etc/f1` holds [`PATCH`] over `old`.
pub(crate) fn assert_f1_synced(ext4: &Ext4, old: &[u8]) {
    let cut = ext4.power_cut();
    let got = fs::read(cut.root().join("a/etc/f1")).unwrap();
    let mut want = old.to_vec();
    want[..PATCH.len()].copy_from_slice(PATCH);
    assert!(
        got == want,
        "the synced write is lost after a power cut (first bytes {:?})",
        String::from_utf8_lossy(&got[..20])
    );
    let f0 = fs::read(cut.root().join("a/etc/f0")).unwrap();
    assert_eq!(f0.len(), old.len(), "etc/f0 is not whole");
}

/// The break of `etc/f1` (the second note) starts the syncfs, paused; its
/// rename is the last change the journal has not committed (f1's copy's
/// fsync committed f0's). A guest's fdatasync of f1 through a second open
/// meanwhile must sync f1's directory itself: the power cut, while the
/// syncfs has still not run, finds the synced data. Passes as it is; fails
/// with a `sync_break` that looks at the notes not yet syncing only (the
/// old file back under the name).
#[test]
fn s41_an_fsync_while_the_syncfs_runs_survives_a_power_cut() {
    if !require_root("s41_an_fsync_while_the_syncfs_runs_survives_a_power_cut") {
        return;
    }
    let ext4 = Ext4::new(&[], &["commit=300"]);
    let env = two_notes_slow_syncfs();
    let env: Vec<&str> = env.iter().map(String::as_str).collect();
    let (m, old) = two_shared_on_ext4(&ext4, &env);
    drop(open_for_writing(&m.path("etc/f0")));
    synced_during_the_break_of_f1(&ext4, &m, &old[1], SYNCFS_PAUSE_MS);
}

/// Breaks `etc/f1` of `m` (on `ext4`; `old`: its content) in a thread of
/// its own, which the daemon pauses (a test pause of `pause_ms`). Meanwhile
/// a second open of the file writes [`PATCH`] and fdatasyncs, and the power
/// is cut: f1 must hold the synced write.
pub(crate) fn synced_during_the_break_of_f1(ext4: &Ext4, m: &Mount, old: &[u8], pause_ms: u64) {
    let breaking = {
        let p = m.path("etc/f1");
        std::thread::spawn(move || drop(open_for_writing(&p)))
    };
    wait_for_pause(m.pid(), pause_ms);
    let f1 = open_for_writing(&m.path("etc/f1"));
    f1.write_all_at(PATCH, 0).unwrap();
    f1.sync_data().unwrap();
    assert!(
        !breaking.is_finished(),
        "the daemon's pause was over before the power cut: nothing shown"
    );
    assert_f1_synced(ext4, old);
    breaking.join().unwrap();
}

/// The syncfs of two notes fails (EIO, injected by strace): the notes stay,
/// and a guest's fdatasync of the second broken file syncs its directory,
/// so a power cut finds its data. Passes as it is; fails with a failed
/// syncfs's notes dropped (the old file back under the name).
#[test]
fn s41_a_failed_syncfs_leaves_its_notes_for_the_guests_fsync() {
    let test = "s41_a_failed_syncfs_leaves_its_notes_for_the_guests_fsync";
    if !require_root(test) {
        return;
    }
    if !installed(test, "strace", "Debian: strace") {
        return;
    }
    let ext4 = Ext4::new(&[], &["commit=300"]);
    let wrapper = [
        "env",
        "UNIFS_TEST_UNSYNCED_BREAKS_MAX=2",
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "--inject=syncfs:error=EIO",
    ];
    let (m, old) = two_shared_on_ext4(&ext4, &wrapper);
    drop(open_for_writing(&m.path("etc/f0")));
    let f1 = open_for_writing(&m.path("etc/f1"));
    let log = fs::read_to_string(&m.log).unwrap();
    assert!(
        log.contains("syncfs of the backing filesystem"),
        "no syncfs failed: nothing shown. log:\n{log}"
    );
    f1.write_all_at(PATCH, 0).unwrap();
    f1.sync_data().unwrap();
    assert_f1_synced(&ext4, &old[1]);
}

/// While one syncfs runs (paused), further breaks fill the notes past
/// their bound: they neither wait for it nor start a second one; the first
/// break after it returns starts the next. Fails with no `under_way` (a
/// second syncfs, and its pause, under the third break; the first one's
/// notes dropped from `syncing`).
#[test]
fn s41_breaks_during_a_syncfs_wait_for_the_next_one() {
    if !require_root("s41_breaks_during_a_syncfs_wait_for_the_next_one") {
        return;
    }
    let w = World::new();
    let m = shared_files_mounted(&w, 5, &two_notes_slow_syncfs());
    let (a, b) = (w.tmp.path().join("a"), w.tmp.path().join("b"));
    let opening = |i: usize| {
        let p: PathBuf = m.path(&format!("f{i}"));
        std::thread::spawn(move || drop(open_for_writing(&p)))
    };
    drop(open_for_writing(&m.path("f0")));
    let first = opening(1);
    wait_for_pause(m.pid(), SYNCFS_PAUSE_MS);
    let start = Instant::now();
    drop(open_for_writing(&m.path("f2")));
    drop(open_for_writing(&m.path("f3")));
    let took = start.elapsed();
    assert!(
        took < BOUND,
        "two breaks took {took:?}: a second syncfs ran"
    );
    assert!(
        !first.is_finished(),
        "the first syncfs was over before the breaks: nothing shown"
    );
    first.join().unwrap();
    // Three notes now: the next break starts a syncfs.
    let next = opening(4);
    wait_for_pause(m.pid(), SYNCFS_PAUSE_MS);
    next.join().unwrap();
    for i in 0..5 {
        let rel = format!("f{i}");
        assert_ne!(
            crate::tree::ino(&a.join(&rel)),
            crate::tree::ino(&b.join(&rel))
        );
    }
}

/// Guests a and b sharing `f0`…`f{n-1}`; a mounted with its daemon run
/// by `wrapper`.
pub(crate) fn shared_files_mounted(w: &World, n: usize, wrapper: &[String]) -> Mount {
    shared_files_mounted_with(w, n, wrapper, &[])
}

/// [`shared_files_mounted`] with mount options `opts`.
pub(crate) fn shared_files_mounted_with(
    w: &World,
    n: usize,
    wrapper: &[String],
    opts: &[&str],
) -> Mount {
    let (a, b) = (w.dir("a"), w.dir("b"));
    for i in 0..n {
        let content = format!("shared {i}\n");
        w.shared(
            content.as_bytes(),
            &[a.join(format!("f{i}")), b.join(format!("f{i}"))],
        );
    }
    let mp = w.dir("m");
    let log = File::create(mp.with_extension("log")).unwrap();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    Mount::start_under(&wrapper, &w.store, &a, &mp, opts, log)
}

/// A daemon without CAP_SETGID only (dropped from its bounding set) says
/// which one it lacks, once; so does one without CAP_SETUID only. Passes
/// as it is.
#[test]
fn s41_a_mount_without_one_of_the_two_capabilities_names_it() {
    let Some((w, g)) = setpriv_world("s41_a_mount_without_one_of_the_two_capabilities_names_it")
    else {
        return;
    };
    for cap in ["setgid", "setuid"] {
        let wrapper = ["setpriv", "--bounding-set", &format!("-{cap}")];
        let log = log_of_a_mount_under(&w, &g, &format!("m-{cap}"), &wrapper);
        let said: Vec<&str> = log.lines().filter(|l| l.contains("reserve")).collect();
        let lacking = format!("(no CAP_{})", cap.to_uppercase());
        assert_eq!(said.len(), 1, "log:\n{log}");
        assert!(said[0].contains(&lacking), "{}", said[0]);
    }
}
