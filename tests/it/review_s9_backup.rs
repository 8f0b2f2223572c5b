//! Review of the store as backup tools and operators use it (review s9).

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// A host `chmod`, `chown`, `touch` or `setfattr` on a guest path (not
/// through a mount) changes the store object every guest links. A later
/// unify must not link other guests' intact files to that object: each
/// would silently take the changed mode, owner, mtime or xattrs.
#[test]
fn unify_does_not_link_files_to_an_object_changed_around_the_store() {
    if !require_root("unify_does_not_link_files_to_an_object_changed_around_the_store") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for g in [&a, &b] {
        file(g, "usr/mode", &bytes(1, 5000), 0o644);
        file(g, "usr/mtime", &bytes(2, 5000), 0o644);
        file(g, "usr/xattr", &bytes(3, 5000), 0o644);
        file(g, "usr/fine", &bytes(4, 5000), 0o644);
    }
    unify_json(&store, &[&a, &b]);
    // The operator changes a's files on the host: the objects change.
    fs::set_permissions(a.join("usr/mode"), fs::Permissions::from_mode(0o600)).unwrap();
    set_mtime(&a.join("usr/mtime"), MTIME + 3600);
    set_xattr(&a.join("usr/xattr"), "user.changed", b"1");
    // A new guest with the original files.
    let c = dir.path().join("c");
    for (rel, seed) in [
        ("usr/mode", 1),
        ("usr/mtime", 2),
        ("usr/xattr", 3),
        ("usr/fine", 4),
    ] {
        file(&c, rel, &bytes(seed, 5000), 0o644);
    }
    let before = snapshot(&c);
    let out = unifs(&store, &[&"unify", &"--json", &c]);
    let summary = unify_summary(&out);
    assert_invisible(&before, &snapshot(&c), "unify of c");
    assert_eq!(summary["files_linked"], 1, "{summary}");
    let problems = summary["problems"].to_string();
    for rel in ["usr/mode", "usr/mtime", "usr/xattr"] {
        assert_eq!(
            fs::metadata(c.join(rel)).unwrap().nlink(),
            1,
            "{rel} linked"
        );
        assert!(problems.contains(rel), "{rel} not reported: {problems}");
    }
    assert!(problems.contains("store verify"), "{problems}");
}

fn has_marker(path: &Path) -> bool {
    unifs::store::read_marker_path(path).unwrap().is_some()
}

/// Every object file below `store`.
fn object_files(store: &Path) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(store.join("objects"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

/// A store and its guests copied without xattrs (`rsync -aH`, or tar
/// without `--xattrs`, as root) keep their hardlinks but lose the objects'
/// `trusted.unifs.object` markers, by which a mount knows a shared inode:
/// it then writes into the inode every guest links. Unify after such a
/// restore (it looks every object file up again) puts the markers back,
/// as does `store gc` (for a store whose markers went any other way).
#[test]
fn markers_lost_in_a_copy_without_xattrs_are_put_back() {
    if !require_root("markers_lost_in_a_copy_without_xattrs_are_put_back") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab");
    let store = lab.join("store");
    let (a, b) = (lab.join("a"), lab.join("b"));
    for g in [&a, &b] {
        file(g, "usr/one", &bytes(1, 5000), 0o644);
        file(g, "usr/two", &bytes(2, 7000), 0o755);
    }
    unify_json(&store, &[&a, &b]);
    // tar keeps hardlinks; without --xattrs it keeps no xattrs.
    let copy = dir.path().join("copy");
    fs::create_dir(&copy).unwrap();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -cf - . | tar -C {} -xpf -",
            lab.display(),
            copy.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let cstore = copy.join("store");
    let objects = object_files(&cstore);
    assert_eq!(objects.len(), 2);
    assert!(objects.iter().all(|o| !has_marker(o)), "tar kept markers");
    assert_eq!(fs::metadata(copy.join("b/usr/one")).unwrap().nlink(), 3);
    let out = unifs(&cstore, &[&"store", &"verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("store gc` puts it back"));
    // Unify of the copy's guests finds the objects restored: markers back.
    unify_json(&cstore, &[&copy.join("a"), &copy.join("b")]);
    for o in &objects {
        assert!(has_marker(o), "{} has no marker after unify", o.display());
    }
    assert_verify_clean(&cstore);
    // Markers removed in place (not a restore: unify does not look): gc.
    for o in &objects {
        let f = fs::File::open(o).unwrap();
        unifs::sys::xattr::remove_fd(
            std::os::fd::AsFd::as_fd(&f),
            std::ffi::OsStr::new("trusted.unifs.object"),
        )
        .unwrap();
    }
    let dry = unifs(&cstore, &[&"store", &"gc", &"--dry-run", &"--json"]);
    let dry: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(
        dry["markers_restored"].as_array().unwrap().len(),
        2,
        "{dry}"
    );
    assert!(objects.iter().all(|o| !has_marker(o)), "dry run changed");
    let out = unifs(&cstore, &[&"store", &"gc", &"--json"]);
    let out: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        out["markers_restored"].as_array().unwrap().len(),
        2,
        "{out}"
    );
    assert_verify_clean(&cstore);
}

/// `store verify` on an object changed around the store (or lost) must say
/// which guests it hurts: every guest path linking it reads the damage.
#[test]
fn verify_names_the_guests_a_bad_object_hurts() {
    if !require_root("verify_names_the_guests_a_bad_object_hurts") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let guests: Vec<_> = ["a", "b", "c"].iter().map(|n| dir.path().join(n)).collect();
    let [a, b, c] = [&guests[0], &guests[1], &guests[2]];
    for g in [a, b, c] {
        file(g, "usr/lib/shared", &bytes(1, 5000), 0o644);
    }
    for g in [a, b] {
        file(g, "usr/bin/tool", &bytes(2, 6000), 0o755);
    }
    unify_json(&store, &[a, b, c]);
    // c drops its link to the first object: it is no longer hurt by it.
    fs::remove_file(c.join("usr/lib/shared")).unwrap();
    file(c, "usr/lib/shared", &bytes(9, 5000), 0o644);
    // Someone writes into the shared inode on the host.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(a.join("usr/lib/shared"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"oops", 10).unwrap();
    set_mtime(&a.join("usr/lib/shared"), MTIME);
    // And the other object's file is deleted by hand.
    let tool = unifs::store::read_marker_path(&a.join("usr/bin/tool"))
        .unwrap()
        .unwrap()
        .to_hex();
    fs::remove_file(store.join("objects").join(&tool[..2]).join(&tool[2..])).unwrap();
    let out = unifs(&store, &[&"store", &"verify", &"--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{report}");
    let guests_of = |needle: &str| {
        let p = problems
            .iter()
            .find(|p| p["what"].as_str().unwrap().contains(needle))
            .unwrap_or_else(|| panic!("no problem with {needle}: {report}"));
        p["guests"].clone()
    };
    assert_eq!(guests_of("changed"), serde_json::json!(["a", "b"]));
    assert_eq!(guests_of("missing"), serde_json::json!(["a", "b"]));
    let text = unifs(&store, &[&"store", &"verify"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&b.join("usr/lib/shared").display().to_string())
            && !text.contains(&c.display().to_string()),
        "{text}"
    );
}

/// The catalog records the store format (`config.format_version`, the
/// version byte of every object id's header, docs/store-format.md). A
/// store of a format this unifs does not know computes other ids: verify
/// would call every object changed, and unify would add objects of its own
/// format beside the others. Every command refuses it, as it refuses a
/// catalog schema newer than it knows.
#[test]
fn a_store_of_a_newer_format_is_refused() {
    if !require_root("a_store_of_a_newer_format_is_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for g in [&a, &b] {
        file(g, "usr/one", &bytes(1, 5000), 0o644);
    }
    unify_json(&store, &[&a]);
    rusqlite::Connection::open(store.join("catalog.db"))
        .unwrap()
        .execute(
            "UPDATE config SET value = '2' WHERE key = 'format_version'",
            [],
        )
        .unwrap();
    let before = snapshot(&b);
    for args in [
        vec!["store", "verify"],
        vec!["store", "gc"],
        vec!["store", "stats"],
        vec!["unify", "--dry-run"],
        vec!["unify"],
    ] {
        let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = args
            .iter()
            .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
            .collect();
        if args[0] == "unify" {
            all.push(&b);
        }
        let out = unifs(&store, &all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("format 2"), "{args:?}: {err}");
    }
    assert_eq!(fs::metadata(b.join("usr/one")).unwrap().nlink(), 1);
    assert_invisible(&before, &snapshot(&b), "refused unify");
}

/// `unifs manifest GUEST` takes a guest name or a directory. Two guests
/// whose directories share a name are named `web` and `web-2`; from the
/// second one's parent, `unifs manifest web` meant the directory `./web`
/// but silently described the other guest, and the backup held the wrong
/// tree. A word that is both a name and another guest's directory is
/// refused, naming both.
#[test]
fn manifest_refuses_a_word_that_is_a_name_and_another_directory() {
    if !require_root("manifest_refuses_a_word_that_is_a_name_and_another_directory") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (one, two) = (dir.path().join("a/web"), dir.path().join("b/web"));
    file(&one, "etc/hostname", b"one\n", 0o644);
    file(&two, "etc/hostname", b"two\n", 0o644);
    unify_json(&store, &[&one, &two]);
    let run = |cwd: &Path, guest: &str| {
        std::process::Command::new(crate::common::unifs_bin())
            .arg("--store")
            .arg(&store)
            .args(["manifest", guest])
            .current_dir(cwd)
            .output()
            .unwrap()
    };
    let out = run(&dir.path().join("b"), "web");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "described: {text}");
    assert!(err.contains("./web") && err.contains("web-2"), "{err}");
    // Unambiguous ways still work: the name alone, a path, the other name.
    for (cwd, guest, root) in [
        (dir.path().join("a"), "web", &one),
        (dir.path().join("b"), "./web", &two),
        (dir.path().join("b"), "web-2", &two),
        (dir.path().to_path_buf(), "web", &one),
    ] {
        let out = run(&cwd, guest);
        assert!(
            out.status.success(),
            "{guest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let header: serde_json::Value =
            serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
        assert_eq!(header["root"], root.to_str().unwrap(), "{guest} in {cwd:?}");
    }
}

/// An unmarked object file that no guest links is removed by gc, and only
/// that is said: gc put its marker back first, then removed it, and said
/// both ("put back the missing store marker of …", then "removed 1").
#[test]
fn gc_of_an_unmarked_unused_object_only_removes_it() {
    if !require_root("gc_of_an_unmarked_unused_object_only_removes_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    for g in ["a", "b"] {
        file(&lab.join(g), "usr/one", &bytes(1, 5000), 0o644);
    }
    unify_json(&store, &[&lab.join("a"), &lab.join("b")]);
    let objects = object_files(&store);
    assert_eq!(objects.len(), 1);
    let f = fs::File::open(&objects[0]).unwrap();
    unifs::sys::xattr::remove_fd(
        std::os::fd::AsFd::as_fd(&f),
        std::ffi::OsStr::new("trusted.unifs.object"),
    )
    .unwrap();
    fs::remove_dir_all(lab.join("a")).unwrap();
    fs::remove_dir_all(lab.join("b")).unwrap();
    for args in [&["--dry-run"][..], &[]] {
        let mut a: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"store", &"gc", &"--json"];
        a.extend(args.iter().map(|s| s as &dyn AsRef<std::ffi::OsStr>));
        let out = unifs(&store, &a);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["markers_restored"].as_array().map(Vec::len),
            Some(0),
            "{v}"
        );
        assert_eq!(v["objects_removed"], 1, "{v}");
    }
    assert!(object_files(&store).is_empty());
}
