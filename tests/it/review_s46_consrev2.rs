//! Session 46, review of "console2" (task "consrev2"): `unifs run`'s
//! regular-file stdin copied with `pread`, whose offset the run then set
//! (`SEEK_SET`) to where it was plus what the command read. A stdin that
//! is the command's stdout too (`<> f >&0`) had the command's output
//! written over its input, and the offset put back before the output, for
//! the next write to overwrite.

use crate::guest::harness::{can_run, stderr, wait_bounded, KillOnDrop, TestRoot};
use std::io::{Seek, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `script` by `sh -c` with `f` (holding `input`) opened read-write
/// as its stdin and stdout (one open file, as `<> f >&0` gives), on the
/// host if `root` is None, else by `unifs run --root ROOT`; then writes
/// `then` through that open file, as the script's next command would.
/// What `f` holds then.
fn shared_stdin_stdout(root: Option<&Path>, f: &Path, input: &[u8], script: &str) -> Vec<u8> {
    std::fs::write(f, input).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(f)
        .unwrap();
    let mut cmd = match root {
        None => Command::new("/bin/sh"),
        Some(root) => {
            let mut c = Command::new(crate::common::unifs_bin());
            c.arg("run").arg("--root").arg(root).args(["--", "/bin/sh"]);
            c
        }
    };
    cmd.args(["-c", script]);
    cmd.stdin(file.try_clone().unwrap());
    cmd.stdout(file.try_clone().unwrap());
    cmd.stderr(Stdio::piped());
    let o = wait_bounded(
        KillOnDrop(Some(cmd.spawn().unwrap())),
        Duration::from_secs(30),
    );
    assert_eq!(o.status.code(), Some(0), "{root:?}: {}", stderr(&o));
    let at = file.stream_position().unwrap();
    file.write_all(b"next\n").unwrap();
    let mut held = std::fs::read(f).unwrap();
    held.extend_from_slice(format!(" (offset {at} after the command)").as_bytes());
    held
}

/// `unifs run … <> f >&0` leaves `f` and its offset as the command run
/// directly does: a command writing without reading (`echo`) and one
/// reading its input to the end, then writing (`head -c 100`), each followed by
/// a write of the script's. Before: `echo`'s line was overwritten by the
/// next write (the offset set back to 0: `next\n (offset 0…)` for
/// `hi\nnext\n (offset 3…)`), and `head`'s output written over its input
/// (`in\nnext\n (offset 3…)` for `in\nin\nnext\n (offset 6…)`).
#[test]
fn s46_a_stdin_that_is_stdout_too_keeps_the_commands_output() {
    let test = "s46_a_stdin_that_is_stdout_too_keeps_the_commands_output";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    let dir = tempfile::Builder::new()
        .prefix("s46consrev2-")
        .tempdir()
        .unwrap();
    let f = dir.path().join("f");
    for (input, script) in [
        (&b""[..], "echo hi"),
        (&b"in\n"[..], "head -c 100"),
        (&b"one\ntwo\n"[..], "head -c 100; echo end"),
    ] {
        let plain = shared_stdin_stdout(None, &f, input, script);
        let run = shared_stdin_stdout(Some(&t.root()), &f, input, script);
        assert_eq!(
            String::from_utf8_lossy(&run),
            String::from_utf8_lossy(&plain),
            "{script:?} on {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

/// `guest logs` on a terminal shows a character that its 64 KiB reads of
/// the log cut in two (here `é` at bytes 65535 and 65536) whole, as it is
/// in the log; a character the log's own end cuts (`console.log.boot`
/// ends at its 64 KiB) is a `?` for each byte, as before (a guard).
/// Before: the first showed as `??`.
#[test]
fn s46_guest_logs_on_a_terminal_shows_a_character_its_reads_cut() {
    use crate::guest::harness::{spawn_on_a_terminal, wait_for_output};
    let dir = tempfile::Builder::new()
        .prefix("s46consrev2-")
        .tempdir()
        .unwrap();
    let run = dir.path().join("run/s46cut");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    let mut log = vec![b'a'; 65535];
    log.extend_from_slice("é s46-end\n".as_bytes());
    std::fs::write(run.join("console.log"), &log).unwrap();
    let mut boot = b"s46-boot \xe2\x82".to_vec();
    boot.splice(0..0, std::iter::repeat_n(b'b', 10));
    std::fs::write(run.join("console.log.boot"), &boot).unwrap();
    let logs = |args: &[&str], want: &str| {
        let mut cmd = Command::new(crate::common::unifs_bin());
        cmd.env("UNIFS_CONFIG_DIR", dir.path().join("config"));
        cmd.env("UNIFS_RUN_DIR", dir.path().join("run"));
        cmd.args(["guest", "logs"]).args(args).arg("s46cut");
        let (master, child) = spawn_on_a_terminal(cmd);
        let seen = wait_for_output(&master, want);
        let o = wait_bounded(child, Duration::from_secs(30));
        assert_eq!(o.status.code(), Some(0), "{seen:?}");
        seen
    };
    let seen = logs(&[], "s46-end");
    assert!(seen.ends_with("aé s46-end\r\n"), "{:?}", &seen[65530..]);
    // Two bytes of `€`: `?` each, as before (and not held back unshown).
    let seen = logs(&["--boot"], "s46-boot ??");
    assert!(seen.starts_with("bbbbbbbbbbs46-boot ??"), "{seen:?}");
}
