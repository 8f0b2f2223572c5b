//! Review s38-quota: disk limits of guests (util-vserver's `dlimits`;
//! today quotas). This kernel has no ext4 or xfs quota (no CONFIG_QFMT_V2,
//! no CONFIG_XFS_QUOTA), so the limit here is a btrfs qgroup (enforced for
//! root too), the break's EDQUOT is injected (strace), and project IDs are
//! checked on xfs, which keeps them without quotas.

use crate::common::{require_root, require_strace};
use crate::fs::harness::{errno, mount_under_strace, names, Mount, World};
use crate::review_s18_fs::{run, Loopfs};
use crate::review_s39_fsidrev::sh_as;
use crate::review_s39_fsuid::{user_dir, USER};
use crate::tree::{file, stderr, unifs, unify_json};
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A world whose store and guests are in `dir` (on a test's filesystem).
fn world_in(dir: &Path) -> World {
    World::new_in(dir)
}

/// Appends `data` through the mount: the first change of a shared file.
fn append(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// A link break that fails with EDQUOT (the copy's data over the guest's
/// quota; injected into its copy_file_range) must fail cleanly: the guest
/// gets EDQUOT, not EIO; its path still names the shared file, complete;
/// no temp file is left; the other guest and the store are untouched; and
/// the next write, with room again, breaks the link.
#[test]
fn s38_a_break_over_quota_fails_with_edquot_and_leaves_all_as_it_was() {
    if !require_strace("s38_a_break_over_quota_fails_with_edquot") {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    fs::create_dir(g.join("lib")).unwrap();
    let content = vec![7u8; 300_000];
    file(&g, "lib/data", &content, 0o644);
    file(&other, "data", &content, 0o644);
    let store = w.store.clone();
    let s = unify_json(&store, &[&g, &other]);
    assert_eq!(s["files_linked"], 1, "{s}");
    let obj_ino = fs::metadata(g.join("lib/data")).unwrap().ino();
    assert_eq!(fs::metadata(other.join("data")).unwrap().ino(), obj_ino);
    let m: Mount = mount_under_strace(
        &w,
        &g,
        &["--inject=copy_file_range:error=EDQUOT:when=1"],
        &["threads=1"],
    );
    let got = append(&m.path("lib/data"), b"mine\n");
    assert_eq!(errno(got), libc::EDQUOT, "the guest's error");
    assert_eq!(fs::read(m.path("lib/data")).unwrap(), content);
    assert_eq!(fs::metadata(g.join("lib/data")).unwrap().ino(), obj_ino);
    assert_eq!(names(&g.join("lib")), ["data"], "a temp file left");
    assert_eq!(fs::read(other.join("data")).unwrap(), content);
    let verify = unifs(&store, &[&"store", &"verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    // Room again (the injection was for the first call only).
    append(&m.path("lib/data"), b"mine\n").unwrap();
    drop(m);
    assert_ne!(fs::metadata(g.join("lib/data")).unwrap().ino(), obj_ino);
    assert!(fs::read(g.join("lib/data"))
        .unwrap()
        .ends_with(b"\x07mine\n"));
    assert_eq!(names(&g.join("lib")), ["data"]);
    assert_eq!(fs::read(other.join("data")).unwrap(), content);
    assert_eq!(fs::metadata(other.join("data")).unwrap().ino(), obj_ino);
}

/// `btrfs qgroup show` of the subvolume at `sv`: its referenced and
/// exclusive bytes.
fn qgroup_usage(sv: &Path) -> (u64, u64) {
    run("sync", &[]);
    let out = run("btrfs", &[&"qgroup", &"show", &"--raw", &"-f", &sv]);
    let line = out.lines().last().unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[1].parse().unwrap(), f[2].parse().unwrap())
}

/// Writes 1 MiB blocks to `path` until a write fails: the bytes written
/// and the failure.
fn fill(path: &Path, limit: u64) -> (u64, std::io::Error) {
    let mut f = fs::File::create(path).unwrap();
    let block = vec![0x5au8; 1 << 20];
    let mut written = 0;
    while written < limit {
        match f.write(&block).and_then(|n| f.sync_data().map(|()| n)) {
            Ok(n) => written += n as u64,
            Err(e) => return (written, e),
        }
    }
    panic!("{} took {written} bytes past its limit", path.display());
}

/// A guest under a disk limit (a btrfs qgroup on the subvolume that holds
/// it and the store: hardlinks do not cross subvolumes) writes through its
/// mount up to the limit and gets EDQUOT, as on the plain directory; after
/// it frees space, it writes again. A break of a shared file costs it
/// nothing there (a reflink), nor does it change the other guest's file.
#[test]
fn s38_a_guest_over_a_btrfs_qgroup_limit_gets_edquot_through_its_mount() {
    if !require_root("s38_a_guest_over_a_btrfs_qgroup_limit_gets_edquot") {
        return;
    }
    let btrfs = Loopfs::new("btrfs", 320 << 20, &["-q"]);
    let sv = btrfs.path("sv");
    run("btrfs", &[&"quota", &"enable", &btrfs.path("")]);
    run("btrfs", &[&"subvolume", &"create", &sv]);
    run("btrfs", &[&"qgroup", &"limit", &"40M", &sv]);
    let w = world_in(&sv);
    let (g, other) = (w.dir("g"), w.dir("other"));
    let content = vec![3u8; 8 << 20];
    let obj = w.shared(&content, &[g.join("shared"), other.join("shared")]);
    // The same, on the plain directory: the limit holds for root too.
    let (local, e) = fill(&sv.join("local"), 64 << 20);
    assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "{e}");
    fs::remove_file(sv.join("local")).unwrap();
    let m = w.mount(&g, "m", &[]);
    let (through, e) = fill(&m.path("big"), 64 << 20);
    assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "{e}");
    eprintln!("bytes written before EDQUOT: {local} on the directory, {through} through the mount");
    assert!(through <= 40 << 20, "{through}");
    fs::remove_file(m.path("big")).unwrap();
    let before = qgroup_usage(&sv);
    append(&m.path("shared"), b"mine\n").unwrap();
    let after = qgroup_usage(&sv);
    eprintln!("qgroup (referenced, exclusive) before the break {before:?}, after {after:?}");
    assert!(
        after.0 < before.0 + (1 << 20),
        "a break cost {before:?} → {after:?}"
    );
    fs::write(m.path("again"), vec![1u8; 4 << 20]).unwrap();
    drop(m);
    assert_eq!(fs::read(other.join("shared")).unwrap(), content);
    assert_eq!(fs::read(&obj).unwrap(), content);
    assert_eq!(fs::metadata(g.join("again")).unwrap().len(), 4 << 20);
}

/// `lsattr -p -d`: the project ID and whether `P` (new entries take it) is set.
fn project(path: &Path) -> (u32, bool) {
    let out = run("lsattr", &[&"-p", &"-d", &path]);
    let mut f = out.split_whitespace();
    let id = f.next().unwrap().parse().unwrap();
    (id, f.next().unwrap().contains('P'))
}

/// Project IDs, the directory-quota layout (`chattr -p N +P` on a guest's
/// directory, as `xfs_quota project -s` sets it up): files, directories
/// a guest makes through its mount get the project and `P`
/// a local process gets, and a rename or link into a directory of another
/// project fails with EXDEV as it does locally (`mv` then copies, which
/// charges the new project).
#[test]
fn s38_entries_made_through_the_mount_get_the_project_a_local_one_gets() {
    if !require_root("s38_entries_made_through_the_mount_get_the_project") {
        return;
    }
    let xfs = Loopfs::new("xfs", 320 << 20, &["-q"]);
    let w = world_in(&xfs.path(""));
    let g = w.dir("g");
    let local = w.dir("local");
    for root in [&g, &local] {
        for (dir, id) in [("srv", "77"), ("other", "88")] {
            fs::create_dir(root.join(dir)).unwrap();
            run("chattr", &[&"-p", &id, &"+P", &root.join(dir)]);
        }
        fs::create_dir(root.join("plain")).unwrap();
    }
    let m = w.mount(&g, "m", &[]);
    for root in [local.clone(), m.path("")] {
        fs::write(root.join("srv/file"), b"x").unwrap();
        fs::create_dir(root.join("srv/dir")).unwrap();
        fs::write(root.join("srv/dir/deeper"), b"y").unwrap();
        fs::write(root.join("plain/file"), b"z").unwrap();
    }
    for rel in ["srv/file", "srv/dir", "srv/dir/deeper", "plain/file"] {
        assert_eq!(project(&g.join(rel)), project(&local.join(rel)), "{rel}");
    }
    assert_eq!(project(&g.join("srv/dir")), (77, true));
    for root in [local.clone(), m.path("")] {
        let moved = fs::rename(root.join("srv/file"), root.join("other/file"));
        assert_eq!(errno(moved), libc::EXDEV, "{}", root.display());
        let linked = fs::hard_link(root.join("srv/dir/deeper"), root.join("other/deeper"));
        assert_eq!(errno(linked), libc::EXDEV, "{}", root.display());
        // Within one project, as locally.
        fs::rename(root.join("srv/file"), root.join("srv/dir/file")).unwrap();
    }
    drop(m);
    assert_eq!(project(&g.join("srv/dir/file")), (77, false));
}

/// A file or directory a guest user makes through the mount was made by the
/// daemon (root) and then given to the user: a chown that the user's quota
/// refuses (EDQUOT: its inode limit; injected here into fchownat) failed
/// the create and left the new entry behind, root's, in the guest's tree.
/// It is removed now: the guest sees no entry, as it was told. (Since
/// 2026-12-05 the daemon makes entries as the caller, so that the quota
/// refuses the create itself; it still makes them as itself and gives them
/// away where it cannot switch its ids, as here, where strace makes
/// setfsuid and setfsgid do nothing.)
#[test]
fn s38_a_create_refused_by_the_users_quota_leaves_no_entry() {
    if !require_strace("s38_a_create_refused_by_the_users_quota_leaves_no_entry") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    user_dir(&g.join("www"));
    let injects = [
        "--inject=setfsuid:retval=0",
        "--inject=setfsgid:retval=0",
        "--inject=fchownat:error=EDQUOT:when=1..2",
    ];
    let m = mount_under_strace(&w, &g, &injects, &["threads=1"]);
    let www = m.path("www").display().to_string();
    for make in ["touch", "mkdir"] {
        let out = sh_as(USER, &format!("{make} {www}/{make}"));
        assert!(
            stderr(&out).contains("Disk quota exceeded"),
            "{make}: {}",
            stderr(&out)
        );
    }
    assert_eq!(names(&g.join("www")), Vec::<String>::new(), "entries left");
    // With room again.
    for make in ["touch", "mkdir"] {
        let out = sh_as(USER, &format!("{make} {www}/{make}"));
        assert!(out.status.success(), "{make}: {}", stderr(&out));
    }
    drop(m);
    assert_eq!(names(&g.join("www")), ["mkdir", "touch"]);
    for name in ["mkdir", "touch"] {
        let md = fs::metadata(g.join("www").join(name)).unwrap();
        assert_eq!((md.uid(), md.gid()), (USER, USER), "{name}");
    }
}

/// A break's copy was given to its owner after its data was written: on
/// xfs the blocks were charged to root as they were written, and the
/// daemon's chown (CAP_FOWNER) moved them to the user unchecked, past its
/// quota. The copy is the owner's before any data goes in (the order of
/// the daemon's system calls, as strace shows it).
#[test]
fn s38_a_break_copy_is_given_to_its_owner_before_its_data() {
    if !require_strace("s38_a_break_copy_is_given_to_its_owner_before_its_data") {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    w.shared(&vec![9u8; 100_000], &[g.join("data"), other.join("data")]);
    let mp = w.dir("m");
    let trace = w.tmp.path().join("trace");
    let trace_arg = trace.to_str().unwrap();
    let strace = [
        "strace",
        "-f",
        "-qq",
        "-o",
        trace_arg,
        "-e",
        "trace=fchown,copy_file_range",
    ];
    let log = fs::File::create(mp.with_extension("log")).unwrap();
    let m = Mount::start_under(&strace, &w.store, &g, &mp, &["threads=1"], log);
    append(&m.path("data"), b"mine\n").unwrap();
    drop(m);
    let calls: Vec<String> = fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
        .filter(|c| c.starts_with("fchown(") || c.starts_with("copy_file_range("))
        .collect();
    let first = |name: &str| calls.iter().position(|c| c.starts_with(name));
    let (chown, copy) = (first("fchown("), first("copy_file_range("));
    assert!(copy.is_some(), "no copy_file_range: {calls:?}");
    assert!(chown < copy && chown.is_some(), "{calls:?}");
}

/// The daemon serves without CAP_SYS_RESOURCE in effect (with it, ext4
/// lets writes past quota limits, and passthrough writes run with the
/// credentials of the daemon thread that opened the backing file): each
/// of its threads' effective set lacks it, the permitted set keeps it.
/// Meaningful only where this process has it (a host's root; not here,
/// where root's bounding set lacks it): elsewhere it says so and passes.
#[test]
fn s38_the_daemon_serves_without_cap_sys_resource() {
    const SYS_RESOURCE: u64 = 1 << 24;
    let caps = |status: &str, set: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(set)).unwrap();
        u64::from_str_radix(line[set.len()..].trim(), 16).unwrap()
    };
    let own = fs::read_to_string("/proc/self/status").unwrap();
    if caps(&own, "CapEff:") & SYS_RESOURCE == 0 {
        eprintln!("s38_the_daemon_serves_without_cap_sys_resource: this process lacks CAP_SYS_RESOURCE; nothing to check");
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let m = w.mount(&g, "m", &[]);
    fs::write(m.path("f"), b"x").unwrap();
    let tasks = format!("/proc/{}/task", m.pid());
    let mut seen = 0;
    for t in fs::read_dir(&tasks).unwrap() {
        let status = fs::read_to_string(t.unwrap().path().join("status")).unwrap_or_default();
        if status.is_empty() {
            continue;
        }
        assert_eq!(caps(&status, "CapEff:") & SYS_RESOURCE, 0, "{status}");
        assert_ne!(caps(&status, "CapPrm:") & SYS_RESOURCE, 0, "{status}");
        seen += 1;
    }
    assert!(seen > 1, "{seen} threads");
}
