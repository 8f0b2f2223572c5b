//! Defects in listings through several handles of one directory while it
//! changes (session 22): the daemon numbered offsets per handle, counting
//! an offset it had not handed out (another handle's, from the kernel's
//! cached listing) in the directory as it was then, so after a create or
//! unlink the same number named another entry.

use super::harness::*;
use super::review_s17_mount::dirents;
use crate::common::require_root;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Reads `fd` on to the end with `size`-byte getdents buffers; names only,
/// `.` and `..` left out.
fn read_on(fd: i32, size: usize) -> Vec<OsString> {
    let mut names = Vec::new();
    loop {
        let more = dirents(fd, size);
        if more.is_empty() {
            return names;
        }
        names.extend(
            more.into_iter()
                .map(|(n, _)| n)
                .filter(|n| n != "." && n != ".."),
        );
    }
}

/// Names `listed` shows other than once, of those in `want`.
fn not_once(want: &[OsString], listed: &[OsString]) -> Vec<(OsString, usize)> {
    let mut seen: HashMap<&OsString, usize> = HashMap::new();
    for n in listed {
        *seen.entry(n).or_default() += 1;
    }
    want.iter()
        .map(|n| (n.clone(), seen.get(n).copied().unwrap_or(0)))
        .filter(|(_, k)| *k != 1)
        .collect()
}

/// One fd listing on after the kernel re-filled its cached listing from
/// another fd: fd A lists the directory (the kernel caches the listing
/// with A's offsets), B reads the first 50 names from that cache, a name B
/// has listed is unlinked, C lists from the start (the kernel drops the
/// cache and fills it again through C), and B reads on, from its offset
/// (A's) looked up in C's listing. C's offsets were the entries counted
/// after the unlink, so B's offset named the entry one further and B never
/// listed one name. Unless [`First::StaysOpen`], a change comes first and
/// A is closed before B opens.
fn read_on_after_another_fd_refilled_the_cache(first: First) {
    let closed = first != First::StaysOpen;
    let w = World::new();
    let g = w.dir("g");
    let d = g.join("d");
    fs::create_dir(&d).unwrap();
    for i in 0..300 {
        fs::write(d.join(format!("file_{i:03}")), b"").unwrap();
    }
    let others: Vec<String> = match first {
        First::Forgotten => (0..6).map(|i| format!("other{i}")).collect(),
        _ => Vec::new(),
    };
    for o in &others {
        fs::create_dir(g.join(o)).unwrap();
        fs::write(g.join(o).join("f"), b"").unwrap();
    }
    let mp = w.dir("m");
    let log = fs::File::create(w.tmp.path().join("m.log")).unwrap();
    // The daemon keeps the numberings of 4 directories whose fds all closed.
    let env = ["env", "UNIFS_TEST_CLOSED_NUMBERED_DIRS=4"];
    let m = Mount::start_under(&env, &w.store, &g, &mp, &[], log);
    let dir = m.path("d");
    if closed {
        // Listed and changed: the next listing numbers the new name anew.
        let first = fs::File::open(&dir).unwrap();
        assert_eq!(read_on(first.as_raw_fd(), 65536).len(), 300);
        drop(first);
        fs::write(dir.join("file_new"), b"").unwrap();
    }
    let a = fs::File::open(&dir).unwrap();
    let all = read_on(a.as_raw_fd(), 65536);
    if closed {
        drop(a);
    }
    // Listed and closed: past 4 such directories, the daemon drops the
    // oldest numberings and has the kernel drop those listings.
    for o in &others {
        let f = fs::File::open(m.path(o)).unwrap();
        assert_eq!(read_on(f.as_raw_fd(), 65536).len(), 1);
    }
    let b = fs::File::open(&dir).unwrap();
    let mut by_b = Vec::new();
    while by_b.len() < 50 {
        let got = read_on_once(b.as_raw_fd(), 2000);
        assert!(!got.is_empty(), "B: the listing ended early");
        by_b.extend(got);
    }
    let victim = by_b[2].clone();
    fs::remove_file(dir.join(&victim)).unwrap();
    let c = fs::File::open(&dir).unwrap();
    let by_c = read_on(c.as_raw_fd(), 65536);
    assert_eq!(by_c.len(), all.len() - 1);
    by_b.extend(read_on(b.as_raw_fd(), 65536));
    let wrong = not_once(&all, &by_b);
    assert!(
        wrong.is_empty(),
        "fd B listed these names other than once (after {victim:?} was unlinked): {wrong:?}"
    );
}

#[derive(Clone, Copy, PartialEq)]
enum First {
    /// fd A stays open.
    StaysOpen,
    /// fd A is closed: the numbering is kept for the kernel's listing.
    Closed,
    /// fd A is closed and more other directories listed after than the
    /// daemon keeps numberings of: it dropped A's, and the kernel its
    /// listing.
    Forgotten,
}

/// One getdents call: names, `.` and `..` left out.
fn read_on_once(fd: i32, size: usize) -> Vec<OsString> {
    dirents(fd, size)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n != "." && n != "..")
        .collect()
}

/// A listing read on from the kernel's cached listing after another fd
/// re-filled it lost (or repeated) an entry: the offsets of one fd meant
/// other entries on another after a change.
#[test]
fn review_s22_a_listing_read_on_after_another_fd_refilled_the_cache_lists_each_name_once() {
    if !require_root("review_s22_a_listing_read_on_after_another_fd_refilled_the_cache") {
        return;
    }
    read_on_after_another_fd_refilled_the_cache(First::StaysOpen);
}

/// The same with the fd that filled the cache closed first, after a
/// change: a numbering dropped with its handles left its offsets in the
/// kernel's cached listing, for the next handles to hand back.
#[test]
fn review_s22_offsets_in_the_cached_listing_outlive_the_handles_that_gave_them() {
    if !require_root("review_s22_offsets_in_the_cached_listing_outlive_the_handles") {
        return;
    }
    read_on_after_another_fd_refilled_the_cache(First::Closed);
}

/// The same with the numbering dropped (past the directories kept) before
/// B opens: the kernel's cached listing still held its offsets, unless
/// told to drop it too.
#[test]
fn review_s22_a_numbering_dropped_takes_the_cached_listing_with_it() {
    if !require_root("review_s22_a_numbering_dropped_takes_the_cached_listing_with_it") {
        return;
    }
    read_on_after_another_fd_refilled_the_cache(First::Forgotten);
}

/// Several programs listing one directory with small buffers while names
/// come and go (through the mount and behind it): each lost or repeated
/// entries (a tester saw 4 to 11 per lister of 60 listings), since the
/// kernel's cached listing hands each the offsets of another, counted by
/// the daemon in another state of the directory. Each name that stays
/// must be listed exactly once by every listing.
#[test]
fn review_s22_concurrent_listings_while_names_come_and_go_list_each_stable_name_once() {
    if !require_root("review_s22_concurrent_listings_while_names_come_and_go") {
        return;
    }
    const STABLE: usize = 600;
    const LISTERS: usize = 4;
    const ROUNDS: usize = 40;
    let w = World::new();
    let g = w.dir("g");
    let d = g.join("d");
    fs::create_dir(&d).unwrap();
    for i in 0..STABLE {
        fs::write(d.join(format!("s{i}")), b"").unwrap();
    }
    let m = w.mount(&g, "m", &[]);
    let dir = m.path("d");
    let stable: Vec<OsString> = (0..STABLE).map(|i| format!("s{i}").into()).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let wrong = std::thread::scope(|s| {
        let changer = s.spawn(|| {
            let mut k = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                k += 1;
                fs::write(d.join(format!("t{k}")), b"").unwrap();
                fs::write(dir.join(format!("u{k}")), b"").unwrap();
                fs::rename(dir.join(format!("u{k}")), dir.join(format!("v{k}"))).unwrap();
                if k > 3 {
                    let _ = fs::remove_file(d.join(format!("t{}", k - 3)));
                }
                if k > 5 {
                    fs::remove_file(dir.join(format!("v{}", k - 5))).unwrap();
                }
            }
            k
        });
        let listers: Vec<_> = (0..LISTERS)
            .map(|j| {
                let (dir, stable) = (&dir, &stable);
                s.spawn(move || {
                    let mut wrong = Vec::new();
                    for r in 0..ROUNDS {
                        if Instant::now() > deadline {
                            break;
                        }
                        let f = fs::File::open(dir).unwrap();
                        let mut names = Vec::new();
                        loop {
                            // 200 to 1000 bytes: a few entries a call.
                            let size = 200 + (j * 131 + r * 37 + names.len() * 7) % 800;
                            let got = dirents(f.as_raw_fd(), size);
                            if got.is_empty() {
                                break;
                            }
                            names.extend(got.into_iter().map(|(n, _)| n));
                        }
                        for (n, k) in not_once(stable, &names) {
                            wrong.push(format!("lister {j} round {r}: {n:?} listed {k} times"));
                        }
                    }
                    wrong
                })
            })
            .collect();
        let wrong: Vec<String> = listers
            .into_iter()
            .flat_map(|l| l.join().unwrap())
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let changes = changer.join().unwrap();
        assert!(changes > 20, "only {changes} changes while listing");
        wrong
    });
    assert!(Instant::now() < deadline, "the listings took over 90 s");
    assert!(
        wrong.is_empty(),
        "{} wrong listings of stable names, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

/// A directory's numbering, now shared by its fds, must not grow with
/// every name ever listed: an fd that is the directory's only one and is
/// rewound after changes starts it over, so its offsets stay the count of
/// its entries however many names came and went.
#[test]
fn review_s22_a_lone_fd_rewound_after_changes_starts_the_numbering_over() {
    if !require_root("review_s22_a_lone_fd_rewound_after_changes_starts_the_numbering_over") {
        return;
    }
    const FILES: usize = 100;
    let w = World::new();
    let g = w.dir("g");
    let d = g.join("d");
    fs::create_dir(&d).unwrap();
    for i in 0..FILES {
        fs::write(d.join(format!("f{i}")), b"").unwrap();
    }
    let m = w.mount(&g, "m", &[]);
    let dir = m.path("d");
    let f = fs::File::open(&dir).unwrap();
    let fd = f.as_raw_fd();
    let all = |round: usize| {
        // SAFETY: a valid fd; lseek takes plain integers.
        assert_eq!(unsafe { libc::lseek(fd, 0, libc::SEEK_SET) }, 0);
        let mut got = Vec::new();
        loop {
            let more = dirents(fd, 1024);
            if more.is_empty() {
                break;
            }
            got.extend(more);
        }
        let names: Vec<OsString> = got.iter().map(|(n, _)| n.clone()).collect();
        let mut want: Vec<OsString> = (0..FILES).map(|i| format!("f{i}").into()).collect();
        if round > 0 {
            want.push(format!("new{round}").into());
        }
        let wrong = not_once(&want, &names);
        assert!(wrong.is_empty(), "round {round}: {wrong:?}");
        assert_eq!(names.len(), want.len() + 2, "round {round}: {names:?}");
        got.iter().map(|(_, off)| *off).max().unwrap()
    };
    all(0);
    let mut highest = 0;
    for round in 1..=300 {
        fs::write(dir.join(format!("new{round}")), b"").unwrap();
        if round > 1 {
            fs::remove_file(dir.join(format!("new{}", round - 1))).unwrap();
        }
        highest = highest.max(all(round));
    }
    assert!(
        highest <= (FILES + 3) as i64,
        "offsets grew to {highest} for a directory of {} entries",
        FILES + 3
    );
}

/// A directory's numbering grows with each new name listed after a change
/// while any of its fds stays open (a lone fd rewound starts it over, not
/// one of several): a guest churning names (create, list, unlink) under an
/// fd held open, in as many directories as it likes, grew the daemon
/// without bound (about 40 bytes a name, up to 2^24 names a directory).
/// Now all numberings together hold at most a budget of numbers (lowered
/// here to 4,096): past it they are dropped or started over, and the
/// offsets handed out stay below it, while every listing stays right and
/// the fd held open reads on to list each of its names once.
#[test]
fn review_s22_churning_names_under_an_open_handle_keeps_the_daemon_bounded() {
    if !require_root("review_s22_churning_names_under_an_open_handle_keeps_the_daemon") {
        return;
    }
    const STABLE: usize = 200;
    const CHURN: usize = 400;
    const ROUNDS: usize = 40;
    const BUDGET: usize = 4096;
    let w = World::new();
    let g = w.dir("g");
    let d = g.join("d");
    fs::create_dir(&d).unwrap();
    for i in 0..STABLE {
        fs::write(d.join(format!("s{i}")), b"").unwrap();
    }
    let mp = w.dir("m");
    let log = fs::File::create(w.tmp.path().join("m.log")).unwrap();
    let budget = format!("UNIFS_TEST_NUMBERED_MAX={BUDGET}");
    let env = ["env", budget.as_str()];
    let m = Mount::start_under(&env, &w.store, &g, &mp, &[], log);
    let dir = m.path("d");
    let stable: Vec<OsString> = (0..STABLE).map(|i| format!("s{i}").into()).collect();

    // Held open, part read.
    let held = fs::File::open(&dir).unwrap();
    let mut by_held = Vec::new();
    while by_held.len() < 50 {
        let got = read_on_once(held.as_raw_fd(), 2000);
        assert!(!got.is_empty(), "the held fd's listing ended early");
        by_held.extend(got);
    }

    let mut highest = 0i64;
    for round in 0..ROUNDS {
        let churn: Vec<OsString> = (0..CHURN).map(|i| format!("c{round}_{i}").into()).collect();
        for n in &churn {
            fs::write(dir.join(n), b"").unwrap();
        }
        let f = fs::File::open(&dir).unwrap();
        let mut got = Vec::new();
        loop {
            let more = dirents(f.as_raw_fd(), 4096);
            if more.is_empty() {
                break;
            }
            got.extend(more);
        }
        drop(f);
        highest = highest.max(got.iter().map(|(_, off)| *off).max().unwrap());
        let names: Vec<OsString> = got.into_iter().map(|(n, _)| n).collect();
        let want: Vec<OsString> = stable.iter().chain(&churn).cloned().collect();
        let wrong = not_once(&want, &names);
        assert!(
            wrong.is_empty(),
            "round {round}: listed other than once: {wrong:?}"
        );
        assert_eq!(names.len(), want.len() + 2, "round {round}");
        for n in &churn {
            fs::remove_file(dir.join(n)).unwrap();
        }
    }
    // The daemon reports the numbers it held each time it went past the
    // budget: without one, a number for each of the 16,000 names listed.
    let log = fs::read_to_string(w.tmp.path().join("m.log")).unwrap();
    let reported: Vec<usize> = log
        .lines()
        .filter(|l| l.contains("numberings dropped or begun again"))
        .map(|l| {
            let at = l.find("held=").expect("held= in the line") + 5;
            let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().unwrap()
        })
        .collect();
    eprintln!("highest offset handed out: {highest}; numbers held past the budget: {reported:?}");
    assert!(
        !reported.is_empty(),
        "the daemon never went past its budget of {BUDGET} numbers, though \
         {} names were listed under an fd held open (highest offset {highest})",
        ROUNDS * CHURN
    );
    assert!(
        reported.iter().all(|&n| n <= BUDGET + 1),
        "the daemon held more numbers than its budget of {BUDGET}: {reported:?}"
    );
    assert!(highest < 1 << 24, "offset {highest} past 2^24");

    // The held fd reads on. Its offset was dropped with the numbering, so it
    // is counted in the directory as it is now (the names it held then are
    // back, but it changed meanwhile): no stable name may be lost.
    by_held.extend(read_on(held.as_raw_fd(), 2000));
    let lost: Vec<_> = not_once(&stable, &by_held)
        .into_iter()
        .filter(|(_, k)| *k == 0)
        .collect();
    assert!(lost.is_empty(), "the held fd never listed these: {lost:?}");
    assert!(
        by_held.len() <= STABLE + 2,
        "the held fd listed {} names for {STABLE}",
        by_held.len()
    );
}
