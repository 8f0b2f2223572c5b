//! Guests that come to share inodes with others or with snapshots after
//! unify already knows them: a guest replaced by a `cp -al` clone under its
//! own path, a `cp -al` snapshot of a settled guest.

use crate::common::{require_root, require_strace, unifs_bin};
use crate::tree::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Guests `g` and `h` in `lab`: one library both ship (an object after the
/// first unify), and a log and a mailbox of each its own in excluded trees.
fn two_guests(lab: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (g, h) = (lab.join("g"), lab.join("h"));
    for (root, own) in [(&g, 1), (&h, 2)] {
        file(root, "usr/lib/libx.so", &bytes(7, 20_000), 0o644);
        file(root, "var/log/syslog", &bytes(100 + own, 300), 0o640);
        file(root, "home/u/mbox", &bytes(200 + own, 500), 0o600);
    }
    (lab.join("store"), g, h)
}

fn cp_al(from: &Path, to: &Path) {
    let st = Command::new("cp").arg("-al").arg(from).arg(to).status();
    assert!(st.unwrap().success(), "cp -al {from:?} {to:?}");
}

/// Each of `rels` is a file of `g`'s own, not `h`'s inode, with `h`'s
/// content.
fn assert_split(g: &Path, h: &Path, rels: &[&str]) {
    for rel in rels {
        let (a, b) = (g.join(rel), h.join(rel));
        assert_ne!(ino(&a), ino(&b), "{rel} is still shared");
        assert_eq!(fs::metadata(&a).unwrap().nlink(), 1, "{rel}");
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap(), "{rel}");
    }
}

/// What was wrong: the catalog knew a guest only by its path. Guest `g`
/// removed and made again as a `cp -al` clone of `h` was no new guest to
/// unify (it had a links digest), so no run walked the excluded trees:
/// `g`'s /var/log/syslog and /home/u/mbox stayed `h`'s inodes, with no store
/// marker, and unify exited 0; a write through `g`'s mount changed `h`'s
/// files (invariant 1). The catalog now keeps each guest root's device,
/// inode and birth time, and a guest whose root is another directory is
/// unified as a new one.
#[test]
fn review_s22_a_guest_replaced_by_a_clone_under_its_path_is_split() {
    if !require_root("review_s22_a_guest_replaced_by_a_clone_under_its_path_is_split") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, g, h) = two_guests(dir.path());
    let s = unify_json(&store, &[&g, &h]);
    assert_eq!(s["objects_added"], 1, "{s}");

    fs::remove_dir_all(&g).unwrap();
    cp_al(&h, &g);
    let before = snapshot(&g);
    // Its only file outside excluded trees links an object: nothing but
    // the root tells the clone from the guest unify knew.
    let s = unify_json(&store, &[&"--all"]);
    assert_eq!(s["clone_paths_split"], 2, "{s}");
    assert_split(&g, &h, &["var/log/syslog", "home/u/mbox"]);
    assert_invisible(&before, &snapshot(&g), "g");
    assert_verify_clean(&store);
    let again = unify_json(&store, &[&g, &h]);
    assert_eq!(again["clone_paths_split"], 0, "{again}");
}

/// What was wrong: a guest emptied and refilled in place with a clone of
/// another (`cp -al h/. g/`, as `rsync --link-dest` into the same
/// directory does) keeps its root, so even the root's identity does not
/// tell. The walk found `g`'s own file shared with `h` (and made it an
/// object), but did not look into the excluded trees, whose files stayed
/// shared. A walk that finds an inode unify may link in two guests now
/// walks the excluded trees too, in the same run.
#[test]
fn review_s22_a_guest_refilled_in_place_with_a_clone_is_split() {
    if !require_root("review_s22_a_guest_refilled_in_place_with_a_clone_is_split") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, g, h) = two_guests(dir.path());
    file(&h, "usr/share/own", &bytes(300, 4096), 0o644);
    unify_json(&store, &[&g, &h]);

    for entry in fs::read_dir(&g).unwrap() {
        fs::remove_dir_all(entry.unwrap().path()).unwrap();
    }
    let st = Command::new("cp")
        .arg("-al")
        .arg(h.join("."))
        .arg(&g)
        .status();
    assert!(st.unwrap().success());
    let s = unify_json(&store, &[&g, &h]);
    assert_eq!(s["clone_paths_split"], 2, "{s}");
    assert_split(&g, &h, &["var/log/syslog", "home/u/mbox"]);
    // Its own file is now an object: the mount breaks it on a write.
    assert_eq!(fs::metadata(g.join("usr/share/own")).unwrap().nlink(), 3);
    assert_verify_clean(&store);
}

/// What was wrong: a `cp -al` snapshot of a guest unify already knew was
/// counted as one of the guest's own hardlink groups and the run exited 0
/// (docs/unify.md: reported, exit 23); only a guest's first run looked. A
/// walk that finds inodes with links it did not see, other than those a
/// look into the excluded trees last found all the guest's own, now looks
/// in the same run: the snapshot is reported, run after run, until it is
/// gone.
#[test]
fn review_s22_a_snapshot_of_a_settled_guest_is_reported() {
    if !require_root("review_s22_a_snapshot_of_a_settled_guest_is_reported") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, g, h) = two_guests(dir.path());
    file(&g, "etc/motd", b"motd of g\n", 0o644);
    unify_json(&store, &[&g, &h]);
    let snap = dir.path().join("snap");
    cp_al(&g, &snap);

    for _ in 0..2 {
        let s = unify_json(&store, &[&g, &h]);
        let problems = s["problems"].to_string();
        assert!(
            problems.contains("have links outside the guests given")
                && problems.contains("etc/motd"),
            "{s}"
        );
        assert_eq!(s["clone_paths_split"], 0, "{s}");
    }
    assert_eq!(fs::metadata(g.join("etc/motd")).unwrap().nlink(), 2);

    fs::remove_dir_all(&snap).unwrap();
    let s = unify_json(&store, &[&g, &h]);
    assert_eq!(s["problems"].as_array().unwrap().len(), 0, "{s}");
}

/// Runs `unifs unify --json GUESTS` under strace; returns the summary and
/// whether the run opened a directory named `name`.
fn unify_opening(store: &Path, guests: &[&Path], name: &str) -> (serde_json::Value, bool) {
    let trace = store.with_extension("strace");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=openat,openat2", "-o"])
        .arg(&trace)
        .arg(unifs_bin())
        .arg("--store")
        .arg(store)
        .args(["unify", "--json"])
        .args(guests)
        .output()
        .unwrap();
    let opened = fs::read_to_string(&trace)
        .unwrap()
        .contains(&format!("\"{name}\""));
    (unify_summary(&out), opened)
}

/// What was wrong, the other side of the snapshot fix: a guest's own
/// hardlink group reaching into an excluded tree (/usr/x linked as /var/x)
/// has links the walk does not see, like a snapshot's. Looking for a
/// snapshot on every run would make every re-run walk the excluded trees;
/// the look's finding is kept instead (`guests.links_outside`), so re-runs
/// stay cheap, while a snapshot that adds a link to the group, even of its
/// excluded path alone, is still reported.
#[test]
fn review_s22_own_links_into_excluded_trees_are_looked_at_once() {
    let test = "review_s22_own_links_into_excluded_trees_are_looked_at_once";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, g, h) = two_guests(dir.path());
    file(&g, "usr/share/x", &bytes(400, 3000), 0o644);
    fs::create_dir_all(g.join("var/spoolxyz")).unwrap();
    fs::hard_link(g.join("usr/share/x"), g.join("var/spoolxyz/x")).unwrap();
    let guests = [g.as_path(), h.as_path()];

    // First run: new guests, excluded trees walked.
    let (s, looked) = unify_opening(&store, &guests, "spoolxyz");
    assert!(looked, "{s}");
    assert_eq!(s["guest_hardlinks_left"], 1, "{s}");
    // The next one looks once more, as the group's links are not known yet;
    // later ones do not.
    let (_, looked) = unify_opening(&store, &guests, "spoolxyz");
    assert!(looked);
    for _ in 0..2 {
        let (s, looked) = unify_opening(&store, &guests, "spoolxyz");
        assert!(!looked, "a re-run walked the excluded trees: {s}");
        assert_eq!(s["problems"].as_array().unwrap().len(), 0, "{s}");
    }

    // A snapshot of the excluded path alone adds a link to the group.
    fs::hard_link(g.join("var/spoolxyz/x"), dir.path().join("snap-x")).unwrap();
    let (s, looked) = unify_opening(&store, &guests, "spoolxyz");
    assert!(looked);
    assert!(
        s["problems"]
            .to_string()
            .contains("have links outside the guests given"),
        "{s}"
    );
    assert_eq!(fs::metadata(g.join("usr/share/x")).unwrap().nlink(), 3);
}
