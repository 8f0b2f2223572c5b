//! Review s20: `restore` into a directory a live mount serves, onto a mount
//! point or through a symlink; `manifest` while unify links the guest.

use crate::common::{require_root, require_strace, unifs_bin};
use crate::fs::harness::Mount;
use crate::tree::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Guests g0 and g1 sharing one file, unified into `lab/store`, and g0's
/// manifest (g0 is its own private backup: `--from g0`).
fn unified_guest(lab: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let store = lab.join("store");
    let guests: Vec<PathBuf> = (0..2).map(|i| lab.join(format!("g{i}"))).collect();
    for g in &guests {
        file_at(g, "usr/lib/libx.so", &bytes(7, 50_000), 0o644, 1_000_000);
    }
    file(&guests[0], "etc/own.conf", b"g0's own\n", 0o644);
    unify_json(&store, &[&guests[0], &guests[1]]);
    let m = lab.join("g0.jsonl");
    let o = unifs(&store, &[&"manifest", &guests[0], &"-o", &m]);
    assert!(o.status.success(), "{}", stderr(&o));
    (store, guests[0].clone(), m)
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Nothing beside `target` that a restore writes: no staging tree, no lock.
fn assert_nothing_beside(target: &Path) {
    for suffix in [".unifs-restore", ".unifs-restore.lock"] {
        let p = with_suffix(target, suffix);
        assert!(
            fs::symlink_metadata(&p).is_err(),
            "{} was left behind",
            p.display()
        );
    }
}

fn is_empty_dir(p: &Path) -> bool {
    fs::read_dir(p).unwrap().next().is_none()
}

/// Unmounts a tmpfs mounted for a test, even when the test fails.
pub(crate) struct TmpfsMount(PathBuf);

impl TmpfsMount {
    pub(crate) fn at(p: &Path) -> TmpfsMount {
        fs::create_dir_all(p).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        TmpfsMount(p.to_path_buf())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Runs `restore`, asserts that it failed, and returns its stderr.
fn refused(store: &Path, m: &Path, from: &Path, target: &Path, what: &str) -> String {
    let o = restore(store, m, from, target);
    let err = stderr(&o);
    assert!(!o.status.success(), "{what}: {err}");
    err
}

/// Review s24: a daemon of a build before the flocks (45eff4d), still
/// serving after an upgrade, was not seen by restore, which found no lock
/// and restored over the directory it served. Stood in for by a daemon
/// told to take no lock (a test hook).
#[test]
fn restore_refuses_the_directory_a_daemon_without_a_lock_serves() {
    if !require_root("restore_refuses_the_directory_a_daemon_without_a_lock_serves") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let (store, g0, m) = unified_guest(lab);
    let r = lab.join("r");
    fs::create_dir(&r).unwrap();
    let ino = fs::metadata(&r).unwrap().ino();
    fs::create_dir(lab.join("mnt")).unwrap();
    let log = fs::File::create(lab.join("mnt.log")).unwrap();
    let old = ["env", "UNIFS_TEST_NO_CLAIM=1"];
    let mount = Mount::start_under(&old, &store, &r, &lab.join("mnt"), &[], log);

    let err = refused(&store, &m, &g0, &r, "restored into a served guest");
    let r = fs::canonicalize(&r).unwrap();
    assert!(
        err.contains(&format!("{} is served by a unifs mount", r.display())),
        "{err}"
    );
    assert!(err.contains("its daemon: pid "), "{err}");
    assert_eq!(
        fs::metadata(&r).unwrap().ino(),
        ino,
        "the target was replaced"
    );
    assert!(is_empty_dir(&r));
    assert_nothing_beside(&r);

    // A new guest beside the served one is restored.
    let beside = lab.join("r2");
    let o = restore(&store, &m, &g0, &beside);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read(beside.join("etc/own.conf")).unwrap(),
        b"g0's own\n"
    );
    drop(mount);
}

/// restore removed the empty directory a live mount served and renamed its
/// tree there: the daemon went on serving the deleted directory (the guest
/// saw an empty root, every create failed ENOENT), and restore said it
/// succeeded. It now refuses, as `mount` refuses a served guest.
#[test]
fn restore_refuses_the_directory_a_live_mount_serves() {
    if !require_root("restore_refuses_the_directory_a_live_mount_serves") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let (store, g0, m) = unified_guest(lab);
    let r = lab.join("r");
    fs::create_dir(&r).unwrap();
    let ino = fs::metadata(&r).unwrap().ino();
    fs::create_dir(lab.join("mnt")).unwrap();
    let mount = Mount::start(&store, &r, &lab.join("mnt"), &[]);
    let pid = mount.pid();

    let err = refused(&store, &m, &g0, &r, "restored into a served guest");
    assert!(
        err.contains(&format!("{} is served by a unifs mount", r.display())),
        "{err}"
    );
    assert!(err.contains(&format!("its daemon: pid {pid}")), "{err}");
    assert!(err.contains("stop the guest"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(
        fs::metadata(&r).unwrap().ino(),
        ino,
        "the target was replaced"
    );
    assert!(is_empty_dir(&r));
    assert_nothing_beside(&r);

    // A directory inside the served guest: the daemon's to write.
    let inside = r.join("sub");
    let err = refused(&store, &m, &g0, &inside, "restored inside a served guest");
    assert!(
        err.contains(&format!(
            "{} is inside {}, which is served by a unifs mount",
            inside.display(),
            r.display()
        )),
        "{err}"
    );
    assert!(is_empty_dir(&r));

    // The guest still works through its mount.
    fs::write(mount.path("newfile"), b"data").unwrap();
    assert_eq!(fs::read(r.join("newfile")).unwrap(), b"data");
    fs::remove_file(mount.path("newfile")).unwrap();
    drop(mount);

    // Unmounted, the same restore goes through.
    let o = restore(&store, &m, &g0, &r);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(r.join("etc/own.conf")).unwrap(), b"g0's own\n");
}

/// restore onto a mount point (a fresh filesystem, a live unifs mount) or
/// through a symlink built the whole tree, then failed on its rename with
/// a bare "Device or resource busy" / "Not a directory", leaving a staging
/// tree that hardlinked store objects (which gc then never freed). Each is
/// now refused before anything is written, saying what to do.
#[test]
fn restore_refuses_a_mount_point_or_a_symlink_writing_nothing() {
    if !require_root("restore_refuses_a_mount_point_or_a_symlink_writing_nothing") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let (store, g0, m) = unified_guest(lab);
    let object = first_object_file(&store);
    let links = fs::metadata(&object).unwrap().nlink();

    // An empty filesystem mounted where the guest goes.
    let t1 = lab.join("t1");
    let _tmpfs = TmpfsMount::at(&t1);
    let err = refused(&store, &m, &g0, &t1, "restored onto a mount point");
    assert!(
        err.contains(&format!("{} is a mount point (tmpfs", t1.display())),
        "{err}"
    );
    assert!(
        err.contains("restore into a new directory inside it"),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    assert!(is_empty_dir(&t1));
    assert_nothing_beside(&t1);
    // As it says: a directory inside it.
    let inside = t1.join("root");
    let o = restore(&store, &m, &g0, &inside);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read(inside.join("etc/own.conf")).unwrap(),
        b"g0's own\n"
    );

    // A live unifs mount of an empty guest.
    let r = lab.join("r");
    fs::create_dir(&r).unwrap();
    fs::create_dir(lab.join("mnt")).unwrap();
    let mount = Mount::start(&store, &r, &lab.join("mnt"), &[]);
    let err = refused(&store, &m, &g0, &mount.dir, "restored onto a unifs mount");
    assert!(
        err.contains(&format!(
            "{} is a unifs mount (of the guest directory {})",
            mount.dir.display(),
            r.display()
        )),
        "{err}"
    );
    assert!(err.contains("unmount it"), "{err}");
    assert!(is_empty_dir(&r) && is_empty_dir(&mount.dir));
    assert_nothing_beside(&mount.dir);
    drop(mount);

    // A symlink to an empty directory (/vservers/web1 -> /data/web1).
    let data = lab.join("data/web1");
    fs::create_dir_all(&data).unwrap();
    let link = lab.join("web1");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    let err = refused(&store, &m, &g0, &link, "restored through a symlink");
    assert!(
        err.contains(&format!(
            "{} is a symlink (to {})",
            link.display(),
            data.display()
        )),
        "{err}"
    );
    let real = fs::canonicalize(&data).unwrap();
    assert!(
        err.contains(&format!(
            "name the directory it leads to instead (`unifs restore … {}`)",
            real.display()
        )),
        "{err}"
    );
    assert!(is_empty_dir(&data));
    assert_eq!(fs::read_link(&link).unwrap(), data);
    assert_nothing_beside(&link);

    // No leftover tree holds a link to the object: only the store, g0, g1
    // and the tree restored inside the tmpfs (a copy there: another
    // filesystem) do.
    assert_eq!(fs::metadata(&object).unwrap().nlink(), links);
}

/// The final rename failing all the same (strace makes it fail): the error
/// names both paths, and the rebuilt tree, which links store objects, is
/// not left behind.
#[test]
fn a_failed_final_rename_names_both_paths_and_leaves_no_tree() {
    let test = "a_failed_final_rename_names_both_paths_and_leaves_no_tree";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let (store, g0, m) = unified_guest(lab);
    let object = first_object_file(&store);
    let links = fs::metadata(&object).unwrap().nlink();
    let target = lab.join("restored");
    let o = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null"])
        .args(["-e", "inject=rename,renameat,renameat2:error=EIO"])
        .arg(unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["restore", "--manifest"])
        .arg(&m)
        .arg("--from")
        .arg(&g0)
        .arg(&target)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    let staging = with_suffix(&target, ".unifs-restore");
    assert!(
        err.contains(&format!(
            "renaming {} to {}",
            staging.display(),
            target.display()
        )),
        "{err}"
    );
    assert!(err.contains("was removed"), "{err}");
    assert!(!staging.exists(), "the staging tree was left");
    assert!(!target.exists());
    assert_eq!(fs::metadata(&object).unwrap().nlink(), links);
}

/// A guest whose one shared file unify is about to link: g1 shares
/// libx.so with g0, and has a private file besides.
fn guests_to_unify(lab: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let store = lab.join("store");
    init_store(&store);
    let (g0, g1) = (lab.join("g0"), lab.join("g1"));
    for g in [&g0, &g1] {
        file_at(g, "usr/lib/libx.so", &bytes(9, 50_000), 0o644, 1_000_000);
    }
    file(&g1, "usr/lib/own.conf", b"g1's own\n", 0o644);
    (store, g0, g1)
}

/// The names in the manifest `m` (entry lines' `path`).
fn manifest_paths(m: &Path) -> Vec<String> {
    fs::read_to_string(m)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["path"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

/// A manifest written while unify linked the guest recorded unify's temp
/// name `.unifs-tmp-PID-N`: as a private file after the swap (the backup's
/// copy then lacked it, and the backup did not restore), or as a file
/// linking the object before it (the restored guest got a junk file). strace
/// holds unify at the syscall that ends each window.
#[test]
fn a_manifest_written_while_unify_links_the_guest_leaves_its_temp_names_out() {
    let test = "a_manifest_written_while_unify_links_the_guest_leaves_its_temp_names_out";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    // unlinkat: after the swap, before the temp name (the guest's old
    // file) goes; renameat2: the object linked at the temp name, before
    // the swap.
    for syscall in ["unlinkat", "renameat2"] {
        let dir = tempfile::tempdir().unwrap();
        let lab = dir.path();
        let (store, g0, g1) = guests_to_unify(lab);
        let mut unify = Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-e"])
            .arg(format!("inject={syscall}:delay_enter=1500000"))
            .arg(unifs_bin())
            .arg("--store")
            .arg(&store)
            .args(["unify", "--no-progress"])
            .arg(&g0)
            .arg(&g1)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let dir_of = g1.join("usr/lib");
        let temp_there = || {
            fs::read_dir(&dir_of)
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".unifs-tmp-"))
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !temp_there() {
            if Instant::now() > deadline || unify.try_wait().unwrap().is_some() {
                let _ = unify.kill();
                let out = unify.wait_with_output().unwrap();
                panic!("{syscall}: no temp name seen: {}", stderr(&out));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let m = lab.join("g1.jsonl");
        let plist = lab.join("g1.plist");
        let o = unifs(
            &store,
            &[&"manifest", &g1, &"-o", &m, &"--private-list", &plist],
        );
        // Still in the window: the manifest saw the temp name.
        let still = temp_there();
        let out = unify.wait_with_output().unwrap();
        assert!(out.status.success(), "unify: {}", stderr(&out));
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            still,
            "{syscall}: the window closed before the manifest ended"
        );
        let paths = manifest_paths(&m);
        assert!(
            !paths.iter().any(|p| p.contains(".unifs-tmp-")),
            "{syscall}: {paths:?}"
        );
        assert!(paths.contains(&"usr/lib/libx.so".to_string()), "{paths:?}");
        assert!(paths.contains(&"usr/lib/own.conf".to_string()), "{paths:?}");
        let private = fs::read(&plist).unwrap();
        assert!(
            !String::from_utf8_lossy(&private).contains(".unifs-tmp-"),
            "{syscall}: {}",
            String::from_utf8_lossy(&private)
        );
        let err = stderr(&o);
        assert!(
            err.contains("unify's temp name, left out of the manifest"),
            "{err}"
        );
    }
}

/// A killed unify's leftover temp name is left out too (and named); a
/// directory of such a name, which unify never makes, is the guest's.
#[test]
fn a_manifest_leaves_a_killed_unifys_temp_name_out() {
    if !require_root("a_manifest_leaves_a_killed_unifys_temp_name_out") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let (store, _g0, g1) = guests_to_unify(lab);
    file(&g1, "usr/lib/.unifs-tmp-4242-0", b"old content\n", 0o644);
    file(&g1, "var/.unifs-tmp-7-1/inside", b"kept\n", 0o644);
    let m = lab.join("g1.jsonl");
    let o = unifs(&store, &[&"manifest", &g1, &"-o", &m]);
    assert!(o.status.success(), "{}", stderr(&o));
    let paths = manifest_paths(&m);
    assert!(
        !paths.contains(&"usr/lib/.unifs-tmp-4242-0".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"var/.unifs-tmp-7-1/inside".to_string()),
        "{paths:?}"
    );
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "{}: unify's temp name, left out of the manifest",
            g1.join("usr/lib/.unifs-tmp-4242-0").display()
        )),
        "{err}"
    );
}

/// Kills a `unifs mount -f` child and detaches its mount point, even when
/// the test fails.
struct MountChild(std::process::Child, PathBuf);

impl Drop for MountChild {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.1, nix::mount::MntFlags::MNT_DETACH);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A mount started while a restore held its target waited for the
/// restore's shared flock, then, as the restore ended, took the exclusive
/// one on the directory the restore had just replaced (deleted): the guest
/// saw an empty root. The mount now sees that the directory was replaced
/// and fails, saying to mount again. (The test holds the flock and renames
/// as the restore does.)
#[test]
fn a_mount_of_a_directory_replaced_while_it_waited_fails() {
    if !require_root("a_mount_of_a_directory_replaced_while_it_waited_fails") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    init_store(&store);
    let target = lab.join("t");
    fs::create_dir(&target).unwrap();
    let rebuilt = lab.join("t.unifs-restore");
    file(&rebuilt, "etc/own.conf", b"restored\n", 0o644);
    let mp = lab.join("mnt");
    fs::create_dir(&mp).unwrap();
    let held = nix::fcntl::Flock::lock(
        fs::File::open(&target).unwrap(),
        nix::fcntl::FlockArg::LockSharedNonblock,
    )
    .unwrap();
    let child = Command::new(unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["mount", "-f"])
        .arg(&target)
        .arg(&mp)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = MountChild(child, mp.clone());
    // Until the mount holds the target open (and waits for its flock).
    let real = fs::canonicalize(&target).unwrap();
    let fds = PathBuf::from(format!("/proc/{}/fd", child.0.id()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_dir(&fds)
        .map(|d| {
            d.flatten()
                .any(|e| fs::read_link(e.path()).is_ok_and(|l| l == real))
        })
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "the mount never opened the target"
        );
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the mount ended early"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    fs::rename(&rebuilt, &target).unwrap();
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the mount serves the replaced directory: {:?}",
            fs::read_dir(&mp).map(|d| d.count())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut err = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!child.0.wait().unwrap().success(), "{err}");
    assert!(
        err.contains(&format!(
            "{} was replaced while this mount waited for it",
            target.display()
        )),
        "{err}"
    );
}
