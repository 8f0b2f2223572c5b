//! Review s38 (keeperkill): under systemd a named guest's keeper is the one
//! process in its unit's cgroup, so `systemctl kill` reached the keeper
//! alone: it died, the guest ran on unkept (its end never recorded, its
//! own reboot never restarting it). The keeper now passes the signals it
//! is sent on to init and goes on keeping it. And a keeper whose exec of
//! the start after a reboot failed left the guest stale: it now stops it.

use crate::common::unifs_bin;
use crate::guest::harness::{alive, can_run, ok, run_bounded, stderr};
use crate::guest::review_s11_life::Guest;
use crate::review_s31_doubts::within_60s;
use crate::review_s38_halt::{halting, init_and_keeper, nothing_left, stopped_by_its_keeper};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Sends signal number `sig` (realtime ones too) to `pid`.
pub(crate) fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) takes no pointers.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill {pid}");
}

/// Runs `what` (`mount ARGS`), asserting it worked.
fn mount(args: &[&str], dir: &Path) {
    let mut cmd = Command::new("mount");
    cmd.args(args).arg(dir);
    let o = run_bounded(cmd, Duration::from_secs(30));
    assert!(o.status.success(), "mount {args:?}: {}", stderr(&o));
}

#[test]
fn s38_a_sigterm_to_the_keeper_reaches_init_and_the_keeper_goes_on() {
    let test = "s38_a_sigterm_to_the_keeper_reaches_init_and_the_keeper_goes_on";
    if !can_run(test) {
        return;
    }
    let init = "[\"/bin/sh\", \"-c\", \"trap 'touch /tmp/got-term' TERM; \
                trap 'touch /tmp/got-usr1' USR1; \
                while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 7\"]";
    let g = Guest::new("s38kkterm", init);
    ok(&g.unifs(&["start", &g.name]));
    let (init, keeper) = init_and_keeper(&g);
    let root = g.run(&g.name).join("root");
    for (sig, file) in [
        (libc::SIGTERM, "tmp/got-term"),
        (libc::SIGUSR1, "tmp/got-usr1"),
    ] {
        signal(keeper, sig);
        assert!(
            within_60s(|| root.join(file).exists()),
            "init never got signal {sig} (keeper alive: {})",
            alive(keeper.into())
        );
        assert!(alive(keeper.into()), "the keeper ended on signal {sig}");
    }

    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/tmp/go"]));
    let st = stopped_by_its_keeper(&g);
    assert_eq!(st["last_exit"]["pid"], init, "{st}");
    assert_eq!(st["last_exit"]["code"], 7, "{st}");
    nothing_left(&g);
    assert!(within_60s(|| !alive(keeper.into())), "the keeper lives");
}

#[test]
fn s38_a_stop_signal_to_the_keeper_halts_the_guest_and_it_is_torn_down() {
    let test = "s38_a_stop_signal_to_the_keeper_halts_the_guest_and_it_is_torn_down";
    if !can_run(test) {
        return;
    }
    // systemd's halt signal, as `systemctl kill -s SIGRTMIN+3` sends it.
    let halt = libc::SIGRTMIN() + 3;
    let init =
        format!("[\"/bin/sh\", \"-c\", \"trap 'halt -f' {halt}; while :; do sleep 0.05; done\"]");
    let g = halting("s38kkhalt", &init);
    ok(&g.unifs(&["start", &g.name]));
    let (init, keeper) = init_and_keeper(&g);
    signal(keeper, halt);

    let st = stopped_by_its_keeper(&g);
    assert_eq!(st["last_exit"]["pid"], init, "{st}");
    assert_eq!(st["last_exit"]["shutdown"], "halt", "{st}");
    nothing_left(&g);
    assert!(within_60s(|| !alive(keeper.into())), "the keeper lives");
}

/// A copy of the unifs binary in a directory bind-mounted on itself, to be
/// made `noexec` while what runs from it runs: a keeper's exec of
/// /proc/self/exe then fails (EACCES). (A copy deleted would not do: the
/// exec of /proc/self/exe still finds it.) Dropped, unmounted (lazily: the
/// processes run on).
struct NoexecLater {
    dir: PathBuf,
}

impl NoexecLater {
    fn new(parent: &Path) -> NoexecLater {
        let dir = parent.join("bin");
        std::fs::create_dir(&dir).unwrap();
        mount(&["--bind", dir.to_str().unwrap()], &dir);
        let later = NoexecLater { dir };
        std::fs::copy(unifs_bin(), later.bin()).unwrap();
        later
    }

    fn bin(&self) -> PathBuf {
        self.dir.join("unifs")
    }

    fn make_noexec(&self) {
        mount(&["-o", "remount,bind,noexec"], &self.dir);
    }
}

impl Drop for NoexecLater {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn s38_a_keeper_that_cannot_start_a_rebooted_guest_again_stops_it() {
    let test = "s38_a_keeper_that_cannot_start_a_rebooted_guest_again_stops_it";
    if !can_run(test) {
        return;
    }
    let init = "[\"/bin/sh\", \"-c\", \"while [ ! -e /tmp/go ]; do sleep 0.05; done; reboot -f\"]";
    let g = halting("s38kkexec", init);
    let copy = NoexecLater::new(g.t.dir.path());
    let mut start = g.command_of(&copy.bin());
    start.args(["start", &g.name]);
    ok(&run_bounded(start, Duration::from_secs(30)));
    let (init, _) = init_and_keeper(&g);
    copy.make_noexec();

    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/tmp/go"]));
    let st = stopped_by_its_keeper(&g);
    assert_eq!(st["last_exit"]["pid"], init, "{st}");
    assert_eq!(st["last_exit"]["shutdown"], "reboot", "{st}");
    let why = st["last_exit"]["not_restarted"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("could not run its start after the reboot"),
        "{st}"
    );
    nothing_left(&g);
    let logs = ok(&g.unifs(&["logs", &g.name]));
    assert!(
        logs.contains("starting it again after its reboot"),
        "{logs}"
    );
}
