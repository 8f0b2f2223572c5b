//! Power cuts during and after a link break (invariant 2), simulated: the
//! image of a loop-mounted ext4 is copied while nothing is synced, which is
//! what its disk held at that moment (see [`Ext4::power_cut`]). Journal
//! commits are 300 s apart, so that only what the daemon or the test syncs
//! reaches the journal meanwhile.

use super::harness::{Ext4, Mount};
use crate::common::require_root;
use crate::tree::{assert_verify_clean, bytes, file, unify_json};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const SIZE: usize = 3 << 20;

/// Guests a and b share `etc/big` (3 MiB) and `etc/small` in a store on
/// `ext4`; a is mounted with `opts`.
struct Shared {
    store: PathBuf,
    a: PathBuf,
    b: PathBuf,
    old_big: Vec<u8>,
    old_small: Vec<u8>,
    mount: Mount,
}

fn shared(ext4: &Ext4, opts: &[&str]) -> Shared {
    let (store, a, b) = (ext4.dir("store"), ext4.dir("a"), ext4.dir("b"));
    let (old_big, old_small) = (bytes(7, SIZE), b"small and shared\n".to_vec());
    for g in [&a, &b] {
        file(g, "etc/big", &old_big, 0o644);
        file(g, "etc/small", &old_small, 0o644);
    }
    let s = unify_json(&store, &[&"--no-default-excludes", &a, &b]);
    assert_eq!(s["files_linked"], 2, "{s}");
    // The unified guests are on disk before the mount breaks anything.
    nix::unistd::sync();
    let mount = Mount::start(&store, &a, &ext4.dir("ma"), opts);
    Shared {
        store,
        a,
        b,
        old_big,
        old_small,
        mount,
    }
}

/// `old` with its first bytes replaced by `patch`.
fn patched(old: &[u8], patch: &[u8]) -> Vec<u8> {
    let mut new = old.to_vec();
    new[..patch.len()].copy_from_slice(patch);
    new
}

/// Writes `patch` at the start of the mounted file `path`, then syncs the
/// file with fdatasync if asked.
fn write_through(path: &Path, patch: &[u8], datasync: bool) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(patch, 0).unwrap();
    if datasync {
        f.sync_data().unwrap();
    }
}

fn log(s: &Shared) -> String {
    fs::read_to_string(&s.mount.log).unwrap_or_default()
}

/// A guest's fdatasync after the write that broke the link is a promise:
/// after a power cut its data is under the name. The break's rename is
/// part of that write, and it was left unsynced: the power cut put the old
/// shared file back under the name, without the synced data (in both the
/// fsync and the ordered-rename way of breaking). A write nobody synced
/// leaves the old file or the new one, complete.
#[test]
fn a_guests_fdatasync_after_a_break_survives_a_power_cut() {
    if !require_root("power_fdatasync_after_a_break") {
        return;
    }
    for opts in [&[][..], &["break_fsync"][..]] {
        let ext4 = Ext4::new(&[], &["commit=300"]);
        let s = shared(&ext4, opts);
        let patch = b"synced by the guest\n";
        // In this order: a break that fsyncs its copy commits the journal,
        // with whatever renames it holds.
        write_through(&s.mount.path("etc/small"), b"never synced\n", false);
        write_through(&s.mount.path("etc/big"), patch, true);
        let cut = ext4.power_cut();
        let big = fs::read(cut.root().join("a/etc/big")).unwrap();
        assert!(
            big == patched(&s.old_big, patch),
            "-o {opts:?}: the synced write is lost after a power cut (first bytes {:?})",
            String::from_utf8_lossy(&big[..20])
        );
        let small = fs::read(cut.root().join("a/etc/small")).unwrap();
        assert!(
            small == s.old_small || small == patched(&s.old_small, b"never synced\n"),
            "-o {opts:?}: {small:?}"
        );
        for rel in ["etc/big", "etc/small"] {
            let want = if rel == "etc/big" {
                &s.old_big
            } else {
                &s.old_small
            };
            assert_eq!(&fs::read(cut.root().join("b").join(rel)).unwrap(), want);
            assert_eq!(&fs::read(s.b.join(rel)).unwrap(), want);
        }
        drop(s.mount);
        assert_verify_clean(&s.store);
    }
}

/// How breaks are made durable, by filesystem: ext4 with a journal in
/// data=ordered mode writes a file renamed over another before the rename
/// commits, so the daemon skips the fsync there; everywhere else (no
/// journal, data=writeback, or asked to by -o break_fsync) it fsyncs. In
/// every case, once the journal has committed the rename (an fsync of
/// another file commits it), the whole copy is on disk with it.
#[test]
fn a_committed_break_has_its_whole_copy_on_disk() {
    if !require_root("power_committed_break") {
        return;
    }
    // mkfs.ext4 arguments, mount options, unifs mount options, and
    // whether the daemon may rely on the ordered rename.
    type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], bool);
    let cases: [Case; 4] = [
        (&[], &["commit=300"], &[], true),
        (&[], &["commit=300"], &["break_fsync"], false),
        (&[], &["commit=300", "data=writeback"], &[], false),
        (&["-O", "^has_journal"], &[], &[], false),
    ];
    for (mkfs, mount_opts, opts, ordered) in cases {
        let case = format!("mkfs {mkfs:?}, mount {mount_opts:?}, -o {opts:?}");
        let ext4 = Ext4::new(mkfs, mount_opts);
        let s = shared(&ext4, opts);
        let said = log(&s);
        assert_eq!(
            said.contains("ext4's ordered rename"),
            ordered,
            "{case}: {said}"
        );
        assert_eq!(said.contains("fsync each copy"), !ordered, "{case}: {said}");
        let patch = b"changed by the guest\n";
        write_through(&s.mount.path("etc/big"), patch, false);
        // Commits the journal (with the break's rename), and nothing of
        // the guest's file.
        let other = ext4.root().join("other");
        fs::write(&other, b"x").unwrap();
        fs::File::open(&other).unwrap().sync_all().unwrap();
        let cut = ext4.power_cut();
        let big = fs::read(cut.root().join("a/etc/big")).unwrap();
        if ext4_journaled(mkfs) {
            // The rename committed: the copy is whole, with or without the
            // guest's write (its data was not synced).
            assert!(
                big == s.old_big[..] || big == patched(&s.old_big, patch),
                "{case}: first bytes {:?}",
                String::from_utf8_lossy(&big[..20])
            );
            assert_ne!(
                crate::tree::ino(&cut.root().join("a/etc/big")),
                crate::tree::ino(&cut.root().join("b/etc/big")),
                "{case}: the rename was not committed"
            );
        } else {
            assert!(
                big == s.old_big[..] || big == patched(&s.old_big, patch),
                "{case}"
            );
        }
        assert_eq!(fs::read(cut.root().join("b/etc/big")).unwrap(), s.old_big);
        assert_eq!(
            fs::read(s.a.join("etc/big")).unwrap(),
            patched(&s.old_big, patch)
        );
        drop(s.mount);
        assert_verify_clean(&s.store);
    }
}

fn ext4_journaled(mkfs: &[&str]) -> bool {
    !mkfs.contains(&"^has_journal")
}
