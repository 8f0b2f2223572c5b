//! Review s36: sparse files across unify, the store's own commands and the
//! overlay. Apparent sizes are large, what is allocated small.

use crate::common::{require_root, require_strace, unifs_bin};
use crate::tree::{allocated, file, first_object_file, set_mtime, stats_json, unifs, MTIME};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The size of the file the sparse object is made of.
const LEN: usize = 64 << 20;

/// A store whose one object has holes, as a restore with `tar --sparse` or
/// `cp --sparse=always` leaves one: two guests share a file of zeros with
/// 4 KiB of data at each end, unified; then the object's zeros are made a
/// hole and its mtime put back (a restore keeps it). Returns the store.
fn store_with_sparse_object(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    let mut data = vec![0u8; LEN];
    data[..4096].fill(b'h');
    data[LEN - 4096..].fill(b't');
    let guests = [dir.join("a"), dir.join("b")];
    for g in &guests {
        file(g, "usr/share/disk.img", &data, 0o644);
    }
    let out = unifs(&store, &[&"unify", &"--json", &guests[0], &guests[1]]);
    assert!(out.status.success(), "{out:?}");
    let object = first_object_file(&store);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&object)
        .unwrap();
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    let len = (LEN - 8192) as libc::off_t;
    // SAFETY: plain integer arguments on an fd of ours.
    assert_eq!(
        unsafe { libc::fallocate(f.as_raw_fd(), punch, 4096, len) },
        0
    );
    drop(f);
    set_mtime(&object, MTIME);
    assert!(allocated(&object) < 1 << 20, "{}", allocated(&object));
    store
}

/// `store verify` read an object's holes as the kernel hands them out,
/// page by page of zeros (a 200 GiB-apparent object: 504 s, 68 s of it in
/// the kernel, and the page cache filled with zeros). It hashes them as
/// zeros unread, to the same id.
#[test]
fn s36_store_verify_reads_no_holes() {
    if !require_root("s36_store_verify_reads_no_holes")
        || !require_strace("s36_store_verify_reads_no_holes")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_sparse_object(dir.path());
    let trace = dir.path().join("trace");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=read,pread64,readv,preadv,preadv2"])
        .args(["-e", "status=successful", "-o"])
        .arg(&trace)
        .arg(unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["store", "verify"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(" 0 problems"),
        "{out:?}"
    );
    let read: u64 = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.rsplit_once(") = ")?
                .1
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        read < 16 << 20,
        "store verify read {read} bytes for an object of 8 KiB of data"
    );
}

/// `store stats` counted an object's size, holes included, as stored and
/// (times its guest links) as saved: a store restored with holes showed
/// what its objects would take without them.
#[test]
fn s36_store_stats_count_what_a_sparse_object_takes() {
    if !require_root("s36_store_stats_count_what_a_sparse_object_takes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_sparse_object(dir.path());
    let stats = stats_json(&store);
    let usage = &stats["usage"];
    assert_eq!(usage["guest_links"], 2, "{usage}");
    for field in ["bytes_stored", "bytes_saved"] {
        let n = usage[field].as_u64().unwrap();
        assert!(n > 0 && n < 1 << 20, "{field}: {usage}");
    }
}

/// `unify` counted the files it left alone for their holes, but no output
/// named them, `-v` neither: an operator could not tell which.
#[test]
fn s36_verbose_unify_names_the_sparse_files_it_leaves_alone() {
    if !require_root("s36_verbose_unify_names_the_sparse_files_it_leaves_alone") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let guests = [dir.path().join("a"), dir.path().join("b")];
    for g in &guests {
        let path = g.join("var-lib/disk.img");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::File::create(&path)
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        set_mtime(&path, MTIME);
    }
    let out = Command::new(unifs_bin())
        .arg("--store")
        .arg(dir.path().join("store"))
        .args(["-v", "unify", "--no-progress"])
        .args(&guests)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for g in &guests {
        let named = format!(
            "{}: has holes (sparse)",
            g.join("var-lib/disk.img").display()
        );
        assert!(stderr.contains(&named), "{named:?} not in:\n{stderr}");
    }
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 with holes (sparse)"),
        "{out:?}"
    );
}
