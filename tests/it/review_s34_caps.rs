//! Review s34 (caps): the capabilities each guest command needs, measured
//! by running it as root with one capability dropped at a time on a real
//! busybox guest (setpriv, as an operator's service with
//! CapabilityBoundingSet= runs it).
//!
//! - Lists that were guessed missed what the kernel asks for: `run` and
//!   `guest start` failed half-way without CAP_MKNOD (`mknod …/dev/null:
//!   EPERM`) or CAP_NET_ADMIN (`bringing up loopback: EPERM`); `guest
//!   exec`/`enter` without CAP_SYS_CHROOT or (a guest under its reaper)
//!   CAP_SYS_PTRACE said a bare `setns into guest: EPERM`; without CAP_KILL
//!   `run --user` never passed SIGTERM on, `exec -u` never passed a signal
//!   to its command, and `restart` of a guest whose init is another user's
//!   waited out its stop timeout. Each is now refused before it starts.
//! - `guest update` needs no capability (root's own cgroup files): it was
//!   refused for CAP_SYS_ADMIN.
//! - `guest exec` as root in a guest that keeps a capability this process
//!   lacks said `setting capabilities: EPERM`; it now names the capability.

use crate::common::unifs_bin;
use crate::guest::harness::{can_run, is_mounted, ok, stderr, stdout};
use crate::guest::review_s11_life::{Guest, SLEEP};
use crate::review_s33_nonroot::assert_refused;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

/// `cmd` run under `setpriv PRIVS`, bounded.
fn under(privs: &[&str], cmd: Command) -> Output {
    let setpriv: Vec<&str> = std::iter::once("setpriv")
        .chain(privs.iter().copied())
        .chain(["--"])
        .collect();
    let wrapped = crate::common::wrapped(&setpriv, &cmd);
    crate::guest::harness::run_bounded(wrapped, std::time::Duration::from_secs(30))
}

/// setpriv options that drop `cap` from the bounding and inheritable sets.
pub(crate) fn without(cap: &str) -> [String; 4] {
    [
        "--bounding-set".into(),
        format!("-{cap}"),
        "--inh-caps".into(),
        format!("-{cap}"),
    ]
}

/// setpriv options that keep exactly `caps`.
fn only(caps: &[&str]) -> [String; 4] {
    let set: Vec<String> = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect();
    [
        "--bounding-set".into(),
        set.join(","),
        "--inh-caps".into(),
        "-all".into(),
    ]
}

/// `unifs guest ARGS` for `g` under `privs`.
pub(crate) fn guest_as(g: &Guest, privs: &[String], args: &[&str]) -> Output {
    let mut cmd = g.command();
    cmd.args(args);
    under(&privs.iter().map(String::as_str).collect::<Vec<_>>(), cmd)
}

/// `unifs run --root ROOT ARGS` for `g`'s root under `privs`.
pub(crate) fn run_as(g: &Guest, privs: &[String], args: &[&str]) -> Output {
    let mut cmd = Command::new(unifs_bin());
    cmd.env("UNIFS_STORE", g.t.dir.path().join("no-store"))
        .arg("run")
        .arg("--root")
        .arg(g.t.root())
        .args(args);
    under(&privs.iter().map(String::as_str).collect::<Vec<_>>(), cmd)
}

pub(crate) fn status(g: &Guest) -> serde_json::Value {
    let o = g.unifs(&["status", "--json", &g.name]);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)))
}

/// The guest's root through its mount, in RUN_DIR.
pub(crate) fn mounted(g: &Guest) -> bool {
    is_mounted(&g.run(&g.name).join("root"))
}

/// A guest whose init (sleep) runs under unifs's reaper, which passes the
/// stop signal on (so no stop waits out its timeout) and which `exec`
/// joins only with CAP_SYS_PTRACE.
fn reaped(test: &str) -> Guest {
    let g = Guest::new(test, SLEEP);
    g.configure_with(&g.name, &g.t.root(), SLEEP, "init_reaper = true");
    g
}

/// The `CAP_X` name of setpriv's `x`.
fn cap_name(cap: &str) -> String {
    format!("CAP_{}", cap.to_ascii_uppercase())
}

#[test]
fn s34_guest_commands_without_a_capability_they_need_are_refused_before_they_start() {
    if !can_run("s34_guest_commands_without_a_capability_they_need_are_refused_before_they_start") {
        return;
    }
    let g = reaped("s34need");
    // Nothing starts, nothing is mounted.
    for cap in ["mknod", "net_admin", "setpcap", "sys_admin"] {
        let o = guest_as(&g, &without(cap), &["start", &g.name]);
        assert_refused(&o, &[&cap_name(cap), "lacks"], &format!("start -{cap}"));
        assert_eq!(status(&g)["running"], false, "start -{cap}");
        assert!(!mounted(&g), "start -{cap}");
    }
    for cap in ["mknod", "net_admin", "kill"] {
        let o = run_as(&g, &without(cap), &["--", "/bin/true"]);
        assert_refused(&o, &[&cap_name(cap), "lacks"], &format!("run -{cap}"));
    }
    ok(&g.unifs(&["start", &g.name]));
    let pid = g.init_pid();
    // The running guest is left as it was.
    let cases: [(&str, &[&str]); 7] = [
        ("sys_chroot", &["exec", &g.name, "--", "/bin/true"]),
        ("sys_ptrace", &["exec", &g.name, "--", "/bin/true"]),
        (
            "kill",
            &["exec", "-u", "1234:1234", &g.name, "--", "/bin/true"],
        ),
        ("sys_chroot", &["enter", &g.name]),
        ("kill", &["restart", &g.name]),
        ("kill", &["stop", &g.name]),
        ("sys_admin", &["stop", &g.name]),
    ];
    for (cap, args) in cases {
        let what = format!("-{cap} {args:?}");
        assert_refused(
            &guest_as(&g, &without(cap), args),
            &[&cap_name(cap), "lacks"],
            &what,
        );
        assert_eq!(status(&g)["pid"], pid, "{what}");
        assert!(mounted(&g), "{what}");
    }
}

#[test]
fn s34_each_guest_command_works_with_exactly_the_capabilities_it_lists() {
    if !can_run("s34_each_guest_command_works_with_exactly_the_capabilities_it_lists") {
        return;
    }
    const FILES: [&str; 6] = [
        "chown",
        "dac_override",
        "dac_read_search",
        "fowner",
        "fsetid",
        "sys_admin",
    ];
    // CAP_SETUID only for a user (review_s35_privpol): `run -u` here.
    const GUEST: [&str; 3] = ["setgid", "setpcap", "mknod"];
    let start: Vec<&str> = FILES
        .iter()
        .chain(&GUEST)
        .chain(&["net_admin"])
        .copied()
        .collect();
    let run: Vec<&str> = start.iter().chain(&["kill", "setuid"]).copied().collect();
    let host_run: Vec<&str> = run.iter().filter(|c| **c != "net_admin").copied().collect();
    let enter = [
        "sys_admin",
        "sys_chroot",
        "sys_ptrace",
        "setgid",
        "setpcap",
        "kill",
    ];
    let g = reaped("s34only");
    // A write to /tmp goes through the overlay's daemon, a child with
    // these capabilities (a file of another owner: CAP_CHOWN).
    let tmp = g.t.root().join("tmp");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let script = "echo hi > /tmp/w$(id -u) && cat /tmp/w$(id -u) && id -u";
    for (privs, net) in [(&run, "none"), (&host_run, "host")] {
        for user in ["0:0", "1234:1234"] {
            let o = run_as(
                &g,
                &only(privs),
                &["--net", net, "-u", user, "--", "/bin/sh", "-c", script],
            );
            let uid = user.split(':').next().unwrap();
            assert_eq!(ok(&o), format!("hi\n{uid}\n"), "run --net {net} -u {user}");
        }
    }
    ok(&guest_as(&g, &only(&start), &["start", &g.name]));
    assert_eq!(status(&g)["running"], true);
    // The guest keeps the default set cut to what its start held (no
    // kill, net_raw, …): `exec` as root needs no more than that.
    let kept = ["chown", "dac_override", "fowner", "fsetid"];
    let o = guest_as(
        &g,
        &only(&[&enter[..], &kept].concat()),
        &["exec", &g.name, "--", "/bin/sh", "-c", script],
    );
    assert_eq!(ok(&o), "hi\n0\n");
    let o = guest_as(
        &g,
        &only(&[&enter[..], &["setuid"]].concat()),
        &["exec", "-u", "1234:1234", &g.name, "--", "/bin/id", "-u"],
    );
    assert_eq!(ok(&o), "1234\n");
    // `update` needs none at all (uid 0 writes root's cgroup files).
    ok(&guest_as(
        &g,
        &only(&[]),
        &["update", "--pids", "40", &g.name],
    ));
    assert_eq!(status(&g)["limits"]["pids"], 40);
    let pid = g.init_pid();
    ok(&guest_as(&g, &only(&run), &["restart", &g.name]));
    assert_ne!(g.init_pid(), pid);
    ok(&guest_as(
        &g,
        &only(&["sys_admin", "kill"]),
        &["stop", &g.name],
    ));
    assert_eq!(status(&g)["running"], false);
    assert!(!mounted(&g));
}

#[test]
fn s34_a_capability_the_guest_keeps_or_adds_and_this_process_lacks_is_named() {
    if !can_run("s34_a_capability_the_guest_keeps_or_adds_and_this_process_lacks_is_named") {
        return;
    }
    let g = reaped("s34keeps");
    ok(&g.unifs(&["start", &g.name]));
    // Root in the guest takes its set: net_raw is in the default one.
    let o = guest_as(
        &g,
        &without("net_raw"),
        &["exec", &g.name, "--", "/bin/true"],
    );
    assert_refused(
        &o,
        &[
            &format!("guest {} keeps CAP_NET_RAW", g.name),
            "which this process lacks",
            "--user",
        ],
        "exec -net_raw",
    );
    // Another user keeps none, so needs none of them.
    let o = guest_as(
        &g,
        &without("net_raw"),
        &["exec", "-u", "1234:1234", &g.name, "--", "/bin/id", "-u"],
    );
    assert_eq!(ok(&o), "1234\n");
    ok(&g.unifs(&["stop", &g.name]));
    // A cap_add this process lacks: named, nothing started.
    let cfg = format!("{}/{}.toml", g.config_dir().display(), g.name);
    g.configure_with(&g.name, &g.t.root(), SLEEP, "cap_add = [\"sys_ptrace\"]");
    let o = guest_as(&g, &without("sys_ptrace"), &["start", &g.name]);
    assert_refused(
        &o,
        &[&cfg, "\"sys_ptrace\"", "does not hold it"],
        "start cap_add",
    );
    assert_eq!(status(&g)["running"], false, "{}", stderr(&o));
}
