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
