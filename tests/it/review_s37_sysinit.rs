//! Review s37 (sysinit): real inits (Debian 12's systemd 252 and sysvinit
//! 3.06) as named guests, imitated here with busybox `sh` inits; the full
//! boots are tests/manual/debian-inits.sh, their output in docs/guests.md.

use crate::guest::harness::{can_run, ok, stdout};
use crate::review_s36_reboot::{console_log, rebooting_guest, started_pid};

/// systemd blocks SIGRTMIN+3 a moment after its exec; until then the
/// kernel drops that signal to it (the init of a PID namespace takes none
/// it neither catches nor blocks). A `stop` right after `start` sent it
/// into that moment, waited out its timeout and SIGKILLed the guest. Now
/// it waits for init to take the signal.
/// An init's script that catches `sig` only after 2 s (printing
/// `trapped`), then exits 0 on it (printing `caught`).
pub(crate) fn late_trap(sig: &str) -> String {
    format!("sleep 2; trap 'echo caught; exit 0' {sig}; echo trapped; while :; do sleep 0.1; done")
}

#[test]
fn s37_a_stop_right_after_start_waits_for_init_to_take_its_signal() {
    let test = "s37_a_stop_right_after_start_waits_for_init_to_take_its_signal";
    if !can_run(test) {
        return;
    }
    // SIGRTMIN+3 is 37 as the C library counts.
    let script = late_trap("37");
    let g = rebooting_guest("s37early", &script, "stop_signal = \"SIGRTMIN+3\"");
    started_pid(&g);
    let o = g.unifs(&["stop", "--timeout", "20", &g.name]);
    let out = ok(&o);
    let st = g.state();
    let exit = &st["last_exit"];
    assert_eq!(exit["code"], 0, "{out}\n{st}\n{}", console_log(&g));
    assert!(
        console_log(&g).contains("trapped\ncaught"),
        "{}",
        console_log(&g)
    );
    assert!(!stdout(&o).contains("kill"), "{out}");
}
