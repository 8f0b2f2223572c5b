//! `unifs manifest` of a guest that changes its tree under the walk (a
//! running guest is the guest's own to change): it must never describe,
//! hash or list anything outside the guest, never wait for good, and take
//! whatever depth the guest made.

use crate::common::{require_root, unifs_bin};
use crate::tree::*;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `unifs --store STORE ARGS…`, killed after `limit`: `None` then.
fn unifs_bounded(store: &Path, args: &[&dyn AsRef<OsStr>], limit: Duration) -> Option<Output> {
    let mut child = Command::new(unifs_bin())
        .arg("--store")
        .arg(store)
        .args(args.iter().map(|a| a.as_ref()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(child.wait_with_output().unwrap())
}

/// Swaps `a` and `b` in `dir` (RENAME_EXCHANGE) as fast as it can until
/// `stop`, as a guest can through its mount.
fn swap_until(dir: &Path, a: &str, b: &str, stop: &AtomicBool) {
    let fd = unifs::sys::open_dir(dir).unwrap();
    while !stop.load(Ordering::Relaxed) {
        unifs::sys::rename_exchange(fd.as_fd(), OsStr::new(a), OsStr::new(b)).unwrap();
    }
}

/// Sets the flag when dropped: a panic in a thread scope must not leave a
/// swapper running, which the scope would wait for for good.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The s17 finding: a guest swapping its directory `hx` with a symlink
/// `hx.l` to the host's /etc got the host's /etc/shadow hashed into its
/// manifest and listed among its private files (the walk and the hashing
/// went by path and followed the symlink), so tar backed it up and restore
/// put it into the guest.
#[test]
fn a_guest_swapping_a_directory_for_a_symlink_never_gets_host_files_described() {
    if !require_root("a_guest_swapping_a_directory_for_a_symlink") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    init_store(&store);
    let host = lab.join("host-etc");
    let secret = b"root:$6$host-secret-hash:19000:0:99999:7:::\n".repeat(15);
    file(&host, "shadow", &secret, 0o600);
    for j in 0..50u64 {
        file(&host, &format!("host-only-{j}"), &bytes(j, 100), 0o644);
    }
    let g = lab.join("g");
    file(&g, "hx/shadow", b"guest\n", 0o600);
    for j in 0..50u64 {
        file(&g, &format!("hx/f{j}"), &bytes(100 + j, 100), 0o644);
    }
    std::os::unix::fs::symlink(&host, g.join("hx.l")).unwrap();
    let secret_hash = blake3::hash(&secret).to_hex().to_string();
    let (m, list) = (lab.join("g.jsonl"), lab.join("g.list"));
    let stop = AtomicBool::new(false);
    let mut failed = Vec::new();
    let mut runs = 0;
    std::thread::scope(|s| {
        let swapper = s.spawn(|| swap_until(&g, "hx", "hx.l", &stop));
        let _stop = StopOnDrop(&stop);
        let deadline = Instant::now() + Duration::from_secs(8);
        while runs < 30 && (runs < 3 || Instant::now() < deadline) {
            runs += 1;
            let args: [&dyn AsRef<OsStr>; 6] =
                [&"manifest", &g, &"-o", &m, &"--private-list", &list];
            let Some(o) = unifs_bounded(&store, &args, Duration::from_secs(30)) else {
                failed.push("a manifest did not end within 30 s".to_string());
                break;
            };
            if !o.status.success() {
                failed.push(String::from_utf8_lossy(&o.stderr).into_owned());
                continue;
            }
            let (_, entries) = unifs::backup::manifest::read_jsonl(&m).unwrap();
            for e in &entries {
                let p = e.rel_path();
                if p.to_string_lossy().contains("host-only")
                    || e.blake3.as_deref() == Some(secret_hash.as_str())
                {
                    failed.push(format!("run {runs}: host file described as {p:?}"));
                }
                if e.kind == "file" && e.link_path().is_none() {
                    let guest_path = g.join(&p);
                    // Sizes agree with what was hashed (the file is still
                    // there: only hx and hx.l move).
                    if let (Some(size), Ok(data)) = (e.size, fs::read(&guest_path)) {
                        let same =
                            e.blake3.as_deref() == Some(blake3::hash(&data).to_hex().as_str());
                        if same && size != data.len() as u64 {
                            failed.push(format!("run {runs}: {p:?}: size {size} of other content"));
                        }
                    }
                }
            }
            let listed = fs::read(&list).unwrap();
            if listed.windows(9).any(|w| w == b"host-only") {
                failed.push(format!("run {runs}: host file in the private list"));
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
    });
    assert!(
        failed.is_empty(),
        "{} problem(s) in {runs} runs: {:#?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(runs >= 3, "only {runs} manifest runs");
}

/// The s17 finding: a FIFO swapped in for a file between the walk's look
/// at it and the opening of its content made `unifs manifest` wait for a
/// writer for good.
#[test]
fn a_guest_swapping_a_file_for_a_fifo_does_not_hang_the_manifest() {
    if !require_root("a_guest_swapping_a_file_for_a_fifo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    init_store(&store);
    let g = lab.join("g");
    for j in 0..100u64 {
        file(&g, &format!("d/f{j}"), &bytes(j, 300), 0o644);
    }
    file(&g, "d/x", b"a file\n", 0o644);
    unifs::sys::mknod(&g.join("d/y"), libc::S_IFIFO | 0o600, 0, 0).unwrap();
    let m = lab.join("g.jsonl");
    let stop = AtomicBool::new(false);
    let mut failed = Vec::new();
    let mut runs = 0;
    std::thread::scope(|s| {
        let swapper = s.spawn(|| swap_until(&g.join("d"), "x", "y", &stop));
        let _stop = StopOnDrop(&stop);
        let deadline = Instant::now() + Duration::from_secs(8);
        while runs < 30 && (runs < 3 || Instant::now() < deadline) {
            runs += 1;
            let args: [&dyn AsRef<OsStr>; 4] = [&"manifest", &g, &"-o", &m];
            match unifs_bounded(&store, &args, Duration::from_secs(30)) {
                None => {
                    failed.push(format!("run {runs} did not end within 30 s"));
                    break;
                }
                Some(o) if !o.status.success() => {
                    failed.push(String::from_utf8_lossy(&o.stderr).into_owned())
                }
                Some(_) => {
                    let (_, entries) = unifs::backup::manifest::read_jsonl(&m).unwrap();
                    for e in entries.iter().filter(|e| e.kind == "fifo") {
                        if e.blake3.is_some() || e.size.is_some() {
                            failed.push(format!("fifo {:?} has content", e.path));
                        }
                    }
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
    });
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(runs >= 3, "only {runs} manifest runs");
}

/// A guest `lab/g` with a file `…deep` (75 bytes) 16 levels of 250-byte
/// names down: 4091 bytes of path in the guest, over 4096 with the guest's
/// own path in front, made one level at a time from the parent's fd. (Paths
/// of 4096 bytes or more in the guest are left out since s21:
/// review_s21_deep.)
fn deep_guest(lab: &Path) -> std::path::PathBuf {
    let g = lab.join("g");
    fs::create_dir(&g).unwrap();
    let name = "n".repeat(250);
    let mut fd = unifs::sys::open_dir(&g).unwrap();
    for _ in 0..16 {
        unifs::sys::mkdir_at(fd.as_fd(), OsStr::new(&name), 0o755).unwrap();
        fd = unifs::sys::open_at(fd.as_fd(), OsStr::new(&name), libc::O_DIRECTORY, 0).unwrap();
    }
    let deep = unifs::sys::open_at(
        fd.as_fd(),
        OsStr::new(&format!("{}deep", "x".repeat(71))),
        libc::O_WRONLY | libc::O_CREAT,
        0o644,
    )
    .unwrap();
    std::io::Write::write_all(&mut fs::File::from(deep), b"at the bottom\n").unwrap();
    g
}

/// A guest can nest directories deeper than PATH_MAX (4096 bytes, with the
/// guest's path in front) through its mount; manifest stopped with "File
/// name too long (os error 36)".
#[test]
fn a_tree_deeper_than_path_max_is_described() {
    if !require_root("a_tree_deeper_than_path_max_is_described") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    init_store(&store);
    let g = deep_guest(lab);
    let m = lab.join("g.jsonl");
    let o = unifs_bounded(
        &store,
        &[&"manifest", &g, &"-o", &m],
        Duration::from_secs(60),
    )
    .expect("manifest ended");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, entries) = unifs::backup::manifest::read_jsonl(&m).unwrap();
    let bottom = entries
        .iter()
        .find(|e| e.rel_path().as_os_str().as_bytes().ends_with(b"deep"))
        .expect("the deepest file is described");
    assert_eq!(bottom.rel_path().as_os_str().len(), 4091);
    assert!(g.join(bottom.rel_path()).as_os_str().len() > 4096);
    assert_eq!(
        bottom.blake3.as_deref(),
        Some(blake3::hash(b"at the bottom\n").to_hex().as_str())
    );
    assert_eq!(bottom.size, Some(14));
    assert_eq!(entries.len(), 1 + 16 + 1);
}

/// A path of the guest under PATH_MAX but over it with TARGET in front:
/// restore said the private file was "not in the backup", then (s21)
/// refused the manifest as too long. Since s25 it builds the tree relative
/// to its staging directory and reads --from by fd: the file is restored.
#[test]
fn restore_of_a_tree_deeper_than_path_max_from_the_root_restores_it() {
    if !require_root("restore_of_a_tree_deeper_than_path_max_from_the_root_restores_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    init_store(&store);
    let g = deep_guest(lab);
    let m = lab.join("g.jsonl");
    let o = unifs(&store, &[&"manifest", &g, &"-o", &m]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let target = lab.join("restored");
    let o = unifs_bounded(
        &store,
        &[&"restore", &"--manifest", &m, &"--from", &g, &target],
        Duration::from_secs(60),
    )
    .expect("restore ended");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let name = "n".repeat(250);
    let mut fd = unifs::sys::open_dir(&target).unwrap();
    for _ in 0..16 {
        fd = unifs::sys::open_at(fd.as_fd(), OsStr::new(&name), libc::O_DIRECTORY, 0).unwrap();
    }
    let deep = OsStr::new(&format!("{}deep", "x".repeat(71))).to_owned();
    let deep = unifs::sys::open_at(fd.as_fd(), &deep, libc::O_RDONLY, 0).unwrap();
    let mut data = String::new();
    std::io::Read::read_to_string(&mut fs::File::from(deep), &mut data).unwrap();
    assert_eq!(data, "at the bottom\n");
}

/// A private path with a newline printed one a line is two lines: a guest
/// directory "q\n" holding etc/shadow listed "/etc/shadow", and `tar -C
/// GUEST -T LIST` archived the host's. GNU tar also reads backslash escapes
/// in such a list (`x\057..` is `x/..`). Refused, naming the path; the
/// NUL-separated list still holds them.
#[test]
fn private_paths_one_a_line_refuses_names_a_reader_would_split_or_unquote() {
    if !require_root("private_paths_one_a_line_refuses") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    init_store(&store);
    // And a top-level name tar -T takes for an option (review: it moved
    // tar out of the guest with `--dir=..`).
    for (g, name) in [
        ("g1", &b"q\n"[..]),
        ("g2", &b"x\\057..\\057etc"[..]),
        ("g3", &b"--dir=.."[..]),
    ] {
        let g = lab.join(g);
        let d = g.join(OsStr::from_bytes(name));
        file(&d, "etc/shadow", b"guest\n", 0o600);
        file(&g, "etc/hostname", b"g\n", 0o644);
        let out = lab.join("list");
        let o = unifs(
            &store,
            &[&"manifest", &g, &"--format", &"private-paths", &"-o", &out],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name:?}: {err}");
        assert!(err.contains("-0") && err.contains("etc/shadow"), "{err}");
        // The name escaped: one line of error, whatever the guest named.
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!out.exists(), "nothing is written");
        let o = unifs(&store, &[&"manifest", &g, &"--format", &"private-paths"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(o.stdout.is_empty());
        let o = unifs(
            &store,
            &[&"manifest", &g, &"--format", &"private-paths", &"-0"],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut want = name.to_vec();
        want.extend_from_slice(b"/etc/shadow\0");
        assert!(o.stdout.windows(want.len()).any(|w| w == want));
    }
    // Names without either are listed as before.
    let o = unifs(
        &store,
        &[
            &"manifest",
            &lab.join("g1/etc"),
            &"--format",
            &"private-paths",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, b"hostname\n");
}

/// A guest of the catalog whose directory is gone: "…: not a directory"
/// said nothing of what was wrong or what to do.
#[test]
fn manifest_of_a_guest_whose_directory_is_gone_says_so() {
    if !require_root("manifest_of_a_guest_whose_directory_is_gone") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    let g = lab.join("web1");
    file(&g, "etc/hostname", b"web1\n", 0o644);
    unify_json(&store, &[&g]);
    fs::remove_dir_all(&g).unwrap();
    let o = unifs(&store, &[&"manifest", &"web1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("web1") && err.contains("does not exist") && err.contains("store forget"),
        "{err}"
    );
}

/// Unmounts (lazily) on drop.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A directory mounted inside a guest is described but not entered, as
/// unify's scan does not cross mounts: a bind mount of the host's own
/// filesystem (same device) was walked, and its files taken for the
/// guest's.
#[test]
fn a_bind_mount_inside_the_guest_is_not_entered() {
    if !require_root("a_bind_mount_inside_the_guest_is_not_entered") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    init_store(&store);
    file(&lab.join("host"), "host-only", b"host\n", 0o600);
    let g = lab.join("g");
    file(&g, "etc/hostname", b"g\n", 0o644);
    fs::create_dir_all(g.join("mnt")).unwrap();
    let ok = Command::new("mount")
        .arg("--bind")
        .arg(lab.join("host"))
        .arg(g.join("mnt"))
        .status()
        .unwrap();
    assert!(ok.success(), "mount --bind");
    let _unmount = Unmount(g.join("mnt"));
    let m = lab.join("g.jsonl");
    let o = unifs(&store, &[&"manifest", &g, &"-o", &m]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, entries) = unifs::backup::manifest::read_jsonl(&m).unwrap();
    let paths: Vec<_> = entries.iter().map(|e| e.rel_path()).collect();
    assert!(paths.contains(&"mnt".into()), "{paths:?}");
    assert!(!paths.contains(&"mnt/host-only".into()), "{paths:?}");
}

/// A break's temp copy that a killed mount daemon left behind (named
/// `.unifs-break.*`, marked `trusted.unifs.break`) was described and listed
/// as a private file: tar backed up a partial copy, and restore put it back
/// without its mark (the store's xattrs are not restored), where the guest
/// then saw it. Unify leaves such copies alone; so does the manifest.
#[test]
fn a_killed_mounts_break_copy_is_not_described() {
    if !require_root("a_killed_mounts_break_copy_is_not_described") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path();
    let store = lab.join("store");
    init_store(&store);
    let g = lab.join("g");
    file(&g, "etc/hostname", b"g\n", 0o644);
    let temp = file(&g, "etc/.unifs-break.4242.1", b"half a cop", 0o644);
    set_xattr(&temp, "trusted.unifs.break", b"1");
    // The same name without the mark is the guest's own file.
    file(&g, "etc/.unifs-break.4242.2", b"mine\n", 0o644);
    let (m, list) = (lab.join("g.jsonl"), lab.join("g.list"));
    let o = unifs(
        &store,
        &[&"manifest", &g, &"-o", &m, &"--private-list", &list],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, entries) = unifs::backup::manifest::read_jsonl(&m).unwrap();
    let paths: Vec<_> = entries.iter().map(|e| e.rel_path()).collect();
    assert!(
        paths.contains(&"etc/.unifs-break.4242.2".into()),
        "{paths:?}"
    );
    assert!(
        !paths.contains(&"etc/.unifs-break.4242.1".into()),
        "{paths:?}"
    );
    let listed = String::from_utf8_lossy(&fs::read(&list).unwrap()).into_owned();
    assert!(listed.contains("etc/.unifs-break.4242.2"), "{listed}");
    assert!(!listed.contains("etc/.unifs-break.4242.1"), "{listed}");
}
