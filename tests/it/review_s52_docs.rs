//! Session 52 (docs): a new operator follows README.md and docs/ to the
//! letter; and `guest list`'s warnings, made by 16 threads at once, come
//! out in the list's order.

use crate::common::unifs_bin;
use crate::guest::harness::{can_run, run_bounded, TestRoot};
use std::process::Command;
use std::time::Duration;

/// Guests `s52o{pid}a` and `…b`, each with an unreadable runtime record;
/// a's look is held until b's has ended (UNIFS_TEST_LIST_LAST), so a's
/// warning is made last. Both come out in the list's order, a's first.
/// Before, each went out as its thread made it: b's first.
#[test]
fn s52_list_warns_in_the_lists_order() {
    if !can_run("s52_list_warns_in_the_lists_order") {
        return;
    }
    let t = TestRoot::new();
    let (config, run) = (t.dir.path().join("config"), t.dir.path().join("run"));
    std::fs::create_dir(&config).unwrap();
    let names = ["a", "b"].map(|x| format!("s52o{}{x}", std::process::id()));
    for name in &names {
        let toml = format!("root = {:?}\ninit = [\"/bin/true\"]\n", t.root());
        std::fs::write(config.join(format!("{name}.toml")), toml).unwrap();
        std::fs::create_dir_all(run.join(name)).unwrap();
        std::fs::write(run.join(name).join("state.json"), "{").unwrap();
    }
    let mut cmd = Command::new(unifs_bin());
    cmd.args(["guest", "list", "--config-dir"])
        .arg(&config)
        .arg("--run-dir")
        .arg(&run)
        .env("UNIFS_TEST_LIST_LAST", &names[0])
        .env("NO_COLOR", "1");
    let o = run_bounded(cmd, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let at = |name: &str| {
        let said = format!("guest {name}: ignoring its unreadable runtime record");
        err.find(&said)
            .unwrap_or_else(|| panic!("no warning of {name}: {err}"))
    };
    assert!(
        at(&names[0]) < at(&names[1]),
        "not in the list's order: {err}"
    );
}
