//! Defects a tester found in the mount (session 18): files of a btrfs
//! subvolume inside a guest were taken for the files outside it that have
//! the same inode number; a break's private copy took the inode flags its
//! directory hands down; a break refused in an immutable or append-only
//! directory did not say why.

use super::harness::*;
use crate::common::require_root;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Runs `program args`, which must succeed; its stdout.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A btrfs filesystem in an image file on its own loop device, mounted for
/// a test. Dropping it unmounts it and detaches the loop device, also when
/// the test fails (declare it before the mounts over it: they go first).
struct Btrfs {
    dir: tempfile::TempDir,
    dev: String,
}

impl Btrfs {
    fn new() -> Btrfs {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let img = dir.path().join("img");
        fs::File::create(&img).unwrap().set_len(256 << 20).unwrap();
        run("mkfs.btrfs", &["-q".as_ref(), img.as_os_str()]);
        let dev = run(
            "losetup",
            &["--find".as_ref(), "--show".as_ref(), img.as_os_str()],
        );
        let b = Btrfs {
            dir,
            dev: dev.trim().to_owned(),
        };
        fs::create_dir(b.root()).unwrap();
        run("mount", &[b.dev.as_ref(), b.root().as_os_str()]);
        b
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("fs")
    }

    /// A [`World`] (store and guests) on this filesystem.
    fn world(&self) -> World {
        let tmp = tempfile::tempdir_in(self.root()).unwrap();
        let store = tmp.path().join("store");
        fs::create_dir_all(store.join("objects")).unwrap();
        World { tmp, store }
    }

    fn subvolume(&self, path: &Path) {
        run(
            "btrfs",
            &["subvolume".as_ref(), "create".as_ref(), path.as_os_str()],
        );
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        let root = self.root();
        let umount = |flags| {
            let c = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: `c` is a NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), flags) == 0 }
        };
        if is_mounted(&root) && !umount(0) {
            umount(libc::MNT_DETACH);
        }
        wait_until(Duration::from_secs(5), || !is_mounted(&root));
        // A device still busy (lazily unmounted) is detached when freed.
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).output();
    }
}

fn dev_ino(p: &Path) -> (u64, u64) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.dev(), m.ino())
}

/// Creates `dir/n0`, `dir/n1` … until one has inode number `ino`; its path.
fn file_numbered(dir: &Path, ino: u64, content: &str) -> PathBuf {
    for i in 0..1000 {
        let p = dir.join(format!("n{i}"));
        fs::write(&p, format!("{content} {i}\n")).unwrap();
        if ino_of(&p) == ino {
            return p;
        }
    }
    panic!("no file in {} got inode number {ino}", dir.display());
}

fn ino_of(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

/// A btrfs subvolume numbers its inodes from 256, as every other does: a
/// file in G/srv/sub1 with the number of G/etc/hostname was the same FUSE
/// node, so reading it gave the other file's data and an append landed in
/// G/etc/hostname; the roots of two subvolumes (both 256) were one
/// directory, and a file created in one landed in the other. Each guest
/// path is its own file now (keyed by device and number), with a number of
/// its own.
#[test]
fn files_of_btrfs_subvolumes_are_never_taken_for_others_of_the_same_number() {
    if !require_root("review_s18_btrfs_subvolume_inode_numbers") {
        return;
    }
    let b = Btrfs::new();
    let store = b.root().join("store");
    fs::create_dir_all(store.join("objects")).unwrap();
    let g = b.root().join("g");
    fs::create_dir_all(g.join("etc")).unwrap();
    fs::create_dir_all(g.join("srv")).unwrap();
    fs::write(g.join("etc/hostname"), "web1\n").unwrap();
    b.subvolume(&g.join("srv/sub1"));
    b.subvolume(&g.join("srv/sub2"));
    let host_ino = ino_of(&g.join("etc/hostname"));
    let in1 = file_numbered(&g.join("srv/sub1"), host_ino, "sub1");
    let in2 = file_numbered(&g.join("srv/sub2"), host_ino, "sub2");
    fs::write(g.join("srv/sub1/only-in-1"), "1").unwrap();
    fs::write(g.join("srv/sub2/only-in-2"), "2").unwrap();
    assert_eq!(ino_of(&g.join("srv/sub1")), ino_of(&g.join("srv/sub2")));
    assert_ne!(dev_ino(&in1), dev_ino(&in2));
    let name1 = in1.file_name().unwrap().to_str().unwrap().to_owned();
    let name2 = in2.file_name().unwrap().to_str().unwrap().to_owned();
    let (want1, want2) = (
        fs::read_to_string(&in1).unwrap(),
        fs::read_to_string(&in2).unwrap(),
    );

    let mp = b.dir.path().join("mnt");
    fs::create_dir(&mp).unwrap();
    let m = Mount::start(&store, &g, &mp, &[]);
    // The file outside first: the ones inside would join its node.
    let host = m.path("etc/hostname");
    assert_eq!(fs::read_to_string(&host).unwrap(), "web1\n");
    let (p1, p2) = (
        m.path(&format!("srv/sub1/{name1}")),
        m.path(&format!("srv/sub2/{name2}")),
    );
    assert_eq!(fs::read_to_string(&p1).unwrap(), want1);
    assert_eq!(fs::read_to_string(&p2).unwrap(), want2);

    // Listings: each subvolume's own.
    let list = |rel: &str| {
        let mut names: Vec<String> = fs::read_dir(m.path(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert!(list("srv/sub1").contains(&"only-in-1".to_owned()));
    assert!(!list("srv/sub1").contains(&"only-in-2".to_owned()));
    assert!(list("srv/sub2").contains(&"only-in-2".to_owned()));

    // Writes and creates land where the guest put them.
    fs::OpenOptions::new()
        .append(true)
        .open(&p1)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"X\n"))
        .unwrap();
    assert_eq!(
        fs::read_to_string(g.join("etc/hostname")).unwrap(),
        "web1\n"
    );
    assert_eq!(fs::read_to_string(&in1).unwrap(), format!("{want1}X\n"));
    fs::write(m.path("srv/sub2/new"), "made in 2").unwrap();
    assert_eq!(
        fs::read_to_string(g.join("srv/sub2/new")).unwrap(),
        "made in 2"
    );
    assert!(!g.join("srv/sub1/new").exists());
    assert!(!g.join("srv/new").exists());

    // A hardlink within a subvolume is still one file.
    fs::hard_link(&p2, m.path("srv/sub2/link")).unwrap();
    let (a, l) = (
        fs::metadata(&p2).unwrap(),
        fs::metadata(m.path("srv/sub2/link")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (l.ino(), 2));

    // Every path above is a file of its own to the guest: distinct
    // numbers, each below 2^32.
    let mut seen = std::collections::HashMap::new();
    for rel in [
        ".".to_owned(),
        "etc".to_owned(),
        "etc/hostname".to_owned(),
        "srv".to_owned(),
        "srv/sub1".to_owned(),
        "srv/sub2".to_owned(),
        format!("srv/sub1/{name1}"),
        format!("srv/sub2/{name2}"),
        "srv/sub1/only-in-1".to_owned(),
        "srv/sub2/only-in-2".to_owned(),
        "srv/sub2/new".to_owned(),
    ] {
        let n = ino_of(&m.path(&rel));
        assert!(n < 1 << 32, "{rel}: {n:#x}");
        if let Some(other) = seen.insert(n, rel.clone()) {
            panic!("{rel} and {other} have one inode number, {n}");
        }
    }
    drop(m);
}

/// The number a listing gives each entry (d_ino) is the one a lookup gives
/// it (st_ino), before any lookup, for a file of a btrfs subvolume inside
/// the guest (numbered from the mount's counter) and for two paths linking
/// one store object (each a file of its own). The daemon's plain READDIR
/// would give their backing numbers; the kernel never sends one (every
/// listing is a READDIRPLUS, see fuse.rs): this guards that.
#[test]
fn listings_number_entries_as_lookups_do() {
    if !require_root("review_s18_listings_number_entries_as_lookups_do") {
        return;
    }
    let b = Btrfs::new();
    let w = b.world();
    let g = w.dir("g");
    fs::create_dir_all(g.join("etc")).unwrap();
    w.shared(b"shared\n", &[g.join("etc/a"), g.join("etc/b")]);
    b.subvolume(&g.join("sub"));
    for i in 0..20 {
        fs::write(g.join(format!("sub/f{i}")), format!("{i}\n")).unwrap();
    }
    let m = w.mount(&g, "m", &[]);
    for dir in ["etc", "sub"] {
        let listed: Vec<(PathBuf, u64)> = fs::read_dir(m.path(dir))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path(), std::os::unix::fs::DirEntryExt::ino(&e))
            })
            .collect();
        assert!(listed.len() >= 2, "{dir}: {listed:?}");
        for (path, d_ino) in listed {
            assert_eq!(d_ino, ino_of(&path), "{}", path.display());
        }
    }
    assert_ne!(ino_of(&m.path("etc/a")), ino_of(&m.path("etc/b")));
    drop(m);
}

/// `chattr` on `path`.
fn chattr(flags: &str, path: &Path) {
    run("chattr", &[flags.as_ref(), path.as_os_str()]);
}

fn inode_flags(path: &Path) -> u32 {
    let f = fs::File::open(path).unwrap();
    unifs::sys::inode_flags(std::os::fd::AsFd::as_fd(&f)).unwrap()
}

/// Appends a line through the mount: the first change of a shared file.
fn append(path: &Path, line: &str) {
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    std::io::Write::write_all(&mut f, line.as_bytes()).unwrap();
}

/// A break's copy is made in the file's directory, and took the flags an
/// ext4 directory hands down (`chattr +d +S` here): after a write through
/// the mount, `lsattr` showed the file with flags it never had (and unify
/// would never share it again). The copy has its source's flags now.
#[test]
fn a_break_copy_takes_no_inode_flags_from_an_ext4_directory() {
    if !require_root("review_s18_break_copy_takes_no_ext4_dir_flags") {
        return;
    }
    const FS_SYNC_FL: u32 = 0x8;
    const FS_NODUMP_FL: u32 = 0x40;
    let w = World::new();
    let g = w.dir("g");
    fs::create_dir(g.join("etc")).unwrap();
    let conf = g.join("etc/conf");
    w.shared(b"shared\n", std::slice::from_ref(&conf));
    chattr("+dS", &g.join("etc"));
    // What the directory hands down, on this filesystem.
    fs::write(g.join("etc/probe"), b"").unwrap();
    let handed = inode_flags(&g.join("etc/probe")) & (FS_SYNC_FL | FS_NODUMP_FL);
    assert_eq!(handed, FS_SYNC_FL | FS_NODUMP_FL, "not ext4? {handed:#x}");
    assert_eq!(inode_flags(&conf) & handed, 0);
    let old = ino(&conf);
    let m = w.mount(&g, "m", &[]);
    append(&m.path("etc/conf"), "mine\n");
    drop(m);
    chattr("-dS", &g.join("etc"));
    assert_ne!(ino(&conf), old, "no break");
    assert_eq!(fs::read(&conf).unwrap(), b"shared\nmine\n");
    assert_eq!(inode_flags(&conf) & handed, 0, "{:#x}", inode_flags(&conf));
}

/// The same on btrfs, where a directory hands down NOCOW (`chattr +C`),
/// which can only be taken off a file while it is empty, and compression
/// (`+c`).
#[test]
fn a_break_copy_takes_no_inode_flags_from_a_btrfs_directory() {
    if !require_root("review_s18_break_copy_takes_no_btrfs_dir_flags") {
        return;
    }
    const FS_COMPR_FL: u32 = 0x4;
    const FS_NOCOW_FL: u32 = 0x80_0000;
    let b = Btrfs::new();
    let w = b.world();
    let g = w.dir("g");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let cases = [("nocow", "+C", FS_NOCOW_FL), ("compr", "+c", FS_COMPR_FL)];
    for (dir, _, _) in cases {
        fs::create_dir(g.join(dir)).unwrap();
        w.shared(&data, &[g.join(dir).join("f")]);
    }
    for (dir, flag, bit) in cases {
        chattr(flag, &g.join(dir));
        fs::write(g.join(dir).join("probe"), b"").unwrap();
        assert_ne!(inode_flags(&g.join(dir).join("probe")) & bit, 0, "{dir}");
    }
    let m = w.mount(&g, "m", &[]);
    for (dir, _, _) in cases {
        append(&m.path(&format!("{dir}/f")), "mine\n");
    }
    drop(m);
    for (dir, _, bit) in cases {
        let f = g.join(dir).join("f");
        let mut want = data.clone();
        want.extend_from_slice(b"mine\n");
        assert!(fs::read(&f).unwrap() == want, "{dir}: content");
        assert_eq!(inode_flags(&f) & bit, 0, "{dir}: {:#x}", inode_flags(&f));
    }
}

/// Takes `chattr -ia` flags off directories when dropped, also when the
/// test fails: else its temp dir could not be removed.
struct Unlock(Vec<PathBuf>);

impl Drop for Unlock {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = Command::new("chattr").arg("-ia").arg(p).output();
        }
    }
}

/// A shared file in a directory the host made append-only (`chattr +a`) or
/// immutable (`+i`) cannot be replaced by its private copy (the rename is
/// refused), so a change through the mount fails with EPERM, where ext4
/// would let the file itself be written. The flag is the host's and stays;
/// the log now names it (it said only "Operation not permitted"), and no
/// copy is made in vain.
#[test]
fn a_break_in_a_locked_directory_fails_with_eperm_and_the_log_says_why() {
    if !require_root("review_s18_break_in_locked_directory") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    for d in ["log", "ro"] {
        fs::create_dir(g.join(d)).unwrap();
        w.shared(b"shared\n", &[g.join(d).join("f")]);
    }
    let _unlock = Unlock(vec![g.join("log"), g.join("ro")]);
    chattr("+a", &g.join("log"));
    chattr("+i", &g.join("ro"));
    let before: Vec<(Look, u64)> = ["log/f", "ro/f"]
        .iter()
        .map(|f| (look(&g.join(f)), ino(&g.join(f))))
        .collect();
    let m = w.mount(&g, "m", &[]);
    for f in ["log/f", "ro/f"] {
        let open = fs::OpenOptions::new().append(true).open(m.path(f));
        assert_eq!(errno(open), libc::EPERM, "{f}");
    }
    let mode = <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
    let chmod = fs::set_permissions(m.path("log/f"), mode);
    assert_eq!(errno(chmod), libc::EPERM);
    assert_eq!(fs::read(m.path("log/f")).unwrap(), b"shared\n");
    // A guest looping on the refused change does not fill the host's log.
    for _ in 0..100 {
        let open = fs::OpenOptions::new().append(true).open(m.path("ro/f"));
        assert_eq!(errno(open), libc::EPERM);
    }
    let log_path = m.log.clone();
    drop(m);
    let after: Vec<(Look, u64)> = ["log/f", "ro/f"]
        .iter()
        .map(|f| (look(&g.join(f)), ino(&g.join(f))))
        .collect();
    assert_eq!(before, after);
    let log = fs::read_to_string(&log_path).unwrap();
    for want in [
        "shared file log/f: its directory is append-only (chattr +a)",
        "shared file ro/f: its directory is immutable (chattr +i)",
    ] {
        assert!(log.contains(want), "{want:?} not in the log:\n{log}");
    }
    let lines = log.matches("its directory is").count();
    assert!(lines <= 10, "{lines} lines about it in the log");
    // No copy was left behind, nor made and removed (no temp names).
    for d in ["log", "ro"] {
        let names: Vec<_> = fs::read_dir(g.join(d)).unwrap().collect();
        assert_eq!(names.len(), 1, "{d}");
    }
}
