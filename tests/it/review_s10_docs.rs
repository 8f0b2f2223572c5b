//! The docs as a contract: what an operator who read only the README, the
//! docs and `--help` sees when running the commands they show.

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::path::{Path, PathBuf};

fn guest(dir: &Path, name: &str) -> PathBuf {
    let g = dir.join(name);
    file(&g, "usr/a", &bytes(1, 5000), 0o644);
    file(&g, "etc/own", name.as_bytes(), 0o644);
    g
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

#[test]
fn a_guest_inside_a_guest_the_store_knows_is_refused() {
    if !require_root("a_guest_inside_a_guest_the_store_knows_is_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let v = dir.path().join("v");
    let a = guest(&v, "a");
    let b = guest(&v, "b");
    unify_json(&store, &[&a, &b]);
    // A subdirectory of a known guest (a typo, a shell glob one level too
    // deep) was unified as a guest of its own: its files were then two
    // guests' files, and every later `unify --all` failed on the overlap.
    let inner = a.join("usr");
    let out = unifs(&store, &[&"unify", &inner]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&*a.to_string_lossy()), "{err}");
    assert!(err.contains("store forget"), "{err}");
    // The other way round: a directory around known guests.
    let out = unifs(&store, &[&"unify", &v]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("store forget"), "{}", stderr(&out));
    let stats = unifs(&store, &[&"store", &"stats", &"--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["guests"].as_array().unwrap().len(), 2, "{stats}");
    let out = unifs(&store, &[&"unify", &"--all"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read(inner.join("a")).unwrap(), bytes(1, 5000));
}

#[test]
fn store_ls_since_a_mark_past_the_last_run_is_refused() {
    if !require_root("store_ls_since_a_mark_past_the_last_run_is_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let v = dir.path().join("v");
    let a = guest(&v, "a");
    let b = guest(&v, "b");
    unify_json(&store, &[&a, &b]);
    let snap = dir.path().join("catalog.db");
    assert!(unifs(&store, &[&"store", &"snapshot", &snap])
        .status
        .success());
    for g in [&a, &b] {
        file(g, "opt/new", &bytes(2, 5000), 0o644);
    }
    let mark = unify_json(&store, &[&a, &b])["run"].as_i64().unwrap();
    // docs/backup.md B: the catalog comes back from the snapshot, so run
    // numbers go on from 1 while the backup's saved mark says `mark`.
    for f in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let _ = fs::remove_file(store.join(f));
    }
    fs::copy(&snap, store.join("catalog.db")).unwrap();
    // It listed nothing, exit 0: the incremental backup took no object,
    // and the runs after the restore reuse the numbers up to the mark.
    let out = unifs(&store, &[&"store", &"ls", &"--since", &mark.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("--since {mark}")), "{err}");
    assert!(err.contains("--since 0"), "{err}");
    // A mark this catalog gave still works.
    let out = unifs(&store, &[&"store", &"ls", &"--since", &"1"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn manifest_output_with_a_long_name_is_written() {
    if !require_root("manifest_output_with_a_long_name_is_written") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init_store(&store);
    let a = guest(&dir.path().join("v"), "a");
    // A valid name of 250 bytes: it was written as NAME.tmp-PID, over
    // NAME_MAX, and failed with "File name too long" for a name never given.
    let long = format!("{}.jsonl", "m".repeat(244));
    let out_file = dir.path().join(&long);
    let list = dir.path().join(format!("{}.list", "p".repeat(245)));
    let out = unifs(
        &store,
        &[&"manifest", &a, &"-o", &out_file, &"--private-list", &list],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs::read_to_string(&out_file)
        .unwrap()
        .starts_with("{\"unifs_manifest\""));
    assert!(fs::read(&list).unwrap().ends_with(b"\0"));
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}"); // v, the store, the manifest, the list
}

#[test]
fn restore_from_a_directory_that_does_not_exist_says_so_once() {
    if !require_root("restore_from_a_directory_that_does_not_exist_says_so_once") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let a = guest(&dir.path().join("v"), "a");
    for i in 0..60 {
        file(&a, &format!("etc/own{i}"), &bytes(100 + i, 10), 0o644);
    }
    unify_json(&store, &[&a]);
    let m = dir.path().join("a.jsonl");
    assert!(unifs(&store, &[&"manifest", &a, &"-o", &m])
        .status
        .success());
    // A typo in --from gave one line per private file (the first 50, then
    // "… and 11 more"), none saying that the directory itself is missing.
    let from = dir.path().join("a-privte");
    let target = dir.path().join("restored");
    let out = unifs(
        &store,
        &[&"restore", &"--manifest", &m, &"--from", &from, &target],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("--from {} is not a directory", from.display())),
        "{err}"
    );
    assert!(err.lines().count() <= 3, "{err}");
    assert!(!target.exists());
}

/// `manifest -0` says "with --format private-paths"; given with another
/// format it was ignored: a script meaning `--format private-paths -0` that
/// forgot the format got a JSON manifest it then fed to `tar --null -T`.
#[test]
fn manifest_null_without_private_paths_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let g = guest(dir.path(), "g");
    let store = dir.path().join("store");
    init_store(&store);
    for format in ["jsonl", "mtree"] {
        let out = unifs(&store, &[&"manifest", &g, &"--format", &format, &"-0"]);
        assert_eq!(out.status.code(), Some(1), "{format}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("private-paths"), "{err}");
        assert!(out.stdout.is_empty(), "{format}: wrote a manifest");
    }
    let out = unifs(&store, &[&"manifest", &g, &"-0"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = unifs(
        &store,
        &[&"manifest", &g, &"--format", &"private-paths", &"-0"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.ends_with(b"\0"));
}

/// `guest stop` of a name that is neither running nor configured (a typo)
/// said only "guest NAME is not running", as for a known guest stopped.
#[test]
fn stopping_an_unknown_guest_names_its_missing_config() {
    if !require_root("stopping_an_unknown_guest_names_its_missing_config") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    fs::create_dir(&config).unwrap();
    fs::write(config.join("known.toml"), "root = \"/nonexistent\"\n").unwrap();
    let stop = |name: &str| {
        unifs(
            &dir.path().join("store"),
            &[
                &"guest",
                &"stop",
                &"--config-dir",
                &config,
                &"--run-dir",
                &dir.path().join("run"),
                &name,
            ],
        )
    };
    let out = stop("typo");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no config for guest typo"), "{err}");
    assert!(err.contains("typo.toml"), "{err}");
    // A known guest stopped has nothing to stop: done (review s37).
    let out = stop("known");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "guest known is not running: nothing to stop\n"
    );
}

/// `guest list` showed a guest whose config its start would refuse (a
/// misspelt key) as any stopped guest, without a word.
#[test]
fn guest_list_warns_of_a_config_start_would_refuse() {
    if !require_root("guest_list_warns_of_a_config_start_would_refuse") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    fs::create_dir(&config).unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let good = format!("root = {:?}\ninit = [\"/bin/sh\"]\n", root);
    fs::write(config.join("good.toml"), &good).unwrap();
    fs::write(config.join("bad.toml"), format!("{good}hostnam = \"x\"\n")).unwrap();
    let out = unifs(
        &dir.path().join("store"),
        &[
            &"guest",
            &"list",
            &"--config-dir",
            &config,
            &"--run-dir",
            &dir.path().join("run"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("bad") && listed.contains("good"),
        "{listed}"
    );
    let err = stderr(&out);
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert!(err.contains("bad.toml") && err.contains("hostnam"), "{err}");
    assert!(!err.contains("good.toml"), "{err}");
}

/// The host's `/` as a guest root (`run --root /`, a config's `root = "/"`,
/// or a path that resolves to it) failed late with a bare "pivot_root:
/// EBUSY" (bind) or went on to serve the host's root.
#[test]
fn the_hosts_root_is_refused_as_a_guest_root() {
    if !require_root("the_hosts_root_is_refused_as_a_guest_root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    for root in ["/", "/usr/.."] {
        let out = unifs(
            &store,
            &[
                &"run",
                &"--root",
                &root,
                &"--root-mount",
                &"bind",
                &"--",
                &"/bin/true",
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{root}: {}", stderr(&out));
        assert!(stderr(&out).contains("host's own root"), "{}", stderr(&out));
    }
    let config = dir.path().join("config");
    fs::create_dir(&config).unwrap();
    fs::write(
        config.join("host.toml"),
        "root = \"/\"\ninit = [\"/bin/true\"]\n",
    )
    .unwrap();
    let out = unifs(
        &store,
        &[
            &"guest",
            &"start",
            &"--config-dir",
            &config,
            &"--run-dir",
            &dir.path().join("run"),
            &"host",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("host.toml") && err.contains("host's own root"),
        "{err}"
    );
    assert!(!dir.path().join("run/host/root").exists());
}
