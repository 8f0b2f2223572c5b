//! Review s32 (docwalk): the docs' commands run as written.
//!
//! README.md: "output that cannot be written (a full disk, `> /dev/full`)
//! ends the command with `unifs: cannot write to standard output: …` and
//! exit status 1". `store ls` (text and `-0`, the form backup.md's
//! incremental recipe writes to a file) said only `unifs: No space left on
//! device (os error 28)`, naming nothing.

use crate::common::{require_root, unifs_bin};
use crate::review_s11_fault::two_guests;
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
