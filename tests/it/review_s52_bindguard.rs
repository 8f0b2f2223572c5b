//! Session 52 (bindguard): a bind root (`unifs run --root-mount bind`,
//! `root_mount = "bind"`) is the backing directory itself, with none of the
//! overlay's checks. In a guest unified into the store, one write there
//! changed the file for every guest linking it, and its store object; a
//! run did it without a word. Now refused before anything starts, when the
//! store's catalog records the root (or a guest inside it, or it inside a
//! guest); a root no store records, or no store at all, still runs.

use crate::common::unifs_bin;
use crate::guest::harness::{can_run, is_mounted, run_bounded, stderr, TestRoot};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

/// What both guests hold, linked to one store object by unify.
const SHARED: &str = "etc/shared.conf";

/// Two guests (`t`'s root and `other`) unified into `store`, their
/// [`SHARED`] one inode.
struct Unified {
    t: TestRoot,
    other: PathBuf,
    store: PathBuf,
}

impl Unified {
    fn new() -> Unified {
        let t = TestRoot::new();
        let other = t.dir.path().join("other");
        std::fs::create_dir_all(other.join("etc")).unwrap();
        let store = t.dir.path().join("store");
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for g in [t.root(), other.clone()] {
            let f = std::fs::File::create(g.join(SHARED)).unwrap();
            std::io::Write::write_all(&mut &f, &[b's'; 5000]).unwrap();
            f.set_modified(when).unwrap();
        }
        let mut cmd = Command::new(unifs_bin());
        cmd.arg("--store")
            .arg(&store)
            .args(["unify", "--no-progress"]);
        cmd.arg(t.root()).arg(&other);
        let o = run_bounded(cmd, Duration::from_secs(60));
        assert_eq!(o.status.code(), Some(0), "unify: {}", stderr(&o));
        let u = Unified { t, other, store };
        assert!(u.shared_links() >= 3, "unify linked nothing");
        u
    }

    /// Links of the shared inode: both guests' and the store object's.
    fn shared_links(&self) -> u64 {
        std::fs::metadata(self.t.root().join(SHARED))
            .unwrap()
            .nlink()
    }

    /// Both guests' [`SHARED`] as unify left it, one inode still.
    fn assert_untouched(&self) {
        for g in [self.t.root(), self.other.clone()] {
            assert_eq!(std::fs::read(g.join(SHARED)).unwrap(), vec![b's'; 5000]);
        }
        assert!(self.shared_links() >= 3);
    }
}

/// `unifs --store STORE run --root-mount bind --root ROOT -- sh -c SCRIPT`.
fn bind_run(store: &Path, root: &Path, script: &str) -> Output {
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("--store").arg(store);
    cmd.args(["run", "--root-mount", "bind", "--root"])
        .arg(root);
    cmd.args(["--", "/bin/sh", "-c", script]);
    run_bounded(cmd, Duration::from_secs(30))
}

/// The write that went into every guest before.
const WRITE: &str = "echo changed > /etc/shared.conf";

/// The run refused, in one line naming `root`, the store and the ways out.
fn assert_refused(o: &Output, root: &Path, store: &Path, relation: &str) {
    let err = stderr(o);
    assert_ne!(o.status.code(), Some(0), "{err}");
    let want = format!("guest root {} {relation} the guest ", root.display());
    assert!(err.contains(&want), "{err}");
    let unified = format!("unified into the store {}", store.display());
    for want in [
        unified.as_str(),
        "nothing was started",
        "--root-mount overlay",
        "forgetting the guest does not help",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn s52_bind_run_of_a_unified_guest_is_refused() {
    if !can_run("s52_bind_run_of_a_unified_guest_is_refused") {
        return;
    }
    let u = Unified::new();
    let root = u.t.root();
    let o = bind_run(&u.store, &root, WRITE);
    assert_refused(&o, &root, &u.store, "is");
    u.assert_untouched();
    // Inside a guest, and holding one (the guests' parent).
    let etc = root.join("etc");
    assert_refused(
        &bind_run(&u.store, &etc, WRITE),
        &etc,
        &u.store,
        "lies inside",
    );
    let parent = u.t.dir.path().canonicalize().unwrap();
    let o = bind_run(&u.store, &parent, WRITE);
    assert_refused(&o, &parent, &u.store, "holds");
    u.assert_untouched();
    // Through UNIFS_STORE too.
    let mut cmd = Command::new(unifs_bin());
    cmd.env("UNIFS_STORE", &u.store);
    cmd.args(["run", "--root-mount", "bind", "--root"])
        .arg(&root);
    cmd.args(["--", "/bin/sh", "-c", WRITE]);
    let o = run_bounded(cmd, Duration::from_secs(30));
    assert_refused(&o, &root, &u.store, "is");
    u.assert_untouched();
}

/// A named guest of `u`'s first root with `root_mount = "bind"`; stopped
/// (and its root unmounted) on drop, should a start have run it.
struct BindGuest<'a> {
    u: &'a Unified,
    name: String,
    config_dir: PathBuf,
    run_dir: PathBuf,
}

impl BindGuest<'_> {
    fn new(u: &Unified) -> BindGuest<'_> {
        let config_dir = u.t.dir.path().join("config");
        std::fs::create_dir(&config_dir).unwrap();
        let name = format!("t{}-s52bind", std::process::id());
        let toml = format!(
            "root = {:?}\nroot_mount = \"bind\"\ninit = [\"/bin/sh\", \"-c\", {:?}]\n\
             [limits]\npids = 64\n",
            u.t.root(),
            format!("{WRITE}; exec sleep 1000")
        );
        std::fs::write(config_dir.join(format!("{name}.toml")), toml).unwrap();
        let run_dir = u.t.dir.path().join("run");
        BindGuest {
            u,
            name,
            config_dir,
            run_dir,
        }
    }

    fn unifs(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(unifs_bin());
        cmd.arg("--store").arg(&self.u.store);
        cmd.env("UNIFS_CONFIG_DIR", &self.config_dir);
        cmd.env("UNIFS_RUN_DIR", &self.run_dir);
        cmd.arg("guest").args(args);
        run_bounded(cmd, Duration::from_secs(30))
    }

    fn mounted_root(&self) -> PathBuf {
        self.run_dir.join(&self.name).join("root")
    }
}

impl Drop for BindGuest<'_> {
    fn drop(&mut self) {
        let _ = self.unifs(&["stop", "--timeout", "0", &self.name]);
        if is_mounted(&self.mounted_root()) {
            let _ = nix::mount::umount2(&self.mounted_root(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[test]
fn s52_bind_start_of_a_unified_guest_is_refused() {
    if !can_run("s52_bind_start_of_a_unified_guest_is_refused") {
        return;
    }
    let u = Unified::new();
    let g = BindGuest::new(&u);
    let o = g.unifs(&["start", &g.name]);
    let err = stderr(&o);
    assert_refused(&o, &u.t.root(), &u.store, "is");
    assert!(err.contains("root_mount = \"bind\""), "{err}");
    assert!(!is_mounted(&g.mounted_root()), "{err}");
    assert!(!g.mounted_root().exists(), "{err}");
    let st = g.unifs(&["status", "--json", &g.name]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["running"], false, "{st}");
    u.assert_untouched();
    // `guest list` says a start would fail.
    let list = stderr(&g.unifs(&["list"]));
    assert!(
        list.contains("forgetting the guest does not help"),
        "{list}"
    );
}

#[test]
fn s52_bind_run_of_a_root_no_store_records_still_runs() {
    if !can_run("s52_bind_run_of_a_root_no_store_records_still_runs") {
        return;
    }
    let u = Unified::new();
    // A root of its own, on the store's filesystem: not one of its guests.
    let plain = TestRoot::new();
    let o = bind_run(
        &u.store,
        &plain.root(),
        "echo mine > /etc/own && cat /etc/own",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "mine\n");
    assert_eq!(
        std::fs::read_to_string(plain.root().join("etc/own")).unwrap(),
        "mine\n"
    );
    // No store at all: said nothing of it.
    let none = plain.dir.path().join("no-store");
    let o = bind_run(&none, &plain.root(), "true");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("unified into the store"),
        "{}",
        stderr(&o)
    );
    assert!(!none.exists());
    u.assert_untouched();
}

/// A root that holds the store (no guest recorded below it): the guest
/// would get the objects themselves (`/var/lib` for /var/lib/unifs).
#[test]
fn s52_bind_run_of_a_root_holding_the_store_is_refused() {
    if !can_run("s52_bind_run_of_a_root_holding_the_store_is_refused") {
        return;
    }
    let t = TestRoot::new();
    let root = t.root();
    let store = root.join("srv/store");
    let mut init = Command::new(unifs_bin());
    init.arg("--store").arg(&store).args(["store", "init"]);
    let o = run_bounded(init, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = bind_run(&store, &root, "touch /srv/store/objects/x");
    let err = stderr(&o);
    assert_ne!(o.status.code(), Some(0), "{err}");
    let want = format!("guest root {} holds the unifs store ", root.display());
    assert!(err.contains(&want), "{err}");
    assert!(!store.join("objects/x").exists(), "{err}");
}
