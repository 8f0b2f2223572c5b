//! Review s27 (open-file limit, host paths): unify, restore and the store
//! kept an fd per object fan-out directory (up to 256); unify went on below
//! the fds it needs and failed midway; "Too many open files" did not name
//! the limit; restore took an object it could not look up for a missing
//! one; and one guest directory named through another path (a bind mount,
//! or moved) became a second guest.
//!
//! Real stores, guests and bind mounts in temp dirs; guards unmount.

use crate::common::{require_root, unifs_bin};
use crate::tree::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `prlimit --nofile=N:N unifs --store STORE ARGS`.
fn at_fd_limit(limit: usize, store: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={limit}:{limit}"))
        .arg(unifs_bin())
        .arg("--store")
        .arg(store);
    for a in args {
        cmd.arg(a.as_ref());
    }
    cmd.env_remove("UNIFS_TEST_LINK_MAX")
        .output()
        .expect("prlimit (util-linux)")
}

/// Two guests of `n` files each, the same `n` contents in both: `n`
/// objects, spread over (nearly) all 256 fan-out directories.
fn twin_guests(lab: &Path, n: usize) -> (PathBuf, PathBuf) {
    let (a, b) = (lab.join("a"), lab.join("b"));
    for i in 0..n {
        let data = format!("file {i}\n");
        file(&a, &format!("f/{i}"), data.as_bytes(), 0o644);
        file(&b, &format!("f/{i}"), data.as_bytes(), 0o644);
    }
    (a, b)
}

/// The "need about N open files" of unify's refusal.
fn fds_needed(err: &str) -> usize {
    let rest = err.split("need about ").nth(1).expect(err);
    rest.split(' ').next().unwrap().parse().expect(err)
}

/// Below the fds it needs, unify went on (it refused only under 64 plus
/// one per guest) and left files unlinked, "Too many open files" one by
/// one. It now refuses at the start naming the limit, the need and what to
/// do, with nothing made; at exactly that need, with 600 objects over the
/// 256 fan-out directories (which it no longer holds a fd each of), every
/// file is linked.
#[test]
fn review_s27_unify_refuses_below_its_fd_need_and_links_all_at_it() {
    if !require_root("review_s27_unify_refuses_below_its_fd_need") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let (a, b) = twin_guests(lab.path(), 600);
    let store = lab.path().join("S");
    let out = at_fd_limit(100, &store, &[&"unify", &"--json", &a, &b]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("2 guests need about")
            && err.contains("the open-file limit is 100")
            && err.contains("ulimit -n")
            && err.contains("fewer guests per run")
            && err.lines().count() == 1,
        "{err}"
    );
    assert!(!store.exists(), "a refused run made the store");

    let need = fds_needed(&err);
    assert!(need < 450, "{need}: still counts 256 fan-out fds?");
    let out = at_fd_limit(need, &store, &[&"unify", &"--json", &a, &b]);
    let s = unify_summary(&out);
    assert_eq!(s["problems"], serde_json::json!([]), "{s}");
    assert_eq!(s["objects_added"], 600, "{s}");
    assert_eq!(s["files_linked"], 600, "{s}");
    assert_eq!(ino(&a.join("f/599")), ino(&b.join("f/599")));
}

/// A guest of 600 objects, its manifest, and an empty `--from`.
fn unified_guest_with_manifest(lab: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (a, b) = twin_guests(lab, 600);
    let store = lab.join("S");
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["objects_added"], 600, "{s}");
    let m = lab.join("a.jsonl");
    let o = unifs(&store, &[&"manifest", &a, &"-o", &m]);
    assert!(o.status.success(), "{}", stderr(&o));
    let from = lab.join("private");
    fs::create_dir(&from).unwrap();
    (store, m, from)
}

/// Restore looked each object up through a fan-out directory fd it kept
/// (256 of them): at a limit of 64 it ran out, and said the objects were
/// "not in the store". It now keeps none and restores the guest.
#[test]
fn review_s27_restore_of_600_objects_works_within_64_fds() {
    if !require_root("review_s27_restore_of_600_objects_works_within_64_fds") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let (store, m, from) = unified_guest_with_manifest(lab.path());
    let target = lab.path().join("r");
    let out = at_fd_limit(
        64,
        &store,
        &[&"restore", &"--manifest", &m, &"--from", &from, &target],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read(target.join("f/599")).unwrap(), b"file 599\n");
}

/// Drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the child's bounding
/// set: root then meets a directory's mode as its owner does (EACCES).
fn without_dac_override(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child
    // between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH (linux/capability.h).
            for cap in [1 as libc::c_ulong, 2] {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    }
}

/// A fan-out directory restore cannot search (EACCES): the objects in it
/// were reported "not in the store", as if lost. Restore now says it cannot
/// tell, with the error, and writes nothing.
#[test]
fn review_s27_restore_stops_on_an_object_it_cannot_look_up() {
    if !require_root("review_s27_restore_stops_on_an_object_it_cannot_look_up") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let (store, m, from) = unified_guest_with_manifest(lab.path());
    let fanout = first_object_file(&store).parent().unwrap().to_path_buf();
    fs::set_permissions(&fanout, fs::Permissions::from_mode(0o000)).unwrap();
    let target = lab.path().join("r");
    let out = without_dac_override(Command::new(unifs_bin()).arg("--store").arg(&store))
        .args(["restore", "--manifest"])
        .arg(&m)
        .arg("--from")
        .arg(&from)
        .arg(&target)
        .output()
        .unwrap();
    fs::set_permissions(&fanout, fs::Permissions::from_mode(0o755)).unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot tell whether object")
            && err.contains("Permission denied")
            && !err.contains("not in the store"),
        "{err}"
    );
    assert!(!target.exists(), "written though refused");
}

/// At an open-file limit too low for anything, the error said a bare "Too
/// many open files"; it now names the limit and its value.
#[test]
fn review_s27_too_many_open_files_names_the_limit() {
    if !require_root("review_s27_too_many_open_files_names_the_limit") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let (store, m, from) = unified_guest_with_manifest(lab.path());
    let target = lab.path().join("r");
    let out = at_fd_limit(
        6,
        &store,
        &[&"restore", &"--manifest", &m, &"--from", &from, &target],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Too many open files")
            && err.contains("the open-file limit, RLIMIT_NOFILE, is 6")
            && err.contains("ulimit -n"),
        "{err}"
    );
}

/// Unmounts its path when dropped (a test that fails leaves no mount).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if nix::mount::umount(&self.0).is_err() {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// How many guests the store's catalog lists.
fn guest_count(store: &Path) -> usize {
    let o = unifs(store, &[&"store", &"stats", &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["guests"].as_array().expect("guests").len()
}

/// The tester's steps: `unify /srv/g1`, then the same directory through a
/// bind mount of its parent (store named through it too, so that it is on
/// the guest's mount). The catalog got a second guest for one directory.
/// It is now refused, naming both paths and `store forget`.
#[test]
fn review_s27_one_guest_through_a_bind_mount_is_refused() {
    if !require_root("review_s27_one_guest_through_a_bind_mount_is_refused") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let srv = lab.path().join("srv");
    let g1 = srv.join("g1");
    file(&g1, "etc/a", b"same\n", 0o644);
    file(&g1, "usr/a", b"same\n", 0o644);
    unify_json(&srv.join("S"), &[&g1]);
    assert_eq!(guest_count(&srv.join("S")), 1);

    let bind = lab.path().join("bind");
    fs::create_dir(&bind).unwrap();
    let st = Command::new("mount")
        .arg("--bind")
        .arg(&srv)
        .arg(&bind)
        .status()
        .unwrap();
    assert!(st.success());
    let _bind = Unmount(bind.clone());
    let out = unifs(&bind.join("S"), &[&"unify", &"--json", &bind.join("g1")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("guest directory {}", bind.join("g1").display()))
            && err.contains(&format!("{} (the same device and inode", g1.display()))
            && err.contains(&format!("unifs store forget {}", g1.display())),
        "{err}"
    );
    assert_eq!(guest_count(&srv.join("S")), 1, "a second guest recorded");

    // A new one named twice in one run (a dry run does not ask for the
    // store's mount).
    let g3 = srv.join("g3");
    file(&g3, "etc/a", b"same\n", 0o644);
    let out = unifs(
        &srv.join("S"),
        &[&"unify", &"--dry-run", &g3, &bind.join("g3")],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("are one directory"), "{err}");
}

/// A guest moved (`mv g1 g2`) and unified under its new path: a second
/// guest, the old one's links and stats kept under a path that is gone.
/// Refused now, saying to forget the old path; after that it is unified.
#[test]
fn review_s27_a_moved_guest_is_refused_until_the_old_path_is_forgotten() {
    if !require_root("review_s27_a_moved_guest_is_refused_until_forgotten") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let store = lab.path().join("S");
    let (g1, g2) = (lab.path().join("g1"), lab.path().join("g2"));
    file(&g1, "etc/a", b"same\n", 0o644);
    file(&g1, "usr/a", b"same\n", 0o644);
    unify_json(&store, &[&g1]);
    fs::rename(&g1, &g2).unwrap();
    let out = unifs(&store, &[&"unify", &"--json", &g2]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("unifs store forget {}", g1.display())),
        "{err}"
    );
    assert_eq!(guest_count(&store), 1);
    let o = unifs(&store, &[&"store", &"forget", &g1]);
    assert!(o.status.success(), "{}", stderr(&o));
    unify_json(&store, &[&g2]);
    assert_eq!(guest_count(&store), 1);

    // A new directory at the old path is another guest: not refused.
    file(&g1, "etc/b", b"other\n", 0o644);
    unify_json(&store, &[&g1]);
    assert_eq!(guest_count(&store), 2);
}
