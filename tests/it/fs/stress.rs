//! A bounded, seeded stress of one mounted guest whose files are unified
//! with another guest's: several threads break the same shared files (and
//! the hardlinks the guest makes to them), rename over and between shared,
//! broken and private files (RENAME_EXCHANGE, RENAME_NOREPLACE), link,
//! unlink, chmod, truncate, setxattr, hold readers across breaks and stat by
//! name. Afterwards the invariants are checked by properties: the other
//! guest and the store unchanged (`store verify` clean), every path a
//! complete file some writer wrote (or an original), stable numbers for the
//! names nothing renames, link counts equal to the names the guest sees, no
//! error ext4 would not give, the daemon alive and holding no extra fds. The
//! same workload runs on the plain backing filesystem first, so that the
//! errors allowed are ones it gives too.

use super::harness::{daemon_pid, wait_until, Mount, World};
use crate::common::require_root;
use crate::tree::{assert_invisible, assert_verify_clean, bytes, file, snapshot, unify_json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Every file is this long: a writer replaces the whole content at once
/// (a truncation makes it empty, or zeros).
const LEN: usize = 12_288;
/// Names nothing renames or unlinks: their numbers must stay.
const STABLE: [&str; 3] = ["s0", "s1", "s2"];
/// Names renamed, exchanged, unlinked, linked and made again.
const POOL: [&str; 8] = ["r0", "r1", "r2", "r3", "p0", "p1", "sub/r4", "sub/r5"];
/// Shared with the other guest (the rest of POOL is private to start with).
const SHARED_POOL: [&str; 6] = ["r0", "r1", "r2", "r3", "sub/r4", "sub/r5"];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len())]
    }
}

fn original(i: u64) -> Vec<u8> {
    bytes(1000 + i, LEN)
}

/// What a writer writes: a tag and bytes derived from it.
fn record(tag: u64) -> Vec<u8> {
    let mut r = b"REC".to_vec();
    r.extend_from_slice(&tag.to_le_bytes());
    r.extend_from_slice(&bytes(tag, LEN - 11));
    r
}

fn is_record(data: &[u8]) -> bool {
    data.len() == LEN
        && data.starts_with(b"REC")
        && data == record(u64::from_le_bytes(data[3..11].try_into().unwrap()))
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn rename2(a: &Path, b: &Path, flags: u32) -> std::io::Result<()> {
    let (a, b) = (c(a), c(b));
    // SAFETY: two NUL-terminated paths.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn setxattr(p: &Path, v: &[u8]) -> std::io::Result<()> {
    let (p, n) = (c(p), CString::new("user.stress").unwrap());
    // SAFETY: NUL-terminated path and name, a value of v.len() bytes.
    let r = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What the workload saw.
#[derive(Default, Debug)]
struct Seen {
    /// (operation, errno) → count, for errors ext4 gives in such races.
    expected: BTreeMap<(&'static str, i32), u64>,
    /// Errors that should not happen.
    unexpected: Vec<String>,
    ops: u64,
}

struct Work<'a> {
    dir: &'a Path,
    seen: Mutex<Seen>,
    stop: AtomicBool,
    /// Numbers of the stable names at the start.
    stable_ino: HashMap<&'static str, u64>,
}

impl Work<'_> {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Notes the outcome of `op` on `name`; `ok` lists the errnos a race
    /// gives on any filesystem.
    fn note<T>(&self, op: &'static str, name: &str, r: std::io::Result<T>, ok: &[i32]) {
        let mut s = self.seen.lock().unwrap();
        s.ops += 1;
        if let Err(e) = r {
            let en = e.raw_os_error().unwrap_or(-1);
            if ok.contains(&en) {
                *s.expected.entry((op, en)).or_default() += 1;
            } else if s.unexpected.len() < 50 {
                s.unexpected.push(format!("{op} {name}: {e}"));
            }
        }
    }

    fn stable_check(&self, name: &'static str, ino: u64) {
        if STABLE.contains(&name) && self.stable_ino[name] != ino {
            let mut s = self.seen.lock().unwrap();
            s.unexpected.push(format!(
                "{name}: number {} became {ino}",
                self.stable_ino[name]
            ));
        }
    }

    /// One random change or look at `name` (a stable or a pool name).
    fn poke(&self, rng: &mut Rng, name: &'static str, tag: u64) {
        let p = self.p(name);
        let enoent: &[i32] = if STABLE.contains(&name) {
            &[]
        } else {
            &[libc::ENOENT]
        };
        // ESTALE for a pool name: an open or a change by path whose file a
        // rename replaced (or a break split off) before it was done, twice
        // in a row (the kernel looks the path up again once); seen about
        // once in 100-200 runs on a heavily loaded machine (docs/mount.md).
        let stale: &[i32] = if STABLE.contains(&name) {
            &[]
        } else {
            &[libc::ENOENT, libc::ESTALE]
        };
        match rng.below(7) {
            0 => {
                let r = fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .and_then(|f| f.write_all_at(&record(tag), 0));
                self.note("write", name, r, stale);
            }
            1 => {
                let r = fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&p)
                    .and_then(|f| f.write_all_at(&record(tag), 0));
                self.note("write_trunc", name, r, stale);
            }
            2 => {
                let mode = if rng.below(2) == 0 { 0o644 } else { 0o600 };
                let r = fs::set_permissions(&p, fs::Permissions::from_mode(mode));
                self.note("chmod", name, r, stale);
            }
            3 => {
                let len = if rng.below(4) == 0 { 0 } else { LEN as u64 };
                let r = fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .and_then(|f| f.set_len(len));
                // truncate(2) by name as well
                let r2 = r.and_then(|_| {
                    // SAFETY: a NUL-terminated path.
                    let r = unsafe { libc::truncate(c(&p).as_ptr(), len as i64) };
                    if r == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
                // ESTALE for a pool name as above, or a truncate by path
                // racing the split of its node twice.
                self.note("truncate", name, r2, stale);
            }
            4 => {
                let r = setxattr(&p, &tag.to_le_bytes());
                self.note("setxattr", name, r, stale);
            }
            5 => {
                // A name of the guest's own for the file, gone again soon.
                let h = format!("h{}", rng.below(4));
                let hp = self.p(&h);
                let r = fs::hard_link(&p, &hp);
                // ENOENT for a stable name too: the kernel's own race, not
                // the daemon's. Its unlink drops the cached link count by
                // one when the reply comes back, and a getattr reply that
                // saw the file after the backing unlink may be taken just
                // before that: the count goes to 0 and vfs_link refuses the
                // inode until the next getattr (any FUSE filesystem; the
                // daemon answered every link here).
                let mut ok = vec![libc::ENOENT];
                ok.push(libc::EEXIST);
                self.note("link", name, r, &ok);
                if let Ok(m) = fs::symlink_metadata(&hp) {
                    if rng.below(2) == 0 {
                        let r = fs::OpenOptions::new()
                            .write(true)
                            .open(&hp)
                            .and_then(|f| f.write_all_at(&record(tag ^ 1), 0));
                        self.note("write_hardlink", &h, r, &[libc::ENOENT]);
                    }
                    let _ = m;
                }
                let r = fs::remove_file(&hp);
                self.note("unlink_hardlink", &h, r, &[libc::ENOENT]);
            }
            _ => match fs::symlink_metadata(&p) {
                Ok(m) => self.stable_check(name, m.ino()),
                Err(e) => self.note("stat", name, Err::<(), _>(e), enoent),
            },
        }
    }

    /// One random change of the pool's names.
    fn shuffle(&self, rng: &mut Rng, tag: u64) {
        let a = rng.pick(&POOL);
        let b = rng.pick(&POOL);
        let (pa, pb) = (self.p(a), self.p(b));
        match rng.below(6) {
            0 => self.note("rename", a, rename2(&pa, &pb, 0), &[libc::ENOENT]),
            1 => self.note(
                "rename_exchange",
                a,
                rename2(&pa, &pb, libc::RENAME_EXCHANGE),
                &[libc::ENOENT],
            ),
            2 => self.note(
                "rename_noreplace",
                a,
                rename2(&pa, &pb, libc::RENAME_NOREPLACE),
                &[libc::ENOENT, libc::EEXIST],
            ),
            3 => self.note(
                "link",
                a,
                fs::hard_link(&pa, &pb),
                &[libc::ENOENT, libc::EEXIST],
            ),
            4 => self.note("unlink", a, fs::remove_file(&pa), &[libc::ENOENT]),
            _ => {
                let r = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&pa)
                    .and_then(|f| f.write_all_at(&record(tag), 0));
                // (ENOENT, once in ~30 runs, was a revalidating lookup
                // undoing the create's table entry: fixed, none in 200.)
                self.note("create", a, r, &[libc::EEXIST]);
            }
        }
    }

    /// Holds a read fd on a pool name while others break and rename it;
    /// reads and fstats through it must keep working.
    fn read_held(&self, rng: &mut Rng) {
        let name = rng.pick(&POOL);
        let f = match fs::File::open(self.p(name)) {
            Ok(f) => f,
            // ESTALE: as for a write open (see `poke`).
            Err(e) => {
                let ok = [libc::ENOENT, libc::ESTALE];
                return self.note("open_read", name, Err::<(), _>(e), &ok);
            }
        };
        let mut buf = vec![0u8; LEN];
        for _ in 0..3 {
            self.note("read_held", name, f.read_at(&mut buf, 0), &[]);
            self.note("fstat_held", name, f.metadata(), &[]);
            std::thread::sleep(Duration::from_micros(300));
        }
    }
}

/// Runs the workload on `dir` for `time`: `writers` threads poking and
/// shuffling, two holding readers, one statting the stable names.
fn run(dir: &Path, seed: u64, time: Duration, writers: u64) -> Seen {
    let stable_ino = STABLE
        .iter()
        .map(|n| (*n, fs::symlink_metadata(dir.join(n)).unwrap().ino()))
        .collect();
    let work = Work {
        dir,
        seen: Mutex::new(Seen::default()),
        stop: AtomicBool::new(false),
        stable_ino,
    };
    let end = Instant::now() + time;
    std::thread::scope(|s| {
        for t in 0..writers {
            let work = &work;
            s.spawn(move || {
                let mut rng = Rng(seed.wrapping_mul(31).wrapping_add(t) | 1);
                let mut n = 0u64;
                while Instant::now() < end && !work.stop.load(Ordering::Relaxed) {
                    n += 1;
                    let tag = (t << 32) | n;
                    if rng.below(3) == 0 {
                        work.shuffle(&mut rng, tag);
                    } else {
                        let name = if rng.below(2) == 0 {
                            rng.pick(&STABLE)
                        } else {
                            rng.pick(&POOL)
                        };
                        work.poke(&mut rng, name, tag);
                    }
                }
            });
        }
        for t in 0..2u64 {
            let work = &work;
            s.spawn(move || {
                let mut rng = Rng(seed ^ (0xabcd + t));
                while Instant::now() < end {
                    work.read_held(&mut rng);
                }
            });
        }
        let work = &work;
        s.spawn(move || {
            let mut rng = Rng(seed ^ 0x5747);
            while Instant::now() < end {
                let name = rng.pick(&STABLE);
                match fs::symlink_metadata(work.p(name)) {
                    Ok(m) => work.stable_check(name, m.ino()),
                    Err(e) => work.note("stat", name, Err::<(), _>(e), &[]),
                }
            }
        });
    });
    work.seen.into_inner().unwrap()
}

/// Builds the tree the workload expects under `root/usr/d`.
fn populate(root: &Path, with_private: bool) {
    for (i, n) in STABLE.iter().chain(SHARED_POOL.iter()).enumerate() {
        file(root, &format!("usr/d/{n}"), &original(i as u64), 0o644);
    }
    if with_private {
        for (i, n) in ["p0", "p1"].iter().enumerate() {
            file(
                root,
                &format!("usr/d/{n}"),
                &original(100 + i as u64),
                0o644,
            );
        }
    }
}

/// Every regular file under `dir` (relative path → (ino, nlink, content)).
fn files(dir: &Path) -> BTreeMap<PathBuf, (u64, u64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        let m = e.metadata().unwrap();
        let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
        out.insert(rel, (m.ino(), m.nlink(), fs::read(e.path()).unwrap()));
    }
    out
}

/// The complete-file and link-count properties of what the guest sees at
/// `mounted`, against its backing tree `backing`.
fn check_tree(mounted: &Path, backing: &Path) {
    let originals: BTreeSet<Vec<u8>> = (0..9).chain(100..102).map(original).collect();
    let seen = files(mounted);
    let back = files(backing);
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        back.keys().collect::<Vec<_>>(),
        "names seen through the mount = names in the backing tree"
    );
    let mut names_of: HashMap<u64, u64> = HashMap::new();
    for (ino, _, _) in seen.values() {
        *names_of.entry(*ino).or_default() += 1;
    }
    for (rel, (ino, nlink, data)) in &seen {
        assert!(
            // (empty or zeros: truncated to 0, then maybe back to LEN)
            data.iter().all(|b| *b == 0) || originals.contains(data) || is_record(data),
            "{}: {} bytes that nobody wrote",
            rel.display(),
            data.len()
        );
        assert_eq!(
            *nlink,
            names_of[ino],
            "{}: link count against the names of number {ino}",
            rel.display()
        );
        let marked = super::harness::xattrs(&backing.join(rel))
            .iter()
            .any(|(n, _)| n == super::harness::MARKER);
        for (rel2, (ino2, _, _)) in &seen {
            if rel2 <= rel {
                continue;
            }
            let same_backing = back[rel].0 == back[rel2].0;
            assert_eq!(
                ino == ino2,
                same_backing && !marked,
                "{} and {}: one file to the guest iff one private inode behind",
                rel.display(),
                rel2.display()
            );
        }
    }
}

fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn stress_breaks_renames_and_links_of_shared_files_keep_the_invariants() {
    if !require_root("stress_breaks_renames_and_links_of_shared_files") {
        return;
    }
    let seed: u64 = std::env::var("UNIFS_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0007);
    let secs: f64 = std::env::var("UNIFS_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    eprintln!("stress seed {seed}, {secs} s");
    let w = World::new();

    // The backing filesystem's own answers to the same races.
    let plain = w.dir("plain");
    populate(&plain, true);
    fs::create_dir_all(plain.join("usr/d/sub")).unwrap();
    let native = run(&plain.join("usr/d"), seed, Duration::from_secs_f64(1.0), 4);
    assert!(
        native.unexpected.is_empty(),
        "the model expects errors ext4 does not give: {:?}",
        native.unexpected
    );
    check_tree(&plain, &plain);

    let store = w.tmp.path().join("real-store");
    let (a, b) = (w.dir("a"), w.dir("b"));
    populate(&a, true);
    populate(&b, false);
    fs::set_permissions(&a, fs::Permissions::from_mode(0o755)).unwrap();
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["files_linked"], 9, "{s}");
    let before_b = snapshot(&b);
    let objects = snapshot(&store.join("objects"));

    let m = Mount::start(&store, &a, &w.dir("ma"), &[]);
    let pid = daemon_pid(&m.dir).unwrap_or(m.pid() as i32);
    let d = m.path("usr/d");
    // Known to the kernel, as a running guest's files are.
    for n in STABLE.iter().chain(POOL.iter()) {
        fs::symlink_metadata(d.join(n)).unwrap();
    }
    let fds_before = fd_count(pid);
    let seen = run(&d, seed, Duration::from_secs_f64(secs), 6);
    eprintln!(
        "{} ops; races answered as on ext4: {:?}; natively: {:?}",
        seen.ops, seen.expected, native.expected
    );
    assert!(
        seen.unexpected.is_empty(),
        "errors or changed numbers ext4 would not show: {:#?}",
        seen.unexpected
    );
    assert!(
        m.child.as_ref().is_some() && daemon_pid(&m.dir).is_some(),
        "the daemon is alive"
    );
    // Every release arrives; the daemon holds no fd for a closed file.
    let settled = wait_until(Duration::from_secs(30), || fd_count(pid) <= fds_before);
    assert!(
        settled,
        "daemon fds: {} before, {} after",
        fds_before,
        fd_count(pid)
    );
    check_tree(&m.dir, &a);
    let temps: Vec<_> = walkdir::WalkDir::new(&a)
        .into_iter()
        .flatten()
        .filter(|e| e.file_name().as_bytes().starts_with(b".unifs-break."))
        .map(|e| e.path().to_path_buf())
        .collect();
    assert!(temps.is_empty(), "temp names left: {temps:?}");
    let log = fs::read_to_string(&m.log).unwrap_or_default();
    assert!(!log.contains("panicked"), "daemon log: {log}");
    drop(m);
    assert_invisible(&before_b, &snapshot(&b), "guest B");
    assert_invisible(
        &objects.without_dir_mtimes(),
        &snapshot(&store.join("objects")).without_dir_mtimes(),
        "the store's objects",
    );
    assert_verify_clean(&store);
}

/// Found by the stress above: an fstat of an open file whose name a rename
/// moved failed with ENOENT when it came between the backing rename and the
/// node table's update (the daemon looked the file up by its old name).
/// On ext4 an fstat of an open file never fails.
#[test]
fn fstat_of_an_open_file_never_fails_while_renames_move_its_name() {
    if !require_root("fstat_of_an_open_file_never_fails_while_renames_move_its_name") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("x"), b"private").unwrap();
    fs::write(g.join("z"), b"other").unwrap();
    let m = w.mount(&g, "m", &[]);
    let (x, y, z) = (m.path("x"), m.path("y"), m.path("z"));
    let held = fs::File::open(&x).unwrap();
    let end = Instant::now() + Duration::from_millis(1500);
    let failures = std::thread::scope(|s| {
        s.spawn(|| {
            while Instant::now() < end {
                rename2(&x, &y, 0).unwrap();
                rename2(&y, &x, 0).unwrap();
                rename2(&x, &z, libc::RENAME_EXCHANGE).unwrap();
                rename2(&z, &x, libc::RENAME_EXCHANGE).unwrap();
            }
        });
        let mut failures = Vec::new();
        let mut n = 0u64;
        while Instant::now() < end {
            n += 1;
            match held.metadata() {
                Ok(md) => assert_eq!(md.len(), 7),
                Err(e) => failures.push(e.to_string()),
            }
        }
        eprintln!("{n} fstats");
        failures
    });
    assert!(failures.is_empty(), "fstat failed: {failures:?}");
}

/// A write open of `b` whose registration fell between a rename over `b`
/// on disk and the rename's table update bound b's old node to the
/// rename's source: the source's hardlinks then got another number than
/// `b` (the stress test's rare "link count against the names of number").
/// Bounded (2 s); the window is microseconds wide, so a run catches the old
/// bug only sometimes.
#[test]
fn write_opens_racing_renames_over_their_name_leave_one_number_per_file() {
    if !require_root("write_opens_racing_renames_over_their_name_leave_one_number_per_file") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("b"), b"first").unwrap();
    let m = w.mount(&g, "m", &[]);
    let (a, b, c) = (m.path("a"), m.path("b"), m.path("c"));
    let end = Instant::now() + Duration::from_secs(2);
    let (rounds, split) = std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while Instant::now() < end {
                    let _ = fs::OpenOptions::new().write(true).open(&b);
                }
            });
        }
        let mut split = Vec::new();
        let mut rounds = 0u64;
        while Instant::now() < end && split.len() < 5 {
            rounds += 1;
            fs::write(&a, b"next").unwrap();
            rename2(&a, &b, 0).unwrap();
            fs::hard_link(&b, &c).unwrap();
            let (nb, nc) = (ino_of(&b), ino_of(&c));
            if nb != nc {
                split.push((rounds, nb, nc));
            }
            fs::remove_file(&c).unwrap();
        }
        (rounds, split)
    });
    eprintln!("{rounds} renames");
    assert!(
        split.is_empty(),
        "b and its hardlink c numbered apart: {split:?}"
    );
}

fn ino_of(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

/// Found by the stress above: a write open's break through a name that a
/// rename had just given another node broke that node's file, and left the
/// node bound to the store object. A write open of it then met the
/// object's read-only file, which a reader held, as the node's one backing
/// file, and failed with ETXTBSY. Here the file is replaced by a private
/// copy behind the mount's back, which leaves the node as that break did.
#[test]
fn a_write_open_of_a_file_broken_unseen_while_a_reader_holds_it_works() {
    if !require_root("a_write_open_of_a_file_broken_unseen_while_a_reader_holds_it_works") {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    let old = vec![7u8; 20_000];
    w.shared(&old, &[g.join("data"), other.join("data")]);
    let m = w.mount(&g, "m", &[]);
    let data = m.path("data");
    let reader = fs::File::open(&data).unwrap();
    // What a break does: an unmarked copy renamed over the name.
    fs::copy(g.join("data"), g.join("copy")).unwrap();
    fs::rename(g.join("copy"), g.join("data")).unwrap();
    let r = fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .and_then(|f| f.write_all_at(b"new", 0));
    assert!(r.is_ok(), "write open of the copy: {r:?}");
    let mut new = old.clone();
    new[..3].copy_from_slice(b"new");
    assert_eq!(fs::read(&data).unwrap(), new);
    assert_eq!(fs::read(g.join("data")).unwrap(), new);
    let mut held = vec![0u8; old.len()];
    reader.read_exact_at(&mut held, 0).unwrap();
    assert_eq!(held, old, "the reader keeps the file it opened");
    assert_eq!(fs::read(other.join("data")).unwrap(), old);
}

/// Found by the stress above: a write open of a shared file whose name a
/// rename took away after the kernel's lookup (here: reopened through
/// `/proc/self/fd`) reached a node with no name, whose open file, the
/// store object, a reader held read-only: ETXTBSY, as for a running
/// program. No write may reach that file and no name is left to break:
/// ESTALE, as for a split node.
#[test]
fn a_write_open_of_a_shared_file_with_no_name_left_is_estale() {
    if !require_root("a_write_open_of_a_shared_file_with_no_name_left_is_estale") {
        return;
    }
    use std::os::fd::AsRawFd;
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    let old = vec![7u8; 20_000];
    w.shared(&old, &[g.join("data"), other.join("data")]);
    let m = w.mount(&g, "m", &[]);
    let reader = fs::File::open(m.path("data")).unwrap();
    fs::write(m.path("new"), b"new").unwrap();
    fs::rename(m.path("new"), m.path("data")).unwrap();
    let proc = format!("/proc/self/fd/{}", reader.as_raw_fd());
    let r = fs::OpenOptions::new().write(true).open(&proc);
    assert_eq!(
        r.map(drop).map_err(|e| e.raw_os_error()),
        Err(Some(libc::ESTALE))
    );
    assert_eq!(fs::read(&proc).unwrap(), old);
    assert_eq!(fs::read(other.join("data")).unwrap(), old);
}
