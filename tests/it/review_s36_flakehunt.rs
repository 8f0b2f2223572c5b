//! Races found by looping the suite's tests under load (session 36).

use crate::common::{require_root, require_strace};
use crate::review_s21_store::{guests, spawn_refused_maker, wait_for, Traced};
use crate::tree::{assert_verify_clean, unify_json};
use std::fs;
use std::path::Path;

/// strace's options that stop its tracee (SIGSTOP) after its first `syscall`
/// on `path`.
fn stop_after(syscall: &str, path: &Path) -> Vec<String> {
    let path = path.to_str().unwrap();
    let (trace, inject) = (
        format!("trace={syscall}"),
        format!("inject={syscall}:signal=SIGSTOP:when=1"),
    );
    ["-P", path, "-e", &trace, "-e", &inject]
        .map(String::from)
        .to_vec()
}

/// A unify that found another run's new store and went on to make sure of
/// its layout (`Store::create`, before the lock) while that run refused
/// its guests and took the store away, directory and all, failed with
/// "cannot create STORE/tmp: No such file or directory" (1 in 20 runs of
/// review_s21_store under load), or the like. It is now told the store was
/// taken away, and to run again. Here B is held where strace's options
/// `hold(STORE)` stop it, until A is done.
fn held_while_its_new_store_is_taken_away(test: &str, hold: impl Fn(&Path) -> Vec<String>) {
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let [a, c, d] = guests(dir.path());
    let store = dir.path().join("new");
    let catalog = store.join("catalog.db");
    let (err_a, err_b) = (dir.path().join("a.err"), dir.path().join("b.err"));
    let mut run_a = spawn_refused_maker(&store, &a, &err_a, 3);
    let hold = hold(&store);
    let hold: Vec<&str> = hold.iter().map(String::as_str).collect();
    let mut run_b = Traced::spawn(&hold, &store, &[&c, &d], &err_b);
    wait_for("unify B to stop", || {
        let said = fs::read_to_string(&err_b).unwrap_or_default();
        assert!(said.is_empty(), "B did not stop: {said}");
        run_b.stopped()
    });
    assert!(
        catalog.exists(),
        "A took its store away before B found it: nothing tested"
    );
    assert_eq!(run_a.wait(false), Some(1));
    assert!(!store.exists(), "A left its store's directory");
    assert_eq!(run_b.wait(true), Some(1));
    let err = fs::read_to_string(&err_b).unwrap();
    assert!(err.contains("taken away or replaced"), "{err}");
    // As it says: run again.
    unify_json(&store, &[&c, &d]);
    assert_verify_clean(&store);
}

/// Held right after its mkdir of the store's directory (there already):
/// it said "cannot create STORE: File exists".
#[test]
fn s36_a_unify_held_at_its_mkdir_while_its_new_store_is_taken_away_says_so() {
    held_while_its_new_store_is_taken_away(
        "s36_a_unify_held_at_its_mkdir_while_its_new_store_is_taken_away_says_so",
        |store| stop_after("mkdir", store),
    );
}

/// Held right after it opened the store's `objects/`: it said
/// "STORE/objects: No such file or directory" (`Store::check_catalog`).
#[test]
fn s36_a_unify_held_at_its_open_of_objects_while_its_new_store_is_taken_away_says_so() {
    held_while_its_new_store_is_taken_away(
        "s36_a_unify_held_at_its_open_of_objects_while_its_new_store_is_taken_away_says_so",
        |store| stop_after("openat", &store.join("objects")),
    );
}
