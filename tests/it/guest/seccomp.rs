//! The guest's syscall filter (`--syscall-filter`, docs/security.md): what
//! it refuses, on the x86-64 and i386 ABIs, and that the filter is what
//! refuses it (with it off, the same calls get through).

use super::escape::cc_or_skip;
use super::harness::{can_run, ok, run_bounded, TestRoot};
use crate::common::unifs_bin;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

/// `probe`: makes each syscall the filter is about and prints NAME=RESULT,
/// RESULT being `ok` or the errno's name.
pub(super) const PROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/sched.h>
static void say(const char *name, long rc) {
    printf("%s=%s\n", name, rc < 0 ? strerrorname_np(errno) : "ok");
}
int main(void) {
    say("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -4 /* user */, 0));
    say("add_key", syscall(SYS_add_key, "user", "unifs-probe", "x", 1, -3 /* session */));
    say("request_key", syscall(SYS_request_key, "user", "unifs-probe", NULL, 0));
    char params[120];
    memset(params, 0, sizeof params);
    say("io_uring_setup", syscall(SYS_io_uring_setup, 1, params));
    say("userfaultfd", syscall(SYS_userfaultfd, 0));
    say("bpf", syscall(SYS_bpf, 0, NULL, 0));
    say("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    say("syslog", syscall(SYS_syslog, 10 /* SIZE_BUFFER */, NULL, 0));
    say("open_by_handle_at", syscall(SYS_open_by_handle_at, -100, NULL, 0));
    /* 17 segments, one past the most: EINVAL once permitted, never a load. */
    say("kexec_load", syscall(SYS_kexec_load, 0, 17, NULL, 0));
    struct clone_args ca;
    memset(&ca, 0, sizeof ca);
    ca.exit_signal = SIGCHLD;
    long c = syscall(SYS_clone3, &ca, sizeof ca);
    if (c == 0) _exit(0);
    if (c > 0) waitpid(c, NULL, 0);
    say("clone3", c);
    pid_t f = fork();
    if (f == 0) _exit(0);
    if (f > 0) waitpid(f, NULL, 0);
    say("fork", f);
    say("unshare_user", unshare(CLONE_NEWUSER));
    fflush(stdout);
    return 0;
}
"#;

/// Builds [`PROBE`] into the guest as /bin/probe (or skips `test`).
pub(super) fn probe_into(t: &TestRoot, test: &str) -> bool {
    cc_or_skip(t, test, "probe", PROBE)
}

/// NAME=RESULT lines as a map.
pub(super) fn results(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run_probe(t: &TestRoot, filter: Option<&str>, program: &str) -> String {
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    // sys_boot: kexec_load is then refused by the filter alone.
    cmd.args(["--root-mount", "bind", "--cap-add", "sys_boot"]);
    if let Some(f) = filter {
        cmd.args(["--syscall-filter", f]);
    }
    cmd.args(["--", program]);
    ok(&run_bounded(cmd, Duration::from_secs(30)))
}

#[test]
fn seccomp_default_filter_refuses_its_list_and_user_namespaces() {
    let test = "seccomp_default_filter_refuses_its_list_and_user_namespaces";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    if !probe_into(&t, test) {
        return;
    }
    let refused = [
        "keyctl",
        "add_key",
        "request_key",
        "io_uring_setup",
        "userfaultfd",
        "bpf",
        "perf_event_open",
        "syslog",
        "open_by_handle_at",
        "kexec_load",
        "unshare_user",
    ];
    // No option: the default filter.
    let default = results(&run_probe(&t, None, "/bin/probe"));
    for name in refused {
        assert_eq!(default[name], "EPERM", "{name}: {default:?}");
    }
    // clone3's flags cannot be read by a filter: ENOSYS, and libc's fork
    // (clone) works.
    assert_eq!(default["clone3"], "ENOSYS", "{default:?}");
    assert_eq!(default["fork"], "ok", "{default:?}");

    let userns = results(&run_probe(&t, Some("allow-userns"), "/bin/probe"));
    for name in ["unshare_user", "clone3", "fork"] {
        assert_eq!(userns[name], "ok", "{name}: {userns:?}");
    }
    for name in refused.iter().filter(|&&n| n != "unshare_user") {
        assert_eq!(userns[*name], "EPERM", "{name}: {userns:?}");
    }

    // Off: the same calls reach the kernel (perf_event_open's NULL
    // attribute is then EFAULT), so the filter is what refused them.
    let off = results(&run_probe(&t, Some("off"), "/bin/probe"));
    for name in ["keyctl", "add_key", "unshare_user", "clone3", "fork"] {
        assert_eq!(off[name], "ok", "{name}: {off:?}");
    }
    assert_eq!(off["perf_event_open"], "EFAULT", "{off:?}");
    // EINVAL, or ENOSYS from a kernel built without kexec.
    assert!(
        ["EINVAL", "ENOSYS"].contains(&off["kexec_load"].as_str()),
        "{off:?}"
    );
}

/// `keys DESCRIPTION`: searches uid 0's user keyring for a user key.
const KEY_SEARCH: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc != 2) return 2;
    long id = syscall(SYS_keyctl, 10 /* SEARCH */, -4 /* user keyring */, "user", argv[1], 0);
    if (id < 0) printf("%s\n", strerror(errno)); else printf("found\n");
    return 0;
}
"#;

/// A key in uid 0's user keyring, invalidated on drop.
struct HostKey(libc::c_long);

impl Drop for HostKey {
    fn drop(&mut self) {
        // SAFETY: keyctl(KEYCTL_INVALIDATE, id) takes no pointers.
        unsafe { libc::syscall(libc::SYS_keyctl, 21, self.0) };
    }
}

#[test]
fn seccomp_guest_root_cannot_read_host_roots_user_keyring() {
    let test = "seccomp_guest_root_cannot_read_host_roots_user_keyring";
    if !can_run(test) {
        return;
    }
    // Keyrings are not namespaced: uid 0 in a guest has the user keyring
    // of uid 0 on the host, whose keys (a login's, a service's) it could
    // read, change or revoke.
    let t = TestRoot::new();
    if !cc_or_skip(&t, test, "keys", KEY_SEARCH) {
        return;
    }
    let desc = format!("unifs-test-{}", std::process::id());
    let cdesc = std::ffi::CString::new(desc.clone()).unwrap();
    // SAFETY: NUL-terminated strings and a 1-byte payload that live across
    // the call; -4 is KEY_SPEC_USER_KEYRING.
    let id = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            cdesc.as_ptr(),
            c"x".as_ptr(),
            1usize,
            -4i32,
        )
    };
    assert!(id > 0, "add_key: {}", std::io::Error::last_os_error());
    let _key = HostKey(id);
    let search = |filter: &str| {
        let mut cmd = Command::new(unifs_bin());
        cmd.arg("run").arg("--root").arg(t.root());
        cmd.args(["--root-mount", "bind", "--syscall-filter", filter]);
        cmd.args(["--", "/bin/keys", &desc]);
        ok(&run_bounded(cmd, Duration::from_secs(30)))
            .trim()
            .to_string()
    };
    assert_eq!(
        search("off"),
        "found",
        "without the filter the key is shared"
    );
    assert_eq!(search("default"), "Operation not permitted");
}

/// `probe32`: i386 code without a C library (`int $0x80`); prints
/// NAME=RETURN, a negative errno on failure.
const PROBE32: &str = r#"
static long sys(long nr, long a, long b, long c) {
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return r;
}
static void say(const char *name, long v) {
    char buf[64], d[16];
    int n = 0, k = 0;
    while (name[n]) { buf[n] = name[n]; n++; }
    buf[n++] = '=';
    if (v < 0) { buf[n++] = '-'; v = -v; }
    do { d[k++] = '0' + v % 10; v /= 10; } while (v);
    while (k) buf[n++] = d[--k];
    buf[n++] = '\n';
    sys(4, 1, (long)buf, n);
}
void _start(void) {
    say("keyctl", sys(288, 0, -4, 0));              /* GET_KEYRING_ID, user keyring */
    say("unshare_user", sys(310, 0x10000000, 0, 0)); /* CLONE_NEWUSER */
    say("fadvise64", sys(250, -1, 0, 0));            /* x86-64's keyctl number */
    sys(1, 0, 0, 0);
}
"#;

#[test]
fn seccomp_filter_covers_the_i386_abi() {
    let test = "seccomp_filter_covers_the_i386_abi";
    // The i386 ABI is an x86-64 kernel's alone (and so is the filter:
    // seccomp::BUILT): elsewhere gcc-multilib would not help.
    if !cfg!(target_arch = "x86_64") {
        let arch = std::env::consts::ARCH;
        crate::common::skip(
            test,
            &format!("the i386 ABI is x86-64's, this host is {arch}"),
        );
        return;
    }
    if !can_run(test) {
        return;
    }
    // A filter keyed on x86-64's numbers alone would let a 32-bit program
    // make the same calls under their i386 numbers.
    let t = TestRoot::new();
    let src = t.dir.path().join("probe32.c");
    std::fs::write(&src, PROBE32).unwrap();
    let built = Command::new("cc")
        .args([
            "-m32",
            "-nostdlib",
            "-static",
            "-O2",
            "-fno-stack-protector",
        ])
        .args(["-fno-pie", "-no-pie", "-o"])
        .arg(t.root().join("bin/probe32"))
        .arg(&src)
        .status();
    if !built.is_ok_and(|s| s.success()) {
        crate::common::skip(test, "needs cc -m32 (gcc-multilib: .ci/run installs it)");
        return;
    }
    let default = results(&run_probe(&t, None, "/bin/probe32"));
    assert_eq!(default["keyctl"], "-1", "EPERM: {default:?}");
    assert_eq!(default["unshare_user"], "-1", "EPERM: {default:?}");
    // i386's own numbers decide: 250 is fadvise64 there (EBADF for fd -1).
    assert_eq!(default["fadvise64"], "-9", "{default:?}");
    let off = results(&run_probe(&t, Some("off"), "/bin/probe32"));
    assert!(
        off["keyctl"].parse::<i64>().unwrap() > 0,
        "without the filter: {off:?}"
    );
    assert_eq!(off["unshare_user"], "0", "{off:?}");
}
