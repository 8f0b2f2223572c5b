//! `unifs mount` as docs/mount.md describes it to an operator: `--log FILE`.

use super::harness::*;
use crate::common::{require_root, unifs_bin};
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs unifs with its output in files, not pipes: a daemon that kept the
/// caller's stderr (its log could not be opened) made `output()` wait for
/// ever.
fn unifs(store: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    let mut c = Command::new(unifs_bin());
    c.arg("--store").arg(store);
    for a in args {
        c.arg(a.as_ref());
    }
    let status = c
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .status()
        .expect("run unifs");
    let read = |mut f: std::fs::File| {
        use std::io::{Read, Seek};
        let mut v = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    };
    Output {
        status,
        stdout: read(out),
        stderr: read(err),
    }
}

#[test]
fn mount_log_is_written_where_asked_or_refused() {
    if !require_root("mount_log_is_written_where_asked_or_refused") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("hello"), b"hi\n").unwrap();
    let mp = fs::canonicalize(w.dir("m")).unwrap();
    let _guard = UnmountAt(&mp);

    // A log in a directory that does not exist: the mount came up and the
    // daemon logged nowhere, without a word (and kept the caller's stderr,
    // so `$(unifs mount …)` never returned).
    let bad = w.tmp.path().join("no-such-dir/unifs.log");
    let out = unifs(&w.store, &[&"mount", &"--log", &bad, &g, &mp]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&*bad.to_string_lossy()), "{err}");
    assert!(!is_mounted(&mp));

    // Daemonized, -v: the log is plain text (it had terminal colour codes).
    let log = w.tmp.path().join("daemon.log");
    let out = unifs(&w.store, &[&"-v", &"mount", &"--log", &log, &g, &mp]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = daemon_pid(&mp).expect("the daemon runs");
    let _watchdog = watchdog(pid);
    let out = unifs(&w.store, &[&"umount", &mp]);
    assert!(out.status.success());
    assert!(wait_until(Duration::from_secs(30), || {
        fs::read_to_string(&log).is_ok_and(|t| t.contains("Unmounting"))
    }));
    let text = fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\x1b'), "{text:?}");

    // In the foreground, --log was ignored: the log went to stderr.
    let log = w.tmp.path().join("fg.log");
    let mut child = Command::new(unifs_bin())
        .arg("--store")
        .arg(&w.store)
        .args(["-v", "mount", "-f", "--log"])
        .arg(&log)
        .arg(&g)
        .arg(&mp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _watchdog = watchdog(child.id() as i32);
    assert!(wait_until(Duration::from_secs(30), || is_mounted(&mp)));
    assert_eq!(fs::read(mp.join("hello")).unwrap(), b"hi\n");
    let out = unifs(&w.store, &[&"umount", &mp]);
    assert!(out.status.success());
    assert!(wait_until(Duration::from_secs(30), || {
        child.try_wait().unwrap().is_some()
    }));
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("Unmounting"), "{text:?}");
}

#[test]
fn a_clean_unmount_leaves_no_warning_in_the_log() {
    if !require_root("a_clean_unmount_leaves_no_warning_in_the_log") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let mp = fs::canonicalize(w.dir("m")).unwrap();
    let _guard = UnmountAt(&mp);
    // The default level logs warnings only: after a plain mount and umount
    // the log held "WARN Failed to umount filesystem: Invalid argument".
    let log = w.tmp.path().join("daemon.log");
    let out = unifs(&w.store, &[&"mount", &"--log", &log, &g, &mp]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = daemon_pid(&mp).expect("the daemon runs");
    let _watchdog = watchdog(pid);
    assert!(unifs(&w.store, &[&"umount", &mp]).status.success());
    let gone = || !std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(wait_until(Duration::from_secs(30), gone));
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.is_empty(), "{text}");
}
