//! Second-round review (s9r2) of the mount's changes: truncation's short
//! copy, the names lock, setattr/xattr changes of nameless nodes.

use super::harness::*;
use crate::common::require_root;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::path::Path;
use unifs::sys::xattr;

/// set, get, remove of `user.tag` through `f`: the errors, as errnos.
fn xattr_round_trip(f: &fs::File) -> (i32, Option<Vec<u8>>, i32) {
    let name = OsStr::new("user.tag");
    let code = |r: std::io::Result<()>| r.err().and_then(|e| e.raw_os_error()).unwrap_or(0);
    let set = code(xattr::set_fd(f.as_fd(), name, b"v"));
    let got = xattr::get_fd(f.as_fd(), name).unwrap();
    let removed = code(xattr::remove_fd(f.as_fd(), name));
    (set, got, removed)
}

fn open_and_unlink(p: &Path) -> fs::File {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(p)
        .unwrap();
    fs::remove_file(p).unwrap();
    f
}

/// fsetxattr/fremovexattr on a file the guest unlinked but holds open
/// failed with ENOENT (the daemon looked for its name), where ext4 changes
/// the open file; fgetxattr and flistxattr already used the open file.
#[test]
fn xattrs_of_an_unlinked_open_file_can_be_changed() {
    if !require_root("review_s9r2_xattrs_of_an_unlinked_open_file_can_be_changed") {
        return;
    }
    let w = World::new();
    let (plain, g) = (w.dir("plain"), w.dir("g"));
    let m = w.mount(&g, "m", &[]);
    let want = xattr_round_trip(&open_and_unlink(&plain.join("f")));
    assert_eq!(want, (0, Some(b"v".to_vec()), 0));
    let got = xattr_round_trip(&open_and_unlink(&m.path("f")));
    assert_eq!(got, want);
}

/// A chmod by path of a file that a rename through the mount keeps
/// replacing (as `sed -i` or a package manager does): the name always
/// exists, and ext4 never fails. The chmod that resolved the old file just
/// before the rename reached its node with no name left and, unless some
/// reader held it open, got ENOENT (hundreds in 3 s), which the kernel
/// does not retry; ESTALE has it look the path up again.
#[test]
fn a_chmod_racing_a_rename_over_its_path_never_says_enoent() {
    if !require_root("review_s9r2_a_chmod_racing_a_rename_over_its_path_never_says_enoent") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("x"), b"x").unwrap();
    let m = w.mount(&g, "m", &[]);
    let (x, t) = (m.path("x"), m.path("t"));
    let stop = AtomicBool::new(false);
    let failures = std::thread::scope(|s| {
        s.spawn(|| {
            let end = std::time::Instant::now() + std::time::Duration::from_secs(3);
            while std::time::Instant::now() < end {
                fs::write(&t, b"y").unwrap();
                fs::rename(&t, &x).unwrap();
            }
            stop.store(true, Ordering::Relaxed);
        });
        let mut failures = Vec::new();
        let mut mode = 0o600;
        while !stop.load(Ordering::Relaxed) {
            mode ^= 0o044;
            match fs::set_permissions(&x, fs::Permissions::from_mode(mode)) {
                // The kernel looks the path up again once; twice in a row
                // is the known limit (docs/mount.md).
                Err(e) if e.raw_os_error() == Some(libc::ESTALE) => {}
                Err(e) => failures.push(e.raw_os_error()),
                Ok(()) => {}
            }
        }
        failures
    });
    let mut errnos = failures.clone();
    errnos.dedup();
    assert!(
        failures.is_empty(),
        "{} chmods of a path that always exists failed: {errnos:?}",
        failures.len()
    );
}
