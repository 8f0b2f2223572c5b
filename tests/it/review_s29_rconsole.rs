//! Review (session 29) of a named guest's `/dev/console` and its keeper's
//! relay into console.log, attacked as guest root.

use crate::common::{cpu_ticks, proc_stat, sleeping_for};
use crate::guest::harness::{alive, can_run, ok, stderr, within_30s, HostMount};
use crate::guest::named::Guest;
use std::process::Command;
use std::time::{Duration, Instant};

/// Compiles C `src` statically to the guest's /bin/`name`; false (`test`
/// is skipped) where no static C compiler is installed, outside CI.
fn compile(test: &str, g: &Guest, name: &str, src: &str) -> bool {
    let file = g.t.dir.path().join(format!("{name}.c"));
    std::fs::write(&file, src).unwrap();
    let cc = Command::new("cc")
        .args(["-O2", "-static", "-o"])
        .arg(g.t.root().join("bin").join(name))
        .arg(&file)
        .status();
    if cc.is_ok_and(|s| s.success()) {
        return true;
    }
    crate::common::skip(test, "needs cc -static (gcc, libc6-dev)");
    false
}

/// Guest root makes its console its controlling terminal and hangs it up
/// (as systemd does before a getty, and `TTYVHangup=`): the keeper's own
/// slave is hung up with it, its master then polls as hung up at once, and
/// the keeper spun, a core at 100% for the guest's life. Output written
/// to the console after the hangup must still reach the log.
#[test]
fn s29_a_hung_up_console_does_not_make_the_keeper_spin() {
    let test = "s29_a_hung_up_console_does_not_make_the_keeper_spin";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("hup", "[\"/bin/hup\"]", false);
    // A session leader that exits with the console as its controlling
    // terminal hangs it up (no capability needed), as a getty's end does.
    let src = "#define _GNU_SOURCE\n#include <fcntl.h>\n#include <stdio.h>\n#include <unistd.h>\n\
         #include <sys/wait.h>\n\
         int main(void) {\n  if (fork() == 0) {\n    setsid();\n\
         int fd = open(\"/dev/console\", O_RDWR);\n    dprintf(fd, \"before\\n\");\n\
         _exit(0);\n  }\n  wait(NULL);\n  sleep(2);\n\
         int fd = open(\"/dev/console\", O_WRONLY | O_NOCTTY);\n  dprintf(fd, \"after\\n\");\n\
         close(fd);\n  for (;;) pause();\n}\n";
    if !compile(test, &g, "hup", src) {
        return;
    }
    ok(&g.unifs(&["start", &g.name]));
    let log = g.run_dir.join(&g.name).join("console.log");
    let wrote = |s: &str| std::fs::read_to_string(&log).is_ok_and(|l| l.contains(s));
    assert!(
        within_30s(|| wrote("before\n")),
        "{:?}",
        std::fs::read_to_string(&log)
    );
    let init = g.state()["pid"].as_i64().unwrap() as u32;
    let keeper = proc_stat(init)[1].parse::<u32>().unwrap();
    // The console hung up: its session leader reaped, init in its sleep(2)
    // or past it (a fixed pause could end before the hang-up on a loaded
    // machine).
    let hung_up = within_30s(|| sleeping_for(init, 2000) || wrote("after\n"));
    assert!(hung_up, "init never reaped the session leader");
    let before = cpu_ticks(keeper);
    std::thread::sleep(Duration::from_millis(1500));
    let used = cpu_ticks(keeper) - before;
    assert!(
        used <= 5,
        "the keeper used {used} ticks in 1.5 s of a hung-up console"
    );
    assert!(
        within_30s(|| wrote("after\n")),
        "{:?}",
        std::fs::read_to_string(&log)
    );
}

/// `guest stop` of a guest that floods its console while another of its
/// processes blocks reading it: prompt, and the keeper records the end.
#[test]
fn s29_stop_is_prompt_while_the_console_floods_and_is_read() {
    if !can_run("s29_stop_is_prompt_while_the_console_floods_and_is_read") {
        return;
    }
    let g = Guest::new("flood", "[\"/bin/sh\", \"/start.sh\"]", false);
    std::fs::write(
        g.t.root().join("start.sh"),
        "cat /dev/console > /dev/null &\n\
         (while :; do echo floodfloodfloodflood; done > /dev/console) &\n\
         (while :; do echo again; done > /dev/console) &\n\
         echo started\nexec sleep 1000\n",
    )
    .unwrap();
    start_flooding(&g);
    stops_promptly(&g);
    // The keeper, done relaying, reaps init and records its end.
    let killed = || g.state()["last_exit"]["signal"] == "KILL";
    assert!(within_30s(killed), "{}", g.state());
}

/// Starts `g` and waits until its console log holds over 1 MiB (a flood
/// of about 2 MB/s alone, slower on a loaded machine).
fn start_flooding(g: &Guest) {
    ok(&g.unifs(&["start", &g.name]));
    let log = g.run_dir.join(&g.name).join("console.log");
    let size = || std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    assert!(within_30s(|| size() > 1 << 20), "{}", size());
}

/// How long `guest stop --timeout 1` of a flooding guest may take: about
/// 1.1 s (the timeout, then SIGKILL, unmount, cgroups), loaded or not. It
/// took 8.3 s once in CI, a concurrent test's `unifs run` holding the
/// guest's overlay root (fixed; review_s34_flaky): `unifs umount` waited
/// for its daemon, 10 s at most, and `stop` 5 s more before it killed it.
/// A bound well under those waits, and under a stop that waits on the
/// flood (the guest's `sleep 1000`, or `Guest::unifs`'s 30 s kill).
const PROMPT_STOP: Duration = Duration::from_secs(10);

/// `guest stop --timeout 1` ends `g` within [`PROMPT_STOP`], taking none
/// of its ways out of a wait that did not end (each warns).
fn stops_promptly(g: &Guest) {
    let asked = Instant::now();
    let o = g.unifs(&["stop", "--timeout", "1", &g.name]);
    ok(&o);
    assert!(
        asked.elapsed() < PROMPT_STOP,
        "stop took {:?}",
        asked.elapsed()
    );
    assert!(!stderr(&o).contains("WARN"), "{}", stderr(&o));
    assert_eq!(g.state()["running"], false, "{}", g.state());
}

/// The keeper killed (SIGKILL) while the guest writes to its console: the
/// writers get errors, not a hang; exec and stop work as before.
#[test]
fn s29_a_killed_keeper_leaves_console_writers_unblocked() {
    if !can_run("s29_a_killed_keeper_leaves_console_writers_unblocked") {
        return;
    }
    let g = Guest::new("keeperkill", "[\"/bin/sh\", \"/start.sh\"]", false);
    std::fs::write(
        g.t.root().join("start.sh"),
        "(while :; do head -c 100000 /dev/zero > /dev/console; done) &\n\
         exec sleep 1000\n",
    )
    .unwrap();
    start_flooding(&g);
    let keeper = proc_stat(g.state()["pid"].as_i64().unwrap() as u32)[1]
        .parse::<u32>()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keeper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Its end (its console master closed), not a pause it may outlast.
    assert!(
        within_30s(|| !alive(keeper.into())),
        "keeper {keeper} lives"
    );
    let said = ok(&g.unifs(&[
        "exec",
        &g.name,
        "--",
        "/bin/sh",
        "-c",
        "echo hi > /dev/console; echo $?",
    ]));
    assert_ne!(said, "0\n", "a console write succeeded with no keeper");
    stops_promptly(&g);
}

/// A read-only guest whose init runs as uid 1000: its console is made all
/// the same, its init's own (600), and what init writes there is logged.
#[test]
fn s29_a_read_only_guest_with_a_non_root_init_has_its_console() {
    if !can_run("s29_a_read_only_guest_with_a_non_root_init_has_its_console") {
        return;
    }
    let g = Guest::new("rouser", "[\"/bin/sh\", \"/start.sh\"]", false);
    std::fs::write(
        g.t.root().join("start.sh"),
        "id -u > /dev/console; stat -c '%a %u' /dev/console > /dev/console\nexec sleep 1000\n",
    )
    .unwrap();
    let toml = std::fs::read_to_string(g.config()).unwrap();
    let toml = toml.replace(
        "[limits]",
        "uid = 1000\ngid = 1000\nread_only = true\n[limits]",
    );
    std::fs::write(g.config(), toml).unwrap();
    ok(&g.unifs(&["start", &g.name]));
    let log = g.run_dir.join(&g.name).join("console.log");
    let wrote = |s: &str| std::fs::read_to_string(&log).is_ok_and(|l| l.contains(s));
    assert!(
        within_30s(|| wrote("1000\n600 1000\n")),
        "{:?}",
        std::fs::read_to_string(&log)
    );
}

/// A console log grown past 4 MiB through the console is set aside at the
/// next start, and the new init's console output goes to the new log.
#[test]
fn s29_console_output_rotates_across_a_restart() {
    if !can_run("s29_console_output_rotates_across_a_restart") {
        return;
    }
    let g = Guest::new("rotate", "[\"/bin/sh\", \"/start.sh\"]", false);
    let script = g.t.root().join("start.sh");
    std::fs::write(
        &script,
        "head -c 5000000 /dev/zero | tr '\\0' x > /dev/console\nexec sleep 1000\n",
    )
    .unwrap();
    ok(&g.unifs(&["start", &g.name]));
    let log = g.run_dir.join(&g.name).join("console.log");
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    assert!(within_30s(|| size(&log) >= 5_000_000), "{}", size(&log));
    ok(&g.unifs(&["stop", "--timeout", "1", &g.name]));
    std::fs::write(&script, "echo second > /dev/console\nexec sleep 1000\n").unwrap();
    ok(&g.unifs(&["start", &g.name]));
    let wrote = || std::fs::read_to_string(&log).is_ok_and(|l| l == "second\n");
    assert!(within_30s(wrote), "{:?}", std::fs::read_to_string(&log));
    assert_eq!(size(&log.with_extension("log.1")), 5_000_000);
}

/// On a tmpfs RUN_DIR (the usual /run), init's output to console.log is
/// charged to the guest's memory limit while it runs; what the guest
/// writes to its console is appended by its keeper, in the host's group:
/// a guest limited to 32 MiB put 200 MB into the host's /run through its
/// console. The keeper appended at most the memory limit and said what it
/// left out; since session 44 (init's output goes through the console too,
/// review_s44_console) it sets the log aside at 8 MiB as the guest runs,
/// still reading all (the writer does not block).
#[test]
fn s29_console_output_counts_against_the_guests_memory_limit() {
    if !can_run("s29_console_output_counts_against_the_guests_memory_limit") {
        return;
    }
    let g = Guest::new("memlog", "[\"/bin/sh\", \"/start.sh\"]", false);
    let _run = HostMount::tmpfs_of_size("512m", &g.run_dir);
    std::fs::write(
        g.t.root().join("start.sh"),
        "head -c 200000000 /dev/zero > /dev/console; echo wrote $?\nexec sleep 1000\n",
    )
    .unwrap();
    let toml = std::fs::read_to_string(g.config()).unwrap();
    std::fs::write(g.config(), format!("{toml}memory = \"32M\"\n")).unwrap();
    ok(&g.unifs(&["start", &g.name]));
    let log = g.run_dir.join(&g.name).join("console.log");
    // The writer ends (its console drained): its "wrote" follows on stdout.
    let tail = || {
        let logged = std::fs::read(&log).unwrap_or_default();
        let tail = logged[logged.len().saturating_sub(200)..].to_vec();
        (logged.len(), String::from_utf8_lossy(&tail).into_owned())
    };
    let started = Instant::now();
    while !tail().1.contains("wrote") && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(300));
    }
    let (len, tail) = tail();
    ok(&g.unifs(&["stop", "--timeout", "1", &g.name]));
    assert!(len < 64 << 20, "console.log reached {len} bytes");
    let old = std::fs::metadata(log.with_extension("log.1")).map_or(0, |m| m.len());
    assert!(
        (1..=8 << 20).contains(&old),
        "console.log.1 has {old} bytes"
    );
    assert!(tail.contains("wrote 0\n"), "{tail:?}");
}
