//! Review s39-fsuid: the blocks ext4 reserves for root (`mkfs.ext4 -m`,
//! `tune2fs -m`) are granted by the writer's fsuid. The daemon is root, so
//! a guest user's writes through the mount used them (the kernel does
//! passthrough I/O with the credentials the daemon had when it registered
//! the file): a guest's www-data could fill the disk to the last block
//! the host's root services need. Each test fills a small loop-mounted
//! ext4 with half its blocks reserved.

use crate::common::{require_root, skip};
use crate::fs::harness::{xattrs, Mount, World, MARKER};
use crate::review_s18_fs::{run, Loopfs};
use crate::tree::stderr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

/// The guest user of these tests.
pub(crate) const USER: u32 = 1000;

/// A 64 MiB ext4 with half its blocks reserved for uid 0 (the default
/// owner); `None` (skipped, with the reason) without mkfs.ext4 or loop
/// devices.
pub(crate) fn reserved_ext4(test: &str) -> Option<Loopfs> {
    if !require_root(test) {
        return None;
    }
    if Command::new("mkfs.ext4").arg("-V").output().is_err() {
        skip(test, "needs mkfs.ext4 (Debian: e2fsprogs)");
        return None;
    }
    if !Path::new("/dev/loop-control").exists() {
        skip(test, "needs loop devices (/dev/loop-control)");
        return None;
    }
    let fs = Loopfs::new("ext4", 64 << 20, &["-q", "-m", "50"]);
    let info = run("tune2fs", &[&"-l", &fs.path("../img")]);
    assert!(
        info.lines()
            .any(|l| l.starts_with("Reserved blocks uid:") && l.contains(" 0 ")),
        "{info}"
    );
    Some(fs)
}

/// A directory of `USER`'s at `path`.
pub(crate) fn user_dir(path: &Path) {
    fs::create_dir_all(path).unwrap();
    std::os::unix::fs::chown(path, Some(USER), Some(USER)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `args` as `uid` (its own group, no other), or as root for 0.
fn as_uid(uid: u32, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = if uid == 0 {
        Command::new(args[0])
    } else {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .arg(args[0]);
        c
    };
    for a in &args[1..] {
        cmd.arg(a);
    }
    cmd.output().expect("setpriv")
}

/// `dd` of zeros to `path` as `uid` with `more` operands (no count: until
/// the disk is full); whether it ran out of space, and its output.
fn dd(uid: u32, path: &Path, more: &[&str]) -> (bool, Output) {
    let of = format!("of={}", path.display());
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"dd", &"if=/dev/zero", &of, &"bs=64k", &"status=none"];
    for m in more {
        args.push(m);
    }
    let out = as_uid(uid, &args);
    let full = stderr(&out).contains("No space left on device");
    assert!(out.status.success() || full, "{}", stderr(&out));
    (full, out)
}

/// Fills the disk as `uid` through `path`: the bytes written until ENOSPC.
pub(crate) fn fill(uid: u32, path: &Path) -> u64 {
    let (full, out) = dd(uid, path, &["conv=fsync"]);
    assert!(full, "{}: no ENOSPC: {}", path.display(), stderr(&out));
    fs::metadata(path).unwrap().len()
}

/// 1 MiB of zeros to `path` as `uid`: `Ok` if written, `Err` with dd's
/// complaint if the disk was full.
pub(crate) fn write_mib(uid: u32, path: &Path, more: &[&str]) -> Result<(), String> {
    let more = [&["count=16"], more].concat();
    match dd(uid, path, &more) {
        (true, out) => Err(stderr(&out)),
        (false, _) => Ok(()),
    }
}

/// Fills the disk on `fs` itself (not through a mount) as the guest user,
/// up to root's reserve; the bytes written.
pub(crate) fn fill_to_the_reserve(fs: &Loopfs) -> u64 {
    user_dir(&fs.path("local"));
    fill(USER, &fs.path("local/fill"))
}

/// A guest user's write through the mount (mounted with `opts`) fills the
/// disk as far as the same write does on the disk itself: up to root's
/// reserve, not into it. Guest root still gets the reserve.
fn a_users_writes_stop_at_the_reserve(test: &str, opts: &[&str]) {
    let Some(fs) = reserved_ext4(test) else {
        return;
    };
    let local = fill_to_the_reserve(&fs);
    fs::remove_file(fs.path("local/fill")).unwrap();
    let w = World::new_in(&fs.path(""));
    let g = w.dir("g");
    user_dir(&g.join("www"));
    let m = w.mount(&g, "m", opts);
    let through = fill(USER, &m.path("www/fill"));
    eprintln!("{opts:?}: uid {USER} wrote {local} bytes locally, {through} through the mount");
    assert!(
        through <= local + (1 << 20),
        "{opts:?}: uid {USER} wrote {through} bytes through the mount, {local} locally"
    );
    write_mib(0, &m.path("root"), &[]).expect("guest root writes into the reserve");
}

/// With passthrough: the kernel writes with the credentials the file was
/// registered with.
#[test]
fn s39_a_guest_users_passthrough_writes_stop_at_roots_reserve() {
    a_users_writes_stop_at_the_reserve("s39_a_guest_users_passthrough_writes_stop", &[]);
}

/// Without: the daemon writes.
#[test]
fn s39_a_guest_users_writes_stop_at_roots_reserve_without_passthrough() {
    a_users_writes_stop_at_the_reserve(
        "s39_a_guest_users_writes_stop_at_roots_reserve_without_passthrough",
        &["nopassthrough"],
    );
}

/// A guest's mount (passthrough on) over a disk filled up to root's
/// reserve, with a 1 MiB file `www/src`. Fields drop in this order: the
/// mount before the disk it is on.
struct AtTheReserve {
    m: Mount,
    _w: World,
    _fs: Loopfs,
}

fn at_the_reserve(test: &str) -> Option<AtTheReserve> {
    let fs = reserved_ext4(test)?;
    let w = World::new_in(&fs.path(""));
    let g = w.dir("g");
    user_dir(&g.join("www"));
    fs::write(g.join("www/src"), vec![7u8; 1 << 20]).unwrap();
    let m = w.mount(&g, "m", &[]);
    fill_to_the_reserve(&fs);
    Some(AtTheReserve { m, _w: w, _fs: fs })
}

/// Whether a command says it ran out of space (`xfs_io` exits 0 all the
/// same).
fn out_of_space(out: &Output) -> bool {
    stderr(out).contains("No space left on device")
}

/// The writes of an `O_APPEND` open, which the daemon serves although
/// passthrough is on, stop at the reserve for a guest user; guest root's
/// go on.
#[test]
fn s39_a_guest_users_appends_stop_at_roots_reserve() {
    let Some(t) = at_the_reserve("s39_a_guest_users_appends_stop_at_roots_reserve") else {
        return;
    };
    let append = ["oflag=append", "conv=notrunc"];
    let wrote = write_mib(USER, &t.m.path("www/log"), &append);
    assert!(wrote.is_err(), "an O_APPEND write went into the reserve");
    write_mib(0, &t.m.path("rootlog"), &append).unwrap();
}

/// `fallocate` (always served by the daemon) stops at the reserve for a
/// guest user; guest root's goes on.
#[test]
fn s39_a_guest_users_fallocate_stops_at_roots_reserve() {
    let Some(t) = at_the_reserve("s39_a_guest_users_fallocate_stops_at_roots_reserve") else {
        return;
    };
    let falloc = |uid, to: &str| as_uid(uid, &[&"fallocate", &"-l", &"1M", &t.m.path(to)]);
    let out = falloc(USER, "www/falloc");
    assert!(
        out_of_space(&out),
        "fallocate: {:?} {}",
        out.status,
        stderr(&out)
    );
    let out = falloc(0, "rootfalloc");
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `copy_file_range` (always served by the daemon) stops at the reserve
/// for a guest user; guest root's goes on.
#[test]
fn s39_a_guest_users_copy_file_range_stops_at_roots_reserve() {
    let Some(t) = at_the_reserve("s39_a_guest_users_copy_file_range_stops_at_roots_reserve") else {
        return;
    };
    let copy = |uid, to: &str| {
        let cmd = format!(
            "copy_range -s 0 -d 0 -l 1m {}",
            t.m.path("www/src").display()
        );
        as_uid(uid, &[&"xfs_io", &"-f", &"-c", &cmd, &t.m.path(to)])
    };
    let out = copy(USER, "www/copy");
    assert!(
        out_of_space(&out),
        "copy_file_range: {:?} {}",
        out.status,
        stderr(&out)
    );
    let out = copy(0, "rootcopy");
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    assert_eq!(fs::read(t.m.path("rootcopy")).unwrap(), vec![7u8; 1 << 20]);
}

/// The kernel does the passthrough I/O of every open of a file with the
/// credentials of its first open's registration while the file stays open
/// (one backing file per inode). A read-only open by root (a `tail -f`, a
/// backup) registers with the file owner's: the user's write open that
/// joins it meanwhile still stops at the reserve.
#[test]
fn s39_a_users_write_to_a_file_root_is_reading_stops_at_the_reserve() {
    let Some(fs) = reserved_ext4("s39_a_users_write_to_a_file_root_is_reading") else {
        return;
    };
    let w = World::new_in(&fs.path(""));
    let g = w.dir("g");
    user_dir(&g.join("www"));
    fs::write(g.join("www/log"), b"start\n").unwrap();
    std::os::unix::fs::chown(g.join("www/log"), Some(USER), Some(USER)).unwrap();
    let m = w.mount(&g, "m", &[]);
    fill_to_the_reserve(&fs);
    let reader = fs::File::open(m.path("www/log")).unwrap();
    let wrote = write_mib(USER, &m.path("www/log"), &["conv=notrunc", "seek=1"]);
    assert!(wrote.is_err(), "uid {USER}'s write went into the reserve");
    drop(reader);
}

/// A link break copies the shared file as root, into the reserve if need
/// be: the copy stands for space the guest's file took before unify
/// shared it, each file breaks once, and a write open must not fail for
/// want of space a local file of its own would not need. The user's own
/// writes to the copy stop at the reserve.
#[test]
fn s39_a_break_may_use_the_reserve_but_the_users_write_then_stops() {
    let Some(fs) = reserved_ext4("s39_a_break_may_use_the_reserve") else {
        return;
    };
    let w = World::new_in(&fs.path(""));
    let (g, other) = (w.dir("g"), w.dir("other"));
    user_dir(&g.join("www"));
    user_dir(&other.join("www"));
    let content = vec![5u8; 4 << 20];
    let obj = w.shared(&content, &[g.join("www/app"), other.join("www/app")]);
    std::os::unix::fs::chown(&obj, Some(USER), Some(USER)).unwrap();
    let m = w.mount(&g, "m", &[]);
    fill_to_the_reserve(&fs);
    let wrote = write_mib(USER, &m.path("www/app"), &["conv=notrunc", "seek=64"]);
    assert!(wrote.is_err(), "uid {USER}'s write went into the reserve");
    let private = g.join("www/app");
    assert_eq!(fs::metadata(&private).unwrap().nlink(), 1, "not broken");
    assert!(!xattrs(&private).iter().any(|(n, _)| n == MARKER));
    assert_eq!(&fs::read(&private).unwrap()[..content.len()], &content[..]);
    assert_eq!(fs::read(&obj).unwrap(), content);
    assert_eq!(fs::read(other.join("www/app")).unwrap(), content);
}
