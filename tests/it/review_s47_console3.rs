//! Session 47, `guest exec`/`run` stdio, the cases left (task "console3"):
//! `guest exec`'s copy of a regular-file stdin read it in its one loop, so
//! a read that hung (a hung FUSE mount) held `exec` past its command's end
//! and the offset where the copy had read to; what a process the command
//! left in the guest read of the pipe after the command ended was read a
//! second time by the caller's next reader; `guest logs --boot -n` failed
//! ("failed to fill whole buffer") on a `console.log.boot` a reboot
//! rewrote while it was read.

use crate::fs::harness::{Mount, World};
use crate::guest::harness::{can_run, ok, stderr, stdout, wait_bounded, within_30s, KillOnDrop};
use crate::guest::named::Guest;
use crate::review_s45_consrev::exec_sh_reading;
use crate::review_s46_console2::Resume;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::Duration;

/// The offset of our open file `f` (from fdinfo: an `lseek` would wait on
/// a `read` that holds the offset's lock).
pub(crate) fn pos(f: &std::fs::File) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd()));
    info.ok()?
        .lines()
        .find_map(|l| l.strip_prefix("pos:")?.trim().parse().ok())
}

/// Whether a thread of process `pid` waits to write into a full pipe.
pub(crate) fn waits_on_a_full_pipe(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        let wchan = std::fs::read_to_string(t.path().join("wchan")).unwrap_or_default();
        wchan.contains("pipe_write")
    })
}

/// Stops (SIGSTOP) our mount's daemon `pid` and waits until each of its
/// threads has stopped; SIGCONT once dropped. `kill` returns once the
/// signal is queued: a thread not yet stopped (not yet run, under load)
/// still answers, a read made after the `kill` too.
pub(crate) fn stop_daemon(pid: u32) -> Resume {
    // SAFETY: kill only sends a signal, to our own mount's daemon.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    let resume = Resume(pid as i32);
    let all_stopped = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().all(|t| stopped_at(&t.path().join("stat")))
    };
    assert!(within_30s(all_stopped), "the mount's daemon never stopped");
    resume
}

/// Whether the process or thread whose `/proc` stat file is `stat` is
/// stopped (SIGSTOP).
pub(crate) fn stopped_at(stat: &std::path::Path) -> bool {
    std::fs::read_to_string(stat).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('T'))
    })
}

/// Waits until the command `exec` ran has created `ready` (in the guest's
/// root). Then `exec`'s helper has given it the pipe as stdin: until then
/// the helper holds the file too, and its close of it waits for the
/// daemon's answer to the FLUSH the kernel sends (a daemon stopped then
/// held the command from ever starting, under load).
pub(crate) fn wait_until_it_runs(ready: &std::path::Path) {
    assert!(within_30s(|| ready.exists()), "the command never started");
}

/// An 8 MiB file on a FUSE mount of `w`'s whose reads each reach the
/// daemon, which a test can stop to make them hang: the mount, the file
/// opened, and its bytes.
pub(crate) fn file_on_a_fuse_mount(w: &World) -> (Mount, std::fs::File, Vec<u8>) {
    let dir = w.dir("g");
    let data: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("input"), &data).unwrap();
    // Reads reach the daemon (no kernel passthrough).
    let m = w.mount(&dir, "m", &["nopassthrough"]);
    let input = std::fs::File::open(m.path("input")).unwrap();
    // No read-ahead on this open file: each read of a copy's is a request
    // of its own to the daemon.
    // SAFETY: fadvise only advises on an open fd.
    let advised = unsafe { libc::posix_fadvise(input.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    assert_eq!(advised, 0);
    (m, input, data)
}

/// `unifs guest exec g -- … < file` with the file on a FUSE mount whose
/// daemon is stopped (SIGSTOP) once the copy of stdin has filled the
/// command's pipe: the command reads 67 KB and ends, and the copy's next
/// read of the file hangs. With the daemon still stopped, `exec` sees its
/// command's end and sets the file's offset just past what the command
/// read (as `unifs run` does since console2); once the daemon goes on,
/// `exec` exits 0. Before: `exec`'s one loop waited in that read, the
/// command's end unseen, and the offset stayed where the copy had read to
/// (73728 or more) until the daemon went on.
#[test]
fn s47_exec_sees_its_commands_end_while_a_stdin_file_read_hangs() {
    let test = "s47_exec_sees_its_commands_end_while_a_stdin_file_read_hangs";
    if !can_run(test) {
        return;
    }
    let w = World::new();
    let (m, input, _) = file_on_a_fuse_mount(&w);
    let g = Guest::new("s47hang", "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    let go = g.t.root().join("tmp/s47go");
    let result = g.t.root().join("tmp/s47read");
    let script = "touch /tmp/s47ready; until [ -e /tmp/s47go ]; do sleep 0.05; done; \
                  dd bs=1000 count=67 2>/dev/null | wc -c > /tmp/s47read";
    let mut cmd = g.cmd(&["exec", &g.name, "--", "/bin/sh", "-c", script]);
    cmd.stdin(input.try_clone().unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let exec = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = exec.0.as_ref().unwrap().id();
    // Its copy has filled the pipe (64 KiB) and waits for room: in a
    // write (a thread's `pread` copy), or, copying with `read` in its
    // loop, holding 8 KiB more (before).
    assert!(
        within_30s(|| waits_on_a_full_pipe(pid) || pos(&input).is_some_and(|p| p >= 72 << 10)),
        "the copy never filled the pipe (offset {:?})",
        pos(&input)
    );
    wait_until_it_runs(&g.t.root().join("tmp/s47ready"));
    let resume = stop_daemon(m.pid());
    std::fs::write(&go, "").unwrap();
    let read = || -> Option<u64> { std::fs::read_to_string(&result).ok()?.trim().parse().ok() };
    let set_back = within_30s(|| read().is_some_and(|r| pos(&input) == Some(r)));
    let (got, at) = (read(), pos(&input));
    drop(resume);
    let o = wait_bounded(exec, Duration::from_secs(30));
    assert!(
        set_back,
        "the command read {got:?}, the offset is {at:?} with the daemon stopped"
    );
    // 67 reads of up to 1000 bytes of a pipe (a short one where it wrapped).
    assert!(got.is_some_and(|r| r >= 64 << 10), "{got:?}");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(pos(&input), got);
}

/// A process the command left in the guest holding its stdin (`exec
/// 3<&0; (…) <&3 &`) reads the pipe after the command ended. What `exec` read ahead of
/// the file and the command left unread is read once: by that process or
/// by the caller's next reader, never by both. `exec` takes back what is
/// left in the pipe as it sets the offset back by it; the process left
/// behind reads an end of input. Before: the offset was set back by what
/// the pipe held, which the process then read too (64 KiB read twice).
#[test]
fn s47_a_process_left_holding_exec_stdin_reads_nothing_twice() {
    let test = "s47_a_process_left_holding_exec_stdin_reads_nothing_twice";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s47left", "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    let data: Vec<u8> = (0..(200u32 << 10)).map(|i| b'a' + (i % 23) as u8).collect();
    let path = g.t.dir.path().join("input");
    std::fs::write(&path, &data).unwrap();
    let mut file = std::fs::File::open(&path).unwrap();
    // The command reads 10 bytes and ends; the process it leaves reads
    // the rest of the pipe a second later.
    // (A job's `<&0` would be `/dev/null`: a shell without job control
    // gives a `&` job that first.)
    let script = "exec 3<&0; dd bs=10 count=1 of=/tmp/s47first 2>/dev/null; \
                  ( sleep 1; cat <&3 > /tmp/s47left.part; mv /tmp/s47left.part /tmp/s47left ) \
                  >/dev/null 2>&1 &";
    let o = exec_sh_reading(&g, script, &file);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let left = g.t.root().join("tmp/s47left");
    assert!(within_30s(|| left.exists()), "the process left never ended");
    let first = std::fs::read(g.t.root().join("tmp/s47first")).unwrap();
    let later = std::fs::read(&left).unwrap();
    let mut rest = Vec::new();
    file.read_to_end(&mut rest).unwrap();
    let total = first.len() + later.len() + rest.len();
    assert_eq!(
        total,
        data.len(),
        "read {} + {} (the process left) + {} (the caller's next read) of {}",
        first.len(),
        later.len(),
        rest.len(),
        data.len()
    );
    assert_eq!([first, later, rest].concat(), data);
}

/// `guest logs --boot -n N` reading `console.log.boot` while a reboot
/// begins it again in place (truncated, then written anew): the file is
/// shorter than when its length was taken. It shows the new file's last
/// lines. Before: "failed to fill whole buffer", exit 1. (The log's length
/// is taken, then `logs` stops itself, UNIFS_TEST_LOGS_TAIL_STOP, while
/// the test rewrites the file.)
#[test]
fn s47_logs_boot_tail_of_a_log_rewritten_meanwhile_shows_the_new_one() {
    if !can_run("s47_logs_boot_tail_of_a_log_rewritten_meanwhile_shows_the_new_one") {
        return;
    }
    let g = Guest::new("s47tail", "[\"/bin/sleep\", \"1000\"]", true);
    let dir = g.run_dir.join(&g.name);
    std::fs::create_dir_all(&dir).unwrap();
    let boot = dir.join("console.log.boot");
    let old: String = (0..2000).map(|i| format!("old boot line {i}\n")).collect();
    std::fs::write(&boot, old).unwrap();
    let mut cmd = g.cmd(&["logs", "--boot", "-n", "2", &g.name]);
    cmd.env("UNIFS_TEST_LOGS_TAIL_STOP", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let logs = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = logs.0.as_ref().unwrap().id();
    let stopped = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('T'))
        })
    };
    assert!(within_30s(stopped), "logs never stopped at its hook");
    // The reboot's rewrite: truncated in place, the new boot's lines.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&boot)
        .unwrap();
    std::io::Write::write_all(&mut &f, b"new one\nnew two\nnew three\n").unwrap();
    drop(f);
    // SAFETY: kill only sends a signal, to our own child.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    let o = wait_bounded(logs, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "new two\nnew three\n", "{}", stderr(&o));
}
