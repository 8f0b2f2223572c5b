//! Review s36-attrflags: inode flags (`lsattr`, `chattr`) through a mount.
//! The kernel's FUSE sends FS_IOC_GETFLAGS/SETFLAGS and FSGETXATTR/
//! FSSETXATTR to the daemon as FUSE_IOCTL, which answered ENOTTY to all:
//! `lsattr` failed on every file. They now show and change the backing
//! inode's flags, a change to a shared file breaks its link first (the
//! store's object never gets a flag), and unify leaves what a guest
//! flagged alone.

use crate::common::require_root;
use crate::fs::harness::{errno, ino, Mount, World};
use crate::tree::{
    assert_verify_clean, chattr, init_store, lsattr, set_mtime, unifs, unify_json, unify_summary,
    Unflag,
};
use std::fs;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;

const FS_XFLAG_NODUMP: u32 = 0x80;

/// One mtime for the files of both guests (the object id covers it).
const MTIME: u64 = 1_600_000_000;

/// The inode flags of `path` (FS_IOC_GETFLAGS).
pub(crate) fn flags(path: &Path) -> u32 {
    let f = fs::File::open(path).unwrap();
    unifs::sys::get_inode_flags(f.as_fd()).unwrap()
}

/// The struct fsxattr of `path` (FS_IOC_FSGETXATTR), nextents left out.
fn fsxattr(path: &Path) -> [u32; 7] {
    let f = fs::File::open(path).unwrap();
    let mut raw = unifs::sys::get_fsxattr_raw(f.as_fd()).unwrap();
    raw[2] = 0;
    raw
}

/// `chattr FLAGS path` without CAP_LINUX_IMMUTABLE: whether it succeeded.
pub(crate) fn chattr_unprivileged(flags: &str, path: &Path) -> bool {
    Command::new("setpriv")
        .args([
            "--inh-caps=-linux_immutable",
            "--bounding-set=-linux_immutable",
        ])
        .args(["chattr", flags])
        .arg(path)
        .status()
        .unwrap()
        .success()
}

/// The `chattr` letters of `path` that a guest sets (not the filesystem's
/// own `e`), as `lsattr` prints them.
pub(crate) fn letters(path: &Path) -> String {
    lsattr(path).replace(['-', 'e'], "")
}

pub(crate) fn append(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    fs::OpenOptions::new()
        .append(true)
        .open(path)?
        .write_all(b"more\n")
}

/// `lsattr` through the mount shows what it shows on the backing files
/// (a private file, a directory, a shared file, the root), and `chattr`
/// (SETFLAGS) and FSSETXATTR through it change the backing inode, as the
/// kernel then enforces: an immutable file can be neither written nor
/// removed until the flag is taken off again.
#[test]
fn s36_lsattr_and_chattr_through_the_mount_act_on_the_backing_inode() {
    if !require_root("s36_lsattr_and_chattr_through_the_mount_act_on_the_backing_inode") {
        return;
    }
    let w = World::new();
    let (g, h) = (w.dir("g"), w.dir("h"));
    fs::write(g.join("own"), b"own\n").unwrap();
    fs::create_dir(g.join("d")).unwrap();
    w.shared(b"conf\n", &[g.join("conf"), h.join("conf")]);
    let _unflag = Unflag(vec![g.join("own"), g.join("d")]);
    chattr("+dA", &g.join("own"));
    let m = w.mount(&g, "m", &[]);
    for rel in ["own", "d", "conf", ""] {
        assert_eq!(lsattr(&m.path(rel)), lsattr(&g.join(rel)), "{rel:?}");
        assert_eq!(fsxattr(&m.path(rel)), fsxattr(&g.join(rel)), "{rel:?}");
    }
    chattr("-A", &m.path("own"));
    chattr("+S", &m.path("own"));
    chattr("+d", &m.path("d"));
    assert_eq!(letters(&g.join("own")), "Sd");
    assert_eq!(letters(&g.join("d")), "d");
    assert_eq!(lsattr(&m.path("own")), lsattr(&g.join("own")));

    // FSSETXATTR (xfs_io chattr): nodump off again.
    let f = fs::File::open(m.path("own")).unwrap();
    let mut raw = unifs::sys::get_fsxattr_raw(f.as_fd()).unwrap();
    raw[0] &= !FS_XFLAG_NODUMP;
    unifs::sys::set_fsxattr_raw(f.as_fd(), &raw).unwrap();
    drop(f);
    assert_eq!(letters(&g.join("own")), "S");

    chattr("+i", &m.path("own"));
    assert_eq!(errno(append(&m.path("own"))), libc::EPERM);
    assert_eq!(errno(fs::remove_file(m.path("own"))), libc::EPERM);
    chattr("-i", &m.path("own"));
    append(&m.path("own")).unwrap();
    fs::remove_file(m.path("own")).unwrap();
}

/// A flag change to a shared file is a change of its inode: the link is
/// broken first and the flag lands on the guest's copy; the other guest's
/// file and the store's object keep no flag (invariant 1). A change the
/// overlay refuses (casefold, a new project ID), one the kernel refuses
/// (+i without CAP_LINUX_IMMUTABLE: the kernel checks it against what the
/// daemon reports) and one that changes nothing break nothing.
#[test]
fn s36_chattr_on_a_shared_file_breaks_it_and_leaves_the_store_flagless() {
    if !require_root("s36_chattr_on_a_shared_file_breaks_it_and_leaves_the_store_flagless") {
        return;
    }
    let w = World::new();
    let (g, h) = (w.dir("g"), w.dir("h"));
    let obj = w.shared(b"conf\n", &[g.join("conf"), h.join("conf")]);
    let obj2 = w.shared(b"conf2\n", &[g.join("conf2"), h.join("conf2")]);
    let _unflag = Unflag(vec![g.join("conf"), g.join("conf2")]);
    let m = w.mount(&g, "m", &[]);
    let conf = m.path("conf");
    let plain = flags(&obj);

    assert!(!chattr_unprivileged("+i", &conf));
    chattr("-d", &conf);
    let f = fs::File::open(&conf).unwrap();
    let casefold = unifs::sys::set_inode_flags(f.as_fd(), plain | 0x4000_0000);
    assert_eq!(errno(casefold), libc::EOPNOTSUPP);
    let mut raw = unifs::sys::get_fsxattr_raw(f.as_fd()).unwrap();
    raw[3] += 7;
    assert_eq!(
        errno(unifs::sys::set_fsxattr_raw(f.as_fd(), &raw)),
        libc::EPERM
    );
    drop(f);
    assert_eq!(
        ino(&g.join("conf")),
        ino(&obj),
        "a change refused broke the link"
    );

    chattr("+i", &conf);
    assert_ne!(ino(&g.join("conf")), ino(&obj));
    assert_eq!(letters(&g.join("conf")), "i");
    assert!(!chattr_unprivileged("-i", &conf));
    assert_eq!(errno(append(&conf)), libc::EPERM);

    let f = fs::File::open(m.path("conf2")).unwrap();
    let mut raw = unifs::sys::get_fsxattr_raw(f.as_fd()).unwrap();
    raw[0] |= FS_XFLAG_NODUMP;
    unifs::sys::set_fsxattr_raw(f.as_fd(), &raw).unwrap();
    drop(f);
    assert_ne!(ino(&g.join("conf2")), ino(&obj2));
    assert_eq!(letters(&g.join("conf2")), "d");

    for (o, rel, data) in [(&obj, "conf", "conf\n"), (&obj2, "conf2", "conf2\n")] {
        assert_eq!(flags(o), plain, "the object got a flag");
        assert_eq!(ino(&h.join(rel)), ino(o));
        assert_eq!(fs::read_to_string(g.join(rel)).unwrap(), data);
    }
}

/// What a guest made immutable or append-only through its mount, and the
/// files in a directory it made immutable, unify leaves as they are: the
/// flagged files are counted, the files in the immutable directory are
/// reported (with what to do), the run finishes, and the store stays
/// clean (verify, gc).
#[test]
fn s36_unify_leaves_what_a_guest_flagged_through_its_mount_alone() {
    if !require_root("s36_unify_leaves_what_a_guest_flagged_through_its_mount_alone") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    init_store(&store);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for g in [&a, &b] {
        fs::create_dir_all(g.join("imm")).unwrap();
        for rel in ["fi", "fa", "imm/x"] {
            fs::write(g.join(rel), format!("same {rel}\n")).unwrap();
            set_mtime(&g.join(rel), MTIME);
        }
    }
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["files_linked"], 3, "{s}");
    let _unflag = Unflag(["fi", "fa", "imm", "imm/x"].map(|r| b.join(r)).to_vec());
    let mp = tmp.path().join("mb");
    fs::create_dir(&mp).unwrap();
    let m = Mount::start(&store, &b, &mp, &[]);
    fs::write(a.join("imm/y"), b"new y\n").unwrap();
    fs::write(m.path("imm/y"), b"new y\n").unwrap();
    for g in [&a, &b] {
        set_mtime(&g.join("imm/y"), MTIME);
    }
    chattr("+i", &m.path("fi"));
    chattr("+a", &m.path("fa"));
    chattr("+i", &m.path("imm"));
    drop(m);
    let before: Vec<_> = ["fi", "fa", "imm/x", "imm/y"]
        .iter()
        .map(|r| (ino(&b.join(r)), lsattr(&b.join(r))))
        .collect();

    let out = unifs(&store, &[&"unify", &"--json", &a, &b]);
    let s = unify_summary(&out);
    assert_eq!(s["files_with_inode_flags"], 2, "{s}");
    // imm/x too: the flag set through the mount gave it a private copy
    // first (review_s37_immut).
    let problems = s["problems"].as_array().unwrap();
    let mut paths: Vec<_> = problems
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert!(
        paths.len() == 2 && paths[0].ends_with("b/imm/x") && paths[1].ends_with("b/imm/y"),
        "{s}"
    );
    for p in problems {
        let what = p["what"].as_str().unwrap();
        assert!(what.contains("immutable (chattr +i)"), "{s}");
        assert!(what.contains("Exclude the directory"), "{s}");
    }
    let after: Vec<_> = ["fi", "fa", "imm/x", "imm/y"]
        .iter()
        .map(|r| (ino(&b.join(r)), lsattr(&b.join(r))))
        .collect();
    assert_eq!(before, after);

    assert_verify_clean(&store);
    let gc = unifs(&store, &[&"store", &"gc"]);
    assert!(gc.status.success(), "{gc:?}");
    assert_verify_clean(&store);
    for e in walkdir::WalkDir::new(store.join("objects")) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            assert_eq!(letters(e.path()), "", "{e:?}");
        }
    }
}
