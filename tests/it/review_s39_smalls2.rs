//! Review s39 (smalls2): leads from the last note. The store's cache files
//! torn as a power cut can leave them (renamed into place unsynced); the
//! FUSE abort hint for a process SIGKILL cannot end; the O_TRUNC way into
//! the log line of a break under an open reader.

use crate::tree::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Two guests sharing a few files in two directories, each with a
/// private one in `etc/` (same size and mtime, other content).
fn two_guests(dir: &Path) -> (PathBuf, PathBuf) {
    let (a, b) = (dir.join("g0"), dir.join("g1"));
    for (i, g) in [&a, &b].into_iter().enumerate() {
        for n in 0..3u64 {
            file(g, &format!("usr/lib/lib{n}.so"), &bytes(n, 5000), 0o644);
            file(g, &format!("usr/bin/tool{n}"), &bytes(10 + n, 4000), 0o755);
        }
        file_at(
            g,
            "etc/own.conf",
            &bytes(100 + i as u64, 3000),
            0o644,
            1_600_000_000,
        );
    }
    (a, b)
}

/// `STORE/cache`'s files (each guest's directory listings, and the record
/// of the catalog file as the last checked writer left it) are renamed into
/// place without an fsync: after a power cut a name may hold an empty, torn
/// or foreign file. Such a file is not trusted: every directory of its guest
/// is read again, the catalog is checked again, a file changed meanwhile is
/// still seen and linked, nothing else is; each is said at debug level (-vv),
/// naming the file. The next run keeps good files again.
#[test]
fn s39_torn_cache_files_are_not_trusted_and_are_said_so_at_debug_level() {
    if !crate::common::require_root("s39_torn_cache_files_are_not_trusted") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_guests(dir.path());
    let store = dir.path().join("store");
    let first = unify_json(&store, &[&a, &b]);
    assert_eq!(first["files_linked"], 6, "{first}");
    let again = unify_json(&store, &[&a, &b]);
    assert_eq!(again["dirs_read"], 0, "the listings stood: {again}");
    let dirs = again["dirs_from_cache"].as_u64().unwrap();

    let cache = store.join("cache");
    let mut listings = files_named_from(&cache, "listings-");
    listings.sort();
    assert_eq!(listings.len(), 2, "{listings:?}");
    // One cut short (a partial write), one of its length but garbage.
    let data = fs::read(&listings[0]).unwrap();
    fs::write(&listings[0], &data[..data.len() / 2]).unwrap();
    let len = fs::metadata(&listings[1]).unwrap().len() as usize;
    fs::write(&listings[1], bytes(77, len)).unwrap();
    // Empty, as a rename that reached the disk before its data leaves it.
    let checked = cache.join("catalog-checked");
    assert!(checked.exists());
    fs::write(&checked, b"").unwrap();

    // Meanwhile b's own file became a's, in place: same inode, size, mtime.
    let own = |g: &Path| g.join("etc/own.conf");
    fs::write(own(&b), fs::read(own(&a)).unwrap()).unwrap();
    set_mtime(&own(&b), 1_600_000_000);
    let before_a = snapshot(&a);

    let out = unifs(&store, &[&"-vv", &"unify", &"--json", &a, &b]);
    let torn = unify_summary(&out);
    let err = stderr(&out);
    assert_eq!(torn["dirs_from_cache"], 0, "{torn}");
    assert_eq!(torn["dirs_read"], dirs, "every directory read: {torn}");
    assert_eq!(torn["files_linked"], 1, "b's changed file only: {torn}");
    assert_eq!(torn["files_hashed"], 1, "{torn}");
    assert_eq!(ino(&own(&a)), ino(&own(&b)));
    assert_ne!(ino(&a.join("usr/lib/lib0.so")), ino(&own(&b)));
    assert_invisible(&before_a, &snapshot(&a), "guest a after the run");
    for l in &listings {
        let line = err
            .lines()
            .find(|line| line.contains(&*l.to_string_lossy()) && line.contains("not used"));
        assert!(
            line.is_some_and(|line| line.contains("DEBUG")),
            "says {} was not used: {err}",
            l.display()
        );
    }
    assert!(
        err.lines().any(|l| l.contains("DEBUG")
            && l.contains(&*checked.to_string_lossy())
            && l.contains("checking it")),
        "says the record was not trusted: {err}"
    );
    assert_verify_clean(&store);

    // Written again whole: the next run takes them.
    let out = unifs(&store, &[&"-vv", &"unify", &"--json", &a, &b]);
    let after = unify_summary(&out);
    assert_eq!(after["dirs_read"], 0, "{after}");
    assert_eq!(after["files_linked"], 0, "{after}");
    assert!(
        !stderr(&out).contains("not used") && !stderr(&out).contains("checking it"),
        "{}",
        stderr(&out)
    );
}

/// The keeper's and the sweep's word on a process SIGKILL cannot end
/// because it waits in a FUSE request said to abort "its connection
/// (`echo 1 > /sys/fs/fuse/connections/N/abort`)", N left to the operator,
/// who would stat the hung mount to learn it (and hang). N, the minor of
/// the mount's device, is now worked out from the process's mountinfo and
/// the path given whole: it exists and its `waiting` counts the request.
#[test]
fn s39_a_process_stuck_on_a_fuse_mount_is_given_its_connections_abort_path() {
    use crate::guest::harness::{can_run, cgroup_hierarchies, ok, stderr, TestRoot};
    use crate::guest::review_s11_life::{gone, mount_daemon, Continue};
    use crate::guest::review_s22_stall::{sigkilled_in_request, unifs, Held, Mounts};
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;
    let test = "s39_a_process_stuck_on_a_fuse_mount_is_given_its_connections_abort_path";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    // Makes `unifs/` in every hierarchy.
    ok(&t.sh(&["--root-mount", "bind"], "true"));
    let (guest, mp) = (t.root(), t.dir.path().join("mp"));
    fs::create_dir(&mp).unwrap();
    let mut mounts = Mounts(Vec::new());
    ok(&unifs(&["mount"], &[&guest, &mp]));
    let daemon = mount_daemon(&mp);
    mounts.0.push((mp.clone(), daemon));
    // `stat -c %d MOUNTPOINT`'s minor, while the daemon answers.
    let conn = libc::minor(fs::metadata(&mp).unwrap().dev());
    let abort = format!("/sys/fs/fuse/connections/{conn}/abort");

    // In the groups of a `unifs run` that is gone, as a killed run's
    // guest process would be.
    let mut user = Command::new("/bin/busybox");
    user.args(["sh", "-c", "read x; stat -f \"$0\""]).arg(&mp);
    // Declared so that a failure lets the daemon go on (`_cont`) before
    // it waits for `user`, and `user` end before its groups go.
    let mut groups = Groups(Vec::new());
    let mut user = Held::spawn(user);
    let _cont = Continue(daemon);
    groups.hold(&cgroup_hierarchies(), user.pid());
    let Some(waiting) = sigkilled_in_request(test, daemon, &mut user) else {
        return;
    };

    // The next run sweeps the dead run's groups and warns of it, each
    // time: first as fusectl is here (not mounted on some hosts: then it
    // says to mount it), then with it mounted.
    let conn_dir = Path::new(&abort).parent().unwrap();
    let warning = || {
        let o = t.sh(&["--root-mount", "bind"], "true");
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        let line = err.lines().find(|l| {
            l.contains(&format!("process {waiting} (")) && l.contains("survived SIGKILL")
        });
        let line = line.unwrap_or_else(|| panic!("no warning about {waiting}: {err}"));
        assert!(
            line.contains(&format!(
                "`echo 1 > {abort}` for the FUSE mount at {}",
                mp.display()
            )),
            "names the connection's abort file: {line}"
        );
        line.to_string()
    };
    let mount_it = "`mount -t fusectl fusectl /sys/fs/fuse/connections`";
    let _fusectl = if conn_dir.is_dir() {
        None
    } else {
        let line = warning();
        assert!(line.contains(mount_it), "{line}");
        Some(Fusectl::mount())
    };
    let line = warning();
    assert!(!line.contains(mount_it), "{line}");
    assert!(conn_dir.is_dir(), "{} is no connection", conn_dir.display());
    let waits = fs::read_to_string(conn_dir.join("waiting")).unwrap();
    assert!(waits.trim().parse::<u64>().unwrap() > 0, "waiting: {waits}");

    kill(Pid::from_raw(daemon), Signal::SIGCONT).unwrap();
    assert!(gone(waiting as i64), "let go, it ends");
    drop(user);
    ok(&unifs(&["umount"], &[&mp]));
    assert!(gone(daemon as i64));
    mounts.0.clear();
}

/// fusectl mounted at /sys/fs/fuse/connections by a test (it was not);
/// unmounted on drop.
struct Fusectl;

impl Fusectl {
    fn mount() -> Fusectl {
        let o = std::process::Command::new("mount")
            .args(["-t", "fusectl", "fusectl", "/sys/fs/fuse/connections"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Fusectl
    }
}

impl Drop for Fusectl {
    fn drop(&mut self) {
        let _ = nix::mount::umount2("/sys/fs/fuse/connections", nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The groups `unifs/run-DEAD-s39` of a `unifs run` (pid DEAD) that is
/// gone, in every hierarchy that has `unifs/`, holding `pid`. Dropping
/// removes them (once what was in them has ended).
struct Groups(Vec<PathBuf>);

impl Groups {
    fn hold(&mut self, hierarchies: &[PathBuf], pid: i32) {
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        for h in hierarchies.iter().filter(|h| h.join("unifs").is_dir()) {
            let group = h.join(format!("unifs/run-{}-s39", gone.id()));
            fs::create_dir(&group).unwrap();
            self.0.push(group.clone());
            fs::write(group.join("cgroup.procs"), pid.to_string()).unwrap();
        }
    }
}

impl Drop for Groups {
    fn drop(&mut self) {
        for g in &self.0 {
            let _ =
                crate::review_s31_doubts::within_60s(|| !g.exists() || fs::remove_dir(g).is_ok());
        }
    }
}

/// A write open with O_TRUNC (O_WRONLY, no read) of a shared file that
/// another process holds open for reading splits the path off the
/// reader's node before it empties the path's copy: the reader keeps the
/// old file and its content, and the daemon says so once at info, with
/// the path, as for a write open without O_TRUNC (review_s38_smalls).
#[test]
fn s39_an_o_trunc_open_under_an_open_reader_is_logged_with_its_path() {
    use crate::fs::harness::{wait_until, World};
    use std::io::Read;
    if !crate::common::require_root("s39_an_o_trunc_open_under_an_open_reader_is_logged") {
        return;
    }
    let w = World::new();
    let (g, h) = (w.dir("g"), w.dir("h"));
    for d in [&g, &h] {
        fs::create_dir(d.join("sub")).unwrap();
    }
    let paths = [g.join("sub/held"), h.join("sub/held")];
    w.shared(b"held\n", &paths);
    let m = w.mount(&g, "m", &[]);
    let mut reader = fs::File::open(m.path("sub/held")).unwrap();
    let truncated = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path("sub/held"))
        .unwrap();
    drop(truncated);
    let said = "a write open gave this shared file a private copy while other processes held it";
    let lines = || -> Vec<String> {
        let log = fs::read_to_string(&m.log).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(said))
            .map(str::to_string)
            .collect()
    };
    wait_until(Duration::from_secs(30), || !lines().is_empty());
    let mut old = String::new();
    reader.read_to_string(&mut old).unwrap();
    drop(reader);
    assert_eq!(old, "held\n", "the reader keeps the old file");
    assert_eq!(fs::metadata(m.path("sub/held")).unwrap().len(), 0);
    assert_eq!(fs::read(h.join("sub/held")).unwrap(), b"held\n");
    let lines = lines();
    let log = fs::read_to_string(&m.log).unwrap_or_default();
    assert_eq!(lines.len(), 1, "{lines:?}\n{log}");
    assert!(lines[0].contains("INFO"), "{}", lines[0]);
    assert!(lines[0].contains("/sub/held: "), "{}", lines[0]);
}
