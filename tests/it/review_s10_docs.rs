//! The docs as a contract: what an operator who read only the README, the
//! docs and `--help` sees when running the commands they show.

use crate::common::require_root;
use crate::tree::unifs;
use std::process::Output;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unify_all_with_a_missing_or_empty_store_says_so_not_to_use_all() {
    if !require_root("unify_all_with_a_missing_or_empty_store_says_so_not_to_use_all") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A wrong --store (or UNIFS_STORE not set): the message said "no guests
    // given (name guest directories, or use --all)" to a command given --all.
    let store = dir.path().join("typo");
    let out = unifs(&store, &[&"unify", &"--all"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&*store.to_string_lossy()), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(!err.contains("or use --all"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!store.exists());
    // A store that knows no guest yet.
    let store = dir.path().join("store");
    assert!(unifs(&store, &[&"store", &"init"]).status.success());
    let out = unifs(&store, &[&"unify", &"--all"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("knows no guests"), "{err}");
    assert!(!err.contains("or use --all"), "{err}");
    // Without --all, the old message is right.
    let err = stderr(&unifs(&store, &[&"unify"]));
    assert!(err.contains("or use --all"), "{err}");
}
