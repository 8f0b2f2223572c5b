//! Review s17: what a new operator meets at the command line, taken from a
//! walk through the docs: errors that pointed the wrong way or said nothing.

use crate::common::require_root;
use crate::tree::*;
use std::process::Command;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn manifest_usage_errors_exit_1_and_an_unreadable_store_is_no_missing_one() {
    if !require_root("manifest_usage_errors_exit_1_and_an_unreadable_store_is_no_missing_one") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let g = dir.path().join("g");
    file(&g, "usr/a", &bytes(1, 5000), 0o644);
    unify_json(&store, &[&g]);
    // -0 with a format that is not private-paths: refused as usage, exit 1
    // as every refused command (was clap's 2).
    let o = unifs(&store, &[&"manifest", &g, &"--format", &"jsonl", &"-0"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("-0/--null goes with"), "{}", stderr(&o));
    // Not root: the store cannot be read, and was said to be missing, with
    // advice to create one.
    use std::os::unix::process::CommandExt;
    let o = Command::new(crate::common::unifs_bin())
        .arg("--store")
        .arg(&store)
        .arg("manifest")
        .arg(&g)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot read the store")
            && err.contains("root")
            && !err.contains("store init"),
        "{err}"
    );
}

#[test]
fn guest_list_says_when_its_config_dir_cannot_be_read() {
    // A mistyped --config-dir listed no guest and exited 0, as if none
    // were configured.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let o = Command::new(crate::common::unifs_bin())
        .args(["guest", "list", "--config-dir"])
        .arg(&missing)
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains(&missing.display().to_string()),
        "{}",
        stderr(&o)
    );
}

#[test]
fn restore_without_its_store_says_to_put_it_back_not_to_make_one() {
    // It said to create a store (`store init`): an empty one holds none of
    // the guest's shared files; backup.md says to put the old one back.
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("lost-store");
    let o = unifs(
        &store,
        &[
            &"restore",
            &"--manifest",
            &dir.path().join("m.jsonl"),
            &"--from",
            &dir.path().join("private"),
            &dir.path().join("target"),
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("put it back first") && !err.contains("store init"),
        "{err}"
    );
}
