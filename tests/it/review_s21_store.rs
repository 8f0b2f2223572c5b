//! Store findings of the twenty-first session's testers.

use crate::common::{require_root, require_strace, unifs_bin};
use crate::tree::{assert_verify_clean, file_at, stderr, unifs, unify_json};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Guests `a` (unified, with its copy `a2`, into the store `old`: its files
/// are that store's objects) and the new guests `c` and `d` (copies).
pub(crate) fn guests(dir: &Path) -> [PathBuf; 3] {
    let [a, a2, c, d] = ["a", "a2", "c", "d"].map(|g| dir.join("g").join(g));
    for i in 0..6u8 {
        for g in [&a, &a2] {
            file_at(g, &format!("usr/f{i}"), &[i; 3_000], 0o644, 1_600_000_000);
        }
        for g in [&c, &d] {
            file_at(
                g,
                &format!("usr/f{i}"),
                &[i + 100; 3_000],
                0o644,
                1_600_000_000,
            );
        }
    }
    unify_json(&dir.join("old"), &[&a, &a2]);
    [a, c, d]
}

/// `unifs --store STORE unify --no-progress GUEST…` under `strace STRACE…`,
/// its stderr into `err` and strace's into `err` + `.strace`; killed (with
/// its tracee) on drop.
pub(crate) struct Traced {
    pub(crate) child: Child,
    log: PathBuf,
}

impl Traced {
    pub(crate) fn spawn(strace: &[&str], store: &Path, guests: &[&Path], err: &Path) -> Traced {
        let mut log = err.as_os_str().to_owned();
        log.push(".strace");
        let log = PathBuf::from(log);
        let child = Command::new("strace")
            .args(["-f", "-qq", "-o"])
            .arg(&log)
            .args(strace)
            .arg(unifs_bin())
            .arg("--store")
            .arg(store)
            .args(["unify", "--no-progress"])
            .args(guests)
            .stdout(Stdio::null())
            .stderr(fs::File::create(err).unwrap())
            .spawn()
            .unwrap();
        Traced { child, log }
    }

    /// The unifs process strace runs, once started.
    fn tracee(&self) -> Option<i32> {
        let pid = self.child.id();
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// Whether unifs is stopped by the SIGSTOP strace injected. Not its
    /// state alone: a tracee shows 't' at each syscall strace stops it at
    /// too (every syscall, not just those traced), long enough under load
    /// to be seen; strace logs the stop itself.
    pub(crate) fn stopped(&self) -> bool {
        let Some(pid) = self.tracee() else {
            return false;
        };
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // "pid (comm) S …": the state follows the last ')'.
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        (state.starts_with('T') || state.starts_with('t'))
            && log.contains("--- stopped by SIGSTOP ---")
    }

    /// The exit code, within 60 s; SIGCONT sent meanwhile when `resume`.
    /// Ended by a signal: a panic showing strace's log.
    pub(crate) fn wait(&mut self, resume: bool) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = fs::read_to_string(&self.log).unwrap_or_default();
                assert!(status.code().is_some(), "{status}; strace's log:\n{log}");
                return status.code();
            }
            assert!(Instant::now() < deadline, "the traced unify did not finish");
            if let (true, Some(pid)) = (resume, self.tracee()) {
                // SAFETY: kill has no memory arguments.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if let Some(pid) = self.tracee() {
            // SAFETY: kill has no memory arguments.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (at most 30 s) for `cond`.
pub(crate) fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Unify A of guest `a` (another store's objects) into `store`, missing:
/// it makes the store, is refused, and takes the store away again, its
/// removal of the catalog held `secs` s. Returns once the catalog is there.
pub(crate) fn spawn_refused_maker(store: &Path, a: &Path, err: &Path, secs: u32) -> Traced {
    let catalog = store.join("catalog.db");
    let inject = format!("inject=unlink:delay_enter={}", secs * 1_000_000);
    let run = Traced::spawn(
        &[
            "-P",
            catalog.to_str().unwrap(),
            "-e",
            "trace=unlink",
            "-e",
            &inject,
        ],
        store,
        &[a],
        err,
    );
    wait_for("unify A to make its store", || catalog.exists());
    run
}

/// The store another run made and filled is whole: verify passes, and
/// unify (again) and stats work on it.
fn assert_store_whole(store: &Path, c: &Path, d: &Path) {
    assert!(store.join("catalog.db").is_file(), "catalog.db is gone");
    assert_verify_clean(store);
    unify_json(store, &[&c, &d]);
    let out = unifs(store, &[&"store", &"stats"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A unify into a store missing when it started decided "this run makes
/// the store" before it took the store's lock. Held (here: stopped) at
/// its first mkdir while another unify made that store and filled it, it
/// was then refused (its guest holds another store's objects) and "took
/// away the store it made": the other run's catalog.db, lock, tmp/ and
/// cache/, after which every command said the catalog was lost. It now
/// decides under the lock, leaves the other run's store alone, and says so.
#[test]
fn review_s21_a_refused_unify_leaves_a_store_another_run_made_meanwhile() {
    let test = "review_s21_a_refused_unify_leaves_a_store_another_run_made_meanwhile";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let [a, c, d] = guests(dir.path());
    let store = dir.path().join("new");
    let err = dir.path().join("a.err");
    // A stops right after its first mkdir: the store's directory.
    let mut run_a = Traced::spawn(
        &[
            "-e",
            "trace=mkdir",
            "-e",
            "inject=mkdir:signal=SIGSTOP:when=1",
        ],
        &store,
        &[&a],
        &err,
    );
    wait_for("unify A to stop at its mkdir", || {
        store.is_dir() && run_a.stopped()
    });
    // B makes the store and fills it, meanwhile.
    unify_json(&store, &[&c, &d]);
    assert_eq!(run_a.wait(true), Some(1));
    assert_store_whole(&store, &c, &d);
    let err = fs::read_to_string(&err).unwrap();
    assert!(
        err.contains("objects of another store")
            && err.contains("another unifs run made the store meanwhile")
            && !err.contains("no store was made"),
        "{err}"
    );
    // As it says: run again, the store takes them, with a warning.
    let out = unifs(&store, &[&"unify", &"--no-progress", &a]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("unifs: warning: "), "{err}");
}

/// The same refused unify, on a store it did make, took it away after it
/// had let go of the store's lock: another unify that took the lock in
/// between and made the store its own lost its catalog. The store is now
/// taken away under the lock (the other run is told the store is busy, or
/// that it was taken away: to run again). A's removal of the catalog is
/// held 2 s here, while B tries again and again.
#[test]
fn review_s21_a_refused_unify_takes_its_store_away_under_the_lock() {
    let test = "review_s21_a_refused_unify_takes_its_store_away_under_the_lock";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let [a, c, d] = guests(dir.path());
    let store = dir.path().join("new");
    let err = dir.path().join("a.err");
    // A has made the store: its catalog, under the lock (and there for 2 s
    // at least).
    let mut run_a = spawn_refused_maker(&store, &a, &err, 2);
    let mut refused = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a_done = run_a.child.try_wait().unwrap().is_some();
        let out = unifs(&store, &[&"unify", &"--no-progress", &c, &d]);
        if out.status.success() {
            break;
        }
        // Refused only while A is at it.
        assert!(!a_done, "B failed after A was done: {}", stderr(&out));
        assert!(Instant::now() < deadline, "B never ran: {refused:#?}");
        refused.push(stderr(&out));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(run_a.wait(false), Some(1));
    assert_store_whole(&store, &c, &d);
    let err = fs::read_to_string(&err).unwrap();
    assert!(err.contains("no store was made"), "{err}");
    assert!(
        refused
            .iter()
            .all(|e| e.contains("is busy") || e.contains("taken away or replaced")),
        "{refused:#?}"
    );
}

/// A unify that opened a store just before the refused unify that made it
/// took it away again (under the lock, so this one waited for the lock)
/// went on with the lock taken on the empty directory left: it wrote a new
/// catalog there and failed to link any file into its `objects/`, gone, and
/// left a store with a catalog and no objects/. It is now told the store
/// was taken away, and to run again. Here the store's directory was there
/// before (so it stays); B is stopped just before it takes the lock.
#[test]
fn review_s21_a_unify_that_opened_a_store_taken_away_since_stops() {
    let test = "review_s21_a_unify_that_opened_a_store_taken_away_since_stops";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let [a, c, d] = guests(dir.path());
    let store = dir.path().join("new");
    fs::create_dir(&store).unwrap();
    let catalog = store.join("catalog.db");
    let (err_a, err_b) = (dir.path().join("a.err"), dir.path().join("b.err"));
    let mut run_a = spawn_refused_maker(&store, &a, &err_a, 3);
    // B opens the store A made and stops at its second open of the store's
    // directory (the first lists it, `Store::check_new`): the lock's.
    let mut run_b = Traced::spawn(
        &[
            "-P",
            store.to_str().unwrap(),
            "-e",
            "trace=openat",
            "-e",
            "inject=openat:signal=SIGSTOP:when=2",
        ],
        &store,
        &[&c, &d],
        &err_b,
    );
    wait_for("unify B to stop at the lock", || run_b.stopped());
    assert!(
        catalog.exists(),
        "A took its store away before B had opened it: nothing tested"
    );
    assert_eq!(run_a.wait(false), Some(1));
    assert_eq!(run_b.wait(true), Some(1));
    let err = fs::read_to_string(&err_b).unwrap();
    assert!(err.contains("taken away or replaced"), "{err}");
    // Nothing but the lock file B opened: a store can be made there.
    let left: Vec<_> = fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "lock")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    unify_json(&store, &[&c, &d]);
    assert_verify_clean(&store);
}
