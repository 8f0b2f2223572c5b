//! Review s23: times a restore's target filesystem cannot hold, and mtimes
//! changed around an `--ignore-mtime` store.

use crate::common::require_root;
use crate::tree::*;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use unifs::sys::Timestamp;

/// Unmounts its path when dropped (a test that fails leaves no mount).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if nix::mount::umount(&self.0).is_err() {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn ts(sec: i64, nsec: u32) -> Timestamp {
    Timestamp { sec, nsec }
}

/// The mtime of `path` as a manifest writes it.
fn mtime_of(path: &Path) -> String {
    let m = fs::symlink_metadata(path).unwrap();
    format!("{}.{:09}", m.mtime(), m.mtime_nsec())
}

/// A guest on tmpfs (which holds any 64-bit time) restored onto ext4
/// (1901..2446): ext4 stores the nearest time it holds, without an error.
/// Restore said "every file verified" and exited 0 with files dated 3000
/// and 1600 restored as 2446 and 1901. It now names each time not kept
/// (path, wanted, got, why), puts the tree in place all the same, and
/// exits 23.
#[test]
fn review_s23_restore_reports_times_the_target_filesystem_cannot_hold() {
    let test = "review_s23_restore_reports_times_the_target_filesystem_cannot_hold";
    if !require_root(test) {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let src = lab.path().join("src");
    fs::create_dir(&src).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&src)
        .status()
        .unwrap();
    assert!(mounted.success());
    let _src = Unmount(src.clone());
    let img = crate::common::mounted_image("ext4", 64 << 20, &["-q", "-I", "256"]);
    let ext4 = img.path().join("fs");
    let _ext4 = Unmount(ext4.clone());

    let (store, g, m) = (src.join("S"), src.join("g"), lab.path().join("m.jsonl"));
    let normal = ts(1_700_000_000, 0);
    let future = ts(32_503_680_000, 5); // 3000-01-01
    let past = ts(-11_676_096_000, 7); // 1600-01-01
                                       // Two files of one content: a store object.
    let big = file(&g, "usr/big", &bytes(1, 64 << 10), 0o644);
    let big2 = file(&g, "opt/big", &bytes(1, 64 << 10), 0o644);
    let private = file(&g, "etc/past", b"b\n", 0o644); // excluded: private
    let ok = file(&g, "etc/ok", b"c\n", 0o644);
    fs::create_dir(g.join("var")).unwrap();
    unifs::sys::lutimens(&big, normal, future).unwrap();
    unifs::sys::lutimens(&big2, normal, future).unwrap();
    unifs::sys::lutimens(&private, normal, past).unwrap();
    unifs::sys::lutimens(&ok, normal, ts(1_600_000_000, 123)).unwrap();
    unifs::sys::lutimens(&g.join("var"), normal, future).unwrap();
    let s = unify_json(&store, &[&"--exclude", &"/etc/past", &g]);
    assert_eq!(s["objects_added"], 1, "{s}");
    let o = unifs(&store, &[&"manifest", &g, &"-o", &m]);
    assert!(o.status.success(), "{}", stderr(&o));

    let r = ext4.join("r");
    let o = unifs(
        &store,
        &[&"restore", &"--json", &"--manifest", &m, &"--from", &g, &r],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(23), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["objects_copied"], 2, "{report}");
    // Put in place all the same, the other times as the manifest has them.
    assert_eq!(mtime_of(&r.join("etc/ok")), "1600000000.000000123");
    assert_eq!(fs::read(r.join("etc/past")).unwrap(), b"b\n");
    let odd = report["times_not_kept"].as_array().unwrap();
    let named: BTreeSet<(&str, &str)> = odd
        .iter()
        .map(|t| (t["path"].as_str().unwrap(), t["which"].as_str().unwrap()))
        .collect();
    let want = [
        ("etc/past", "mtime"),
        ("opt/big", "mtime"),
        ("usr/big", "mtime"),
        ("var", "mtime"),
    ];
    assert_eq!(named, BTreeSet::from(want), "{report}");
    for t in odd {
        let path = r.join(t["path"].as_str().unwrap());
        let wanted = mtime_of(&g.join(t["path"].as_str().unwrap()));
        assert_eq!(t["wanted"].as_str(), Some(wanted.as_str()), "{t}");
        assert_eq!(t["got"].as_str(), Some(mtime_of(&path).as_str()), "{t}");
        assert_ne!(t["got"], t["wanted"], "{t}");
    }
    // One line each on stderr: the path, both times (dates too) and why.
    let line = |p: &str| {
        err.lines()
            .find(|l| l.contains(&format!("{p}: mtime")))
            .unwrap_or_else(|| panic!("no warning for {p}:\n{err}"))
            .to_string()
    };
    let l = line("usr/big");
    assert!(
        l.contains("32503680000.000000005 (3000-01-01 00:00:00 UTC)"),
        "{l}"
    );
    assert!(l.contains("(2446-05-10 "), "{l}");
    assert!(l.contains("time range"), "{l}");
    let l = line("etc/past");
    assert!(l.contains("(1600-01-01 00:00:00 UTC)"), "{l}");
    assert!(l.contains("(1901-12-13 "), "{l}");

    // Without --json: the summary says so, not just "every file verified".
    let r2 = ext4.join("r2");
    let o = restore(&store, &m, &g, &r2);
    assert_eq!(o.status.code(), Some(23), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("every file verified, but 4 times of the manifest"),
        "{out}"
    );
}

/// In a store made with `--ignore-mtime` the object id leaves mtime out,
/// so a host `touch` of one guest's path (which changes the mtime every
/// guest linking the object shows) still hashes to the id, and `store
/// verify` reported nothing. The catalog records the mtime each object was
/// made with: verify now reports the change, with the `touch` to undo it,
/// as in a normal store.
#[test]
fn review_s23_verify_reports_an_mtime_changed_around_an_ignore_mtime_store() {
    let test = "review_s23_verify_reports_an_mtime_changed_around_an_ignore_mtime_store";
    if !require_root(test) {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let at = |p: &str| lab.path().join(p);
    let (store, g1, g2) = (at("S"), at("g1"), at("g2"));
    let o = unifs(&store, &[&"store", &"init", &"--ignore-mtime"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f1 = file_at(&g1, "usr/f", b"same\n", 0o644, 1_000_000_000);
    let f2 = file_at(&g2, "usr/f", b"same\n", 0o644, 1_000_000_000);
    let s = unify_json(&store, &[&g1, &g2]);
    assert_eq!(s["files_linked"], 1, "{s}");
    assert_eq!(ino(&f1), ino(&f2));
    assert_verify_clean(&store);

    set_mtime(&f1, 1_500_000_000);
    assert_eq!(fs::metadata(&f2).unwrap().mtime(), 1_500_000_000);
    let o = unifs(&store, &[&"store", &"verify"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    let object = first_object_file(&store);
    let bad = out
        .lines()
        .find(|l| l.starts_with("BAD "))
        .unwrap_or_else(|| panic!("no BAD line:\n{out}"));
    assert!(bad.contains(&object.display().to_string()), "{bad}");
    assert!(bad.contains("mtime @1000000000 → @1500000000"), "{bad}");
    let undo = format!("touch -m -d @1000000000 {}", object.display());
    assert!(bad.contains(&undo), "{bad}");
    assert!(out.contains("linked by guests g1, g2: 2 paths"), "{out}");

    // The command it gives puts it right.
    let done = Command::new("sh").arg("-c").arg(&undo).status().unwrap();
    assert!(done.success());
    assert_eq!(fs::metadata(&f2).unwrap().mtime(), 1_000_000_000);
    assert_verify_clean(&store);

    // So does the other way, keeping the change: the object file removed,
    // gc drops the object (the guests' inode still hashes to its id, but
    // no longer has the recorded mtime: gc gave it the name back, and
    // verify reported it again), and unify makes it an object anew.
    set_mtime(&f1, 1_500_000_000);
    fs::remove_file(&object).unwrap();
    let o = unifs(&store, &[&"store", &"gc", &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let gc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        gc["missing_dropped"].as_array().map(Vec::len),
        Some(1),
        "{gc}"
    );
    let s = unify_json(&store, &[&g1, &g2]);
    assert_eq!(s["problems"].as_array().unwrap().len(), 0, "{s}");
    assert_verify_clean(&store);
    assert_eq!(fs::metadata(&f2).unwrap().mtime(), 1_500_000_000);
    assert_eq!(ino(&f1), ino(&f2));
    assert_eq!(ino(&first_object_file(&store)), ino(&f1));
}
