//! Reads of another process's /proc/PID/cmdline (or environ) that cannot
//! hold the reader for good. Those two read the process's memory, under its
//! memory-map lock (mmap_lock), and the wait for that lock is only broken
//! by SIGKILL. A process whose lock is held by something that waits on a
//! FUSE mount that does not answer (a read of its /proc/PID/mem, a debugger
//! reading a page of a file mapped from that mount) and that then asks for
//! the lock itself (any mmap, brk or munmap of its own) leaves every later
//! reader queued behind it for as long as the mount stalls. (comm, stat,
//! status, the fd links, fdinfo and mountinfo take no such lock: tried on
//! Linux 6.18 with such a process, they answer; maps and smaps_rollup too
//! wait, as cmdline and environ.)

use std::fs::File;
use std::io::Read;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

/// How long one read is waited for: a read that does not wait for a lock
/// takes microseconds, even on a loaded machine well under this.
pub const ARGS_LIMIT: Duration = Duration::from_secs(1);

/// A worker's ends: files asked to read, what each read gave.
type Worker = (Sender<File>, Receiver<std::io::Result<Vec<u8>>>);

/// Reads files in a worker thread, each waited for at most `limit`. A read
/// not done by then is left to its worker, which ends when the read does
/// (or with this process: the lock's wait yields to the SIGKILL an exit
/// sends every thread). After one late read the later ones are not tried:
/// a guest with thousands of stuck processes would otherwise take a limit
/// each, and leave a thread and an fd each, for as long as they stay stuck.
pub struct BoundedReads {
    limit: Duration,
    worker: Option<Worker>,
    gave_up: bool,
}

impl BoundedReads {
    pub fn new(limit: Duration) -> BoundedReads {
        BoundedReads {
            limit,
            worker: None,
            gave_up: false,
        }
    }

    /// Whether a read was late: the reads since were not tried.
    pub fn gave_up(&self) -> bool {
        self.gave_up
    }

    /// All of `file`, or why not; None when not within the limit, or not
    /// tried after a late one ([`BoundedReads::gave_up`]).
    pub fn read(&mut self, file: File) -> Option<std::io::Result<Vec<u8>>> {
        if self.gave_up {
            return None;
        }
        let (ask, told) = self.worker.get_or_insert_with(spawn_worker);
        let told = match ask.send(file) {
            Ok(()) => told.recv_timeout(self.limit),
            Err(_) => Err(mpsc::RecvTimeoutError::Disconnected),
        };
        match told {
            Ok(bytes) => Some(bytes),
            Err(_) => {
                // Dropped: the worker ends once its read returns.
                self.worker = None;
                self.gave_up = true;
                None
            }
        }
    }

    /// The NUL-separated arguments of process `pid`, as [`cmdline_bounded`]
    /// reads them, with this one's worker and limit.
    pub fn cmdline(&mut self, pid: i32) -> Option<Vec<u8>> {
        let file = File::open(format!("/proc/{pid}/cmdline")).ok()?;
        self.read(file)?.ok()
    }
}

fn spawn_worker() -> Worker {
    let (ask, asked) = mpsc::channel::<File>();
    let (tell, told) = mpsc::channel();
    let worker = std::thread::Builder::new()
        .name("proc-args".into())
        .spawn(move || {
            for mut file in asked {
                let mut bytes = Vec::new();
                let read = file.read_to_end(&mut bytes).map(|_| bytes);
                if tell.send(read).is_err() {
                    break;
                }
            }
        });
    if worker.is_err() {
        // No thread: every read is then "not within the limit" (the
        // receiver's sender is gone), never one that may hang.
        let (_, told) = mpsc::channel();
        return (mpsc::channel().0, told);
    }
    (ask, told)
}

/// The NUL-separated arguments of process `pid`, read within [`ARGS_LIMIT`]:
/// None when they cannot be read or did not come in time.
pub fn cmdline_bounded(pid: i32) -> Option<Vec<u8>> {
    BoundedReads::new(ARGS_LIMIT).cmdline(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_whole_and_again_with_the_same_worker() {
        let mut reads = BoundedReads::new(ARGS_LIMIT);
        let mut read = || reads.read(File::open("/proc/self/cmdline").unwrap());
        let own = read().unwrap().unwrap();
        assert!(!own.is_empty());
        assert_eq!(read().unwrap().unwrap(), own);
    }

    #[test]
    fn a_read_that_waits_past_the_limit_is_none_and_the_next_is_not_tried() {
        // A FIFO with no writer: its read waits for good, as a cmdline
        // behind a held memory-map lock does.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        use std::os::unix::fs::OpenOptionsExt;
        let waits = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        // Blocking again, with a writer that never writes: read waits.
        let _writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        nix::fcntl::fcntl(
            &waits,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        )
        .unwrap();
        let mut reads = BoundedReads::new(Duration::from_millis(200));
        assert!(reads.read(waits).is_none());
        assert!(reads.gave_up());
        // Not tried: the next file may be as stuck.
        assert!(reads.read(File::open("/proc/self/comm").unwrap()).is_none());
        let mut fresh = BoundedReads::new(Duration::from_millis(200));
        let next = fresh.read(File::open("/proc/self/comm").unwrap());
        assert!(next.unwrap().is_ok_and(|c| !c.is_empty()));
    }
}
