//! One writer at a time: an exclusive `flock` on `STORE/lock`, taken without
//! waiting. The "busy" message names the holders /proc/locks lists (else the
//! pid the last taker wrote into the file).
//! `restore`, which links objects out of the store, holds it shared: gc
//! must not remove an object it is about to link (one only the lost guest
//! linked has no other link), but restores may run side by side. A restore
//! may also start a new copy of an object at the link limit: staged in
//! `tmp/` under a name of its own and renamed into place without replacing
//! (two restores starting one copy: one makes it, both link it), while the
//! lock keeps out what else writes there (unify, gc, which empties `tmp/`).
//! The store directory itself is flocked the same way: `lock` can be
//! deleted while a writer holds it, and the next writer would then lock a
//! new file of that name and run beside the first; the directory cannot go
//! while in use. (`lock` stays the one tools take, as documented.)

use super::{Error, IoContext, Result};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Held while a process writes to the store (or, shared, restores from
/// it); released on drop (and by the kernel when the process dies, so a
/// killed run never leaves it stuck).
#[derive(Debug)]
pub struct WriterLock {
    /// None: a reader's that may not open `lock` ([`WriterLock::acquire_reading`]).
    _file: Option<File>,
    _dir: File,
}

impl WriterLock {
    pub fn acquire(store: &Path) -> Result<WriterLock> {
        let dir = lock_dir(store, libc::LOCK_EX)?;
        let file = lock_file(store, libc::LOCK_EX, || open(store, true))?;
        Ok(WriterLock {
            _file: Some(file),
            _dir: dir,
        })
    }

    /// The lock shared, for a process that only needs the store's objects
    /// to stay: it keeps writers (gc) out, not other sharers. `None` where
    /// the store cannot be written (a read-only copy without a lock file):
    /// nobody can be writing there.
    pub fn acquire_shared(store: &Path) -> Result<Option<WriterLock>> {
        let dir = lock_dir(store, libc::LOCK_SH)?;
        let open_shared = || match open(store, true) {
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => open(store, false),
            r => r,
        };
        match lock_file(store, libc::LOCK_SH, open_shared) {
            Ok(file) => Ok(Some(WriterLock {
                _file: Some(file),
                _dir: dir,
            })),
            Err(Error::Lock { error, .. }) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`WriterLock::acquire_shared`] for a reader of a catalog no writer
    /// may change while it is open. Where there is no `lock` (a copy never
    /// written to), or this user may not open it (read access to the store
    /// alone), the store directory's flock alone: every unifs writer takes
    /// it first.
    pub fn acquire_reading(store: &Path) -> Result<WriterLock> {
        let dir_only = || {
            Ok(WriterLock {
                _file: None,
                _dir: lock_dir(store, libc::LOCK_SH)?,
            })
        };
        match WriterLock::acquire_shared(store) {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => dir_only(),
            Err(Error::Lock { error, .. }) if error.kind() == io::ErrorKind::PermissionDenied => {
                dir_only()
            }
            Err(e) => Err(e),
        }
    }
}

/// The store directory, flocked with `op`.
fn lock_dir(store: &Path, op: libc::c_int) -> Result<File> {
    let dir = File::open(store).at(store)?;
    take(store, dir, op, false)
}

/// `lock` opened by `open_it` and flocked with `op`; opened again if it was
/// deleted or replaced between the open and the flock (the lock taken
/// would be on a file nobody else finds).
fn lock_file(
    store: &Path,
    op: libc::c_int,
    open_it: impl Fn() -> io::Result<File>,
) -> Result<File> {
    let path = store.join("lock");
    for _ in 0..5 {
        let file = open_it().map_err(|error| lock_error(store, error))?;
        let file = take(store, file, op, true)?;
        if is_at(&file, &path) {
            return Ok(file);
        }
    }
    Err(lock_error(
        store,
        io::Error::other("it was deleted or replaced each time it was taken; try again"),
    ))
}

/// Whether `file` is the file at `path` now.
fn is_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

fn open(store: &Path, write: bool) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .create(write)
        .truncate(false)
        .open(store.join("lock"))
}

fn lock_error(store: &Path, error: io::Error) -> Error {
    Error::Lock {
        store: store.to_path_buf(),
        path: store.join("lock"),
        error,
    }
}

/// Takes `op` on the open lock file (or store directory) without waiting,
/// then, in the lock file (`pid`), writes our pid (where the file is
/// writable) for whoever finds the store busy.
fn take(store: &Path, mut file: File, op: libc::c_int, pid: bool) -> Result<File> {
    let path = if pid {
        store.join("lock")
    } else {
        store.to_path_buf()
    };
    // SAFETY: flock on an fd we own; no memory is passed.
    let ret = crate::sys::retry(|| unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) });
    if let Err(err) = ret {
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            // The kernel knows who holds it; the file only who took it last
            // (a sharer that is gone, while another holds it still).
            let holder = match holders(&file) {
                Some(pids) if !pids.is_empty() => {
                    // One bound for all: after a late read, pids alone.
                    let mut args = crate::sys::BoundedReads::new(crate::sys::ARGS_LIMIT);
                    let each: Vec<String> = pids.iter().map(|p| running(p, &mut args)).collect();
                    format!(" ({})", each.join("; "))
                }
                _ => {
                    let mut pid = String::new();
                    let _ = file.read_to_string(&mut pid);
                    match pid.trim() {
                        "" => String::new(),
                        p => format!(" (pid {p})"),
                    }
                }
            };
            return Err(Error::Busy {
                store: PathBuf::from(store),
                holder,
            });
        }
        return Err(err).at(&path);
    }
    if !pid {
        return Ok(file);
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()));
    // A sharer that opened it read-only (a read-only store) cannot; no
    // writer is there to read it.
    if op == libc::LOCK_EX {
        written.at(&path)?;
    }
    Ok(file)
}

/// "pid N: `unifs … store gc --dry-run`": what a holder runs, so that the
/// one who waits knows what for (a reader too holds the lock, shared).
fn running(pid: &str, args: &mut crate::sys::BoundedReads) -> String {
    // Bounded: a holder whose memory-map lock is held (see
    // crate::sys::BoundedReads) would keep this one waiting for good.
    let Some(cmd) = pid.parse().ok().and_then(|p| args.cmdline(p)) else {
        return format!("pid {pid}");
    };
    let mut words: Vec<String> = cmd
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    if let Some(first) = words.first_mut() {
        // The program's name, not where it was run from.
        if let Some((_, name)) = first.rsplit_once('/') {
            *first = name.to_string();
        }
    }
    // One line, whatever its paths hold.
    let mut line: String = words
        .join(" ")
        .chars()
        .map(|c| if crate::sys::is_hidden(c) { '?' } else { c })
        .collect();
    if line.chars().count() > 120 {
        line = line.chars().take(117).collect::<String>() + "...";
    }
    match line.as_str() {
        "" => format!("pid {pid}"),
        l => format!("pid {pid}: `{l}`"),
    }
}

/// The pids holding a flock on `file`. `None` where /proc/locks cannot be
/// read.
fn holders(file: &File) -> Option<Vec<String>> {
    use std::os::unix::fs::MetadataExt;
    let md = file.metadata().ok()?;
    let pids = crate::sys::flock_holders(md.dev(), md.ino())?;
    Some(pids.iter().map(|p| p.to_string()).collect())
}
