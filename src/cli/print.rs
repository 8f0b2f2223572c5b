//! Printing that never panics. `println!` panics when stdout fails (a full
//! disk, /dev/full, a pipe whose reader is gone while SIGPIPE is ignored)
//! and `eprintln!` when stderr does: the command died halfway with exit 101
//! and a backtrace. Here a failed write to stdout is remembered, later
//! writes are skipped, and `main` reports it once at the end, exit 1, as
//! coreutils do. A failed write to stderr has nowhere to be reported.

use std::io::Write;
use std::sync::Mutex;

static STDOUT_FAILED: Mutex<Option<std::io::Error>> = Mutex::new(None);

/// Writes to stdout, flushed at once; see the module.
pub fn write_out(args: std::fmt::Arguments) {
    let mut failed = STDOUT_FAILED.lock().unwrap_or_else(|e| e.into_inner());
    if failed.is_none() {
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
            *failed = Some(e);
        }
    }
}

/// Writes to stderr, ignoring failure.
pub fn write_err(args: std::fmt::Arguments) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// The first write of ours to stdout that failed, if one did. Not a flush
/// of what else is buffered there: a guest's output `enter` relays, cut
/// off by a terminal that hung up, is no output of ours that failed.
pub fn stdout_failure() -> Option<std::io::Error> {
    let mut failed = STDOUT_FAILED.lock().unwrap_or_else(|e| e.into_inner());
    failed.take()
}

/// `println!` that does not panic: see the module.
macro_rules! outln {
    () => {
        $crate::cli::print::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::print::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that does not panic.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::print::write_out(format_args!($($arg)*))
    };
}

/// `eprintln!` that does not panic.
macro_rules! errln {
    () => {
        $crate::cli::print::write_err(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::print::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {errln, out, outln};
