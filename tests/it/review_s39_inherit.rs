//! Session 39, "inherit": what a guest's processes get of the process that
//! started them. The caller here holds what a shell, nohup or a service
//! would hand on (an fd without close-on-exec, umask 077, a raised OOM
//! score, ignored and blocked signals, host-only environment): none of it
//! may reach `unifs run`'s command, a named guest's init, or `guest
//! exec`'s and `enter`'s commands. docs/guests.md, "What a guest's
//! processes start with".

use crate::common::unifs_bin;
use crate::guest::harness::{
    can_run, run_bounded, run_with_input, stderr, stdout, wait_bounded, KillOnDrop, TestRoot,
};
use crate::guest::named::Guest;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Environment only the host's session means anything to.
const HOST_ONLY: [(&str, &str); 9] = [
    ("NOTIFY_SOCKET", "/run/systemd/notify"),
    ("LISTEN_FDS", "1"),
    ("LISTEN_PID", "1"),
    ("SSH_AUTH_SOCK", "/tmp/ssh-s39/agent.1"),
    ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/0/bus"),
    ("XDG_RUNTIME_DIR", "/run/user/0"),
    ("LANG", "de_DE.UTF-8"),
    ("LD_PRELOAD", ""),
    ("S39_SECRET", "host"),
];

/// The caller's OOM score: raised (lowering needs CAP_SYS_RESOURCE).
const CALLER_OOM: &str = "500";

/// Makes `cmd` start as a careless caller would start it: fd 7 open on a
/// host file without close-on-exec, umask 077, no address space
/// randomisation (`setarch -R`), OOM score 500, SIGHUP, SIGPIPE,
/// SIGRTMIN+5 and signal 32 ignored, SIGRTMIN+6 blocked, TERM and the
/// host-only environment set.
fn as_careless_caller(cmd: &mut Command, host_file: OwnedFd) {
    cmd.env("TERM", "s39-term");
    for (k, v) in HOST_ONLY {
        cmd.env(k, v);
    }
    // SAFETY: only async-signal-safe calls (dup2, umask, signal,
    // sigprocmask, open, write, close) on values made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 leaves the new fd without close-on-exec.
            if libc::dup2(host_file.as_raw_fd(), 7) != 7 {
                return Err(std::io::Error::last_os_error());
            }
            libc::umask(0o077);
            // `setarch -R`.
            libc::personality(libc::ADDR_NO_RANDOMIZE as libc::c_ulong);
            for sig in [libc::SIGHUP, libc::SIGPIPE, libc::SIGRTMIN() + 5] {
                libc::signal(sig, libc::SIG_IGN);
            }
            // And 32, which the C library keeps for itself (and refuses).
            let ignore = [libc::SIG_IGN as u64, 0, 0, 0];
            let none = std::ptr::null_mut::<u64>();
            libc::syscall(libc::SYS_rt_sigaction, 32, ignore.as_ptr(), none, 8usize);
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGRTMIN() + 6);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, CALLER_OOM.as_ptr().cast(), CALLER_OOM.len()) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
}

/// A host file (outside the guest's root) for the caller's fd 7.
fn host_file(t: &TestRoot) -> OwnedFd {
    let path = t.dir.path().join("host-secret");
    std::fs::write(&path, "host\n").unwrap();
    std::fs::File::open(path).unwrap().into()
}

/// What the probe's shell (`$$`, as exec'd) says of itself.
const PROBE: &str = "grep -E '^(Umask|SigBlk|SigIgn):' /proc/$$/status; \
     echo oom: $(cat /proc/$$/oom_score_adj); echo personality: $(cat /proc/$$/personality); \
     echo fds:; ls -1 /proc/$$/fd; echo end-fds; \
     env | sed 's/^/env: /'";

/// Fails unless `out` (the probe's output) shows nothing of the caller's.
fn assert_clean(out: &str, what: &str) {
    let field = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{what}: no {key} in the probe's output:\n{out}"))
    };
    let mask = |key: &str| u64::from_str_radix(field(key), 16).unwrap();
    assert_eq!(
        field("Umask:"),
        "0022",
        "{what}: the caller's umask:\n{out}"
    );
    assert_eq!(field("oom:"), "0", "{what}: the caller's OOM score:\n{out}");
    assert_eq!(
        field("personality:"),
        "00000000",
        "{what}: the caller's personality flags:\n{out}"
    );
    assert_eq!(mask("SigBlk:"), 0, "{what}: signals blocked:\n{out}");
    // busybox's `sh -c` ignores SIGQUIT itself.
    let quit = 1 << (libc::SIGQUIT - 1);
    assert_eq!(
        mask("SigIgn:") & !quit,
        0,
        "{what}: signals the caller ignored:\n{out}"
    );
    let fds: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != "fds:")
        .skip(1)
        .take_while(|l| *l != "end-fds")
        .collect();
    assert_eq!(fds, ["0", "1", "2"], "{what}: fds beyond stdio:\n{out}");
    let env: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("env: "))
        .collect();
    for (k, _) in HOST_ONLY {
        assert!(
            !env.iter().any(|e| e.starts_with(&format!("{k}="))),
            "{what}: the host's {k} reached the guest: {env:?}"
        );
    }
    for want in ["TERM=s39-term", "container=unifs", "HOME=/root"] {
        assert!(env.contains(&want), "{what}: no {want} in {env:?}");
    }
}

#[test]
fn s39_run_command_gets_nothing_of_its_callers_state() {
    if !can_run("s39_run_command_gets_nothing_of_its_callers_state") {
        return;
    }
    let t = TestRoot::new();
    for opts in [&[][..], &["--init"], &["--root-mount", "bind"]] {
        let mut cmd = Command::new(unifs_bin());
        cmd.arg("run").arg("--root").arg(t.root()).args(opts);
        cmd.args(["--", "/bin/sh", "-c", PROBE]);
        as_careless_caller(&mut cmd, host_file(&t));
        let o = run_bounded(cmd, Duration::from_secs(30));
        assert!(o.status.success(), "run {opts:?}: {}", stderr(&o));
        assert_clean(&stdout(&o), &format!("run {opts:?}"));
    }
}

/// `guest exec` or `enter` of `g`, as a careless caller.
fn careless(g: &Guest, args: &[&str]) -> Command {
    let mut cmd = g.cmd(args);
    as_careless_caller(&mut cmd, host_file(&g.t));
    cmd
}

#[test]
fn s39_named_guest_init_exec_and_enter_get_nothing_of_their_callers_state() {
    if !can_run("s39_named_guest_init_exec_and_enter_get_nothing_of_their_callers_state") {
        return;
    }
    let init = format!(
        "[\"/bin/sh\", \"-c\", {:?}]",
        format!("{PROBE}; exec sleep 1000")
    );
    let g = Guest::new("s39inherit", &init, false);
    let o = run_bounded(careless(&g, &["start", &g.name]), Duration::from_secs(30));
    assert!(o.status.success(), "start: {}", stderr(&o));
    let log = g.run_dir.join(&g.name).join("console.log");
    let mut init_out = String::new();
    assert!(
        crate::guest::harness::within_30s(|| {
            init_out = std::fs::read_to_string(&log).unwrap_or_default();
            init_out.contains("end-fds") && init_out.contains("env: container=")
        }),
        "init wrote no probe to {}: {init_out}",
        log.display()
    );
    assert_clean(&init_out, "init of guest start");

    let o = run_bounded(
        careless(&g, &["exec", &g.name, "--", "/bin/sh", "-c", PROBE]),
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "exec: {}", stderr(&o));
    let exec_out = stdout(&o);
    // exec's stdin, stdout and stderr are its own pipes: still 0 to 2.
    assert_clean(&exec_out, "guest exec");

    let enter = careless(&g, &["enter", &g.name]);
    let input = format!("{PROBE}\nexit 0\n");
    let o = run_with_input(enter, input.as_bytes(), Duration::from_secs(30));
    assert!(o.status.success(), "enter: {}", stderr(&o));
    assert_clean(&stdout(&o), "guest enter");
}

#[test]
fn s39_callers_umask_does_not_close_the_mount_points_it_makes() {
    if !can_run("s39_callers_umask_does_not_close_the_mount_points_it_makes") {
        return;
    }
    let t = TestRoot::new();
    let src = t.dir.path().join("shared");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("file"), "shared\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(src.join("file"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let bind = format!("{}:/opt/app/data:ro", src.display());
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.args(["--bind", &bind, "--uid", "1000", "--gid", "1000"]);
    cmd.args(["--", "/bin/cat", "/opt/app/data/file"]);
    as_careless_caller(&mut cmd, host_file(&t));
    let o = run_bounded(cmd, Duration::from_secs(30));
    assert_eq!(
        stdout(&o),
        "shared\n",
        "a user of the guest cannot reach the bind: {}",
        stderr(&o)
    );
    for dir in ["opt", "opt/app"] {
        let mode = std::fs::metadata(t.root().join(dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{dir} made by the set-up");
    }
}

#[test]
fn s39_run_started_with_signals_blocked_still_passes_sigterm_on() {
    if !can_run("s39_run_started_with_signals_blocked_still_passes_sigterm_on") {
        return;
    }
    let t = TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.args(["--root-mount", "bind", "--init", "--", "/bin/sleep", "1000"]);
    // SAFETY: sigemptyset, sigaddset and sigprocmask only, on a local set.
    unsafe {
        cmd.pre_exec(|| {
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
                libc::sigaddset(&mut set, sig);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = child.0.as_ref().unwrap().id();
    crate::guest::harness::wait_for_descendant(pid, "sleep");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let o = wait_bounded(child, Duration::from_secs(30));
    assert_eq!(
        o.status.code(),
        Some(143),
        "the command, told of the SIGTERM, ends of it: {}",
        stderr(&o)
    );
}
