//! Review s42-stressng: outside stress tools (stress-ng's filesystem
//! stressors with --verify, fio with crc32c verification on files that
//! start shared, dbench), run against a mount of a unified guest and
//! against a plain directory of the same ext4, as root and as uid 1000.
//! All ran clean on the mount but one: stress-ng's `chattr` stressor
//! skipped the mount ("not supported on filesystem"). A SETFLAGS naming a
//! flag the filesystem keeps itself (`I` of an indexed directory, `e` of
//! every ext4 file, E, V, N) failed with EOPNOTSUPP, where ext4 leaves such
//! a flag as it is and makes the rest of the change: `chattr =s FILE` and
//! `chattr =d DIR` failed on the mount only. And 4 instances of the
//! `chdir` stressor (8,192 directories held open each) used up the
//! daemon's fds, so their mkdirs failed with EMFILE.

use crate::common::require_root;
use crate::fs::harness::{errno, ino, Ext4, Mount, World};
use crate::review_s36_attrflags::flags;
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

const FS_SECRM_FL: u32 = 0x1;
const FS_NODUMP_FL: u32 = 0x40;
const FS_INDEX_FL: u32 = 0x1000;
const FS_EXTENT_FL: u32 = 0x8_0000;

/// FS_IOC_SETFLAGS with `value` (not read-modify-write, as `chattr =`
/// and stress-ng do), and the flags it leaves.
pub(crate) fn set_flags(path: &Path, value: u32) -> (io::Result<()>, u32) {
    let f = fs::File::open(path).unwrap();
    let r = unifs::sys::set_inode_flags(f.as_fd(), value);
    (r, flags(path))
}

/// A directory big enough for ext4 to index it (`I`).
fn indexed_dir(path: &Path) {
    fs::create_dir(path).unwrap();
    for i in 0..300 {
        fs::write(path.join(format!("an-entry-with-a-long-name-{i:04}")), b"").unwrap();
    }
}

/// Each SETFLAGS through the mount answers and leaves what the same
/// SETFLAGS on a twin in a plain directory of the same ext4 does: a
/// change that drops `I` or `e` (which ext4 keeps) sets the rest; one
/// that only adds `I` changes nothing and breaks no shared file; one that
/// only clears `e` fails as on ext4 (its answer is ext4's). A shared file's change lands on the
/// guest's copy, the other guest's file and the object keep no flag.
#[test]
fn s42_setflags_leaves_the_filesystems_own_flags_as_ext4_does() {
    if !require_root("s42_setflags_leaves_the_filesystems_own_flags_as_ext4_does") {
        return;
    }
    let ext4 = Ext4::new(&[], &[]);
    let w = World::new_in(&ext4.root());
    let (g, h, plain) = (w.dir("g"), w.dir("h"), w.dir("plain"));
    for root in [&g, &plain] {
        indexed_dir(&root.join("d"));
        fs::write(root.join("own"), b"own\n").unwrap();
        fs::write(root.join("kept"), b"kept\n").unwrap();
    }
    let obj = w.shared(b"conf\n", &[g.join("conf"), h.join("conf")]);
    let obj2 = w.shared(b"conf2\n", &[g.join("conf2"), h.join("conf2")]);
    fs::write(plain.join("conf"), b"conf\n").unwrap();
    fs::write(plain.join("conf2"), b"conf2\n").unwrap();
    // ext4's answer to a change of `e` depends on how the file's blocks
    // are (delayed allocation or not): written out alike on both sides.
    for rel in ["d", "own", "kept", "conf", "conf2"] {
        for root in [&g, &plain] {
            fs::File::open(root.join(rel)).unwrap().sync_all().unwrap();
        }
    }
    assert_ne!(flags(&plain.join("d")) & FS_INDEX_FL, 0, "ext4 indexes d");
    assert_ne!(flags(&plain.join("own")) & FS_EXTENT_FL, 0);
    let m = w.mount(&g, "m", &[]);

    // Each entry's value from the flags it has.
    type Case = (&'static str, fn(u32) -> u32);
    let cases: [Case; 5] = [
        // `chattr =d d`: I and e dropped.
        ("d", |_| FS_NODUMP_FL),
        // `chattr =s own`: e dropped.
        ("own", |_| FS_SECRM_FL),
        // e dropped, nothing else: ext4 refuses it.
        ("kept", |old| old & !FS_EXTENT_FL),
        ("conf", |old| old | FS_NODUMP_FL),
        // I added to a file: ext4 leaves it off, nothing changes.
        ("conf2", |old| old | FS_INDEX_FL),
    ];
    for (rel, value) in cases {
        let on_plain = set_flags(&plain.join(rel), value(flags(&plain.join(rel))));
        let on_mount = set_flags(&m.path(rel), value(flags(&m.path(rel))));
        assert_eq!(
            (errno(on_mount.0), on_mount.1),
            (errno(on_plain.0), on_plain.1),
            "{rel}: errno and flags through the mount, then on ext4"
        );
    }
    // The change to conf broke it; conf2 was left shared.
    assert_ne!(ino(&g.join("conf")), ino(&obj));
    assert_eq!(flags(&g.join("conf")) & FS_NODUMP_FL, FS_NODUMP_FL);
    for other in [h.join("conf"), obj.clone()] {
        assert_eq!(flags(&other) & FS_NODUMP_FL, 0, "{other:?}");
    }
    assert_eq!(ino(&g.join("conf2")), ino(&obj2));
    assert_eq!(ino(&h.join("conf2")), ino(&obj2));
}

/// stress-ng's `chdir` stressor, 4 instances, each holding 8,192
/// directories open: its mkdirs failed with EMFILE on the mount only. Each
/// directory (and file) a guest holds open is an fd of the daemon's, and
/// once they took all of its limit, every request needing an fd for a
/// moment failed too: mkdir, unlink, rename, symlink, a lookup. Now a
/// guest's open fails (EMFILE, as a process at its own limit sees) while
/// a few fds are still free, and those requests go on. The daemon gets
/// 512 fds here, the test holds the directories (before: the open that
/// failed left one fd free, so mkdir and symlink passed and the rename,
/// which needs two, failed with EMFILE).
#[test]
fn s42_directories_held_open_up_to_the_daemons_limit_leave_mkdir_working() {
    if !require_root("s42_directories_held_open_up_to_the_daemons_limit_leave_mkdir_working") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::create_dir(g.join("d")).unwrap();
    fs::write(g.join("old"), b"old\n").unwrap();
    let m = mount_with_512_fds(&w, &g);
    let held = hold_until_emfile(&m.path("d"));
    fs::create_dir(m.path("new")).expect("mkdir with the directories held");
    std::os::unix::fs::symlink("new", m.path("link")).expect("symlink");
    fs::rename(m.path("old"), m.path("renamed")).expect("rename");
    fs::remove_file(m.path("renamed")).expect("unlink");
    assert!(fs::symlink_metadata(m.path("new/..")).is_ok());
    drop(held);
    // Closing sends the daemon its releases without waiting for them: its
    // fds come back a moment later, so the open may need a few tries.
    let mut last = None;
    let reopened = crate::guest::harness::within_30s(|| {
        last = fs::write(m.path("new/file"), b"x").err();
        last.as_ref()
            .is_none_or(|e| e.raw_os_error() != Some(libc::EMFILE))
    });
    assert!(
        reopened && last.is_none(),
        "an open once they are closed: {last:?}"
    );
}

/// A mount of `g` whose daemon may open 512 files.
pub(crate) fn mount_with_512_fds(w: &World, g: &Path) -> Mount {
    let mp = w.dir("m");
    let log = fs::File::create(mp.with_extension("log")).unwrap();
    let wrapper = ["prlimit", "--nofile=512:512", "--"];
    Mount::start_under(&wrapper, &w.store, g, &mp, &[], log)
}

/// Opens the directory `dir` of a [`mount_with_512_fds`] again and again
/// until the daemon refuses with EMFILE: the opens it held.
pub(crate) fn hold_until_emfile(dir: &Path) -> Vec<fs::File> {
    let mut held = Vec::new();
    let refused = loop {
        match fs::File::open(dir) {
            Ok(f) => held.push(f),
            Err(e) => break e,
        }
        assert!(held.len() < 1000, "the daemon's 512 fds did not run out");
    };
    assert_eq!(refused.raw_os_error(), Some(libc::EMFILE), "{refused}");
    held
}
