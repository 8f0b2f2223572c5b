//! `guest logs NAME`: what a named guest's init wrote, its console
//! (`RUN_DIR/NAME/console.log`), as `docker logs` shows a container's
//! output: all of it or its last lines, and with `follow` what comes while
//! the guest runs; or the first lines of its last boot
//! (`console.log.boot`), or its overlay daemon's log (`mount.log`).

use super::lifecycle::Dirs;
use super::state::RunDir;
use super::{Error, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::Duration;

/// How often a followed log is looked at for more.
const POLL: Duration = Duration::from_millis(200);

/// Which of a guest's logs `logs` shows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Log {
    /// `console.log`: its console, all boots' since it was last set aside.
    Console,
    /// `console.log.boot`: the first `relay::BOOT_KEEP_BYTES` of its last boot's
    /// console, which a flood cannot push out (see `relay`).
    Boot,
    /// `mount.log`: its overlay daemon's.
    Mount,
}

/// Writes the log `which` of guest `name` to `out`: all of it, or its last
/// `lines` lines. With `follow`, then what is added while the guest runs,
/// until it stops; a log that a new start sets aside (see `lifecycle`) is
/// read to its end, then the new one from its start. A write error of `out`
/// (a closed pipe) ends it quietly, and so does `sink`, the fd `out` writes
/// to, closed by its reader while the guest writes nothing (`logs -f | head
/// -1` after its line).
pub fn logs(
    dirs: &Dirs,
    name: &str,
    lines: Option<u64>,
    follow: bool,
    which: Log,
    out: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    sink: BorrowedFd<'_>,
) -> Result<()> {
    super::config::check_name(name)?;
    let run = RunDir::new(&dirs.run_dir, name);
    // Its logs are under the mount made over it, not what its path shows.
    run.refuse_covered()?;
    let path = match which {
        Log::Console => run.console(),
        Log::Boot => run.console_boot(),
        Log::Mount => run.mount_log(),
    };
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let config = dirs.config_dir.join(format!("{name}.toml"));
            if !config.exists() && !run.dir.exists() {
                return Err(Error::NoConfig {
                    name: name.into(),
                    path: config,
                });
            }
            // A guest an older unifs started may well run on the overlay:
            // the daemon's log came later.
            let (what, why) = match which {
                Log::Mount => (
                    "overlay daemon's log",
                    "it was never started on the overlay with this run dir, or only by a \
                     unifs built before 2026-12-02 (ea9ee4a), which keeps none (a restart \
                     with this one starts it)",
                ),
                Log::Boot => (
                    "log of its last boot's first lines",
                    "it was never started with this run dir, or only by a unifs built \
                     before 2026-12-05 (58e6ffd), which keeps none (a restart with this one \
                     begins it; `guest logs NAME` shows the console log)",
                ),
                Log::Console => ("console log", "it was never started with this run dir"),
            };
            return Err(Error::NoLog {
                name: name.into(),
                what,
                why,
                path,
            });
        }
        Err(e) => return Err(Error::io("opening", path, e)),
    };
    let from = match lines {
        Some(n) => tail_start(&file, n).map_err(|e| Error::io("reading", &path, e))?,
        None => 0,
    };
    let mut at = from;
    // Without `follow`, what the log held when asked: a guest writing on
    // must not keep it going.
    let end = match follow {
        true => u64::MAX,
        false => file
            .metadata()
            .map_err(|e| Error::io("reading", &path, e))?
            .len(),
    };
    let mut buf = vec![0u8; 64 << 10];
    // Once drained, what comes next: read once more to the end first, for
    // what was written since that last read.
    let mut then = Next::Wait;
    loop {
        at = past_hole(&file, at).min(end.max(at));
        let want = buf
            .len()
            .min(end.saturating_sub(at).try_into().unwrap_or(usize::MAX));
        let n = file
            .read_at(&mut buf[..want], at)
            .map_err(|e| Error::io("reading", &path, e))?;
        if n > 0 {
            at += n as u64;
            if out(&buf[..n]).is_err() {
                return Ok(());
            }
            continue;
        }
        match std::mem::replace(&mut then, Next::Wait) {
            Next::Stop => return Ok(()),
            Next::Open(now) => {
                (file, at) = (now, 0);
                continue;
            }
            Next::Wait if !follow => return Ok(()),
            Next::Wait => {}
        }
        // A new start may have set this log aside for a new one.
        if let Ok(now) = File::open(&path) {
            let (old, new) = (file.metadata(), now.metadata());
            if let (Ok(old), Ok(new)) = (old, new) {
                if (old.dev(), old.ino()) != (new.dev(), new.ino()) {
                    then = Next::Open(now);
                    continue;
                }
            }
        }
        if !running(&run) {
            then = Next::Stop;
            continue;
        }
        if reader_gone(sink, POLL) {
            return Ok(());
        }
    }
}

/// Waits up to `limit` for `sink` to report its reader gone (a pipe whose
/// read end is closed: POLLERR; a hung-up terminal or socket: POLLHUP).
/// Asking for no event, a regular file or a pipe with room never wakes it
/// early: it is then a sleep.
fn reader_gone(sink: BorrowedFd<'_>, limit: Duration) -> bool {
    let timeout = PollTimeout::try_from(limit).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(sink, PollFlags::empty())];
    let gone = PollFlags::POLLERR | PollFlags::POLLHUP;
    match poll(&mut fds, timeout).map(|_| fds[0].revents()) {
        Ok(Some(r)) if r.intersects(gone) => true,
        // POLLNVAL (no stdout at all) is answered at once: not a wait.
        Ok(Some(r)) if r.contains(PollFlags::POLLNVAL) => {
            std::thread::sleep(limit);
            false
        }
        Ok(_) => false,
        // Interrupted: as the sleep it replaces.
        Err(_) => {
            std::thread::sleep(limit);
            false
        }
    }
}

/// What follows a log read to its end once it is read to its end again.
enum Next {
    Wait,
    /// The log a new start put in its place.
    Open(File),
    /// The guest stopped.
    Stop,
}

/// True while the guest's recorded init lives, or may (started from
/// another PID namespace); no warning for a record that does not parse:
/// `status` gives those.
fn running(run: &RunDir) -> bool {
    matches!(run.read(), Ok(Some(st)) if st.maybe_running())
}

/// `at`, or the start of the data after it if `at` is in a hole. Guest root
/// can `ftruncate` its console (init's stdout) to terabytes of holes, free
/// to make: they hold no line, and are neither scanned nor printed.
fn past_hole(file: &File, at: u64) -> u64 {
    match crate::sys::next_data(file.as_fd(), at) {
        Ok(Some((data, _))) => data.max(at),
        // Only a hole follows, to the end of the file (or `at` is past it).
        Ok(None) => file.metadata().map_or(at, |m| m.len().max(at)),
        Err(_) => at,
    }
}

/// The end of the last data before `before` (0 if none): a binary search
/// over `SEEK_DATA`, which only looks forward.
fn data_end_before(file: &File, before: u64) -> u64 {
    let data_in = |from: u64| {
        crate::sys::next_data(file.as_fd(), from).is_ok_and(|d| d.is_some_and(|(d, _)| d < before))
    };
    if before == 0 || !data_in(0) {
        return 0;
    }
    // data_in(lo) holds, data_in(hi) does not: lo ends as the last data byte.
    let (mut lo, mut hi) = (0u64, before);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match data_in(mid) {
            true => lo = mid,
            false => hi = mid,
        }
    }
    lo + 1
}

/// Where the last `lines` lines of `file` start (a last line without its
/// newline is one too). A file that shrinks while it is scanned
/// (`console.log.boot`, which a reboot begins again in place) is scanned
/// again from its new end, a few times, then shown from its start: never
/// a failure for a log rewritten under us.
fn tail_start(file: &File, lines: u64) -> io::Result<u64> {
    for _ in 0..3 {
        if let Some(start) = scan_tail(file, lines)? {
            return Ok(start);
        }
    }
    Ok(0)
}

/// [`tail_start`]'s scan of `file` as long as it is now; None if it
/// turned out shorter.
fn scan_tail(file: &File, lines: u64) -> io::Result<Option<u64>> {
    let len = file.metadata()?.len();
    if lines == 0 {
        return Ok(Some(len));
    }
    // The tests' way into the race: the length taken, the file not read.
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| crate::sys::test_stop!("UNIFS_TEST_LOGS_TAIL_STOP"));
    let mut buf = vec![0u8; 64 << 10];
    let (mut end, mut seen) = (len, 0u64);
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        // A stretch that is all hole holds no newline.
        if past_hole(file, start) >= end {
            end = data_end_before(file, start);
            continue;
        }
        let chunk = &mut buf[..(end - start) as usize];
        match file.read_exact_at(chunk, start) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            read => read?,
        }
        for (i, &b) in chunk.iter().enumerate().rev() {
            let pos = start + i as u64;
            // The file's own last newline ends its last line.
            if b == b'\n' && pos + 1 != len {
                seen += 1;
                if seen == lines {
                    return Ok(Some(pos + 1));
                }
            }
        }
        end = start;
    }
    Ok(Some(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_lines_start_where_tail_says() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let cases: &[(&[u8], u64, &[u8])] = &[
            (b"a\nb\nc\n", 2, b"b\nc\n"),
            (b"a\nb\nc\n", 3, b"a\nb\nc\n"),
            (b"a\nb\nc\n", 9, b"a\nb\nc\n"),
            (b"a\nb\nc", 1, b"c"),
            (b"a\nb\nc", 2, b"b\nc"),
            (b"a\n\n\n", 2, b"\n\n"),
            (b"a\nb\n", 0, b""),
            (b"", 3, b""),
        ];
        for &(text, n, want) in cases {
            std::fs::write(&path, text).unwrap();
            let f = File::open(&path).unwrap();
            let at = tail_start(&f, n).unwrap() as usize;
            assert_eq!(
                &text[at..],
                want,
                "{:?} -n {n}",
                String::from_utf8_lossy(text)
            );
        }
        // Across the 64 KiB blocks it reads backwards in.
        let long: Vec<u8> = (0..50_000)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        std::fs::write(&path, &long).unwrap();
        let f = File::open(&path).unwrap();
        let at = tail_start(&f, 30_000).unwrap() as usize;
        assert!(long[at..].starts_with(b"20000\n"));
    }

    #[test]
    fn holes_are_neither_scanned_nor_printed() {
        // Guest root can ftruncate its console to terabytes of holes: each
        // was read, backwards for `-n` and forwards to print.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let f = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.write_all_at(b"one\ntwo\n", 0).unwrap();
        f.write_all_at(b"three\n", 1 << 40).unwrap();
        f.set_len(2 << 40).unwrap();
        // The NULs after "three" are a last line without its newline.
        assert_eq!(tail_start(&f, 2).unwrap(), 8);
        assert_eq!(tail_start(&f, 3).unwrap(), 4);
        // Holes are whole blocks: the data's blocks are read as they are.
        assert_eq!(past_hole(&f, 2), 2);
        assert_eq!(past_hole(&f, 64 << 10), 1 << 40);
        assert_eq!(past_hole(&f, (1 << 40) + (64 << 10)), 2 << 40);
        let block = data_end_before(&f, 1 << 40);
        assert!((8..=64 << 10).contains(&block), "{block}");
    }
}
