//! `unifs mount` (review s20): a mountpoint, or a guest directory, with a
//! mount over it whose daemon is stopped.

use super::harness::*;
use crate::common::{require_root, unifs_bin};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `unifs --store STORE ARGS`, killed after `limit`: `None` if it took that
/// long.
fn unifs_within(
    limit: Duration,
    store: &Path,
    args: &[&dyn AsRef<std::ffi::OsStr>],
) -> Option<Output> {
    let mut c = Command::new(unifs_bin());
    c.arg("--store").arg(store);
    for a in args {
        c.arg(a.as_ref());
    }
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run unifs");
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Stops a daemon, and lets it go on again on drop (declare it after the
/// daemon's [`Mount`], so that it is dropped first).
struct Stopped(i32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        let pid = pid as i32;
        // SAFETY: signalling a child of this test that is still running.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        let stopped = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('T'))
            })
        };
        assert!(
            wait_until(Duration::from_secs(30), stopped),
            "pid {pid} stops"
        );
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above; SIGCONT to a running process does nothing.
        unsafe {
            libc::kill(self.0, libc::SIGCONT);
        }
    }
}

/// docs/mount.md promises "mountpoint X is in use by a mount whose daemon
/// does not answer (stopped?)", asked with statfs in a process of its own
/// given 2 s. `unifs mount` stat'ed the mountpoint before that, and waited
/// for good in the kernel for the stopped daemon's answer; so too for a
/// guest directory with a mount over it (`unifs mount G G`) whose daemon is
/// stopped. Both are now refused within a few seconds, and `unifs umount`
/// unmounts the stopped daemon's mount.
#[test]
fn review_s20_mount_over_a_stopped_daemons_mount_is_refused_in_time() {
    if !require_root("review_s20_mount_over_a_stopped_daemons_mount_is_refused_in_time") {
        return;
    }
    let w = World::new();
    let g1 = w.dir("g1");
    let g2 = w.dir("g2");
    let g3 = w.dir("g3");
    std::fs::write(g1.join("a"), b"a").unwrap();
    std::fs::write(g3.join("c"), b"c").unwrap();
    let m2 = w.dir("m2");
    let m = w.mount(&g1, "m", &[]);
    let over_itself = Mount::start(&w.store, &g3, &g3, &[]);
    let _stopped = Stopped::stop(m.pid());
    let _stopped_too = Stopped::stop(over_itself.pid());
    let limit = Duration::from_secs(30);

    for g in [&g1, &g2] {
        let out = unifs_within(limit, &w.store, &[&"mount", g, &m.dir]).unwrap_or_else(|| {
            panic!(
                "unifs mount {} over a stopped daemon's mount hangs",
                g.display()
            )
        });
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        let want = format!(
            "mountpoint {} is in use by a mount whose daemon does not answer (stopped?); \
             unmount it first",
            m.dir.display()
        );
        assert!(err.contains(&want), "{err}");
    }

    let out = unifs_within(limit, &w.store, &[&"mount", &g3, &m2])
        .expect("unifs mount of a guest under a stopped daemon's mount hangs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let want = format!(
        "guest directory {} has a mount over it whose daemon does not answer (stopped?); \
         unmount it first",
        g3.display()
    );
    assert!(err.contains(&want), "{err}");
    assert!(!is_mounted(&m2));

    let out = unifs_within(limit, &w.store, &[&"umount", &m.dir])
        .expect("unifs umount of a stopped daemon's mount hangs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!is_mounted(&m.dir));
}

/// A guest mounted over its own directory (`unifs mount G G`, which
/// docs/mount.md allows) and named again: `manifest`, `run --root` and
/// `mount` said "G is in a unifs mount … name the guest's backing directory
/// instead (G)", the very path named (manifest added a --store hint that
/// has nothing to do with it). They now say, as unify does, that G has a
/// unifs mount over it, and how to unmount it.
#[test]
fn review_s20_a_guest_mounted_over_itself_is_named_as_such() {
    if !require_root("review_s20_a_guest_mounted_over_itself_is_named_as_such") {
        return;
    }
    let w = World::new();
    let g1 = w.dir("g1");
    let g2 = w.dir("g2");
    for g in [&g1, &g2] {
        std::fs::create_dir(g.join("bin")).unwrap();
        std::fs::write(g.join("bin/tool"), b"the same tool\n").unwrap();
    }
    let store = w.tmp.path().join("unified");
    let out = unifs_within(
        Duration::from_secs(60),
        &store,
        &[&"unify", &"--no-progress", &g1, &g2],
    )
    .expect("unify ends");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m2 = w.dir("m2");
    let _over_itself = Mount::start(&store, &g1, &g1, &[]);
    let limit = Duration::from_secs(30);
    let want = format!(
        "{g} has a unifs mount over it, which shows the guest's copy-on-write view, not its \
         own files: unmount it (`unifs umount {g}`)",
        g = g1.display()
    );
    let cases: [Vec<&dyn AsRef<std::ffi::OsStr>>; 4] = [
        vec![&"manifest", &g1],
        vec![&"manifest", &"g1"],
        vec![&"run", &"--root", &g1, &"--", &"/bin/true"],
        vec![&"mount", &g1, &m2],
    ];
    for args in cases {
        let out = unifs_within(limit, &store, &args).expect("unifs ends");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&want), "{err}");
        assert!(!err.contains("instead"), "{err}");
        assert!(!err.contains("--store"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert!(!is_mounted(&m2));
}

/// `unifs mount --help` listed half of the `-o` options docs/mount.md
/// gives, and said the log goes nowhere by default (with -f it goes to
/// stderr); `vfs-mount --help` said "Usage: unifs mount". `-o norelatime`
/// was accepted (and ignored), where the docs say anything not listed is an
/// error: it and `strictatime` now are, and `relatime` is still taken.
#[test]
fn review_s20_mount_help_and_atime_options() {
    let w = World::new();
    let (g, m) = (w.dir("g"), w.dir("m"));
    let limit = Duration::from_secs(30);
    let out = unifs_within(limit, &w.store, &[&"mount", &"--help"]).expect("help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "ro/rw",
        "allow_other/noallow_other",
        "default_permissions (always on; nodefault_permissions is refused)",
        "passthrough/nopassthrough",
        "suid/nosuid",
        "exec/noexec",
        "atime/noatime",
        "dev/nodev",
        "default nodev",
        "threads=N",
        "relatime",
        "(default: nowhere; with -f, stderr)",
    ] {
        assert!(help.contains(want), "{want:?} in {help}");
    }

    let alias = w.tmp.path().join("vfs-mount");
    std::os::unix::fs::symlink(unifs_bin(), &alias).unwrap();
    let out = Command::new(&alias).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    assert!(
        help.contains("Usage: vfs-mount [OPTIONS] <GUEST_DIR> <MOUNTPOINT>"),
        "{help}"
    );
    assert!(help.contains("atime/noatime"), "{help}");

    for o in ["norelatime", "strictatime", "relatime,strictatime"] {
        let out = unifs_within(limit, &w.store, &[&"mount", &"-o", &o, &g, &m]).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("is not supported: access times are the backing filesystem's"),
            "{err}"
        );
    }
    // relatime passes (threads=0 is then what is refused, before any mount).
    let out = unifs_within(
        limit,
        &w.store,
        &[&"mount", &"-o", &"relatime,threads=0", &g, &m],
    )
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad value in -o threads=0"), "{err}");
    assert!(!is_mounted(&m));
}

/// A path *inside* a mount whose daemon is stopped (not its mount point):
/// every command that resolved it waited for good in the kernel — `mount`
/// (as guest or mountpoint), `umount`, `unify`, `run --root`, `manifest`,
/// `restore` and `guest start`. Each now refuses it within a few seconds,
/// naming the mount that does not answer (review s21).
#[test]
fn review_s21_a_path_inside_a_stopped_daemons_mount_is_refused_in_time() {
    if !require_root("review_s21_a_path_inside_a_stopped_daemons_mount_is_refused_in_time") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    std::fs::create_dir(g.join("sub")).unwrap();
    std::fs::write(g.join("sub/f"), b"f").unwrap();
    let elsewhere = w.dir("elsewhere");
    let cfg = w.dir("cfg");
    let run = w.dir("run");
    let m = w.mount(&g, "m", &[]);
    // Never looked up through the mount: the kernel must ask the daemon.
    let sub = m.dir.join("sub");
    std::fs::write(
        cfg.join("gs.toml"),
        format!("root = {:?}\ninit = [\"/bin/sh\"]\n", sub.to_str().unwrap()),
    )
    .unwrap();
    let _stopped = Stopped::stop(m.pid());
    let new = sub.join("new");
    let dirs: [&dyn AsRef<std::ffi::OsStr>; 4] = [&"--config-dir", &cfg, &"--run-dir", &run];
    let cases: Vec<Vec<&dyn AsRef<std::ffi::OsStr>>> = vec![
        vec![&"mount", &sub, &elsewhere],
        vec![&"mount", &elsewhere, &sub],
        vec![&"umount", &sub],
        vec![&"unify", &"--no-progress", &sub],
        vec![&"run", &"--root", &sub, &"--", &"/bin/true"],
        vec![&"manifest", &sub],
        vec![
            &"restore",
            &"--manifest",
            &"/nonexistent",
            &"--from",
            &elsewhere,
            &new,
        ],
        [&"guest" as &dyn AsRef<std::ffi::OsStr>, &"start"]
            .into_iter()
            .chain(dirs)
            .chain([&"gs" as &dyn AsRef<std::ffi::OsStr>])
            .collect(),
    ];
    // Its daemon found stopped, named with what lets it go on (review s36).
    let want = format!(
        "it is in the FUSE mount at {}, whose daemon (pid {pid}) does not answer: it is \
         stopped (SIGSTOP, or a debugger holds it); `kill -CONT {pid}` lets it go on",
        m.dir.display(),
        pid = m.pid()
    );
    for args in cases {
        let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        let out = unifs_within(Duration::from_secs(30), &w.store, &args)
            .unwrap_or_else(|| panic!("unifs {shown:?} hangs"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "unifs {shown:?}: {err}");
        assert!(err.contains(&want), "unifs {shown:?}: {err}");
    }
    assert!(!is_mounted(&elsewhere));
}

/// A live daemon busy past 2 s (one FUSE thread in a long break) was taken
/// for a stopped one: `unifs mount` of another guest at a mountpoint inside
/// its mount was refused, "does not answer (stopped?)". A unifs daemon
/// found running (not stopped) is now given longer (review s21).
#[test]
fn review_s21_a_path_inside_a_busy_daemons_mount_is_waited_for() {
    if !require_root("review_s21_a_path_inside_a_busy_daemons_mount_is_waited_for") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let other = w.dir("other");
    std::fs::create_dir_all(g.join("sub/mp")).unwrap();
    std::fs::write(other.join("f"), b"f").unwrap();
    w.shared(b"shared\n", &[g.join("a"), g.join("b")]);
    let log = std::fs::File::create(w.tmp.path().join("m.log")).unwrap();
    let env = ["env", "UNIFS_TEST_BREAK_PAUSE_MS=4000"];
    let m = Mount::start_under(&env, &w.store, &g, &w.dir("m"), &["threads=1"], log);
    let a = m.path("a");
    let breaker = std::thread::spawn(move || {
        std::fs::set_permissions(&a, std::os::unix::fs::PermissionsExt::from_mode(0o640))
    });
    // Its one FUSE thread in the break's pause.
    crate::common::wait_for_pause(m.pid(), 4000);
    let mp = m.path("sub/mp");
    let _inner = UnmountAt(&mp);
    let out = unifs_within(Duration::from_secs(40), &w.store, &[&"mount", &other, &mp])
        .expect("unifs mount inside a busy daemon's mount hangs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    breaker
        .join()
        .unwrap()
        .expect("chmod (a break) through the mount");
    assert_eq!(std::fs::read(mp.join("f")).unwrap(), b"f");
}
