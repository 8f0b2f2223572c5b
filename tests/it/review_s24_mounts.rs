//! Review s24 (mounts): a guest unified into a store that has moved, its
//! markers lost, was mounted without a word when no store was at --store;
//! a daemon of a build that takes no flock (before 45eff4d) was not seen,
//! so a second mount of its guest was made, and `guest status` said the
//! guest's root was moved; a guest started by a build without the leaf
//! cgroup (before e600671) could not be exec'ed, and `guest ps` listed none
//! of its processes; what `store verify` says after a second rsync pass.

use crate::common::{require_root, unifs_bin};
use crate::fs::harness::{is_mounted, Mount, UnmountAt, World, MARKER};
use crate::guest::harness::{can_run, run_bounded, stdout, TestRoot};
use crate::tree::{file, set_mtime, stderr, unifs, unify_json};
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// `unifs --store STORE ARGS…` with `envs`, killed after 30 s.
fn unifs_env(store: &Path, envs: &[(&str, &str)], args: &[&dyn AsRef<OsStr>]) -> Output {
    let mut c = Command::new(unifs_bin());
    c.arg("--store").arg(store);
    for a in args {
        c.arg(a.as_ref());
    }
    c.envs(envs.iter().copied());
    run_bounded(c, Duration::from_secs(30))
}

/// Store and guests moved with `rsync -aH` (no -X: every marker lost), and
/// the guest mounted with the store's old path (a stale fstab line or
/// UNIFS_STORE): nothing is there, and the mount went ahead "without a
/// store"; guest a's write went into the file guest b and the store link.
#[test]
fn review_s24_a_guest_unified_into_a_store_now_gone_is_not_mounted_without_it() {
    if !require_root("review_s24_a_guest_unified_into_a_store_now_gone_is_not_mounted_without_it") {
        return;
    }
    let w = World::new();
    let old = w.dir("old");
    let (a, b) = (old.join("a"), old.join("b"));
    // Shared files in several directories, as in any unified root.
    for g in [&a, &b] {
        for p in [
            "usr/lib/libx.so",
            "usr/bin/x",
            "etc/x.conf",
            "usr/share/x/x.txt",
        ] {
            let f = file(g, p, format!("shared {p}\n").as_bytes(), 0o644);
            set_mtime(&f, 1_700_000_000);
        }
    }
    unify_json(&old.join("store"), &[&a, &b]);
    let new = w.tmp.path().join("new");
    let copied = Command::new("cp")
        .args(["-a", "--no-preserve=xattr"])
        .arg(&old)
        .arg(&new)
        .status()
        .unwrap();
    assert!(copied.success());
    fs::remove_dir_all(&old).unwrap();
    let (a, b, lib) = (new.join("a"), new.join("b"), "usr/lib/libx.so");
    let marker = marker_of(&a.join(lib));
    assert_eq!(marker, None, "the copy lost the marker");

    let mp = fs::canonicalize(w.dir("m")).unwrap();
    let _guard = UnmountAt(&mp);
    let gone = old.join("store");
    let out = unifs_env(&gone, &[], &[&"mount", &a, &mp]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!is_mounted(&mp));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("linked from outside"), "{err}");
    assert!(
        err.contains(&format!("no store is at {}", gone.display())),
        "{err}"
    );
    assert!(err.contains("--store"), "{err}");
    assert!(err.contains("e.g. "), "{err}");
    assert_eq!(fs::read(b.join(lib)).unwrap(), b"shared usr/lib/libx.so\n");
}

/// A plain guest that was never unified, with hardlinks of its own (in one
/// directory, as packages ship them, and a few between two directories, as
/// git's own install makes them), still mounts without a store.
#[test]
fn review_s24_a_never_unified_guest_with_its_own_hardlinks_mounts_without_a_store() {
    if !require_root(
        "review_s24_a_never_unified_guest_with_its_own_hardlinks_mounts_without_a_store",
    ) {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let perl = file(&g, "usr/bin/perl", b"#!perl\n", 0o755);
    fs::hard_link(&perl, g.join("usr/bin/perl5.36")).unwrap();
    // git built from source: its programs linked between directories.
    let git = file(&g, "usr/local/bin/git", b"git\n", 0o755);
    let core = g.join("usr/local/libexec/git-core");
    fs::create_dir_all(&core).unwrap();
    for n in ["git", "git-add", "git-commit", "git-upload-pack"] {
        fs::hard_link(&git, core.join(n)).unwrap();
    }
    fs::hard_link(&git, g.join("usr/local/bin/git-upload-pack")).unwrap();
    file(&g, "etc/hostname", b"plain\n", 0o644);
    let none = w.tmp.path().join("no-store");
    let m = Mount::start(&none, &g, &w.dir("m"), &[]);
    fs::write(m.path("usr/bin/perl"), b"#!perl 2\n").unwrap();
    // Still one file under both names, as on any filesystem.
    assert_eq!(fs::read(g.join("usr/bin/perl5.36")).unwrap(), b"#!perl 2\n");
}

fn marker_of(p: &Path) -> Option<Vec<u8>> {
    unifs::sys::xattr::get_path(p, OsStr::new(MARKER)).unwrap()
}

/// A guest served by a daemon that takes no flock (as builds before
/// 45eff4d, still running after an upgrade): `unifs mount` of it (or of a
/// directory in it) elsewhere made a second mount, and at the same
/// mountpoint said it "serves another directory … moved or replaced".
#[test]
fn review_s24_a_guest_served_by_a_daemon_without_a_lock_is_not_mounted_again() {
    if !require_root("review_s24_a_guest_served_by_a_daemon_without_a_lock_is_not_mounted_again") {
        return;
    }
    let w = World::new();
    let g = fs::canonicalize(w.dir("g")).unwrap();
    fs::create_dir(g.join("sub")).unwrap();
    fs::write(g.join("file"), b"data\n").unwrap();
    let (m1, m2) = (
        fs::canonicalize(w.dir("m1")).unwrap(),
        fs::canonicalize(w.dir("m2")).unwrap(),
    );
    let _guards = (UnmountAt(&m2), UnmountAt(&m1));
    let old_daemon = [("UNIFS_TEST_NO_CLAIM", "1")];
    let out = unifs_env(&w.store, &old_daemon, &[&"mount", &g, &m1]);
    assert!(out.status.success(), "{}", stderr(&out));

    for guest in [g.clone(), g.join("sub")] {
        let out = unifs_env(&w.store, &[], &[&"mount", &guest, &m2]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", guest.display());
        assert!(
            err.contains("already served by another unifs mount"),
            "{err}"
        );
        assert!(err.contains("older unifs"), "{err}");
        assert!(!is_mounted(&m2));
    }
    // The same guest at the same place (`mount -a` again).
    let out = unifs_env(&w.store, &[], &[&"mount", &g, &m1]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("nothing to do"), "{err}");
    assert_eq!(fs::read(m1.join("file")).unwrap(), b"data\n");
}

/// Stops the named guest on drop.
struct StopGuest<'a, F: Fn(&[&str]) -> Output>(&'a F, &'a str);

impl<F: Fn(&[&str]) -> Output> Drop for StopGuest<'_, F> {
    fn drop(&mut self) {
        let _ = (self.0)(&["stop", "--timeout", "0", self.1]);
    }
}

/// A named guest: its config in `t`, `unifs guest ARGS` run with `envs`.
fn named_guest(t: &TestRoot, suffix: &str) -> (String, PathBuf, PathBuf, PathBuf) {
    let config = t.dir.path().join("config");
    fs::create_dir(&config).unwrap();
    let name = format!("t{}-{suffix}", std::process::id());
    let toml = format!(
        "root = {:?}\nroot_mount = \"overlay\"\ninit = [\"/bin/sleep\", \"1000\"]\n\
         init_reaper = true\n",
        t.root()
    );
    fs::write(config.join(format!("{name}.toml")), toml).unwrap();
    let (run, store) = (t.dir.path().join("run"), t.dir.path().join("no-store"));
    (name, config, run, store)
}

fn guest_cmd(
    config: &Path,
    run: &Path,
    store: &Path,
    envs: &[(&str, &str)],
    args: &[&str],
) -> Output {
    let mut c = Command::new(unifs_bin());
    c.arg("--store").arg(store).arg("guest").args(args);
    c.env("UNIFS_CONFIG_DIR", config).env("UNIFS_RUN_DIR", run);
    c.envs(envs.iter().copied());
    run_bounded(c, Duration::from_secs(30))
}

/// A guest started by a build whose daemon takes no flock: `guest status`
/// said its root was "moved or replaced since" and advised a restart.
#[test]
fn review_s24_status_of_a_guest_whose_daemon_takes_no_lock_says_no_move() {
    if !can_run("review_s24_status_of_a_guest_whose_daemon_takes_no_lock_says_no_move") {
        return;
    }
    let t = TestRoot::new();
    let (name, config, run, store) = named_guest(&t, "s24lock");
    let guest = |args: &[&str]| guest_cmd(&config, &run, &store, &[], args);
    let _unmount = UnmountAt(&run.join(&name).join("root"));
    let _stop = StopGuest(&guest, &name);
    let out = guest_cmd(
        &config,
        &run,
        &store,
        &[("UNIFS_TEST_NO_CLAIM", "1")],
        &["start", &name],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let out = guest(&["status", &name]);
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!text.contains("moved or replaced"), "{text}");
    assert!(!err.contains("moved or replaced"), "{err}");
    let out = guest(&["status", "--json", &name]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["root_moved"], false, "{st}");
    assert_eq!(st["running"], true, "{st}");
    // And no second mount of its root beside it.
    let m = fs::canonicalize(t.dir.path()).unwrap().join("m");
    fs::create_dir(&m).unwrap();
    let _m = UnmountAt(&m);
    let out = unifs_env(&store, &[], &[&"mount", &t.root(), &m]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!is_mounted(&m));
}

/// Lays a running guest's groups out as builds before e600671 (and
/// 2ce5951) did: `unifs/NAME`, its processes in the group itself, no
/// `guest` leaf, no `mount` leaf (the daemon in the caller's group); the
/// runtime record names those groups.
fn lay_out_as_old_builds(state_file: &Path, name: &str) -> Vec<PathBuf> {
    let mut st: serde_json::Value = serde_json::from_slice(&fs::read(state_file).unwrap()).unwrap();
    let groups: Vec<PathBuf> = st["cgroup"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| PathBuf::from(g.as_str().unwrap()))
        .collect();
    assert!(!groups.is_empty(), "{st}");
    let mut old = Vec::new();
    for g in &groups {
        let to = g.parent().unwrap().join(name);
        fs::create_dir(&to).unwrap();
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = fs::read_to_string(g.join(f)) {
                fs::write(to.join(f), v.trim()).unwrap();
            }
        }
        let leaf = g.join("guest");
        for pid in fs::read_to_string(leaf.join("cgroup.procs"))
            .unwrap()
            .lines()
        {
            fs::write(to.join("cgroup.procs"), pid).unwrap();
        }
        fs::remove_dir(&leaf).unwrap();
        // Their overlay daemon stayed in the caller's group (the
        // hierarchy's root here), with no `mount` leaf.
        let daemon = g.join("mount");
        if daemon.is_dir() {
            let root = g.parent().unwrap().parent().unwrap();
            for pid in fs::read_to_string(daemon.join("cgroup.procs"))
                .unwrap()
                .lines()
            {
                fs::write(root.join("cgroup.procs"), pid).unwrap();
            }
            fs::remove_dir(&daemon).unwrap();
        }
        fs::remove_dir(g).unwrap();
        old.push(to);
    }
    st["cgroup"]["groups"] = serde_json::json!(old);
    fs::write(state_file, serde_json::to_vec(&st).unwrap()).unwrap();
    old
}

/// Removes cgroups on drop (after the guest's stop, which kills their
/// processes and removes them itself).
struct RemoveGroups(Vec<PathBuf>);

impl Drop for RemoveGroups {
    fn drop(&mut self) {
        for g in &self.0 {
            for _ in 0..200 {
                if fs::remove_dir(g).is_ok() || !g.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// `guest exec` of a guest an older build started failed: "opening cgroup
/// …/guest/cgroup.procs: No such file or directory"; `guest ps` printed its
/// header only, while `guest list` counted its processes.
#[test]
fn review_s24_exec_and_ps_work_on_a_guest_started_without_the_leaf_cgroup() {
    if !can_run("review_s24_exec_and_ps_work_on_a_guest_started_without_the_leaf_cgroup") {
        return;
    }
    let t = TestRoot::new();
    fs::write(t.root().join("etc/motd"), b"hello from the guest\n").unwrap();
    let (name, config, run, store) = named_guest(&t, "s24cg");
    let guest = |args: &[&str]| guest_cmd(&config, &run, &store, &[], args);
    let _unmount = UnmountAt(&run.join(&name).join("root"));
    let out = guest(&["start", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let old = lay_out_as_old_builds(&run.join(&name).join("state.json"), &name);
    let _groups = RemoveGroups(old);
    let _stop = StopGuest(&guest, &name);

    let out = guest(&["exec", &name, "--", "/bin/cat", "/etc/motd"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello from the guest\n");

    let out = guest(&["ps", &name]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(text.lines().count() >= 2, "{text}");
    assert!(text.contains("sleep 1000"), "{text}");

    let out = guest(&["stop", "--timeout", "0", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A second `rsync -aHAX` pass over a copy, after a guest changed a shared
/// file's mode and xattrs through its mount, applies them in place to the
/// destination's object (and takes its marker off): `store verify` on the
/// destination names each such object, with the guests' paths linking it.
#[test]
fn review_s24_verify_names_objects_a_second_copy_pass_changed_in_place() {
    if !require_root("review_s24_verify_names_objects_a_second_copy_pass_changed_in_place") {
        return;
    }
    let w = World::new();
    let top = w.dir("top");
    let gs = [top.join("a"), top.join("b")];
    for g in &gs {
        for (i, f) in ["usr/lib/liba.so", "usr/lib/libb.so"].iter().enumerate() {
            let p = file(g, f, format!("library {i}\n").as_bytes(), 0o644);
            set_mtime(&p, 1_700_000_000);
        }
    }
    let store = top.join("store");
    unify_json(&store, &[&gs[0], &gs[1]]);
    // What the second pass leaves on the destination's objects.
    let (liba, libb) = (gs[1].join("usr/lib/liba.so"), gs[1].join("usr/lib/libb.so"));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&liba, fs::Permissions::from_mode(0o600)).unwrap();
    crate::fs::harness::set_xattr(&libb, "user.note", b"a");
    let c = std::ffi::CString::new(libb.as_os_str().as_encoded_bytes()).unwrap();
    let name = std::ffi::CString::new(MARKER).unwrap();
    // SAFETY: both are NUL-terminated strings that outlive the call.
    assert_eq!(unsafe { libc::removexattr(c.as_ptr(), name.as_ptr()) }, 0);

    let out = unifs(&store, &[&"store", &"verify"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("mode 0644 → 0600"), "{text}");
    // The marker's loss is not named while the xattrs differ too: a
    // verify after the xattrs are put back does (and `store gc` writes it).
    assert!(text.contains(": xattrs;"), "{text}");
    assert!(text.contains(&liba.display().to_string()), "{text}");
    assert!(text.contains(&libb.display().to_string()), "{text}");
    assert!(text.contains("2 problems"), "{text}");
}
