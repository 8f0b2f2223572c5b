//! `unifs run`'s stdin, stdout and stderr that are a file or a device of
//! the host's (`> out`, `< /dev/null`): the guest gets a pipe instead,
//! which we copy through, as `guest exec` does. Given the host's file,
//! guest root (keeping `fowner`) reached it through `/proc/self/fd/1` and
//! could truncate it or make it set-uid root. A terminal becomes a pty of
//! the guest's own ([`super::console`]); a pipe or a socket is passed as it
//! is (what the guest can do to one acts on no file of the host's, and
//! `unifs run … | head` ends the command by SIGPIPE as before).

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// The fs type of an anonymous pipe (`PIPEFS_MAGIC`).
const PIPEFS: i64 = 0x5049_5045;

/// How long the copies of a run's output may take to reach their end once
/// its guest is gone (every writer then is).
const DRAIN: Duration = Duration::from_secs(10);

/// The fds swapped for pipes, until [`Swapped::restore`].
pub struct Swapped {
    /// (our fd 0 to 2, what it was, our end of its pipe)
    fds: Vec<(i32, OwnedFd, OwnedFd)>,
    /// (our fd 1 or 2, what it was): one open file with an fd of `fds`
    /// (`> out 2>&1`), given that fd's pipe.
    joined: Vec<(i32, OwnedFd)>,
    /// Stdin that is a regular file: where it was, a reader's end of its
    /// pipe of ours, to count what the guest left in it (see
    /// [`Copies::finish`]), and whether its open file is stdout's or
    /// stderr's too (see [`StdinFile::advance`]).
    stdin_file: Option<StdinFile>,
}

/// Stdin that is a regular file, copied with `pread` (see [`Input::set_back`]).
struct StdinFile {
    /// Where its offset was.
    at: u64,
    /// A reader's end of the guest's pipe.
    reader: OwnedFd,
    /// Its open file is stdout's or stderr's too (`<> f >&0`): the copy
    /// moves the offset on past what it read, as a `read` would, so that
    /// the command's output lands after its input, as the command's own
    /// writes would, not over it (`unifs run … cat <> f >&0`).
    advance: bool,
}

/// Whether our fd `fd` may go to the guest as it is.
fn passed_as_is(fd: BorrowedFd) -> bool {
    let Ok(st) = nix::sys::stat::fstat(fd) else {
        // Closed: nothing to give.
        return true;
    };
    let kind = st.st_mode & libc::S_IFMT;
    let pipe = kind == libc::S_IFIFO && crate::sys::fs_type(fd).is_ok_and(|t| t == PIPEFS);
    pipe || kind == libc::S_IFSOCK || nix::unistd::isatty(fd).unwrap_or(false)
}

/// Before the guest's clone: each of our fds 0 to 2 that is a file or a
/// device becomes one end of a new pipe, which the guest inherits. Call
/// [`Swapped::restore`] once it is cloned. On an error, what was swapped
/// is put back.
pub fn swap() -> std::io::Result<Swapped> {
    let mut swapped = Swapped {
        fds: Vec::new(),
        joined: Vec::new(),
        stdin_file: None,
    };
    for fd in 0..=2 {
        // SAFETY: fds 0 to 2 stay open (or closed) for the life of the
        // process; only borrowed here.
        let ours = unsafe { BorrowedFd::borrow_raw(fd) };
        if passed_as_is(ours) {
            continue;
        }
        // `> out 2>&1`: stdout and stderr are one open file, written in
        // the order the command wrote. One pipe (one copy) keeps that
        // order; two would mix their lines in the order the copies ran.
        let joined = swapped
            .fds
            .iter()
            .find(|(other, was, _)| *other != 0 && fd != 0 && same_open_file(was.as_fd(), ours));
        if let Some(&(other, ..)) = joined {
            let was = ours.try_clone_to_owned()?;
            // SAFETY: `other` is one of our fds 1 or 2, now its pipe's
            // writers' end, open until restore.
            let pipe = unsafe { BorrowedFd::borrow_raw(other) };
            if let Err(e) = dup2_raw(pipe, fd) {
                swapped.restore();
                return Err(e);
            }
            swapped.joined.push((fd, was));
            continue;
        }
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (guests, kept) = match fd {
            0 => (r, w),
            _ => (w, r),
        };
        let was = ours.try_clone_to_owned()?;
        if let (0, Some(at)) = (fd, file_offset(was.as_fd())) {
            // Fds 1 and 2 are still ours: 0 is swapped first.
            let advance = (1..=2).any(|other| {
                // SAFETY: as `ours` above.
                one_open_description(was.as_fd(), unsafe { BorrowedFd::borrow_raw(other) })
            });
            swapped.stdin_file = Some(StdinFile {
                at,
                reader: guests.try_clone()?,
                advance,
            });
        }
        if let Err(e) = dup2_raw(guests.as_fd(), fd) {
            swapped.restore();
            return Err(e);
        }
        swapped.fds.push((fd, was, kept));
    }
    Ok(swapped)
}

/// Whether stdout and stderr, `a` and `b`, are to share one pipe and one
/// copy: they are one open file description (a `dup` of each other, as
/// `2>&1` makes), whose writes one copy keeps in order; or two opens of one
/// file both appending (`>> f 2>> f`), whose writes land at its end in the
/// order made, which two copies would mix. Two opens that are not both
/// appending (`> f 2> f`) each write at their own offset: a copy each
/// does the same.
fn same_open_file(a: BorrowedFd, b: BorrowedFd) -> bool {
    let (Ok(sa), Ok(sb)) = (nix::sys::stat::fstat(a), nix::sys::stat::fstat(b)) else {
        return false;
    };
    if (sa.st_dev, sa.st_ino) != (sb.st_dev, sb.st_ino) {
        return false;
    }
    let append = |fd| flags(fd).is_some_and(|f| f & libc::O_APPEND != 0);
    (append(a) && append(b)) || one_open_description(a, b)
}

/// Whether `a` and `b` are one open file description (one offset).
fn one_open_description(a: BorrowedFd, b: BorrowedFd) -> bool {
    let (Ok(sa), Ok(sb)) = (nix::sys::stat::fstat(a), nix::sys::stat::fstat(b)) else {
        return false;
    };
    if (sa.st_dev, sa.st_ino) != (sb.st_dev, sb.st_ino) {
        return false;
    }
    match one_description(a, b) {
        Some(one) => one,
        None => one_description_by_flags(a, b, sa.st_mode),
    }
}

/// kcmp(2): whether `a` and `b` are one open file description. None
/// without it (a kernel built without `CONFIG_KCMP`, a seccomp filter such
/// as Docker's default).
fn one_description(a: BorrowedFd, b: BorrowedFd) -> Option<bool> {
    // The tests' way to the fallback below (review_s45_consolefix).
    if crate::sys::test_hook!("UNIFS_TEST_NO_KCMP").is_some() {
        return None;
    }
    let pid = std::process::id();
    // SAFETY: kcmp only compares; both fds are open for the call.
    let kcmp = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            KCMP_FILE,
            a.as_raw_fd(),
            b.as_raw_fd(),
        )
    };
    (kcmp >= 0).then_some(kcmp == 0)
}

/// Without kcmp, for `a` and `b` open on one file of mode `mode`: file
/// status flags belong to the description, so one that `O_NONBLOCK` set on
/// `a` shows on `b` is one description. Tried on a regular file only, where
/// `O_NONBLOCK` changes nothing for whoever else writes it meanwhile; on a
/// device, the same flags and offset, as two opens are only by chance.
fn one_description_by_flags(a: BorrowedFd, b: BorrowedFd, mode: u32) -> bool {
    let (Some(fa), Some(fb)) = (flags(a), flags(b)) else {
        return false;
    };
    if fa != fb {
        return false;
    }
    if mode & libc::S_IFMT != libc::S_IFREG {
        return offset(a) == offset(b);
    }
    let set = |fd, f| nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(oflag(f))).is_ok();
    if !set(a, fa ^ libc::O_NONBLOCK) {
        return false;
    }
    let one = flags(b) != Some(fb);
    set(a, fa);
    one
}

/// `fd`'s file status flags (`F_GETFL`).
fn flags(fd: BorrowedFd) -> Option<i32> {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).ok()
}

/// The `OFlag` of the flags `f`.
fn oflag(f: i32) -> nix::fcntl::OFlag {
    nix::fcntl::OFlag::from_bits_retain(f)
}

/// `fd`'s offset, if it is a regular file's (one [`Copies::finish`] can
/// set back).
fn file_offset(fd: BorrowedFd) -> Option<u64> {
    let st = nix::sys::stat::fstat(fd).ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    u64::try_from(offset(fd)?).ok()
}

/// `guest exec`'s stdin, when it is a regular file (see
/// [`super::console::Piped::proxy`]): copied into the command's pipe (`to`,
/// its writers' end; `reader`, a reader's end kept to count what is left
/// there) by a thread, with `pread`, as `unifs run`'s is, so that a read
/// of it that hangs (a file on a hung FUSE or NFS mount) holds up neither
/// `exec`'s end nor its setting the offset back ([`Input::set_back`]).
/// None when stdin is no regular file, or no thread can be had: `to` is
/// then the caller's to copy into as before.
pub(super) fn copy_stdin_file(to: BorrowedFd, reader: OwnedFd) -> Option<Input> {
    // SAFETY: fd 0 stays open (or closed) for the life of the process;
    // only borrowed here.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    let at = file_offset(stdin)?;
    let (file, from, to) = (
        stdin.try_clone_to_owned().ok()?,
        stdin.try_clone_to_owned().ok()?,
        to.try_clone_to_owned().ok()?,
    );
    // The copy's writes wait for room (`exec` made its end non-blocking
    // for its own loop, which this copy replaces).
    let fl = flags(to.as_fd())?;
    nix::fcntl::fcntl(
        &to,
        nix::fcntl::FcntlArg::F_SETFL(oflag(fl & !libc::O_NONBLOCK)),
    )
    .ok()?;
    // `exec … <> f >&0`: our stdout is the command's output, written by
    // `exec` through the same open file; moved on as under `unifs run`
    // (see [`StdinFile::advance`]), else written over the input.
    let advance = (1..=2).any(|other| {
        // SAFETY: as `stdin` above.
        one_open_description(stdin, unsafe { BorrowedFd::borrow_raw(other) })
    });
    let feed = Arc::new(Mutex::new(Feed::default()));
    let fed = feed.clone();
    std::thread::Builder::new()
        .name("stdio-0".into())
        .spawn(move || {
            no_sigpipe();
            copy_in(&from, Some((at, advance)), to, &fed);
        })
        .ok()?;
    Some(Input { file, reader, feed })
}

/// `fd`'s offset (`lseek`), if it has one.
fn offset(fd: BorrowedFd) -> Option<i64> {
    nix::unistd::lseek(fd, 0, nix::unistd::Whence::SeekCur).ok()
}

/// kcmp(2)'s type for "the same open file description".
const KCMP_FILE: libc::c_int = 0;

/// `dup2(from, to)`, `to` one of 0 to 2.
fn dup2_raw(from: BorrowedFd, to: i32) -> std::io::Result<()> {
    // SAFETY: dup2 onto 0..=2, which we own as the process's stdio.
    match unsafe { libc::dup2(from.as_raw_fd(), to) } {
        -1 => Err(std::io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// The copies started by [`Swapped::restore`].
pub struct Copies {
    /// (fd, its copy's end: the write to it that failed, if one did)
    outputs: Vec<(i32, mpsc::Receiver<std::io::Result<()>>)>,
    /// Stdin's copy from a regular file.
    input: Option<Input>,
}

/// Stdin's copy from a regular file, which [`Copies::finish`] (or
/// `guest exec`, see [`copy_stdin_file`]) sets back to where the command
/// stopped reading.
pub(super) struct Input {
    /// The file (our stdin's open file), to set its offset.
    file: OwnedFd,
    /// A reader's end of the pipe: what is left there the guest never read.
    reader: OwnedFd,
    /// Shared with the copy.
    feed: Arc<Mutex<Feed>>,
}

/// Where stdin's copy from a regular file is, under a lock shared with
/// [`Input::set_back`].
#[derive(Default)]
struct Feed {
    /// Set: the copy writes nothing more (what a read under way returns is
    /// dropped) and ends.
    stop: bool,
    /// A write to the pipe is under way, which `written` does not count yet
    /// (nor `advanced`).
    writing: bool,
    /// What the pipe took.
    written: u64,
    /// How far the copy moved the file's offset on (see
    /// [`StdinFile::advance`]).
    advanced: u64,
}

impl Swapped {
    /// After the guest's clone: our fds are ours again, and a thread for
    /// each copies between its pipe and it. None swapped: no thread.
    pub fn restore(&mut self) -> Copies {
        for (fd, was) in std::mem::take(&mut self.joined) {
            let _ = dup2_raw(was.as_fd(), fd);
        }
        let mut copies = Copies {
            outputs: Vec::new(),
            input: None,
        };
        let mut stdin_file = self.stdin_file.take();
        for (fd, was, kept) in std::mem::take(&mut self.fds) {
            // The guest's end goes with it: its writers' end is theirs alone.
            let _ = dup2_raw(was.as_fd(), fd);
            if fd == 0 {
                let feed = Arc::new(Mutex::new(Feed::default()));
                let fed = feed.clone();
                // Without a clone of the file to set back, read as `read`
                // does, moving its offset.
                let file = stdin_file
                    .take()
                    .and_then(|s| Some((s, was.try_clone().ok()?)));
                let from = file.as_ref().map(|(s, _)| (s.at, s.advance));
                let copied = std::thread::Builder::new()
                    .name("stdio-0".into())
                    .spawn(move || {
                        no_sigpipe();
                        copy_in(&was, from, kept, &fed);
                    });
                // No thread (a limit on processes): the pipe closes with
                // `kept`, and the guest reads an end of input.
                if let (Ok(_), Some((s, file))) = (copied, file) {
                    copies.input = Some(Input {
                        file,
                        reader: s.reader,
                        feed,
                    });
                }
                continue;
            }
            let (done_tx, done_rx) = mpsc::channel();
            let copied = std::thread::Builder::new()
                .name(format!("stdio-{fd}"))
                .spawn(move || {
                    no_sigpipe();
                    let _ = done_tx.send(copy(kept, was));
                });
            // No thread: the pipe closes with `kept`, and the guest gets
            // EPIPE.
            if copied.is_ok() {
                copies.outputs.push((fd, done_rx));
            }
        }
        copies
    }
}

impl Copies {
    /// Once the guest has ended: waits until its output is copied to its
    /// end, [`DRAIN`] at most. Says the outputs that could not be written
    /// (a full disk): the guest wrote to a pipe, which never told it.
    ///
    /// A regular file as stdin is left at the offset the guest read it to,
    /// as a command reading it directly leaves it (`(unifs run … head -c
    /// 10; cat) < file`: `cat` goes on from byte 10), not where the copy
    /// had read ahead to (up to 128 KiB on); at once, even while the copy's
    /// read hangs (a file on a hung FUSE or NFS mount). The copy of another
    /// input (`< /dev/zero`) ends with us.
    pub fn finish(self) -> Vec<String> {
        let mut failed = Vec::new();
        for (fd, done) in self.outputs {
            if let Ok(Err(e)) = done.recv_timeout(DRAIN) {
                let name = ["stdin", "stdout", "stderr"][fd as usize];
                failed.push(format!("writing the guest's {name} to its file: {e}"));
            }
        }
        if let Some(input) = self.input {
            input.set_back();
        }
        failed
    }
}

impl Input {
    /// Once the guest has ended: stops the copy, and moves the file's
    /// offset on by what the guest read of the pipe (what the copy wrote
    /// less what is left there; less what the copy moved it on already,
    /// see [`StdinFile::advance`]): from where it was, if nothing else
    /// moved it; past what the command wrote to it as well, if it was its
    /// stdout too, as its own `read`s and `write`s would leave it. Moved
    /// on, not set: the offset is shared with whoever gave the file, and
    /// what else moved it meanwhile (the command's output written to it)
    /// is not undone, for a next write to overwrite. The copy reads with
    /// `pread`, which neither moves the offset nor holds its lock: a read
    /// of its that hangs (the file's FUSE daemon stopped) is left behind,
    /// its data dropped, and holds up neither this nor the `lseek` (a
    /// `read` holds the offset's lock throughout). Only a write under way
    /// is waited for, which our reads of the pipe let through; [`DRAIN`]
    /// at most, then the offset is left as it is.
    pub(super) fn set_back(self) {
        let writing = {
            let mut feed = lock(&self.feed);
            feed.stop = true;
            feed.writing
        };
        // What we read out of the pipe is what the command left: read by
        // nobody else after (a process `guest exec`'s command left in the
        // guest holding the pipe gets an end of input, not those bytes
        // too); reading it frees a write of the copy's that waited for
        // room.
        let sink =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK).ok();
        let mut left = read_out(self.reader.as_fd(), sink.as_ref());
        if writing {
            let deadline = std::time::Instant::now() + DRAIN;
            while lock(&self.feed).writing {
                if std::time::Instant::now() >= deadline {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
                left += read_out(self.reader.as_fd(), sink.as_ref());
            }
            left += read_out(self.reader.as_fd(), sink.as_ref());
        }
        let (written, advanced) = {
            let feed = lock(&self.feed);
            (feed.written, feed.advanced)
        };
        let read = written.saturating_sub(left);
        let (Ok(read), Ok(advanced)) = (i64::try_from(read), i64::try_from(advanced)) else {
            return;
        };
        let _ = nix::unistd::lseek(&self.file, read - advanced, nix::unistd::Whence::SeekCur);
    }
}

/// The feed's lock; one a copy that panicked poisoned still counts.
fn lock(feed: &Mutex<Feed>) -> std::sync::MutexGuard<'_, Feed> {
    feed.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads what the pipe `fd` holds now, to drop it, without waiting for
/// more; how much. Moved by `splice` with `SPLICE_F_NONBLOCK` into `sink`
/// (a pipe of our own, non-blocking) and dropped from there: a splice
/// between two pipes fails with `EAGAIN` when the pipe is empty, also
/// when a reader emptied it after a look found bytes (`ipipe_prep` then
/// the retry of `splice_pipe_to_pipe`), whatever its open file's flags,
/// on every kernel since pipe-to-pipe splice (2.6.31); it needs neither
/// `/proc` (a reopen through `/proc/self/fd`) nor `RWF_NOWAIT` (which
/// pipes take only since Linux 6.4), the drain's two ways before. `fd`'s
/// flags are left alone: under `guest exec` a process the command left in
/// the guest may hold it too (`O_NONBLOCK` would make its reads fail with
/// `EAGAIN`). Not by
/// blocking reads no larger than `FIONREAD` says is there: such a process
/// reading the pipe empty between the two would leave the read waiting
/// for a write, which a copy in a read that hangs (a file on a hung mount)
/// never makes. No `sink` (the fd limit): nothing read.
fn read_out(fd: BorrowedFd, sink: Option<&(OwnedFd, OwnedFd)>) -> u64 {
    let Some((r, w)) = sink else {
        return 0;
    };
    let mut buf = [0u8; 16384];
    let mut n = 0;
    loop {
        drain_stop();
        // SAFETY: splice between two pipes open for the call; no offsets.
        let moved = unsafe {
            libc::splice(
                fd.as_raw_fd(),
                std::ptr::null_mut(),
                w.as_raw_fd(),
                std::ptr::null_mut(),
                64 << 10,
                libc::SPLICE_F_NONBLOCK,
            )
        };
        match nix::errno::Errno::result(moved) {
            Ok(0) => return n,
            Ok(k) => n += k as u64,
            Err(nix::errno::Errno::EINTR) => continue,
            // EAGAIN: nothing more now.
            Err(_) => return n,
        }
        // Our pipe emptied for the next splice.
        while nix::unistd::read(r, &mut buf).is_ok_and(|k| k > 0) {}
    }
}

/// The tests' way into the drain's race with a process left holding the
/// pipe: stops (once) before the drain's first splice.
fn drain_stop() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| crate::sys::test_stop!("UNIFS_TEST_STDIN_DRAIN_STOP"));
}

/// Copies `from` to `to` until either ends; the error of a write to `to`.
/// After one, the pipe closes: the guest's next write to it gets EPIPE
/// (SIGPIPE), as it would writing on with nothing taking its output, and
/// ends rather than write on into nothing (`yes`); the run says the error
/// and exits 1 (see `launch::output_lost`).
fn copy(from: OwnedFd, to: OwnedFd) -> std::io::Result<()> {
    let (mut from, mut to) = (std::fs::File::from(from), std::fs::File::from(to));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => to.write_all(&buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(()),
        }
    }
}

/// Copies the input `from` into the pipe `to` until either ends or the
/// feed is stopped, counting what the pipe took in `feed`. A regular file
/// is read from offset `at` on with `pread` (see [`Input::set_back`]),
/// moving the file's offset on past each read before it is written (back
/// by what the pipe did not take) if `advance` (see
/// [`StdinFile::advance`]); another input (`pread` None) with `read`.
/// The pipe closes at the end of `from`: the guest reads its end too.
fn copy_in(from: &OwnedFd, pread: Option<(u64, bool)>, to: OwnedFd, feed: &Mutex<Feed>) {
    let (mut at, advance) = match pread {
        Some((at, advance)) => (Some(at), advance),
        None => (None, false),
    };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if lock(feed).stop {
            return;
        }
        let got = match at {
            Some(off) => i64::try_from(off)
                .map_err(|_| nix::errno::Errno::EOVERFLOW)
                .and_then(|off| nix::sys::uio::pread(from, &mut buf, off)),
            None => nix::unistd::read(from, &mut buf),
        };
        let n = match got {
            Ok(0) => return,
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        };
        {
            let mut f = lock(feed);
            if f.stop {
                return;
            }
            f.writing = true;
        }
        // Moved on before the command can read the bytes: once it has, it
        // may write its output through the open file at once (another
        // copy's write), which must land after them, not over them.
        // Under way still (`writing`): once the run sees the copy is not
        // writing, the offset is the copy's no more.
        let moved = advance && seek(from, n as i64);
        let mut done = 0;
        let mut failed = false;
        while done < n && !failed {
            match nix::unistd::write(&to, &buf[done..n]) {
                Ok(k) => done += k,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => failed = true,
            }
        }
        crate::sys::test_pause!("UNIFS_TEST_STDIN_COPY_WRITTEN_PAUSE");
        // What the pipe did not take is not the command's: moved back.
        let advanced = match moved {
            false => 0,
            true if done < n && seek(from, done as i64 - n as i64) => done,
            true => n,
        };
        {
            let mut f = lock(feed);
            f.written += done as u64;
            f.advanced += advanced as u64;
            f.writing = false;
        }
        if failed {
            return;
        }
        at = at.map(|off| off + n as u64);
    }
}

/// Moves `fd`'s offset on by `by` (back, if negative); whether it did.
fn seek(fd: &OwnedFd, by: i64) -> bool {
    nix::unistd::lseek(fd, by, nix::unistd::Whence::SeekCur).is_ok()
}

/// In a copy's thread: a write to a pipe whose reader is gone fails with
/// EPIPE instead of ending `unifs run` (SIGPIPE goes to the thread that
/// wrote; pending on a thread that ends, it goes with it).
fn no_sigpipe() {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGPIPE);
    let _ = set.thread_block();
}
