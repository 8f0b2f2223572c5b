//! Review s32 (docwalk): the docs' commands run as written.
//!
//! README.md: "output that cannot be written (a full disk, `> /dev/full`)
//! ends the command with `unifs: cannot write to standard output: …` and
//! exit status 1". `store ls` (text and `-0`, the form backup.md's
//! incremental recipe writes to a file) said only `unifs: No space left on
//! device (os error 28)`, naming nothing.

use crate::common::{require_root, unifs_bin};
use crate::review_s11_fault::two_guests;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

#[test]
fn store_ls_that_reaches_no_stdout_says_so_as_every_command_does() {
    if !require_root("store_ls_that_reaches_no_stdout_says_so_as_every_command_does") {
        return;
    }
    let (_dir, store, a, b) = two_guests();
    let unified = Command::new(unifs_bin())
        .arg("--store")
        .arg(&store)
        .arg("unify")
        .args([&a, &b])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(unified.success());
    for extra in [&[][..], &["-0"], &["--json"]] {
        let full = std::fs::File::create("/dev/full").unwrap();
        let o = Command::new(unifs_bin())
            .arg("--store")
            .arg(&store)
            .args(["store", "ls"])
            .args(extra)
            .stdout(Stdio::from(full))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "ls {extra:?}: {err}");
        assert_eq!(
            err.trim_end(),
            "unifs: cannot write to standard output: No space left on device (os error 28)",
            "ls {extra:?}"
        );
    }
}

/// Root's own `unshare -Ur` maps uid 0 to the host's uid 0: the refusal
/// said "uid 0 here maps to uid 0", which reads as no reason at all. It
/// must say what is missing: the host's capabilities.
#[test]
fn a_user_namespace_of_roots_own_is_refused_saying_why() {
    if !require_root("a_user_namespace_of_roots_own_is_refused_saying_why") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = crate::review_s27_hostns::in_user_ns(0, dir.path(), &["store", "verify"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        "unifs: unifs store verify must run as root in the host's user namespace (uid 0 \
         here maps to the host's root, but holds no capabilities outside this user \
         namespace)\n"
    );
}

/// mount.md's address-space error names `ulimit -v`, which counts KiB,
/// beside RLIMIT_AS's value in bytes: after `ulimit -v 70000` it said
/// "RLIMIT_AS (`ulimit -v`) is 71680000", a number the user never gave.
#[test]
fn the_address_space_error_gives_ulimit_v_in_its_own_unit() {
    if !require_root("the_address_space_error_gives_ulimit_v_in_its_own_unit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (g, m) = (dir.path().join("g"), dir.path().join("m"));
    std::fs::create_dir(&g).unwrap();
    std::fs::create_dir(&m).unwrap();
    let o = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 70000 && exec \"$0\" --store \"$1\" mount \"$2\" \"$3\"")
        .arg(unifs_bin())
        .arg(dir.path().join("store"))
        .args([&g, &m])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mounted =
        std::fs::metadata(&m).unwrap().dev() != std::fs::metadata(dir.path()).unwrap().dev();
    if mounted {
        let _ = Command::new(unifs_bin()).arg("umount").arg(&m).status();
    }
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("RLIMIT_AS is 71680000 bytes (`ulimit -v` 70000)"),
        "{err}"
    );
}
