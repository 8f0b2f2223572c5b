//! Review s44 (docrev): the refusal of a mounted runtime directory
//! (review_s44_docaudit) against the other ways the guest's files reach
//! RUN_DIR/NAME.

use crate::fs::harness::Mount;
use crate::guest::harness::{alive, can_run, parent_of, stderr, within_30s};
use crate::guest::named::Guest;
use crate::review_s44_docaudit::names;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A guest tree mounted by hand over RUN_DIR/NAME while the guest runs:
/// `start`, `stop` and `update` refuse it, but the keeper, whose init then
/// ended, wrote the guest's exit.json (and its temp file) into that tree,
/// through the mount. Now the keeper leaves it; once the tree is
/// unmounted, `guest stop` cleans up what the guest left, as the error
/// says.
#[test]
fn s44_the_keeper_writes_no_exit_record_into_a_tree_mounted_over_its_run_dir() {
    if !can_run("s44_the_keeper_writes_no_exit_record_into_a_tree_mounted_over_its_run_dir") {
        return;
    }
    let g = Guest::new("s44keepermnt", "[\"/bin/sleep\", \"1000\"]", false);
    let out = g.unifs(&["start", &g.name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let init = g.state()["pid"].as_i64().unwrap();
    let keeper = parent_of(init);
    let tree = g.t.dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hostname"), "other\n").unwrap();
    let before = names(&tree);
    let at = g.run_dir.join(&g.name);
    let m = Mount::start(&g.t.dir.path().join("store"), &tree, &at, &[]);
    // `stop` is refused, naming the way out.
    let out = g.unifs(&["stop", "--timeout", "0", &g.name]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unmount it first"), "{err}");
    // Init ends: its keeper records how, and finds the run dir covered.
    kill(Pid::from_raw(init as i32), Signal::SIGKILL).unwrap();
    assert!(
        within_30s(|| !alive(keeper.into())),
        "keeper {keeper} lives"
    );
    assert_eq!(
        names(&tree),
        before,
        "the keeper wrote into the mounted tree"
    );
    drop(m);
    // Unmounted, the guest left is stopped, and starts again.
    let out = g.unifs(&["stop", "--timeout", "0", &g.name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = g.unifs(&["start", &g.name]);
    assert!(out.status.success(), "{}", stderr(&out));
}
