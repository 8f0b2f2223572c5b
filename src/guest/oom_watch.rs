//! Samples a guest's count of OOM kills while its process lives, and reads
//! the kernel's log of them ([`KernelLog`]): its end by SIGKILL is the OOM
//! killer's if the log names it as the victim. Where the log cannot be read,
//! if the count rose shortly before, not at any time since it started (one
//! of its processes killed an hour ago, then init killed by hand).
//!
//! A count summed over the guest's groups (v1, which counts a kill in the
//! victim's own group) loses a group's kills with the group: one the guest
//! made itself (a systemd service's, removed as it stops or restarts). So
//! the watch keeps the count of each group it saw ([`Tally`]): a group
//! gone keeps its last one (a kill counted and its group removed between
//! two samples would be lost: on v1 the notice below has it read first).
//! A guest's keeper writes its tally to `RUN_DIR/NAME/oom.json`
//! ([`TallyFile`]), which `status` counts with the groups as they are
//! ([`kept_kills`]), and a start after the guest's reboot carries on.
//! On v1 the kernel's notice of an OOM in the guest's memory group
//! ([`OomNotice`]) has the groups read at once, and again until the count
//! rose ([`Burst`]), so a kill whose group goes right after is mostly read
//! in time.

use super::cgroup::{Cgroup, GroupId, OomCounts, OomKills};
use super::kernel_log::{KernelLog, Killer};
use super::oom_notice::{OomNotice, OOM_CONTROL};
use super::state::{HeldRunDir, OomKilled};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SigSet, SigmaskHow};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::os::fd::AsFd;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the count is read.
const EVERY: Duration = Duration::from_millis(500);

/// How long the count is read again and again after an OOM notice, until
/// it rose: the kernel notices before it picks and kills (and may kill
/// none, a victim already dying), and the guest may remove the victim's
/// group as soon as it died. Notices meanwhile do not extend it: in an
/// OOM storm it ends all the same.
const BURST: Duration = Duration::from_millis(200);

/// Between those reads: short, for the victim's exit and its group's
/// removal may take no more than a few milliseconds.
const BURST_EVERY: Duration = Duration::from_millis(1);

/// How long before the end a rise is still taken for the end's cause: the
/// kernel counts a kill before its victim dies, which may take a while
/// (memory to give back, a request to the overlay daemon to fail).
const WINDOW: Duration = Duration::from_secs(3);

/// How long the log is waited on for a kill the count shows: the kernel
/// logs it after the signal, so its victim may be reaped first.
const LOG_LAG: Duration = Duration::from_secs(1);

type Samples = Arc<Mutex<VecDeque<(Instant, Option<OomKills>)>>>;

type Log = Arc<Mutex<Option<KernelLog>>>;

type Keep = Arc<Mutex<Option<TallyFile>>>;

/// A thread reading [`Cgroup::oom_kills`] every [`EVERY`], and the kernel's
/// log as far as it got (so its records are read before they can be
/// overwritten).
pub struct OomWatch {
    cgroup: Cgroup,
    first: Option<OomKills>,
    samples: Samples,
    log: Log,
    /// Where a keeper's tally is written, for `status`.
    keep: Keep,
    /// Dropped to end the thread: it sleeps on the other end (and on an
    /// OOM notice), so a guest's keeper wakes only to read the count.
    stop: Option<Halt>,
    /// The thread, which hands back its tally.
    thread: Option<JoinHandle<Tally>>,
    /// The tally of the first count, for a watch without a thread.
    tally: Tally,
}

/// The guest's count of OOM kills, a group removed since it was read
/// still counted (see the module's doc).
#[derive(Default, Clone, PartialEq)]
struct Tally {
    /// Each group read with a kill (gone since or not), and its count
    /// when last read: a group's count only rises.
    kills: BTreeMap<GroupId, u64>,
}

impl Tally {
    /// The count now, `counts` read from the groups (None: unread, and
    /// the tally as it was).
    fn count(&mut self, counts: Option<OomCounts>) -> Option<OomKills> {
        let counts = counts?;
        // v2's count of the subtree holds them already: it is read where
        // it says a kill, the sum of each group's own before, so a kill
        // counted between the two reads of one sum was in a group that
        // seemed gone at the next sample, and counted twice.
        if counts.keeps_removed {
            self.kills.clear();
        }
        for &(group, count) in counts.groups.iter().filter(|g| g.1 > 0) {
            let kept = self.kills.entry(group).or_default();
            *kept = count.max(*kept);
        }
        Some(OomKills {
            file: counts.file,
            count: self.kills.values().sum(),
        })
    }

    /// The count as last read.
    fn total(&self) -> u64 {
        self.kills.values().sum()
    }

    /// Each group of `other` too, at the higher of the two counts (a
    /// group's count only rises: a group in both is counted once).
    fn merge(&mut self, other: &Tally) {
        for (&group, &count) in &other.kills {
            let kept = self.kills.entry(group).or_default();
            *kept = count.max(*kept);
        }
    }
}

/// `RUN_DIR/NAME/oom.json`: a keeper's [`Tally`], with the groups of the
/// guest's boots before its last reboot.
#[derive(Serialize, Deserialize)]
struct Kept {
    groups: Vec<KeptGroup>,
}

/// A group of [`Kept`]: its device and inode, and its `oom_kill` count.
#[derive(Serialize, Deserialize)]
struct KeptGroup {
    dev: u64,
    ino: u64,
    oom_kill: u64,
}

const KEPT: &str = "oom.json";

impl Kept {
    fn parse(text: &str) -> Option<Tally> {
        let kept: Kept = serde_json::from_str(text).ok()?;
        let kills = kept.groups.iter().map(|g| ((g.dev, g.ino), g.oom_kill));
        Some(Tally {
            kills: kills.collect(),
        })
    }
}

/// How many of a running guest's processes the OOM killer ended since
/// an operator started it: its groups' counts as they are, with what its
/// keeper wrote in its run dir `dir` (a group removed since it read it,
/// and the boots before a reboot), for `status`.
pub fn kept_kills(dir: Option<&std::path::Path>, cgroup: &Cgroup) -> Option<u64> {
    let mut live = Tally::default();
    live.count(cgroup.oom_counts())?;
    let text = dir.and_then(|d| std::fs::read_to_string(d.join(KEPT)).ok());
    let text = text.unwrap_or_default();
    let mut all = Kept::parse(&text).unwrap_or_default();
    // Merged, not added up: the live groups hold what the file holds of
    // them (v2's top group holds its removed ones as well).
    all.merge(&live);
    Some(all.kills.values().sum())
}

/// A keeper's `oom.json`, written through its run dir each time its
/// [`Tally`] changes (rarely: a kill).
pub struct TallyFile {
    dir: HeldRunDir,
    /// The groups of the boots before a reboot: kept as groups (not a
    /// sum) so that one a failed teardown left, used again, counts once.
    carried: Tally,
    written: Tally,
}

impl TallyFile {
    /// For the keeper of a new init, before it runs: an operator's start
    /// (`after_reboot` false) begins at none, the last run's file removed
    /// first (whatever fails after); a start after the guest's reboot
    /// carries the groups on.
    pub fn begin(dir: &HeldRunDir, after_reboot: bool) -> std::io::Result<TallyFile> {
        if !after_reboot {
            dir.remove(KEPT);
        }
        let dir = dir.try_clone()?;
        let carried = match after_reboot {
            true => dir.read(KEPT).and_then(|t| Kept::parse(&t)),
            false => None,
        };
        Ok(TallyFile {
            dir,
            carried: carried.unwrap_or_default(),
            written: Tally::default(),
        })
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        self.dir.raw_fd()
    }

    /// Writes `tally` (with the groups carried) if it changed since.
    fn keep(&mut self, tally: &Tally) {
        if *tally != self.written && self.write(tally).is_ok() {
            self.written = tally.clone();
        }
    }

    fn write(&self, tally: &Tally) -> std::io::Result<()> {
        let mut all = self.carried.clone();
        all.merge(tally);
        let groups =
            all.kills
                .iter()
                .map(|(&(dev, ino), &oom_kill)| KeptGroup { dev, ino, oom_kill });
        let kept = Kept {
            groups: groups.collect(),
        };
        let json = serde_json::to_vec(&kept).expect("the tally serializes");
        self.dir.write(KEPT, &json)
    }
}

impl OomWatch {
    /// Watches `cgroup`, whose count was `first` when the process began,
    /// and `log`, opened then. Without a thread (a task limit) the log is
    /// read at the end, or the count since the start is used, as before.
    /// A keeper's tally goes to `keep`.
    pub fn start(
        cgroup: Cgroup,
        first: Option<OomCounts>,
        log: Option<KernelLog>,
        keep: Option<TallyFile>,
    ) -> OomWatch {
        let mut tally = Tally::default();
        let first = tally.count(first);
        let samples: Samples = Arc::new(Mutex::new(VecDeque::from([(Instant::now(), first)])));
        let log: Log = Arc::new(Mutex::new(log));
        let keep: Keep = Arc::new(Mutex::new(keep));
        kept(&keep, &tally);
        let (stop, halt, no_wake) = Halt::new();
        // Without the eventfd that wakes it, the thread would poll the
        // notice alone and see its end at the next tick (a verdict waiting
        // up to half a second for it): no notice then, the channel waited on.
        let keeper = keep.lock().is_ok_and(|k| k.is_some());
        let notice = match no_wake {
            None => notice(&cgroup, keeper),
            Some(e) => {
                let v1 = cgroup.groups.iter().find(|g| g.join(OOM_CONTROL).exists());
                if v1.is_some() {
                    unnoticed(keeper, &format!("no eventfd to wake the OOM watch ({e})"));
                }
                None
            }
        };
        let (c, s, l, k) = (cgroup.clone(), samples.clone(), log.clone(), keep.clone());
        let read_at = first.as_ref().map(|f| f.count);
        // Its signals are the keeper's and `run`'s to take (they pass them
        // on to init): the thread is made with all of them blocked.
        let old = SigSet::all().thread_swap_mask(SigmaskHow::SIG_BLOCK).ok();
        let t = tally.clone();
        let thread = std::thread::Builder::new()
            .name("oom-watch".into())
            .spawn(move || sample(&c, &s, &l, &k, t, read_at, &halt, notice.as_ref()))
            .ok();
        if let Some(old) = old {
            let _ = old.thread_set_mask();
        }
        OomWatch {
            cgroup,
            first,
            samples,
            log,
            keep,
            stop: Some(stop),
            thread,
            tally,
        }
    }

    /// Once the process ended by `signal` ("KILL", …): whether the OOM
    /// killer of the guest's memory limit, or the host's, ended it. `pids`:
    /// the processes whose kill ended it (None: one not known here), as
    /// under unifs's reaper, whose own end (the OOM killer may pick it: it
    /// is the guest's PID 1, the namespace goes with it) or its command's
    /// (its status then passed on) ends the guest's command. By the log
    /// where it can tell: it named one of them (and which killer), and the
    /// guest's count rose since the start (the kernel counts the host's
    /// kills in the victim's group too). Else by the count: it rose in the
    /// [`WINDOW`] before the end, which a SIGKILL from anyone else then
    /// cannot be told from.
    pub fn verdict(
        mut self,
        pids: &[Option<i32>],
        signal: Option<&str>,
        limit: Option<u64>,
    ) -> Option<OomKilled> {
        // The thread is ended first: a reboot's start clones after this,
        // which a thread holding a lock would deadlock.
        drop(self.stop.take());
        let joined = self.thread.take().and_then(|t| t.join().ok());
        let mut tally = joined.unwrap_or_else(|| std::mem::take(&mut self.tally));
        let now = tally.count(self.cgroup.oom_counts());
        kept(&self.keep, &tally);
        let before = self.before_window();
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let named = match log.as_mut() {
            Some(log) if signal == Some("KILL") && !pids.is_empty() => {
                let rose =
                    |b: Option<OomKills>| now.is_some_and(|n| n.count > b.map_or(0, |b| b.count));
                // A loss further back than the window is no longer this
                // end's (the count's window would not take it either).
                log.forget_lost_before(Instant::now().checked_sub(WINDOW));
                named(log, pids, rose(before))
            }
            _ => None,
        };
        match named {
            Some(Some(Killer::Limit)) => OomKilled::of(signal, self.first, now, limit),
            Some(Some(Killer::Host)) => {
                OomKilled::of(signal, self.first, now, limit).map(OomKilled::by_the_host)
            }
            Some(None) => None,
            None => OomKilled::of(signal, before, now, limit),
        }
    }

    /// The count as it was [`WINDOW`] before now (or when the process
    /// began, if sooner).
    fn before_window(&self) -> Option<OomKills> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let before = Instant::now().checked_sub(WINDOW);
        let old = samples
            .iter()
            .rev()
            .find(|(at, _)| before.is_some_and(|b| *at <= b));
        old.or(samples.front()).and_then(|(_, count)| *count)
    }
}

/// Which killer `log` names one of `pids` the victim of (None: it cannot
/// tell). A kill the count shows (`rose`) that it does not name yet is
/// waited for, up to [`LOG_LAG`]: it may be another process's; if the log
/// then names no victim at all, it cannot tell.
fn named(log: &mut KernelLog, pids: &[Option<i32>], rose: bool) -> Option<Option<Killer>> {
    log.read_new();
    let deadline = Instant::now() + LOG_LAG;
    while rose && named_of(log, pids) == Some(None) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        log.read_new();
    }
    // A kill counted that no record named, nor any other: a kernel whose
    // lines read otherwise (before 5.x: "Kill process"), so it cannot tell.
    if rose && !log.named_any() {
        return None;
    }
    named_of(log, pids)
}

/// [`KernelLog::named`] of the first of `pids` it names a victim; None
/// (it cannot tell) if it names none and one of them is not known.
fn named_of(log: &KernelLog, pids: &[Option<i32>]) -> Option<Option<Killer>> {
    let said: Vec<_> = pids.iter().map(|p| p.and_then(|p| log.named(p))).collect();
    match said.iter().find_map(|s| s.flatten()) {
        Some(killer) => Some(Some(killer)),
        None if said.iter().any(Option::is_none) => None,
        None => Some(None),
    }
}

/// The thread's loop: a sample every [`EVERY`], those older than the
/// newest one past [`WINDOW`] dropped; the log read on where the count
/// rose since it was last read (`read_at`, at first the count when the
/// process began), and once more at the next sample, else skipped (see
/// [`KernelLog::skip`]). The kernel logs a kill after it counts it: a
/// read right after the count rose may come before the record, which the
/// next sample's skip would then pass over unread (and the log would say
/// "not the OOM killer" of its victim); the read once more gives it a
/// sample's time to be logged. An OOM `notice` has the count read at once
/// and for a [`BURST`] after ([`Burst`]), into the tally alone: the
/// samples and the log are the ticks' (the read once more needs its time).
#[allow(clippy::too_many_arguments)]
fn sample(
    cgroup: &Cgroup,
    samples: &Mutex<VecDeque<(Instant, Option<OomKills>)>>,
    log: &Log,
    keep: &Keep,
    mut tally: Tally,
    mut read_at: Option<u64>,
    halt: &Halted,
    notice: Option<&OomNotice>,
) -> Tally {
    // The count equalled `read_at` at the last read too.
    let mut settled = true;
    let mut tick = Instant::now() + EVERY;
    let mut burst = Burst::default();
    loop {
        let wait = match burst.running() {
            true => BURST_EVERY,
            false => tick.saturating_duration_since(Instant::now()),
        };
        match halt.woken(notice.filter(|_| burst.listens()), wait) {
            Woken::Stop => break,
            Woken::Oom => burst.noticed(Instant::now(), tally.total()),
            Woken::Time => {}
        }
        if burst.running() {
            let now = tally.count(cgroup.oom_counts()).map(|c| c.count);
            kept(keep, &tally);
            if burst.read(Instant::now(), now) {
                // Those that came during it were of its OOM (or, after
                // one without a kill, ignored until the tick).
                let _ = notice.is_some_and(|n| n.take());
            }
        }
        if Instant::now() < tick {
            continue;
        }
        // Notices ignored since a burst without a kill: dropped before
        // this read, which counts a kill of theirs already made.
        if !burst.listens() {
            let _ = notice.is_some_and(|n| n.take());
        }
        burst.ticked();
        let last = Instant::now();
        tick = last + EVERY;
        let count = tally.count(cgroup.oom_counts());
        kept(keep, &tally);
        let now = count.as_ref().map(|c| c.count);
        {
            let mut s = samples.lock().unwrap_or_else(|e| e.into_inner());
            s.push_back((last, count));
            while s.len() > 1 && s.get(1).is_some_and(|(at, _)| at.elapsed() >= WINDOW) {
                s.pop_front();
            }
        }
        if let Some(log) = log.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let rose = now != read_at;
            match settled && !rose {
                true => {
                    stop_once_before_skip();
                    log.skip(|| tally.count(cgroup.oom_counts()).map(|c| c.count) != now)
                }
                // The tests' UNIFS_TEST_KMSG_LATE: the read right after a
                // rise finds nothing, as when it comes before the record.
                false if rose && crate::sys::test_hook!("UNIFS_TEST_KMSG_LATE").is_some() => {}
                false => log.read_new(),
            }
            settled = !rose;
            read_at = now;
        }
    }
    tally
}

/// The reads after an OOM notice, every [`BURST_EVERY`] for at most
/// [`BURST`] or until the count rose: one at a time (the notices during
/// it neither extend it nor wake the thread); one that ends without a rise
/// (OOMs that kill none, their victims already dying) has the notices
/// ignored until the next tick, so that a storm of them costs a burst a
/// tick at most.
#[derive(Default)]
struct Burst {
    /// Until when, and the count it began at.
    until: Option<(Instant, u64)>,
    /// Notices ignored until the next tick.
    deaf: bool,
}

impl Burst {
    fn running(&self) -> bool {
        self.until.is_some()
    }

    /// Whether a notice is waited for (none in a burst, or deaf).
    fn listens(&self) -> bool {
        !self.running() && !self.deaf
    }

    /// A notice at `now`, the count then `count`: a burst begins, unless
    /// one runs.
    fn noticed(&mut self, now: Instant, count: u64) {
        self.until.get_or_insert((now + BURST, count));
    }

    /// The count read at `now` (None: unread, the guest's groups gone):
    /// whether that ended the burst.
    fn read(&mut self, now: Instant, count: Option<u64>) -> bool {
        let Some((until, at)) = self.until else {
            return false;
        };
        let rose = count.is_some_and(|c| c != at);
        if count.is_some() && !rose && now < until {
            return false;
        }
        self.until = None;
        self.deaf = !rose;
        true
    }

    fn ticked(&mut self) {
        self.deaf = false;
    }
}

/// The notice of an OOM in `cgroup`'s v1 memory group, if it has one;
/// where it cannot be registered, the count is read at the ticks alone,
/// said once (a warning in a keeper, `keeper`; `run`'s and `exec`'s is
/// debug) — and not at all where the group went meanwhile.
fn notice(cgroup: &Cgroup, keeper: bool) -> Option<OomNotice> {
    let (group, registered) = cgroup
        .groups
        .iter()
        .find_map(|g| Some((g, OomNotice::register(g)?)))?;
    let e = match registered {
        Ok(notice) => return Some(notice),
        Err(e) => e,
    };
    // EINVAL or ENOENT (the error names the file: its kind is kept).
    use std::io::ErrorKind::{InvalidInput, NotFound};
    let gone = matches!(e.kind(), InvalidInput | NotFound);
    if gone && !group.exists() {
        return None;
    }
    let why = format!("the kernel's notice of an OOM could not be registered ({e})");
    unnoticed(keeper, &why);
    None
}

/// Says, once a process, `why` the count is read at the ticks alone:
/// a warning in a keeper (`keeper`), debug in `run` and `exec`.
fn unnoticed(keeper: bool, why: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let said = format!(
            "{why}: the count of OOM kills is read every {EVERY:?}, and misses a kill in a group the guest removes sooner"
        );
        match keeper {
            true => tracing::warn!("{said}"),
            false => tracing::debug!("{said}"),
        }
    });
}

/// `wait` as poll's timeout, rounded up to the millisecond: rounded
/// down, a wait under 1 ms would poll with 0 and spin until the tick.
fn poll_timeout(wait: Duration) -> PollTimeout {
    PollTimeout::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(PollTimeout::MAX)
}

/// Ends the thread when dropped: its channel closed, then its poll woken
/// (without the eventfd, it sees the channel closed at its next tick).
struct Halt {
    stop: Option<mpsc::Sender<()>>,
    wake: Option<Arc<EventFd>>,
}

/// The thread's end of a [`Halt`].
struct Halted {
    halt: mpsc::Receiver<()>,
    wake: Option<Arc<EventFd>>,
}

enum Woken {
    Stop,
    Oom,
    Time,
}

impl Halt {
    /// The two ends, and why there is no eventfd to wake the thread.
    fn new() -> (Halt, Halted, Option<std::io::Error>) {
        let (stop, halt) = mpsc::channel();
        // Close-on-exec: a process started meanwhile does not hold it.
        let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
        let made = EventFd::from_flags(flags).map_err(std::io::Error::from);
        // The tests' UNIFS_TEST_NO_WAKE_EVENTFD (review_s52_oomlog): none,
        // as where the process is out of descriptors (no real way to run
        // a keeper out of them there alone).
        let made = match crate::sys::test_hook!("UNIFS_TEST_NO_WAKE_EVENTFD") {
            Some(_) => Err(std::io::Error::from_raw_os_error(libc::EMFILE)),
            None => made,
        };
        let (wake, no_wake) = match made {
            Ok(wake) => (Some(Arc::new(wake)), None),
            Err(e) => (None, Some(e)),
        };
        let stop = Some(stop);
        (
            Halt {
                stop,
                wake: wake.clone(),
            },
            Halted { halt, wake },
            no_wake,
        )
    }
}

impl Drop for Halt {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(wake) = &self.wake {
            let _ = wake.write(1);
        }
    }
}

impl Halted {
    /// Waits up to `wait` for the [`Halt`] to drop or for a `notice`.
    fn woken(&self, notice: Option<&OomNotice>, wait: Duration) -> Woken {
        let wake = self.wake.as_deref().map(|w| w.as_fd());
        let fds = wake.into_iter().chain(notice.map(|n| n.fd()));
        let mut fds: Vec<PollFd> = fds.map(|fd| PollFd::new(fd, PollFlags::POLLIN)).collect();
        let timeout = poll_timeout(wait);
        if fds.is_empty() || nix::poll::poll(&mut fds, timeout).is_err() {
            return match self.halt.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => Woken::Time,
                _ => Woken::Stop,
            };
        }
        if let Err(TryRecvError::Disconnected) | Ok(()) = self.halt.try_recv() {
            return Woken::Stop;
        }
        match notice.is_some_and(|n| n.take()) {
            true => Woken::Oom,
            false => Woken::Time,
        }
    }
}

/// Writes `tally` to the keeper's file, if there is one.
fn kept(keep: &Keep, tally: &Tally) {
    if let Some(file) = keep.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        file.keep(tally);
    }
}

/// The tests' window on a kill counted while the log is skipped
/// (review_s46_oom2): the first skip stops the process (SIGSTOP) there, the
/// count read, the log not yet skipped; once only, so that the test can
/// land one such kill and see the watch tell the later ones.
fn stop_once_before_skip() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| crate::sys::test_stop!("UNIFS_TEST_KMSG_SKIP_STOP"));
}

#[cfg(test)]
mod tests {
    use super::super::state::RunDir;
    use super::*;

    fn counts(groups: &[(u64, u64)], keeps_removed: bool) -> Option<OomCounts> {
        Some(OomCounts {
            file: "memory.events",
            groups: groups.iter().map(|&(ino, c)| ((1, ino), c)).collect(),
            keeps_removed,
        })
    }

    /// A group gone keeps its count; v2's count of the subtree, read once
    /// it says a kill (the sum of each group's own before: here a kill
    /// between the top's read, 0, and its group's, 1), is taken as it is.
    #[test]
    fn s47_a_tally_keeps_a_group_gone_but_not_where_the_kernel_does() {
        let mut tally = Tally::default();
        assert_eq!(
            tally.count(counts(&[(1, 0), (2, 0)], false)).unwrap().count,
            0
        );
        assert_eq!(
            tally.count(counts(&[(1, 0), (2, 1)], false)).unwrap().count,
            1
        );
        assert_eq!(tally.count(counts(&[(1, 1)], true)).unwrap().count, 1);
        let mut v1 = Tally::default();
        assert_eq!(v1.count(counts(&[(1, 0), (2, 1)], false)).unwrap().count, 1);
        assert_eq!(v1.count(counts(&[(1, 0)], false)).unwrap().count, 1);
        assert_eq!(v1.count(counts(&[(1, 0), (3, 0)], false)).unwrap().count, 1);
    }

    /// A poll's timeout is never rounded down to 0: a wait under 1 ms
    /// polled with 0 and spun until the tick.
    #[test]
    fn s51_a_wait_under_a_millisecond_polls_for_one() {
        let ms = |wait| i32::from(poll_timeout(wait));
        assert_eq!(ms(Duration::from_micros(1)), 1);
        assert_eq!(ms(Duration::from_micros(999)), 1);
        assert_eq!(ms(Duration::from_micros(1001)), 2);
        assert_eq!(ms(Duration::ZERO), 0);
        assert_eq!(ms(Duration::from_millis(500)), 500);
    }

    /// A notice during a burst does not extend it; one that ends without
    /// a rise has notices ignored until the tick; a rise, or the groups
    /// gone, ends it at once.
    #[test]
    fn s51_a_burst_is_not_extended_and_one_without_a_kill_goes_deaf() {
        let t0 = Instant::now();
        let mut b = Burst::default();
        assert!(b.listens());
        b.noticed(t0, 4);
        assert!(b.running() && !b.listens());
        b.noticed(t0 + BURST / 2, 4);
        assert!(!b.read(t0 + BURST / 2, Some(4)));
        assert!(b.read(t0 + BURST, Some(4)), "a second notice extended it");
        assert!(!b.running() && !b.listens());
        b.ticked();
        assert!(b.listens());
        b.noticed(t0, 4);
        assert!(b.read(t0, Some(5)));
        assert!(b.listens(), "a burst that saw its kill goes deaf");
        b.noticed(t0, 5);
        assert!(b.read(t0, None), "the groups gone do not end it");
        assert!(!b.running());
    }

    /// After a reboot the file carries the earlier boot's groups on, each
    /// once: one the new boot uses again (its teardown failed) counts at
    /// its higher count, not twice; an operator's start begins at none.
    #[test]
    fn s50_a_reboot_carries_groups_on_and_counts_one_used_again_once() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("g")).unwrap();
        let dir = HeldRunDir::open(RunDir::new(tmp.path(), "g")).unwrap();
        let read = || Kept::parse(&dir.read(KEPT).unwrap()).unwrap().kills;
        let mut first = TallyFile::begin(&dir, false).unwrap();
        let mut tally = Tally::default();
        tally.count(counts(&[(1, 1), (2, 2)], false));
        first.keep(&tally);
        let mut second = TallyFile::begin(&dir, true).unwrap();
        let mut tally = Tally::default();
        tally.count(counts(&[(2, 3), (4, 1)], false));
        second.keep(&tally);
        let kills = read();
        assert_eq!(kills.values().sum::<u64>(), 5, "{kills:?}");
        assert_eq!(kills.get(&(1, 2)), Some(&3));
        TallyFile::begin(&dir, false).unwrap();
        assert!(dir.read(KEPT).is_none());
    }
}
