//! Review s29 (deep): every request in a deep tree resolved its node's
//! whole path from the backing root, so a request at depth N cost N steps
//! and a walk down a deep tree the square of its depth (a minute for 4,200
//! levels). The daemon now holds a few deep directories (fds, bounded) as
//! starting points; these tests check it resolves a few names per request
//! there, that renames, exchanges, rmdir and host moves of held
//! directories behave as before, and that its fds stay bounded.

use crate::common::{require_root, require_strace};
use crate::fs::harness::{errno, Mount, World};
use std::ffi::CString;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `dir` with `n` levels named `name` below it.
pub(crate) fn below(dir: &Path, name: &str, n: usize) -> PathBuf {
    (0..n).fold(dir.to_path_buf(), |p, _| p.join(name))
}

/// Makes a chain of `n` directories `name` in `dir`; returns the deepest.
pub(crate) fn chain(dir: &Path, name: &str, n: usize) -> PathBuf {
    let d = below(dir, name, n);
    fs::create_dir_all(&d).unwrap();
    d
}

/// The fds `pid` holds, less its FUSE device fds: the mount shows in
/// mountinfo before the daemon's worker threads have cloned theirs (3 of
/// 20 mounts, seen right away, held 1 of 4), and a count taken then came
/// out 3 short.
pub(crate) fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| fs::read_link(e.path()).is_ok_and(|l| l != Path::new("/dev/fuse")))
        .count()
}

/// The paths of the `openat2` calls in strace output `trace`.
fn openat2_paths(trace: &str) -> Vec<String> {
    trace
        .lines()
        .filter_map(|l| {
            l.split_once("openat2(")?
                .1
                .split_once(", \"")?
                .1
                .split_once("\", {")
        })
        .map(|(path, _)| path.to_string())
        .collect()
}

#[test]
fn a_request_deep_in_a_tree_resolves_a_few_names_not_its_whole_path() {
    if !require_root("review_s29_a_request_deep_in_a_tree")
        || !require_strace("review_s29_a_request_deep_in_a_tree")
    {
        return;
    }
    const DEPTH: usize = 600;
    let w = World::new();
    let g = w.dir("g");
    chain(&g, "a", DEPTH);
    let trace = w.tmp.path().join("trace");
    let mp = w.dir("m");
    let wrapper = [
        "strace",
        "-f",
        "-qq",
        "-e",
        "trace=openat2",
        "-s",
        "65536",
        "-o",
    ];
    let wrapper: Vec<&str> = wrapper
        .iter()
        .copied()
        .chain([trace.to_str().unwrap()])
        .collect();
    let log = File::create(w.tmp.path().join("m.log")).unwrap();
    let m = Mount::start_under(&wrapper, &w.store, &g, &mp, &[], log);
    // Looked up at every level on the way down, then names at the bottom.
    let deep = below(&m.dir, "a", DEPTH);
    for i in 0..100 {
        assert_eq!(
            errno(fs::symlink_metadata(deep.join(format!("x{i}")))),
            libc::ENOENT
        );
    }
    // And back up, a name looked up at each level (as `find` and `rm -rf`
    // go back up a tree).
    for depth in (1..DEPTH).rev() {
        let at = below(&m.dir, "a", depth).join("y");
        assert_eq!(errno(fs::symlink_metadata(at)), libc::ENOENT);
    }
    drop(m);
    let paths = openat2_paths(&fs::read_to_string(&trace).unwrap());
    let names: usize = paths.iter().map(|p| p.split('/').count()).sum();
    // From the root each would average about 300 names (over 200,000 in
    // all); from a held directory, which a walk down holds one in 32 of,
    // fewer than 32.
    assert!(paths.len() > DEPTH, "{} openat2 calls traced", paths.len());
    assert!(
        names < paths.len() * 32,
        "{} openat2 calls resolved {names} names in all",
        paths.len()
    );
}

#[test]
fn the_daemon_holds_few_fds_after_walking_thousands_of_directories() {
    if !require_root("review_s29_the_daemon_holds_few_fds") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let deep = chain(&g, "a", 1500);
    let wide = chain(&g, "w", 40);
    for i in 0..1500 {
        fs::create_dir(wide.join(format!("d{i}"))).unwrap();
        fs::create_dir(deep.join(format!("d{i}"))).unwrap();
    }
    let m = w.mount(&g, "m", &[]);
    let before = fd_count(m.pid());
    let found = std::process::Command::new("find")
        .arg(&m.dir)
        .args(["-type", "d", "-printf", "x"])
        .output()
        .unwrap();
    assert!(found.status.success(), "{found:?}");
    assert_eq!(found.stdout.len(), 1 + 1500 + 40 + 3000);
    // The kernel sends find's RELEASEDIRs on their own: under load the
    // daemon takes them after find ended (the CI at 0b819bb saw 78).
    let mut after = 0;
    let settled = crate::fs::harness::wait_until(std::time::Duration::from_secs(30), || {
        after = fd_count(m.pid());
        after <= before + 64
    });
    assert!(
        settled,
        "the daemon held {before} fds before the walk, {after} 30 s after"
    );
}

/// Creates `name` in the directory at `dir` through the mount, empty.
pub(crate) fn touch(dir: &Path, name: &str) {
    File::create(dir.join(name)).unwrap();
}

#[test]
fn renames_and_exchanges_of_held_directories_and_their_ancestors_act_on_the_right_ones() {
    if !require_root("review_s29_renames_and_exchanges_of_held_directories") {
        return;
    }
    const DEPTH: usize = 80;
    let w = World::new();
    let g = w.dir("g");
    let bottom = chain(&g, "a", DEPTH);
    fs::write(bottom.join("who"), "a").unwrap();
    let x = chain(&below(&g, "a", 40), "x", 10);
    fs::write(x.join("who"), "x").unwrap();
    let y = chain(&below(&g, "a", 40), "y", 10);
    fs::write(y.join("who"), "y").unwrap();
    let m = w.mount(&g, "m", &[]);
    let mb = below(&m.dir, "a", DEPTH);
    let mid = below(&m.dir, "a", 40);
    // Known and held: looked up at the bottom.
    for d in [
        &mb,
        &mid.join("x/x/x/x/x/x/x/x/x/x"),
        &below(&mid.join("y"), "y", 9),
    ] {
        assert!(fs::read_to_string(d.join("who")).is_ok(), "{}", d.display());
    }

    // An ancestor of held directories renamed through the mount.
    let anc = below(&m.dir, "a", 50);
    let moved = anc.with_file_name("b");
    fs::rename(&anc, &moved).unwrap();
    let now = below(&moved, "a", DEPTH - 50);
    assert_eq!(fs::read_to_string(now.join("who")).unwrap(), "a");
    assert_eq!(errno(fs::symlink_metadata(mb.join("who"))), libc::ENOENT);
    touch(&now, "after-rename");
    let back = below(&below(&g, "a", 49).join("b"), "a", DEPTH - 50);
    assert!(
        back.join("after-rename").exists(),
        "lands where it was moved"
    );

    // Two held directories exchanged through the mount.
    let (mx, my) = (mid.join("x"), mid.join("y"));
    let cx = CString::new(mx.as_os_str().as_bytes()).unwrap();
    let cy = CString::new(my.as_os_str().as_bytes()).unwrap();
    // SAFETY: two NUL-terminated paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cx.as_ptr(),
            libc::AT_FDCWD,
            cy.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    let (bx, by) = (below(&mx, "y", 9), below(&my, "x", 9));
    assert_eq!(fs::read_to_string(bx.join("who")).unwrap(), "y");
    assert_eq!(fs::read_to_string(by.join("who")).unwrap(), "x");
    touch(&bx, "in-y");
    touch(&by, "in-x");
    // On the backing tree the two swapped places as well.
    let gmid = below(&g, "a", 40);
    let (y_now, x_now) = (
        below(&gmid.join("x"), "y", 9),
        below(&gmid.join("y"), "x", 9),
    );
    assert!(y_now.join("in-y").exists() && x_now.join("in-x").exists());
    assert_eq!(fs::read_dir(&y_now).unwrap().count(), 2, "who and in-y");

    // A held directory removed and made again under its name.
    let leaf = now.join("leaf");
    fs::create_dir(&leaf).unwrap();
    touch(&leaf, "old");
    fs::remove_file(leaf.join("old")).unwrap();
    fs::remove_dir(&leaf).unwrap();
    assert_eq!(errno(fs::symlink_metadata(leaf.join("old"))), libc::ENOENT);
    fs::create_dir(&leaf).unwrap();
    touch(&leaf, "new");
    let names: Vec<_> = fs::read_dir(&leaf)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["new"]);
    assert!(
        back.join("leaf/new").exists(),
        "in the new backing directory"
    );
}

#[test]
fn a_held_directory_moved_out_of_the_tree_on_the_host_is_not_reached() {
    if !require_root("review_s29_a_held_directory_moved_out") {
        return;
    }
    const DEPTH: usize = 80;
    let w = World::new();
    let (g, outside) = (w.dir("g"), w.dir("outside"));
    let bottom = chain(&g, "a", DEPTH);
    fs::write(bottom.join("secret"), "host").unwrap();
    let m = w.mount(&g, "m", &[]);
    let mb = below(&m.dir, "a", DEPTH);
    // Held open by a guest process (its cwd, say), and by the daemon. (Not
    // read: the file would be open in the daemon till its release came.)
    let held = File::open(&mb).unwrap();
    assert!(fs::symlink_metadata(mb.join("secret")).unwrap().is_file());
    fs::rename(below(&g, "a", 40), outside.join("moved")).unwrap();
    let fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&held));
    let at = Path::new(&fd);
    assert_ne!(
        fs::read_to_string(at.join("secret")).ok().as_deref(),
        Some("host"),
        "read outside the tree"
    );
    assert!(fs::create_dir(at.join("made")).is_err());
    let listed = fs::read_dir(at).map(|d| d.count()).unwrap_or(0);
    assert_eq!(listed, 0, "listed outside the tree");
    assert!(fs::symlink_metadata(mb.join("secret")).is_err());
    let out = below(&outside.join("moved"), "a", DEPTH - 40);
    assert!(!out.join("made").exists(), "made outside the tree");
}

/// Unmounts what the test mounted on the host, even if it fails.
pub(crate) struct Bind(pub(crate) PathBuf);

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_mount_made_over_an_ancestor_of_a_held_directory_is_not_crossed() {
    if !require_root("review_s29_a_mount_made_over_an_ancestor") {
        return;
    }
    const DEPTH: usize = 80;
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    chain(&g, "a", DEPTH);
    let m = w.mount(&g, "m", &[]);
    let mb = below(&m.dir, "a", DEPTH);
    assert_eq!(errno(fs::symlink_metadata(mb.join("x"))), libc::ENOENT);
    let over = below(&g, "a", 60);
    let bound = std::process::Command::new("mount")
        .arg("--bind")
        .arg(&other)
        .arg(&over)
        .status()
        .unwrap();
    assert!(bound.success());
    let _bind = Bind(over);
    // As on the way from the root: a path through a mount is refused.
    assert_eq!(errno(fs::symlink_metadata(mb.join("y"))), libc::EXDEV);
    assert_eq!(errno(File::create(mb.join("made"))), libc::EXDEV);
    drop(_bind);
    assert!(!below(&g, "a", DEPTH).join("made").exists());
}
