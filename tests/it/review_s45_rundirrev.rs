//! Review s45 (rundirrev) of "rundir": `RunDir::covered` tells a mount
//! made over a running guest's run dir from /proc alone. Mounts made at or
//! under RUN_DIR that cover nothing must not be taken for one: a run dir
//! bound onto itself under a shared mount (as `ip netns` makes /run/netns
//! a mount point), its mount remounted with new options, the run dir bound
//! elsewhere. Each guest there shows `running`, and `stop` stops it.

use crate::guest::harness::{
    alive, can_run, is_mounted, ok, parent_of, stderr, stdout, within_30s,
};
use crate::guest::named::Guest;
use crate::review_s20_backup::TmpfsMount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// A bind mount of `from` at `to`, detached on drop.
pub(crate) struct Bind(PathBuf);

impl Bind {
    pub(crate) fn new(from: &Path, to: &Path, flags: MsFlags) -> Bind {
        std::fs::create_dir_all(to).unwrap();
        mount(
            Some(from),
            to,
            None::<&str>,
            MsFlags::MS_BIND | flags,
            None::<&str>,
        )
        .unwrap();
        Bind(to.to_path_buf())
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

/// A directory of the test's own for its mounts, made before its guest:
/// declared first, they are unmounted after the guest (dropped first) is
/// stopped.
fn scratch(test: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{test}-"))
        .tempdir()
        .unwrap()
}

/// A guest started with RUN_DIR at TOP/run, TOP a tmpfs of the test's made
/// shared (as /run is under systemd), RUN_DIR first bound onto itself when
/// `self_bound`. Its fields drop in order: the bind (what a build before
/// the fix took for a cover, and could not stop, it stops then), the guest
/// (stopped), the tmpfs, the directory.
struct UnderShared {
    _bind: Option<Bind>,
    g: Guest,
    init: i64,
    top: PathBuf,
    _tmpfs: TmpfsMount,
    dir: tempfile::TempDir,
}

fn started_under_shared(test: &str, self_bound: bool) -> UnderShared {
    let dir = scratch(test);
    let top = dir.path().join("top");
    let tmpfs = TmpfsMount::at(&top);
    propagate(&top, MsFlags::MS_SHARED);
    let run_dir = top.join("run");
    std::fs::create_dir(&run_dir).unwrap();
    let mut g = Guest::new(test, "[\"/bin/sleep\", \"1000\"]", false);
    let bind = self_bound.then(|| Bind::new(&run_dir, &run_dir, MsFlags::empty()));
    g.run_dir = run_dir;
    ok(&g.unifs(&["start", &g.name]));
    let init = g.state()["pid"].as_i64().unwrap();
    UnderShared {
        _bind: bind,
        g,
        init,
        top,
        _tmpfs: tmpfs,
        dir,
    }
}

/// Sets the propagation of the mount at `p` (MS_SHARED, MS_PRIVATE, …).
fn propagate(p: &Path, how: MsFlags) {
    mount(None::<&str>, p, None::<&str>, how, None::<&str>).unwrap();
}

/// The guest `g`, started, is seen running as it is (not covered) by
/// `status` and `list`, and `stop` stops it.
fn seen_running_and_stopped(g: &Guest, init: i64) {
    let o = g.unifs(&["status", &g.name]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.contains("state:   running\n"), "{out}{err}");
    assert!(
        !out.contains("covered") && !err.contains("covered"),
        "{out}{err}"
    );
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    let o = g.unifs(&["list"]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(
        !out.contains("covered") && !err.contains("covered"),
        "{out}{err}"
    );
    let out = ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    assert!(out.contains("stopped"), "{out}");
    assert!(!alive(init));
}

/// RUN_DIR bound onto itself, under a shared mount, before the guest
/// started (`ip netns` makes /run/netns a mount point so; /run is shared
/// under systemd): the root's mount is made on that bind and propagates
/// to its peer, the mount under it, where it is listed at the same path,
/// hidden. That hidden copy was taken for the guest's root: `covered`
/// by the bind, `status` exit 4, `stop` refused.
#[test]
fn s45_a_run_dir_bound_onto_itself_under_a_shared_mount_is_not_covered() {
    if !can_run("s45_a_run_dir_bound_onto_itself_under_a_shared_mount_is_not_covered") {
        return;
    }
    let u = started_under_shared("s45rdself", true);
    seen_running_and_stopped(&u.g, u.init);
}

/// RUN_DIR a tmpfs (/run) remounted with new options while the guest runs
/// (`mount -o remount,size=…`): the same mount, nothing covered. A guard.
#[test]
fn s45_a_run_dir_remounted_with_new_options_is_not_covered() {
    if !can_run("s45_a_run_dir_remounted_with_new_options_is_not_covered") {
        return;
    }
    let dir = scratch("s45rdremount");
    let run_dir = dir.path().join("run");
    let _tmpfs = TmpfsMount::at(&run_dir);
    let mut g = Guest::new("s45rdremount", "[\"/bin/sleep\", \"1000\"]", false);
    g.run_dir = run_dir.clone();
    ok(&g.unifs(&["start", &g.name]));
    let init = g.state()["pid"].as_i64().unwrap();
    mount(
        None::<&str>,
        &run_dir,
        None::<&str>,
        MsFlags::MS_REMOUNT,
        Some("size=64m"),
    )
    .unwrap();
    seen_running_and_stopped(&g, init);
}

/// RUN_DIR, under a shared mount, bound elsewhere while the guest runs (a
/// peer that gets the guest's mounts from then on), and the host's mounts
/// made private again after (`mount --make-rprivate`): nothing covers the
/// run dir. A guard.
#[test]
fn s45_a_run_dir_bound_elsewhere_is_not_covered() {
    if !can_run("s45_a_run_dir_bound_elsewhere_is_not_covered") {
        return;
    }
    let u = started_under_shared("s45rdelse", false);
    let _bind = Bind::new(&u.top, &u.dir.path().join("else"), MsFlags::MS_REC);
    propagate(&u.top, MsFlags::MS_REC | MsFlags::MS_PRIVATE);
    seen_running_and_stopped(&u.g, u.init);
}

/// The same run dir (bound onto itself under a shared mount) when the
/// guest's init ends: its keeper stops the guest as ever (root unmounted,
/// record gone). Before, it took the run dir for covered and left the
/// guest as it was, `not_stopped`.
#[test]
fn s45_a_keeper_in_a_run_dir_bound_onto_itself_stops_its_guest() {
    if !can_run("s45_a_keeper_in_a_run_dir_bound_onto_itself_stops_its_guest") {
        return;
    }
    let u = started_under_shared("s45rdselfend", true);
    let (g, init, run_dir) = (&u.g, u.init, &u.g.run_dir);
    let keeper = parent_of(init);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        within_30s(|| !alive(keeper.into())),
        "keeper {keeper} lives"
    );
    let root = run_dir.join(&g.name).join("root");
    let exit = std::fs::read_to_string(run_dir.join(&g.name).join("exit.json")).unwrap_or_default();
    assert!(!exit.contains("not_stopped\": \""), "{exit}");
    assert!(
        !is_mounted(&root),
        "{} is left mounted: {exit}",
        root.display()
    );
    let o = g.unifs(&["status", &g.name]);
    assert!(
        stdout(&o).contains("state:   stopped"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}
