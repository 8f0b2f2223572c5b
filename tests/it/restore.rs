//! `unifs restore` beside other restores: one target, one restore at a time.

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Two guests unified into `lab/store`; g0 has a large private file, so
/// that its restore takes a while. Returns g0 and its manifest.
fn guest_with_manifest(lab: &Path) -> (PathBuf, PathBuf) {
    let guests: Vec<PathBuf> = (0..2).map(|i| lab.join(format!("g{i}"))).collect();
    for g in &guests {
        file_at(g, "usr/lib/libc.so", &bytes(1, 50_000), 0o644, 1_000_000);
    }
    file(&guests[0], "var/big", &bytes(2, 64 << 20), 0o600);
    unify_json(&lab.join("store"), &[&guests[0], &guests[1]]);
    let m = lab.join("g0.jsonl");
    let o = unifs(&lab.join("store"), &[&"manifest", &guests[0], &"-o", &m]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (guests[0].clone(), m)
}

fn spawn_restore(store: &Path, m: &Path, from: &Path, target: &Path) -> Child {
    Command::new(crate::common::unifs_bin())
        .arg("--store")
        .arg(store)
        .args(["restore", "--manifest"])
        .arg(m)
        .arg("--from")
        .arg(from)
        .arg(target)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits at most a minute for `child`.
fn wait_bounded(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a restore did not end within a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[test]
fn a_restore_into_a_target_another_restore_holds_writes_nothing() {
    if !require_root("a_restore_into_a_target_another_restore_holds") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let (g, m) = guest_with_manifest(lab);
    let target = lab.join("restored");
    let lock_path = with_suffix(&target, ".unifs-restore.lock");
    // Another restore's lock, as it holds it.
    let held = nix::fcntl::Flock::lock(
        fs::File::create(&lock_path).unwrap(),
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    )
    .unwrap();
    let o = restore(&store, &m, &g, &target);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!(
            "another restore into {} is running",
            target.display()
        )),
        "{err}"
    );
    assert!(!target.exists());
    assert!(!with_suffix(&target, ".unifs-restore").exists());
    drop(held);
    let o = restore(&store, &m, &g, &target);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!lock_path.exists(), "the lock file stayed");
}

/// Before the lock the second emptied the first's staging tree: both
/// failed, or the second listed every path as "No such file or directory".
#[test]
fn two_restores_into_one_target_at_once() {
    if !require_root("two_restores_into_one_target_at_once") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let (g, m) = guest_with_manifest(lab);
    let before = snapshot(&g);
    let target = lab.join("restored");
    let first = spawn_restore(&store, &m, &g, &target);
    let second = spawn_restore(&store, &m, &g, &target);
    let outs = [wait_bounded(first), wait_bounded(second)];
    let ok = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 1, "{outs:?}");
    for o in outs.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&o.stderr);
        // Started after the first ended, it finds the target full.
        assert!(
            err.contains("another restore into") || err.contains("exists and is not empty"),
            "{err}"
        );
    }
    assert_invisible(&before, &snapshot(&target), "g0 restored");
    assert!(!with_suffix(&target, ".unifs-restore").exists());
    assert!(!with_suffix(&target, ".unifs-restore.lock").exists());
}

/// Clears the inode flags of every file and directory below `root` on
/// drop, so that the temp dir can be removed.
struct Unflag(Vec<PathBuf>);

impl Drop for Unflag {
    fn drop(&mut self) {
        for root in &self.0 {
            for e in walkdir::WalkDir::new(root).into_iter().flatten() {
                if e.file_type().is_file() || e.file_type().is_dir() {
                    let _ = unifs::backup::flags::apply(e.path(), 0);
                }
            }
        }
    }
}

fn flags_of(path: &Path) -> Option<String> {
    unifs::backup::flags::to_letters(unifs::backup::flags::read(path).unwrap())
}

/// manifest and restore dropped inode flags (chattr +i, +a, +d …).
#[test]
fn inode_flags_survive_manifest_and_restore() {
    if !require_root("inode_flags_survive_manifest_and_restore") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let (g, h) = (lab.join("g"), lab.join("h"));
    let target = lab.join("restored");
    let _unflag = Unflag(vec![g.clone(), target.clone()]);
    for x in [&g, &h] {
        file_at(x, "usr/lib/libc.so", &bytes(1, 5000), 0o644, 1_000_000);
        file_at(x, "usr/bin/tool", &bytes(2, 5000), 0o755, 1_000_000);
    }
    file(&g, "var/log/app.log", b"line\n", 0o640);
    file(&g, "etc/locked/conf", b"k=v\n", 0o644);
    fs::hard_link(g.join("usr/bin/tool"), g.join("usr/bin/tool2")).unwrap();
    let wanted = [
        ("usr/bin/tool", "+i", "i"),
        ("var/log/app.log", "+a", "a"),
        ("usr/lib/libc.so", "+dA", "dA"),
        ("etc/locked", "+i", "i"),
        (".", "+d", "d"),
    ];
    for (rel, set, _) in wanted {
        chattr(set, &g.join(rel));
    }
    unify_json(&store, &[&g, &h]);
    let m = lab.join("g.jsonl");
    let o = unifs(&store, &[&"manifest", &g, &"-o", &m]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = fs::read_to_string(&m).unwrap();
    assert!(text.contains(r#""flags":"i""#), "{text}");
    // flags is a field a restore must not drop: a reader of version 1,
    // which knows no flags, is to refuse the manifest.
    assert!(text.starts_with(r#"{"unifs_manifest":2,"#), "{text}");
    let o = restore(&store, &m, &g, &target);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (rel, _, letters) in wanted {
        assert_eq!(
            flags_of(&target.join(rel)).as_deref(),
            Some(letters),
            "{rel}"
        );
    }
    assert_eq!(
        flags_of(&target.join("usr/bin/tool2")).as_deref(),
        Some("i")
    );
    assert_eq!(flags_of(&target.join("etc/locked/conf")), None);
    assert_eq!(
        fs::read(target.join("etc/locked/conf")).unwrap(),
        b"k=v\n",
        "written before its directory became immutable"
    );
    // No flag reached the store's inodes.
    for e in walkdir::WalkDir::new(store.join("objects"))
        .into_iter()
        .flatten()
    {
        if e.file_type().is_file() {
            assert_eq!(flags_of(e.path()), None, "{}", e.path().display());
        }
    }
}

/// A restore whose target's parent hands flags down (ext4 gives new
/// entries a directory's `d`, `A`, …), a killed restore's staging tree left
/// immutable, a symlink planted at the lock's name: the restored tree has
/// exactly the manifest's flags, the old staging tree goes, and the link
/// is refused without anything made where it leads.
#[test]
fn restore_flags_are_the_manifests_and_its_leftovers_are_no_obstacle() {
    if !require_root("restore_flags_are_the_manifests_and_its_leftovers_are_no_obstacle") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let (g, h) = (lab.join("g"), lab.join("h"));
    for x in [&g, &h] {
        file_at(x, "usr/lib/libc.so", &bytes(1, 5000), 0o644, 1_000_000);
    }
    file(&g, "etc/conf", b"k=v\n", 0o644);
    unify_json(&store, &[&g, &h]);
    let m = lab.join("g.jsonl");
    let o = unifs(&store, &[&"manifest", &g, &"-o", &m]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let parent = lab.join("restores");
    fs::create_dir(&parent).unwrap();
    let target = parent.join("g");
    let staging = with_suffix(&target, ".unifs-restore");
    let _unflag = Unflag(vec![parent.clone()]);

    // The lock's name taken by a symlink.
    let elsewhere = lab.join("elsewhere");
    std::os::unix::fs::symlink(&elsewhere, with_suffix(&target, ".unifs-restore.lock")).unwrap();
    let o = wait_bounded(spawn_restore(&store, &m, &g, &target));
    assert!(!o.status.success());
    assert!(!elsewhere.exists(), "made a file through the link");
    fs::remove_file(with_suffix(&target, ".unifs-restore.lock")).unwrap();

    // A killed restore's staging tree, immutable in part.
    fs::create_dir_all(staging.join("etc")).unwrap();
    fs::write(staging.join("etc/conf"), b"half").unwrap();
    chattr("+i", &staging.join("etc/conf"));
    chattr("+i", &staging.join("etc"));
    chattr("+dA", &parent);
    let o = wait_bounded(spawn_restore(&store, &m, &g, &target));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!staging.exists());
    for rel in [".", "etc", "etc/conf", "usr", "usr/lib"] {
        assert_eq!(flags_of(&target.join(rel)), None, "{rel}");
    }
    assert_eq!(fs::read(target.join("etc/conf")).unwrap(), b"k=v\n");
}

/// The s17 finding: a manifest of a running guest that swapped a directory
/// for a symlink held the host's /etc/shadow's hash with the guest file's
/// size (10 bytes, the content 631), and restore put the 631 bytes into
/// the guest without noticing. A file whose length is not the manifest's
/// size is refused now, naming it.
#[test]
fn restore_refuses_a_file_whose_length_is_not_the_manifests_size() {
    if !require_root("restore_refuses_a_file_whose_length_is_not_the_manifests_size") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    init_store(&store);
    let g = lab.join("g");
    file(
        &g,
        "etc/shadow",
        b"the host's shadow, 44 bytes long, say......\n",
        0o600,
    );
    file(&g, "etc/hostname", b"g\n", 0o644);
    let m = lab.join("g.jsonl");
    let o = unifs(&store, &[&"manifest", &g, &"-o", &m]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The entry as the racing walk wrote it: the content's hash, another
    // file's size.
    let text = fs::read_to_string(&m).unwrap();
    let forged: String = text
        .lines()
        .map(|l| {
            if l.contains("\"path\":\"etc/shadow\"") {
                assert!(l.contains("\"size\":44"), "{l}");
                l.replace("\"size\":44", "\"size\":10")
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    fs::write(&m, forged).unwrap();
    let target = lab.join("restored");
    let o = wait_bounded(spawn_restore(&store, &m, &g, &target));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "restored: {err}");
    assert!(
        err.contains("etc/shadow") && err.contains("44 bytes") && err.contains("says 10"),
        "{err}"
    );
    assert!(!target.join("etc/shadow").exists());
}

/// A target whose name is too long to take `.unifs-restore.lock` (over
/// 236 bytes) failed at once with "File name too long", though unify and
/// manifest accept such a guest directory: the names beside it are now cut
/// and given a hash of the name.
#[test]
fn a_target_with_a_long_name_can_be_restored() {
    if !require_root("a_target_with_a_long_name_can_be_restored") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let (g, m) = guest_with_manifest(lab);
    let target = lab.join("r".repeat(250));
    let o = restore(&store, &m, &g, &target);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(target.is_dir());
    let left: Vec<_> = fs::read_dir(lab)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("unifs-restore"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// docs/store-format.md: every command refuses a store of an object format
/// it does not know. restore never opened the catalog, and linked objects
/// out of such a store. It still restores from the objects alone where the
/// catalog is gone, damaged or of a newer schema ("the store is lost too").
#[test]
fn restore_refuses_an_unknown_store_format_but_needs_no_catalog() {
    if !require_root("restore_refuses_an_unknown_store_format_but_needs_no_catalog") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let guests: Vec<PathBuf> = (0..2).map(|i| lab.join(format!("g{i}"))).collect();
    for g in &guests {
        file(g, "usr/lib/libc.so", &bytes(1, 5000), 0o644);
    }
    file(&guests[0], "etc/own", b"own\n", 0o644);
    unify_json(&store, &[&guests[0], &guests[1]]);
    let m = lab.join("g0.jsonl");
    let o = unifs(&store, &[&"manifest", &guests[0], &"-o", &m]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let catalog = store.join("catalog.db");
    let set = |batch: &str| {
        let conn = rusqlite::Connection::open(&catalog).unwrap();
        conn.execute_batch(batch).unwrap();
    };

    set("UPDATE config SET value = '2' WHERE key = 'format_version'");
    let target = lab.join("refused");
    let o = restore(&store, &m, &guests[0], &target);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the store is of format 2, which this unifs does not know"),
        "{err}"
    );
    assert!(!target.exists());
    assert!(!with_suffix(&target, ".unifs-restore").exists());

    set("UPDATE config SET value = '1' WHERE key = 'format_version'; PRAGMA user_version = 99");
    let restored = |name: &str| {
        let target = lab.join(name);
        let o = restore(&store, &m, &guests[0], &target);
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(fs::read(target.join("etc/own")).unwrap(), b"own\n");
        assert_eq!(
            ino(&target.join("usr/lib/libc.so")),
            ino(&guests[1].join("usr/lib/libc.so"))
        );
    };
    restored("newer-schema");
    for f in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let _ = fs::remove_file(store.join(f));
    }
    fs::write(&catalog, bytes(3, 8192)).unwrap();
    restored("damaged");
    fs::remove_file(&catalog).unwrap();
    restored("no-catalog");
}

/// A guest `g0` of five identical files (one object) and a private one,
/// unified alone into `lab/store` (copy 0 then has 6 links), and its
/// manifest.
fn guest_of_one_object(lab: &Path) -> (PathBuf, PathBuf) {
    let g = lab.join("g0");
    for i in 0..5 {
        file_at(&g, &format!("usr/f{i}"), &bytes(7, 3000), 0o644, 1_000_000);
    }
    file(&g, "etc/own", b"own\n", 0o644);
    unify_json(&lab.join("store"), &[&g]);
    let m = lab.join("g0.jsonl");
    let o = unifs(&lab.join("store"), &[&"manifest", &g, &"-o", &m]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (g, m)
}

/// `unifs restore --json` of guest_of_one_object's guest into `lab/r`
/// under strace, which traces (and with `strace_args`, tampers with) the
/// syscalls on the store's one object file; its trace goes to `lab/trace`.
/// Returns the summary and the trace.
fn restore_tracing_the_object(lab: &Path, strace_args: &[&str]) -> (serde_json::Value, String) {
    let store = lab.join("store");
    let object = first_object_file(&store);
    let trace = lab.join("trace");
    let o = Command::new("strace")
        .args(["-f", "-qq"])
        .args(strace_args)
        .arg("-P")
        .arg(&object)
        .arg("-o")
        .arg(&trace)
        .arg(crate::common::unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["restore", "--json", "--manifest"])
        .arg(lab.join("g0.jsonl"))
        .arg("--from")
        .arg(lab.join("g0"))
        .arg(lab.join("r"))
        .env_remove("UNIFS_TEST_LINK_MAX")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = serde_json::from_slice(&o.stdout).unwrap();
    (r, fs::read_to_string(&trace).unwrap())
}

/// The object files of the store: (copy number, inode, links).
fn object_copies(store: &Path) -> Vec<(u32, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut copies: Vec<(u32, u64, u64)> = walkdir::WalkDir::new(store.join("objects"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let copy = e
                .path()
                .extension()
                .map_or(0, |x| x.to_str().unwrap().parse().unwrap());
            let m = e.metadata().unwrap();
            (copy, m.ino(), m.nlink())
        })
        .collect();
    copies.sort();
    copies
}

fn restore_link_max(store: &Path, m: &Path, from: &Path, target: &Path, json: bool) -> Output {
    let mut c = Command::new(crate::common::unifs_bin());
    c.arg("--store").arg(store).args(["restore", "--manifest"]);
    c.arg(m).arg("--from").arg(from).arg(target);
    if json {
        c.arg("--json");
    }
    let o = c.env("UNIFS_TEST_LINK_MAX", "8").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// docs/backup.md: an object at the link limit is linked "through its next
/// copy, as unify links it". restore copied such files out of the store
/// instead (a private copy each, until the next unify), and put their
/// bytes beside "0 private files copied".
#[test]
fn restore_at_the_link_limit_starts_the_next_copy_as_unify_does() {
    if !require_root("restore_at_the_link_limit_starts_the_next_copy_as_unify_does") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let (g, m) = guest_of_one_object(lab);
    assert_eq!(object_copies(&store).len(), 1);

    // Full at 8 links: copy 0 takes 2 more, copy .1 (new) the other 3.
    let r1 = lab.join("r1");
    let o = restore_link_max(&store, &m, &g, &r1, true);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["objects_linked"], 5, "{r}");
    assert_eq!(r["objects_copied"], 0, "{r}");
    assert_eq!(r["extra_copies"], 1, "{r}");
    assert_eq!(r["object_bytes_copied"], 0, "{r}");
    assert_eq!(r["private_copied"], 1, "{r}");
    assert_eq!(r["private_bytes_copied"], 4, "{r}");
    let copies = object_copies(&store);
    assert_eq!(
        copies.iter().map(|c| (c.0, c.2)).collect::<Vec<_>>(),
        vec![(0, 8), (1, 4)],
        "{copies:?}"
    );
    let inodes: Vec<u64> = copies.iter().map(|c| c.1).collect();
    for i in 0..5 {
        let p = r1.join(format!("usr/f{i}"));
        assert!(inodes.contains(&ino(&p)), "{} was not linked", p.display());
        assert_eq!(fs::read(&p).unwrap(), bytes(7, 3000));
    }

    // Again: copy .1 fills up, and .2 takes the last file. The text
    // summary puts the bytes of each kind of copy beside its own count.
    let r2 = lab.join("r2");
    let o = restore_link_max(&store, &m, &g, &r2, false);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(
            "5 files linked from the store (1 new object copy for the link limit), 0 copied \
             from it (0 B), 1 private file copied (4 B)"
        ),
        "{text}"
    );
    let copies = object_copies(&store);
    assert_eq!(
        copies.iter().map(|c| (c.0, c.2)).collect::<Vec<_>>(),
        vec![(0, 8), (1, 8), (2, 2)],
        "{copies:?}"
    );
    crate::tree::assert_verify_clean(&store);

    // A file copied from the store is counted as such, not as private.
    let other = lab.join("other");
    fs::create_dir(&other).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(mounted.success());
    let _unmount = Unmount(other.clone());
    let r3 = other.join("r3");
    let o = restore_link_max(&store, &m, &g, &r3, false);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(
            "0 files linked from the store, 5 copied from it (14.6 KiB), 1 private file \
             copied (4 B)"
        ),
        "{text}"
    );
}

/// Unmounts its path when dropped.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Each file of an object whose first copy is full links the copy with
/// room that the file before it linked: a restore tried every full copy
/// for each file first (100,278 failed link() calls for 33,426 files). Here
/// the kernel's EMLINK itself, on copy 0 (strace injects it).
#[test]
fn restore_remembers_which_copy_of_an_object_has_room() {
    let test = "restore_remembers_which_copy_of_an_object_has_room";
    if !require_root(test) || !crate::common::require_strace(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    guest_of_one_object(lab);
    assert_eq!(object_copies(&store).len(), 1);
    let (r, tried) = restore_tracing_the_object(
        lab,
        &[
            "-e",
            "trace=linkat,link",
            "-e",
            "inject=linkat,link:error=EMLINK",
        ],
    );
    assert_eq!(r["objects_linked"], 5, "{r}");
    assert_eq!(r["objects_copied"], 0, "{r}");
    assert_eq!(r["extra_copies"], 1, "{r}");
    let copies = object_copies(&store);
    assert_eq!(
        copies.iter().map(|c| (c.0, c.2)).collect::<Vec<_>>(),
        vec![(0, 6), (1, 6)],
        "{copies:?}"
    );
    assert_eq!(
        tried.lines().filter(|l| l.contains("EMLINK")).count(),
        1,
        "copy 0 was tried again after it was found full:\n{tried}"
    );
}

/// Restore read a store object once for every file linking it (65,000
/// links to a 1 MB object: 65 GB read). It checks each object copy once.
#[test]
fn restore_reads_an_object_once_however_many_files_link_it() {
    let test = "restore_reads_an_object_once_however_many_files_link_it";
    if !require_root(test) || !crate::common::require_strace(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    guest_of_one_object(dir.path());
    let (r, opened) = restore_tracing_the_object(dir.path(), &["-e", "trace=open,openat,openat2"]);
    assert_eq!(r["objects_linked"], 5, "{r}");
    assert_eq!(opened.lines().count(), 1, "{opened}");
}

/// docs/unify.md's clone recipe: a manifest of a unified guest restored
/// from the guest itself is a clone that is already unified (every shared
/// file linked to its object, private files copied, the guest's own
/// hardlinks kept), so the unify that records it links and hashes nothing.
#[test]
fn a_guest_cloned_by_manifest_and_restore_is_unified_already() {
    if !require_root("a_guest_cloned_by_manifest_and_restore_is_unified_already") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let (src, other) = (lab.join("web1"), lab.join("db1"));
    for g in [&src, &other] {
        file_at(g, "usr/lib/libc.so", &bytes(1, 50_000), 0o644, 1_000_000);
    }
    file_at(&src, "usr/bin/perl", &bytes(3, 9_000), 0o755, 1_000_000);
    fs::hard_link(src.join("usr/bin/perl"), src.join("usr/bin/perl5")).unwrap();
    file(&src, "etc/shadow", b"root:*:1:0:99999:7:::\n", 0o640);
    unify_json(&store, &[&src, &other]);
    let m = lab.join("web1.jsonl");
    let o = unifs(&store, &[&"manifest", &src, &"-o", &m]);
    assert!(o.status.success(), "{}", stderr(&o));
    let clone = lab.join("web2");
    let o = restore(&store, &m, &src, &clone);
    assert!(o.status.success(), "{}", stderr(&o));

    assert_eq!(snapshot_for_restore(&clone), snapshot_for_restore(&src));
    assert_eq!(
        ino(&clone.join("usr/lib/libc.so")),
        ino(&src.join("usr/lib/libc.so"))
    );
    assert_ne!(ino(&clone.join("etc/shadow")), ino(&src.join("etc/shadow")));
    let r = unify_json(&store, &[&src, &clone]);
    assert_eq!(
        (r["files_linked"].as_u64(), r["bytes_hashed"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    assert_verify_clean(&store);
}
