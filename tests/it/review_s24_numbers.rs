//! Figures unify, store and guest print, checked against what happened
//! (session 24's numbers review).

use crate::common::require_root;
use crate::tree::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A filesystem in an image file, loop-mounted; unmounted (its loop device
/// then freed) even when the test fails.
struct Image {
    dir: tempfile::TempDir,
}

impl Image {
    fn new(kind: &str, size: u64, args: &[&str]) -> Image {
        Image {
            dir: crate::common::mounted_image(kind, size, args),
        }
    }
    fn path(&self) -> PathBuf {
        self.dir.path().join("fs")
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// btrfs without extended inode refs limits the links to one inode from one
/// directory by the length of their names: the link to unify's short temp
/// name fits, the swap to the long name fails with EMLINK. That must start
/// a new copy of the object as EMLINK from the link does; it left the files
/// unlinked ("Too many links") on every run.
#[test]
fn review_s24_btrfs_emlink_from_the_swap_starts_a_new_copy() {
    if !require_root("review_s24_btrfs_emlink_from_the_swap_starts_a_new_copy") {
        return;
    }
    let img = Image::new(
        "btrfs",
        300 << 20,
        &["-q", "-n", "4096", "-s", "4096", "-O", "^extref"],
    );
    let (store, g) = (img.path().join("store"), img.path().join("g1"));
    let long = "x".repeat(200);
    for i in 0..40 {
        file(&g, &format!("{long}{i}"), b"same content\n", 0o644);
    }
    let s = unify_json(&store, &[&g]);
    assert_eq!(s["problems"], serde_json::json!([]), "{s}");
    // All but the one that became the object.
    assert_eq!(s["files_linked"], 39, "{s}");
    assert!(s["extra_copies"].as_u64().unwrap() >= 1, "{s}");
    assert_verify_clean(&store);
}

/// A process of 20 threads, pausing for good.
const THREADS: &str = r#"
#include <pthread.h>
#include <unistd.h>
static void *f(void *a) { (void)a; for (;;) pause(); return 0; }
int main(void) {
    pthread_t t;
    for (int i = 0; i < 20; i++) pthread_create(&t, 0, f, 0);
    for (;;) pause();
}
"#;

/// A named guest of its own config and run dirs; stopped on drop.
struct Guest {
    t: crate::guest::harness::TestRoot,
    name: String,
}

impl Guest {
    fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(crate::common::unifs_bin());
        cmd.env("UNIFS_CONFIG_DIR", self.t.dir.path().join("config"));
        cmd.env("UNIFS_RUN_DIR", self.t.dir.path().join("run"));
        cmd.arg("guest").args(args);
        cmd
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let o =
            crate::guest::harness::run_bounded(self.cmd(args), std::time::Duration::from_secs(30));
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {o:?}"))
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let stop = self.cmd(&["stop", "--timeout", "0", &self.name]);
        let _ = crate::guest::harness::run_bounded(stop, std::time::Duration::from_secs(30));
        let root = self.t.dir.path().join("run").join(&self.name).join("root");
        if crate::guest::harness::is_mounted(&root) {
            let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// `guest status`/`list` showed the cgroup's pids.current, which counts
/// threads: 2 processes, one of 20 threads, showed as 22.
#[test]
fn review_s24_guest_processes_are_processes_not_threads() {
    use crate::guest::harness::{can_run, ok, run_bounded, within_30s};
    let test = "review_s24_guest_processes_are_processes_not_threads";
    if !can_run(test) {
        return;
    }
    let t = crate::guest::harness::TestRoot::new();
    let src = t.dir.path().join("thr.c");
    fs::write(&src, THREADS).unwrap();
    let built = std::process::Command::new("cc")
        .args(["-O2", "-static", "-pthread", "-o"])
        .arg(t.root().join("bin/thr"))
        .arg(&src)
        .status();
    if !built.is_ok_and(|s| s.success()) {
        crate::common::skip(test, "needs cc -static (gcc, libc6-dev)");
        return;
    }
    fs::create_dir(t.dir.path().join("config")).unwrap();
    let name = format!("t{}-threads", std::process::id());
    let toml = format!(
        "root = {:?}\nroot_mount = \"overlay\"\n\
         init = [\"/bin/sh\", \"-c\", \"/bin/thr & exec /bin/sleep 1000\"]\n\
         [limits]\npids = 64\n",
        t.root()
    );
    fs::write(
        t.dir.path().join("config").join(format!("{name}.toml")),
        toml,
    )
    .unwrap();
    let g = Guest { t, name };
    ok(&run_bounded(
        g.cmd(&["start", &g.name]),
        std::time::Duration::from_secs(30),
    ));
    let threads = |pid: &serde_json::Value| {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap())
    };
    // Until thr has started its threads.
    assert!(
        within_30s(|| {
            let ps = g.json(&["ps", "--json", &g.name]);
            let ps = ps.as_array().unwrap();
            ps.len() == 2 && ps.iter().any(|p| threads(&p["pid"]) == 21)
        }),
        "{}",
        g.json(&["ps", "--json", &g.name])
    );
    assert_eq!(g.json(&["status", "--json", &g.name])["processes"], 2);
    let list = g.json(&["list", "--json"]);
    assert_eq!(list[0]["processes"], 2, "{list}");
}

/// A file found changed when hashed was reported ("changed while unify
/// ran") but not counted in `skipped_changed`, which counted only the
/// changes found when linking. A thread chmods it (a new ctime each time)
/// for the whole run; a big pair, hashed first, makes sure time passes
/// between the walk and its hashing.
#[test]
fn review_s24_a_file_changed_before_it_is_hashed_counts_as_skipped_changed() {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (store, a, b) = (
        dir.path().join("store"),
        dir.path().join("a"),
        dir.path().join("b"),
    );
    let big = bytes(7, 32 << 20);
    for g in [&a, &b] {
        file(g, "usr/big", &big, 0o644);
        file(g, "usr/victim", b"changing\n", 0o644);
    }
    let victim = a.join("usr/victim");
    let stop = AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
            }
        });
        let out = std::process::Command::new(crate::common::unifs_bin())
            .arg("--store")
            .arg(&store)
            .args(["unify", "--json"])
            .args([&a, &b])
            .env("UNIFS_THREADS", "1")
            .output();
        stop.store(true, Ordering::Relaxed);
        out.unwrap()
    });
    let s = unify_summary(&out);
    let changed = s["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["what"]
                .as_str()
                .unwrap()
                .contains("changed while unify ran")
        })
        .count();
    assert_eq!(changed, 1, "{s}");
    assert_eq!(s["skipped_changed"], 1, "{s}");
    assert_eq!(s["files_linked"], 1, "{s}");
}

/// `unifs --store STORE ARGS` with `UNIFS_TEST_LINK_MAX` set to `link_max`.
fn unifs_link_max(store: &Path, link_max: u32, args: &[&dyn AsRef<OsStr>]) -> Output {
    let mut cmd = Command::new(crate::common::unifs_bin());
    cmd.arg("--store").arg(store);
    for a in args {
        cmd.arg(a.as_ref());
    }
    cmd.env("UNIFS_TEST_LINK_MAX", link_max.to_string());
    cmd.output().unwrap()
}

fn stats(store: &Path) -> serde_json::Value {
    stats_json(store)["usage"].clone()
}

/// Bytes of the distinct inodes of the regular files under `roots`.
fn inode_bytes(roots: &[&Path]) -> u64 {
    let mut seen = std::collections::HashMap::new();
    for root in roots {
        for e in walkdir::WalkDir::new(root) {
            let m = e.unwrap().metadata().unwrap();
            if m.is_file() {
                seen.insert((m.dev(), m.ino()), m.len());
            }
        }
    }
    seen.values().sum()
}

/// bytes_saved added the paths unify replaced but never took off the
/// copies it made itself: an object copied from a file open for writing,
/// extra copies at the link limit. It now says what the disk gained, as
/// `store stats` does.
#[test]
fn review_s24_bytes_saved_takes_off_the_copies_unify_makes() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let t = dir.path();
    let data = bytes(11, 1_000_000);
    let guests: Vec<PathBuf> = ["a", "b", "c"].iter().map(|g| t.join(g)).collect();
    for g in &guests {
        file(g, "usr/x", &data, 0o644);
    }
    let store = t.join("store");
    let roots: Vec<&Path> = guests.iter().map(|g| g.as_path()).collect();
    let before = inode_bytes(&roots);
    // A guest's process holds a/usr/x open for writing: it is copied.
    let writer = fs::OpenOptions::new()
        .append(true)
        .open(guests[0].join("usr/x"))
        .unwrap();
    let s = unify_json(&store, &[&guests[0], &guests[1], &guests[2]]);
    drop(writer);
    let after = inode_bytes(&[&guests[0], &guests[1], &guests[2], &store.join("objects")]);
    assert_eq!(
        (s["objects_copied"].as_u64(), s["files_linked"].as_u64()),
        (Some(1), Some(2)),
        "{s}"
    );
    assert_eq!(s["bytes_copied"], 1_000_000, "{s}");
    assert_eq!(s["bytes_saved"], before - after, "{s}");
    assert_eq!(s["bytes_saved"], stats(&store)["bytes_saved"], "{s}");

    // Extra copies at the link limit: 5 paths, at most 2 guest links a copy.
    let t = dir.path().join("limit");
    let guests: Vec<PathBuf> = (0..5).map(|i| t.join(format!("g{i}"))).collect();
    for g in &guests {
        file(g, "usr/f", &data[..1000], 0o644);
    }
    let store = t.join("store");
    let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"unify", &"--json"];
    args.extend(guests.iter().map(|g| g as &dyn AsRef<OsStr>));
    let s = unify_summary(&unifs_link_max(&store, 3, &args));
    assert_eq!(s["extra_copies"], 2, "{s}");
    assert_eq!(s["bytes_copied"], 2000, "{s}");
    // 5 inodes of 1,000 bytes became 3.
    assert_eq!(s["bytes_saved"], 2000, "{s}");
    assert_eq!(stats(&store)["bytes_saved"], 2000);
}

/// A clone's inode unify cannot make an object is split, each guest but
/// the first getting a copy: that costs its size.
#[test]
fn review_s24_bytes_copied_counts_clone_splits() {
    if !require_root("review_s24_bytes_copied_counts_clone_splits") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let flagged = file(&a, "usr/flagged", &bytes(3, 5000), 0o644);
    chattr("+d", &flagged);
    let cp = Command::new("cp").arg("-al").arg(&a).arg(&b).status();
    assert!(cp.unwrap().success());
    let store = dir.path().join("store");
    let dry = unify_json(&store, &[&"--dry-run", &a, &b]);
    let s = unify_json(&store, &[&a, &b]);
    for s in [&dry, &s] {
        assert_eq!(s["clone_paths_split"], 1, "{s}");
        assert_eq!(s["bytes_copied"], 5000, "{s}");
        assert_eq!(s["bytes_saved"], 0, "{s}");
    }
}

/// `store stats` counted size × (guest links − 1) for each linked object
/// file, so an unused copy gc keeps cost nothing: 3 guest paths on 3
/// inodes, nothing shared, showed 1,000 bytes saved.
#[test]
fn review_s24_stats_bytes_saved_counts_the_copies_gc_keeps() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let t = dir.path();
    let guests: Vec<PathBuf> = (0..5).map(|i| t.join(format!("g{i}"))).collect();
    for g in &guests {
        file(g, "usr/f", &[0u8; 1000], 0o644);
    }
    let store = t.join("store");
    let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"unify", &"--json"];
    args.extend(guests.iter().map(|g| g as &dyn AsRef<OsStr>));
    unify_summary(&unifs_link_max(&store, 3, &args));
    // Remove the guests' paths linking copy 1: copies 0 and 2 stay linked,
    // gc keeps 1.
    let copy1 = walkdir::WalkDir::new(store.join("objects"))
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .find(|p| p.extension().is_some_and(|e| e == "1"))
        .expect("copy 1");
    let ino1 = ino(&copy1);
    for g in &guests {
        if ino(&g.join("usr/f")) == ino1 {
            fs::remove_file(g.join("usr/f")).unwrap();
        }
    }
    let u = stats(&store);
    assert_eq!(u["unused_kept_object_files"], 1, "{u}");
    assert_eq!(u["guest_links"], 3, "{u}");
    assert_eq!(u["bytes_stored"], 3000, "{u}");
    assert_eq!(u["bytes_saved"], 0, "{u}");
}
