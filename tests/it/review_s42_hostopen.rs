//! Review s42 (hostopen): what unifs opens of a guest's tree on the host,
//! as host root, outside the mount daemon. A guest's root can put a device
//! node (any major and minor: mknod through its mount), a FIFO or a socket
//! at any of its names, or swap one in while unify or gc works. A device's
//! open is its driver's to act on (a tape rewinds, a watchdog arms) and
//! reaches the host's device, which the guest's devices group keeps the
//! guest itself from.
//!
//! - unify opened the files its walk found by name, with no look at what
//!   the name held by then (hashing, the marker reads, the re-check before
//!   linking, a split): a node swapped in after the walk was opened. Tested
//!   here: the hashing, and the re-check of a file the hash cache knew.
//! - `store gc`, giving a missing object its name back from a guest path
//!   the catalog lists, opened whatever that path held.
//!
//! The opens are seen through inotify (IN_OPEN; an `O_PATH` look is no
//! open for it), on a node of /dev/null's numbers: harmless, and its open
//! succeeds, so it is seen.

use crate::guest::harness::{wait_bounded, KillOnDrop};
use crate::review_s31_doubts::stopped;
use crate::review_s35_privpol::Opens;
use crate::tree::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A character device node of /dev/null's numbers (1, 3) at `path`.
pub(crate) fn null_node(path: &Path) {
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

/// Puts a /dev/null node in place of `path` (by rename, as a guest would).
pub(crate) fn swap_for_node(path: &Path) {
    let new = path.with_extension("node");
    null_node(&new);
    std::fs::rename(&new, path).unwrap();
}

/// Two files of one content (and mtime) in a new guest `g` under `dir`.
fn guest_with_twins(dir: &Path) -> std::path::PathBuf {
    let g = dir.join("g");
    for name in ["usr/lib/a.so", "usr/lib/b.so"] {
        file_at(&g, name, &bytes(42, 20_000), 0o644, 1_700_000_000);
    }
    g
}

/// `unify --json GUEST…`, held stopped between its walk and its hashing
/// (UNIFS_TEST_HASH_STOP) while `meanwhile` runs: its summary, and the
/// opens of `watched` (made by `meanwhile`) after it.
pub(crate) fn unify_held(
    store: &Path,
    guests: &[&Path],
    watched: &Path,
    meanwhile: impl FnOnce(),
) -> (serde_json::Value, usize) {
    let mut cmd = Command::new(crate::common::unifs_bin());
    cmd.arg("--store")
        .arg(store)
        .args(["unify", "--json"])
        .args(guests)
        .env("UNIFS_TEST_HASH_STOP", "1")
        .env_remove("UNIFS_TEST_LINK_MAX")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = child.0.as_ref().unwrap().id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stopped(pid) {
        assert!(Instant::now() < deadline, "unify never reached its hashing");
        std::thread::sleep(Duration::from_millis(10));
    }
    meanwhile();
    let opens = Opens::of(watched);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    let out = wait_bounded(child, Duration::from_secs(60));
    (unify_summary(&out), opens.take())
}

/// A guest's file swapped for a device node after unify's walk is not
/// opened by the hashing that follows: it is left alone as changed.
/// Before: unify opened the node (O_RDONLY, by name beneath the root) and
/// only then saw by fstat that it was no longer the file it walked.
#[test]
fn s42_unify_opens_no_device_node_swapped_in_after_its_walk() {
    if !crate::common::require_root("s42_unify_opens_no_device_node_swapped_in_after_its_walk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let g = guest_with_twins(dir.path());
    let b = g.join("usr/lib/b.so");
    let (s, opens) = unify_held(&dir.path().join("store"), &[&g], &b, || swap_for_node(&b));
    assert_eq!(
        opens,
        0,
        "unify opened the device node a guest put at {}: {s}",
        b.display()
    );
    assert_eq!(s["files_linked"], 0, "{s}");
    let problems = s["problems"].to_string();
    assert!(problems.contains("b.so"), "the node is reported: {s}");
}

/// The re-check right before a file is linked, of a file whose ids came
/// from the hash cache (so hashing did not open it): a device node swapped
/// in after the walk is not opened there either. Before: it was opened by
/// name (O_RDONLY) and only then found not to be the file walked.
#[test]
fn s42_unify_recheck_opens_no_device_node_at_a_cached_file() {
    if !crate::common::require_root("s42_unify_recheck_opens_no_device_node_at_a_cached_file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g");
    let store = dir.path().join("store");
    // Of one size, two contents: both hashed (and cached), neither linked.
    let a = file_at(&g, "usr/lib/a.so", &bytes(1, 20_000), 0o644, 1_700_000_000);
    file_at(&g, "usr/lib/b.so", &bytes(2, 20_000), 0o644, 1_700_000_000);
    let s = unify_json(&store, &[&g]);
    assert_eq!(
        (s["files_hashed"].as_u64(), s["files_linked"].as_u64()),
        (Some(2), Some(0)),
        "{s}"
    );
    // A twin of a.so: the next run links a.so (from the cache) and it.
    file_at(&g, "usr/lib/c.so", &bytes(1, 20_000), 0o644, 1_700_000_000);
    let (s, opens) = unify_held(&store, &[&g], &a, || swap_for_node(&a));
    assert!(
        s["cache_hits"].as_u64() >= Some(1),
        "a.so came from the cache: {s}"
    );
    assert_eq!(
        opens,
        0,
        "unify opened the device node a guest put at {}: {s}",
        a.display()
    );
    assert_eq!(s["files_linked"], 0, "{s}");
}

/// `store gc` gives a missing object file its name back from a guest path
/// that still links its inode; where the guest put a device node at every
/// such path, gc must drop the object's rows without opening a node.
/// Before: it opened each (O_RDONLY, beneath the guest's root) and only
/// then saw by fstat that it was no regular file.
#[test]
fn s42_gc_opens_no_device_node_at_a_missing_objects_guest_paths() {
    if !crate::common::require_root("s42_gc_opens_no_device_node_at_a_missing_objects_guest_paths")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let g = guest_with_twins(dir.path());
    let store = dir.path().join("store");
    let s = unify_json(&store, &[&g]);
    assert_eq!(s["files_linked"], 1, "{s}");
    let a = g.join("usr/lib/a.so");
    let id = unifs::store::read_marker_path(&a)
        .unwrap()
        .expect("a marked guest file")
        .to_hex();
    std::fs::remove_file(store.join("objects").join(&id[..2]).join(&id[2..])).unwrap();
    let paths = [a, g.join("usr/lib/b.so")];
    let watched: Vec<Opens> = paths
        .iter()
        .map(|p| {
            swap_for_node(p);
            Opens::of(p)
        })
        .collect();
    let mut cmd = Command::new(crate::common::unifs_bin());
    cmd.arg("--store")
        .arg(&store)
        .args(["store", "gc", "--json"]);
    let out = crate::guest::harness::run_bounded(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "gc: {}", stderr(&out));
    for (p, w) in paths.iter().zip(&watched) {
        assert_eq!(w.take(), 0, "gc opened the device node at {}", p.display());
    }
    let gc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        gc.to_string().contains(&id[2..]),
        "the object is dropped: {gc}"
    );
}
