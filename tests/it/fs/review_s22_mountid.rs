//! Review s22: what a mount serves was judged by names, not identity. A
//! guest directory moved away (and a new tree put at its path) while
//! mounted was taken for the new tree ("already mounted", the backing
//! directory to name instead, `guest status`'s root); and a store copied
//! without xattrs (its objects' markers lost) was mounted, and a guest's
//! write went into the file every guest shares.

use super::harness::{is_mounted, Mount, UnmountAt, World, MARKER};
use crate::common::{require_root, unifs_bin};
use crate::guest::harness::{can_run, run_bounded, TestRoot};
use crate::tree::{file, set_mtime, stderr, unifs, unify_json};
use std::fs;
use std::process::{Command, Output};
use std::time::Duration;

/// `unifs mount G M` where M serves the tree that was at G before an
/// operator moved it away (`mv G G.old`) and put a new one at G said "G is
/// already mounted at M; nothing to do", exit 0: the mount's source names
/// G, and only that was compared. `unify M` named G as the backing
/// directory to give instead, the new tree, not the one M serves.
#[test]
fn review_s22_a_mount_of_a_guest_moved_away_is_not_taken_for_the_new_tree() {
    if !require_root("review_s22_a_mount_of_a_guest_moved_away_is_not_taken_for_the_new_tree") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("hostname"), b"old tree\n").unwrap();
    fs::create_dir(g.join("etc")).unwrap();
    let m = w.mount(&g, "m", &[]);
    // The same guest again (`mount -a`): nothing to do, as before.
    let out = unifs(&w.store, &[&"mount", &g, &m.dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to do"), "{}", stderr(&out));

    fs::rename(&g, w.tmp.path().join("g.old")).unwrap();
    let g = w.dir("g");
    fs::write(g.join("hostname"), b"NEW tree\n").unwrap();
    let out = unifs(&w.store, &[&"mount", &g, &m.dir]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("serves another directory"), "{err}");
    assert!(err.contains("moved or replaced"), "{err}");
    assert!(err.contains("unifs umount"), "{err}");
    assert_eq!(fs::read(m.path("hostname")).unwrap(), b"old tree\n");

    // Not "name the guest's backing directory instead (G)": G is not it.
    let fresh = w.tmp.path().join("fresh-store");
    for (store, args) in [
        (
            &fresh,
            vec![&"unify" as &dyn AsRef<std::ffi::OsStr>, &m.dir],
        ),
        (&fresh, vec![&"unify", &m.path("etc")]),
        (&w.store, vec![&"mount", &m.dir, &w.dir("m2")]),
    ] {
        let out = unifs(store, &args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        assert!(!err.contains("instead"), "{err}");
        assert!(
            err.contains(&format!("the directory that was at {}", g.display())),
            "{err}"
        );
        assert!(err.contains("moved or replaced"), "{err}");
    }
    assert!(!fresh.exists());
    assert!(!is_mounted(&w.tmp.path().join("m2")));
}

/// A named guest's root moved away while it ran: `guest status` printed
/// the path it started from as its root, exit 0, not a word that the
/// directory there now is another one than the guest runs on.
#[test]
fn review_s22_guest_status_says_a_running_guests_root_was_moved() {
    if !can_run("review_s22_guest_status_says_a_running_guests_root_was_moved") {
        return;
    }
    let t = TestRoot::new();
    let (root, config, run) = (
        t.root(),
        t.dir.path().join("config"),
        t.dir.path().join("run"),
    );
    fs::create_dir(&config).unwrap();
    let name = format!("t{}-s22root", std::process::id());
    let toml = format!(
        "root = {root:?}\nroot_mount = \"overlay\"\ninit = [\"/bin/sleep\", \"1000\"]\n\
         init_reaper = true\n"
    );
    fs::write(config.join(format!("{name}.toml")), toml).unwrap();
    // No store there: mounted without one.
    let store = t.dir.path().join("no-store");
    let guest = |args: &[&str]| -> Output {
        let mut c = Command::new(unifs_bin());
        c.arg("--store").arg(&store).arg("guest").args(args);
        c.env("UNIFS_CONFIG_DIR", &config)
            .env("UNIFS_RUN_DIR", &run);
        run_bounded(c, Duration::from_secs(30))
    };
    let _unmount = UnmountAt(&run.join(&name).join("root"));
    let _stop = StopGuest(&guest, &name);
    let out = guest(&["start", &name]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = guest(&["status", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("moved or replaced"));

    fs::rename(&root, t.dir.path().join("root.old")).unwrap();
    fs::create_dir(&root).unwrap();
    let out = guest(&["status", &name]);
    let (text, err) = (String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        text.contains(&format!(
            "root:    {} (moved or replaced since)",
            root.display()
        )),
        "{text}"
    );
    assert!(err.contains("moved or replaced"), "{err}");
    let out = guest(&["status", "--json", &name]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["root_moved"], true, "{st}");
    assert_eq!(st["running"], true, "{st}");
}

/// Stops the named guest on drop.
struct StopGuest<'a, F: Fn(&[&str]) -> Output>(&'a F, &'a str);

impl<F: Fn(&[&str]) -> Output> Drop for StopGuest<'_, F> {
    fn drop(&mut self) {
        let _ = (self.0)(&["stop", "--timeout", "0", self.1]);
    }
}

/// Two guests a and b in `base` with one shared file, unified into the
/// store beside them.
fn unified(w: &World, base: &str) {
    let top = w.dir(base);
    let gs = [top.join("a"), top.join("b")];
    for g in &gs {
        let f = file(g, "usr/lib/libx.so", b"shared library\n", 0o644);
        set_mtime(&f, 1_700_000_000);
    }
    unify_json(&top.join("store"), &[&gs[0], &gs[1]]);
}

/// Store and guests copied to a new disk with `rsync -aH` (no -X): every
/// object lost its marker, and `unifs mount` of a guest mounted without a
/// word; a write through it went into the inode the other guest and the
/// store share. The mount now looks at a few objects' markers first, and
/// `unifs unify` of the guests (as its message says) puts them back.
#[test]
fn review_s22_a_store_copied_without_xattrs_is_not_mounted() {
    if !require_root("review_s22_a_store_copied_without_xattrs_is_not_mounted") {
        return;
    }
    let w = World::new();
    unified(&w, "old");
    let new = w.tmp.path().join("new");
    let copied = match Command::new("rsync")
        .arg("-aH")
        .arg(w.tmp.path().join("old/"))
        .arg(&new)
        .status()
    {
        Ok(s) => s.success(),
        // Without rsync: cp, leaving the xattrs behind the same way.
        Err(_) => Command::new("cp")
            .args(["-a", "--no-preserve=xattr"])
            .arg(w.tmp.path().join("old"))
            .arg(&new)
            .status()
            .unwrap()
            .success(),
    };
    assert!(copied);
    let (store, a, b) = (new.join("store"), new.join("a"), new.join("b"));
    let lib = "usr/lib/libx.so";
    let marker = unifs::sys::xattr::get_path(&a.join(lib), std::ffi::OsStr::new(MARKER));
    assert_eq!(marker.unwrap(), None, "the copy lost the marker");

    let mp = fs::canonicalize(w.dir("m")).unwrap();
    let _guard = UnmountAt(&mp);
    let out = unifs(&store, &[&"mount", &a, &mp]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("without their marker"), "{err}");
    assert!(err.contains("copied without xattrs"), "{err}");
    assert!(err.contains(&store.display().to_string()), "{err}");
    assert!(!is_mounted(&mp));

    // What the message says to do: unify the guests again.
    unify_json(&store, &[&a, &b]);
    let m = Mount::start(&store, &a, &mp, &[]);
    fs::OpenOptions::new()
        .append(true)
        .open(m.path(lib))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"A's change\n"))
        .unwrap();
    drop(m);
    assert_eq!(fs::read(b.join(lib)).unwrap(), b"shared library\n");
    crate::tree::assert_verify_clean(&store);
}
