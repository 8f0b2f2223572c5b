//! Review s34 (capcfg): the capabilities a guest command is checked for
//! fit what the guest will do, and a user who is not root is told what the
//! command needs.
//!
//! - `guest start` of a guest with `[net] mode = "host"` was refused
//!   without CAP_NET_ADMIN, which it never uses (it makes no network
//!   namespace); only `run --net host` was let through.
//! - `guest exec` and `enter` were refused without CAP_SYS_PTRACE, which
//!   only a guest whose init runs under unifs's reaper (not dumpable), or
//!   keeps CAP_SYS_PTRACE, asks of them.
//! - A non-root `guest update` was told it "needs root (CAP_SYS_ADMIN in
//!   the initial user namespace)": it needs no capability, only uid 0.

use crate::guest::harness::{can_run, ok, stderr};
use crate::guest::review_s11_life::{Guest, SLEEP};
use crate::review_s33_nonroot::assert_refused;
use crate::review_s34_caps::{guest_as, mounted, status, without};

#[test]
fn s34_a_host_network_guest_starts_without_cap_net_admin_and_others_do_not() {
    if !can_run("s34_a_host_network_guest_starts_without_cap_net_admin_and_others_do_not") {
        return;
    }
    let g = Guest::new("s34hostnet", SLEEP);
    let no_net_admin = without("net_admin");
    // The default network (a namespace with loopback) needs it.
    let o = guest_as(&g, &no_net_admin, &["start", &g.name]);
    assert_refused(&o, &["CAP_NET_ADMIN", "lacks"], "start, default net");
    assert_eq!(status(&g)["running"], false);
    assert!(!mounted(&g));
    g.configure_with(&g.name, &g.t.root(), SLEEP, "[net]\nmode = \"host\"");
    ok(&guest_as(&g, &no_net_admin, &["start", &g.name]));
    assert_eq!(status(&g)["running"], true);
    let pid = g.init_pid();
    ok(&guest_as(&g, &no_net_admin, &["restart", &g.name]));
    assert_ne!(g.init_pid(), pid);
    ok(&g.unifs(&["stop", &g.name]));
}

#[test]
fn s34_a_user_who_is_not_root_is_told_update_needs_root_and_no_capability() {
    if !can_run("s34_a_user_who_is_not_root_is_told_update_needs_root_and_no_capability") {
        return;
    }
    let g = Guest::new("s34upd", SLEEP);
    let nobody = [
        "--reuid".to_string(),
        "65534".into(),
        "--regid".into(),
        "65534".into(),
        "--clear-groups".into(),
    ];
    let o = guest_as(&g, &nobody, &["update", "--pids", "40", &g.name]);
    assert_refused(
        &o,
        &[
            "unifs guest update needs root",
            "no capability",
            "run it as root",
        ],
        "update as nobody",
    );
    assert!(!stderr(&o).contains("CAP_"), "{}", stderr(&o));
}

#[test]
fn s34_exec_needs_cap_sys_ptrace_only_for_a_guest_under_its_reaper() {
    if !can_run("s34_exec_needs_cap_sys_ptrace_only_for_a_guest_under_its_reaper") {
        return;
    }
    let g = Guest::new("s34ptrace", SLEEP);
    let no_ptrace = without("sys_ptrace");
    ok(&g.unifs(&["start", &g.name]));
    let o = guest_as(&g, &no_ptrace, &["exec", &g.name, "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    ok(&g.unifs(&["stop", &g.name]));
    g.configure_with(&g.name, &g.t.root(), SLEEP, "init_reaper = true");
    ok(&g.unifs(&["start", &g.name]));
    let o = guest_as(&g, &no_ptrace, &["exec", &g.name, "--", "/bin/true"]);
    assert_refused(&o, &["CAP_SYS_PTRACE", "lacks"], "exec under the reaper");
    ok(&g.unifs(&["stop", &g.name]));
}
