//! One writer at a time: an exclusive `flock` on `STORE/lock`, taken without
//! waiting. The holder writes its pid into the file for the "busy" message.

use super::{Error, IoContext, Result};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Held while a process writes to the store; released on drop (and by the
/// kernel when the process dies, so a killed run never leaves it stuck).
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
}

impl WriterLock {
    pub fn acquire(store: &Path) -> Result<WriterLock> {
        let path = store.join("lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|error| Error::Lock {
                store: store.to_path_buf(),
                path: path.clone(),
                error,
            })?;
        // SAFETY: flock on an fd we own; no memory is passed.
        let ret = crate::sys::retry(|| unsafe {
            libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)
        });
        if let Err(err) = ret {
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let holder = match pid.trim() {
                    "" => String::new(),
                    p => format!(" (pid {p})"),
                };
                return Err(Error::Busy {
                    store: PathBuf::from(store),
                    holder,
                });
            }
            return Err(err).at(&path);
        }
        file.set_len(0).at(&path)?;
        file.rewind().at(&path)?;
        write!(file, "{}", std::process::id()).at(&path)?;
        Ok(WriterLock { _file: file })
    }
}
