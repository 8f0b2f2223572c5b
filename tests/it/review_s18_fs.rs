//! Review s18-fs: filesystems other than plain ext4 (xfs, btrfs, ext4 made
//! with unusual options), each loop-mounted for its test.

use crate::common::require_root;
use crate::tree::{file, init_store, restore, stderr, unifs};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A filesystem in an image file, loop-mounted for a test; unmounted (and
/// its loop device, which `mount -o loop` made autoclear, freed) even when
/// the test fails.
pub(crate) struct Loopfs {
    dir: tempfile::TempDir,
}

impl Loopfs {
    /// `mkfs.KIND ARGS` on a sparse image of `size` bytes, mounted.
    pub(crate) fn new(kind: &str, size: u64, mkfs_args: &[&str]) -> Loopfs {
        Loopfs {
            dir: crate::common::mounted_image(kind, size, mkfs_args),
        }
    }

    fn xfs() -> Loopfs {
        Loopfs::new("xfs", 320 << 20, &["-q"])
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join("fs").join(rel)
    }
}

impl Drop for Loopfs {
    fn drop(&mut self) {
        let fs = self.dir.path().join("fs");
        if nix::mount::umount(&fs).is_err() {
            let _ = nix::mount::umount2(&fs, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Runs `cmd` with `args`, which must succeed; its stdout.
pub(crate) fn run(cmd: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let mut c = Command::new(cmd);
    for a in args {
        c.arg(a.as_ref());
    }
    let out = c.output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names of the xattrs of `path` (root sees `trusted.*`).
fn xattr_names(path: &Path) -> Vec<String> {
    run(
        "getfattr",
        &[&"-h", &"-m", &"-", &"--absolute-names", &path],
    )
    .lines()
    .filter(|l| !l.is_empty() && !l.starts_with('#'))
    .map(|l| l.split('=').next().unwrap().to_string())
    .collect()
}

/// A guest at `g` with a file with an access ACL and a directory with a
/// default ACL; its manifest (from a store of its own) and a copy of all
/// its files as the private files. Returns (store, manifest, private).
fn acl_guest(g: &Path, work: &Path) -> (PathBuf, PathBuf, PathBuf) {
    file(g, "odd/acl", b"acl'd\n", 0o640);
    fs::create_dir_all(g.join("odd/dacl")).unwrap();
    run("setfacl", &[&"-m", &"u:1234:rw", &g.join("odd/acl")]);
    run(
        "setfacl",
        &[&"-d", &"-m", &"u:1234:rwx", &g.join("odd/dacl")],
    );
    let store = work.join("store");
    init_store(&store);
    let m = work.join("g.jsonl");
    let o = unifs(&store, &[&"manifest", &g, &"-o", &m]);
    assert!(o.status.success(), "{}", stderr(&o));
    let private = work.join("private");
    run("cp", &[&"-a", &g, &private]);
    (store, m, private)
}

fn assert_acls_kept(target: &Path) {
    let file_acl = run("getfacl", &[&"-p", &target.join("odd/acl")]);
    assert!(file_acl.contains("user:1234:rw-"), "{file_acl}");
    let dir_acl = run("getfacl", &[&"-p", &target.join("odd/dacl")]);
    assert!(dir_acl.contains("default:user:1234:rwx"), "{dir_acl}");
}

/// xfs shows an ACL to root twice, as `system.posix_acl_*` and as
/// `trusted.SGI_ACL_*`. A restore onto xfs of a manifest made elsewhere set
/// the ACL, then removed every xattr the manifest did not name, the SGI
/// name too, which took the ACL with it: every ACL lost, "every file
/// verified". Now the SGI names are left alone (and the restore checks
/// each path's xattrs once set).
#[test]
fn a_restore_onto_xfs_keeps_the_acls() {
    if !require_root("review_s18_a_restore_onto_xfs_keeps_the_acls") {
        return;
    }
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let (store, m, private) = acl_guest(&work.path().join("g"), work.path());
    let xfs = Loopfs::xfs();
    let target = xfs.path("g");
    let o = restore(&store, &m, &private, &target);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_acls_kept(&target);
}

/// The reverse: a manifest made on xfs recorded the `trusted.SGI_ACL_*`
/// names, and a restore elsewhere made them real (junk) `trusted.*`
/// xattrs. The manifest leaves them out now.
#[test]
fn a_manifest_made_on_xfs_records_acls_once() {
    if !require_root("review_s18_a_manifest_made_on_xfs_records_acls_once") {
        return;
    }
    let xfs = Loopfs::xfs();
    let (store, m, private) = acl_guest(&xfs.path("g"), &xfs.path(""));
    let text = fs::read_to_string(&m).unwrap();
    assert!(!text.contains("SGI_ACL"), "{text}");
    assert!(text.contains("system.posix_acl_access"), "{text}");
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let target = work.path().join("g");
    let o = restore(&store, &m, &private, &target);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_acls_kept(&target);
    for p in ["odd/acl", "odd/dacl"] {
        let names = xattr_names(&target.join(p));
        assert!(names.iter().all(|n| !n.contains("SGI")), "{p}: {names:?}");
    }
}

/// On ext4 with 128-byte inodes a file's xattrs all live in one block: one
/// that 4000 bytes of its own fill has no room for the store's marker.
/// Every run warned "No space left on device", naming the object's path,
/// and exited 23 for good. Such files are left alone now, counted
/// (`files_no_xattr_room`), and the run exits 0.
#[test]
fn files_whose_xattrs_leave_no_room_for_the_marker_are_left_alone() {
    if !require_root("review_s18_files_whose_xattrs_leave_no_room_for_the_marker") {
        return;
    }
    let ext4 = Loopfs::new("ext4", 64 << 20, &["-q", "-b", "4096", "-I", "128"]);
    let guests = [ext4.path("g1"), ext4.path("g2")];
    for g in &guests {
        let f = file(g, "odd/bigx", b"same content\n", 0o644);
        crate::tree::set_xattr(&f, "user.big", &[b'x'; 4000]);
        file(g, "usr/plain", b"plain and shared\n", 0o644);
    }
    let store = ext4.path("store");
    for run in 0..2 {
        let s = crate::tree::unify_json(&store, &[&guests[0], &guests[1]]);
        assert_eq!(s["problems"].as_array().unwrap().len(), 0, "run {run}: {s}");
        assert_eq!(s["files_no_xattr_room"], 2, "run {run}: {s}");
    }
    let out = unifs(&store, &[&"unify", &guests[0], &guests[1]]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no room for the store's xattr"), "{text}");
    assert_eq!(
        crate::tree::ino(&guests[0].join("usr/plain")),
        crate::tree::ino(&guests[1].join("usr/plain"))
    );
    assert_ne!(
        crate::tree::ino(&guests[0].join("odd/bigx")),
        crate::tree::ino(&guests[1].join("odd/bigx"))
    );
}

fn projid(path: &Path) -> u32 {
    let out = run("lsattr", &[&"-p", &"-d", &path]);
    out.split_whitespace().next().unwrap().parse().unwrap()
}

/// Guests in directories of their own project (`chattr -p N +P`, the
/// xfs/ext4 directory-quota layout): link() into such a directory of
/// another project fails with EXDEV, so every run warned "Invalid
/// cross-device link" and exited 23; without +P a guest's file silently
/// took the object's project ID. Files of another project than their
/// object are now left alone (`files_other_project`), like other metadata
/// a hardlink shares; files of one project still share.
#[test]
fn files_of_another_project_are_left_alone() {
    if !require_root("review_s18_files_of_another_project_are_left_alone") {
        return;
    }
    let xfs = Loopfs::xfs();
    let guests: Vec<PathBuf> = ["p1", "p2", "p3", "p4"]
        .iter()
        .map(|g| xfs.path(g))
        .collect();
    for (g, proj) in guests.iter().zip(["10", "20", "10"]) {
        fs::create_dir_all(g.join("usr")).unwrap();
        run("chattr", &[&"-p", &proj, &"+P", &g.join("usr")]);
    }
    for g in &guests {
        crate::tree::file_at(g, "usr/tool", b"the same tool\n", 0o755, 1_700_000_000);
    }
    // p4: no +P directory, its file of project 30 of its own.
    run("chattr", &[&"-p", &"30", &guests[3].join("usr/tool")]);
    let store = xfs.path("store");
    let args: Vec<&dyn AsRef<std::ffi::OsStr>> = guests.iter().map(|g| g as _).collect();
    for run in 0..2 {
        let s = crate::tree::unify_json(&store, &args);
        assert_eq!(s["problems"].as_array().unwrap().len(), 0, "run {run}: {s}");
        assert_eq!(s["files_other_project"], 2, "run {run}: {s}");
    }
    let ino = |g: &PathBuf| crate::tree::ino(&g.join("usr/tool"));
    assert_eq!(ino(&guests[0]), ino(&guests[2]));
    assert_ne!(ino(&guests[0]), ino(&guests[1]));
    assert_ne!(ino(&guests[0]), ino(&guests[3]));
    assert_eq!(projid(&guests[1].join("usr/tool")), 20);
    assert_eq!(projid(&guests[3].join("usr/tool")), 30);
}

/// xfs' own inode flags (nodefrag, extent size hints, …) are not shown by
/// FS_IOC_GETFLAGS: unify linked such files, and every guest's path got
/// the flag. They count as inode flags now: the file is left alone.
#[test]
fn files_with_xfs_only_flags_are_left_alone() {
    if !require_root("review_s18_files_with_xfs_only_flags_are_left_alone") {
        return;
    }
    let xfs = Loopfs::xfs();
    let guests = [xfs.path("q1"), xfs.path("q2")];
    for g in &guests {
        crate::tree::file_at(g, "data", b"the same data\n", 0o644, 1_700_000_000);
    }
    run("xfs_io", &[&"-c", &"chattr +f", &guests[0].join("data")]);
    let s = crate::tree::unify_json(&xfs.path("store"), &[&guests[0], &guests[1]]);
    assert_eq!(s["files_with_inode_flags"], 1, "{s}");
    let flags = run(
        "xfs_io",
        &[&"-r", &"-c", &"lsattr", &guests[1].join("data")],
    );
    assert!(
        !flags.split_whitespace().next().unwrap().contains('f'),
        "{flags}"
    );
    let ino = |g: &PathBuf| crate::tree::ino(&g.join("data"));
    assert_ne!(ino(&guests[0]), ino(&guests[1]));
}

fn btrfs() -> Loopfs {
    Loopfs::new("btrfs", 256 << 20, &["-q"])
}

/// A guest that is a btrfs subvolume has a device number of its own: the
/// refusal said it was "on another filesystem (FS/sv1)" and advised "put
/// the store on FS/sv1", which cannot help. It now says it is another
/// subvolume and that store and guests must share one.
#[test]
fn a_guest_that_is_a_btrfs_subvolume_is_refused_as_one() {
    if !require_root("review_s18_a_guest_that_is_a_btrfs_subvolume") {
        return;
    }
    let fs = btrfs();
    for sv in ["sv1", "sv2"] {
        run("btrfs", &[&"-q", &"subvolume", &"create", &fs.path(sv)]);
        file(&fs.path(sv), "usr/tool", b"tool\n", 0o755);
    }
    let store = fs.path("store");
    for round in 0..2 {
        // First with no store yet, then with one made on the top level.
        let o = unifs(&store, &[&"unify", &fs.path("sv1"), &fs.path("sv2")]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("btrfs subvolume"), "{err}");
        assert!(err.contains("must be in one subvolume"), "{err}");
        assert!(!err.contains("put the store on"), "{err}");
        if round == 0 {
            init_store(&store);
        }
    }
}

/// A store path that is a symlink to a store on another filesystem: the
/// refusal named the guest's mount point as the store's too. It names the
/// filesystem the link leads to now.
#[test]
fn a_store_symlinked_from_another_filesystem_is_named_where_it_is() {
    if !require_root("review_s18_a_store_symlinked_from_another_filesystem") {
        return;
    }
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let real = work.path().join("store");
    init_store(&real);
    let fs = btrfs();
    std::os::unix::fs::symlink(&real, fs.path("storelink")).unwrap();
    file(&fs.path("g"), "usr/tool", b"tool\n", 0o755);
    let o = unifs(&fs.path("storelink"), &[&"unify", &fs.path("g")]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let store_mount = run("stat", &[&"-c", &"%m", &real]);
    let want = format!("storelink ({})", store_mount.trim());
    assert!(err.contains(&want), "{want} in {err}");
}

/// `unifs manifest` does not enter a btrfs subvolume inside a guest (its
/// inode numbers would mix with the guest's); it listed it as an empty
/// directory, silently. It warns now, naming it.
#[test]
fn a_manifest_warns_of_a_btrfs_subvolume_it_leaves_out() {
    if !require_root("review_s18_a_manifest_warns_of_a_btrfs_subvolume") {
        return;
    }
    let fs = btrfs();
    let g = fs.path("g");
    file(&g, "etc/hostname", b"g\n", 0o644);
    fs::create_dir_all(g.join("srv")).unwrap();
    run(
        "btrfs",
        &[&"-q", &"subvolume", &"create", &g.join("srv/sub")],
    );
    file(&g, "srv/sub/data", b"in the subvolume\n", 0o644);
    let store = fs.path("store");
    init_store(&store);
    let m = fs.path("g.jsonl");
    let o = unifs(&store, &[&"manifest", &g, &"-o", &m]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("srv/sub: a btrfs subvolume"), "{err}");
    assert!(!fs::read_to_string(&m).unwrap().contains("srv/sub/data"));
}

/// A btrfs guest's compressed file carries the btrfs property
/// `btrfs.compression`, shown as an xattr and recorded so; no other
/// filesystem takes it, and the restore failed with a bare "Operation not
/// supported". The error names the xattr and says why now.
#[test]
fn a_restore_refused_a_btrfs_property_says_which_and_why() {
    if !require_root("review_s18_a_restore_refused_a_btrfs_property") {
        return;
    }
    let fs = btrfs();
    let g = fs.path("g");
    fs::create_dir_all(g.join("odd")).unwrap();
    fs::File::create(g.join("odd/compr")).unwrap();
    run("chattr", &[&"+c", &g.join("odd/compr")]);
    fs::write(g.join("odd/compr"), b"compressible ".repeat(1000)).unwrap();
    let store = fs.path("store");
    init_store(&store);
    let m = fs.path("g.jsonl");
    let o = unifs(&store, &[&"manifest", &g, &"-o", &m]);
    assert!(o.status.success(), "{}", stderr(&o));
    if !fs::read_to_string(&m)
        .unwrap()
        .contains("btrfs.compression")
    {
        crate::common::skip(
            "review_s18_a_restore_refused_a_btrfs_property",
            "this kernel shows no btrfs.compression xattr",
        );
        return;
    }
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let o = restore(&store, &m, &g, &work.path().join("g"));
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("odd/compr: xattr btrfs.compression"), "{err}");
    assert!(err.contains("does not support it"), "{err}");
}

/// An xattr whose name is not UTF-8 was written to the manifest with
/// U+FFFD in place of the bytes: restore then gave the file an xattr of
/// another name and removed the real one, and said "every file verified".
/// The manifest now refuses, naming the file and the xattr.
#[test]
fn a_manifest_refuses_an_xattr_name_it_cannot_record() {
    if !require_root("review_s18_manifest_non_utf8_xattr_name") {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let (store, g) = (dir.path().join("store"), dir.path().join("g"));
    let f = file(&g, "etc/f", b"hi\n", 0o644);
    let name = std::ffi::OsStr::from_bytes(b"user.bad\xff\xfename");
    let fd = fs::File::open(&f).unwrap();
    unifs::sys::xattr::set_fd(std::os::fd::AsFd::as_fd(&fd), name, b"v1").unwrap();
    init_store(&store);
    let out_file = dir.path().join("g.jsonl");
    let out = unifs(&store, &[&"manifest", &g, &"-o", &out_file]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("etc/f") && err.contains("not UTF-8"), "{err}");
    assert!(!out_file.exists(), "no manifest is written");
}
