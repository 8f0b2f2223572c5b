//! Review s28 (docs): what README.md promises of every command's output,
//! "output that cannot be written (a full disk, `> /dev/full`) ends the
//! command with `unifs: cannot write to standard output: …` and exit status
//! 1". `guest logs` dropped its output on such a stdout and exited 0, and
//! `manifest` said `unifs: writing standard output: …`.

use crate::common::{require_root, unifs_bin};
use std::process::{Command, Output, Stdio};

const SAID: &str = "unifs: cannot write to standard output: No space left on device";

/// `cmd` run with stdout to /dev/full: its output.
fn to_full(mut cmd: Command) -> Output {
    let full = std::fs::File::create("/dev/full").unwrap();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(full))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn guest_logs_that_reach_no_stdout_fail() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    std::fs::create_dir_all(run.join("web")).unwrap();
    std::fs::write(run.join("web/console.log"), b"booting\nup\n").unwrap();
    std::fs::write(run.join("web/mount.log"), b"a warning\n").unwrap();
    for extra in [&[][..], &["--mount"], &["-n", "1"]] {
        let mut cmd = Command::new(unifs_bin());
        cmd.args(["guest", "logs"])
            .args(extra)
            .arg("--run-dir")
            .arg(&run)
            .arg("--config-dir")
            .arg(d.path().join("conf"))
            .arg("web");
        let o = to_full(cmd);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "logs {extra:?}: {err}");
        assert_eq!(err.matches(SAID).count(), 1, "logs {extra:?}: {err}");
    }
}

#[test]
fn a_manifest_that_reaches_no_stdout_says_so_as_every_command_does() {
    if !require_root("a_manifest_that_reaches_no_stdout_says_so_as_every_command_does") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    let g = d.path().join("g");
    std::fs::create_dir(&g).unwrap();
    std::fs::write(g.join("f"), b"data").unwrap();
    let init = Command::new(unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["store", "init"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(init.success());
    for format in ["jsonl", "mtree", "private-paths"] {
        let mut cmd = Command::new(unifs_bin());
        cmd.arg("--store")
            .arg(&store)
            .args(["manifest", "--format", format])
            .arg(&g);
        let o = to_full(cmd);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{format}: {err}");
        assert_eq!(err.matches(SAID).count(), 1, "{format}: {err}");
    }
}
