//! Session 49 "oomd": the overlay daemon and the OOM killer where unifs
//! lacks CAP_SYS_RESOURCE (root in a container; this CI's root). The daemon
//! shares its guest's memory limit and could not be lowered to -999, so it
//! stood at 0 with the guest's processes: past the limit the kernel took it
//! whenever it held the most pages, and the guest lost its root (every
//! access `Transport endpoint is not connected`). The CI of session 48 saw
//! it take the daemon second, 5 ms after the allocating shell.

use crate::guest::harness::{can_run, stderr_but_unshielded_warning, stdout, TestRoot};

/// Whether this process has CAP_SYS_RESOURCE in effect (then the daemon is
/// shielded at -999 and the guest's processes start at 0).
pub(crate) fn holds_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"));
    u64::from_str_radix(line.unwrap().trim(), 16).unwrap() & (1 << 24) != 0
}

/// A guest whose memory sits in a tmpfs (charged to its limit, in no
/// process's pages) and that then allocates past its limit: the daemon,
/// with the binary's pages mapped, held more than the allocating shell, and
/// the kernel killed it first (`can't create /tmp/sub: Transport endpoint is
/// not connected`). The shell must go, and the guest's files stay.
#[test]
fn s49_past_its_limit_a_guest_loses_its_process_not_its_overlay_daemon() {
    if !can_run("s49_past_its_limit_a_guest_loses_its_process_not_its_overlay_daemon") {
        return;
    }
    let t = TestRoot::new();
    let script = "head -c 12582912 /dev/zero > /run/fill; \
         (x=$(head -c 8388608 /dev/zero | tr '\\0' a); echo kept ${#x}); \
         echo $? > /tmp/sub; echo sub: $(cat /tmp/sub)";
    let o = t.sh(&["--memory", "16M"], script);
    let (out, err) = (stdout(&o), stderr_but_unshielded_warning(&o));
    assert!(
        !err.contains("not connected") && !err.contains("overlay daemon"),
        "the guest lost its root: {err}"
    );
    // The group stays within ~1.6 MiB of its limit after the kill (the
    // tmpfs stays), so on a loaded machine the kernel may take the top
    // shell next (stop 51's CI: `oom_kill 2`). That is the guest losing a
    // second process, still not its daemon; busybox's "Killed" line shows
    // the top shell outlived the subshell and reaped it.
    if o.status.code() == Some(137) {
        assert!(
            err.lines().any(|l| l == "Killed"),
            "the top shell went, not the allocating subshell first: {out}{err}"
        );
        assert!(
            err.contains("killed by the memory limit"),
            "the top shell's kill was not said as the memory limit's: {out}{err}"
        );
        return;
    }
    assert!(
        out.contains("sub: 137"),
        "the shell was not killed: {out}{err}"
    );
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
}

/// What a guest's process starts with: 0 with a shielded daemon or no
/// memory limit; 999 (above the daemon's 0) with a limit where the daemon
/// could not be shielded. `guest exec`'s command the same.
#[test]
fn s49_a_guests_processes_start_above_a_daemon_that_could_not_be_shielded() {
    if !can_run("s49_a_guests_processes_start_above_a_daemon_that_could_not_be_shielded") {
        return;
    }
    let t = TestRoot::new();
    let score = "echo score: $(cat /proc/self/oom_score_adj)";
    let limited = stdout(&t.sh(&["--memory", "64M"], score));
    let unlimited = stdout(&t.sh(&[], score));
    let expected = match holds_sys_resource() {
        true => "score: 0",
        false => "score: 999",
    };
    assert!(limited.contains(expected), "with --memory: {limited}");
    assert!(unlimited.contains("score: 0"), "without: {unlimited}");

    let init = "[\"/bin/sleep\", \"1000\"]";
    let g = crate::guest::review_s11_life::Guest::new("s49oomd", init);
    let toml = format!(
        "root = {:?}\ninit = {init}\n[limits]\npids = 64\nmemory = \"64M\"\n",
        g.t.root()
    );
    std::fs::write(g.config_dir().join(format!("{}.toml", g.name)), toml).unwrap();
    crate::guest::harness::ok(&g.unifs(&["start", &g.name]));
    let read_init = ["exec", &g.name, "--", "/bin/cat", "/proc/1/oom_score_adj"];
    let init = stdout(&g.unifs(&read_init));
    let exec = stdout(&g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", score]));
    // exec's own process, on the host through its command's life, keeps
    // its caller's score (it stayed at 999 for a whole `exec`/`enter`).
    let (session, _command) = g.exec_sleep();
    let proxy = session.0.as_ref().unwrap().id();
    let proxy_score = std::fs::read_to_string(format!("/proc/{proxy}/oom_score_adj"));
    drop(session);
    let _ = g.unifs(&["stop", "--timeout", "0", &g.name]);
    let number = expected.trim_start_matches("score: ");
    assert_eq!(init.trim(), number, "the guest's init");
    assert!(exec.contains(expected), "guest exec's command: {exec}");
    let own = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
    assert_eq!(proxy_score.unwrap(), own, "guest exec's own process");
}

/// A bind root has no overlay daemon to stand above: its guest's processes
/// start at 0 with a memory limit too.
#[test]
fn s49_a_bind_root_guest_starts_at_0_with_a_memory_limit() {
    if !can_run("s49_a_bind_root_guest_starts_at_0_with_a_memory_limit") {
        return;
    }
    let init = "[\"/bin/sleep\", \"1000\"]";
    let g = crate::guest::review_s11_life::Guest::new("s49oomdbind", init);
    let toml = format!(
        "root = {:?}\nroot_mount = \"bind\"\ninit = {init}\n[limits]\npids = 64\n\
         memory = \"64M\"\n",
        g.t.root()
    );
    std::fs::write(g.config_dir().join(format!("{}.toml", g.name)), toml).unwrap();
    crate::guest::harness::ok(&g.unifs(&["start", &g.name]));
    let read_init = ["exec", &g.name, "--", "/bin/cat", "/proc/1/oom_score_adj"];
    let init = stdout(&g.unifs(&read_init));
    let _ = g.unifs(&["stop", "--timeout", "0", &g.name]);
    assert_eq!(init.trim(), "0", "the guest's init");
}
