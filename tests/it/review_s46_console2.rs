//! Session 46, guest output and stdio (task "console2"): `guest logs` had
//! no way to show `console.log.boot` (now `--boot`); a regular-file stdin
//! whose read hangs (a hung FUSE mount) held `unifs run`'s end for 10 s
//! after its command ended.

use crate::guest::harness::{can_run, ok, stderr, stdout, within_30s};
use crate::guest::named::Guest;

/// `guest logs --boot NAME` shows the last boot's first lines
/// (`console.log.boot`), `-n` its last lines; `-f` with it is refused (it
/// takes nothing past its 64 KiB), and a guest without one (an older unifs
/// started it) is told why. Before: `--boot` was an unknown argument.
#[test]
fn s46_guest_logs_boot_shows_the_boots_first_lines() {
    if !can_run("s46_guest_logs_boot_shows_the_boots_first_lines") {
        return;
    }
    let init = "[\"/bin/sh\", \"-c\", \"echo s46-boot-one; echo s46-boot-two; exec sleep 1000\"]";
    let g = Guest::new("s46boot", init, true);
    ok(&g.unifs(&["start", &g.name]));
    let boot = g.run_dir.join(&g.name).join("console.log.boot");
    assert!(
        within_30s(|| std::fs::read(&boot)
            .unwrap_or_default()
            .ends_with(b"s46-boot-two\n")),
        "no boot lines in {}",
        boot.display()
    );
    let all = g.unifs(&["logs", "--boot", &g.name]);
    assert_eq!(
        stdout(&all),
        "s46-boot-one\ns46-boot-two\n",
        "{}",
        stderr(&all)
    );
    let last = g.unifs(&["logs", "-b", "-n", "1", &g.name]);
    assert_eq!(stdout(&last), "s46-boot-two\n", "{}", stderr(&last));
    let follow = g.unifs(&["logs", "--boot", "-f", &g.name]);
    assert_eq!(follow.status.code(), Some(1), "{}", stderr(&follow));
    assert!(stderr(&follow).contains("--follow"), "{}", stderr(&follow));
    ok(&g.unifs(&["stop", &g.name]));
    // Kept after the stop.
    let kept = g.unifs(&["logs", "--boot", &g.name]);
    assert_eq!(
        stdout(&kept),
        "s46-boot-one\ns46-boot-two\n",
        "{}",
        stderr(&kept)
    );
    // As a guest an older unifs started has none.
    std::fs::remove_file(&boot).unwrap();
    let none = g.unifs(&["logs", "--boot", &g.name]);
    let said = stderr(&none);
    assert_eq!(none.status.code(), Some(1), "{said}");
    assert!(
        said.contains("console.log.boot") && said.contains("58e6ffd"),
        "{said}"
    );
}

/// SIGCONTs a stopped process when dropped, even when the test fails.
pub(crate) struct Resume(pub(crate) i32);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// Whether `unifs run` `pid`'s stdin copy (its thread `stdio-0`) waits to
/// write into a full pipe.
fn stdin_copy_waits_on_the_pipe(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
        read("comm").trim() == "stdio-0" && read("wchan").contains("pipe_write")
    })
}

/// `unifs run … < file` with the file on a FUSE mount whose daemon is
/// stopped (SIGSTOP) while the copy of stdin waits on the full pipe: the
/// command reads 67 KB and ends, and the copy's next read of the file
/// hangs. With the daemon still stopped, the file's offset is set just
/// past what the command read (seen in fdinfo: an `lseek` would wait on a
/// `read`'s offset lock). The run's own end then waits for the daemon
/// (the kernel's FLUSH at its close of stdin), as any process's would.
/// Before: the hung `read` held the offset, and after 10 s (DRAIN) the
/// run left it where the copy had read to, 131072.
#[test]
fn s46_a_stdin_file_whose_read_hangs_is_set_back_at_the_runs_end() {
    use crate::fs::harness::World;
    use std::os::fd::AsRawFd;
    let test = "s46_a_stdin_file_whose_read_hangs_is_set_back_at_the_runs_end";
    if !can_run(test) {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let data: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(g.join("input"), &data).unwrap();
    // Reads reach the daemon (no kernel passthrough).
    let m = w.mount(&g, "m", &["nopassthrough"]);
    let input = std::fs::File::open(m.path("input")).unwrap();
    // No read-ahead on this open file (the run's stdin): each read of the
    // copy's is a request of its own to the daemon.
    // SAFETY: fadvise only advises on an open fd.
    let advised = unsafe { libc::posix_fadvise(input.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    assert_eq!(advised, 0);
    let t = crate::guest::harness::TestRoot::new();
    let go = t.root().join("tmp/s46go");
    let mut cmd = std::process::Command::new(crate::common::unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root()).args([
        "--",
        "/bin/sh",
        "-c",
        "touch /tmp/s46ready; until [ -e /tmp/s46go ]; do sleep 0.05; done; \
         dd bs=1000 count=67 2>/dev/null | wc -c > /tmp/s46read",
    ]);
    cmd.stdin(input.try_clone().unwrap());
    cmd.stdout(std::process::Stdio::null());
    cmd.stderr(std::process::Stdio::piped());
    let run = crate::guest::harness::KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = run.0.as_ref().unwrap().id();
    // Its copy has read 128 KiB (64 KiB in the pipe, 64 KiB waiting).
    assert!(
        within_30s(|| stdin_copy_waits_on_the_pipe(pid)),
        "the copy never filled the pipe"
    );
    // The guest's side has given up its copies of the file (its close
    // waits for the daemon: see `wait_until_it_runs`).
    crate::review_s47_console3::wait_until_it_runs(&t.root().join("tmp/s46ready"));
    let _resume = crate::review_s47_console3::stop_daemon(m.pid());
    std::fs::write(&go, "").unwrap();
    let result = t.root().join("tmp/s46read");
    let read = || -> Option<u64> { std::fs::read_to_string(&result).ok()?.trim().parse().ok() };
    let pos = || -> Option<u64> {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", input.as_raw_fd()));
        info.ok()?
            .lines()
            .find_map(|l| l.strip_prefix("pos:")?.trim().parse().ok())
    };
    let set_back = within_30s(|| read().is_some_and(|r| pos() == Some(r)));
    let (got, at) = (read(), pos());
    drop(_resume);
    let o = crate::guest::harness::wait_bounded(run, std::time::Duration::from_secs(30));
    assert!(
        set_back,
        "the command read {got:?}, the offset is {at:?} with the daemon stopped"
    );
    assert!(got.is_some_and(|r| r >= 64 << 10), "{got:?}");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(pos(), got);
}
