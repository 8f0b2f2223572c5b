//! Review s27 (host process limits and attributes): unifs processes under
//! a low RLIMIT_FSIZE or RLIMIT_AS, their dumpable flag, a guest started
//! over a dead overlay daemon, and the rlimits `guest exec` applies.
//!
//! Real mounts, real guests; guards unmount and stop what a test started,
//! every wait bounded.

use crate::common::{require_root, unifs_bin};
use crate::fs::harness::{is_mounted, wait_until, Mount, UnmountAt, World};
use crate::guest::harness::{can_run, ok, run_bounded, stderr, stdout};
use crate::guest::review_s11_life::{Guest, SLEEP};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `unifs --store STORE ARGS` run by `prlimit LIMIT`, bounded.
fn under_limit(limit: &str, store: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("prlimit");
    cmd.arg(limit).arg(unifs_bin()).arg("--store").arg(store);
    cmd.args(args);
    run_bounded(cmd, Duration::from_secs(60))
}

#[test]
fn s27_a_unifs_process_is_not_dumpable() {
    if !require_root("s27_a_unifs_process_is_not_dumpable") {
        return;
    }
    // A unifs process of an ordinary user (a dry run blocked on its full
    // pipe: its JSON summary names every guest; a manifest, which this
    // used before review s33, now needs root): another process of that
    // user could read its fds (a mount daemon's reach into host trees and
    // the store) through /proc.
    let t = tempfile::Builder::new()
        .prefix("unifs-s27-")
        .tempdir()
        .unwrap();
    let store = t.path().join("store");
    let mut guests = Vec::new();
    // Well over a pipe's 64 KiB of names.
    for g in 0..1500 {
        let dir = t.path().join(format!(
            "guest-whose-long-name-makes-the-dry-runs-json-summary-fill-its-pipe-{g}"
        ));
        std::fs::create_dir_all(&dir).unwrap();
        guests.push(dir);
    }
    ok(&Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(t.path())
        .output()
        .unwrap());
    let mut child = crate::guest::harness::KillOnDrop(Some(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(unifs_bin())
            .arg("--store")
            .arg(&store)
            .args(["unify", "--dry-run", "--json"])
            .args(&guests)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let pid = child.0.as_ref().unwrap().id();
    // setpriv execs unifs in the same process.
    let running = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "unifs")
            && std::fs::read_to_string(format!("/proc/{pid}/wchan"))
                .is_ok_and(|w| w.contains("pipe"))
    });
    assert!(running, "the dry run did not block on its pipe");
    let fd_dir = std::fs::metadata(format!("/proc/{pid}/fd")).unwrap();
    let peek = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["readlink", &format!("/proc/{pid}/cwd")])
        .output()
        .unwrap();
    drop(child.0.take().map(|mut c| {
        let _ = c.kill();
        c.wait()
    }));
    assert_eq!(
        fd_dir.uid(),
        0,
        "/proc/{pid}/fd belongs to its user: dumpable"
    );
    assert!(
        !peek.status.success(),
        "another process of the same user read its cwd: {}",
        stdout(&peek)
    );
}

#[test]
fn s27_a_write_past_the_daemons_file_size_limit_fails_with_efbig() {
    if !require_root("s27_a_write_past_the_daemons_file_size_limit_fails_with_efbig") {
        return;
    }
    // `ulimit -f` in the shell that mounted: the daemon's write past it
    // was killed by SIGXFSZ, leaving the guest a dead mount (ENOTCONN).
    let w = World::new();
    let g = w.dir("g");
    std::fs::write(g.join("small"), b"small").unwrap();
    let mp = w.dir("mp");
    let log = mp.with_extension("log");
    let m = Mount::start_under(
        &["prlimit", "--fsize=65536:65536"],
        &w.store,
        &g,
        &mp,
        &["nopassthrough"],
        std::fs::File::create(&log).unwrap(),
    );
    let mut f = std::fs::File::create(m.path("big")).unwrap();
    let wrote = f.write_all(&vec![7u8; 200_000]).and_then(|()| f.sync_all());
    drop(f);
    let err = wrote.expect_err("a write past 64 KiB went through");
    let alive = std::fs::read(m.path("small"));
    assert_eq!(err.raw_os_error(), Some(libc::EFBIG), "{err}");
    assert_eq!(alive.unwrap(), b"small", "the mount died");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("RLIMIT_FSIZE"),
        "the log does not name the limit: {said}"
    );
}

#[test]
fn s27_unify_past_its_file_size_limit_names_the_limit() {
    if !require_root("s27_unify_past_its_file_size_limit_names_the_limit") {
        return;
    }
    // A new object copy (the first full at its link maximum) past the
    // caller's `ulimit -f`: unify was killed by SIGXFSZ.
    let t = tempfile::Builder::new()
        .prefix("unifs-s27-")
        .tempdir()
        .unwrap();
    let store = t.path().join("store");
    let big = vec![b'x'; 300_000];
    let mut guests = Vec::new();
    for g in ["g1", "g2", "g3"] {
        let dir = t.path().join(g);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("big"), &big).unwrap();
        // Old enough to be taken as settled.
        crate::fs::harness::set_mtime(&dir.join("big"), 1_500_000_000);
        guests.push(dir.to_string_lossy().into_owned());
    }
    let mut args = vec!["unify", "--no-progress", "--link-max", "2"];
    args.extend(guests.iter().map(String::as_str));
    ok(&run_bounded(
        {
            let mut c = Command::new(unifs_bin());
            c.arg("--store").arg(&store).args(["store", "init"]);
            c
        },
        Duration::from_secs(30),
    ));
    let o = under_limit("--fsize=200000:200000", &store, &args);
    assert_eq!(o.status.signal(), None, "unify was killed: {o:?}");
    assert!(stderr(&o).contains("RLIMIT_FSIZE"), "{}", stderr(&o));
    for g in &guests {
        assert_eq!(std::fs::read(Path::new(g).join("big")).unwrap(), big);
    }
    // The catalog's own write past a lower limit: SQLite's "disk I/O
    // error" alone said nothing of it.
    let store2 = t.path().join("store2");
    ok(&run_bounded(
        {
            let mut c = Command::new(unifs_bin());
            c.arg("--store").arg(&store2).args(["store", "init"]);
            c
        },
        Duration::from_secs(30),
    ));
    let o = under_limit("--fsize=65536:65536", &store2, &args);
    assert_eq!(o.status.signal(), None, "unify was killed: {o:?}");
    assert!(stderr(&o).contains("RLIMIT_FSIZE"), "{}", stderr(&o));
}

#[test]
fn s27_unify_under_a_low_address_space_limit_names_it() {
    if !require_root("s27_unify_under_a_low_address_space_limit_names_it") {
        return;
    }
    // Its worker pool could not start: a panic ("a thread pool:
    // ThreadPoolBuildError …", exit 101).
    let t = tempfile::Builder::new()
        .prefix("unifs-s27-")
        .tempdir()
        .unwrap();
    let g = t.path().join("g");
    std::fs::create_dir(&g).unwrap();
    std::fs::write(g.join("f"), b"data").unwrap();
    let store = t.path().join("store");
    let o = under_limit(
        "--as=104857600",
        &store,
        &["unify", "--dry-run", "--no-progress", g.to_str().unwrap()],
    );
    let said = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    assert!(
        said.contains("RLIMIT_AS") && said.contains("104857600"),
        "{said}"
    );
}

#[test]
fn s27_mount_under_a_low_address_space_limit_is_refused_not_dead() {
    if !require_root("s27_mount_under_a_low_address_space_limit_is_refused_not_dead") {
        return;
    }
    // `ulimit -v` too low for the FUSE threads: `unifs mount` said ready
    // (exit 0), and its daemon died the moment after, leaving a dead
    // mount (ENOTCONN) behind.
    let w = World::new();
    let g = w.dir("g");
    std::fs::write(g.join("f"), b"data").unwrap();
    let nostore = w.tmp.path().join("no-store");
    for limit in [60u64 << 20, 100 << 20, 130 << 20, 150 << 20, 200 << 20] {
        let mp = w.dir(&format!("mp{}", limit >> 20));
        let _guard = UnmountAt(&mp);
        let o = under_limit(
            &format!("--as={limit}"),
            &nostore,
            &["mount", g.to_str().unwrap(), mp.to_str().unwrap()],
        );
        if o.status.success() {
            // Said ready: it answers, and still does a moment later.
            assert!(is_mounted(&mp), "{limit}: exit 0 and nothing mounted");
            std::thread::sleep(Duration::from_millis(300));
            let read = std::fs::read(mp.join("f"));
            assert_eq!(
                read.ok().as_deref(),
                Some(&b"data"[..]),
                "{limit}: a dead mount"
            );
        } else {
            let said = stderr(&o);
            assert!(said.contains("RLIMIT_AS"), "{limit}: {said}");
            assert!(
                !is_mounted(&mp),
                "{limit}: refused, but left mounted: {said}"
            );
        }
    }
}

#[test]
fn s27_guest_start_over_a_dead_overlay_daemon_says_so() {
    if !can_run("s27_guest_start_over_a_dead_overlay_daemon_says_so") {
        return;
    }
    // The overlay daemon ended between the mount and the launch: start
    // said "… not a directory" of a root that answers nothing.
    let g = Guest::new("s27dead", SLEEP);
    let (o, root) = g.start_whose_daemon_died();
    let said = stderr(&o);
    let _ = g.unifs(&["stop", &g.name]);
    assert!(!o.status.success(), "started over a dead root: {said}");
    assert!(
        said.contains("overlay daemon for guest") && said.contains("mount.log"),
        "{said}"
    );
    assert!(!said.contains("not a directory"), "{said}");
    assert!(!is_mounted(&root), "the dead root was left mounted");
}

/// `guest exec NAME -- cat /proc/self/limits`'s line for `what`.
fn limit_line(g: &Guest, what: &str) -> String {
    let o = g.unifs(&["exec", &g.name, "--", "/bin/cat", "/proc/self/limits"]);
    let text = ok(&o);
    text.lines()
        .find(|l| l.starts_with(what))
        .unwrap_or_else(|| panic!("no {what} in {text}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn s27_guest_exec_gets_the_limits_the_guest_started_with() {
    if !can_run("s27_guest_exec_gets_the_limits_the_guest_started_with") {
        return;
    }
    // A limit of the config's `rlimits`, and one `guest start` had from
    // its caller (`ulimit -q` in its shell): exec's command had the second
    // from exec's own caller instead.
    let g = Guest::new("s27rlim", SLEEP);
    g.configure_with(
        &g.name,
        &g.t.root(),
        SLEEP,
        "rlimits = [\"nofile=555:555\"]",
    );
    let mut cmd = Command::new("prlimit");
    cmd.arg("--msgqueue=777777:777777").arg(unifs_bin());
    let base = g.command();
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.args(["guest", "start", &g.name]);
    ok(&run_bounded(cmd, Duration::from_secs(60)));
    let init = g.init_pid();
    let init_limits = std::fs::read_to_string(format!("/proc/{init}/limits")).unwrap();
    assert!(
        init_limits
            .lines()
            .any(|l| l.starts_with("Max msgqueue size") && l.contains("777777")),
        "{init_limits}"
    );
    assert_eq!(
        limit_line(&g, "Max open files"),
        "Max open files 555 555 files"
    );
    assert_eq!(
        limit_line(&g, "Max msgqueue size"),
        "Max msgqueue size 777777 777777 bytes"
    );
    ok(&g.unifs(&["stop", &g.name]));
}

#[test]
fn s27_a_state_file_without_start_rlimits_is_read() {
    if !can_run("s27_a_state_file_without_start_rlimits_is_read") {
        return;
    }
    // A guest started by a unifs before `start_rlimits`: exec works, with
    // the config's limits as before.
    let g = Guest::new("s27old", SLEEP);
    g.configure_with(
        &g.name,
        &g.t.root(),
        SLEEP,
        "rlimits = [\"nofile=555:555\"]",
    );
    ok(&g.unifs(&["start", &g.name]));
    let file = g.run(&g.name).join("state.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(
        record.get("start_rlimits").is_some(),
        "no start_rlimits recorded"
    );
    record.as_object_mut().unwrap().remove("start_rlimits");
    std::fs::write(&file, serde_json::to_vec(&record).unwrap()).unwrap();
    assert_eq!(
        limit_line(&g, "Max open files"),
        "Max open files 555 555 files"
    );
    ok(&g.unifs(&["stop", &g.name]));
}

#[test]
fn s28_run_under_a_low_address_space_limit_is_refused_not_dead() {
    if !can_run("s28_run_under_a_low_address_space_limit_is_refused_not_dead") {
        return;
    }
    // `unifs run`'s own overlay daemon said ready as soon as it mounted:
    // under `ulimit -v` too low for its FUSE threads, the guest started on
    // a root that died under it.
    let t = crate::guest::harness::TestRoot::new();
    std::fs::write(t.root().join("marker"), b"data").unwrap();
    let nostore = t.dir.path().join("no-store");
    for limit in [60u64 << 20, 100 << 20, 130 << 20, 150 << 20, 200 << 20] {
        let o = under_limit(
            &format!("--as={limit}"),
            &nostore,
            &[
                "run",
                "--root",
                t.root().to_str().unwrap(),
                "--",
                "/bin/sh",
                "-c",
                "sleep 0.3; cat /marker && echo ran",
            ],
        );
        let said = stderr(&o);
        if o.status.success() {
            assert_eq!(stdout(&o), "dataran\n", "{limit}: {said}");
        } else {
            assert!(said.contains("RLIMIT_AS"), "{limit}: {o:?}");
            assert!(!stdout(&o).contains("ran"), "{limit}: {o:?}");
        }
    }
}

#[test]
fn s28_verify_and_manifest_under_a_low_address_space_limit_name_it() {
    if !require_root("s28_verify_and_manifest_under_a_low_address_space_limit_name_it") {
        return;
    }
    // Their hashing threads could not start: rayon panicked (exit 101).
    let w = World::new();
    let (g1, g2) = (w.dir("g1"), w.dir("g2"));
    for g in [&g1, &g2] {
        std::fs::write(g.join("f"), vec![3u8; 8192]).unwrap();
    }
    let store = w.tmp.path().join("store");
    ok(&run_bounded(
        {
            let mut c = Command::new(unifs_bin());
            c.arg("--store").arg(&store).arg("unify").arg(&g1).arg(&g2);
            c
        },
        Duration::from_secs(60),
    ));
    let mut refused = 0;
    for limit in [12u64 << 20, 14 << 20, 16 << 20, 20 << 20, 32 << 20] {
        for args in [
            vec!["store", "verify"],
            vec!["manifest", g1.to_str().unwrap()],
        ] {
            let o = under_limit(&format!("--as={limit}"), &store, &args);
            let said = stderr(&o);
            // Too little for the loader to map the program at all.
            if said.contains("error while loading shared libraries") {
                continue;
            }
            if !o.status.success() {
                refused += 1;
                assert_eq!(o.status.code(), Some(1), "{limit} {args:?}: {said}");
                assert!(said.contains("RLIMIT_AS"), "{limit} {args:?}: {said}");
            }
        }
    }
    // At 32 MiB both run; lower, at least one limit is too low for them.
    assert!(refused > 0, "no limit was low enough to refuse");
}
