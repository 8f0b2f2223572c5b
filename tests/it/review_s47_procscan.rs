//! Review of session 46's looks through /proc (rundir2, rundirrev2): reads
//! of another process's /proc/PID/cmdline wait for its memory-map lock, and
//! a process whose lock is held on a FUSE mount that does not answer kept
//! them waiting for good.

use crate::common::{skip, unifs_bin};
use crate::fs::harness::{daemon_pid, wait_until, World};
use crate::guest::harness::KillOnDrop;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A process (python3) with its memory-map lock held and asked for, on a
/// FUSE mount whose daemon is stopped: one thread reads, through
/// /proc/self/mem, a page of a file of the mount not read yet (a remote
/// access of memory faults with the lock held and does not let go of it
/// while the FUSE request waits), the main thread then maps memory (which
/// waits for the lock as a writer, and every later reader queues behind
/// it). Before, it holds an exclusive flock on `lock` (a store).
pub(crate) const STUCK: &str = r#"
import ctypes, fcntl, mmap, os, sys, threading, time
big, lock, ready, go = sys.argv[1:5]
held = os.open(lock, os.O_RDONLY)
fcntl.flock(held, fcntl.LOCK_EX)
f = open(big, 'rb')
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
at = libc.mmap(None, 1 << 20, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
open(ready, 'w').write('ready')
while not os.path.exists(go):
    time.sleep(0.02)
def peek():
    mem = os.open('/proc/self/mem', os.O_RDONLY)
    os.pread(mem, 1, at + 900000)
threading.Thread(target=peek, daemon=True).start()
time.sleep(0.5)
libc.mmap(None, 4096, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
time.sleep(600)
"#;

/// Sends SIGCONT to the stopped daemon on drop, whatever the test did.
pub(crate) struct Continue(i32);

impl Continue {
    /// Stops daemon `pid` (SIGSTOP) until the guard is dropped.
    pub(crate) fn stop(pid: i32) -> Continue {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
        Continue(pid)
    }
}

/// A MiB whose pages differ, for a file none of whose pages was read.
pub(crate) fn big() -> Vec<u8> {
    (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect()
}

impl Drop for Continue {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

/// The state letter of thread `tid` of `pid` (its /proc stat).
pub(crate) fn thread_state(pid: u32, tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// `f` run in a thread of its own, its answer waited for 30 s at most (a
/// thread still waiting then is left: the wait it is in yields to SIGKILL,
/// so the test process still ends).
pub(crate) fn within_30s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30)).ok()
}

/// A process of [`STUCK`] on a file of a mount of `w` (dirs `NAME-g`,
/// `NAME-mp`), holding an flock on `w`'s store: stuck (its main thread in
/// D) once made. Dropped: the daemon goes on, the process is killed, the
/// mount unmounted.
pub(crate) struct Stuck {
    _cont: Continue,
    _proc: KillOnDrop,
    pub(crate) mount: crate::fs::harness::Mount,
    pub(crate) pid: u32,
}

impl Stuck {
    /// None (skipped) without python3.
    pub(crate) fn new(test: &str, w: &World, name: &str) -> Option<Stuck> {
        let python = Command::new("python3")
            .args(["-c", "import ctypes"])
            .output();
        if !python.is_ok_and(|o| o.status.success()) {
            skip(test, "python3 is not installed");
            return None;
        }
        let g = w.dir(&format!("{name}-g"));
        // Bytes of a file, none read through the mount before the peek.
        std::fs::write(g.join("big"), big()).unwrap();
        // Without passthrough: the page is asked of the daemon.
        let m = w.mount(&g, &format!("{name}-mp"), &["nopassthrough"]);
        let (ready, go) = (w.tmp.path().join("ready"), w.tmp.path().join("go"));
        let stuck = Command::new("python3")
            .arg("-c")
            .arg(STUCK)
            .arg(m.path("big"))
            .arg(&w.store)
            .arg(&ready)
            .arg(&go)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = stuck.id();
        let stuck = KillOnDrop(Some(stuck));
        assert!(wait_until(Duration::from_secs(30), || ready.exists()));
        let cont = Continue::stop(m.pid() as i32);
        std::fs::write(&go, "").unwrap();
        // Its main thread asleep in the kernel (D): its mmap waits for the lock.
        assert!(
            wait_until(Duration::from_secs(30), || thread_state(pid, pid)
                == Some('D')),
            "the stuck process never got stuck: {:?}",
            thread_state(pid, pid)
        );
        Some(Stuck {
            _cont: cont,
            _proc: stuck,
            mount: m,
            pid,
        })
    }
}

#[test]
fn s47_a_process_whose_memory_map_lock_waits_on_a_stalled_mount_hangs_no_look() {
    let test = "s47_a_process_whose_memory_map_lock_waits_on_a_stalled_mount_hangs_no_look";
    let w = World::new();
    let Some(stuck) = Stuck::new(test, &w, "s47-procscan") else {
        return;
    };
    let (m, pid) = (&stuck.mount, stuck.pid);
    let daemon = m.pid() as i32;

    // The store's "busy" message names its holder: it ends.
    let store = w.store.clone();
    let busy = within_30s(move || {
        let mut gc = Command::new(unifs_bin());
        gc.arg("--store").arg(&store).args(["store", "gc"]);
        let mut gc = KillOnDrop(Some(gc.stderr(Stdio::piped()).spawn().unwrap()));
        let deadline = Instant::now() + Duration::from_secs(25);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = gc.0.as_mut().unwrap().try_wait() {
                let out = gc.0.take().unwrap().wait_with_output().unwrap();
                return Some(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    });
    let busy = busy.flatten();
    assert!(
        busy.as_deref()
            .is_some_and(|b| b.contains("is busy") && b.contains(&format!("pid {pid}"))),
        "store gc did not end within 25 s (or said something else): {busy:?}"
    );

    // The test harness's daemon_pid looks through every process (of one
    // not mounted: the whole list, the stuck one's too).
    let mp = m.dir.clone();
    assert_eq!(within_30s(move || daemon_pid(&mp)), Some(Some(daemon)));
    let none = w.tmp.path().join("s47-procscan-not-mounted");
    let found = within_30s(move || daemon_pid(&none));
    assert_eq!(found, Some(None), "daemon_pid did not answer within 30 s");
}
