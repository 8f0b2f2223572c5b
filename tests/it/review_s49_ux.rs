//! Session 49 (ux): a new operator's walk through the README and docs.

use crate::common::{require_root, unifs_bin};
use std::path::Path;
use std::process::{Command, Output};

fn unifs_at(store: &Path, args: &[&str]) -> Output {
    Command::new(unifs_bin())
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("UNIFS_STORE")
        .output()
        .unwrap()
}

/// A `--store` naming a directory of other files (a mistyped path, the
/// guests' parent) was told `create one with unifs --store DIR store init`
/// by every reader, and `manifest` to "create the store first" the same
/// way: a command that refuses that directory ("not empty"). They now say
/// to check the path, and give the init advice only where init works.
/// (Before: `store stats` printed `… create one with `unifs --store DIR
/// store init``.)
#[test]
fn s49_a_store_path_of_other_files_is_not_told_to_run_store_init_there() {
    if !require_root("s49_a_store_path_of_other_files_is_not_told_to_run_store_init_there") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("notes.txt"), b"not a store").unwrap();
    let guest = dir.path().join("g");
    std::fs::create_dir(&guest).unwrap();
    let guest_arg = guest.to_str().unwrap();
    // The advice given is what init answers there.
    let init = unifs_at(&full, &["store", "init"]);
    assert_eq!(init.status.code(), Some(1));
    let shown = full.display().to_string();
    for args in [
        &["store", "stats"][..],
        &["store", "verify"],
        &["store", "gc"],
        &["store", "ls"],
        &["store", "runs"],
        &["manifest", guest_arg],
    ] {
        let out = unifs_at(&full, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&shown),
            "{args:?} does not name the path: {err}"
        );
        assert!(
            !err.contains("store init"),
            "{args:?} advises `store init`, which refuses {shown}: {err}"
        );
        assert!(err.contains("--store"), "{args:?}: {err}");
    }
    assert_eq!(
        std::fs::read_dir(&full).unwrap().count(),
        1,
        "something was written into {shown}"
    );
    // A path with nothing there keeps the advice: init works there.
    let missing = dir.path().join("missing");
    let out = unifs_at(&missing, &["store", "stats"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store init"), "{err}");
}

/// `unifs umount` of a path that does not exist (a typo) said only
/// `mountpoint P: No such file or directory (os error 2)`, where `unifs
/// mount` says what is wrong; now it says nothing is mounted there.
#[test]
fn s49_umount_of_a_missing_path_says_nothing_is_mounted_there() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("mnt-typo");
    let out = Command::new(unifs_bin())
        .arg("umount")
        .arg(&missing)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(!err.contains("os error"), "{err}");
    assert!(err.contains("nothing is mounted there"), "{err}");
}

/// A bad memory size was said as `invalid size "64Q"`, naming neither
/// the option nor the config key (a config's `[limits] cpus` was named,
/// `memory` not), in `run --memory`, `guest update --memory` and a
/// config's `[limits] memory`. (Before: `unifs: bad guest config
/// …/s49-mem.toml: invalid size "64Q": expected a number …`.)
#[test]
fn s49_a_bad_memory_size_is_named_by_its_option_or_key() {
    if !require_root("s49_a_bad_memory_size_is_named_by_its_option_or_key") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cfg, run, root) = (
        dir.path().join("cfg"),
        dir.path().join("run"),
        dir.path().join("root"),
    );
    for d in [&cfg, &root] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(
        cfg.join("s49-mem.toml"),
        format!("root = {:?}\n[limits]\nmemory = \"64Q\"\n", root),
    )
    .unwrap();
    let guest = |verb: &str, extra: &[&str]| {
        Command::new(unifs_bin())
            .args(["guest", verb, "--config-dir"])
            .arg(&cfg)
            .arg("--run-dir")
            .arg(&run)
            .args(extra)
            .arg("s49-mem")
            .output()
            .unwrap()
    };
    let start = guest("start", &[]);
    let update = guest("update", &["--memory", "64Q"]);
    let run_cmd = Command::new(unifs_bin())
        .args(["run", "--memory", "64Q", "--root"])
        .arg(&root)
        .args(["--", "/bin/true"])
        .output()
        .unwrap();
    for (out, name) in [
        (start, "[limits] memory"),
        (update, "--memory"),
        (run_cmd, "--memory"),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("invalid {name} \"64Q\"")),
            "not named {name}: {err}"
        );
    }
}
