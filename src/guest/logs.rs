//! `guest logs NAME`: what a named guest's init wrote, its console
//! (`RUN_DIR/NAME/console.log`), as `docker logs` shows a container's
//! output: all of it or its last lines, and with `follow` what comes while
//! the guest runs.

use super::lifecycle::Dirs;
use super::state::RunDir;
use super::{Error, Result};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::Duration;

/// How often a followed log is looked at for more.
const POLL: Duration = Duration::from_millis(200);

/// Writes the console log of guest `name` to `out`: all of it, or its last
/// `lines` lines. With `follow`, then what is added while the guest runs,
/// until it stops; a log that a new start sets aside (see `lifecycle`) is
/// read to its end, then the new one from its start. A write error of `out`
/// (a closed pipe) ends it quietly.
pub fn logs(
    dirs: &Dirs,
    name: &str,
    lines: Option<u64>,
    follow: bool,
    out: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<()> {
    super::config::check_name(name)?;
    let run = RunDir::new(&dirs.run_dir, name);
    let path = run.console();
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
            return Err(Error::NoLog {
                name: name.into(),
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
        std::thread::sleep(POLL);
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

/// True while the guest's recorded init lives (no warning for a record
/// that does not parse: `status` gives those).
fn running(run: &RunDir) -> bool {
    matches!(run.read(), Ok(Some(st)) if st.init_alive())
}

/// Where the last `lines` lines of `file` start (a last line without its
/// newline is one too).
fn tail_start(file: &File, lines: u64) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if lines == 0 {
        return Ok(len);
    }
    let mut buf = vec![0u8; 64 << 10];
    let (mut end, mut seen) = (len, 0u64);
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        for (i, &b) in chunk.iter().enumerate().rev() {
            let pos = start + i as u64;
            // The file's own last newline ends its last line.
            if b == b'\n' && pos + 1 != len {
                seen += 1;
                if seen == lines {
                    return Ok(pos + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
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
}
