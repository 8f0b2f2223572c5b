//! `unifs run`: what a one-shot guest sees and cannot do.

use super::harness::{can_run, ok, run_bounded, stderr, stdout, HostMount, TestRoot};
use crate::common::{signal_pending, unifs_bin};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn run_pid_1_is_the_command() {
    if !can_run("run_pid_1_is_the_command") {
        return;
    }
    let t = TestRoot::new();
    assert_eq!(ok(&t.sh(&[], "echo $$")).trim(), "1");
    // A session of its own (field 6 of stat is the session id): no
    // controlling terminal shared with the host, so no TIOCSTI into it.
    assert_eq!(ok(&t.sh(&[], "cut -d' ' -f6 /proc/1/stat")).trim(), "1");
    // With --init the command runs under the reaper, as PID 2.
    assert_eq!(ok(&t.sh(&["--init"], "echo $$")).trim(), "2");
}

#[test]
fn run_host_processes_are_invisible() {
    if !can_run("run_host_processes_are_invisible") {
        return;
    }
    let t = TestRoot::new();
    let mut host =
        super::harness::KillOnDrop(Some(Command::new("sleep").arg("30").spawn().unwrap()));
    let host_pid = host.0.as_ref().unwrap().id();
    // Only shell builtins, so the guest has exactly one process.
    let out = ok(&t.sh(
        &[],
        "for p in /proc/[0-9]*; do echo ${p#/proc/}; done; kill -0 $0 2>/dev/null; echo",
    ));
    let pids: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(pids, ["1"], "guest sees: {out}");
    let script = format!("kill -0 {host_pid} && echo visible || echo gone");
    assert_eq!(ok(&t.sh(&[], &script)).trim(), "gone");
    assert!(
        host.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "host sleep must live on"
    );
}

#[test]
fn run_hostname_is_the_guests() {
    if !can_run("run_hostname_is_the_guests") {
        return;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let t = TestRoot::new();
    assert_eq!(
        ok(&t.sh(&["--hostname", "web7"], "hostname")).trim(),
        "web7"
    );
    // Default: the root directory's name. The host's stays as it was.
    assert_eq!(ok(&t.sh(&[], "hostname")).trim(), "root");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host
    );
}

#[test]
fn run_hostname_longer_than_the_kernel_takes() {
    if !can_run("run_hostname_longer_than_the_kernel_takes") {
        return;
    }
    // sethostname(2) takes at most 64 bytes. A root directory with a longer
    // name could not be run without --hostname ("setting up the guest
    // failed: sethostname …: EINVAL"); its default is cut to 64 bytes now,
    // and a --hostname that long is refused up front, saying why.
    let t = TestRoot::new();
    let long = t.dir.path().join("h".repeat(70));
    std::fs::rename(t.root(), &long).unwrap();
    let run = |opts: &[&str]| {
        let mut cmd = Command::new(unifs_bin());
        cmd.arg("run").arg("--root").arg(&long).args(opts);
        cmd.args(["--", "/bin/hostname"]);
        run_bounded(cmd, Duration::from_secs(30))
    };
    assert_eq!(ok(&run(&[])).trim(), "h".repeat(64));
    let too_long = "z".repeat(65);
    let out = run(&["--hostname", &too_long]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("invalid host name") && stderr(&out).contains("64 bytes"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        ok(&run(&["--hostname", &too_long[..64]])).trim(),
        &too_long[..64]
    );
}

#[test]
fn run_root_is_the_guest_root_without_escape() {
    if !can_run("run_root_is_the_guest_root_without_escape") {
        return;
    }
    let t = TestRoot::new();
    std::fs::write(t.root().join("marker"), "inside\n").unwrap();
    std::fs::write(t.dir.path().join("outside"), "host\n").unwrap();
    let out = ok(&t.sh(&[], "cat /marker; cd /; cd ../../..; pwd; cat outside 2>&1; cat /../outside 2>&1; ls -a /.. | tr '\\n' ' '"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "inside");
    assert_eq!(lines[1], "/");
    assert!(lines[2].contains("No such file"), "{out}");
    assert!(lines[3].contains("No such file"), "{out}");
    assert!(lines[4].contains("marker"), "/.. is / itself: {out}");
    // The old root is gone: only the guest's own mounts remain.
    let mounts = ok(&t.sh(&[], "cut -d' ' -f5 /proc/self/mountinfo"));
    let points: Vec<&str> = mounts.lines().collect();
    assert_eq!(points[0], "/", "{mounts}");
    for p in &points {
        let allowed = [
            "/",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/proc",
            "/sys",
            "/run",
            "/run/lock",
        ];
        assert!(
            allowed.contains(p) || p.starts_with("/proc/") || p.starts_with("/sys/"),
            "unexpected mount {p} in the guest:\n{mounts}"
        );
    }
    // No host cgroup hierarchy: only the guest's own v2 group, at one place.
    let cgroups: Vec<&&str> = points.iter().filter(|p| p.contains("cgroup")).collect();
    assert!(cgroups.len() <= 1, "{mounts}");
    assert!(cgroups.iter().all(|p| **p == "/sys/fs/cgroup"), "{mounts}");
}

#[test]
fn run_proc_sys_and_sys_are_read_only() {
    if !can_run("run_proc_sys_and_sys_are_read_only") {
        return;
    }
    let t = TestRoot::new();
    let out = t.sh(
        &[],
        "echo evil > /proc/sys/kernel/hostname; echo a=$?; touch /sys/x; echo b=$?; \
         echo 1 > /proc/sys/vm/drop_caches; echo c=$?; cat /proc/sys/kernel/ostype",
    );
    let o = stdout(&out);
    assert!(
        o.contains("a=1") && o.contains("b=1") && o.contains("c=1"),
        "{o}"
    );
    assert!(o.contains("Linux"), "/proc/sys stays readable: {o}");
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_mount_mknod_and_module_loading_fail() {
    if !can_run("run_mount_mknod_and_module_loading_fail") {
        return;
    }
    let t = TestRoot::new();
    std::fs::write(t.root().join("tmp/dummy.ko"), "not a module").unwrap();
    let out = t.sh(
        &[],
        "mount -t tmpfs none /mnt; echo mount=$?; mount -o remount,rw /sys; echo remount=$?; \
         umount /proc; echo umount=$?; mknod /tmp/null c 1 3; echo mknod=$?; \
         insmod /tmp/dummy.ko; echo insmod=$?; grep CapBnd /proc/self/status",
    );
    let o = stdout(&out);
    for step in ["mount", "remount", "umount", "mknod", "insmod"] {
        let code = o.lines().find_map(|l| l.strip_prefix(&format!("{step}=")));
        assert!(
            code.is_some_and(|c| c != "0"),
            "{step} must fail:\n{o}\n{}",
            stderr(&out)
        );
    }
    assert!(!t.root().join("tmp/null").exists());
    let bnd = o.lines().find(|l| l.starts_with("CapBnd")).unwrap();
    let mask = u64::from_str_radix(bnd.split_whitespace().nth(1).unwrap(), 16).unwrap();
    // sys_module 16, sys_rawio 17, sys_ptrace 19, sys_admin 21, mknod 27.
    for cap in [16, 17, 19, 21, 27] {
        assert_eq!(
            mask & (1 << cap),
            0,
            "capability {cap} must be out of the bounding set"
        );
    }
}

#[test]
fn run_no_ptrace_of_outside_processes() {
    if !can_run("run_no_ptrace_of_outside_processes") {
        return;
    }
    let t = TestRoot::new();
    // An outside process has no PID inside, so nothing can name it; the
    // launcher's own PID 1 (--init) is not dumpable, so guest root cannot
    // open its memory, fds or executable; and sys_ptrace is gone.
    let mut host =
        super::harness::KillOnDrop(Some(Command::new("sleep").arg("30").spawn().unwrap()));
    let host_pid = host.0.as_ref().unwrap().id();
    let script = format!(
        "test -e /proc/{host_pid} && echo host-visible; cat /proc/1/environ >/dev/null 2>&1 && echo environ-readable; \
         readlink /proc/1/fd/1 >/dev/null 2>&1 && echo fds-readable; readlink /proc/1/exe && echo exe-visible; \
         grep -c . /proc/self/status >/dev/null && echo own-ok; grep -E 'NoNewPrivs|CapEff' /proc/self/status"
    );
    let out = ok(&t.sh(&["--init"], &script));
    assert!(out.contains("own-ok"), "{out}");
    for bad in [
        "host-visible",
        "environ-readable",
        "fds-readable",
        "exe-visible",
    ] {
        assert!(!out.contains(bad), "{bad}: {out}");
    }
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    let eff = out.lines().find(|l| l.starts_with("CapEff")).unwrap();
    let mask = u64::from_str_radix(eff.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(mask & (1 << 19), 0, "sys_ptrace kept: {eff}");
    assert!(host.0.as_mut().unwrap().try_wait().unwrap().is_none());
}

#[test]
fn run_setuid_binaries_do_not_regain_privileges() {
    if !can_run("run_setuid_binaries_do_not_regain_privileges") {
        return;
    }
    let t = TestRoot::new();
    // A setuid-root busybox told (busybox.conf) to keep root for `id`.
    std::fs::create_dir(t.root().join("suid")).unwrap();
    let suid = t.root().join("suid/busybox");
    std::fs::copy("/bin/busybox", &suid).unwrap();
    std::fs::set_permissions(&suid, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    std::fs::write(t.root().join("etc/busybox.conf"), "[SUID]\nid = ssx 0.0\n").unwrap();
    std::fs::set_permissions(
        t.root().join("etc/busybox.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = ok(&t.sh(
        &["--uid", "1000", "--gid", "1000"],
        "/suid/busybox id; grep CapEff /proc/self/status",
    ));
    assert!(out.contains("uid=1000"), "{out}");
    assert!(
        !out.contains("euid=0"),
        "setuid root must not take effect: {out}"
    );
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
}

#[test]
fn run_exit_status_is_the_commands() {
    if !can_run("run_exit_status_is_the_commands") {
        return;
    }
    let t = TestRoot::new();
    assert_eq!(t.sh(&[], "exit 42").status.code(), Some(42));
    assert_eq!(t.sh(&[], "true").status.code(), Some(0));
    // Killed by a signal: 128 + signal, as a shell reports it.
    assert_eq!(t.sh(&["--init"], "kill -TERM $$").status.code(), Some(143));
}

#[test]
fn run_missing_command_is_a_clear_error() {
    if !can_run("run_missing_command_is_a_clear_error") {
        return;
    }
    let t = TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run")
        .arg("--root")
        .arg(t.root())
        .args(["--", "/bin/no-such-tool"]);
    let out = run_bounded(cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("/bin/no-such-tool: command not found in guest root"),
        "{err}"
    );
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run")
        .arg("--root")
        .arg(t.dir.path().join("nowhere"))
        .args(["--", "/bin/sh"]);
    let out = run_bounded(cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nowhere"), "{}", stderr(&out));
}

#[test]
fn run_command_that_cannot_be_executed_is_a_clear_error() {
    if !can_run("run_command_that_cannot_be_executed_is_a_clear_error") {
        return;
    }
    // A guest with a broken /bin/sh: the program is there, but the kernel
    // cannot run it. That exec happens in the trampoline, after the
    // launcher let go; it was a silent exit 127, as if the command had run.
    use std::os::unix::fs::PermissionsExt;
    let t = TestRoot::new();
    let bin = t.root().join("bin");
    std::fs::write(bin.join("broken"), "#!/no/such/interpreter\necho hi\n").unwrap();
    std::fs::write(bin.join("garbage"), b"\x00\x01\x02 no program").unwrap();
    for f in ["broken", "garbage"] {
        std::fs::set_permissions(bin.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (program, why) in [
        ("/bin/broken", "ENOENT"),
        ("/bin/broken", "interpreter is missing"),
        ("/bin/garbage", "ENOEXEC"),
    ] {
        for opts in [&[][..], &["--init"][..]] {
            let mut cmd = Command::new(unifs_bin());
            cmd.arg("run").arg("--root").arg(t.root()).args(opts);
            cmd.args(["--", program]);
            let out = run_bounded(cmd, Duration::from_secs(30));
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{program} {opts:?}: {err}");
            assert!(
                err.contains(&format!("exec {program}")) && err.contains(why),
                "{program} {opts:?}: {err}"
            );
        }
    }
}

#[test]
fn run_binds_env_and_uid() {
    if !can_run("run_binds_env_and_uid") {
        return;
    }
    let t = TestRoot::new();
    let shared = t.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("f"), "from host\n").unwrap();
    let ro = format!("{}:/data:ro", shared.display());
    let rw = format!("{}:/rw", shared.display());
    let out = t.sh(
        &["--bind", &ro, "--bind", &rw, "--env", "GREETING=hi", "--uid", "0"],
        "cat /data/f; echo x > /data/new; echo ro=$?; echo y > /rw/new; echo rw=$?; echo $GREETING; id -u",
    );
    let o = stdout(&out);
    assert!(
        o.contains("from host") && o.contains("ro=1") && o.contains("rw=0"),
        "{o}"
    );
    assert!(o.contains("hi\n0\n"), "{o}");
    assert!(shared.join("new").exists());
}

#[test]
fn run_forwards_sigterm_to_the_guest() {
    if !can_run("run_forwards_sigterm_to_the_guest") {
        return;
    }
    let t = TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run")
        .arg("--init")
        .arg("--root")
        .arg(t.root())
        .args(["--", "/bin/sleep", "30"]);
    cmd.stdout(std::process::Stdio::null());
    let mut child = super::harness::KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = child.0.as_ref().unwrap().id() as i32;
    // Signal once the command runs (under the reaper, a grandchild).
    super::harness::wait_for_descendant(pid as u32, "sleep");
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let start = Instant::now();
    let out = super::harness::wait_bounded(
        super::harness::KillOnDrop(child.0.take()),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(143));
    // Well before the command's own end (30 s), on a loaded machine too.
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn run_passes_sigterm_on_as_the_stop_signal() {
    if !can_run("run_passes_sigterm_on_as_the_stop_signal") {
        return;
    }
    // A systemd guest takes SIGTERM for "re-execute yourself": `unifs run`
    // passes the operator's SIGTERM on as --stop-signal (SIGRTMIN+3 for a
    // systemd command by default). Here: an init that ends on SIGUSR1 only.
    let t = TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.args(["--stop-signal", "SIGUSR1", "--", "/bin/sh", "-c"]);
    cmd.arg("trap 'echo stopped; exit 7' USR1; while :; do sleep 0.05; done");
    cmd.stdout(std::process::Stdio::piped());
    let child = super::harness::KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = child.0.as_ref().unwrap().id();
    super::harness::wait_for_descendant(pid, "sleep");
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let out = super::harness::wait_bounded(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "stopped\n");
}

/// A guest that a signal does not end kept `unifs run` waiting, whatever
/// the operator sent it: a PID 1 without a handler ignores SIGTERM, and a
/// process frozen in its v1 freezer group (guest root can freeze its own)
/// ends on nothing. The second signal now ends the guest outright.
#[test]
fn run_a_second_signal_ends_a_guest_the_first_did_not() {
    if !can_run("run_a_second_signal_ends_a_guest_the_first_did_not") {
        return;
    }
    let t = TestRoot::new();
    for freeze in [false, true] {
        let mut cmd = Command::new(unifs_bin());
        cmd.arg("run").arg("--root").arg(t.root());
        cmd.args(["--", "/bin/sleep", "30"]);
        cmd.stdout(std::process::Stdio::null());
        let mut child = super::harness::KillOnDrop(Some(cmd.spawn().unwrap()));
        let pid = child.0.as_ref().unwrap().id();
        let sleep = super::harness::wait_for_descendant(pid, "sleep");
        let freezer = std::fs::read_to_string(format!("/proc/{sleep}/cgroup"))
            .unwrap()
            .lines()
            .find_map(|l| Some(l.split_once(":freezer:")?.1.to_string()));
        let state = freezer.map(|g| format!("/sys/fs/cgroup/freezer{g}/freezer.state"));
        if freeze {
            let Some(state) = &state else {
                eprintln!("no v1 freezer here: the frozen case is not checked");
                continue;
            };
            std::fs::write(state, "FROZEN").unwrap();
        }
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        // Taken before the second is sent (two pending at once are one; a
        // fixed pause was too short on a loaded machine).
        let taken = super::harness::within_30s(|| !signal_pending(pid, libc::SIGTERM));
        assert!(taken, "freeze {freeze}: the first SIGTERM was never taken");
        // Nothing marks the run's choice not to end: a moment to end in
        // (a late end only makes this pass).
        std::thread::sleep(Duration::from_millis(300));
        let waiting = child.0.as_mut().unwrap().try_wait().unwrap().is_none();
        assert!(waiting, "freeze {freeze}: the first SIGTERM ended it");
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let start = Instant::now();
        let out = super::harness::wait_bounded(
            super::harness::KillOnDrop(child.0.take()),
            Duration::from_secs(30),
        );
        assert_eq!(out.status.code(), Some(137), "freeze {freeze}");
        // Well before the guest's own end (30 s), on a loaded machine too.
        assert!(start.elapsed() < Duration::from_secs(20), "freeze {freeze}");
        assert!(
            !super::harness::alive(sleep as i64),
            "freeze {freeze}: the guest lives"
        );
        if let Some(state) = state {
            assert!(
                !std::path::Path::new(&state).exists(),
                "freeze {freeze}: its group stays"
            );
        }
    }
}

#[test]
fn run_ctrl_z_does_not_leave_the_guest_reading_the_terminal() {
    if !can_run("run_ctrl_z_does_not_leave_the_guest_reading_the_terminal") {
        return;
    }
    // Ctrl-Z stopped `unifs run` alone: the host's shell took the terminal
    // back while the guest, a session of its own that the signal does not
    // reach, went on reading it and got what was typed to the shell next.
    // The launcher ignores the terminal's stop signals.
    let t = TestRoot::new();
    for opts in [&[][..], &["--init"][..]] {
        let mut cmd = Command::new(unifs_bin());
        cmd.arg("run").arg("--root").arg(t.root()).args(opts);
        cmd.args(["--", "/bin/sleep", "30"]);
        cmd.stdout(std::process::Stdio::null());
        let child = super::harness::KillOnDrop(Some(cmd.spawn().unwrap()));
        let pid = child.0.as_ref().unwrap().id();
        super::harness::wait_for_descendant(pid, "sleep");
        for sig in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid as i32, sig) };
        }
        // An ignored signal leaves no trace to wait for: a moment to stop
        // in (a late stop only makes this pass).
        std::thread::sleep(Duration::from_millis(300));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let state = stat[stat.rfind(')').unwrap() + 2..].chars().next();
        assert_ne!(state, Some('T'), "{opts:?}: unifs run was stopped");
    }
}

#[test]
fn run_inherited_fds_do_not_reach_the_guest() {
    if !can_run("run_inherited_fds_do_not_reach_the_guest") {
        return;
    }
    let t = TestRoot::new();
    // fd 7 is a host directory: with it a guest could fchdir out of its root.
    for init in [&[][..], &["--init"][..]] {
        let script = format!(
            "exec 7</ ; exec {} run {} --root {} -- /bin/sh -c 'ls /proc/self/fd /proc/1/fd | tr \"\\n\" \" \"'",
            unifs_bin().display(),
            init.join(" "),
            t.root().display()
        );
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", &script]);
        let out = ok(&run_bounded(cmd, Duration::from_secs(30)));
        assert!(
            !out.split_whitespace().any(|f| f == "7"),
            "fd 7 leaked ({init:?}): {out}"
        );
    }
}

#[test]
fn run_needs_root_and_says_so() {
    if !can_run("run_needs_root_and_says_so") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let t = TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run")
        .arg("--root")
        .arg(t.root())
        .args(["--", "/bin/true"]);
    cmd.uid(65534).gid(65534);
    let out = run_bounded(cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("needs root"), "{}", stderr(&out));
}

#[test]
fn run_proc_self_exe_is_not_the_hosts_unifs() {
    if !can_run("run_proc_self_exe_is_not_the_hosts_unifs") {
        return;
    }
    let t = TestRoot::new();
    // A guest script whose interpreter is /proc/self/exe: if the launcher
    // exec'd it directly, the kernel would run the host's unifs binary in
    // the guest (and guest root could later write to it). Through the exec
    // trampoline it runs the trampoline, which execs /bin/busybox as "echo".
    std::fs::write(t.root().join("tmp/echo"), "#!/proc/self/exe /bin/busybox\n").unwrap();
    std::fs::set_permissions(
        t.root().join("tmp/echo"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for opts in [&[][..], &["--init"][..]] {
        let mut cmd = Command::new(unifs_bin());
        cmd.arg("run")
            .args(opts)
            .arg("--root")
            .arg(t.root())
            .args(["--", "/tmp/echo"]);
        let out = run_bounded(cmd, Duration::from_secs(30));
        assert!(
            !stderr(&out).contains("unifs"),
            "the host's unifs ran in the guest: {}",
            stderr(&out)
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "\n");
    }
}

#[test]
fn run_device_nodes_in_the_guest_tree_are_dead() {
    if !can_run("run_device_nodes_in_the_guest_tree_are_dead") {
        return;
    }
    let t = TestRoot::new();
    // A device node the image brought along (not under /dev): the guest
    // must not reach the device through it.
    let node = t.root().join("tmp/mem");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let out = t.sh(&[], "echo x > /tmp/mem && echo wrote; head -c1 /tmp/mem >/dev/null && echo read; echo x > /dev/null && echo dev-ok");
    let o = stdout(&out);
    assert!(
        !o.contains("wrote") && !o.contains("read"),
        "device node usable: {o}"
    );
    assert!(o.contains("dev-ok"), "our /dev works: {o}");
}

#[test]
fn run_guest_dies_with_a_killed_launcher() {
    if !can_run("run_guest_dies_with_a_killed_launcher") {
        return;
    }
    let t = TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run")
        .arg("--root")
        .arg(t.root())
        .args(["--", "/bin/sleep", "30"]);
    let mut launcher = super::harness::KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = launcher.0.as_ref().unwrap().id();
    let guest = super::harness::wait_for_descendant(pid, "sleep");
    launcher.0.as_mut().unwrap().kill().unwrap();
    launcher.0.as_mut().unwrap().wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{guest}")).exists()
        && !std::fs::read_to_string(format!("/proc/{guest}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        assert!(
            Instant::now() < deadline,
            "guest {guest} outlived its launcher"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn run_submounts_of_the_root_and_of_read_only_binds_are_locked_too() {
    if !can_run("run_submounts_of_the_root_and_of_read_only_binds_are_locked_too") {
        return;
    }
    let t = TestRoot::new();
    // The root has a filesystem of its own below it (as a separate /var or
    // /home), holding a device node the image brought along.
    let sub = HostMount::tmpfs_of_size("1m", &t.root().join("mnt/sub"));
    nix::sys::stat::mknod(
        &sub.0.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    // A host directory bound read-only with a filesystem mounted below it.
    let shared = t.dir.path().join("shared");
    let shared_sub = HostMount::tmpfs_of_size("1m", &shared.join("sub"));
    let ro = format!("{}:/data:ro", shared.display());
    let out = t.sh(
        &["--root-mount", "bind", "--bind", &ro],
        "echo x > /mnt/sub/null && echo dev-usable; \
         touch /data/top && echo top-writable; \
         touch /data/sub/f && echo sub-writable; echo done",
    );
    let o = stdout(&out);
    assert!(o.contains("done"), "{o}{}", stderr(&out));
    assert!(!o.contains("dev-usable"), "nodev lost on a submount: {o}");
    assert!(!o.contains("top-writable"), "{o}");
    assert!(
        !o.contains("sub-writable") && !shared_sub.0.join("f").exists(),
        "a read-only bind's submount was writable: {o}"
    );
}

#[test]
fn run_kernel_interfaces_are_masked() {
    if !can_run("run_kernel_interfaces_are_masked") {
        return;
    }
    let t = TestRoot::new();
    // What docker, nspawn and bwrap hide: host-wide kernel state and
    // firmware. Files read empty (/dev/null over them), directories are
    // empty and read-only.
    let files = [
        "kcore",
        "keys",
        "timer_list",
        "sched_debug",
        "latency_stats",
        "timer_stats",
    ];
    let dirs = [
        "/proc/acpi",
        "/proc/scsi",
        "/proc/asound",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ];
    let mut script = String::new();
    for f in files {
        script += &format!("[ -e /proc/{f} ] && echo {f}=$(head -c 64 /proc/{f} | wc -c); ");
    }
    for d in dirs {
        script += &format!("[ -d {d} ] && echo {d}=$(ls -A {d} | wc -l); touch {d}/x 2>/dev/null && echo {d}-writable; ");
    }
    script += "echo done";
    let out = t.sh(&[], &script);
    let o = stdout(&out);
    assert!(o.contains("done"), "{o}{}", stderr(&out));
    for line in o.lines().filter(|l| l.contains('=')) {
        assert!(line.ends_with("=0"), "not masked: {line}\n{o}");
    }
    assert!(!o.contains("-writable"), "{o}");
    // Where the host has them, the guest saw them (masked), not nothing.
    for d in dirs {
        if std::path::Path::new(d).is_dir() {
            assert!(
                o.contains(&format!("{d}=")),
                "{d} missing in the guest: {o}"
            );
        }
    }
}

#[test]
fn run_read_only_bind_keeps_the_sources_noexec() {
    if !can_run("run_read_only_bind_keeps_the_sources_noexec") {
        return;
    }
    let t = TestRoot::new();
    // A host filesystem mounted noexec (as /tmp or /home often are), with a
    // program on it: a bind must never be more permissive than its source.
    let shared = t.dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &shared,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOEXEC | nix::mount::MsFlags::MS_NOATIME,
        Some("size=1m"),
    )
    .unwrap();
    let _host = HostMount(shared.clone());
    std::fs::write(shared.join("prog"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(
        shared.join("prog"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let ro = format!("{}:/data:ro", shared.display());
    let rw = format!("{}:/rw", shared.display());
    let out = t.sh(
        &["--bind", &ro, "--bind", &rw],
        "/data/prog && echo ro-exec; /rw/prog && echo rw-exec; \
         grep -E ' /(data|rw) ' /proc/self/mountinfo; echo done",
    );
    let o = stdout(&out);
    assert!(o.contains("done"), "{o}{}", stderr(&out));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    assert_eq!(o.matches(" - tmpfs ").count(), 2, "{o}");
    assert!(
        !o.contains("ro-exec"),
        "noexec lost on a read-only bind: {o}"
    );
    assert!(!o.contains("rw-exec"), "noexec lost on a bind: {o}");
    for line in o
        .lines()
        .filter(|l| l.contains(" /data ") || l.contains(" /rw "))
    {
        let opts = line.split(' ').nth(5).unwrap();
        assert!(opts.contains("noatime"), "noatime lost: {line}");
    }
}

#[test]
fn run_device_nodes_in_a_writable_bind_are_dead() {
    if !can_run("run_device_nodes_in_a_writable_bind_are_dead") {
        return;
    }
    let t = TestRoot::new();
    // A host directory holding a device node (a chroot or image tree, a
    // backup of /dev), bound writable: guest root (dac_override) must not
    // reach the device through it, nor through one it makes itself.
    let shared = t.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    nix::sys::stat::mknod(
        &shared.join("mem"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let rw = format!("{}:/rw", shared.display());
    let out = t.sh(
        &["--bind", &rw, "--cap-add", "mknod"],
        "echo x > /rw/mem && echo old-usable; mknod /rw/new c 1 3 && echo made; \
         echo x > /rw/new && echo new-usable; echo y > /rw/file && echo done",
    );
    let o = stdout(&out);
    assert!(o.contains("done"), "{o}{}", stderr(&out));
    assert!(o.contains("made"), "{o}{}", stderr(&out));
    assert!(!o.contains("old-usable"), "device node usable: {o}");
    assert!(!o.contains("new-usable"), "device node usable: {o}");
}

#[test]
fn run_guest_does_not_share_the_launchers_session_keyring() {
    if !can_run("run_guest_does_not_share_the_launchers_session_keyring") {
        return;
    }
    let python = std::path::Path::new("/usr/bin/python3");
    if !python.exists() {
        crate::common::skip(
            "run_guest_does_not_share_the_launchers_session_keyring",
            "needs /usr/bin/python3 (Debian python3)",
        );
        return;
    }
    // The host's /usr bound in, for python's keyctl call (busybox has none).
    let t = TestRoot::new();
    for l in ["lib", "lib64"] {
        std::os::unix::fs::symlink(format!("usr/{l}"), t.root().join(l)).unwrap();
    }
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    // The default filter refuses keyctl outright: without it, the session
    // keyring is what keeps the host session's keys out.
    cmd.args(["--syscall-filter", "off"]);
    cmd.args(["--root-mount", "bind", "--bind", "/usr:/usr:ro", "--"]);
    cmd.args([
        "/usr/bin/python3",
        "-c",
        "import ctypes\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         # keyctl(KEYCTL_SEARCH, KEY_SPEC_SESSION_KEYRING, type, description, 0)\n\
         r = libc.syscall(250, 10, -3, b'user', b'unifs-test-secret', 0)\n\
         print('found' if r > 0 else 'absent')\n",
    ]);
    // A login's session keyring holding a secret (as pam_keyinit makes one).
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let name = c"unifs-test-session";
            if libc::syscall(libc::SYS_keyctl, 1, name.as_ptr()) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let rc = libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"unifs-test-secret".as_ptr(),
                c"x".as_ptr(),
                1usize,
                -3i32,
            );
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = run_bounded(cmd, Duration::from_secs(30));
    assert_eq!(
        ok(&out).trim(),
        "absent",
        "the guest reads the host session's keys"
    );
}

#[test]
fn run_read_only_bind_keeps_the_sources_nosymfollow() {
    if !can_run("run_read_only_bind_keeps_the_sources_nosymfollow") {
        return;
    }
    let t = TestRoot::new();
    // A host filesystem mounted nosymfollow (an upload area whose symlinks
    // must not be followed): a read-only bind of it must not follow them
    // either.
    let shared = t.dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &shared,
        Some("tmpfs"),
        nix::mount::MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW),
        Some("size=1m"),
    )
    .unwrap();
    let _host = HostMount(shared.clone());
    std::fs::write(shared.join("file"), "secret\n").unwrap();
    std::os::unix::fs::symlink("file", shared.join("link")).unwrap();
    let ro = format!("{}:/data:ro", shared.display());
    let rw = format!("{}:/rw", shared.display());
    let out = t.sh(
        &["--bind", &ro, "--bind", &rw],
        "cat /data/link && echo ro-followed; cat /rw/link && echo rw-followed; \
         grep -E ' /(data|rw) ' /proc/self/mountinfo; echo done",
    );
    let o = stdout(&out);
    assert!(o.contains("done"), "{o}{}", stderr(&out));
    assert!(
        !o.contains("ro-followed"),
        "nosymfollow lost on a read-only bind: {o}"
    );
    assert!(
        !o.contains("rw-followed"),
        "nosymfollow lost on a bind: {o}"
    );
    for line in o
        .lines()
        .filter(|l| l.contains(" /data ") || l.contains(" /rw "))
    {
        let opts = line.split(' ').nth(5).unwrap();
        assert!(opts.contains("nosymfollow"), "nosymfollow lost: {line}");
    }
}

#[test]
fn run_guest_gets_its_own_cgroup_subtree_at_sys_fs_cgroup() {
    let test = "run_guest_gets_its_own_cgroup_subtree_at_sys_fs_cgroup";
    if !can_run(test) || !super::harness::has_cgroup2(test) {
        return;
    }
    // What systemd needs to run services: a writable v2 group of the
    // guest's own, where it can make groups and move processes. The guest
    // is at the root of what it sees, sees its own processes only, and
    // makes groups only so deep.
    let t = TestRoot::new();
    let out = t.sh(
        &["--root-mount", "bind"],
        "grep '^0::' /proc/self/cgroup; \
         cat /sys/fs/cgroup/cgroup.procs | wc -l; \
         mkdir /sys/fs/cgroup/svc && echo $$ > /sys/fs/cgroup/svc/cgroup.procs && \
         grep '^0::' /proc/self/cgroup; \
         echo $$ > /sys/fs/cgroup/cgroup.procs && rmdir /sys/fs/cgroup/svc && echo moved back; \
         cd /sys/fs/cgroup && n=0 && while mkdir d 2>/dev/null && cd d; do n=$((n+1)); done; \
         echo $n",
    );
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "0::/", "{text}");
    // sh and cat (and wc): the guest's processes only.
    let n: usize = lines[1].trim().parse().unwrap();
    assert!((1..=3).contains(&n), "{text}");
    assert_eq!(lines[2], "0::/svc", "{text}");
    assert_eq!(lines[3], "moved back", "{text}");
    // cgroup.max.depth on the group above the guest's (which is level 1).
    assert_eq!(
        lines[4],
        (unifs::guest::cgroup::V2_MAX_DEPTH - 1).to_string(),
        "{text}"
    );
}

#[test]
fn run_boots_systemd_and_stops_it_on_sigterm() {
    let test = "run_boots_systemd_and_stops_it_on_sigterm";
    if !can_run(test) {
        return;
    }
    let systemd = std::path::Path::new("/usr/lib/systemd/systemd");
    if !systemd.exists() {
        let why = format!("needs {} (.ci/run installs systemd)", systemd.display());
        crate::common::skip(test, &why);
        return;
    }
    if !super::harness::has_cgroup2(test) {
        return;
    }
    // systemd as the guest's init, from the host's /usr: it exited 255 at
    // once without a cgroup hierarchy of its own and a /run/lock tmpfs.
    // It ends on SIGRTMIN+3 (it re-executes itself on SIGTERM), which
    // `unifs run` picks when the command in the root is systemd: the root
    // holds it, as a real one would; at run time the bind of the host's
    // /usr (with the libraries it needs) lies over it.
    let t = TestRoot::new();
    let own = t.root().join("usr/lib/systemd");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::copy(systemd, own.join("systemd")).unwrap();
    for (link, to) in [
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/sbin"),
    ] {
        std::os::unix::fs::symlink(to, t.root().join(link)).unwrap();
    }
    std::fs::create_dir(t.root().join("var")).unwrap();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.args(["--root-mount", "bind", "--bind", "/usr:/usr:ro"]);
    cmd.arg("--");
    cmd.arg(systemd).arg("--unit=multi-user.target");
    cmd.stdout(std::process::Stdio::null());
    cmd.stderr(std::process::Stdio::piped());
    let child = super::harness::KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = child.0.as_ref().unwrap().id();
    // Booted: it started its journal (comm is cut to 15 bytes).
    super::harness::wait_for_descendant(pid, "systemd-journal");
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let out = super::harness::wait_bounded(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for h in [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/pids",
    ] {
        let left = super::harness::run_group(std::path::Path::new(h), pid);
        assert!(left.is_none(), "{left:?} left behind");
    }
}

#[test]
fn run_of_a_root_on_another_filesystem_than_the_store_says_both_ways_out() {
    if !can_run("run_of_a_root_on_another_filesystem_than_the_store_says_both_ways_out") {
        return;
    }
    // It said only "put the store on" the root's filesystem: `run` may
    // name any store, or go without the overlay.
    let t = TestRoot::new();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let store = shm.path().join("store");
    let init = Command::new(unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["store", "init"])
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("--store").arg(&store);
    cmd.args(["run", "--root"])
        .arg(t.root())
        .args(["--", "/bin/true"]);
    let out = run_bounded(cmd, Duration::from_secs(30));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot cross filesystems") && err.contains("--root-mount bind"),
        "{err}"
    );
}
