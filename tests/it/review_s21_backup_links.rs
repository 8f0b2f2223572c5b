//! Review s21: the guest's own hardlinks of symlinks, FIFOs, device nodes
//! and sockets in `manifest` and `restore`, as of regular files.

use crate::common::require_root;
use crate::tree::*;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use unifs::sys::{self, Timestamp};

/// `path`'s owner, mode and times set, not following a symlink (lchmod
/// there is none: a symlink's mode is always 0777).
fn meta(path: &Path, mode: u32, uid: u32, gid: u32, mtime: i64) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    if !fs::symlink_metadata(path).unwrap().is_symlink() {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }
    let t = |sec| Timestamp { sec, nsec: 250 };
    sys::lutimens(path, t(mtime - 100), t(mtime)).unwrap();
}

/// Everything of a non-directory path that restore is to give back: type
/// (with device numbers), mode, owner, mtime, link count, symlink target,
/// xattrs but the store's, content.
fn observed(path: &Path) -> String {
    let m = fs::symlink_metadata(path).unwrap();
    let ft = m.file_type();
    let xattrs: BTreeMap<String, Vec<u8>> = sys::xattr::list_path(path)
        .unwrap()
        .into_iter()
        .map(|(n, v)| (n.to_string_lossy().into_owned(), v))
        .filter(|(n, _)| !n.starts_with("trusted.unifs."))
        .collect();
    let rdev = (ft.is_char_device() || ft.is_block_device()).then(|| m.rdev());
    format!(
        "mode {:o} owner {}:{} mtime {}.{} nlink {} rdev {rdev:?} target {:?} xattrs {xattrs:?} \
         content {:?}",
        m.mode(),
        m.uid(),
        m.gid(),
        m.mtime(),
        m.mtime_nsec(),
        m.nlink(),
        ft.is_symlink().then(|| fs::read_link(path).unwrap()),
        ft.is_file().then(|| fs::read(path).unwrap()),
    )
}

/// A guest with hardlink groups of each type: a regular file pair, a
/// symlink triple (one path in another directory), a FIFO pair, a
/// character device pair and a socket pair, each with its own owner,
/// mode, mtime and an xattr; and an unlinked symlink beside them. Returns
/// the groups (paths relative to the guest).
fn linked_guest(g: &Path) -> Vec<Vec<&'static str>> {
    fs::create_dir_all(g.join("etc/sub")).unwrap();
    fs::create_dir_all(g.join("dev")).unwrap();
    fs::create_dir_all(g.join("run")).unwrap();
    file(g, "etc/file", b"data\n", 0o640);
    std::os::unix::fs::symlink("../target", g.join("etc/sl")).unwrap();
    std::os::unix::fs::symlink("lone", g.join("etc/lone")).unwrap();
    sys::mknod(&g.join("etc/fifo"), libc::S_IFIFO | 0o620, 0, 0).unwrap();
    sys::mknod(&g.join("dev/null"), libc::S_IFCHR | 0o666, 1, 3).unwrap();
    drop(std::os::unix::net::UnixListener::bind(g.join("run/sock")).unwrap());
    let firsts = [
        ("etc/file", 0o640, 11, 12),
        ("etc/sl", 0o777, 21, 22),
        ("etc/fifo", 0o620, 31, 32),
        ("dev/null", 0o666, 41, 42),
        ("run/sock", 0o755, 51, 52),
    ];
    for (i, (rel, mode, uid, gid)) in firsts.into_iter().enumerate() {
        let p = g.join(rel);
        sys::xattr::set_path(&p, OsStr::new("trusted.s21"), rel.as_bytes()).unwrap();
        meta(&p, mode, uid, gid, 1_600_000_000 + i as i64);
    }
    let groups = vec![
        vec!["etc/file", "etc/file2"],
        vec!["etc/sl", "etc/sl2", "etc/sub/sl3"],
        vec!["etc/fifo", "etc/fifo2"],
        vec!["dev/null", "dev/null2"],
        vec!["run/sock", "run/sock2"],
    ];
    for group in &groups {
        for rel in &group[1..] {
            // linkat without AT_SYMLINK_FOLLOW: the symlink, not its target.
            fs::hard_link(g.join(group[0]), g.join(rel)).unwrap();
        }
    }
    groups
}

fn manifest_of(store: &Path, g: &Path, m: &Path) -> Vec<serde_json::Value> {
    let o = unifs(store, &[&"manifest", &g, &"-o", &m]);
    assert!(o.status.success(), "{}", stderr(&o));
    fs::read_to_string(m)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A guest's pair of hardlinked symlinks (nlink 2, one inode) came back
/// from `manifest` + `restore` as two inodes, and so did FIFO and device
/// node pairs: the manifest recorded `link` (and `nlink`) of regular files
/// only, and restore hardlinked only files. Each group is now one inode
/// again, with its link count, target or device numbers and the first
/// path's metadata; sockets are recorded so too, and not restored.
#[test]
fn review_s21_hardlinked_symlinks_fifos_and_devices_restore_as_one_inode_each() {
    if !require_root("review_s21_hardlinked_symlinks_fifos_and_devices_restore_as_one_inode_each") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let (store, g, m, target) = (
        lab.path().join("store"),
        lab.path().join("g"),
        lab.path().join("g.jsonl"),
        lab.path().join("r"),
    );
    let groups = linked_guest(&g);
    init_store(&store);
    let lines = manifest_of(&store, &g, &m);
    // A reader of version 2 would make each symlink, FIFO or device path an
    // inode of its own: it is to refuse the manifest instead.
    assert_eq!(lines[0]["unifs_manifest"], 3, "{:?}", lines[0]);
    let by_path: BTreeMap<&str, &serde_json::Value> = lines[1..]
        .iter()
        .map(|e| (e["path"].as_str().unwrap(), e))
        .collect();
    for group in &groups {
        for (i, rel) in group.iter().enumerate() {
            let e = by_path[rel];
            assert_eq!(e["nlink"], group.len(), "{rel}: {e}");
            let link = if i == 0 { None } else { Some(group[0]) };
            assert_eq!(e["link"].as_str(), link, "{rel}: {e}");
        }
    }
    assert_eq!(by_path["etc/lone"]["nlink"], 1);
    assert!(by_path["etc/lone"].get("link").is_none());

    let o = unifs(
        &store,
        &[
            &"restore",
            &"--json",
            &"--manifest",
            &m,
            &"--from",
            &g,
            &target,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["hardlinks"], 5, "{report}");
    assert_eq!(report["skipped_sockets"], 2, "{report}");
    for group in &groups {
        if group[0].starts_with("run/") {
            for rel in group {
                assert!(fs::symlink_metadata(target.join(rel)).is_err(), "{rel}");
            }
            continue;
        }
        let first = fs::symlink_metadata(target.join(group[0])).unwrap();
        assert_eq!(first.nlink(), group.len() as u64, "{}", group[0]);
        for rel in group {
            let r = target.join(rel);
            assert_eq!(ino(&r), first.ino(), "{rel} is not {}'s inode", group[0]);
            assert_eq!(observed(&r), observed(&g.join(rel)), "{rel}");
        }
    }
    assert_eq!(
        observed(&target.join("etc/lone")),
        observed(&g.join("etc/lone"))
    );
    let inodes: std::collections::HashSet<u64> =
        ["etc/file", "etc/sl", "etc/fifo", "dev/null", "etc/lone"]
            .iter()
            .map(|rel| ino(&target.join(rel)))
            .collect();
    assert_eq!(inodes.len(), 5, "two groups share an inode");
    // Everything else as the guest had it (sockets aside).
    let no_sockets = |rel: &Path| rel.starts_with("run/");
    let mut want = snapshot_with(&g, no_sockets);
    let mut got = snapshot_with(&target, no_sockets);
    // The root has the restore's mtime (as snapshot_for_restore).
    for s in [&mut want, &mut got] {
        s.entries.get_mut(Path::new("")).unwrap().mtime = (0, 0);
    }
    assert_eq!(got, want);
}

/// Restore followed a `link` only on a regular file's entry; now that it
/// follows one on any type, a manifest whose `link` names a path of another
/// type (a symlink "hardlinked" to a regular file), a later path, or is on a
/// directory is refused, nothing written, as `unifs manifest` writes none.
#[test]
fn review_s21_a_link_to_another_type_or_on_a_directory_is_refused() {
    if !require_root("review_s21_a_link_to_another_type_or_on_a_directory_is_refused") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let (store, g, m) = (
        lab.path().join("store"),
        lab.path().join("g"),
        lab.path().join("g.jsonl"),
    );
    linked_guest(&g);
    init_store(&store);
    let lines = manifest_of(&store, &g, &m);
    let cases: [(&str, &str, &str); 4] = [
        (
            "etc/sl2",
            "etc/file",
            "its hardlink etc/file is not an earlier symlink",
        ),
        (
            "etc/fifo2",
            "dev/null",
            "its hardlink dev/null is not an earlier fifo",
        ),
        (
            "dev/null2",
            "etc/sub/sl3",
            "its hardlink etc/sub/sl3 is not an earlier char",
        ),
        (
            "etc/sub",
            "etc",
            "etc/sub: a directory cannot be a hardlink (of etc)",
        ),
    ];
    for (i, (rel, link, refusal)) in cases.into_iter().enumerate() {
        let mut text = String::new();
        for line in &lines {
            let mut line = line.clone();
            if line["path"] == rel {
                line["link"] = link.into();
            }
            text.push_str(&format!("{line}\n"));
        }
        let bad = lab.path().join(format!("bad{i}.jsonl"));
        fs::write(&bad, text).unwrap();
        let target: PathBuf = lab.path().join(format!("r{i}"));
        let o = restore(&store, &bad, &g, &target);
        assert!(!o.status.success(), "{rel}: restored");
        assert!(stderr(&o).contains(refusal), "{rel}: {}", stderr(&o));
        assert!(stderr(&o).contains("nothing was written"), "{}", stderr(&o));
        assert!(!target.exists(), "{rel}");
    }
}
