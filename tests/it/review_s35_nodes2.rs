//! Session 35's review of two leftovers: a break a rename misled onto a file
//! the guest hardlinked itself (a node with several names), and the pids
//! preflight of a guest's start.

use crate::common::{require_root, wait_for_pause};
use crate::fs::harness::{ino, Mount, World};
use crate::review_s33_etxtbsy::write_in_thread;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};

/// A break for a write open of shared `x` copies slowly (`pause`); `change`
/// puts a hardlink pair the guest made (`a`, `b`) at `x` meanwhile, through
/// the mount. The pair's file is the guest's own (no marker), so the break
/// finds it private and copies nothing: its node, with both names, keeps
/// its number, `b` (stat'ed, and an fd opened on it before) shows the file
/// at `x` with its two links, and a write through one name shows through
/// the other (invariant 5: the guest sees exactly the hardlinks it made).
fn pair_put_over_a_breaking_name(change: impl FnOnce(&Mount)) {
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    let old_x = vec![b'x'; 20_000];
    w.shared(&old_x, &[g.join("x"), other.join("x")]);
    let log = fs::File::create(w.tmp.path().join("m.log")).unwrap();
    let env = ["env", "UNIFS_TEST_BREAK_PAUSE_MS=700"];
    let m = Mount::start_under(&env, &w.store, &g, &w.dir("m"), &[], log);
    let (x, a, b) = (m.path("x"), m.path("a"), m.path("b"));
    fs::write(&a, vec![b'a'; 20_000]).unwrap();
    fs::hard_link(&a, &b).unwrap();
    let number = ino(&a);
    assert_eq!(ino(&b), number, "a guest-made pair is one file");
    let held = fs::File::open(&b).unwrap();
    fs::metadata(&x).unwrap();

    let write = write_in_thread(&x, b"one");
    // Inside the break's pause, whatever the machine's load.
    wait_for_pause(m.pid(), 700);
    change(&m);
    let r = write.join().unwrap();
    let errno = r.as_ref().err().and_then(|e| e.raw_os_error());
    assert!(matches!(errno, None | Some(libc::ESTALE)), "{r:?}");

    // No fresh lookup of b: the kernel's entry and attributes, and the fd.
    let (by_name, by_fd) = (fs::metadata(&b).unwrap(), held.metadata().unwrap());
    assert_eq!(by_name.ino(), number, "b's number after the break");
    assert_eq!(by_fd.ino(), number, "the fd on b after the break");
    assert_eq!(ino(&x), number, "x (the pair's file) keeps its number");
    assert_eq!(by_name.nlink(), 2, "x and b, the guest's two links");
    fs::OpenOptions::new()
        .write(true)
        .open(&x)
        .unwrap()
        .write_all_at(b"zz", 0)
        .unwrap();
    let mut head = [0u8; 2];
    held.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(&head, b"zz", "a write through x shows through b's fd");
    assert_eq!(&fs::read(&b).unwrap()[..2], b"zz");
    assert_eq!(held.metadata().unwrap().ino(), number);
    assert_eq!(fs::read(other.join("x")).unwrap(), old_x, "isolation");
    assert_eq!(ino(&g.join("x")), ino(&g.join("b")), "one backing file");
}

/// Review s35: the pair renamed over `x` (`a` → `x`) while `x`'s break
/// copies.
#[test]
fn s35_a_hardlink_pair_renamed_over_a_breaking_name_keeps_its_number() {
    if !require_root("s35_a_hardlink_pair_renamed_over_a_breaking_name_keeps_its_number") {
        return;
    }
    pair_put_over_a_breaking_name(|m| fs::rename(m.path("a"), m.path("x")).unwrap());
}

/// Review s35: `x` unlinked and linked again to the pair (`a` → `x`, a
/// third name, `a` then removed) while `x`'s break copies.
#[test]
fn s35_a_hardlink_pair_linked_at_a_breaking_name_keeps_its_number() {
    if !require_root("s35_a_hardlink_pair_linked_at_a_breaking_name_keeps_its_number") {
        return;
    }
    pair_put_over_a_breaking_name(|m| {
        fs::remove_file(m.path("x")).unwrap();
        fs::hard_link(m.path("a"), m.path("x")).unwrap();
        fs::remove_file(m.path("a")).unwrap();
    });
}

/// What a start under a pids limit ended in: started; refused before
/// anything was made, naming `--pids` and the least that starts; refused
/// by the overlay daemon before it mounted (its preflight or its fork,
/// naming the pids cgroup); or failed half-way, once the root was mounted
/// (a thread or fork of the daemon or of init that met the limit).
#[derive(Debug, PartialEq)]
enum Start {
    Started,
    Refused(u64),
    BeforeMount(String),
    HalfWay(String),
}

fn start_outcome(o: &std::process::Output) -> Start {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    if o.status.success() {
        return Start::Started;
    }
    // A named guest's says its config's key, and the file (session 36).
    let least = ["cannot apply --pids: ", "cannot apply [limits] pids: "]
        .iter()
        .find_map(|said| err.split_once(said))
        .and_then(|(_, e)| e.rsplit_once("give at least "))
        .and_then(|(_, n)| n.trim().parse().ok());
    match least {
        Some(n) => Start::Refused(n),
        None if before_mount(&err) => Start::BeforeMount(err),
        None => Start::HalfWay(err),
    }
}

/// The daemon's refusals before it mounts: its preflight, its fork.
fn before_mount(err: &str) -> bool {
    err.contains("cannot start the mount's") || err.contains("forking the mount daemon")
}

/// Limits 1 to `top`: none fails half-way; each start below the least is
/// refused up front, naming that least (the same for all); each from it on
/// starts. Returns the least.
fn check_limits(top: u64, mut start: impl FnMut(u64) -> Start) -> u64 {
    let all: Vec<(u64, Start)> = (1..=top).map(|max| (max, start(max))).collect();
    let half_way: Vec<_> = all
        .iter()
        .filter(|(_, s)| matches!(s, Start::HalfWay(_)))
        .collect();
    assert!(half_way.is_empty(), "failed half-way: {half_way:#?}");
    let mut least = None;
    for (max, outcome) in all {
        match outcome {
            Start::Started => {
                if let Some(n) = least {
                    assert!(max >= n, "pids {max} started below the least named, {n}");
                }
                least.get_or_insert(max);
            }
            Start::Refused(n) => {
                assert!(max < n, "pids {max} refused, yet the least named is {n}");
                assert!(
                    least.is_none_or(|l| l == n),
                    "pids {max}: least {n}, not {least:?}"
                );
                least = Some(n);
            }
            Start::BeforeMount(err) => panic!("pids {max}: not said as --pids: {err}"),
            Start::HalfWay(_) => unreachable!(),
        }
    }
    least.expect("some limit started")
}

/// Review s35: `unifs run --pids N` with N too low for the overlay daemon
/// and the guest's init. The daemon's preflight counted only its 4 FUSE
/// threads: 5 and 6 passed it and failed once mounted ("the overlay daemon
/// stopped before the mount was ready: Resource temporarily unavailable").
#[test]
fn s35_a_run_under_too_low_a_pids_limit_is_refused_up_front() {
    let test = "s35_a_run_under_too_low_a_pids_limit_is_refused_up_front";
    if !crate::guest::harness::can_run(test) {
        return;
    }
    let t = crate::guest::harness::TestRoot::new();
    for init in [false, true] {
        let least = check_limits(9, |max| {
            let pids = max.to_string();
            let mut opts = vec!["--pids", &pids];
            if init {
                opts.push("--init");
            }
            let o = t.sh(&opts, "echo started");
            let outcome = start_outcome(&o);
            if outcome == Start::Started {
                assert_eq!(crate::guest::harness::stdout(&o).trim(), "started");
            }
            outcome
        });
        assert_eq!(least, if init { 8 } else { 7 }, "--init {init}");
    }
}

/// Review s35: `guest start` of a guest whose config's pids is too low for
/// its overlay daemon (with its `unifs mount` waiting, and a signal
/// thread) and its init. 6 to 8 passed the daemon's preflight and failed
/// once mounted ("the mount daemon stopped before the mount was ready").
/// A refused start leaves no groups behind.
#[test]
fn s35_a_guest_start_under_too_low_a_pids_limit_is_refused_up_front() {
    let test = "s35_a_guest_start_under_too_low_a_pids_limit_is_refused_up_front";
    if !crate::guest::harness::can_run(test) {
        return;
    }
    let g = crate::guest::named::Guest::new("s35pids", "[\"/bin/sleep\", \"1000\"]", false);
    let config = fs::read_to_string(g.config()).unwrap();
    let least = check_limits(10, |max| {
        let limited = config.replace("pids = 64", &format!("pids = {max}"));
        fs::write(g.config(), limited).unwrap();
        let o = g.unifs(&["start", &g.name]);
        let outcome = start_outcome(&o);
        if let Start::Refused(_) = outcome {
            let left = crate::guest::harness::groups(&g.name, &g.run_dir);
            assert!(
                left.iter().all(|p| !p.exists()),
                "pids {max}: {left:?} left"
            );
        }
        if o.status.success() {
            let stop = g.unifs(&["stop", "--timeout", "0", &g.name]);
            assert!(stop.status.success(), "{stop:?}");
        }
        outcome
    });
    assert_eq!(least, 9);
}

/// Review s35: `unifs mount` in a pids group of 1 to 12 tasks: a limit too
/// low fails before anything is mounted (the daemon's preflight, or its
/// fork), never once it is mounted ("stopped before the mount was ready":
/// 6 to 8 did).
#[test]
fn s35_a_mount_under_too_low_a_pids_limit_fails_before_it_mounts() {
    let test = "s35_a_mount_under_too_low_a_pids_limit_fails_before_it_mounts";
    if !require_root(test) {
        return;
    }
    let Some(pids) = crate::review_s27_cgroup::v1_hierarchy(test, "pids") else {
        return;
    };
    let w = World::new();
    let guest = w.dir("guest");
    let mp = w.dir("mp");
    let _unmount = crate::fs::harness::UnmountAt(&mp);
    let group =
        crate::review_s33_pids::PidsGroup(pids.join(format!("s35-pids-{}", std::process::id())));
    fs::create_dir(&group.0).unwrap();
    let mut mounted = None;
    let mut failed = Vec::new();
    for max in 1..=12 {
        let o = group.mount(max, &w.store, &guest, &mp);
        if !o.status.success() {
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            assert!(
                !crate::fs::harness::is_mounted(&mp),
                "pids.max {max}: left mounted"
            );
            failed.push((max, err));
            continue;
        }
        mounted.get_or_insert(max);
        crate::review_s33_pids::unmount(&mp);
    }
    let half_way: Vec<_> = failed.iter().filter(|(_, e)| !before_mount(e)).collect();
    assert!(half_way.is_empty(), "failed once mounted: {half_way:#?}");
    for (max, err) in &failed {
        assert!(
            mounted.is_none_or(|m| m > *max),
            "pids.max {max} failed above {mounted:?}: {err}"
        );
        assert!(err.contains(&format!("allows {max} tasks")), "{err}");
        // (With 1, `unifs mount` cannot fork its daemon at all.)
        assert!(
            *max == 1 || err.contains("4 FUSE threads, a signal thread, a readiness thread"),
            "pids.max {max}: the preflight names only some of the tasks: {err}"
        );
    }
    assert_eq!(mounted, Some(9), "the least limit a mount starts under");
}
