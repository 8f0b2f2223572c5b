//! Review s37 (leads): session 36's leftovers. The stall check reads the
//! mount table once per command and follows symlinks; a config's `user`
//! of uid 0 needs no CAP_SETUID; a config's errors name no option, and
//! the host's failures are not called a bad config; a guest restarted
//! after its reboot logs as verbosely as its first start; unify's
//! one-component open retries EINTR.

use crate::common::{require_strace, unifs_bin};
use crate::guest::harness::{can_run, has_ip, ok, run_bounded, TestRoot};
use crate::guest::review_s11_life::{Guest, SLEEP};
use crate::review_s11_fault::{assert_unaffected, strace_unifs_on, two_guests};
use crate::review_s33_nonroot::assert_refused;
use crate::review_s34_caps::{guest_as, run_as, without};
use crate::review_s36_hung::Hung;
use crate::review_s36_leads::refused_saying;
use crate::review_s36_reboot::{console_log, rebooting_guest, started_pid, wait_status};
use crate::tree::{bytes, file, snapshot};
use std::process::{Command, Output};
use std::time::Duration;

/// Opens of /proc/self/mountinfo in `unifs run`'s processes (strace's
/// log: one call a line), with `binds` bind mounts.
fn mountinfo_reads(t: &TestRoot, binds: usize) -> usize {
    let dir = t.dir.path();
    let store = dir.join("store");
    let log = dir.join(format!("strace-{binds}.log"));
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-e", "trace=openat,open", "-o"])
        .arg(&log)
        .arg(unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["run", "--run-dir"])
        .arg(dir.join("run"))
        .arg("--root")
        .arg(t.root());
    for i in 0..binds {
        let src = dir.join(format!("src{i}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(t.root().join(format!("mnt/{i}"))).unwrap();
        cmd.arg("--bind").arg(format!("{}:/mnt/{i}", src.display()));
    }
    cmd.args(["--", "/bin/true"]);
    ok(&run_bounded(cmd, Duration::from_secs(60)));
    let trace = std::fs::read_to_string(&log).unwrap();
    trace.matches("\"/proc/self/mountinfo\"").count()
}

/// `unifs run` checked each path it uses (its root, run dir, store, each
/// bind source, the cgroups, the system directories it keeps) against a
/// read of /proc/self/mountinfo of its own: 33 reads for a plain overlay
/// run, 2 more for each bind. Now each caller reads it once for all its
/// paths: 8 reads. (Bounds generous: the overlay daemon and the guest's
/// set-up read it too, a few times each.)
#[test]
fn s37_run_reads_the_mount_table_once_for_all_its_paths() {
    let test = "s37_run_reads_the_mount_table_once_for_all_its_paths";
    if !can_run(test) || !require_strace(test) {
        return;
    }
    let t = TestRoot::new();
    let mut init = Command::new(unifs_bin());
    init.arg("--store")
        .arg(t.dir.path().join("store"))
        .args(["store", "init"]);
    ok(&run_bounded(init, Duration::from_secs(30)));
    let plain = mountinfo_reads(&t, 0);
    let bound = mountinfo_reads(&t, 4);
    assert!(plain <= 20, "{plain} reads of mountinfo for a plain run");
    assert!(
        bound <= plain + 2,
        "{bound} reads with 4 binds, {plain} without"
    );
}

/// A path given as a symlink into a FUSE mount whose daemon is stopped
/// (`--store /srv/link` with `/srv/link -> /mnt/hung/store`), or through
/// a symlinked directory, is refused in seconds, naming the mount, as the
/// path itself is. Before, the check looked at the path's own text only,
/// and the command waited on the mount for good.
#[test]
fn s37_a_symlink_into_a_hung_mount_is_refused() {
    if !can_run("s37_a_symlink_into_a_hung_mount_is_refused") {
        return;
    }
    let h = Hung::new(false);
    std::os::unix::fs::symlink(h.dir("hung/store"), h.dir("store-link")).unwrap();
    std::os::unix::fs::symlink(h.dir("hung"), h.dir("dir-link")).unwrap();
    let root = h.path("root");
    let store = h.path("store-link");
    let args = ["--store", &store, "run", "--root", &root, "--", "/bin/true"];
    h.refused(&h.unifs(&args), "a store through a link");
    let bind = format!("{}:/mnt", h.path("dir-link/data"));
    let args = [
        "run",
        "--root-mount",
        "bind",
        "--root",
        &root,
        "--bind",
        &bind,
    ];
    h.refused(
        &h.unifs(&[&args[..], &["--", "/bin/true"]].concat()),
        "a bind source through a linked directory",
    );
    let run_dir = h.path("dir-link/run");
    let args = ["run", "--root-mount", "bind", "--run-dir", &run_dir];
    h.refused(
        &h.unifs(&[&args[..], &["--root", &root, "--", "/bin/true"]].concat()),
        "a run dir through a linked directory",
    );
    let config_dir = h.path("dir-link/config");
    h.refused(
        &h.unifs(&["guest", "list", "--config-dir", &config_dir]),
        "a config dir through a linked directory",
    );
}

/// A config's `user` that names uid 0 (`root`, `toor`) needs no
/// CAP_SETUID, as `run --user` of it needs none: it is looked up in the
/// guest's /etc/passwd once, before the check, and the start runs as that
/// lookup. Another user still needs it. Before, any `user` asked for it.
#[test]
fn s37_a_configs_root_user_needs_no_cap_setuid() {
    if !can_run("s37_a_configs_root_user_needs_no_cap_setuid") {
        return;
    }
    let g = Guest::new("s37root", SLEEP);
    std::fs::write(
        g.t.root().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ntoor:x:0:0::/root:/bin/sh\nweb:x:1234:1234::/:/bin/sh\n",
    )
    .unwrap();
    let no_setuid = without("setuid");
    for user in ["root", "toor"] {
        let extra = format!("user = {user:?}");
        g.configure_with(&g.name, &g.t.root(), SLEEP, &extra);
        ok(&guest_as(&g, &no_setuid, &["start", &g.name]));
        ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
        let run = run_as(&g, &no_setuid, &["--user", user, "--", "/bin/id", "-u"]);
        assert_eq!(ok(&run), "0\n", "run --user {user}");
    }
    g.configure_with(&g.name, &g.t.root(), SLEEP, "user = \"web\"");
    let o = guest_as(&g, &no_setuid, &["start", &g.name]);
    assert_refused(&o, &["CAP_SETUID", "lacks"], "user = \"web\"");
}

/// A config's `user` that `guest start` cannot use is said with the key
/// and the file, and the fix in the config's words. Before: "name it too
/// (--user 4242:GID)", an option the config's user never wrote.
#[test]
fn s37_a_configs_user_error_names_no_option() {
    if !can_run("s37_a_configs_user_error_names_no_option") {
        return;
    }
    let g = Guest::new("s37user", SLEEP);
    g.configure_with(&g.name, &g.t.root(), SLEEP, "user = \"4242\"");
    let config = g.config_dir().join(format!("{}.toml", g.name));
    refused_saying(
        &g.unifs(&["start", &g.name]),
        &[
            &format!("bad guest config {}", config.display()),
            "invalid user \"4242\"",
            "name its group too (\"4242:GID\")",
        ],
        &["--user"],
        "user 4242",
    );
}

/// `g`'s config with a veth network and `extra` lines of `[net]`.
fn veth(g: &Guest, extra: &str) -> std::path::PathBuf {
    let net = format!("[net]\nmode = \"veth\"\nip = \"10.237.1.2/24\"\n{extra}");
    let toml = format!("root = {:?}\ninit = {SLEEP}\n{net}\n", g.t.root());
    let path = g.config_dir().join(format!("{}.toml", g.name));
    std::fs::write(&path, toml).unwrap();
    path
}

/// `guest start` of `g` with no `ip` on PATH.
fn start_without_ip(g: &Guest) -> Output {
    let mut cmd = g.command();
    cmd.env("PATH", g.t.dir.path().join("no-bin"))
        .args(["start", &g.name]);
    run_bounded(cmd, Duration::from_secs(30))
}

/// `guest start` of a veth guest on a host without `ip` (none on PATH)
/// names no option: before, "needed for --net veth".
#[test]
fn s37_a_veth_guest_without_ip_names_no_option() {
    let test = "s37_a_veth_guest_without_ip_names_no_option";
    if !can_run(test) || !has_ip(test) {
        return;
    }
    let g = Guest::new("s37noip", SLEEP);
    veth(&g, "");
    refused_saying(
        &start_without_ip(&g),
        &["running `ip` (iproute2, needed for a veth network)"],
        &["--net"],
        "no ip",
    );
}

/// What the host lacks for a config's setting (a bridge, `ip`) is said as
/// the host's, not as a bad config: before, "bad guest config PATH: [net]
/// bridge …: no such interface on the host", which sent the reader to a
/// file that was right.
#[test]
fn s37_what_the_host_lacks_is_not_called_a_bad_config() {
    let test = "s37_what_the_host_lacks_is_not_called_a_bad_config";
    if !can_run(test) || !has_ip(test) {
        return;
    }
    let g = Guest::new("s37host", SLEEP);
    let config = veth(&g, "bridge = \"nosuchbr37\"\n");
    let host = format!(
        "the host cannot do what guest config {} asks",
        config.display()
    );
    refused_saying(
        &g.unifs(&["start", &g.name]),
        &[
            &host,
            "[net] bridge nosuchbr37: no such interface on the host",
        ],
        &["bad guest config"],
        "no such bridge",
    );
    veth(&g, "");
    refused_saying(
        &start_without_ip(&g),
        &[&host, "running `ip`"],
        &["bad guest config"],
        "no ip",
    );
}

/// A guest started with `-v` that reboots is started again at that log
/// level: its restarted start's info lines reach console.log. Before, the
/// keeper's `guest start --after-reboot` dropped `-v`.
#[test]
fn s37_a_restart_after_reboot_keeps_the_log_level() {
    let test = "s37_a_restart_after_reboot_keeps_the_log_level";
    if !can_run(test) {
        return;
    }
    let g = rebooting_guest(
        "s37verbose",
        "[ -e /rebooted ] && exec sleep 1000; touch /rebooted; reboot -f",
        "",
    );
    let out = ok(&g.unifs(&["start", "-v", &g.name]));
    let first: i64 = out.trim().rsplit(' ').next().unwrap().parse().unwrap();
    let st = wait_status(&g, 30, |st| {
        st["running"] == true && st["pid"].as_i64().is_some_and(|p| p != first)
    });
    assert_eq!(st["running"], true, "not started again: {st}");
    let log = console_log(&g);
    assert!(
        log.contains(&format!("guest {}: cleaning up after its reboot", g.name)),
        "no info line of the restarted start: {log}"
    );
    // Without -v, none.
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    std::fs::remove_file(g.t.root().join("rebooted")).unwrap();
    std::fs::remove_file(g.run_dir.join(&g.name).join("console.log")).unwrap();
    let first = started_pid(&g);
    let st = wait_status(&g, 30, |st| {
        st["running"] == true && st["pid"].as_i64().is_some_and(|p| p != first)
    });
    assert_eq!(st["running"], true, "not started again: {st}");
    let log = console_log(&g);
    assert!(!log.contains("cleaning up"), "{log}");
}

/// An EINTR from unify's one-component open (`sys::open_at`: the store's
/// `tmp/dirtimes-left` read, the `tmp/dirtimes-PID` record made) is made
/// again, not reported. Injected into each of the first openat calls on
/// the store's tmp in turn (strace -P: by its path, or a directory fd open
/// on it), which include those two. (review_s11_fault injects into
/// openat2 only, which has a wrapper of its own.)
#[test]
fn s37_an_interrupted_open_in_the_stores_tmp_is_made_again() {
    let test = "s37_an_interrupted_open_in_the_stores_tmp_is_made_again";
    if !crate::common::require_root(test) || !require_strace(test) {
        return;
    }
    let mut hit = Vec::new();
    for when in 1..=6 {
        let (dir, store, a, b) = two_guests();
        file(&a, "usr/bin/tool", &bytes(2, 5000), 0o755);
        file(&b, "usr/bin/tool", &bytes(2, 5000), 0o755);
        let mut init = Command::new(unifs_bin());
        init.arg("--store").arg(&store).args(["store", "init"]);
        ok(&run_bounded(init, Duration::from_secs(30)));
        let before = snapshot(&b);
        let log = dir.path().join("strace.log");
        let inject = format!("openat:error=EINTR:when={when}");
        let mut cmd = strace_unifs_on(&store, &inject, Some(&log), Some(&store.join("tmp")));
        cmd.args(["unify", "--json", "--no-progress"])
            .arg(&a)
            .arg(&b)
            .env("UNIFS_THREADS", "1");
        let out = cmd.output().unwrap();
        let trace = std::fs::read_to_string(&log).unwrap();
        hit.extend(
            trace
                .lines()
                .filter(|l| l.contains("(INJECTED)"))
                .map(String::from),
        );
        assert_unaffected(&out, &inject, dir.path(), &before, &b);
    }
    let hit = hit.join("\n");
    for name in ["\"dirtimes-left\"", "\"dirtimes-"] {
        assert!(hit.contains(name), "{name} not interrupted: {hit}");
    }
}
