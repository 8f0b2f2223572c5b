//! Review s27-meta: file metadata limits and inode flags — the kernel's
//! 64 KiB limit on a file's xattr name list, and the inode flags of the
//! copies unify and the mount make (which must be their source's, not
//! what the directory they are made in hands down).

use crate::common::require_root;
use crate::fs::harness::{errno, Mount, World};
use crate::review_s18_fs::{run, Loopfs};
use crate::tree::{file, init_store, stderr, unifs, unify_summary};
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernel's XATTR_LIST_MAX.
const LIST_MAX: usize = 65536;

/// The length of the store's marker name in a list, with its NUL.
const MARKER_ENTRY: usize = "trusted.unifs.object".len() + 1;

fn xfs() -> Loopfs {
    Loopfs::new("xfs", 320 << 20, &["-q"])
}

/// Gives `path` `user.*` xattrs whose names make a list of `total` bytes
/// (names with their NULs), as listxattr would return it.
fn fill_xattr_names(path: &Path, total: usize) {
    let mut sizes = vec![200; total / 200 - 1];
    let last = total - sizes.len() * 200;
    if last > 256 {
        sizes.extend([last / 2, last - last / 2]);
    } else {
        sizes.push(last);
    }
    for (i, size) in sizes.into_iter().enumerate() {
        let head = format!("user.{i:04}");
        let name = format!("{head}{}", "x".repeat(size - 1 - head.len()));
        unifs::sys::xattr::set_path(path, OsStr::new(&name), b"").unwrap();
    }
}

/// The length of the xattr name list of `path`, as listxattr says it.
fn list_len(path: &Path) -> usize {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is NUL-terminated; a null buffer of length 0 asks the size.
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    assert!(
        n >= 0,
        "{}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    n as usize
}

/// Whether `getfattr` (what tar and rsync do too) can list the xattrs of `path`.
fn getfattr_lists(path: &Path) -> bool {
    Command::new("getfattr")
        .args(["-h", "-d", "-m", "-", "--absolute-names"])
        .arg(path)
        .output()
        .unwrap()
        .status
        .success()
}

/// On xfs, which lets a file's xattr names grow past the 64 KiB listxattr
/// returns, unify marked a file whose list was just under it: its list was
/// then too long for listxattr, for every tool (E2BIG), and unify's next
/// file failed on it. Such a file has no room for the marker now: left
/// alone and counted, as ext4's full xattr space.
#[test]
fn a_file_with_a_full_xattr_name_list_is_left_unlinked() {
    if !require_root("review_s27_full_xattr_name_list_left_unlinked") {
        return;
    }
    let xfs = xfs();
    let store = xfs.path("store");
    init_store(&store);
    let g = xfs.path("g");
    let paths: Vec<PathBuf> = ["d/a", "d/b"]
        .iter()
        .map(|rel| file(&g, rel, b"same\n", 0o644))
        .collect();
    for p in &paths {
        fill_xattr_names(p, LIST_MAX - MARKER_ENTRY + 4);
        assert!(getfattr_lists(p));
    }
    let s = unify_summary(&unifs(&store, &[&"unify", &"--json", &g]));
    assert_eq!(s["files_no_xattr_room"], 2, "{s}");
    assert_eq!(s["files_linked"], 0, "{s}");
    for p in &paths {
        assert!(list_len(p) <= LIST_MAX, "{}: {}", p.display(), list_len(p));
        assert!(getfattr_lists(p), "{}", p.display());
    }
    let o = unifs(&store, &[&"manifest", &g, &"-o", &xfs.path("m.jsonl")]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Room for the marker exactly: linked as usual.
    let g2 = xfs.path("g2");
    let paths: Vec<PathBuf> = ["d/a", "d/b"]
        .iter()
        .map(|rel| file(&g2, rel, b"other\n", 0o644))
        .collect();
    for p in &paths {
        fill_xattr_names(p, LIST_MAX - MARKER_ENTRY);
    }
    let s = unify_summary(&unifs(&store, &[&"unify", &"--json", &g2]));
    assert_eq!(s["files_no_xattr_room"], 0, "{s}");
    assert_eq!(s["files_linked"], 1, "{s}");
    assert_eq!(list_len(&paths[0]), LIST_MAX);
    assert!(getfattr_lists(&paths[0]));
}

/// A guest file whose xattr names are too long to list (xfs lets them
/// be set): `manifest` failed with a bare "describing GUEST: Argument
/// list too long", naming no file. It names the file now, and says why.
#[test]
fn manifest_names_a_file_whose_xattrs_cannot_be_listed() {
    if !require_root("review_s27_manifest_names_unlistable_file") {
        return;
    }
    let xfs = xfs();
    let store = xfs.path("store");
    init_store(&store);
    let g = xfs.path("g");
    file(&g, "ok", b"fine\n", 0o644);
    let big = file(&g, "d/big", b"big\n", 0o644);
    fill_xattr_names(&big, LIST_MAX + 4000);
    assert!(!getfattr_lists(&big), "xfs took no list that long?");
    let o = unifs(&store, &[&"manifest", &g, &"-o", &xfs.path("m.jsonl")]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&*big.to_string_lossy()), "{err}");
    assert!(err.contains("XATTR_LIST_MAX"), "{err}");
}

/// The same for `store verify` of an object whose xattrs grew past the
/// limit around the store: it says why, not a bare "Argument list too long".
#[test]
fn store_verify_says_why_an_object_cannot_be_listed() {
    if !require_root("review_s27_verify_says_why_unlistable") {
        return;
    }
    let xfs = xfs();
    let store = xfs.path("store");
    init_store(&store);
    let g = xfs.path("g");
    file(&g, "a", b"same\n", 0o644);
    file(&g, "b", b"same\n", 0o644);
    let s = unify_summary(&unifs(&store, &[&"unify", &"--json", &g]));
    assert_eq!(s["files_linked"], 1, "{s}");
    let object = crate::tree::first_object_file(&store);
    fill_xattr_names(&object, LIST_MAX + 4000);
    let o = unifs(&store, &[&"store", &"verify"]);
    assert!(!o.status.success());
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(out.contains(&*object.to_string_lossy()), "{out}");
    assert!(out.contains("XATTR_LIST_MAX"), "{out}");
}

/// What `xfs_io -c stat` says of `path`: (xflags, extsize, projid).
fn xfs_stat(path: &Path) -> (u32, u64, u32) {
    let out = run("xfs_io", &[&"-r", &"-c", &"stat", &path]);
    let field = |name: &str| -> u64 {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("fsxattr.{name} = ")))
            .unwrap_or_else(|| panic!("no fsxattr.{name} in {out}"));
        let v = line.split(" = ").nth(1).unwrap().split(' ').next().unwrap();
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
            None => v.parse().unwrap(),
        }
    };
    (
        field("xflags") as u32,
        field("extsize"),
        field("projid") as u32,
    )
}

/// The `lsattr` flags of `path` (letters).
fn lsattr(path: &Path) -> String {
    let out = run("lsattr", &[&"-d", &path]);
    out.split_whitespace().next().unwrap().replace('-', "")
}

const XFS_XFLAG_EXTSIZE: u32 = 0x800;

/// Makes `dir` hand down to new files: nodump (`chattr +d`), an extent
/// size hint of 1 MiB and project 42; checks a probe file gets them.
fn hand_down_flags(dir: &Path) {
    run("chattr", &[&"+d", &dir]);
    run("xfs_io", &[&"-c", &"extsize 1m", &dir]);
    run("xfs_io", &[&"-c", &"chproj 42", &"-c", &"chattr +P", &dir]);
    let probe = dir.join("probe");
    fs::write(&probe, b"").unwrap();
    let (xflags, extsize, projid) = xfs_stat(&probe);
    assert_ne!(xflags & XFS_XFLAG_EXTSIZE, 0, "{xflags:#x}");
    assert_eq!((extsize, projid), (1 << 20, 42));
    assert!(lsattr(&probe).contains('d'), "{}", lsattr(&probe));
    fs::remove_file(&probe).unwrap();
}

/// unify copies an object when its first copy is full (and when the
/// guest may be writing the file), in the store's tmp/: the copy took what
/// tmp/ hands down (here on xfs: `chattr +d`, an extent size hint, a
/// project), and every guest linking it then had those. A copy has its
/// source's flags now (none).
#[test]
fn unify_copies_take_no_flags_from_the_store_directory() {
    if !require_root("review_s27_unify_copies_take_no_dir_flags") {
        return;
    }
    let xfs = xfs();
    let store = xfs.path("store");
    init_store(&store);
    fs::create_dir_all(store.join("tmp")).unwrap();
    hand_down_flags(&store.join("tmp"));
    let guests: Vec<PathBuf> = (0..5).map(|i| xfs.path(&format!("g{i}"))).collect();
    for g in &guests {
        file(g, "shared", b"shared by five\n", 0o644);
    }
    let out = Command::new(crate::common::unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["unify", "--json"])
        .args(&guests)
        .env("UNIFS_TEST_LINK_MAX", "2")
        .output()
        .unwrap();
    let s = unify_summary(&out);
    assert!(s["extra_copies"].as_u64().unwrap() >= 1, "{s}");
    for g in &guests {
        let p = g.join("shared");
        let (xflags, extsize, projid) = xfs_stat(&p);
        assert_eq!(
            xflags & XFS_XFLAG_EXTSIZE,
            0,
            "{}: {xflags:#x}",
            p.display()
        );
        assert_eq!((extsize, projid), (0, 0), "{}", p.display());
        assert_eq!(lsattr(&p), "", "{}", p.display());
    }
    crate::tree::assert_verify_clean(&store);
}

/// A [`World`] (store and guests) on the filesystem of `fs`.
fn world_on(fs: &Loopfs) -> World {
    let tmp = tempfile::tempdir_in(fs.path("")).unwrap();
    let store = tmp.path().join("store");
    fs::create_dir_all(store.join("objects")).unwrap();
    fs::create_dir_all(store.join("tmp")).unwrap();
    World { tmp, store }
}

/// Appends a line through the mount: the first change of a shared file.
fn append(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().append(true).open(path)?;
    std::io::Write::write_all(&mut f, line.as_bytes())
}

/// A break's private copy is made in the file's directory, and on xfs
/// took its extent size hint (and lost the source's project ID for the
/// directory's): the guest's file changed on a write. The copy has its
/// source's now: no hint where the source has none, the source's own
/// where it has one, and its project — except in a `+P` directory, where
/// the kernel takes only that directory's project (EXDEV).
#[test]
fn a_break_copy_on_xfs_has_its_sources_extent_size_and_project() {
    if !require_root("review_s27_break_copy_xfs_flags") {
        return;
    }
    let xfs = xfs();
    let w = world_on(&xfs);
    let g = w.dir("g");
    fs::create_dir(g.join("etc")).unwrap();
    fs::create_dir(g.join("quota")).unwrap();
    let plain = g.join("etc/plain");
    w.shared(b"plain\n", std::slice::from_ref(&plain));
    let hinted = g.join("etc/hinted");
    fs::File::create(&hinted).unwrap();
    run("xfs_io", &[&"-c", &"extsize 64k", &hinted]);
    fs::write(&hinted, b"hinted\n").unwrap();
    w.share(std::slice::from_ref(&hinted));
    let projected = g.join("etc/projected");
    w.shared(b"projected\n", std::slice::from_ref(&projected));
    run("xfs_io", &[&"-c", &"chproj 7", &projected]);
    let quota = g.join("quota/f");
    w.shared(b"quota\n", std::slice::from_ref(&quota));
    hand_down_flags(&g.join("etc"));
    run("xfs_io", &[&"-c", &"chproj 0", &g.join("etc")]);
    run("xfs_io", &[&"-c", &"chattr -P", &g.join("etc")]);
    run(
        "xfs_io",
        &[&"-c", &"chproj 42", &"-c", &"chattr +P", &g.join("quota")],
    );
    let files = [&plain, &hinted, &projected, &quota];
    let before: Vec<_> = files.iter().map(|p| xfs_stat(p)).collect();
    let inos: Vec<u64> = files.iter().map(|p| crate::tree::ino(p)).collect();
    let m: Mount = w.mount(&g, "m", &[]);
    for rel in ["etc/plain", "etc/hinted", "etc/projected", "quota/f"] {
        append(&m.path(rel), "mine\n").unwrap_or_else(|e| panic!("{rel}: {e}"));
    }
    drop(m);
    for (p, ino) in files.iter().zip(&inos) {
        assert_ne!(crate::tree::ino(p), *ino, "{}: no break", p.display());
        assert!(
            fs::read(p).unwrap().ends_with(b"\nmine\n"),
            "{}",
            p.display()
        );
        assert_eq!(lsattr(p), "", "{}", p.display());
    }
    let after: Vec<_> = files.iter().map(|p| xfs_stat(p)).collect();
    assert_eq!(after[..3], before[..3]);
    assert_eq!(after[1].1, 64 << 10);
    assert_eq!(after[2].2, 7);
    assert_eq!((after[3].1, after[3].2), (0, 42));
}

/// Takes `chattr +i` off a file when dropped, also when the test fails
/// (the temp dir could not be removed otherwise).
struct Mutable<'a>(&'a Path);

impl Drop for Mutable<'_> {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(self.0).output();
    }
}

/// A shared file the host made immutable (`chattr +i`) is immutable to
/// the guest too: a write through the mount is refused with EPERM, as on
/// the host, and breaks no link (a copy without +i would take it off).
#[test]
fn a_write_to_an_immutable_shared_file_is_refused() {
    if !require_root("review_s27_immutable_shared_file_refused") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let conf = g.join("conf");
    w.shared(b"shared\n", std::slice::from_ref(&conf));
    let ino = crate::tree::ino(&conf);
    run("chattr", &[&"+i", &conf]);
    let _undo = Mutable(&conf);
    let m = w.mount(&g, "m", &[]);
    assert_eq!(errno(append(&m.path("conf"), "mine\n")), libc::EPERM);
    let trunc = fs::OpenOptions::new().write(true).open(m.path("conf"));
    assert_eq!(errno(trunc), libc::EPERM);
    drop(m);
    assert_eq!(crate::tree::ino(&conf), ino);
    assert_eq!(fs::read(&conf).unwrap(), b"shared\n");
}
