//! Review s42-breaknote: the durability of a break's rename and of a
//! guest's fsync. A break's rename is made durable lazily: it is noted, and
//! a guest's fsync of the file syncs its directory (or a syncfs of many
//! notes does). The note came after the rename, so an fsync in between
//! skipped the directory; a syncfs that kept failing was tried again, and
//! warned of, at every later break; and a writeback error reached only one
//! of the guest's open files, where the backing filesystem reports it to
//! each.

use crate::common::require_root;
use crate::fs::harness::{
    is_mounted, run, syncfs_calls, syncfs_traced, unmount_lazy, wait_until, Ext4, Mount, World,
};
use crate::review_s41_breaklock::{installed, open_for_writing};
use crate::review_s41_breakrev::{
    assert_f1_synced, shared_files_mounted, shared_files_mounted_with,
    synced_during_the_break_of_f1, two_shared_on_ext4, PATCH,
};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The test pause of a break right after its rename.
const RENAMED_PAUSE_MS: u64 = 8_000;

/// A break of `etc/f1` is paused right after its rename put the copy
/// under the name. Meanwhile a second open of the file (which finds the
/// copy there) writes and fdatasyncs: its fsync must sync the directory,
/// since that rename is not durable yet, and a power cut then finds the
/// synced data. Fails before: the note came after the rename, so the fsync
/// found none, and the power cut brought the old, shared file back.
#[test]
fn s42_an_fsync_right_after_a_breaks_rename_survives_a_power_cut() {
    if !require_root("s42_an_fsync_right_after_a_breaks_rename_survives_a_power_cut") {
        return;
    }
    let ext4 = Ext4::new(&[], &["commit=300"]);
    let pause = format!("UNIFS_TEST_BREAK_RENAMED_PAUSE_MS={RENAMED_PAUSE_MS}");
    let (m, old) = two_shared_on_ext4(&ext4, &["env", &pause]);
    synced_during_the_break_of_f1(&ext4, &m, &old[1], RENAMED_PAUSE_MS);
}

/// The daemon run under strace, which traces its syncfs calls into
/// `trace` and fails them with EIO (`when`: which ones, strace's
/// `--inject` syntax), with the notes' bound lowered to 2 and the first
/// retry of a failed syncfs after `retry_ms`.
fn failing_syncfs(trace: &Path, when: &str, retry_ms: u64) -> Vec<String> {
    let inject = match when {
        "" => "--inject=syncfs:error=EIO".to_owned(),
        when => format!("--inject=syncfs:error=EIO:when={when}"),
    };
    let mut wrapper = syncfs_traced(trace);
    wrapper.extend([
        inject,
        "env".into(),
        "UNIFS_TEST_UNSYNCED_BREAKS_MAX=2".into(),
        format!("UNIFS_TEST_SYNCFS_RETRY_MS={retry_ms}"),
    ]);
    wrapper
}

/// The lines of the mount's log that contain `words`.
fn said(m: &Mount, words: &str) -> Vec<String> {
    let log = fs::read_to_string(&m.log).unwrap();
    log.lines()
        .filter(|l| l.contains(words))
        .map(str::to_owned)
        .collect()
}

const SYNCFS_FAILED: &str = "syncfs of the backing filesystem:";

/// Every syncfs fails (EIO, injected by strace). Six breaks with the
/// notes' bound at 2: the second break's syncfs fails and is said once;
/// the four after it, within the wait before a retry, run none. Fails
/// before: each of breaks 2 to 6 ran a syncfs (5) and warned (5), which on
/// a failing disk costs every break a syncfs of the whole filesystem.
#[test]
fn s42_a_failing_syncfs_is_not_retried_at_every_break() {
    let test = "s42_a_failing_syncfs_is_not_retried_at_every_break";
    if !require_root(test) || !installed(test, "strace", "Debian: strace") {
        return;
    }
    let w = World::new();
    let trace = w.tmp.path().join("strace.out");
    let m = shared_files_mounted(&w, 6, &failing_syncfs(&trace, "", 600_000));
    for i in 0..6 {
        drop(open_for_writing(&m.path(&format!("f{i}"))));
    }
    let failed = said(&m, SYNCFS_FAILED);
    let calls = syncfs_calls(&trace);
    assert_eq!(
        (calls, failed.len()),
        (1, 1),
        "syncfs calls and warnings; said:\n{}",
        failed.join("\n")
    );
}

/// The first syncfs fails, a later one works: the wait before the retry
/// over, the next break runs it, and the log says the failure once and
/// that it works again. Fails before: nothing said of it working again.
#[test]
fn s42_a_syncfs_is_retried_after_its_wait_and_said_to_work_again() {
    let test = "s42_a_syncfs_is_retried_after_its_wait_and_said_to_work_again";
    if !require_root(test) || !installed(test, "strace", "Debian: strace") {
        return;
    }
    let w = World::new();
    let trace = w.tmp.path().join("strace.out");
    let retry_ms = 1_000;
    // One FUSE thread: strace counts `when=1` in each thread, so a retry
    // in another thread than the first syncfs's failed too (the whole
    // suite once ran it there: no "works again").
    let wrapper = failing_syncfs(&trace, "1", retry_ms);
    let m = shared_files_mounted_with(&w, 3, &wrapper, &["threads=1"]);
    drop(open_for_writing(&m.path("f0")));
    drop(open_for_writing(&m.path("f1")));
    assert_eq!(syncfs_calls(&trace), 1, "the second break ran no syncfs");
    // At least the wait: the syncfs failed before the break returned.
    std::thread::sleep(Duration::from_millis(retry_ms + 200));
    drop(open_for_writing(&m.path("f2")));
    assert_eq!(syncfs_calls(&trace), 2, "no retry after the wait");
    let failed = said(&m, SYNCFS_FAILED);
    assert_eq!(failed.len(), 1, "{}", failed.join("\n"));
    let again = said(&m, "filesystem works again");
    assert_eq!(
        again.len(),
        1,
        "log:\n{}",
        fs::read_to_string(&m.log).unwrap()
    );
}

/// The guest's fdatasync of a broken file whose directory's fsync fails
/// (EIO, injected by strace into each daemon thread's first fsync of the
/// directory) fails with EIO: the rename that puts its data under the
/// name is not durable. A later fdatasync syncs the directory and
/// succeeds, and a power cut finds the data. A guard: passes before and
/// after; fails when the note is dropped whether or not the directory's
/// fsync worked (the power cut loses the synced write), or when that
/// fsync's error is not passed on (the first fdatasync succeeds).
#[test]
fn s42_a_failed_directory_fsync_fails_the_guests_fsync_and_is_retried() {
    let test = "s42_a_failed_directory_fsync_fails_the_guests_fsync_and_is_retried";
    if !require_root(test) || !installed(test, "strace", "Debian: strace") {
        return;
    }
    let ext4 = Ext4::new(&[], &["commit=300"]);
    let trace = ext4.root().join("fsync.trace");
    let etc = ext4.root().join("a/etc");
    fs::create_dir_all(&etc).unwrap();
    // -P: only calls on that directory (strace counts `when` per thread).
    let wrapper = [
        "strace",
        "-f",
        "-qq",
        "-y",
        "-e",
        "trace=fsync",
        "-e",
        "signal=none",
    ];
    let paths = ["-P", etc.to_str().unwrap(), "-o", trace.to_str().unwrap()];
    let wrapper = [&wrapper[..], &paths, &["--inject=fsync:error=EIO:when=1"]].concat();
    let (m, old) = two_shared_on_ext4(&ext4, &wrapper);
    let f1 = open_for_writing(&m.path("etc/f1"));
    f1.write_all_at(PATCH, 0).unwrap();
    let first = f1.sync_data().map_err(|e| e.raw_os_error());
    assert_eq!(first, Err(Some(libc::EIO)), "the first fdatasync");
    // Each thread's first fsync of the directory fails: a few may.
    let mut tries = 1;
    while let Err(e) = f1.sync_data() {
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
        tries += 1;
        assert!(tries < 64, "fdatasync failed {tries} times");
    }
    let calls = fs::read_to_string(&trace).unwrap();
    let injected = calls.lines().filter(|l| l.contains("INJECTED")).count();
    assert_eq!(injected, tries, "{calls}");
    assert_f1_synced(&ext4, &old[1]);
}

/// An ext4 whose disk has no room left for the data of the files that
/// [`FullDisk::fill`] is given: its image lives in a tmpfs, allocated
/// everywhere but at those files' blocks, and the tmpfs is then filled.
/// Writing back their data fails (ENOSPC from the loop device: a writeback
/// error, as from a failing disk), while the rest of the filesystem,
/// journal included, works on. Unmounted (ext4, then the tmpfs) on drop.
struct FullDisk {
    dir: tempfile::TempDir,
}

impl FullDisk {
    const IMAGE_MIB: u64 = 64;

    fn new() -> FullDisk {
        let dir = tempfile::Builder::new()
            .prefix("s42-breaknote-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let disk = FullDisk { dir };
        for d in [disk.tmpfs(), disk.root()] {
            fs::create_dir(d).unwrap();
        }
        let size = format!("size={}m", Self::IMAGE_MIB + 8);
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "s42-breaknote"])
            .arg(disk.tmpfs()));
        let img = disk.image();
        // No lazy init and no discard: mkfs writes the journal and inode
        // tables now. It still punches holes (zeroing): allocated after.
        run(Command::new("mkfs.ext4")
            .args(["-q", "-b", "4096", "-E"])
            .arg("nodiscard,lazy_itable_init=0,lazy_journal_init=0")
            .arg(&img)
            .arg(format!("{}m", Self::IMAGE_MIB)));
        run(Command::new("fallocate")
            .args(["-l", &format!("{}m", Self::IMAGE_MIB)])
            .arg(&img));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(disk.root()));
        disk
    }

    fn tmpfs(&self) -> PathBuf {
        self.dir.path().join("tmpfs")
    }

    fn image(&self) -> PathBuf {
        self.tmpfs().join("img")
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("fs")
    }

    /// Frees the image's room for the blocks of `files` (on the disk,
    /// allocated, synced) and fills the tmpfs.
    fn fill(&self, files: &[&Path]) {
        nix::unistd::sync();
        for f in files {
            let rel = f.strip_prefix(self.root()).unwrap();
            let blocks = run(Command::new("debugfs")
                .arg("-R")
                .arg(format!("blocks /{}", rel.display()))
                .arg(self.image()));
            let blocks = String::from_utf8(blocks.stdout).unwrap();
            let blocks: Vec<u64> = blocks
                .split_whitespace()
                .map(|b| b.parse().unwrap())
                .collect();
            assert!(!blocks.is_empty(), "{} has no blocks", f.display());
            for b in blocks {
                run(Command::new("fallocate")
                    .args(["-p", "-o", &(b * 4096).to_string(), "-l", "4096"])
                    .arg(self.image()));
            }
        }
        let mut fill = File::create(self.tmpfs().join("fill")).unwrap();
        let chunk = vec![1u8; 1 << 20];
        let full = loop {
            if let Err(e) = std::io::Write::write_all(&mut fill, &chunk) {
                break e;
            }
        };
        assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        for d in [self.root(), self.tmpfs()] {
            unmount_lazy(&d);
            wait_until(Duration::from_secs(10), || !is_mounted(&d));
        }
    }
}

/// What fsync returns (0 or the errno) for each of: fsync of `a`, of `b`,
/// of `a` again, after `a` wrote, then of `c`, opened after that; and after
/// `a` wrote again, fdatasync of `a`, `b` and `c`. `open` opens the file.
fn fsyncs_after_writeback_errors(open: impl Fn() -> File) -> Vec<i32> {
    let code = |r: std::io::Result<()>| r.err().map_or(0, |e| e.raw_os_error().unwrap());
    let (a, b) = (open(), open());
    let data = vec![b'x'; 65536];
    a.write_all_at(&data, 0).unwrap();
    let mut got = vec![code(a.sync_all()), code(b.sync_all()), code(a.sync_all())];
    let c = open();
    got.push(code(c.sync_all()));
    a.write_all_at(&data, 0).unwrap();
    got.extend([a.sync_data(), b.sync_data(), c.sync_data()].map(code));
    got
}

/// A writeback error of a file, seen by fsync through the mount, without
/// passthrough (the daemon writes) and with it (the kernel writes the
/// backing file): each open file that was open when it happened gets it
/// once, as on the backing ext4 itself (the same sequence, shown there
/// too), not only the first to sync. Fails before: the second open file's
/// fsync returned success (the daemon's one fd of the file had taken the
/// error), and in the second round only the first file got the error.
#[test]
fn s42_a_writeback_error_reaches_every_open_file_of_the_guest() {
    let test = "s42_a_writeback_error_reaches_every_open_file_of_the_guest";
    if !require_root(test) {
        return;
    }
    let disk = FullDisk::new();
    let w = World::new_in(&disk.root());
    let host = w.dir("host").join("f");
    let guests = [w.dir("g1"), w.dir("g2")];
    let files: Vec<PathBuf> = guests.iter().map(|g| g.join("f")).collect();
    for f in files.iter().chain([&host]) {
        let file = File::create(f).unwrap();
        nix::fcntl::fallocate(&file, nix::fcntl::FallocateFlags::empty(), 0, 1 << 20).unwrap();
    }
    let daemon_io = w.mount(&guests[0], "m1", &["nopassthrough"]);
    let passthrough = w.mount(&guests[1], "m2", &[]);
    let file = |p: PathBuf| {
        move || {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .unwrap()
        }
    };
    // Opened once before the disk fills: the mounts' own fds of them.
    let _open = [file(daemon_io.path("f"))(), file(passthrough.path("f"))()];
    disk.fill(&[&host, &files[0], &files[1]]);

    let on_ext4 = fsyncs_after_writeback_errors(file(host));
    let e = libc::ENOSPC;
    assert_eq!(on_ext4, [e, e, 0, 0, e, e, e], "ext4 itself");
    for m in [&daemon_io, &passthrough] {
        let got = fsyncs_after_writeback_errors(file(m.path("f")));
        assert_eq!(got, on_ext4, "through {}", m.dir.display());
    }
}
