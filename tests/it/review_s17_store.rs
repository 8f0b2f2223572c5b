//! Review s17-store: store maintenance as a tester found it (forget through
//! a symlink, what verify says of a changed object, the id mode of a new
//! catalog, the way out of a damaged catalog, `--all` and a guest on
//! another filesystem).

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        out.status,
        stderr(out),
        stdout(out)
    );
    stdout(out)
}

/// Guests `names` under `dir`, each with the same file `usr/f` (and `usr/g`).
fn guests(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| {
            let g = dir.join(n);
            file(&g, "usr/f", &bytes(1, 5000), 0o644);
            file(&g, "usr/g", &bytes(2, 3000), 0o755);
            g
        })
        .collect()
}

fn guest_names(store: &Path) -> Vec<String> {
    let out = unifs(store, &[&"store", &"stats", &"--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<String> = stats["guests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// A guest moved with a symlink left at its old path (`mv web1 web1-new; ln
/// -s web1-new web1`): `unify --all` prints `unifs store forget …/web1` for
/// the stale entry, and that very command must forget the stale entry, not
/// the guest the symlink leads to. (It resolved the whole path, symlink
/// and all, and forgot web1-new.)
#[test]
fn forget_drops_the_entry_it_was_printed_for_not_a_symlinks_target() {
    if !require_root("forget_drops_the_entry_it_was_printed_for") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let v = dir.path().join("v");
    let g = guests(&v, &["web1", "web2"]);
    unify_json(&store, &[&g[0], &g[1]]);
    let moved = v.join("web1-new");
    fs::rename(&g[0], &moved).unwrap();
    std::os::unix::fs::symlink("web1-new", &g[0]).unwrap();
    // The catalog of an older unifs, which recorded no guest root's inode:
    // this one refuses a moved guest until its old path is forgotten.
    rusqlite::Connection::open(store.join("catalog.db"))
        .unwrap()
        .execute("UPDATE guests SET root_dev = NULL, root_ino = NULL", [])
        .unwrap();
    unify_json(&store, &[&moved]);

    let out = unifs(&store, &[&"unify", &"--all", &"--json"]);
    assert_eq!(out.status.code(), Some(23), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = s["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{s}");
    let what = problems[0]["what"].as_str().unwrap();
    let printed = format!("unifs store forget {}", g[0].display());
    assert!(what.contains(&printed), "{what}");

    // Exactly the command printed.
    let out = unifs(&store, &[&"store", &"forget", &g[0]]);
    let text = ok(&out);
    assert!(text.contains("forgot guest web1 ("), "{text}");
    assert!(!text.contains("web1-new"), "{text}");
    assert_eq!(guest_names(&store), ["web1-new", "web2"]);
    assert_eq!(
        unify_json(&store, &[&"--all"])["problems"],
        serde_json::json!([])
    );

    // Named again (with the slash a shell's completion adds), the symlink
    // is no guest: refused, saying where it leads, and nothing forgotten.
    let mut slash = g[0].clone().into_os_string();
    slash.push("/");
    let out = unifs(&store, &[&"store", &"forget", &slash]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("not a guest"), "{err}");
    assert!(err.contains("symlink"), "{err}");
    assert!(err.contains(&*moved.to_string_lossy()), "{err}");
    assert_eq!(guest_names(&store), ["web1-new", "web2"]);
    // The guest's own directory still forgets it, through a symlinked
    // parent too.
    let via = dir.path().join("vlink");
    std::os::unix::fs::symlink(&v, &via).unwrap();
    let text = ok(&unifs(
        &store,
        &[&"store", &"forget", &via.join("web1-new")],
    ));
    assert!(text.contains("forgot guest web1-new ("), "{text}");
    assert_eq!(guest_names(&store), ["web2"]);
}

/// `store verify` of objects someone changed on the host (a chmod, chown,
/// touch, setfattr or write on a guest path, which is the object's inode):
/// it said only "content or metadata changed: it now hashes to X". It must
/// say what changed, as far as the catalog's record tells, and how to put
/// it back.
#[test]
fn verify_says_what_changed_in_an_object_and_how_to_put_it_back() {
    if !require_root("verify_says_what_changed_in_an_object") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let g = guests(dir.path(), &["g0", "g1"]);
    file(&g[0], "usr/h", &bytes(3, 4000), 0o644);
    file(&g[1], "usr/h", &bytes(3, 4000), 0o644);
    unify_json(&store, &[&g[0], &g[1]]);
    assert_verify_clean(&store);
    // usr/f: mode, owner, group and mtime; usr/g: an xattr; usr/h: a byte.
    let f = g[0].join("usr/f");
    std::os::unix::fs::chown(&f, Some(1), Some(2)).unwrap();
    fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    set_mtime(&f, MTIME + 100);
    set_xattr(&g[0].join("usr/g"), "user.note", b"x");
    let h = g[0].join("usr/h");
    let mut data = fs::read(&h).unwrap();
    data[10] ^= 1;
    fs::OpenOptions::new()
        .write(true)
        .open(&h)
        .and_then(|w| std::os::unix::fs::FileExt::write_all_at(&w, &data[10..11], 10))
        .unwrap();

    let out = unifs(&store, &[&"store", &"verify", &"--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 3, "{report}");
    let what_of = |ino: u64| -> String {
        problems
            .iter()
            .find(|p| fs::metadata(p["path"].as_str().unwrap()).unwrap().ino() == ino)
            .unwrap_or_else(|| panic!("no problem for inode {ino}: {report}"))["what"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let f_what = what_of(ino(&f));
    for part in ["mode 0644 → 0600", "owner 0 → 1", "group 0 → 2", "mtime"] {
        assert!(f_what.contains(part), "{part}: {f_what}");
    }
    assert!(f_what.contains("content and xattrs as made"), "{f_what}");
    let g_what = what_of(ino(&g[0].join("usr/g")));
    assert!(g_what.contains("): xattrs;"), "{g_what}");
    assert!(g_what.contains("xattrs back"), "{g_what}");
    let h_what = what_of(ino(&h));
    assert!(h_what.contains(" content;"), "{h_what}");
    assert!(h_what.contains("content cannot be put back"), "{h_what}");
    for what in [&f_what, &g_what, &h_what] {
        assert!(what.contains("`unifs store gc`"), "{what}");
    }

    // The command it gives for usr/f puts the object back as it was.
    let text = stdout(&unifs(&store, &[&"store", &"verify"]));
    let fix = text
        .split('`')
        .find(|c| c.starts_with("chown "))
        .unwrap_or_else(|| panic!("no command to put it back: {text}"));
    let st = std::process::Command::new("sh")
        .args(["-c", fix])
        .status()
        .unwrap();
    assert!(st.success(), "{fix}");
    let out = unifs(&store, &[&"store", &"verify", &"--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["problems"].as_array().unwrap().len(),
        2,
        "{fix}: {report}"
    );
    let m = fs::metadata(&f).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o644, 0, 0));
    assert_eq!(m.mtime(), MTIME as i64);
    // The way to keep a change, for the other two: rm, gc, unify.
    for p in report["problems"].as_array().unwrap() {
        fs::remove_file(p["path"].as_str().unwrap()).unwrap();
    }
    ok(&unifs(&store, &[&"store", &"gc"]));
    unify_json(&store, &[&g[0], &g[1]]);
    assert_verify_clean(&store);
    assert_eq!(ino(&h), ino(&g[1].join("usr/h")));
    assert_eq!(fs::read(&h).unwrap(), data);
}

fn remove_catalog(store: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(store.join(format!("catalog.db{suffix}")));
    }
}

/// `store init --new-catalog` must start the catalog in the id mode the
/// store's objects were made in (with or without `--ignore-mtime`): given
/// the other one, it was accepted, and verify then called every object
/// changed and unify added duplicates in the other mode.
#[test]
fn a_new_catalog_in_the_other_id_mode_than_the_objects_is_refused() {
    if !require_root("a_new_catalog_in_the_other_id_mode") {
        return;
    }
    for made_with in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let init = |ignore_mtime: bool| {
            let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
                vec![&"store", &"init", &"--new-catalog"];
            if ignore_mtime {
                args.push(&"--ignore-mtime");
            }
            unifs(&store, &args)
        };
        if made_with {
            ok(&unifs(&store, &[&"store", &"init", &"--ignore-mtime"]));
        } else {
            ok(&unifs(&store, &[&"store", &"init"]));
        }
        let g = guests(dir.path(), &["g0", "g1"]);
        unify_json(&store, &[&g[0], &g[1]]);
        remove_catalog(&store);

        let out = init(!made_with);
        assert_eq!(
            out.status.code(),
            Some(1),
            "made_with {made_with}: {}",
            stdout(&out)
        );
        let err = stderr(&out);
        assert!(err.contains("--ignore-mtime"), "{err}");
        assert!(err.contains("store init --new-catalog"), "{err}");
        assert!(
            !store.join("catalog.db").exists()
                || fs::metadata(store.join("catalog.db")).unwrap().len() == 0,
            "a refused init left a catalog"
        );
        ok(&init(made_with));
        assert_verify_clean(&store);
        let s = unify_json(&store, &[&g[0], &g[1]]);
        assert_eq!(s["objects_added"], 0, "{s}");
        assert_verify_clean(&store);
    }
}

/// A damaged catalog and no snapshot: the messages must give the way out
/// (move the damaged files aside, then `store init --new-catalog`), and
/// that way must work.
#[test]
fn a_damaged_catalog_without_a_snapshot_has_a_way_out() {
    if !require_root("a_damaged_catalog_without_a_snapshot") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let g = guests(dir.path(), &["g0", "g1"]);
    unify_json(&store, &[&g[0], &g[1]]);
    let catalog = store.join("catalog.db");
    let len = fs::metadata(&catalog).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&catalog)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let out = unifs(&store, &[&"store", &"stats"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("snapshot"), "{err}");
    for part in [
        "catalog.db-wal",
        "catalog.db-shm",
        "store init --new-catalog",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
    let out = unifs(&store, &[&"store", &"init", &"--new-catalog"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    for part in ["aside", "catalog.db-wal", "catalog.db-shm"] {
        assert!(err.contains(part), "{part}: {err}");
    }

    // The way out, as said.
    let aside = dir.path().join("damaged");
    fs::create_dir(&aside).unwrap();
    for name in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        if store.join(name).exists() {
            fs::rename(store.join(name), aside.join(name)).unwrap();
        }
    }
    ok(&unifs(&store, &[&"store", &"init", &"--new-catalog"]));
    let s = unify_json(&store, &[&g[0], &g[1]]);
    assert_eq!(s["objects_added"], 0, "{s}");
    assert_verify_clean(&store);
    assert_eq!(guest_names(&store), ["g0", "g1"]);
}

/// Unmounts what a test mounted, even when it fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A guest of the catalog whose directory is now another filesystem's (a
/// disk mounted there): `unify --all` failed for every guest, advising to
/// "put the store on" that mount. Like a gone guest, it is skipped and
/// reported with `store forget`, and the others are unified.
#[test]
fn unify_all_skips_a_catalog_guest_now_on_another_filesystem() {
    if !require_root("unify_all_skips_a_catalog_guest_now_on_another_filesystem") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let g = guests(dir.path(), &["g0", "g1", "g2"]);
    unify_json(&store, &[&g[0], &g[1], &g[2]]);
    nix::mount::mount(
        Some("tmpfs"),
        &g[2],
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let _mounted = Unmount(g[2].clone());
    file(&g[0], "usr/new", &bytes(7, 2000), 0o644);
    file(&g[1], "usr/new", &bytes(7, 2000), 0o644);

    let out = unifs(&store, &[&"unify", &"--all", &"--json"]);
    assert_eq!(out.status.code(), Some(23), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["guests"], serde_json::json!(["g0", "g1"]), "{s}");
    assert_eq!(s["files_linked"], 1, "{s}");
    let problems = s["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{s}");
    assert_eq!(problems[0]["path"], g[2].to_str().unwrap());
    let what = problems[0]["what"].as_str().unwrap();
    assert!(what.contains("another filesystem"), "{what}");
    assert!(
        what.contains(&format!("unifs store forget {}", g[2].display())),
        "{what}"
    );
    // Named, it is still an error (nothing was done).
    let out = unifs(&store, &[&"unify", &g[0], &g[2]]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("store forget"), "{}", stderr(&out));
}

/// A store already given a catalog in the other id mode (before init
/// refused it): verify says so of each object, not just "changed".
#[test]
fn verify_names_objects_made_in_the_other_id_mode() {
    if !require_root("verify_names_objects_made_in_the_other_id_mode") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(&unifs(&store, &[&"store", &"init", &"--ignore-mtime"]));
    let g = guests(dir.path(), &["g0", "g1"]);
    unify_json(&store, &[&g[0], &g[1]]);
    let conn = rusqlite::Connection::open(store.join("catalog.db")).unwrap();
    conn.execute(
        "UPDATE config SET value = '0' WHERE key = 'ignore_mtime'",
        [],
    )
    .unwrap();
    drop(conn);
    let out = unifs(&store, &[&"store", &"verify", &"--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{report}");
    for p in problems {
        let what = p["what"].as_str().unwrap();
        assert!(what.contains("only with the mtime left out"), "{what}");
        assert!(
            what.contains("made in a store with --ignore-mtime"),
            "{what}"
        );
    }
}

#[test]
fn forget_resolves_dot_dot_as_the_kernel_does() {
    if !require_root("forget_resolves_dot_dot_as_the_kernel_does") {
        return;
    }
    // `..` was taken off as text before the parent was resolved:
    // `srv/link/../web1`, with `link` leading to `data/x`, is `data/web1` to
    // the kernel, but forget dropped `srv/web1`, another guest.
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (srv, data) = (dir.path().join("srv"), dir.path().join("data"));
    let a = guests(&srv, &["web1"]).remove(0);
    let b = guests(&data, &["web1"]).remove(0);
    fs::create_dir(data.join("x")).unwrap();
    std::os::unix::fs::symlink(data.join("x"), srv.join("link")).unwrap();
    unify_json(&store, &[&a, &b]);
    let via = srv.join("link/../web1");
    ok(&unifs(&store, &[&"store", &"forget", &via]));
    let out = unifs(&store, &[&"store", &"stats", &"--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let left: Vec<&str> = stats["guests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["path"].as_str().unwrap())
        .collect();
    let a = fs::canonicalize(&a).unwrap();
    assert_eq!(left, [a.to_str().unwrap()], "{stats}");
}

#[test]
fn verify_puts_xattrs_back_after_the_owner() {
    if !require_root("verify_puts_xattrs_back_after_the_owner") {
        return;
    }
    // It said to put the xattrs back first, then chown: the chown took a
    // restored security.capability off again (ping lost cap_net_raw).
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let g = guests(dir.path(), &["g0", "g1"]);
    unify_json(&store, &[&g[0], &g[1]]);
    let f = g[0].join("usr/f");
    std::os::unix::fs::chown(&f, Some(1), Some(1)).unwrap();
    set_xattr(&f, "user.note", b"x");
    let text = stdout(&unifs(&store, &[&"store", &"verify"]));
    let (chown, xattrs) = (text.find("chown 0:0"), text.find("xattrs back"));
    assert!(
        chown.is_some() && xattrs.is_some() && chown < xattrs,
        "{text}"
    );
}
