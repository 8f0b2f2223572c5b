//! Failure paths earlier reviews left untested, proved with syscall faults
//! injected by strace (`--inject=SYSCALL:error=EIO:when=N`, man strace,
//! "Tampering"): a command that exits 0 must have done all it says.

use crate::common::{require_root, require_strace, unifs_bin};
use crate::tree::*;
use std::path::Path;
use std::process::{Command, Output};

/// `unifs --store STORE ARGS` under strace, with `inject` applied (and the
/// trace written to `log`, when given).
fn unifs_injected(
    store: &Path,
    args: &[&dyn AsRef<std::ffi::OsStr>],
    inject: &str,
    log: Option<&Path>,
) -> Output {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o"])
        .arg(log.unwrap_or(Path::new("/dev/null")))
        .arg(format!("--inject={inject}"))
        .arg(unifs_bin())
        .arg("--store")
        .arg(store);
    for a in args {
        cmd.arg(a.as_ref());
    }
    cmd.env_remove("UNIFS_TEST_LINK_MAX");
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
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for g in [&a, &b] {
        file(g, "usr/lib/libx.so", &bytes(1, 9000), 0o755);
    }
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
