//! Failure paths earlier reviews left untested, proved with syscall faults
//! injected by strace (`--inject=SYSCALL:error=EIO:when=N`, man strace,
//! "Tampering"): a command that exits 0 must have done all it says.

use crate::common::{require_root, require_strace};
use crate::review_s11_fault::{strace_unifs, two_guests};
use crate::tree::*;
use std::path::Path;
use std::process::Output;

/// `unifs --store STORE ARGS` under strace, with `inject` applied (and the
/// trace written to `log`, when given).
fn unifs_injected(
    store: &Path,
    args: &[&dyn AsRef<std::ffi::OsStr>],
    inject: &str,
    log: Option<&Path>,
) -> Output {
    let mut cmd = strace_unifs(store, inject, log);
    for a in args {
        cmd.arg(a.as_ref());
    }
    cmd.output().unwrap()
}

/// A manifest's entries, without their atimes (a manifest's reads move
/// them) and its header (which says when it was made).
fn entries(manifest: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let entry = |l: &str| {
        let mut e: serde_json::Value = serde_json::from_str(l).unwrap();
        e.as_object_mut().unwrap().remove("atime");
        e
    };
    text.lines().skip(1).map(entry).collect()
}

/// How many `statx` calls the main thread of a run makes, from its trace
/// (`strace -f` prefixes each line with the thread's id; strace counts
/// `when=N` by thread, and the main thread is the first one in the log).
fn main_thread_statx(trace: &Path) -> usize {
    let text = std::fs::read_to_string(trace).unwrap();
    let main = text.split_whitespace().next().unwrap().to_string();
    text.lines()
        .filter(|l| l.split_whitespace().next() == Some(&*main))
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|c| c.starts_with("statx("))
        })
        .count()
}

/// A statx that failed (EIO) during `manifest` was taken for "on another
/// mount": the statx asking for an entry's mount id (`sys::mount_id`) gave
/// `None`, unequal to the root's, so a file was left out silently; where the
/// root's own failed, every file of the guest and everything below its top
/// directories. And a failed look at `catalog.db` (`Path::exists`) read as
/// no catalog, so every shared file was described as private. Each run
/// exited 0 with an incomplete (or wrong) manifest and private list: a
/// backup loop took it for a good backup. Now each fails, naming the file.
/// Every statx of the run's main thread fails once in turn here: the run
/// must fail, or write exactly the manifest of a run without faults.
#[test]
fn a_failed_statx_never_makes_a_manifest_that_leaves_files_out() {
    let test = "a_failed_statx_never_makes_a_manifest_that_leaves_files_out";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let (dir, store, a, b) = two_guests();
    file(&a, "etc/hostname", b"a\n", 0o644);
    std::os::unix::fs::symlink("libx.so", a.join("usr/lib/liby.so")).unwrap();
    unify_json(&store, &[&a, &b]);
    let (good, out, trace) = (
        dir.path().join("good.jsonl"),
        dir.path().join("m.jsonl"),
        dir.path().join("trace"),
    );
    let args: [&dyn AsRef<std::ffi::OsStr>; 4] = [&"manifest", &a, &"-o", &good];
    let first = unifs_injected(&store, &args, "statx:error=EIO:when=65535", Some(&trace));
    assert!(first.status.success(), "{}", stderr(&first));
    let want = entries(&good);
    assert!(want.iter().any(|e| e.get("object").is_some()), "{want:?}");
    let calls = main_thread_statx(&trace);
    assert!(calls >= 5, "{calls} statx calls");
    // What went wrong, by the statx that failed: all of it, for the
    // report.
    let mut wrong = Vec::new();
    let mut failed = 0;
    for n in 1..=calls {
        let _ = std::fs::remove_file(&out);
        let args: [&dyn AsRef<std::ffi::OsStr>; 4] = [&"manifest", &a, &"-o", &out];
        let o = unifs_injected(&store, &args, &format!("statx:error=EIO:when={n}"), None);
        let err = stderr(&o);
        if o.status.success() {
            let got = entries(&out);
            if got != want {
                let lost: Vec<_> = want.iter().filter(|e| !got.contains(e)).collect();
                wrong.push(format!(
                    "statx {n}: exit 0, but these entries wrong or missing: {lost:?}"
                ));
            }
            continue;
        }
        failed += 1;
        if o.status.code() != Some(1) || out.exists() || !err.contains("Input/output error") {
            wrong.push(format!(
                "statx {n}: {:?}, {} written: {err}",
                o.status,
                out.exists()
            ));
        } else if err.contains("describing") && !names_a_path(&err, &a) {
            wrong.push(format!("statx {n}: no file named: {err}"));
        }
    }
    assert_eq!(wrong, Vec::<String>::new());
    assert!(failed > 0, "no statx failure made the manifest fail");
}

/// Whether `err` names the guest `root` or one of its paths as what failed.
fn names_a_path(err: &str, root: &Path) -> bool {
    let rels = [
        "",
        "etc",
        "usr",
        "usr/lib",
        "etc/hostname",
        "usr/lib/libx.so",
        "usr/lib/liby.so",
    ];
    rels.iter().any(|rel| {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let p = p.to_string_lossy();
        err.contains(&format!("describing {p}: Input")) || err.contains(&format!(": {p}: Input"))
    })
}

/// A link break whose copy could not be made durable (its fsync: EIO) or
/// read from the shared file (copy_file_range: EIO) must fail the guest's
/// write open with EIO, leave the path naming the shared file, unchanged,
/// and no temp file in the directory; the daemon goes on serving, and the
/// same write succeeds once the fault is gone (strace injects it once).
/// Checked and found right: this guards the fsync's error against being
/// dropped, which would put an incomplete copy under the guest's name.
#[test]
fn a_break_whose_copy_fails_fails_the_write_and_keeps_the_shared_file() {
    use crate::fs::harness::{Mount, World};
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let test = "a_break_whose_copy_fails_fails_the_write_and_keeps_the_shared_file";
    if !require_strace(test) {
        return;
    }
    let content = bytes(5, 300_000);
    for inject in ["fsync:error=EIO:when=1", "copy_file_range:error=EIO:when=1"] {
        let w = World::new();
        let (g, other) = (w.dir("g"), w.dir("other"));
        std::fs::create_dir(g.join("lib")).unwrap();
        w.shared(&content, &[g.join("lib/data"), other.join("data")]);
        let mp = w.dir("m");
        let log = std::fs::File::create(mp.with_extension("log")).unwrap();
        // One FUSE thread: strace counts `when` by thread.
        let strace = [
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            &format!("--inject={inject}"),
        ];
        let m = Mount::start_under(&strace, &w.store, &g, &mp, &["threads=1"], log);
        let open = || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(m.path("lib/data"))
        };
        let err = open().expect_err(inject);
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{inject}: {err}");
        let names: Vec<_> = std::fs::read_dir(g.join("lib"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["data"], "{inject}: a temp file was left");
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(&g.join("lib/data")),
            ino(&other.join("data")),
            "{inject}"
        );
        assert!(
            std::fs::read(m.path("lib/data")).unwrap() == content,
            "{inject}"
        );
        // The fault is gone: the same write goes through, to a private copy.
        let mut f = open().unwrap_or_else(|e| panic!("{inject}: retry: {e}"));
        f.write_all(b"Z").unwrap();
        f.sync_all().unwrap();
        drop(f);
        assert_ne!(
            ino(&g.join("lib/data")),
            ino(&other.join("data")),
            "{inject}"
        );
        assert!(
            std::fs::read(other.join("data")).unwrap() == content,
            "{inject}"
        );
        let mine = std::fs::read(g.join("lib/data")).unwrap();
        assert!(mine[0] == b'Z' && mine[1..] == content[1..], "{inject}");
        drop(m);
    }
}

/// `manifest -o M --private-list L` puts L in place, then M. Where M's
/// rename failed (EIO), the run said only "renaming M.tmp-… to M: …", as
/// for a run that wrote nothing (what `--help` says of exit 1), though L
/// was already this run's and no longer paired with the M left there. It
/// says so now. (Where L's rename fails, both stay as they were.)
#[test]
fn a_manifest_whose_rename_fails_says_its_private_list_was_replaced() {
    let test = "a_manifest_whose_rename_fails_says_its_private_list_was_replaced";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let (dir, store, a, b) = two_guests();
    file(&a, "etc/own", b"mine\n", 0o644);
    unify_json(&store, &[&a, &b]);
    let (m, l) = (dir.path().join("m.jsonl"), dir.path().join("private"));
    let args: [&dyn AsRef<std::ffi::OsStr>; 6] =
        [&"manifest", &a, &"-o", &m, &"--private-list", &l];
    // The first rename is the list's, the second the manifest's.
    for (n, list_replaced) in [(1, false), (2, true)] {
        std::fs::write(&m, "old\n").unwrap();
        std::fs::write(&l, "old\n").unwrap();
        let o = unifs_injected(&store, &args, &format!("rename:error=EIO:when={n}"), None);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "rename {n}: {err}");
        assert_eq!(std::fs::read_to_string(&m).unwrap(), "old\n", "rename {n}");
        let list = std::fs::read_to_string(&l).unwrap();
        assert_eq!(list != "old\n", list_replaced, "rename {n}: {list:?}");
        let said = err.contains(&format!("private list {} was replaced", l.display()));
        assert_eq!(said, list_replaced, "rename {n}: {err}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-") || n.contains(".unifs-manifest"))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "rename {n}");
    }
}
