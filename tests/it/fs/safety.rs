//! The daemon never follows a guest's symlink out of the backing tree
//! (invariant 4), and a daemon killed mid-break loses no data (invariant 2).

use super::harness::*;
use crate::common::require_root;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

#[test]
fn changing_a_guest_symlink_never_touches_its_host_target() {
    if !require_root("changing_a_guest_symlink_never_touches_its_host_target") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let host = w.dir("host");
    fs::write(host.join("passwd"), b"root:x:0:0\n").unwrap();
    std::os::unix::fs::symlink(host.join("passwd"), g.join("evil")).unwrap();
    let before = look(&host.join("passwd"));
    let m = w.mount(&g, "m", &[]);
    let evil = m.path("evil");
    std::os::unix::fs::lchown(&evil, Some(99), Some(99)).unwrap();
    let c = std::ffi::CString::new(evil.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated strings and a one-byte value.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            c"trusted.evil".as_ptr(),
            b"1".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    assert_eq!(look(&host.join("passwd")), before, "host file untouched");
    assert_eq!(fs::symlink_metadata(g.join("evil")).unwrap().uid(), 99);
    assert_eq!(fs::read_link(&evil).unwrap(), host.join("passwd"));
}

#[test]
fn a_directory_swapped_for_a_symlink_is_not_followed() {
    if !require_root("a_directory_swapped_for_a_symlink_is_not_followed") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let host = w.dir("host");
    fs::create_dir(g.join("etc")).unwrap();
    fs::write(g.join("etc/shadow"), b"guest\n").unwrap();
    fs::write(host.join("shadow"), b"host secret\n").unwrap();
    let m = w.mount(&g, "m", &[]);
    assert_eq!(fs::read(m.path("etc/shadow")).unwrap(), b"guest\n");
    // Behind the daemon's back (a racing process in the backing tree), the
    // directory it knows becomes a symlink to the host.
    fs::rename(g.join("etc"), g.join("etc.old")).unwrap();
    std::os::unix::fs::symlink(&host, g.join("etc")).unwrap();
    let read = fs::read(m.path("etc/shadow"));
    assert!(
        read.as_ref().map_or(true, |d| d != b"host secret\n"),
        "read the host's file through a guest symlink: {read:?}"
    );
    let _ = fs::write(m.path("etc/shadow"), b"owned\n");
    let _ = fs::write(m.path("etc/new"), b"owned\n");
    assert_eq!(fs::read(host.join("shadow")).unwrap(), b"host secret\n");
    assert!(!host.join("new").exists(), "created a file on the host");
}

#[test]
fn killing_the_daemon_mid_break_loses_no_data() {
    if !require_root("killing_the_daemon_mid_break_loses_no_data") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let data: Vec<u8> = (0..(192u32 << 20) / 4)
        .flat_map(|i| i.to_le_bytes())
        .collect();
    let obj = w.shared(&data, &[g.join("big")]);
    let m = w.mount(&g, "m", &[]);
    let big = m.path("big");
    let pid = m.pid() as i32;
    let opener = std::thread::spawn({
        let big = big.clone();
        move || OpenOptions::new().write(true).open(&big).map(|_| ())
    });
    std::thread::sleep(Duration::from_millis(60));
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let _ = opener.join();
    drop(m);
    assert!(
        fs::read(g.join("big")).unwrap() == data,
        "guest path complete"
    );
    assert!(fs::read(&obj).unwrap() == data, "store object complete");
    let m = w.mount(&g, "m2", &[]);
    let names: Vec<_> = fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("big")],
        "no temp file shows"
    );
    let mut f = OpenOptions::new().write(true).open(m.path("big")).unwrap();
    f.write_all(b"after").unwrap();
    drop(f);
    assert_eq!(&fs::read(&obj).unwrap()[..5], &data[..5], "store untouched");
}

#[test]
fn stale_break_temps_are_hidden_and_removed() {
    if !require_root("stale_break_temps_are_hidden_and_removed") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("f"), b"f").unwrap();
    // pid 1 never runs a mount daemon: a leftover of a killed one.
    leftover(&g.join(".unifs-break.1.0"));
    // A guest's own files by such names, which no break marked: its own.
    fs::write(g.join(".unifs-break.2.0"), b"precious").unwrap();
    fs::create_dir(g.join(".unifs-break.3.4")).unwrap();
    let m = w.mount(&g, "m", &[]);
    let mut names: Vec<_> = fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, [".unifs-break.2.0", ".unifs-break.3.4", "f"]);
    assert_eq!(
        errno(fs::metadata(m.path(".unifs-break.1.0"))),
        libc::ENOENT
    );
    assert!(!g.join(".unifs-break.1.0").exists(), "stale temp removed");
    assert_eq!(fs::read(m.path(".unifs-break.2.0")).unwrap(), b"precious");
    assert_eq!(fs::read(g.join(".unifs-break.2.0")).unwrap(), b"precious");
}

/// A break's temp file as a killed daemon leaves it: named and marked.
fn leftover(path: &std::path::Path) {
    fs::write(path, b"half a copy").unwrap();
    set_xattr(path, "trusted.unifs.break", b"");
}

/// A directory that holds only a dead daemon's break temp is empty to the
/// guest: rmdir removes it without the guest having to list it first, and
/// a directory with anything else in it stays, temp and all.
#[test]
fn rmdir_removes_a_directory_holding_only_stale_break_temps() {
    if !require_root("rmdir_removes_a_directory_holding_only_stale_break_temps") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::create_dir_all(g.join("d")).unwrap();
    leftover(&g.join("d/.unifs-break.1.0"));
    fs::create_dir_all(g.join("e")).unwrap();
    leftover(&g.join("e/.unifs-break.1.0"));
    fs::write(g.join("e/kept"), b"kept").unwrap();
    let m = w.mount(&g, "m", &[]);
    fs::remove_dir(m.path("d")).unwrap();
    assert!(!g.join("d").exists(), "backing directory removed");
    assert_eq!(errno(fs::remove_dir(m.path("e"))), libc::ENOTEMPTY);
    assert!(g.join("e/.unifs-break.1.0").exists(), "nothing removed");
    assert_eq!(fs::read(m.path("e/kept")).unwrap(), b"kept");
}

/// A read-only mount changes nothing in the backing tree, not even to tidy
/// up: the stale temp stays hidden, and stays.
#[test]
fn a_read_only_mount_leaves_stale_break_temps_in_place() {
    if !require_root("a_read_only_mount_leaves_stale_break_temps_in_place") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("f"), b"f").unwrap();
    leftover(&g.join(".unifs-break.1.0"));
    let m = w.mount(&g, "m", &["ro"]);
    let names: Vec<_> = fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("f")]);
    assert!(
        g.join(".unifs-break.1.0").exists(),
        "a read-only mount removed a file"
    );
}

/// Unify's temp names are reserved: a guest cannot create or rename a
/// file to one (it would be removed as a leftover when the store holds its
/// content), so no guest file is ever lost that way. Only their exact form
/// is: `.unifs-tmp-notes` is the guest's own (review s25). The break's temp
/// names are not: its files are told by a mark, and a guest's own file by
/// such a name is an ordinary file.
#[test]
fn guests_cannot_take_unifys_temp_names() {
    if !require_root("guests_cannot_take_unifys_temp_names") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("data"), b"precious").unwrap();
    let m = w.mount(&g, "m", &[]);
    fs::write(m.path(".unifs-tmp-notes"), b"mine").unwrap();
    for name in [".unifs-tmp-1-2", ".unifs-tmp-4321-0"] {
        assert_eq!(errno(fs::write(m.path(name), b"x")), libc::EPERM, "{name}");
        assert_eq!(errno(fs::create_dir(m.path(name))), libc::EPERM, "{name}");
        assert_eq!(
            errno(fs::rename(m.path("data"), m.path(name))),
            libc::EPERM,
            "{name}"
        );
        assert_eq!(
            errno(fs::hard_link(m.path("data"), m.path(name))),
            libc::EPERM,
            "{name}"
        );
        assert_eq!(
            errno(std::os::unix::fs::symlink("data", m.path(name))),
            libc::EPERM,
            "{name}"
        );
    }
    assert_eq!(fs::read(m.path("data")).unwrap(), b"precious");
    let name = ".unifs-break.1.7";
    fs::write(m.path(name), b"mine").unwrap();
    fs::rename(m.path(name), m.path(".unifs-break.1.8")).unwrap();
    fs::hard_link(m.path(".unifs-break.1.8"), m.path(name)).unwrap();
    let listed: Vec<_> = fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert_eq!(fs::read(g.join(name)).unwrap(), b"mine");
    assert_eq!(fs::read(g.join(".unifs-tmp-notes")).unwrap(), b"mine");
}

/// Unmounts a test's own tmpfs on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        unmount_lazy(&self.0);
    }
}

#[test]
fn a_break_that_runs_out_of_space_leaves_the_old_file() {
    if !require_root("a_break_that_runs_out_of_space_leaves_the_old_file") {
        return;
    }
    let w = World::new();
    let small = w.dir("small");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&small)
        .status()
        .expect("mount tmpfs");
    assert!(status.success());
    let _tmpfs = Tmpfs(small.clone());
    let store = small.join("store");
    fs::create_dir_all(store.join("objects/ab")).unwrap();
    fs::create_dir_all(store.join("tmp")).unwrap();
    let g = small.join("g");
    fs::create_dir(&g).unwrap();
    let data = vec![7u8; 1200 << 10];
    fs::write(g.join("big"), &data).unwrap();
    set_xattr(&g.join("big"), MARKER, format!("ab{:062x}", 1).as_bytes());
    let obj = store.join("objects/ab").join(format!("{:062x}", 1));
    fs::hard_link(g.join("big"), &obj).unwrap();
    let mp = w.dir("m");
    let m = Mount::start(&store, &g, &mp, &[]);
    let r = OpenOptions::new().write(true).open(m.path("big"));
    assert_eq!(errno(r), libc::ENOSPC, "the break cannot copy");
    assert!(
        fs::read(m.path("big")).unwrap() == data,
        "the guest keeps its file"
    );
    assert_eq!(ino(&g.join("big")), ino(&obj), "still the shared file");
    assert!(fs::read(&obj).unwrap() == data);
    let names: Vec<_> = fs::read_dir(&g)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("big")], "no temp left");
    drop(m);
}

/// With no room for a whole private copy, an open with O_TRUNC and a
/// truncate(2) of a shared file failed with ENOSPC, though they drop the
/// data a copy would need room for (ext4 needs none to truncate): `: > log`
/// or a program rewriting its file could not run on a nearly full disk.
/// The break then copies only what the truncation keeps.
#[test]
fn review_s9_a_truncation_of_a_shared_file_needs_no_room_for_a_copy() {
    if !require_root("review_s9_a_truncation_of_a_shared_file_needs_no_room") {
        return;
    }
    let w = World::new();
    let small = w.dir("small");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&small)
        .status()
        .expect("mount tmpfs");
    assert!(status.success());
    let _tmpfs = Tmpfs(small.clone());
    let store = small.join("store");
    fs::create_dir_all(store.join("objects/ab")).unwrap();
    fs::create_dir_all(store.join("tmp")).unwrap();
    let g = small.join("g");
    fs::create_dir(&g).unwrap();
    let data: Vec<u8> = (0..1800u32 << 10).map(|i| (i % 251) as u8).collect();
    let obj = store.join("objects/ab").join(format!("{:062x}", 1));
    fs::write(&obj, &data).unwrap();
    set_xattr(&obj, MARKER, format!("ab{:062x}", 1).as_bytes());
    for name in ["log", "cut"] {
        fs::hard_link(&obj, g.join(name)).unwrap();
    }
    let m = Mount::start(&store, &g, &w.dir("m"), &[]);
    // No room for a whole copy: a write open without O_TRUNC still fails.
    let r = OpenOptions::new().append(true).open(m.path("log"));
    assert_eq!(errno(r), libc::ENOSPC);
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path("log"))
        .expect("an O_TRUNC open needs no room for the data it drops");
    f.write_all(b"new\n").unwrap();
    drop(f);
    assert_eq!(fs::read(m.path("log")).unwrap(), b"new\n");
    let c = std::ffi::CString::new(m.path("cut").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    let r = unsafe { libc::truncate(c.as_ptr(), 1000) };
    assert_eq!(r, 0, "truncate: {}", std::io::Error::last_os_error());
    assert_eq!(fs::read(m.path("cut")).unwrap(), &data[..1000]);
    assert_eq!(fs::metadata(m.path("cut")).unwrap().len(), 1000);
    drop(m);
    // The object and its other links are untouched; no temp left.
    assert!(fs::read(&obj).unwrap() == data);
    assert_eq!(fs::metadata(&obj).unwrap().nlink(), 1);
    assert_ne!(ino(&g.join("log")), ino(&obj));
    let mut names: Vec<_> = fs::read_dir(&g)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["cut", "log"]);
}

#[test]
fn a_broken_file_in_place_carries_no_mark_of_the_break() {
    if !require_root("a_broken_file_in_place_carries_no_mark_of_the_break") {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    w.shared(b"shared data", &[g.join("f"), other.join("f")]);
    let m = w.mount(&g, "m", &[]);
    fs::OpenOptions::new()
        .append(true)
        .open(m.path("f"))
        .unwrap()
        .write_all(b"+")
        .unwrap();
    assert_eq!(fs::read(g.join("f")).unwrap(), b"shared data+");
    let names: Vec<_> = xattrs(&g.join("f")).into_iter().map(|(n, _)| n).collect();
    assert!(
        !names
            .iter()
            .any(|n| n.to_string_lossy().starts_with("trusted.unifs.")),
        "{names:?}"
    );
    // Nothing but the file in its directory.
    assert_eq!(fs::read_dir(&g).unwrap().count(), 1);
}
