//! Session 47, review of "console3" (task "consrev3"): `guest exec`'s
//! drain of its stdin pipe, when the command has ended, on kernels whose
//! pipes do not take `RWF_NOWAIT` (before Linux 6.4: Debian 12's 6.1,
//! Ubuntu 22.04's 5.15, RHEL 9's 5.14). It read no more than `FIONREAD`
//! said was there, with a blocking read: a process the command left holding
//! the pipe that read it empty between the two left that read waiting for
//! a write that never came, as long as the copy's read of the file hung (a
//! file on a hung FUSE or NFS mount), and `exec` with it.

use crate::fs::harness::World;
use crate::guest::harness::{can_run, ok, stderr, wait_bounded, within_30s, KillOnDrop};
use crate::guest::named::Guest;
use crate::review_s46_console2::Resume;
use crate::review_s47_console3::{
    file_on_a_fuse_mount, pos, stop_daemon, stopped_at, wait_until_it_runs, waits_on_a_full_pipe,
};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;
use std::time::Duration;

/// Whether process `pid` is stopped (SIGSTOP).
fn stopped(pid: u32) -> bool {
    stopped_at(std::path::Path::new(&format!("/proc/{pid}/stat")))
}

/// Whether every pipe process `pid` holds (other than its stdio) is
/// empty: each opened anew, non-blocking, through `/proc`, and asked
/// `FIONREAD`.
fn its_pipes_are_empty(pid: u32) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().all(|fd| {
        let n: i32 = fd.file_name().to_string_lossy().parse().unwrap_or(0);
        let pipe =
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().starts_with("pipe:"));
        if n <= 2 || !pipe {
            return true;
        }
        let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fd.path())
        else {
            return true;
        };
        let mut held: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int, `held`, which outlives the call.
        let asked = unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut held) };
        asked == 0 && held == 0
    })
}

/// `unifs guest exec g -- … < file`, the file on a FUSE mount whose daemon
/// is stopped once the copy has filled the pipe: the command reads 67 KB
/// and ends, leaving a process holding its stdin, and the copy's next read
/// of the file hangs. `exec`'s drain stops before its first read
/// (UNIFS_TEST_STDIN_DRAIN_STOP: where a drain by `FIONREAD` had asked
/// how much the pipe holds); the process left reads the pipe empty
/// meanwhile. Then `exec` sets the offset past what both read, with the
/// daemon still stopped, and each byte of the file is read once: by the
/// command, by the process left or by the caller's next reader. (Since
/// session 48 the drain is a non-blocking splice on every kernel, which
/// this guards: a blocking read or splice waits here.) Before: its read, sized by `FIONREAD` but
/// blocking, waited for the copy to write more or end, which it does
/// neither in a read that hangs: the offset stayed at 0 until the daemon
/// went on.
#[test]
fn s47_exec_drain_without_rwf_nowait_never_waits_on_a_pipe_emptied_by_another() {
    let test = "s47_exec_drain_without_rwf_nowait_never_waits_on_a_pipe_emptied_by_another";
    if !can_run(test) {
        return;
    }
    drain_while_another_empties_the_pipe("s47drain");
}

/// The test above, in guest `guest`.
fn drain_while_another_empties_the_pipe(guest: &str) {
    let w = World::new();
    let (m, input, data) = file_on_a_fuse_mount(&w);
    let g = Guest::new(guest, "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    let tmp = g.t.root().join("tmp");
    // The command keeps its stdin as fd 3 for a job it leaves, which reads
    // it once told to.
    let script = "exec 3<&0; touch /tmp/s47ready; until [ -e /tmp/s47go ]; do sleep 0.05; done; \
                  dd bs=1000 count=67 of=/tmp/s47first 2>/dev/null; \
                  ( until [ -e /tmp/s47go2 ]; do sleep 0.05; done; \
                    cat <&3 > /tmp/s47left.part; mv /tmp/s47left.part /tmp/s47left \
                  ) >/dev/null 2>&1 &";
    let mut cmd = g.cmd(&["exec", &g.name, "--", "/bin/sh", "-c", script]);
    cmd.env("UNIFS_TEST_STDIN_DRAIN_STOP", "1")
        .stdin(input.try_clone().unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let exec = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = exec.0.as_ref().unwrap().id();
    let go_on = Resume(pid as i32);
    assert!(
        within_30s(|| waits_on_a_full_pipe(pid)),
        "the copy never filled the pipe"
    );
    wait_until_it_runs(&tmp.join("s47ready"));
    let daemon = stop_daemon(m.pid());
    std::fs::write(tmp.join("s47go"), "").unwrap();
    assert!(
        within_30s(|| stopped(pid)),
        "exec never stopped before its drain's read"
    );
    // The process left reads all the pipe holds.
    std::fs::write(tmp.join("s47go2"), "").unwrap();
    let part = tmp.join("s47left.part");
    assert!(
        within_30s(|| {
            std::fs::metadata(&part).is_ok_and(|m| m.len() > 0) && its_pipes_are_empty(pid)
        }),
        "the process left never read the pipe"
    );
    // All the command and the process left read: where `exec` sets the
    // offset to (it cannot end before the daemon answers the copy's read).
    let size = |p: &str| std::fs::metadata(tmp.join(p)).map_or(0, |m| m.len());
    let read = size("s47first") + size("s47left.part");
    drop(go_on);
    let set = within_30s(|| pos(&input) == Some(read));
    let at = pos(&input);
    drop(daemon);
    let o = wait_bounded(exec, Duration::from_secs(30));
    assert!(
        set,
        "with the file's daemon stopped, the offset is {at:?}, not {read}: exec's drain waits"
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let left = tmp.join("s47left");
    assert!(within_30s(|| left.exists()), "the process left never ended");
    let first = std::fs::read(tmp.join("s47first")).unwrap();
    let later = std::fs::read(&left).unwrap();
    let mut rest = Vec::new();
    let mut file = input;
    file.read_to_end(&mut rest).unwrap();
    assert_eq!(
        first.len() + later.len() + rest.len(),
        data.len(),
        "read {} + {} (the process left) + {} (the caller's next read)",
        first.len(),
        later.len(),
        rest.len()
    );
    assert!(
        [first, later, rest].concat() == data,
        "not the file's bytes"
    );
}
