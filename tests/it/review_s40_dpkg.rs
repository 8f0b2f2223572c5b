//! Review s40-dpkg: package upgrades inside running guests. Three copies of
//! a Debian 12 root were unified and started as guests, and one reinstalled
//! and upgraded coreutils, libc, perl-base, systemd and others with
//! `dpkg -i` (docs/mount.md, "Package upgrades in guests"). dpkg writes
//! each file to `PATH.dpkg-new` and fsyncs it, links the old file to
//! `PATH.dpkg-tmp` (which breaks a shared one: a full copy), renames the
//! new file over `PATH`, and removes the backup once the package is in.
//! These tests make that sequence on shared files through a mount, with
//! dpkg itself where the host has it.

use crate::common::{require_root, require_strace, skip};
use crate::fs::harness::{names, syncfs_calls, syncfs_traced, Mount, World};
use crate::tree::{assert_verify_clean, bytes, file, ino, set_mtime, unifs, unify_json, MTIME};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A package's files: path, old content, new content (a reinstall keeps it).
fn package() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    vec![
        ("usr/bin/tool", bytes(1, 300_000), bytes(2, 310_000)),
        ("usr/lib/libtool.so.1", bytes(3, 120_000), bytes(4, 120_000)),
        (
            "usr/share/doc/tool/README",
            b"read me\n".to_vec(),
            b"read me\n".to_vec(),
        ),
    ]
}

/// Guests a and b with the package's old files, unified into `store`.
fn two_guests(w: &World) -> (PathBuf, PathBuf, PathBuf) {
    let (store, a, b) = (w.dir("s"), w.dir("a"), w.dir("b"));
    for g in [&a, &b] {
        for (rel, old, _) in package() {
            file(g, rel, &old, 0o755);
        }
    }
    let s = unify_json(&store, &[&"--no-default-excludes", &a, &b]);
    assert_eq!(s["files_linked"], 3, "{s}");
    (store, a, b)
}

/// dpkg's first step for one file: `PATH.dpkg-new` made with mode 0,
/// written, given its mode and the package's mtime, synced.
fn write_new(path: &Path, data: &[u8]) {
    let new = with_suffix(path, ".dpkg-new");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&new)
        .unwrap();
    f.write_all(data).unwrap();
    f.set_permissions(fs::Permissions::from_mode(0o755))
        .unwrap();
    f.sync_all().unwrap();
    drop(f);
    set_mtime(&new, MTIME);
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// dpkg's replacement of `files` (path, new content) in its order: every
/// new file written, every old one linked to its backup, every new one
/// renamed over its path, every backup removed.
fn dpkg_replace(files: &[(PathBuf, Vec<u8>)]) {
    for (p, data) in files {
        write_new(p, data);
    }
    for (p, _) in files {
        fs::hard_link(p, with_suffix(p, ".dpkg-tmp")).unwrap();
    }
    for (p, _) in files {
        fs::rename(with_suffix(p, ".dpkg-new"), p).unwrap();
    }
    for (p, _) in files {
        fs::remove_file(with_suffix(p, ".dpkg-tmp")).unwrap();
    }
}

/// Every name below `root` (relative), for finding temp names left behind.
fn all_names(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// No `.dpkg-*` name nor a break's temp name is left in backing tree `g`.
fn assert_no_temp_names(g: &Path) {
    let left: Vec<String> = all_names(g)
        .into_iter()
        .filter(|n| n.contains(".dpkg-") || n.starts_with(".unifs"))
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", g.display());
}

/// After the upgrade of `a` and its unmount: b gets the same files as a
/// host-side install would, a re-run of unify shares each of them between
/// a and b again, and `store gc` frees the objects of the old versions
/// (`freed` of them) and leaves a clean store.
fn reshare_and_collect(store: &Path, a: &Path, b: &Path, rels: &[&str], freed: u64) {
    unify_json(store, &[&"--no-default-excludes", &a, &b]);
    for rel in rels {
        assert_eq!(
            fs::read(a.join(rel)).unwrap(),
            fs::read(b.join(rel)).unwrap(),
            "{rel}"
        );
        assert_eq!(
            ino(&a.join(rel)),
            ino(&b.join(rel)),
            "{rel}: not shared again"
        );
        assert!(fs::metadata(a.join(rel)).unwrap().nlink() >= 3, "{rel}");
    }
    let out = unifs(store, &[&"store", &"gc", &"--json"]);
    assert!(out.status.success(), "{out:?}");
    let gc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(gc["objects_removed"], freed, "{gc}");
    assert_verify_clean(store);
}

/// The whole sequence on shared files through the mount, step by step: a
/// break keeps the path's number, the backup is a hardlink of the path's
/// private copy (link count 2, a write through one seen through the
/// other), the other guest and the store see nothing of it, and no temp
/// name is left behind. A re-run of unify shares the new files again.
#[test]
fn s40_a_dpkg_style_replacement_of_shared_files_keeps_links_and_isolation() {
    if !require_root("s40_a_dpkg_style_replacement_of_shared_files_keeps_links_and_isolation") {
        return;
    }
    let w = World::new();
    let (store, a, b) = two_guests(&w);
    let b_inos: Vec<u64> = package().iter().map(|(r, _, _)| ino(&b.join(r))).collect();
    let m = Mount::start(&store, &a, &w.dir("m"), &[]);
    let pkg = package();
    let paths: Vec<PathBuf> = pkg.iter().map(|(r, _, _)| m.path(r)).collect();
    let before: Vec<u64> = paths.iter().map(|p| ino(p)).collect();

    for (p, (_, _, new)) in paths.iter().zip(&pkg) {
        write_new(p, new);
    }
    for (p, was) in paths.iter().zip(&before) {
        let tmp = with_suffix(p, ".dpkg-tmp");
        fs::hard_link(p, &tmp).unwrap();
        let (st, tst) = (fs::metadata(p).unwrap(), fs::metadata(&tmp).unwrap());
        assert_eq!(
            st.ino(),
            *was,
            "{}: the break changed its number",
            p.display()
        );
        assert_eq!(
            (tst.ino(), st.nlink(), tst.nlink()),
            (*was, 2, 2),
            "{}",
            p.display()
        );
    }
    // Hardlink semantics: the backup and the path are one file.
    let doc = &paths[2];
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(with_suffix(doc, ".dpkg-tmp"))
        .unwrap();
    f.write_all(b"R").unwrap();
    drop(f);
    assert_eq!(fs::read(doc).unwrap(), b"Read me\n");
    for (p, (_, old, new)) in paths.iter().zip(&pkg) {
        fs::rename(with_suffix(p, ".dpkg-new"), p).unwrap();
        assert_eq!(&fs::read(p).unwrap(), new);
        let tmp = with_suffix(p, ".dpkg-tmp");
        assert_eq!(fs::metadata(&tmp).unwrap().nlink(), 1);
        if p != doc {
            assert_eq!(&fs::read(&tmp).unwrap(), old);
        }
    }
    for p in &paths {
        fs::remove_file(with_suffix(p, ".dpkg-tmp")).unwrap();
    }

    for (i, (rel, old, _)) in pkg.iter().enumerate() {
        assert_eq!(&fs::read(b.join(rel)).unwrap(), old, "b's {rel} changed");
        assert_eq!(ino(&b.join(rel)), b_inos[i], "b's {rel} was replaced");
    }
    assert_eq!(names(&a.join("usr/bin")), ["tool"]);
    assert_no_temp_names(&a);
    assert_verify_clean(&store);
    drop(m);

    // As an install does: a new file under the name, never a write into
    // the store's inode.
    for (rel, _, new) in &pkg {
        fs::remove_file(b.join(rel)).unwrap();
        file(&b, rel, new, 0o755);
    }
    let rels: Vec<&str> = pkg.iter().map(|(r, _, _)| *r).collect();
    // The two changed files' old objects go; the reinstalled README's
    // object is shared again.
    reshare_and_collect(&store, &a, &b, &rels, 2);
}

/// A break is noted until the guest syncs the file (its rename must then
/// be made durable), and after 10,000 unsynced notes the daemon syncs the
/// whole backing filesystem (syncfs). dpkg never syncs the backup it
/// removes a moment later, so every package upgrade added notes that
/// nothing took away: a syncfs of the host's filesystem every 10,000
/// replaced shared files (here every 3). A note goes with its file's
/// last name now. Fails before: syncfs called twice.
#[test]
fn s40_a_package_upgrade_leaves_no_unsynced_break_behind() {
    let test = "s40_a_package_upgrade_leaves_no_unsynced_break_behind";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let w = World::new();
    let (a, b) = (w.dir("a"), w.dir("b"));
    let trace = w.tmp.path().join("syncfs.trace");
    let rels: Vec<String> = (0..6).map(|i| format!("usr/lib/lib{i}.so")).collect();
    for (i, rel) in rels.iter().enumerate() {
        fs::create_dir_all(a.join(rel).parent().unwrap()).unwrap();
        fs::create_dir_all(b.join(rel).parent().unwrap()).unwrap();
        w.shared(&bytes(i as u64, 50_000), &[a.join(rel), b.join(rel)]);
    }
    let mut wrapper = syncfs_traced(&trace);
    wrapper.extend(["env", "UNIFS_TEST_UNSYNCED_BREAKS_MAX=3"].map(str::to_owned));
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mp = w.dir("m");
    let log = fs::File::create(mp.with_extension("log")).unwrap();
    let m = Mount::start_under(&wrapper, &w.store, &a, &mp, &[], log);
    // Three packages of two files each, one after the other.
    for pkg in rels.chunks(2) {
        let files: Vec<(PathBuf, Vec<u8>)> =
            pkg.iter().map(|r| (m.path(r), b"new\n".to_vec())).collect();
        dpkg_replace(&files);
    }
    for rel in &rels {
        assert_eq!(fs::read(m.path(rel)).unwrap(), b"new\n");
    }
    drop(m);
    let n = syncfs_calls(&trace);
    assert_eq!(n, 0, "the daemon synced the backing filesystem {n} times");
    assert_no_temp_names(&a);
}

/// dpkg itself (where the host has it, as Debian does): a package
/// installed in two guests and unified is upgraded through one guest's
/// mount with `dpkg --root`; `dpkg --verify` is clean there, the other
/// guest's copy is untouched, and after the other guest's upgrade a re-run
/// of unify shares the new files and `store gc` frees the old ones.
#[test]
fn s40_dpkg_upgrades_a_shared_package_through_the_mount() {
    let test = "s40_dpkg_upgrades_a_shared_package_through_the_mount";
    if !require_root(test) {
        return;
    }
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        skip(test, "needs dpkg and dpkg-deb");
        return;
    }
    let w = World::new();
    let pkg = package();
    let deb = |version: usize| {
        let dir = w.dir(&format!("build{version}"));
        for (rel, old, new) in &pkg {
            file(&dir, rel, if version == 1 { old } else { new }, 0o755);
        }
        let control = format!(
            "Package: s40-tool\nVersion: {version}\nArchitecture: all\n\
             Maintainer: unifs tests <root@localhost>\nDescription: s40 test package\n"
        );
        file(&dir, "DEBIAN/control", control.as_bytes(), 0o644);
        let out = w.tmp.path().join(format!("s40-tool_{version}.deb"));
        dpkg(
            &["dpkg-deb", "--root-owner-group", "-Zgzip", "--build"],
            &[&dir, &out],
        );
        out
    };
    let (v1, v2) = (deb(1), deb(2));
    let (store, a, b) = (w.dir("s"), w.dir("a"), w.dir("b"));
    for g in [&a, &b] {
        fs::create_dir_all(g.join("var/lib/dpkg/info")).unwrap();
        fs::create_dir_all(g.join("var/lib/dpkg/updates")).unwrap();
        fs::write(g.join("var/lib/dpkg/status"), b"").unwrap();
        dpkg(&["dpkg", &root_arg(g), "-i"], &[&v1]);
    }
    // The default excludes keep /var (dpkg's database) private.
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["files_linked"], 3, "{s}");
    let b_inos: Vec<u64> = pkg.iter().map(|(r, _, _)| ino(&b.join(r))).collect();

    let m = Mount::start(&store, &a, &w.dir("m"), &[]);
    dpkg(&["dpkg", &root_arg(&m.dir), "-i"], &[&v2]);
    let verify = dpkg(&["dpkg", &root_arg(&m.dir), "--verify"], &[]);
    assert!(verify.is_empty(), "dpkg --verify in a: {verify}");
    for (rel, _, new) in &pkg {
        assert_eq!(&fs::read(m.path(rel)).unwrap(), new, "{rel}");
    }
    drop(m);
    for (i, (rel, old, _)) in pkg.iter().enumerate() {
        assert_eq!(&fs::read(b.join(rel)).unwrap(), old, "b's {rel} changed");
        assert_eq!(ino(&b.join(rel)), b_inos[i], "b's {rel} was replaced");
    }
    assert!(dpkg(&["dpkg", &root_arg(&b), "--verify"], &[]).is_empty());
    assert_no_temp_names(&a);
    assert_verify_clean(&store);

    dpkg(&["dpkg", &root_arg(&b), "-i"], &[&v2]);
    let rels: Vec<&str> = pkg.iter().map(|(r, _, _)| *r).collect();
    reshare_and_collect(&store, &a, &b, &rels, 2);
}

fn root_arg(root: &Path) -> String {
    format!("--root={}", root.display())
}

/// Runs a dpkg command (`cmd`, then `paths`), which must succeed; its stdout.
fn dpkg(cmd: &[&str], paths: &[&Path]) -> String {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .args(paths)
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd:?} {paths:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
