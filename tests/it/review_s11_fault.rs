//! Syscall fault injection into `unifs unify` with strace's `--inject`
//! (man strace, "Tampering"): the Nth call of a syscall fails with an errno,
//! deterministically. One linking thread (`UNIFS_THREADS=1`) makes "the Nth
//! call" the same call every run.

use crate::common::{require_root, require_strace, unifs_bin};
use crate::tree::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `unifs unify --json GUESTS` with `inject` (e.g. `unlinkat:error=EIO:when=1`)
/// applied by strace, with one linking thread.
fn unify_injected(store: &Path, guests: &[&PathBuf], inject: &str) -> Output {
    let mut cmd = strace_unifs(store, inject, None);
    cmd.args(["unify", "--json", "--no-progress"])
        .args(guests)
        .env("UNIFS_THREADS", "1");
    cmd.output().unwrap()
}

/// `unifs --store STORE` under `strace -f` with `inject` applied, its trace
/// written to `log` (else dropped); the caller adds the command.
pub(crate) fn strace_unifs(store: &Path, inject: &str, log: Option<&Path>) -> Command {
    strace_unifs_on(store, inject, log, None)
}

/// [`strace_unifs`], the injection limited to calls on `file` (strace
/// `-P`: by path, or by an fd open on it) where one is given.
pub(crate) fn strace_unifs_on(
    store: &Path,
    inject: &str,
    log: Option<&Path>,
    file: Option<&Path>,
) -> Command {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o"])
        .arg(log.unwrap_or(Path::new("/dev/null")))
        .arg(format!("--inject={inject}"));
    if let Some(file) = file {
        cmd.arg("-P").arg(file);
    }
    cmd.arg(unifs_bin())
        .args(["--store".as_ref(), store.as_os_str()])
        .env_remove("UNIFS_TEST_LINK_MAX");
    cmd
}

/// Every path below `root` whose name is unify's temp-name form.
fn temp_names(root: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".unifs-tmp-"))
        .map(|e| e.into_path())
        .collect()
}

fn problems(summary: &serde_json::Value) -> Vec<String> {
    summary["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}: {}", p["path"].as_str().unwrap(), p["what"]))
        .collect()
}

/// A temp dir with guests `a` and `b` holding one identical file
/// (`usr/lib/libx.so`) and a store path: (dir, store, a, b).
pub(crate) fn two_guests() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for g in [&a, &b] {
        file(g, "usr/lib/libx.so", &bytes(1, 9000), 0o755);
    }
    (dir, store, a, b)
}

/// The unlink of the swapped-out original failed (EIO): the file was
/// replaced, but its old copy stayed under a `.unifs-tmp-PID-N` name in
/// the guest. The run finished normally, so it kept no record of the
/// directory, and every later run took the name for the guest's own:
/// "left alone", exit 23, for good, and the guest kept seeing the name.
#[test]
fn a_temp_name_unify_could_not_remove_is_removed_by_the_next_run() {
    let test = "a_temp_name_unify_could_not_remove_is_removed_by_the_next_run";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let (_dir, store, a, b) = two_guests();
    let before = snapshot(&b);
    // The first unlinkat of a fresh store's run removes the swapped-out
    // original of b's file.
    let out = unify_injected(&store, &[&a, &b], "unlinkat:error=EIO:when=1");
    let first = unify_summary(&out);
    let left = temp_names(&b);
    assert_eq!(left.len(), 1, "{left:?}");
    let p = problems(&first);
    assert!(
        p.len() == 1 && p[0].contains(".unifs-tmp-") && p[0].contains("Input/output error"),
        "the problem names the temp name and the errno: {p:?}"
    );
    // The file itself was replaced: it reads as before.
    let mut now = snapshot_with(&b, |rel| rel.to_string_lossy().contains(".unifs-tmp-"));
    now = now.without_dir_mtimes();
    assert_invisible(
        &before.clone().without_dir_mtimes(),
        &now,
        "after the failed unlink",
    );

    let second = unify_json(&store, &[&a, &b]);
    assert_eq!(problems(&second), Vec::<String>::new());
    assert_eq!(second["stale_tmp_removed"], 1, "{second}");
    assert_eq!(temp_names(&b), Vec::<PathBuf>::new());
    assert_invisible(&before, &snapshot(&b), "after the next run");
    assert_eq!(
        ino(&a.join("usr/lib/libx.so")),
        ino(&b.join("usr/lib/libx.so"))
    );
    assert_verify_clean(&store);
}

/// An interrupted call (EINTR: a signal arrived, such as the SIGIO of a
/// lease break) did nothing and is made again; it failed the file instead
/// ("Interrupted system call", exit 23, the file left unlinked), and at
/// the store's flock the whole run.
#[test]
fn an_interrupted_syscall_is_made_again_not_reported() {
    let test = "an_interrupted_syscall_is_made_again_not_reported";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    for inject in [
        "linkat:error=EINTR:when=2",
        "renameat2:error=EINTR:when=1",
        "unlinkat:error=EINTR:when=1",
        // (The first is the store's serial, store::SERIAL_XATTR; the
        // second an object's marker.)
        "fsetxattr:error=EINTR:when=2",
        // (unify opens a guest's directories and files with openat2, which
        // only its own wrappers call: the first is the walk's open of `usr`,
        // the seventh a file's open to hash it. An `openat` by count hit a
        // read of /proc/self/mountinfo, which the standard library retries
        // itself, and so tested nothing of unify's.)
        "openat2:error=EINTR:when=1",
        "openat2:error=EINTR:when=7",
        "flock:error=EINTR:when=1",
    ] {
        let (dir, store, a, b) = two_guests();
        for g in [&a, &b] {
            file(g, "usr/bin/tool", &bytes(2, 5000), 0o755);
        }
        let before = snapshot(&b);
        let out = unify_injected(&store, &[&a, &b], inject);
        assert_unaffected(&out, inject, dir.path(), &before, &b);
    }
}

/// Unify of [`two_guests`] with a second file each (`before`: guest `b`
/// before it) went as without `inject`: both files linked, no temp name
/// left below `dir`, `b` reading as before.
pub(crate) fn assert_unaffected(
    out: &Output,
    inject: &str,
    dir: &Path,
    before: &Snapshot,
    b: &Path,
) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{inject}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let s = unify_summary(out);
    assert_eq!(s["files_linked"], 2, "{inject}: {s}");
    assert_eq!(temp_names(dir), Vec::<PathBuf>::new(), "{inject}");
    assert_invisible(before, &snapshot(b), inject);
}

/// A run killed right after creating its record of directory mtimes
/// (`strace --inject=write:signal=SIGKILL:when=2`: before the one write of
/// its head, before any change) leaves the record empty. The next run
/// reported it as "cannot be read (not a record of directory mtimes)" and
/// exited 23, though nothing was lost.
#[test]
fn an_empty_record_of_a_run_killed_at_its_start_is_no_problem() {
    let test = "an_empty_record_of_a_run_killed_at_its_start_is_no_problem";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let (_dir, store, a, b) = two_guests();
    let before = snapshot(&b);
    let out = unify_injected(&store, &[&a, &b], "write:signal=SIGKILL:when=2");
    assert_eq!(out.status.code(), None, "killed");
    let records = files_named_from(&store.join("tmp"), "dirtimes-");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(std::fs::metadata(&records[0]).unwrap().len(), 0);
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(problems(&s), Vec::<String>::new());
    assert!(!records[0].exists(), "the empty record goes");
    assert_invisible(&before, &snapshot(&b), "after the next run");
}

/// A guest `a` and its `cp -al` clone `b` (in the returned temp dir, with
/// the store's path), sharing a file unify splits (in excluded /var) and
/// one it links.
fn guest_and_clone() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    file(&a, "var/log/syslog", &bytes(3, 5000), 0o644);
    file(&a, "usr/bin/tool", &bytes(4, 6000), 0o755);
    let cp = Command::new("cp")
        .arg("-al")
        .arg(&a)
        .arg(&b)
        .status()
        .unwrap();
    assert!(cp.success());
    (dir, store, a, b)
}

/// Splitting an inode a `cp -al` clone shares: when the temp name could
/// not be removed after the swap (EIO), it stayed in the clone holding the
/// *shared* inode (a name of this guest linking the other guest's file,
/// which a write through the clone's mount reaches: invariant 1), while the
/// run said the path was "still shared"; no later run removed it (its
/// content is no object) and each exited 23 for good.
#[test]
fn a_split_whose_temp_name_cannot_be_removed_leaves_no_shared_name_behind() {
    let test = "a_split_whose_temp_name_cannot_be_removed_leaves_no_shared_name_behind";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let (dir, store, a, b) = guest_and_clone();
    let before = snapshot(&b);
    // The first unlinkat removes the swapped-out (shared) inode's temp name.
    let out = unify_injected(&store, &[&a, &b], "unlinkat:error=EIO:when=1");
    let first = unify_summary(&out);
    let p = problems(&first);
    assert!(
        p.iter()
            .any(|p| p.contains("var/log/syslog") && p.contains("Input/output error")),
        "{p:?}"
    );
    assert_eq!(
        temp_names(&b),
        Vec::<PathBuf>::new(),
        "no name of b links a's file"
    );
    assert_invisible(&before, &snapshot(&b), "after the failed split");

    let second = unify_json(&store, &[&a, &b]);
    assert_eq!(problems(&second), Vec::<String>::new());
    assert_eq!(temp_names(dir.path()), Vec::<PathBuf>::new());
    assert_ne!(
        ino(&a.join("var/log/syslog")),
        ino(&b.join("var/log/syslog"))
    );
    assert_invisible(&before, &snapshot(&b), "after the next run");
    assert_verify_clean(&store);
}

/// An I/O error reading a file to hash it, or linking it, was reported as
/// the bare errno ("…/libx.so: Input/output error (os error 5)"): not what
/// failed, nor whether the file was touched.
#[test]
fn an_io_error_is_reported_with_what_failed_and_that_the_file_is_as_it_was() {
    let test = "an_io_error_is_reported_with_what_failed_and_that_the_file_is_as_it_was";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    // linkat 3: b's temp link to the object (1 found no fan-out directory
    // in the new store, 2 made a's file the object once it was made);
    // read 4: a hashing read (found by trying; the dynamic loader makes the
    // first three).
    for (inject, what) in [
        (
            "linkat:error=EIO:when=3",
            "cannot link it (Input/output error",
        ),
        (
            "read:error=EIO:when=4",
            "cannot read it to hash it (Input/output error",
        ),
    ] {
        let (_dir, store, a, b) = two_guests();
        let before = snapshot(&b);
        let s = unify_summary(&unify_injected(&store, &[&a, &b], inject));
        let p = problems(&s);
        assert!(
            p.len() == 1 && p[0].contains(what) && p[0].contains("left as it was"),
            "{inject}: {p:?}"
        );
        assert_invisible(&before, &snapshot(&b), inject);
        assert_eq!(
            problems(&unify_json(&store, &[&a, &b])),
            Vec::<String>::new()
        );
    }
}

/// Splitting an inode a `cp -al` clone shares, killed between the swap and
/// the unlink of the temp name: the temp name kept the *shared* inode in
/// the clone (a write through the clone's mount would reach the other
/// guest: invariant 1). The split ran before the run noted its directories
/// on disk, so every later run took the name for the guest's own ("no
/// killed run recorded changing its directory"), exit 23, for good.
#[test]
fn a_split_killed_before_removing_its_temp_name_is_finished_by_the_next_run() {
    let test = "a_split_killed_before_removing_its_temp_name_is_finished_by_the_next_run";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let (dir, store, a, b) = guest_and_clone();
    let before = snapshot(&b);
    // The first unlinkat removes the swapped-out (shared) inode's temp name.
    let out = unify_injected(&store, &[&a, &b], "unlinkat:signal=SIGKILL:when=1");
    assert!(!out.status.success(), "killed: {out:?}");
    let left = temp_names(&b);
    assert_eq!(
        left.len(),
        1,
        "the kill left the split's temp name: {left:?}"
    );
    assert_eq!(ino(&left[0]), ino(&a.join("var/log/syslog")));

    let second = unify_json(&store, &[&a, &b]);
    assert_eq!(problems(&second), Vec::<String>::new());
    assert_eq!(second["stale_tmp_removed"], 1, "{second}");
    assert_eq!(temp_names(dir.path()), Vec::<PathBuf>::new());
    assert_ne!(
        ino(&a.join("var/log/syslog")),
        ino(&b.join("var/log/syslog"))
    );
    assert_invisible(&before, &snapshot(&b), "after the next run");
    assert_verify_clean(&store);
}

/// The same for a symlink (and any node) a `cp -al` clone shares: the
/// killed split left a `.unifs-tmp-PID-N` symlink in the clone, which no
/// later run looked at (unify reads no symlink), so the guest kept a name
/// it never made, for good.
#[test]
fn review_s23_a_node_split_killed_before_removing_its_temp_name_is_finished_by_the_next_run() {
    let test = "review_s23_a_node_split_killed_before_removing_its_temp_name";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    file(&a, "usr/bin/busybox", &bytes(4, 6000), 0o755);
    std::os::unix::fs::symlink("busybox", a.join("usr/bin/sh")).unwrap();
    let cp = Command::new("cp").arg("-al").arg(&a).arg(&b).status();
    assert!(cp.unwrap().success());
    let before = snapshot(&b);
    let bin_mtime = std::fs::metadata(b.join("usr/bin"))
        .unwrap()
        .modified()
        .unwrap();
    let out = unify_injected(&store, &[&a, &b], "unlinkat:signal=SIGKILL:when=1");
    assert!(!out.status.success(), "killed: {out:?}");
    let left = temp_names(dir.path());
    assert_eq!(
        left.len(),
        1,
        "the kill left the split's temp name: {left:?}"
    );
    assert!(std::fs::symlink_metadata(&left[0]).unwrap().is_symlink());
    // A guest's own node named like it (one link: not the shared node) in
    // that directory is the guest's: reported, never removed.
    let name = left[0].file_name().unwrap().to_str().unwrap();
    let (prefix, seq) = name.rsplit_once('-').unwrap();
    let own = left[0].with_file_name(format!("{prefix}-{}", seq.parse::<u64>().unwrap() + 7));
    std::os::unix::fs::symlink("mine", &own).unwrap();

    let second = unify_json(&store, &[&a, &b]);
    assert_eq!(problems(&second).len(), 1, "{second}");
    assert!(
        problems(&second)[0].contains(&*own.to_string_lossy()),
        "{second}"
    );
    assert_eq!(second["stale_tmp_removed"], 1, "{second}");
    assert_eq!(temp_names(dir.path()), vec![own.clone()]);
    assert_eq!(std::fs::read_link(&own).unwrap(), Path::new("mine"));
    // Gone again, with the mtime it had (the guest's change keeps its own).
    std::fs::remove_file(&own).unwrap();
    let bin_dir = std::fs::File::open(b.join("usr/bin")).unwrap();
    bin_dir.set_modified(bin_mtime).unwrap();
    let sh = |g: &Path| std::fs::symlink_metadata(g.join("usr/bin/sh")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(sh(&a).ino(), sh(&b).ino());
    assert_eq!(
        std::fs::read_link(b.join("usr/bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_invisible(&before, &snapshot(&b), "after the next run");
}
