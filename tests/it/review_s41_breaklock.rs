//! Review s41-breaklock: the notes of unsynced breaks and the daemon's
//! ids. Every 10,000 breaks nobody synced, the daemon syncs the backing
//! filesystem (syncfs); it held the notes' lock meanwhile, which every
//! unlink or rename of a file's last name takes with the mount's name lock
//! held, so every name operation of the mount waited for the syncfs. And a
//! daemon that cannot switch to a guest user's ids (no CAP_SETUID or
//! CAP_SETGID) lets the user's new entries and writes take root's reserve
//! without a word.

use crate::common::{require_root, skip, wait_for_pause};
use crate::fs::harness::{Mount, World};
use std::fs::{self, File};
use std::path::Path;
use std::time::{Duration, Instant};

/// The test stand-in for a slow syncfs; the name operations must take far
/// less (a loaded CI machine included).
pub(crate) const SYNCFS_PAUSE_MS: u64 = 8_000;
pub(crate) const BOUND: Duration = Duration::from_secs(4);

pub(crate) fn open_for_writing(path: &Path) -> File {
    fs::OpenOptions::new().write(true).open(path).unwrap()
}

/// While the syncfs of the second of two unsynced breaks (the notes'
/// bound, lowered to 2) runs, made slow, the guest removes a file's last
/// name, renames over another, creates, looks up and fsyncs the first
/// broken file: none of them waits for the syncfs. Fails before: the
/// unlink waited the whole pause, holding the name lock.
#[test]
fn s41_name_operations_do_not_wait_for_the_syncfs_of_unsynced_breaks() {
    let test = "s41_name_operations_do_not_wait_for_the_syncfs_of_unsynced_breaks";
    if !require_root(test) {
        return;
    }
    let w = World::new();
    let (a, b) = (w.dir("a"), w.dir("b"));
    for i in 0..2 {
        let content = format!("shared {i}\n");
        w.shared(
            content.as_bytes(),
            &[a.join(format!("f{i}")), b.join(format!("f{i}"))],
        );
    }
    for name in ["gone", "old", "over"] {
        fs::write(a.join(name), name).unwrap();
    }
    let mp = w.dir("m");
    let log = File::create(mp.with_extension("log")).unwrap();
    let pause = format!("UNIFS_TEST_SYNCFS_PAUSE_MS={SYNCFS_PAUSE_MS}");
    let env = ["env", "UNIFS_TEST_UNSYNCED_BREAKS_MAX=2", &pause];
    let m = Mount::start_under(&env, &w.store, &a, &mp, &[], log);
    let first = open_for_writing(&m.path("f0"));
    let second = {
        let p = m.path("f1");
        std::thread::spawn(move || drop(open_for_writing(&p)))
    };
    wait_for_pause(m.pid(), SYNCFS_PAUSE_MS);

    let start = Instant::now();
    fs::remove_file(m.path("gone")).unwrap();
    fs::rename(m.path("old"), m.path("over")).unwrap();
    fs::write(m.path("new"), b"new\n").unwrap();
    assert_eq!(fs::read(m.path("over")).unwrap(), b"old");
    first.sync_all().unwrap();
    let took = start.elapsed();
    assert!(
        took < BOUND,
        "the name operations took {took:?}: they waited for the syncfs"
    );
    assert!(
        !second.is_finished(),
        "the syncfs pause was over before the name operations: nothing shown"
    );
    second.join().unwrap();
    assert!(!a.join("gone").exists() && !a.join("old").exists());
    assert_eq!(fs::read(b.join("f1")).unwrap(), b"shared 1\n");
}

/// A daemon run as root without CAP_SETUID and CAP_SETGID (dropped from
/// its bounding set) cannot make a guest user's entries and writes with
/// the user's ids (setfsuid fails silently), so they take root's reserve
/// on ext4: its log says so, once, and what to do. One with them says
/// nothing of it. Fails before: nothing said.
#[test]
fn s41_a_mount_that_cannot_take_a_users_ids_says_so() {
    let Some((w, g)) = setpriv_world("s41_a_mount_that_cannot_take_a_users_ids_says_so") else {
        return;
    };
    let dropped = log_of_a_mount_under(
        &w,
        &g,
        "m1",
        &["setpriv", "--bounding-set", "-setuid,-setgid"],
    );
    let warning = |log: &str| {
        log.lines()
            .filter(|l| l.contains("CAP_SETUID") && l.contains("reserve"))
            .count()
    };
    assert_eq!(warning(&dropped), 1, "log:\n{dropped}");
    let kept = log_of_a_mount_under(&w, &g, "m2", &[]);
    assert_eq!(warning(&kept), 0, "log:\n{kept}");
}

/// For a test that runs the daemon under setpriv: a world whose guest
/// `g` holds `f` ("f\n"), if root and setpriv are there.
pub(crate) fn setpriv_world(test: &str) -> Option<(World, std::path::PathBuf)> {
    if !require_root(test) || !installed(test, "setpriv", "Debian: util-linux") {
        return None;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("f"), b"f\n").unwrap();
    Some((w, g))
}

/// Whether `program` runs (`--version`); else says the test is skipped
/// and where to get it (`hint`).
pub(crate) fn installed(test: &str, program: &str, hint: &str) -> bool {
    let there = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok();
    if !there {
        skip(test, &format!("needs {program} ({hint})"));
    }
    there
}

/// The log of a mount of `g` (whose file `f` holds "f\n") at `w`'s
/// `name`, its daemon run by `wrapper`, once it read `f` and ended.
pub(crate) fn log_of_a_mount_under(w: &World, g: &Path, name: &str, wrapper: &[&str]) -> String {
    let mp = w.dir(name);
    let log = mp.with_extension("log");
    let m = Mount::start_under(wrapper, &w.store, g, &mp, &[], File::create(&log).unwrap());
    assert_eq!(fs::read(m.path("f")).unwrap(), b"f\n");
    drop(m);
    fs::read_to_string(&log).unwrap()
}
