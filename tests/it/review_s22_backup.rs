//! Review s22: what `manifest` says of marked files that are no object of
//! the store.

use crate::common::{require_root, require_strace};
use crate::tree::*;
use std::collections::BTreeMap;
use std::fs;

/// A `cp -a` copy of a unified guest (as root: the store's marker and the
/// links among the copies kept) has marked inodes that are no object of
/// the store. Its mount shows each of their paths as a file of its own (a
/// write to one leaves the other), but `manifest` described the later
/// path as a hardlink of the first, and `restore` made a real pair of
/// them: in the restored guest a write to one path changed the other.
#[test]
fn review_s22_marked_copies_that_are_no_object_restore_as_separate_files() {
    if !require_root("review_s22_marked_copies_that_are_no_object_restore_as_separate_files") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let at = |p: &str| lab.path().join(p);
    let (store, a, c, m, r) = (at("store"), at("a"), at("c"), at("c.jsonl"), at("r"));
    for p in ["p1", "p2"] {
        file_at(
            &a,
            &format!("doc/{p}/copyright"),
            b"GPL text\n",
            0o644,
            1_700_000_000,
        );
    }
    let s = unify_json(&store, &[&a]);
    assert_eq!(s["objects_added"], 1, "{s}");
    let a2 = a.join("doc/p2/copyright");
    assert_eq!(ino(&a.join("doc/p1/copyright")), ino(&a2), "{s}");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&c)
        .status()
        .unwrap();
    assert!(copied.success());
    let (c1, c2) = (c.join("doc/p1/copyright"), c.join("doc/p2/copyright"));
    assert_eq!(ino(&c1), ino(&c2), "cp -a keeps the pair");
    assert!(unifs::store::read_marker_path(&c1).unwrap().is_some());

    let o = unifs(&store, &[&"manifest", &c, &"-o", &m]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = fs::read_to_string(&m).unwrap();
    let by_path: BTreeMap<String, serde_json::Value> = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|e| (e["path"].as_str().unwrap().to_string(), e))
        .collect();
    for p in ["doc/p1/copyright", "doc/p2/copyright"] {
        let e = &by_path[p];
        assert!(e.get("link").is_none(), "{p}: {e}");
        assert!(e.get("object").is_none(), "{p}: {e}");
        assert_eq!(e["nlink"], 1, "{p}: {e}");
        assert_eq!(
            e["blake3"].as_str(),
            Some(blake3::hash(b"GPL text\n").to_hex().as_str()),
            "{p}: {e}"
        );
    }

    let o = restore(&store, &m, &c, &r);
    assert!(o.status.success(), "{}", stderr(&o));
    let (r1, r2) = (r.join("doc/p1/copyright"), r.join("doc/p2/copyright"));
    assert_ne!(ino(&r1), ino(&r2), "restore made a hardlink pair");
    fs::write(&r1, b"changed\n").unwrap();
    assert_eq!(fs::read(&r2).unwrap(), b"GPL text\n");
    assert_eq!(fs::read(&a2).unwrap(), b"GPL text\n");
}

/// `manifest -o F` (and `store snapshot F`) interrupted by a signal or
/// killed left its `F.tmp-PID` behind, a copy of every path of the guest
/// that nothing ever removed: each interrupted run added one. The next run
/// writing F now removes those of runs that are gone, and leaves one a
/// process still holds, and other names.
#[test]
fn review_s22_the_temp_file_of_a_killed_manifest_goes_with_the_next_run() {
    let test = "review_s22_the_temp_file_of_a_killed_manifest_goes_with_the_next_run";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let (store, g, out) = (
        lab.path().join("store"),
        lab.path().join("g"),
        lab.path().join("out"),
    );
    file(&g, "etc/motd", b"hello\n", 0o644);
    init_store(&store);
    fs::create_dir(&out).unwrap();
    let m = out.join("g.jsonl");
    // Held in its final rename, then killed there.
    let mut slow = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null"])
        .args([
            "-e",
            "inject=rename,renameat,renameat2:delay_enter=30000000",
        ])
        .arg(crate::common::unifs_bin())
        .arg("--store")
        .arg(&store)
        .arg("manifest")
        .arg(&g)
        .arg("-o")
        .arg(&m)
        .spawn()
        .unwrap();
    let temps = || -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("g.jsonl.tmp-"))
            .collect();
        v.sort();
        v
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let left = loop {
        // Complete once the temp file has the last entry's line.
        let t = temps();
        let complete = t
            .first()
            .is_some_and(|n| fs::read_to_string(out.join(n)).is_ok_and(|s| s.contains("etc/motd")));
        if complete {
            break t[0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "no temp file: {t:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let pid: i32 = left.trim_start_matches("g.jsonl.tmp-").parse().unwrap();
    // The strace'd unifs, waiting in its rename; then strace.
    // SAFETY: a plain signal to a pid; no memory is passed.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = slow.kill();
    let _ = slow.wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(std::time::Instant::now() < deadline, "pid {pid} lives on");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!m.exists(), "the killed run renamed its file");
    // One of a gone pid that a process holds locked stays, as do other names.
    let held_name = out.join(format!("g.jsonl.tmp-{pid}-journal"));
    let held = fs::File::create(&held_name).unwrap();
    use std::os::fd::AsFd;
    assert!(unifs::fs::sys::try_flock(held.as_fd(), true).unwrap());
    fs::write(out.join("g.jsonl.tmp-notes"), b"mine").unwrap();

    let o = unifs(&store, &[&"manifest", &g, &"-o", &m]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::read_to_string(&m).unwrap().contains("etc/motd"));
    let names: Vec<String> = temps();
    assert_eq!(
        names,
        vec![
            format!("g.jsonl.tmp-{pid}-journal"),
            "g.jsonl.tmp-notes".to_string()
        ],
    );
    drop(held);
}
