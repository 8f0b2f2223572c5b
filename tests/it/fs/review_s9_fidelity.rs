//! Fidelity review (s9): the mount next to a plain directory of the backing
//! filesystem, for what is not a plain read or write.

use super::harness::*;
use crate::common::require_root;
use std::fs;
use std::path::Path;
use std::process::Command;

/// The xattr names `getfattr` lists for `path`, run by root without
/// CAP_SYS_ADMIN (as a guest's root runs: its default capabilities leave
/// it out).
fn names_listed_without_sys_admin(path: &Path) -> String {
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-sys_admin", "--"])
        .args(["getfattr", "-m", "-", "--absolute-names"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "getfattr {}: {out:?}", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<_> = text.lines().skip(1).filter(|l| !l.is_empty()).collect();
    names.join(" ")
}

/// A local filesystem lists `trusted.` names only to CAP_SYS_ADMIN, not to
/// uid 0 as such; the mount listed them to every root, so a guest's root
/// (which lacks the capability) saw names it could not read (getfattr -d
/// then failed with "No such attribute").
#[test]
fn trusted_xattr_names_are_not_listed_to_root_without_cap_sys_admin() {
    if !require_root("review_s9_trusted_xattr_names_are_not_listed_to_root_without_sys_admin") {
        return;
    }
    let w = World::new();
    let (plain, g) = (w.dir("plain"), w.dir("g"));
    for base in [&plain, &g] {
        fs::write(base.join("f"), b"f").unwrap();
        set_xattr(&base.join("f"), "trusted.secret", b"x");
        set_xattr(&base.join("f"), "user.tag", b"y");
    }
    let m = w.mount(&g, "m", &[]);
    let want = names_listed_without_sys_admin(&plain.join("f"));
    assert_eq!(want, "user.tag");
    assert_eq!(names_listed_without_sys_admin(&m.path("f")), want);
    // With the capability, as before.
    let all = xattrs(&m.path("f"));
    assert_eq!(all.len(), 2, "{all:?}");
}

/// A daemon whose log could not be written (its disk full, or /dev/full)
/// panicked at its first message (tracing-subscriber reports a failed
/// write with eprintln!, which panics when stderr, the log itself, fails):
/// the mount died, every guest process got ENOTCONN. A full disk does just
/// that: a break that cannot copy logs a warning.
#[test]
fn a_mount_whose_log_cannot_be_written_keeps_serving() {
    if !require_root("review_s9_a_mount_whose_log_cannot_be_written_keeps_serving") {
        return;
    }
    let w = World::new();
    let small = w.dir("small");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&small)
        .status()
        .expect("mount tmpfs");
    assert!(status.success());
    let _tmpfs = Unmount(small.clone());
    let store = small.join("store");
    fs::create_dir_all(store.join("objects")).unwrap();
    let g = small.join("g");
    fs::create_dir(&g).unwrap();
    let data = vec![7u8; 1200 << 10];
    fs::write(g.join("big"), &data).unwrap();
    let id = format!("{:064x}", 0x59);
    set_xattr(&g.join("big"), MARKER, id.as_bytes());
    fs::create_dir(store.join("objects").join(&id[..2])).unwrap();
    fs::hard_link(
        g.join("big"),
        store.join("objects").join(&id[..2]).join(&id[2..]),
    )
    .unwrap();
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let m = Mount::start_logging_to(&store, &g, &w.dir("m"), &[], full);
    // The break cannot copy (no space): an error, and a warning logged.
    let r = fs::OpenOptions::new().write(true).open(m.path("big"));
    assert_eq!(errno(r), libc::ENOSPC);
    let names = fs::read_dir(&m.dir).map(|d| d.count());
    assert_eq!(names.ok(), Some(1), "the mount still serves");
    assert!(fs::read(m.path("big")).unwrap() == data);
    drop(m);
}

/// A truncation of a shared file (an O_TRUNC open, truncate(2)) first
/// copied all of its data, then cut it: with less free space than the file
/// it failed with ENOSPC where a local filesystem needs no space at all
/// (`: > file` of a large shared log), and a large file cost a full copy.
/// The break now copies only the data the truncation keeps.
#[test]
fn truncating_a_shared_file_needs_no_room_for_a_copy_of_it() {
    if !require_root("review_s9_truncating_a_shared_file_needs_no_room_for_a_copy") {
        return;
    }
    let w = World::new();
    let small = w.dir("small");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&small)
        .status()
        .expect("mount tmpfs");
    assert!(status.success());
    let _tmpfs = Unmount(small.clone());
    let store = small.join("store");
    let g = small.join("g");
    fs::create_dir_all(&g).unwrap();
    let data: Vec<u8> = (0..1200u32 << 10).map(|i| (i % 251) as u8).collect();
    fs::write(g.join("a"), &data).unwrap();
    let id = format!("{:064x}", 0x5a);
    set_xattr(&g.join("a"), MARKER, id.as_bytes());
    set_mtime(&g.join("a"), 1_000_000_000);
    let obj = store.join("objects").join(&id[..2]).join(&id[2..]);
    fs::create_dir_all(obj.parent().unwrap()).unwrap();
    fs::hard_link(g.join("a"), &obj).unwrap();
    fs::hard_link(g.join("a"), g.join("b")).unwrap();
    let m = Mount::start(&store, &g, &w.dir("m"), &[]);
    // Shell redirection: open(O_WRONLY|O_CREAT|O_TRUNC).
    let r = fs::File::create(m.path("a"));
    assert_eq!(errno(r), 0, "O_TRUNC open of a shared file");
    let path = std::ffi::CString::new(m.path("b").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: `path` is a NUL-terminated path.
    let r = unsafe { libc::truncate(path.as_ptr(), 1000) };
    assert_eq!(
        errno(if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }),
        0,
        "truncate(2)"
    );
    assert_eq!(fs::read(m.path("a")).unwrap(), b"");
    assert!(fs::read(m.path("b")).unwrap() == data[..1000]);
    for p in ["a", "b"] {
        let mtime = fs::metadata(m.path(p)).unwrap().modified().unwrap();
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        assert!(mtime > old, "{p}: a truncation sets the mtime");
    }
    assert!(
        fs::read(&obj).unwrap() == data,
        "the store keeps its object"
    );
    drop(m);
}

/// Unmounts a filesystem the test mounted, on drop.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        unmount_lazy(&self.0);
    }
}
