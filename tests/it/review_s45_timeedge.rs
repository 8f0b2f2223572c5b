//! Review (session 45) of "timeedge": extreme times, from a guest's
//! utimensat to the backup.
//!
//! Through a mount, a time set or read is the backing filesystem's own, to
//! the ends of i64 seconds (fuser 0.18's conversion of a SETATTR's time is
//! patched: vendor/fuser/UNIFS-PATCH.md). A stat's nanoseconds can pass a
//! second (ext4 decodes 30 bits of them from the inode): copying such a time
//! broke a shared file's link with EINVAL, or with UTIME_NOW/UTIME_OMIT's
//! values set the copy's time to now or left it; a manifest wrote it as
//! "S.1000000000", which restore refused as damaged.

use crate::common::require_root;
use crate::fs::harness::{unmount_lazy, Mount};
use crate::fs::review_s18_fuse::{times_of, utimens};
use crate::tree::{init_store, stderr, unifs, unify_json};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A filesystem mounted at a temp dir's `fs`, unmounted when dropped.
pub(crate) struct Mounted(pub(crate) tempfile::TempDir);

impl Mounted {
    fn tmpfs() -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("fs")).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(dir.path().join("fs"))
            .status()
            .unwrap();
        assert!(ok.success(), "mount tmpfs");
        Mounted(dir)
    }

    fn ext4() -> Mounted {
        Mounted(crate::common::mounted_image(
            "ext4",
            64 << 20,
            &["-q", "-I", "256"],
        ))
    }

    /// An ext4 (256-byte inodes) whose files `(path, content, raw
    /// mtime_extra)` debugfs wrote before it was mounted: mtime 0x6000000
    /// (1973-03-11) and the inode's raw extra word, whose bits 2..32 are
    /// the nanoseconds stat gives (up to 2^30 - 1).
    ///
    /// `dirs` `(path, raw mtime_extra)`: directories made first, their times
    /// set last.
    pub(crate) fn ext4_crafted(dirs: &[(&str, u32)], files: &[(String, Vec<u8>, u32)]) -> Mounted {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let img = dir.path().join("img");
        fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
        let run = |cmd: &mut Command| {
            let o = cmd.output().unwrap();
            assert!(o.status.success(), "{cmd:?}: {}", stderr(&o));
            o
        };
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-I", "256"])
            .arg(&img));
        let mut script = String::from("mkdir g1\nmkdir g2\n");
        for (path, _) in dirs {
            script += &format!("mkdir {path}\n");
        }
        for (i, (path, content, extra)) in files.iter().enumerate() {
            let src = dir.path().join(format!("content{i}"));
            fs::write(&src, content).unwrap();
            script += &format!(
                "write {} {path}\nsif {path} mtime 0x6000000\nsif {path} mtime_extra {extra:#x}\n",
                src.display()
            );
        }
        for (path, extra) in dirs {
            script += &format!("sif {path} mtime 0x6000000\nsif {path} mtime_extra {extra:#x}\n");
        }
        let cmds = dir.path().join("debugfs.cmds");
        fs::write(&cmds, script).unwrap();
        run(Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&cmds)
            .arg(&img));
        fs::create_dir(dir.path().join("fs")).unwrap();
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(dir.path().join("fs")));
        let m = Mounted(dir);
        let made = files.iter().map(|(p, _, e)| (p.as_str(), *e));
        for (path, extra) in made.chain(dirs.iter().copied()) {
            let want = i64::from(extra >> 2);
            let got = times_of(&m.root().join(path))[1];
            assert_eq!(got, (0x600_0000, want), "debugfs's {path}");
        }
        m
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.0.path().join("fs")
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        unmount_lazy(&self.root());
    }
}

/// A new directory `name` in `root`, open to every user.
fn dir(root: &Path, name: &str) -> PathBuf {
    let p = root.join(name);
    fs::create_dir_all(&p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Times at the edges: both ends of i64 seconds (at i64::MIN the kernel
/// drops the nanoseconds), a nanosecond either side of 1970, 1.5 s before
/// it, ext4's last second and the one after it.
const EDGES: [(i64, i64); 12] = [
    (i64::MIN, 0),
    (i64::MIN, 1),
    (i64::MIN + 1, 999_999_999),
    (-1_000_000_000_000, 7),
    (-2, 500_000_000),
    (-1, 999_999_999),
    (0, 0),
    (0, 1),
    (15_032_385_535, 999_999_999),
    (15_032_385_536, 1),
    (i64::MAX - 1, 999_999_999),
    (i64::MAX, 999_999_999),
];

/// Guard (a fuser patched and unifs's conversions made overflow-free):
/// through a mount on tmpfs (any i64 time) and on ext4 (1901 to 2446,
/// where the filesystem stores the nearest time it holds, no error), a
/// time set is stored and shown exactly as the same utimensat on a plain
/// directory of that filesystem stores it, and a backing file's time is
/// shown as it is. Before, a build with overflow checks (`cargo build`)
/// ended the mount daemon on `i64::MIN` (fuser's `-secs`, or unifs's own
/// getattr conversion): "attempt to negate with overflow", the mount gone.
/// Run it with `cargo test` (debug) to see that; a release build wrapped
/// to the right time.
#[test]
fn s45_extreme_times_through_a_mount_are_the_backing_filesystems_own() {
    if !require_root("s45_extreme_times_through_a_mount_are_the_backing_filesystems_own") {
        return;
    }
    for fsys in [Mounted::tmpfs(), Mounted::ext4()] {
        let root = fsys.root();
        let (store, plain, g) = (dir(&root, "store"), dir(&root, "plain"), dir(&root, "g"));
        dir(&store, "objects");
        dir(&store, "tmp");
        for (i, t) in EDGES.iter().enumerate() {
            fs::write(plain.join(format!("f{i}")), b"x").unwrap();
            fs::write(g.join(format!("f{i}")), b"x").unwrap();
            // Set on the backing file before the mount first looks it up.
            fs::write(g.join(format!("before{i}")), b"x").unwrap();
            utimens(&g.join(format!("before{i}")), t.0, t.1);
        }
        let mp = dir(fsys.0.path(), "mp");
        let mut m = Mount::start(&store, &g, &mp, &[]);
        for (i, &t) in EDGES.iter().enumerate() {
            let f = format!("f{i}");
            utimens(&plain.join(&f), t.0, t.1);
            let want = times_of(&plain.join(&f));
            utimens(&m.path(&f), t.0, t.1);
            let at = format!("{} set to {t:?}", root.display());
            assert_eq!(times_of(&m.path(&f)), want, "through the mount, {at}");
            assert_eq!(times_of(&g.join(&f)), want, "the backing file, {at}");
            let before = format!("before{i}");
            let shown = times_of(&m.path(&before));
            assert_eq!(shown, times_of(&g.join(&before)), "shown, {at}");
        }
        let child = m.child.as_mut().unwrap();
        assert!(child.try_wait().unwrap().is_none(), "the daemon ended");
    }
}

/// Raw mtime_extra words: nanoseconds 1e9 (EINVAL to utimensat), 2^30 - 1
/// (UTIME_NOW's value) and 2^30 - 2 (UTIME_OMIT's).
pub(crate) const PAST_A_SECOND: [(&str, u32); 3] = [
    ("a", 1_000_000_000 << 2),
    ("b", 0x3fff_ffff << 2),
    ("c", 0x3fff_fffe << 2),
];

/// Each `PAST_A_SECOND` file in g1 and g2 (same content: one object), and
/// g1/p, private, with the first's time.
fn crafted() -> Mounted {
    let mut files = Vec::new();
    for (name, extra) in PAST_A_SECOND {
        let content = format!("content of {name}\n").into_bytes();
        files.push((format!("g1/{name}"), content.clone(), extra));
        files.push((format!("g2/{name}"), content, extra));
    }
    files.push(("g1/p".into(), b"private\n".to_vec(), PAST_A_SECOND[0].1));
    Mounted::ext4_crafted(&[], &files)
}

/// (sec, nsec) of the instant `raw_nsec` past 0x6000000 s stands for.
pub(crate) fn instant(raw_nsec: u32) -> (i64, i64) {
    let ns = i64::from(raw_nsec >> 2);
    (0x600_0000 + ns / 1_000_000_000, ns % 1_000_000_000)
}

/// A shared file whose backing mtime has nanoseconds past a second (a
/// damaged ext4 inode; `cp -a` fails on it too) is a guest's to change: a
/// chmod through the mount breaks its link, and the private copy has the
/// time the guest saw. Before, the break copied the raw nanoseconds to
/// futimens: the chmod failed with EINVAL ("could not give the guest a
/// private copy"), and with UTIME_NOW's or UTIME_OMIT's value the copy got
/// the time of the break instead.
#[test]
fn s45_a_shared_file_whose_mtime_nanoseconds_pass_a_second_breaks_with_its_time() {
    if !require_root("s45_a_shared_file_whose_mtime_nanoseconds_pass_a_second_breaks_with_its_time")
    {
        return;
    }
    let img = crafted();
    let root = img.root();
    let store = root.join("store");
    init_store(&store);
    let s = unify_json(&store, &[&root.join("g1"), &root.join("g2")]);
    assert_eq!(s["objects_added"], 3, "{s}");
    let mp = dir(img.0.path(), "mp");
    let m = Mount::start(&store, &root.join("g1"), &mp, &[]);
    for (name, extra) in PAST_A_SECOND {
        let path = m.path(name);
        assert_eq!(times_of(&path)[1], instant(extra), "{name} shown");
        let chmod = fs::set_permissions(&path, fs::Permissions::from_mode(0o600));
        assert!(chmod.is_ok(), "chmod {name} through the mount: {chmod:?}");
        assert_eq!(times_of(&path)[1], instant(extra), "{name}'s private copy");
        let backing = root.join("g1").join(name);
        assert_eq!(times_of(&backing)[1], instant(extra), "backing {name}");
        // The other guest's file is still the object, as it was.
        let other = root.join("g2").join(name);
        assert_eq!(times_of(&other)[1], (0x600_0000, i64::from(extra >> 2)));
        assert_eq!(
            fs::metadata(&other).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }
}

/// A manifest gives such a time as the instant it stands for, and a
/// restore (copying from the store and from the private files) puts it
/// back. Before, the manifest said "100663296.1000000000", and restore
/// refused it: "the manifest is damaged … bad mtime", nothing restored.
#[test]
fn s45_a_manifest_gives_mtime_nanoseconds_past_a_second_as_the_instant() {
    if !require_root("s45_a_manifest_gives_mtime_nanoseconds_past_a_second_as_the_instant") {
        return;
    }
    let img = crafted();
    let root = img.root();
    let store = root.join("store");
    init_store(&store);
    let g1 = root.join("g1");
    let s = unify_json(&store, &[&g1, &root.join("g2")]);
    assert_eq!(s["objects_added"], 3, "{s}");
    let lab = tempfile::tempdir_in("/var/tmp").unwrap();
    let manifest = lab.path().join("g1.jsonl");
    let o = unifs(&store, &[&"manifest", &g1, &"-o", &manifest]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = fs::read_to_string(&manifest).unwrap();
    let o = unifs(&store, &[&"manifest", &"--format", &"mtree", &g1]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mtree = String::from_utf8(o.stdout).unwrap();
    let mut files = PAST_A_SECOND.to_vec();
    files.push(("p", PAST_A_SECOND[0].1));
    for &(name, extra) in &files {
        let (sec, nsec) = instant(extra);
        let time = format!("{sec}.{nsec:09}");
        let entry = text
            .lines()
            .find(|l| l.contains(&format!("\"path\":\"{name}\"")))
            .unwrap();
        assert!(entry.contains(&format!("\"mtime\":\"{time}\"")), "{entry}");
        let line = mtree
            .lines()
            .find(|l| l.starts_with(&format!("./{name} ")))
            .unwrap();
        assert!(line.contains(&format!(" time={time} ")), "{line}");
    }
    // Onto another filesystem: every file copied, its time set.
    let target = lab.path().join("r");
    let o = unifs(
        &store,
        &[
            &"restore",
            &"--manifest",
            &manifest,
            &"--from",
            &g1,
            &target,
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for &(name, extra) in &files {
        assert_eq!(times_of(&target.join(name))[1], instant(extra), "{name}");
        let content = fs::read(target.join(name)).unwrap();
        assert_eq!(content, fs::read(g1.join(name)).unwrap(), "{name}");
    }
    // Beside the store: the objects linked, checked against the manifest
    // as the instant their raw time stands for.
    let linked = root.join("r");
    let o = unifs(
        &store,
        &[
            &"restore",
            &"--json",
            &"--manifest",
            &manifest,
            &"--from",
            &g1,
            &linked,
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["objects_linked"], 3, "{report}");
    assert_eq!(times_of(&linked.join("p"))[1], instant(PAST_A_SECOND[0].1));
}

/// Unify puts back the mtime of a directory it linked a file in: one whose
/// nanoseconds pass a second (a damaged ext4 inode) as the instant it
/// stands for. Before, it passed the raw nanoseconds to utimensat: with
/// 1e9 that failed (EINVAL, "cannot put the directory's mtime back"), with
/// UTIME_OMIT's value it did nothing, and the directory kept the time of
/// the link.
#[test]
fn s45_unify_puts_back_a_directory_mtime_whose_nanoseconds_pass_a_second() {
    if !require_root("s45_unify_puts_back_a_directory_mtime_whose_nanoseconds_pass_a_second") {
        return;
    }
    // In both guests: whichever file becomes the object, the other's
    // directory is changed by its link.
    let dirs = [
        ("g1/d", PAST_A_SECOND[0].1),
        ("g2/d", PAST_A_SECOND[0].1),
        ("g1/e", PAST_A_SECOND[2].1),
        ("g2/e", PAST_A_SECOND[2].1),
    ];
    let mut files = Vec::new();
    for d in ["d", "e"] {
        let content = format!("content in {d}\n").into_bytes();
        files.push((format!("g1/{d}/x"), content.clone(), 0));
        files.push((format!("g2/{d}/x"), content, 0));
    }
    let img = Mounted::ext4_crafted(&dirs, &files);
    let root = img.root();
    let store = root.join("store");
    init_store(&store);
    let s = unify_json(&store, &[&root.join("g1"), &root.join("g2")]);
    assert_eq!(s["objects_added"], 2, "{s}");
    assert_eq!(s["files_linked"], 2, "{s}");
    assert_eq!(s["problems"], serde_json::json!([]), "{s}");
    // The one the link changed has the instant; the other is as it was.
    for (path, extra) in dirs {
        let (sec, nsec) = times_of(&root.join(path))[1];
        let shown = (sec + nsec / 1_000_000_000, nsec % 1_000_000_000);
        assert_eq!(shown, instant(extra), "{path}: {s}");
    }
}

/// Guard: bsdtar (libarchive) reads a manifest's mtree `time=` before 1970
/// and past 2262 as the time it is (nanoseconds added to the rounded-down
/// seconds, as the kernel and BSD mtree count them): a tar it makes from
/// the mtree extracts each file with its own mtime. A "-1.500000000" meant
/// as minus 1.5 s would come back as -0.5 s.
#[test]
fn s45_bsdtar_reads_a_manifests_mtree_times_as_they_are() {
    let test = "s45_bsdtar_reads_a_manifests_mtree_times_as_they_are";
    if !require_root(test) || !crate::backup::have("bsdtar", test) {
        return;
    }
    let fsys = Mounted::tmpfs();
    let root = fsys.root();
    let (store, g, out) = (root.join("store"), dir(&root, "g"), dir(&root, "out"));
    init_store(&store);
    let times = [
        (-2, 500_000_000),
        (-1, 999_999_999),
        (-1_000_000_000_000, 7),
        (100_000_000_000, 123),
    ];
    for (i, t) in times.iter().enumerate() {
        let f = g.join(format!("f{i}"));
        fs::write(&f, format!("{i}\n")).unwrap();
        utimens(&f, t.0, t.1);
    }
    let o = unifs(&store, &[&"manifest", &"--format", &"mtree", &g]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mtree = root.join("g.mtree");
    fs::write(&mtree, &o.stdout).unwrap();
    let tar = root.join("g.tar");
    let run = |cmd: &mut Command| {
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{cmd:?}: {}", stderr(&o));
    };
    run(Command::new("bsdtar")
        .current_dir(&g)
        .args(["--format", "pax", "-cf"])
        .arg(&tar)
        .arg(format!("@{}", mtree.display())));
    run(Command::new("bsdtar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&out));
    for (i, t) in times.iter().enumerate() {
        let f = format!("f{i}");
        assert_eq!(
            times_of(&out.join(&f))[1],
            *t,
            "{f}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}
