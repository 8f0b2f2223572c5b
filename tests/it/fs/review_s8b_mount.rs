//! Review s8b-mount: the mount changes of review round s8 (lookups under
//! the names lock, set-ID bits on `O_TRUNC`, `O_NOATIME`, whiteouts, rmdir
//! of stale temps, the mountpoint check) looked at again.

use super::harness::{is_mounted, unmount_lazy, World};
use crate::common::require_root;
use crate::tree::{file, unifs};
use std::path::{Path, PathBuf};

/// Bind mounts made by a test, detached (with whatever was mounted below
/// them) when it ends, failed or not.
struct Binds(Vec<PathBuf>);

impl Binds {
    fn bind(&mut self, from: &Path, to: &Path) {
        nix::mount::mount(
            Some(from),
            to,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        self.0.push(to.to_path_buf());
    }
}

impl Drop for Binds {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A mountpoint inside another mount of the guest directory (a bind mount
/// of it, or of a directory above it) is inside the guest too: with shared
/// propagation, systemd's default for every mount, the FUSE mount shows up
/// in the guest directory as well, and the daemon, reaching that entry of
/// its tree, waits on itself (`ls -la` of the bind mount hung for good).
#[test]
fn a_mountpoint_inside_a_bind_mount_of_its_guest_is_refused() {
    if !require_root("review_s8b_mount_mountpoint_inside_a_bind_mount") {
        return;
    }
    let w = World::new();
    let a = w.dir("top/a");
    file(&a, "f", b"x\n", 0o644);
    w.dir("top/a/mnt");
    let (alias, above) = (w.dir("alias"), w.dir("above"));
    let top = w.tmp.path().join("top");
    let mut binds = Binds(Vec::new());
    // A shared mount, as under systemd, and two bind mounts of it (peers).
    binds.bind(&top, &top);
    nix::mount::mount(
        None::<&str>,
        &top,
        None::<&str>,
        nix::mount::MsFlags::MS_SHARED,
        None::<&str>,
    )
    .unwrap();
    binds.bind(&a, &alias);
    binds.bind(&top, &above);
    for mp in [alias.join("mnt"), above.join("a/mnt")] {
        let out = unifs(&w.store, &[&"mount", &"-o", &"threads=1", &a, &mp]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let mounted = is_mounted(&mp) || is_mounted(&a.join("mnt"));
        unmount_lazy(&mp);
        unmount_lazy(&a.join("mnt"));
        assert!(!mounted, "mounted at {} inside its own guest", mp.display());
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("is inside the guest directory"), "{err}");
    }
    // The guest's own directory, reached through a bind mount, stays a
    // valid mountpoint, as the directory itself is.
    let over = above.join("a");
    let out = unifs(&w.store, &[&"mount", &a, &over]);
    let mounted = is_mounted(&over);
    let listed = std::fs::read_to_string(over.join("f"));
    let _ = unifs(&w.store, &[&"umount", &over]);
    assert!(mounted, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(listed.unwrap(), "x\n");
}

/// copy_file_range(2) from a file opened `O_NOATIME` leaves its access
/// time alone, as on ext4 (cp copies with it); the daemon copied from the
/// handle's shared backing fd, which lacks the flag, so the atime moved.
#[test]
fn copy_file_range_from_an_o_noatime_open_leaves_the_access_time_alone() {
    if !require_root("review_s8b_mount_copy_file_range_o_noatime") {
        return;
    }
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    for opts in [&[][..], &["nopassthrough"][..]] {
        let w = World::new();
        let (plain, g) = (w.dir("plain"), w.dir("g"));
        for d in [&plain, &g] {
            std::fs::write(d.join("f"), b"content").unwrap();
            let f = std::fs::File::open(d.join("f")).unwrap();
            let t = |sec| unifs::sys::Timestamp { sec, nsec: 0 };
            // atime before mtime: relatime would update it on a read.
            unifs::sys::futimens(std::os::fd::AsFd::as_fd(&f), t(1_000_000), t(2_000_000)).unwrap();
        }
        let m = super::harness::Mount::start(&w.store, &g, &w.dir("m"), opts);
        let copy = |b: &Path| {
            let src = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOATIME)
                .open(b.join("f"))
                .unwrap();
            let dst = std::fs::File::create(b.join("copy")).unwrap();
            // SAFETY: two open fds; null offsets use the files' own.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    std::ptr::null_mut(),
                    dst.as_raw_fd(),
                    std::ptr::null_mut(),
                    7,
                    0,
                )
            };
            assert_eq!(n, 7, "{:?}", std::io::Error::last_os_error());
            drop(dst);
            assert_eq!(std::fs::read(b.join("copy")).unwrap(), b"content");
        };
        copy(&plain);
        copy(&m.dir);
        let atime = |d: &Path| std::fs::metadata(d.join("f")).unwrap().atime();
        assert_eq!(atime(&plain), 1_000_000);
        assert_eq!(atime(&g), 1_000_000, "backing {opts:?}");
    }
}
