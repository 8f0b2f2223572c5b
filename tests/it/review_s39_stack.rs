//! Stacking kernel overlayfs and unifs (session 39): an overlay over a
//! mount (its lower), one with its upper and work dirs on a mount (Docker's
//! overlay2 with /var/lib/docker in a guest), overlays a guest mounts
//! itself, and guests whose tree is on overlayfs. Each step on a mount is
//! compared with the same stack on plain ext4.

use crate::common::{skip, unifs_bin};
use crate::fs::harness::{is_mounted, unmount_lazy, wait_until, Ext4, Mount};
use crate::guest::harness::{can_run, ok, stderr, stdout, TestRoot};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// True when the kernel has overlayfs; else skips (a failure under CI).
fn has_overlayfs(test: &str) -> bool {
    if !crate::common::require_root(test) {
        return false;
    }
    let known = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if known
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        return true;
    }
    skip(test, "the kernel has no overlayfs (CONFIG_OVERLAY_FS)");
    false
}

/// A kernel overlayfs mount, unmounted when dropped.
struct Overlay {
    merged: PathBuf,
}

impl Overlay {
    /// Mounts `lower`, `upper` and `work` (under `dir`) at `dir/merged`,
    /// with `opts` (comma-separated) besides; Err: mount(8)'s complaint.
    fn mount(dir: &Path, lower: &Path, opts: &str) -> Result<Overlay, String> {
        let merged = dir.join("merged");
        for d in ["upper", "work", "merged"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        let mut o = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        if !opts.is_empty() {
            o = format!("{o},{opts}");
        }
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &o])
            .arg(&merged)
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(format!(
                "mount -o {o}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Overlay { merged })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.merged.join(rel)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        unmount_lazy(&self.merged);
        wait_until(Duration::from_secs(5), || !is_mounted(&self.merged));
    }
}

/// `unifs --store STORE ARGS`, which must succeed; its stdout.
fn unifs(store: &Path, args: &[&str]) -> String {
    let out = Command::new(unifs_bin())
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "unifs {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes the tree every guest of these tests has: a few files and a
/// directory tree under `layer/` (where Docker keeps an image layer,
/// used as an overlay's lower dir), with one mtime so that unify shares
/// them. `layer/` sits where the default excludes leave it alone.
fn populate(root: &Path) {
    let files = [
        ("usr/bin/tool", "tool\n"),
        ("usr/share/doc/one", "one\n"),
        ("usr/share/doc/two", "two\n"),
        ("srv/layer/etc/conf", "conf\n"),
        ("srv/layer/etc/gone", "gone\n"),
        ("srv/layer/app/main", "main\n"),
        ("srv/layer/app/lib/libx", "libx\n"),
        ("srv/layer/data/keep", "keep\n"),
    ];
    for (rel, content) in files {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        crate::fs::harness::set_mtime(&p, 1_600_000_000);
    }
    std::os::unix::fs::symlink("main", root.join("srv/layer/app/link")).unwrap();
}

/// Two guests `a` and `b` of [`populate`]'s tree under `dir`, unified into
/// `dir/store`: their files are store objects.
fn unified_pair(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (store, a, b) = (dir.join("store"), dir.join("a"), dir.join("b"));
    populate(&a);
    populate(&b);
    unifs(&store, &["store", "init"]);
    let out = unifs(&store, &["unify", "--no-progress", path(&a), path(&b)]);
    assert!(out.contains("new objects"), "{out}");
    assert_eq!(fs::metadata(a.join("usr/bin/tool")).unwrap().nlink(), 3);
    (store, a, b)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every entry below `dir`, sorted: path, type, mode and content (a
/// symlink's target), as a user of the directory sees it.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
        let m = e.path().symlink_metadata().unwrap();
        let what = if m.is_symlink() {
            format!("-> {}", fs::read_link(e.path()).unwrap().display())
        } else if m.is_file() {
            format!(
                "{:?} nlink {}",
                fs::read_to_string(e.path()).unwrap(),
                m.nlink()
            )
        } else if m.file_type().is_char_device() {
            format!("char {:x}", m.rdev())
        } else {
            String::from("dir")
        };
        out.push(format!("{rel} {:o} {what}", m.mode() & 0o7777));
    }
    out
}

/// An errno as a word, for transcripts.
fn outcome<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
    }
}

/// What Docker's overlay2 and a container do to a layer through the
/// overlay at `m`: copy-up by a write and by chmod, a whiteout (rm of a
/// lower file), an opaque dir (rm -rf and mkdir), renames of a lower file
/// (RENAME_WHITEOUT on the upper) and of a lower dir (redirect_dir), a
/// hardlink and a symlink. One line per step: what it returned.
fn exercise(m: &Overlay) -> Vec<String> {
    let mut t = Vec::new();
    t.push(format!(
        "read {:?}",
        fs::read_to_string(m.path("etc/conf")).unwrap()
    ));
    let append = || -> std::io::Result<()> {
        use std::io::Write;
        fs::OpenOptions::new()
            .append(true)
            .open(m.path("etc/conf"))?
            .write_all(b"more\n")
    };
    t.push(format!("append {}", outcome(append())));
    let mode = fs::Permissions::from_mode(0o700);
    t.push(format!(
        "chmod {}",
        outcome(fs::set_permissions(m.path("app/main"), mode))
    ));
    t.push(format!(
        "rm {}",
        outcome(fs::remove_file(m.path("etc/gone")))
    ));
    t.push(format!(
        "rm -rf {}",
        outcome(fs::remove_dir_all(m.path("data")))
    ));
    t.push(format!("mkdir {}", outcome(fs::create_dir(m.path("data")))));
    t.push(format!(
        "new {}",
        outcome(fs::write(m.path("data/new"), "new\n"))
    ));
    let moved = fs::rename(m.path("app/lib/libx"), m.path("app/libx.moved"));
    t.push(format!("mv file {}", outcome(moved)));
    t.push(format!(
        "mv dir {}",
        outcome(fs::rename(m.path("app/lib"), m.path("lib2")))
    ));
    let linked = fs::hard_link(m.path("etc/conf"), m.path("etc/conf.link"));
    t.push(format!("ln {}", outcome(linked)));
    let sym = std::os::unix::fs::symlink("conf", m.path("etc/sym"));
    t.push(format!("ln -s {}", outcome(sym)));
    t
}

/// Step 1: an overlay whose lower dir is a mount (an admin's throw-away
/// writable view of a guest). Reads pass, writes copy up into the overlay's
/// upper dir, and neither the guest's backing tree, nor the other guest,
/// nor the store change: `store verify` finds nothing.
#[test]
fn s39_overlay_over_a_mount_changes_no_guest_nor_the_store() {
    if !has_overlayfs("s39_overlay_over_a_mount_changes_no_guest_nor_the_store") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, a, b) = unified_pair(dir.path());
    let before: Vec<_> = [&a, &b].iter().map(|g| walk(g)).collect();
    let mp = dir.path().join("m");
    fs::create_dir(&mp).unwrap();
    let mount = Mount::start(&store, &a, &mp, &[]);
    let ov = Overlay::mount(&dir.path().join("ov"), &mp.join("srv/layer"), "").unwrap();
    let transcript = exercise(&ov);
    assert!(
        transcript
            .iter()
            .all(|l| !l.contains("errno") || l == "mv dir errno 18"),
        "{transcript:#?}"
    );
    assert_eq!(
        fs::read_to_string(ov.path("etc/conf")).unwrap(),
        "conf\nmore\n"
    );
    let upper = dir.path().join("ov/upper");
    assert_eq!(
        fs::read_to_string(upper.join("etc/conf")).unwrap(),
        "conf\nmore\n"
    );
    drop(ov);
    assert_eq!(
        fs::read_to_string(mount.path("srv/layer/etc/conf")).unwrap(),
        "conf\n"
    );
    drop(mount);
    let after: Vec<_> = [&a, &b].iter().map(|g| walk(g)).collect();
    assert_eq!(before, after, "the guests' trees changed");
    let verified = unifs(&store, &["store", "verify"]);
    assert!(verified.contains(" 0 problems"), "{verified}");
}

/// An overlay with `index=on` over a mount keeps each file its own across a
/// remount of the mount: before 2026-12-05 every node's FUSE generation was
/// 0, and a shared path's node number is handed out in lookup order, so
/// the file handle overlayfs kept as a copy's origin named another file
/// after the remount: `one` then read `tool`'s copied-up content.
#[test]
fn s39_an_index_overlay_over_a_remounted_mount_keeps_files_apart() {
    let test = "s39_an_index_overlay_over_a_remounted_mount_keeps_files_apart";
    if !has_overlayfs(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, a, _b) = unified_pair(dir.path());
    let mp = dir.path().join("m");
    fs::create_dir(&mp).unwrap();
    let ovdir = dir.path().join("ov");
    let mut mount = Mount::start(&store, &a, &mp, &[]);
    let ov = match Overlay::mount(&ovdir, &mp, "index=on") {
        Ok(ov) => ov,
        Err(e) => {
            return skip(
                test,
                &format!("this kernel's overlayfs refuses index=on: {e}"),
            )
        }
    };
    // tool's node is the mount's first shared number.
    fs::write(ov.path("usr/bin/tool"), "tool, changed\n").unwrap();
    drop(ov);
    drop(mount);
    mount = Mount::start(&store, &a, &mp, &[]);
    // Now `one` is looked up first and gets that number.
    assert_eq!(
        fs::read_to_string(mount.path("usr/share/doc/one")).unwrap(),
        "one\n"
    );
    let ov = Overlay::mount(&ovdir, &mp, "index=on").unwrap();
    let tool = ov.path("usr/bin/tool");
    let one = ov.path("usr/share/doc/one");
    assert_eq!(fs::read_to_string(&tool).unwrap(), "tool, changed\n");
    assert_eq!(
        fs::read_to_string(&one).unwrap(),
        "one\n",
        "one shows tool's copy"
    );
    let (t, o) = (fs::metadata(&tool).unwrap(), fs::metadata(&one).unwrap());
    assert_ne!(
        (t.dev(), t.ino()),
        (o.dev(), o.ino()),
        "two files, one identity"
    );
    assert_eq!(
        fs::read_to_string(ov.path("usr/share/doc/two")).unwrap(),
        "two\n"
    );
    drop(ov);
    drop(mount);
}

/// Step 2: an overlay with its upper and work dirs on a mount, its lower a
/// layer of shared files in the same guest (Docker's overlay2 with
/// /var/lib/docker inside a guest's root). The kernel takes it (xattrs,
/// RENAME_WHITEOUT and d_type of the upper; no O_TMPFILE, which overlayfs
/// does without), and each step, and the tree after the overlay and the
/// mount are mounted again, come out as with the same layers on ext4; with
/// the overlay's default options and with redirect_dir, index and metacopy.
#[test]
fn s39_an_overlay_with_its_upper_on_a_mount_behaves_as_on_ext4() {
    if !has_overlayfs("s39_an_overlay_with_its_upper_on_a_mount_behaves_as_on_ext4") {
        return;
    }
    let ext4 = Ext4::new(&[], &[]);
    let (store, a, b) = unified_pair(&ext4.dir("guests"));
    let b_before = walk(&b);
    let plain = ext4.dir("plain");
    populate(&plain);
    let mp = ext4.dir("m");
    let start = || Mount::start(&store, &a, &mp, &[]);
    let mut mount = Some(start());
    for (i, opts) in ["", "redirect_dir=on", "index=on", "metacopy=on"]
        .iter()
        .enumerate()
    {
        let steps = |ovdir: &Path, lower: &Path, remount: &mut dyn FnMut()| {
            let ov = Overlay::mount(ovdir, lower, opts).unwrap();
            let t = exercise(&ov);
            let seen = walk(&ov.merged);
            drop(ov);
            remount();
            let ov = Overlay::mount(ovdir, lower, opts).unwrap();
            let again = walk(&ov.merged);
            (t, seen, again)
        };
        let want = steps(
            &plain.join(format!("ov{i}")),
            &plain.join("srv/layer"),
            &mut || {},
        );
        let got = steps(
            &mp.join(format!("srv/ov{i}")),
            &mp.join("srv/layer"),
            &mut || {
                mount.take();
                mount = Some(start());
            },
        );
        assert_eq!(got.0, want.0, "-o {opts}: the steps");
        assert_eq!(got.1, want.1, "-o {opts}: the merged tree");
        assert_eq!(got.2, want.2, "-o {opts}: the merged tree after a remount");
    }
    drop(mount);
    assert_eq!(walk(&b), b_before, "the other guest changed");
    let layer = a.join("srv/layer");
    assert_eq!(
        fs::read_to_string(layer.join("etc/conf")).unwrap(),
        "conf\n"
    );
    let verified = unifs(&store, &["store", "verify"]);
    assert!(verified.contains(" 0 problems"), "{verified}");
}

/// Step 3: a guest mounts overlays of its own. By default it cannot (it
/// keeps no CAP_SYS_ADMIN, and the syscall filter refuses user
/// namespaces); with `--syscall-filter allow-userns` it can in a user
/// namespace of its own (`unshare -Urm`; overlayfs's `userxattr` keeps its
/// marks as user.overlay.* xattrs), as rootless podman does; with
/// `--cap-add sys_admin` directly, with trusted.overlay.* xattrs, as
/// Docker's overlay2 does. Upper and lower are on the guest's root, a mount.
#[test]
fn s39_a_guest_mounts_overlays_in_a_user_namespace_or_with_sys_admin() {
    let test = "s39_a_guest_mounts_overlays_in_a_user_namespace_or_with_sys_admin";
    if !can_run(test) || !has_overlayfs(test) {
        return;
    }
    let setup = "mkdir -p /o/l/d /o/u /o/w /o/m && echo lo > /o/l/f && echo g > /o/l/d/g";
    let steps = "cat /o/m/f && echo up >> /o/m/f && rm /o/m/d/g && rm -r /o/m/d \
                 && mkdir /o/m/d && ls -A /o/m/d && ls /o/m && umount /o/m && echo done";
    let mount = |opts: &str| {
        format!("mount -t overlay overlay -o {opts}lowerdir=/o/l,upperdir=/o/u,workdir=/o/w /o/m")
    };

    let g = TestRoot::new();
    let o = g.sh(
        &[],
        &format!(
            "{setup}; unshare -Urm true; echo userns=$?; {}; echo mount=$?",
            mount("")
        ),
    );
    let out = stdout(&o);
    assert!(
        !out.contains("userns=0") && !out.contains("mount=0"),
        "{out}{}",
        stderr(&o)
    );

    // What the guest's mount of its own did, seen in its backing tree:
    // copy-up and the opaque dir's mark (xattr namespace `ns`).
    let check = |opts: &[&str], script: &str, ns: &str| {
        let g = TestRoot::new();
        assert_eq!(ok(&g.sh(opts, script)), "lo\nd\nf\ndone\n");
        let upper = g.root().join("o/u");
        assert_eq!(fs::read_to_string(upper.join("f")).unwrap(), "lo\nup\n");
        let opaque = (format!("{ns}.overlay.opaque").into(), b"y".to_vec());
        assert!(crate::fs::harness::xattrs(&upper.join("d")).contains(&opaque));
    };
    let userns = format!(
        "{setup} && unshare -Urm sh -c '{} && {steps}'",
        mount("userxattr,")
    );
    check(&["--syscall-filter", "allow-userns"], &userns, "user");
    let direct = format!("{setup} && {} && {steps}", mount(""));
    check(&["--cap-add", "sys_admin"], &direct, "trusted");
}

/// Step 4: guests and store on overlayfs (a host whose /var/lib is an
/// overlay: a live system, a container). Unify links in the overlay's
/// upper layer, a mount serves a guest from it, a write breaks its link
/// there, and the lower layer is never written. With a lower layer that
/// was unified already, overlayfs (without `index=on`) copies a store
/// object up when unify links it again, away from the lower guests that
/// link it: they keep their copy and its marker, so a write through their
/// mount still breaks it first, and the object stays as it was.
#[test]
fn s39_guests_and_store_on_overlayfs_unify_and_mount() {
    if !has_overlayfs("s39_guests_and_store_on_overlayfs_unify_and_mount") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().join("lower");
    populate(&lower.join("a"));
    populate(&lower.join("b"));
    let lower_before = walk(&lower);
    let ov = Overlay::mount(&dir.path().join("ov"), &lower, "").unwrap();
    let (store, a, b) = (ov.path("store"), ov.path("a"), ov.path("b"));
    unifs(&store, &["store", "init"]);
    unifs(&store, &["unify", "--no-progress", path(&a), path(&b)]);
    assert_eq!(fs::metadata(a.join("usr/bin/tool")).unwrap().nlink(), 3);
    let mp = dir.path().join("m");
    fs::create_dir(&mp).unwrap();
    let mount = Mount::start(&store, &a, &mp, &[]);
    fs::write(mount.path("usr/bin/tool"), "mine\n").unwrap();
    assert_eq!(
        fs::read_to_string(b.join("usr/bin/tool")).unwrap(),
        "tool\n"
    );
    assert_eq!(fs::metadata(b.join("usr/bin/tool")).unwrap().nlink(), 2);
    drop(mount);
    let verified = unifs(&store, &["store", "verify"]);
    assert!(verified.contains(" 0 problems"), "{verified}");
    // The unified tree (store, a, b), hardlinks and xattrs kept, as the
    // lower layer of a new overlay.
    let unified = dir.path().join("unified");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&ov.merged)
        .arg(&unified)
        .status();
    assert!(copied.unwrap().success());
    drop(ov);
    assert_eq!(walk(&lower), lower_before, "the lower layer changed");

    let ov2 = Overlay::mount(&dir.path().join("ov2"), &unified, "").unwrap();
    let (store, b) = (ov2.path("store"), ov2.path("b"));
    let c = ov2.path("c");
    populate(&c);
    unifs(&store, &["unify", "--no-progress", path(&c)]);
    let mp = dir.path().join("m2");
    fs::create_dir(&mp).unwrap();
    let mount = Mount::start(&store, &b, &mp, &[]);
    fs::write(mount.path("usr/share/doc/one"), "b's\n").unwrap();
    drop(mount);
    assert_eq!(
        fs::read_to_string(c.join("usr/share/doc/one")).unwrap(),
        "one\n"
    );
    let verified = unifs(&store, &["store", "verify"]);
    assert!(verified.contains(" 0 problems"), "{verified}");
}
