//! Review s33 (nonroot): unifs run by a user who is not root, or by root
//! with capabilities dropped (capsh, setpriv, a service's
//! CapabilityBoundingSet=), as operators' scripts do.
//!
//! - Root without CAP_SYS_ADMIN sees no trusted.* xattrs: `store verify`
//!   called every object's marker missing (and told the user to run gc),
//!   `manifest` left every shared file's object out and exited 0, and unify
//!   warned "Operation not permitted" once per file, exit 23. Without
//!   CAP_FOWNER unify changed a guest directory's mtime and could not put
//!   it back (invariant 3). Each is now refused before it starts, naming
//!   the capability and what it is for.
//! - A user who is not root: `manifest` wrote a manifest without a single
//!   object and exited 0; `store verify` reported every object BAD
//!   ("Operation not permitted", O_NOATIME); a store they cannot enter was
//!   reported as a bare "objects: Permission denied"; and `store stats` on
//!   a store whose group they were given read access to failed on `tmp/`,
//!   which only writers use.

use crate::common::{require_root, unifs_bin};
use crate::tree::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `setpriv` options, unifs arguments, and a word the refusal must hold.
type Case<'a> = (&'a [&'a str], &'a [&'a dyn AsRef<std::ffi::OsStr>], &'a str);

/// The user the tests run unifs as: nobody, which owns nothing here.
const NOBODY: u32 = 65534;

/// Two guests with one shared file unified into `store`, and a second
/// pair of identical files (one owned by another user) not yet unified,
/// in a temp dir other users may enter.
fn lab() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let store = dir.path().join("store");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for g in [&a, &b] {
        file_at(
            g,
            "usr/lib/shared.so",
            &bytes(1, 9000),
            0o644,
            1_700_000_000,
        );
    }
    unify_json(&store, &[&a, &b]);
    for g in [&a, &b] {
        let p = file_at(g, "usr/new/other", &bytes(2, 5000), 0o644, 1_700_000_000);
        std::os::unix::fs::chown(p, Some(1234), Some(1234)).unwrap();
        set_dir_mtimes(g, 1_700_000_000);
    }
    (dir, store, a, b)
}

/// `unifs --store STORE ARGS` under `setpriv PRIV`.
fn unifs_as(privs: &[&str], store: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args(privs)
        .arg("--")
        .arg(unifs_bin())
        .arg("--store")
        .arg(store);
    for a in args {
        cmd.arg(a);
    }
    cmd.output().unwrap()
}

/// A refusal: exit 1, one line on stderr holding every one of `words`,
/// nothing on stdout.
pub(crate) fn assert_refused(o: &Output, words: &[&str], what: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{what}: {o:?}");
    assert_eq!(err.lines().count(), 1, "{what}: {err}");
    for w in words {
        assert!(err.contains(w), "{what}: no {w:?} in {err}");
    }
    assert!(!err.contains("not permitted"), "{what}: {err}");
    assert!(
        o.stdout.is_empty(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// The object files in `store`, by path.
fn objects(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in fs::read_dir(store.join("objects")).unwrap().flatten() {
        out.extend(fs::read_dir(d.path()).unwrap().flatten().map(|e| e.path()));
    }
    out.sort();
    out
}

#[test]
fn root_without_the_capabilities_a_command_needs_is_refused_before_it_starts() {
    if !require_root("root_without_the_capabilities_a_command_needs_is_refused_before_it_starts") {
        return;
    }
    let (_dir, store, a, b) = lab();
    let before = [snapshot(&a), snapshot(&b)];
    let objects_before = objects(&store);
    let catalog_before = fs::read(store.join("catalog.db")).unwrap();
    let no_sys_admin = ["--bounding-set=-sys_admin"];
    let no_fowner = ["--bounding-set=-fowner"];
    let cases: [Case; 5] = [
        (&no_sys_admin, &[&"unify", &a, &b], "CAP_SYS_ADMIN"),
        (&no_fowner, &[&"unify", &a, &b], "CAP_FOWNER"),
        (&no_sys_admin, &[&"store", &"verify"], "CAP_SYS_ADMIN"),
        (&no_sys_admin, &[&"store", &"gc"], "CAP_SYS_ADMIN"),
        (&no_sys_admin, &[&"manifest", &a], "CAP_SYS_ADMIN"),
    ];
    for (privs, args, cap) in cases {
        let o = unifs_as(privs, &store, args);
        let what = format!(
            "{privs:?} {:?}",
            args.iter().map(|a| a.as_ref()).collect::<Vec<_>>()
        );
        assert_refused(&o, &[cap, "lacks"], &what);
    }
    // Nothing was changed: not a guest (a directory's mtime), not the
    // store.
    assert_invisible(&before[0], &snapshot(&a), "a");
    assert_invisible(&before[1], &snapshot(&b), "b");
    assert_eq!(objects(&store), objects_before);
    assert_eq!(fs::read(store.join("catalog.db")).unwrap(), catalog_before);
    // With them all, the same commands work.
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["files_linked"], 1, "{s}");
    assert_verify_clean(&store);
}

#[test]
fn a_user_who_is_not_root_is_told_so_or_served_what_they_may_read() {
    if !require_root("a_user_who_is_not_root_is_told_so_or_served_what_they_may_read") {
        return;
    }
    let (_dir, store, a, _b) = lab();
    let nobody = [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ];
    // What needs root says so at once, and writes nothing.
    for args in [
        &[&"manifest" as &dyn AsRef<std::ffi::OsStr>, &a][..],
        &[&"store", &"verify"],
        &[&"store", &"gc"],
        &[&"unify", &a, &_b],
    ] {
        let o = unifs_as(&nobody, &store, args);
        assert_refused(&o, &["needs root", "uid 65534"], &format!("{:?}", o));
    }
    // A store made as unifs makes it (0700): a reader is told it is
    // root's, naming the store.
    let o = unifs_as(&nobody, &store, &[&"store", &"stats"]);
    assert_refused(
        &o,
        &[
            &store.display().to_string(),
            "root's alone",
            "run the command as root",
        ],
        "stats",
    );
    // A group given read access to the store, its objects and catalog (not
    // to tmp/, which only writers use): the read-only commands work, and
    // say what root's do.
    let root_stats = unifs(&store, &[&"store", &"stats", &"--json"]);
    assert!(root_stats.status.success(), "{}", stderr(&root_stats));
    for d in std::iter::once(store.clone())
        .chain([store.join("objects"), store.join("catalog.db")])
        .chain(
            fs::read_dir(store.join("objects"))
                .unwrap()
                .flatten()
                .map(|e| e.path()),
        )
    {
        std::os::unix::fs::chown(&d, None, Some(NOBODY)).unwrap();
        let mode = if d.is_dir() { 0o750 } else { 0o640 };
        fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
    }
    assert_eq!(
        fs::metadata(store.join("tmp")).unwrap().mode() & 0o777,
        0o700
    );
    let o = unifs_as(&nobody, &store, &[&"store", &"stats", &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, root_stats.stdout);
    // A writer that needs no capability but the store's lock: told whose
    // the lock is, and to run it as root.
    let o = unifs_as(&nobody, &store, &[&"store", &"forget", &a]);
    assert_refused(&o, &["lock", "run the command as root"], "forget");
    assert_eq!(
        unifs(&store, &[&"store", &"stats", &"--json"]).stdout,
        root_stats.stdout
    );
}
