//! Review s42-stressrev: of the daemon's fd reserve for requests (4b3cf7c)
//! and of the flags it keeps as ext4 does (3e1d5e1). Every fd the daemon
//! holds for a guest's open must count against the reserve: the O_NOATIME
//! fd of each handle did not, so a guest opening one file again and again
//! with O_NOATIME took every fd of the daemon, and mkdir, rename and the
//! rest failed with EMFILE. And a create the reserve refused made its file
//! first, where ext4 (open(2) takes its fd first) makes none. On xfs, a
//! SETFLAGS adding a flag ext4 keeps itself (I, E, V, N) was taken, where
//! xfs refuses it.

use crate::common::require_root;
use crate::fs::harness::{errno, ino, Mount, World};
use crate::review_s18_fs::Loopfs;
use crate::review_s36_attrflags::flags;
use crate::review_s42_stressng::{hold_until_emfile, mount_with_512_fds, set_flags};
use std::fs;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

const FS_ENCRYPT_FL: u32 = 0x800;
const FS_INDEX_FL: u32 = 0x1000;
const FS_VERITY_FL: u32 = 0x10_0000;
const FS_INLINE_DATA_FL: u32 = 0x1000_0000;

/// A [`World`] (store and guests) on `fs`.
fn world_on(fs: &Loopfs) -> World {
    World::new_in(&fs.path(""))
}

/// The requests that need an fd only for a moment, all working.
fn requests_work(m: &Mount) {
    fs::create_dir(m.path("new")).expect("mkdir");
    std::os::unix::fs::symlink("new", m.path("link")).expect("symlink");
    fs::rename(m.path("old"), m.path("renamed")).expect("rename");
    fs::remove_file(m.path("renamed")).expect("unlink");
}

/// One file opened with O_NOATIME 1,000 times (a process may: its own
/// limit is its business) costs the daemon one fd more, not one per open:
/// each handle had an fd of its own, not counted against the reserve, so
/// the daemon's 512 ran out and mkdir failed with EMFILE.
#[test]
fn s42_a_file_opened_with_noatime_again_and_again_leaves_the_daemon_its_fds() {
    if !require_root("s42_a_file_opened_with_noatime_again_and_again_leaves_the_daemon_its_fds") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("f"), b"data\n").unwrap();
    fs::write(g.join("old"), b"old\n").unwrap();
    let m = mount_with_512_fds(&w, &g);
    let mut held = Vec::new();
    for i in 0..1000 {
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOATIME)
            .open(m.path("f"))
            .unwrap_or_else(|e| panic!("open {i}: {e}"));
        held.push(f);
    }
    requests_work(&m);
    let mut buf = [0u8; 5];
    held[999].read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"data\n");
}

/// A create refused for want of fds (EMFILE) makes no file, as on ext4,
/// where open(2) takes its fd before it creates: it made the file, then
/// failed its open. Directories held open take the daemon's fds.
#[test]
fn s42_a_create_refused_for_want_of_fds_makes_no_file() {
    if !require_root("s42_a_create_refused_for_want_of_fds_makes_no_file") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::create_dir(g.join("d")).unwrap();
    let m = mount_with_512_fds(&w, &g);
    let held = hold_until_emfile(&m.path("d"));
    let created = fs::File::create(m.path("new-file"));
    assert_eq!(
        created.as_ref().err().and_then(|e| e.raw_os_error()),
        Some(libc::EMFILE),
        "{created:?}"
    );
    assert!(
        !g.join("new-file").exists(),
        "the refused create made its file"
    );
    assert!(fs::symlink_metadata(m.path("new-file")).is_err());
    drop(held);
    fs::write(m.path("new-file"), b"x").expect("a create once they are closed");
}

/// On xfs, a SETFLAGS adding a flag ext4 keeps itself (I, E, V, N) fails
/// with EOPNOTSUPP, as xfs answers, on a private and on a shared file (the
/// shared one left shared): the mount dropped such a flag from the change
/// as ext4 does (3e1d5e1), and answered yes where xfs says no. On ext4 such
/// a change still changes nothing and breaks nothing
/// (s42_setflags_leaves_the_filesystems_own_flags_as_ext4_does).
#[test]
fn s42_setflags_of_a_flag_ext4_keeps_answers_as_xfs_does_on_xfs() {
    if !require_root("s42_setflags_of_a_flag_ext4_keeps_answers_as_xfs_does_on_xfs") {
        return;
    }
    let xfs = Loopfs::new("xfs", 320 << 20, &["-q"]);
    let w = world_on(&xfs);
    let (g, h, plain) = (w.dir("g"), w.dir("h"), w.dir("plain"));
    fs::write(g.join("own"), b"own\n").unwrap();
    fs::write(plain.join("own"), b"own\n").unwrap();
    fs::write(plain.join("conf"), b"conf\n").unwrap();
    let obj = w.shared(b"conf\n", &[g.join("conf"), h.join("conf")]);
    let m = w.mount(&g, "m", &[]);
    for flag in [FS_INDEX_FL, FS_ENCRYPT_FL, FS_VERITY_FL, FS_INLINE_DATA_FL] {
        for rel in ["own", "conf"] {
            let on_plain = set_flags(&plain.join(rel), flags(&plain.join(rel)) | flag);
            let on_mount = set_flags(&m.path(rel), flags(&m.path(rel)) | flag);
            assert_eq!(
                (errno(on_mount.0), on_mount.1),
                (errno(on_plain.0), on_plain.1),
                "{rel} {flag:#x}: errno and flags through the mount, then on xfs"
            );
        }
    }
    assert_eq!(ino(&g.join("conf")), ino(&obj), "conf still shared");
}
