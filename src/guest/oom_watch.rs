//! Samples a guest's count of OOM kills while its process lives: its end
//! by SIGKILL is the OOM killer's only if the count rose shortly before,
//! not at any time since it started (one of its processes killed an hour
//! ago, then init killed by hand).

use super::cgroup::{Cgroup, OomKills};
use nix::sys::signal::{SigSet, SigmaskHow};
use std::collections::VecDeque;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the count is read.
const EVERY: Duration = Duration::from_millis(500);

/// How long before the end a rise is still taken for the end's cause: the
/// kernel counts a kill before its victim dies, which may take a while
/// (memory to give back, a request to the overlay daemon to fail).
const WINDOW: Duration = Duration::from_secs(3);

type Samples = Arc<Mutex<VecDeque<(Instant, Option<OomKills>)>>>;

/// A thread reading [`Cgroup::oom_kills`] every [`EVERY`].
pub struct OomWatch {
    samples: Samples,
    /// Dropped to end the thread: it sleeps on the other end, so a
    /// guest's keeper wakes only to read the count.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl OomWatch {
    /// Watches `cgroup`, whose count was `first` when the process began.
    /// Without a thread (a task limit) the count since then is used, as
    /// before.
    pub fn start(cgroup: Cgroup, first: Option<OomKills>) -> OomWatch {
        let samples: Samples = Arc::new(Mutex::new(VecDeque::from([(Instant::now(), first)])));
        let (stop, halt) = mpsc::channel();
        let s = samples.clone();
        // Its signals are the keeper's and `run`'s to take (they pass them
        // on to init): the thread is made with all of them blocked.
        let old = SigSet::all().thread_swap_mask(SigmaskHow::SIG_BLOCK).ok();
        let thread = std::thread::Builder::new()
            .name("oom-watch".into())
            .spawn(move || sample(&cgroup, &s, &halt))
            .ok();
        if let Some(old) = old {
            let _ = old.thread_set_mask();
        }
        OomWatch {
            samples,
            stop: Some(stop),
            thread,
        }
    }

    /// Once the process ended: the count as it was [`WINDOW`] before (or
    /// when it began, if sooner). The thread is ended first: a reboot's
    /// start clones after this, which a thread holding a lock would
    /// deadlock.
    pub fn finish(mut self) -> Option<OomKills> {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let before = Instant::now().checked_sub(WINDOW);
        let old = samples
            .iter()
            .rev()
            .find(|(at, _)| before.is_some_and(|b| *at <= b));
        old.or(samples.front()).and_then(|(_, count)| *count)
    }
}

/// The thread's loop: a sample every [`EVERY`], those older than the
/// newest one past [`WINDOW`] dropped.
fn sample(
    cgroup: &Cgroup,
    samples: &Mutex<VecDeque<(Instant, Option<OomKills>)>>,
    halt: &mpsc::Receiver<()>,
) {
    while let Err(RecvTimeoutError::Timeout) = halt.recv_timeout(EVERY) {
        let last = Instant::now();
        let count = cgroup.oom_kills();
        let mut s = samples.lock().unwrap_or_else(|e| e.into_inner());
        s.push_back((last, count));
        while s.len() > 1 && s.get(1).is_some_and(|(at, _)| at.elapsed() >= WINDOW) {
            s.pop_front();
        }
    }
}
