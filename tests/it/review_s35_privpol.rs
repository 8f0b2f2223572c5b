//! Review s35 (privpol): what the guest commands are checked for, and when.
//!
//! - CAP_SETUID was asked of every `run`, `guest start`, `exec` and
//!   `enter`; measured, a command that runs as root works without it
//!   (setresuid to the uid it has already), so only a user other than
//!   root asks for it. CAP_SETGID stays: setgroups(2), which every one
//!   calls, needs it for root's groups too.
//! - A user who is not root, or a root without a capability the command
//!   always needs, got the guest's config (`start`) or runtime record
//!   (`exec`) read before the refusal, and a refusal whose list of
//!   capabilities told the config's network mode.
//! - `guest start` read the config twice (for the check, for the start),
//!   `restart` three times: an edit in between got a check for one
//!   network and a start in another.

use crate::guest::harness::{can_run, ok, stdout};
use crate::guest::review_s11_life::{Guest, SLEEP};
use crate::review_s33_nonroot::assert_refused;
use crate::review_s34_caps::{guest_as, mounted, run_as, status, without};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Counts the opens of one file (inotify's IN_OPEN) from its creation on.
/// Its closes are watched too: inotify merges an event into the same one
/// queued just before it, so two opens in a row would count as one.
pub(crate) struct Opens {
    fd: OwnedFd,
}

impl Opens {
    pub(crate) fn of(path: &Path) -> Opens {
        // SAFETY: inotify_init1 takes no pointer; its fd is owned here.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is NUL-terminated; `fd` is an inotify fd.
        let wd = unsafe {
            libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_OPEN | libc::IN_CLOSE)
        };
        assert!(
            wd >= 0,
            "{}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Opens { fd }
    }

    /// The opens since the last call (or since [`Opens::of`]).
    pub(crate) fn take(&self) -> usize {
        let mut opens = 0;
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return opens;
            }
            // Each event: wd, mask, cookie, len (u32s), then len bytes of name.
            let mut at = 0;
            while at + 16 <= n as usize {
                let field =
                    |i: usize| u32::from_ne_bytes(buf[at + i..at + i + 4].try_into().unwrap());
                if field(4) & libc::IN_OPEN != 0 {
                    opens += 1;
                }
                at += 16 + field(12) as usize;
            }
        }
    }
}

/// The guest's config file.
fn config(g: &Guest) -> PathBuf {
    g.config_dir().join(format!("{}.toml", g.name))
}

/// setpriv options that run as nobody, with no group of root's.
fn nobody() -> Vec<String> {
    ["--reuid", "65534", "--regid", "65534", "--clear-groups"]
        .map(String::from)
        .to_vec()
}

#[test]
fn s35_a_command_that_runs_as_root_needs_no_cap_setuid() {
    if !can_run("s35_a_command_that_runs_as_root_needs_no_cap_setuid") {
        return;
    }
    // The guest keeps no CAP_SETUID either: `exec` as root takes the
    // guest's set, which would ask for it (review_s34_capcfg).
    let g = Guest::new("s35uid", SLEEP);
    g.configure_with(&g.name, &g.t.root(), SLEEP, "cap_drop = [\"setuid\"]");
    let no_setuid = without("setuid");
    let id = ["--", "/bin/id", "-u"];
    assert_eq!(ok(&run_as(&g, &no_setuid, &id)), "0\n");
    for user in [&["-u", "1234:1234"][..], &["--uid", "1234"]] {
        let o = run_as(&g, &no_setuid, &[user, &id[..]].concat());
        assert_refused(&o, &["CAP_SETUID", "lacks"], &format!("run {user:?}"));
    }
    // setgroups(2), for root's groups too.
    let o = run_as(&g, &without("setgid"), &id);
    assert_refused(&o, &["CAP_SETGID", "setgroups", "lacks"], "run -setgid");

    ok(&guest_as(&g, &no_setuid, &["start", &g.name]));
    assert_eq!(status(&g)["running"], true);
    let exec =
        |args: &[&str]| guest_as(&g, &no_setuid, &[&["exec"], args, &[&g.name], &id].concat());
    assert_eq!(ok(&exec(&[])), "0\n");
    // (stdin is /dev/null: the shell ends at once.)
    ok(&guest_as(&g, &no_setuid, &["enter", &g.name]));
    let o = exec(&["-u", "1234:1234"]);
    assert_refused(&o, &["CAP_SETUID", "lacks"], "exec -u");
    ok(&g.unifs(&["stop", &g.name]));

    // Init as another user: its config (start) and its record (exec, which
    // runs as init's user) ask for it.
    g.configure_with(&g.name, &g.t.root(), SLEEP, "uid = 1234\ngid = 1234");
    let o = guest_as(&g, &no_setuid, &["start", &g.name]);
    assert_refused(&o, &["CAP_SETUID", "lacks"], "start uid = 1234");
    assert_eq!(status(&g)["running"], false);
    assert!(!mounted(&g));
    ok(&g.unifs(&["start", &g.name]));
    let o = exec(&[]);
    assert_refused(&o, &["CAP_SETUID", "lacks"], "exec of init's uid 1234");
    ok(&g.unifs(&["stop", &g.name]));
}

#[test]
fn s35_a_user_who_is_not_root_is_refused_before_the_guests_config_is_read() {
    if !can_run("s35_a_user_who_is_not_root_is_refused_before_the_guests_config_is_read") {
        return;
    }
    let g = Guest::new("s35nonroot", SLEEP);
    // Readable to nobody: the config dir and the file.
    for dir in [g.t.dir.path(), g.config_dir()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let opens = Opens::of(&config(&g));
    let mut said = Vec::new();
    for net in ["", "[net]\nmode = \"host\""] {
        g.configure_with(&g.name, &g.t.root(), SLEEP, net);
        opens.take();
        for cmd in ["start", "restart"] {
            let o = guest_as(&g, &nobody(), &[cmd, &g.name]);
            assert_eq!(
                opens.take(),
                0,
                "{cmd} as nobody, net {net:?}: the config was read"
            );
            assert_refused(
                &o,
                &[
                    "needs root (uid 65534",
                    "CAP_MKNOD",
                    "CAP_NET_ADMIN unless its config's network is the host's",
                    "CAP_SETUID when its config names a user",
                ],
                &format!("{cmd} as nobody, net {net:?}"),
            );
            said.push(crate::guest::harness::stderr(&o));
        }
    }
    // Nothing of the config shows in what nobody is told.
    assert_eq!(said[..2], said[2..]);
}

#[test]
fn s35_root_without_a_capability_the_command_always_needs_reads_nothing_first() {
    if !can_run("s35_root_without_a_capability_the_command_always_needs_reads_nothing_first") {
        return;
    }
    let g = Guest::new("s35first", SLEEP);
    let opens = Opens::of(&config(&g));
    let o = guest_as(&g, &without("mknod"), &["start", &g.name]);
    assert_refused(&o, &["CAP_MKNOD", "lacks"], "start -mknod");
    assert_eq!(opens.take(), 0, "start -mknod read the config");
    ok(&g.unifs(&["start", &g.name]));
    let record = Opens::of(&g.run(&g.name).join("state.json"));
    for args in [
        &["exec", &g.name, "--", "/bin/true"][..],
        &["enter", &g.name],
    ] {
        let o = guest_as(&g, &without("sys_chroot"), args);
        assert_refused(&o, &["CAP_SYS_CHROOT", "lacks"], &format!("{args:?}"));
        assert_eq!(record.take(), 0, "{args:?} -sys_chroot read the record");
    }
    ok(&g.unifs(&["stop", &g.name]));
}

#[test]
fn s35_guest_start_checks_and_starts_from_one_read_of_the_config() {
    if !can_run("s35_guest_start_checks_and_starts_from_one_read_of_the_config") {
        return;
    }
    let g = Guest::new("s35once", SLEEP);
    g.configure_with(&g.name, &g.t.root(), SLEEP, "[net]\nmode = \"host\"");
    let opens = Opens::of(&config(&g));
    let no_net_admin = without("net_admin");
    ok(&guest_as(&g, &no_net_admin, &["start", &g.name]));
    assert_eq!(opens.take(), 1, "start");
    let pid = g.init_pid();
    ok(&guest_as(&g, &no_net_admin, &["restart", &g.name]));
    assert_eq!(opens.take(), 1, "restart");
    assert_ne!(g.init_pid(), pid);
    // The guest shares the host's network, as its config said.
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let o = g.unifs(&["exec", &g.name, "--", "/bin/readlink", "/proc/self/ns/net"]);
    assert_eq!(stdout(&o).trim(), host_net.to_string_lossy(), "{o:?}");
    ok(&g.unifs(&["stop", &g.name]));
}
