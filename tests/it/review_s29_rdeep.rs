//! Review s29 (rdeep): the deep-directory cache attacked: subtrees moved
//! between deep and shallow places through the mount, exchanges of a deep
//! and a shallow directory, hardlinks in deep directories, mounts made on
//! the host over a held directory itself, many threads walking more deep
//! trees than the cache holds, and read-only mounts. Each result is
//! compared with the backing tree.

use crate::common::{require_root, require_strace};
use crate::fs::harness::{errno, Mount, World};
use crate::review_s29_deep::{below, chain, fd_count, touch, Bind};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

fn exchange(a: &Path, b: &Path) {
    let ca = CString::new(a.as_os_str().as_bytes()).unwrap();
    let cb = CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: two NUL-terminated paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

#[test]
fn deep_subtrees_moved_to_shallow_places_and_back_and_exchanged_act_on_the_right_directories() {
    if !require_root("review_s29_rdeep_deep_subtrees_moved") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let deep = chain(&g, "a", 90);
    fs::write(deep.join("who"), "a").unwrap();
    let shallow = chain(&g.join("s"), "s", 3);
    fs::write(shallow.join("who"), "s").unwrap();
    let m = w.mount(&g, "m", &[]);
    let md = below(&m.dir, "a", 90);
    assert_eq!(fs::read_to_string(md.join("who")).unwrap(), "a");

    // A deep subtree (60 levels below depth 30) moved to the top.
    fs::rename(below(&m.dir, "a", 31), m.dir.join("top")).unwrap();
    let up = below(&m.dir.join("top"), "a", 59);
    assert_eq!(fs::read_to_string(up.join("who")).unwrap(), "a");
    touch(&up, "at-top");
    assert!(below(&g.join("top"), "a", 59).join("at-top").exists());
    assert_eq!(errno(fs::symlink_metadata(md.join("who"))), libc::ENOENT);
    // And back, one level deeper than before.
    fs::rename(m.dir.join("top"), below(&m.dir, "a", 30).join("back")).unwrap();
    let down = below(&below(&m.dir, "a", 30).join("back"), "a", 59);
    assert_eq!(fs::read_to_string(down.join("who")).unwrap(), "a");
    touch(&down, "back-down");
    let gdown = below(&below(&g, "a", 30).join("back"), "a", 59);
    assert!(gdown.join("back-down").exists() && gdown.join("at-top").exists());

    // A deep directory exchanged with a shallow one.
    let base = below(&m.dir, "a", 30).join("back");
    let (dx, sx) = (below(&base, "a", 10), m.dir.join("s"));
    exchange(&dx, &sx);
    let (now_deep, bottom) = (below(&dx, "s", 3), below(&sx, "a", 49));
    assert_eq!(fs::read_to_string(now_deep.join("who")).unwrap(), "s");
    assert_eq!(fs::read_to_string(bottom.join("who")).unwrap(), "a");
    touch(&now_deep, "s-deep");
    touch(&bottom, "a-shallow");
    let gdx = below(&below(&g, "a", 30).join("back"), "a", 10);
    assert!(below(&gdx, "s", 3).join("s-deep").exists());
    assert!(below(&g.join("s"), "a", 49).join("a-shallow").exists());
    // Exchanged back: each name finds its own directory again.
    exchange(&dx, &sx);
    assert_eq!(fs::read_to_string(down.join("who")).unwrap(), "a");
    assert_eq!(
        fs::read_to_string(shallow_in(&m.dir).join("who")).unwrap(),
        "s"
    );
    let mut names: Vec<_> = fs::read_dir(&down)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a-shallow", "at-top", "back-down", "who"]);
}

fn shallow_in(root: &Path) -> std::path::PathBuf {
    below(&root.join("s"), "s", 3)
}

#[test]
fn hardlinks_in_deep_directories_stay_one_file() {
    if !require_root("review_s29_rdeep_hardlinks_in_deep_directories") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let one = chain(&g.join("p"), "a", 70);
    let two = chain(&g.join("q"), "b", 95);
    fs::write(one.join("f"), "first").unwrap();
    let m = w.mount(&g, "m", &[]);
    let (m1, m2) = (
        below(&m.dir.join("p"), "a", 70),
        below(&m.dir.join("q"), "b", 95),
    );
    fs::hard_link(m1.join("f"), m2.join("g")).unwrap();
    fs::write(m2.join("g"), "second").unwrap();
    assert_eq!(fs::read_to_string(m1.join("f")).unwrap(), "second");
    assert_eq!(fs::read_to_string(one.join("f")).unwrap(), "second");
    assert_eq!(fs::read_to_string(two.join("g")).unwrap(), "second");
    fs::remove_file(m1.join("f")).unwrap();
    assert_eq!(fs::read_to_string(m2.join("g")).unwrap(), "second");
    assert!(!one.join("f").exists());
}

#[test]
fn a_mount_made_on_the_host_over_a_held_directory_itself_is_not_crossed() {
    if !require_root("review_s29_rdeep_a_mount_over_a_held_directory") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let bottom = chain(&g, "a", 80);
    fs::write(bottom.join("who"), "backing").unwrap();
    let m = w.mount(&g, "m", &[]);
    let mb = below(&m.dir, "a", 80);
    assert_eq!(fs::read_to_string(mb.join("who")).unwrap(), "backing");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "none"])
        .arg(&bottom)
        .status()
        .unwrap();
    assert!(mounted.success());
    let bind = Bind(bottom.clone());
    // From the root this path crosses the new mount: refused, as before.
    assert_eq!(errno(fs::File::create(mb.join("made"))), libc::EXDEV);
    assert_eq!(errno(fs::symlink_metadata(mb.join("who"))), libc::EXDEV);
    drop(bind);
    assert!(!bottom.join("made").exists());
    // Unmounted: reached again.
    assert_eq!(fs::read_to_string(mb.join("who")).unwrap(), "backing");
}

#[test]
fn threads_walking_more_deep_trees_than_are_held_read_the_right_files_with_few_fds() {
    if !require_root("review_s29_rdeep_threads_walking") {
        return;
    }
    const TREES: usize = 24;
    const DEPTH: usize = 100;
    let w = World::new();
    let g = w.dir("g");
    for t in 0..TREES {
        let mut d = g.join(format!("t{t}"));
        for k in 0..DEPTH {
            d = d.join("d");
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("f"), format!("{t}/{k}")).unwrap();
        }
    }
    let m = w.mount(&g, "m", &[]);
    let before = fd_count(m.pid());
    let dir = m.dir.clone();
    let walkers: Vec<_> = (0..4)
        .map(|i| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                for round in 0..3 {
                    for t in (i..TREES).step_by(4) {
                        // Down, then back up, reading each level's file.
                        let levels: Vec<usize> = if round % 2 == 0 {
                            (0..DEPTH).collect()
                        } else {
                            (0..DEPTH).rev().collect()
                        };
                        for k in levels {
                            let p = below(&dir.join(format!("t{t}")), "d", k + 1).join("f");
                            let got = fs::read_to_string(&p).unwrap();
                            assert_eq!(got, format!("{t}/{k}"), "{}", p.display());
                        }
                    }
                }
            })
        })
        .collect();
    for w in walkers {
        w.join().unwrap();
    }
    let after = fd_count(m.pid());
    assert!(
        after <= before + 80,
        "the daemon held {before} fds before the walks, {after} after"
    );
}

#[test]
fn a_read_only_mount_reads_deep_trees_and_refuses_writes_there() {
    if !require_root("review_s29_rdeep_a_read_only_mount") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let bottom = chain(&g, "a", 120);
    fs::write(bottom.join("who"), "a").unwrap();
    let m = w.mount(&g, "m", &["ro"]);
    let mb = below(&m.dir, "a", 120);
    for _ in 0..3 {
        assert_eq!(fs::read_to_string(mb.join("who")).unwrap(), "a");
        assert_eq!(errno(fs::File::create(mb.join("x"))), libc::EROFS);
        assert_eq!(
            errno(fs::create_dir(below(&m.dir, "a", 60).join("y"))),
            libc::EROFS
        );
    }
    assert!(!bottom.join("x").exists());
}

/// The names in directory `dir`, sorted (an error reads as none).
fn listed(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_held_directory_removed_and_made_again_on_the_host_is_the_new_one_as_at_shallow_depth() {
    if !require_root("review_s29_rdeep_a_held_directory_removed_and_made_again") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    // The same at 3 levels (reached from the root) and at 80 (held).
    for depth in [3, 80] {
        let bottom = chain(&g.join(format!("d{depth}")), "a", depth);
        fs::write(bottom.join("old"), "old").unwrap();
    }
    let m = w.mount(&g, "m", &[]);
    let mounted = |depth: usize| below(&m.dir.join(format!("d{depth}")), "a", depth);
    for depth in [3, 80] {
        assert_eq!(listed(&mounted(depth)), ["old"]);
        // A name looked up in it: the deep one is held.
        let missing = fs::symlink_metadata(mounted(depth).join("missing"));
        assert_eq!(errno(missing), libc::ENOENT);
    }
    // On the host: the bottom directories removed and made again.
    for depth in [3, 80] {
        let bottom = below(&g.join(format!("d{depth}")), "a", depth);
        fs::remove_dir_all(&bottom).unwrap();
        fs::create_dir(&bottom).unwrap();
        fs::write(bottom.join("new"), "new").unwrap();
    }
    for depth in [3, 80] {
        let at = mounted(depth);
        touch(&at, "made");
        assert_eq!(listed(&at), ["made", "new"], "listed at depth {depth}");
        let bottom = below(&g.join(format!("d{depth}")), "a", depth);
        assert_eq!(listed(&bottom), ["made", "new"], "made at depth {depth}");
    }
}

#[test]
fn a_directory_held_while_the_host_mounts_over_its_way_is_not_used_after() {
    if !require_root("review_s29_rdeep_a_directory_held_while_the_host_mounts")
        || !require_strace("review_s29_rdeep_a_directory_held_while_the_host_mounts")
    {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let bottom = chain(&g, "a", 70);
    chain(&g, "b", 40);
    // Each fd the daemon dups to hold a directory takes a second: a
    // request that holds one is slow enough to mount in the middle of.
    let wrapper = [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=fcntl",
        "-e",
        "inject=fcntl:delay_exit=1000000",
    ];
    let log = fs::File::create(w.tmp.path().join("m.log")).unwrap();
    let m = Mount::start_under(&wrapper, &w.store, &g, &w.dir("m"), &[], log);
    // b/b/... held 33 levels down (4 s).
    let b = below(&m.dir, "b", 40);
    assert_eq!(errno(fs::symlink_metadata(b.join("x"))), libc::ENOENT);
    // A walk down a/a/...: 33 levels down held (4 s), then 65 levels
    // down opened at once and held (another 2 s, from about 4 s on).
    let deep = below(&m.dir, "a", 70);
    let walk = {
        let deep = deep.clone();
        std::thread::spawn(move || fs::symlink_metadata(deep.join("x")).is_err())
    };
    std::thread::sleep(Duration::from_millis(4500));
    // While the daemon holds the 65th directory: a mount on the host over
    // the 50th.
    let over = below(&g, "a", 50);
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "none"])
        .arg(&over)
        .status()
        .unwrap();
    assert!(mounted.success());
    let bind = Bind(over);
    // A request from a held directory sees the change first: every held
    // directory dropped, before the walk holds the 65th.
    std::thread::sleep(Duration::from_millis(200));
    let _ = fs::symlink_metadata(b.join("y"));
    assert!(walk.join().unwrap());
    // As from the root: a path through the new mount is refused.
    assert_eq!(errno(fs::File::create(deep.join("made"))), libc::EXDEV);
    drop(bind);
    assert!(!bottom.join("made").exists(), "made under the mount");
}
