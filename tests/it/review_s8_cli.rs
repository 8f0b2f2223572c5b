//! What a user sees at the command line: bad input is refused in one line
//! that names the path and what to do, and `--json` is always JSON.

use crate::common::require_root;
use crate::tree::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Guest `name` under `dir` with one file every such guest shares.
fn guest(dir: &Path, name: &OsStr) -> PathBuf {
    let g = dir.join(name);
    file(&g, "usr/a", &bytes(1, 5000), 0o644);
    file(&g, "etc/own", name.as_bytes(), 0o644);
    g
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn json_reports_name_guests_and_stores_whose_paths_are_not_utf8() {
    if !require_root("json_reports_name_guests_and_stores_whose_paths_are_not_utf8") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(OsStr::from_bytes(b"st\xff"));
    let a = guest(dir.path(), OsStr::from_bytes(b"n\xff"));
    let b = guest(dir.path(), OsStr::new("b"));
    unify_json(&store, &[&a, &b]);
    let stats = json(&unifs(&store, &[&"store", &"stats", &"--json"]));
    let paths: Vec<&str> = stats["guests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&&*a.to_string_lossy()), "{stats}");
    assert_eq!(stats["store"], *store.to_string_lossy(), "{stats}");
    json(&unifs(&store, &[&"store", &"verify", &"--json"]));
    // An object file the catalog lists but that is gone: named in gc's JSON.
    let obj = first_object_file(&store);
    fs::remove_file(&obj).unwrap();
    let v = json(&unifs(&store, &[&"store", &"verify", &"--json"]).with_code(1));
    assert_eq!(v["problems"][0]["path"], *obj.to_string_lossy(), "{v}");
    let gc = json(&unifs(&store, &[&"store", &"gc", &"--dry-run", &"--json"]));
    assert_eq!(gc["missing_restored"][0], *obj.to_string_lossy(), "{gc}");
}

/// Lets a command that must fail with `code` pass `json`'s success check.
trait WithCode {
    fn with_code(self, code: i32) -> Output;
}

impl WithCode for Output {
    fn with_code(mut self, code: i32) -> Output {
        assert_eq!(self.status.code(), Some(code), "{}", stderr(&self));
        self.status = Command::new("true").status().unwrap();
        self
    }
}

#[test]
fn manifest_takes_a_guest_directory_whose_name_is_not_utf8() {
    if !require_root("manifest_takes_a_guest_directory_whose_name_is_not_utf8") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init_store(&store);
    let a = guest(dir.path(), OsStr::from_bytes(b"n\xff"));
    let out = unifs(&store, &[&"manifest", &a]);
    assert!(out.status.success(), "{}", stderr(&out));
    let header: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|&c| c == b'\n').next().unwrap()).unwrap();
    // The header names the root exactly, as entries name their paths.
    let hex: String = a
        .as_os_str()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(header["root_hex"], hex, "{header}");
    // A manifest that names it so is still read by restore.
    let m = dir.path().join("m.jsonl");
    fs::write(&m, &out.stdout).unwrap();
    let private = dir.path().join("private");
    file(&private, "usr/a", &bytes(1, 5000), 0o644);
    fs::create_dir_all(private.join("etc")).unwrap();
    fs::copy(a.join("etc/own"), private.join("etc/own")).unwrap();
    let target = dir.path().join("restored");
    assert!(unifs(&store, &[&"store", &"init"]).status.success());
    let out = crate::tree::restore(&store, &m, &private, &target);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_min_size_too_large_is_refused_not_wrapped_around() {
    let dir = tempfile::tempdir().unwrap();
    let a = guest(dir.path(), OsStr::new("a"));
    let b = guest(dir.path(), OsStr::new("b"));
    let store = dir.path().join("store");
    // 2^34 GiB is 2^64 bytes: wrapped around, it was 0, so every file.
    let out = unifs(
        &store,
        &[
            &"unify",
            &"--dry-run",
            &"--min-size",
            &"17179869184G",
            &a,
            &b,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("17179869184G"), "{}", stderr(&out));
    assert!(!store.exists());
}

#[test]
fn an_empty_unifs_store_is_named_as_the_empty_setting() {
    let dir = tempfile::tempdir().unwrap();
    let a = guest(dir.path(), OsStr::new("a"));
    let a = a.to_str().unwrap();
    for args in [vec!["unify", "--dry-run", a], vec!["store", "stats"]] {
        let out = Command::new(crate::common::unifs_bin())
            .args(&args)
            .env("UNIFS_STORE", "")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0));
        let err = stderr(&out);
        assert!(err.contains("UNIFS_STORE"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    // --store on the command line wins over an empty UNIFS_STORE.
    let out = Command::new(crate::common::unifs_bin())
        .args(["--store", "st", "unify", "--print-default-excludes"])
        .env("UNIFS_STORE", "")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_empty_unifs_run_dir_or_config_dir_is_named_as_the_empty_setting() {
    for env in ["UNIFS_RUN_DIR", "UNIFS_CONFIG_DIR"] {
        let out = Command::new(crate::common::unifs_bin())
            .args(["guest", "list"])
            .env(env, "")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(env), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn an_exclude_that_is_no_rule_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = guest(dir.path(), OsStr::new("a"));
    let b = guest(dir.path(), OsStr::new("b"));
    let store = dir.path().join("store");
    for pattern in ["", "  ", "#usr"] {
        let out = unifs(
            &store,
            &[&"unify", &"--dry-run", &"--exclude", &pattern, &a, &b],
        );
        assert_eq!(out.status.code(), Some(1), "{pattern:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("--exclude"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert!(!store.exists());
}

#[test]
fn the_same_guest_named_twice_is_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let a = guest(dir.path(), OsStr::new("a"));
    let store = dir.path().join("store");
    let mut slash = a.clone().into_os_string();
    slash.push("/");
    let out = unifs(&store, &[&"unify", &"--dry-run", &a, &slash]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(
        err,
        format!(
            "unifs: guest {} is named twice; name each guest root once\n",
            fs::canonicalize(&a).unwrap().display()
        )
    );
}

#[test]
fn a_store_around_a_guest_is_named_as_given_without_a_trailing_slash() {
    let dir = tempfile::tempdir().unwrap();
    let a = guest(dir.path(), OsStr::new("a"));
    let store = fs::canonicalize(dir.path()).unwrap();
    let out = unifs(&store, &[&"unify", &"--dry-run", &a]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "unifs: {} and the store {} overlap (one is inside the other); keep the store \
             outside every guest\n",
            fs::canonicalize(&a).unwrap().display(),
            store.display()
        )
    );
}

#[test]
fn a_snapshot_into_a_missing_directory_names_that_directory() {
    if !require_root("a_snapshot_into_a_missing_directory_names_that_directory") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = guest(dir.path(), OsStr::new("a"));
    let store = dir.path().join("store");
    unify_json(&store, &[&a]);
    let dest = dir.path().join("nodir/catalog.db");
    let out = unifs(&store, &[&"store", &"snapshot", &dest]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "unifs: cannot write {}: directory {} does not exist: make it first (`mkdir -p {}`)\n",
            dest.display(),
            dest.parent().unwrap().display(),
            dest.parent().unwrap().display()
        )
    );
}

#[test]
fn restore_refuses_a_target_inside_the_store() {
    if !require_root("restore_refuses_a_target_inside_the_store") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = guest(dir.path(), OsStr::new("a"));
    let b = guest(dir.path(), OsStr::new("b"));
    let store = dir.path().join("store");
    unify_json(&store, &[&a, &b]);
    let m = dir.path().join("a.jsonl");
    let list = dir.path().join("a.private");
    let out = unifs(
        &store,
        &[&"manifest", &a, &"-o", &m, &"--private-list", &list],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let private = dir.path().join("private");
    file(&private, "etc/own", b"a", 0o644);
    for target in [store.join("objects/a"), store.join("a")] {
        let out = unifs(
            &store,
            &[&"restore", &"--manifest", &m, &"--from", &private, &target],
        );
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("overlap"), "{err}");
        assert!(!target.exists(), "{err}");
        assert_verify_clean(&store);
    }
}

#[test]
fn manifest_output_that_is_a_directory_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = guest(dir.path(), OsStr::new("a"));
    let store = dir.path().join("store");
    init_store(&store);
    let out_dir = dir.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    for args in [
        vec![&"manifest" as &dyn AsRef<OsStr>, &a, &"-o", &out_dir],
        vec![&"manifest", &a, &"--private-list", &out_dir],
    ] {
        let out = unifs(&store, &args);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            stderr(&out),
            format!(
                "unifs: {} is a directory; name a file to write (it is replaced when complete)\n",
                out_dir.display()
            )
        );
    }
    // a, out and the store
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn usage_errors_exit_1_as_documented_and_help_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    for args in [
        vec!["unify", "--min-size", "4x", "g"],
        vec!["unify", "--no-such-option"],
        vec!["store", "ls", "--since", "abc"],
        vec!["run", "--root", "r", "--cpus", "x", "--", "true"],
        vec!["mount", "g"],
        vec!["no-such-command"],
    ] {
        let args: Vec<&dyn AsRef<OsStr>> = args.iter().map(|a| a as _).collect();
        let out = unifs(&store, &args);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    }
    for args in [["unify", "--help"], ["store", "--version"]] {
        let args: Vec<&dyn AsRef<OsStr>> = args.iter().map(|a| a as _).collect();
        let out = unifs(&store, &args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(!out.stdout.is_empty());
    }
    assert!(!store.exists());
}
