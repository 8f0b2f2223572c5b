//! Closing replaced files off the main loop. The last close of an unlinked
//! inode frees its blocks, and on filesystems mounted with `discard` that
//! waits for the device (about a millisecond a file here). A few threads
//! close them in parallel so the device sees many discards at once.

use std::os::fd::OwnedFd;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

/// Files in flight, bounded so unify never holds many fds (the open-file
/// limit can be low).
const QUEUE: usize = 256;
const THREADS: usize = 8;

/// The most fds a `Closer` holds at once.
pub const IN_FLIGHT: usize = QUEUE + THREADS;

pub struct Closer {
    tx: Option<SyncSender<OwnedFd>>,
    threads: Vec<JoinHandle<()>>,
}

impl Closer {
    pub fn new() -> Closer {
        let (tx, rx) = sync_channel::<OwnedFd>(QUEUE);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        // Those a limit on tasks (pids.max) lets start: `thread::spawn`
        // would panic at the first it refuses.
        let threads: Vec<_> = (0..THREADS)
            .map_while(|_| {
                let rx = rx.clone();
                let closing = move || loop {
                    let next = rx.lock().map(|r| r.recv());
                    match next {
                        Ok(Ok(fd)) => drop(fd),
                        _ => return,
                    }
                };
                std::thread::Builder::new().spawn(closing).ok()
            })
            .collect();
        Closer {
            // None started: files are closed where they are let go of (a
            // queue no thread empties would fill and block).
            tx: (!threads.is_empty()).then_some(tx),
            threads,
        }
    }

    /// Closes `fd` soon, on another thread (or here if they are gone).
    pub fn close(&self, fd: OwnedFd) {
        if let Some(tx) = &self.tx {
            if let Err(e) = tx.send(fd) {
                drop(e.0);
            }
        }
    }
}

impl Default for Closer {
    fn default() -> Self {
        Closer::new()
    }
}

impl Drop for Closer {
    /// Waits until every queued file is closed.
    fn drop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
