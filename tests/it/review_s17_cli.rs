//! Review s17: what a new operator meets at the command line, taken from a
//! walk through the docs: errors that pointed the wrong way or said nothing.

use crate::common::require_root;
use crate::tree::*;
use std::process::Command;

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
    // advice to create one. (Since review s33 a manifest by a user who is
    // not root is refused before the store is looked at: it could not see
    // the objects' markers.)
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
        err.contains("needs root") && !err.contains("store init"),
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

/// A guest directory named with a newline or an escape sequence was
/// printed raw in the unify summary and `store stats` (a forged table line,
/// the operator's terminal driven), and one whose name is not UTF-8 showed
/// as U+FFFD. They are escaped now as paths are in messages; JSON keeps the
/// names exact.
#[test]
fn guest_names_with_control_characters_are_escaped_in_text_output() {
    if !require_root("guest_names_with_control_characters_are_escaped_in_text_output") {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let names: [&[u8]; 3] = [b"we\nb1", b"bad\xff", b"esc\x1b[31m"];
    let roots: Vec<_> = names
        .iter()
        .map(|n| dir.path().join(std::ffi::OsStr::from_bytes(n)))
        .collect();
    for g in &roots {
        file(g, "usr/a", &bytes(1, 5000), 0o644);
    }
    let args: Vec<&dyn AsRef<std::ffi::OsStr>> = std::iter::once(&"unify" as _)
        .chain(roots.iter().map(|r| r as _))
        .collect();
    let unify = unifs(&store, &args);
    assert!(unify.status.success(), "{}", stderr(&unify));
    let stats = unifs(&store, &[&"store", &"stats"]);
    assert!(stats.status.success(), "{}", stderr(&stats));
    for out in [&unify.stdout, &stats.stdout] {
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(!text.lines().any(|l| l.starts_with("b1")), "{text}");
        for shown in ["we\\nb1", "bad\\xff", "esc\\x1b[31m"] {
            assert!(text.contains(shown), "{shown} not in {text}");
        }
    }
    let stats = unifs(&store, &[&"store", &"stats", &"--json"]);
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    let mut json: Vec<_> = v["guests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_string())
        .collect();
    json.sort();
    assert_eq!(json, ["bad\u{fffd}", "esc\x1b[31m", "we\nb1"]);
}
