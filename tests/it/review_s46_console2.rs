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
    assert_eq!(stdout(&all), "s46-boot-one\ns46-boot-two\n", "{}", stderr(&all));
    let last = g.unifs(&["logs", "-b", "-n", "1", &g.name]);
    assert_eq!(stdout(&last), "s46-boot-two\n", "{}", stderr(&last));
    let follow = g.unifs(&["logs", "--boot", "-f", &g.name]);
    assert_eq!(follow.status.code(), Some(1), "{}", stderr(&follow));
    assert!(stderr(&follow).contains("--follow"), "{}", stderr(&follow));
    ok(&g.unifs(&["stop", &g.name]));
    // Kept after the stop.
    let kept = g.unifs(&["logs", "--boot", &g.name]);
    assert_eq!(stdout(&kept), "s46-boot-one\ns46-boot-two\n", "{}", stderr(&kept));
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
