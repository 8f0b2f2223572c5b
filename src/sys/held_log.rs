//! Log lines held back by the thread that makes them, to be written in an
//! order of the caller's: `guest list` looks at 16 guests at once, and
//! their warnings are read against the list, in its order, not in the
//! order their threads happened to finish.

use std::cell::RefCell;

thread_local! {
    /// This thread's held lines, while [`held`] runs here.
    static HELD: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// `f`'s answer and the log lines written on this thread while it ran
/// (lines of threads it starts go out as they come).
pub fn held<R>(f: impl FnOnce() -> R) -> (R, Vec<u8>) {
    // Nested: the inner hold's lines are its caller's, not the outer's.
    let outer = HELD.with(|h| h.borrow_mut().replace(Vec::new()));
    // Put back even when `f` panics: the thread's later lines are not
    // held, and the lines held so far (often why it panicked) go out.
    struct Restore(Option<Option<Vec<u8>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                let held = HELD.with(|h| std::mem::replace(&mut *h.borrow_mut(), outer));
                write_lines(&held.unwrap_or_default());
            }
        }
    }
    let mut restore = Restore(Some(outer));
    let r = f();
    let outer = restore.0.take().unwrap_or_default();
    let lines = HELD.with(|h| std::mem::replace(&mut *h.borrow_mut(), outer));
    (r, lines.unwrap_or_default())
}

/// Keeps `line` when this thread is in [`held`]; false: it is for the log
/// now.
pub fn keep(line: &[u8]) -> bool {
    // try_with: a line logged while the thread's locals are torn down
    // goes out, not a panic in the log's writer.
    HELD.try_with(|h| match h.try_borrow_mut().as_deref_mut() {
        Ok(Some(held)) => {
            held.extend_from_slice(line);
            true
        }
        _ => false,
    })
    .unwrap_or(false)
}

/// Writes held `lines` to stderr a line at a time, as the log's writer
/// would have: each line one write, whole in a pipe another process
/// writes too (a failed write is no failure of the caller's).
pub fn write_lines(lines: &[u8]) {
    use std::io::Write;
    for line in lines.split_inclusive(|&b| b == b'\n') {
        let _ = std::io::stderr().write_all(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_this_threads_lines_only_while_it_runs() {
        assert!(!keep(b"before\n"));
        let (answer, lines) = held(|| {
            assert!(keep(b"one\n"));
            let (_, inner) = held(|| keep(b"inner\n"));
            assert_eq!(inner, b"inner\n");
            // Another thread's line is not this one's.
            assert!(!std::thread::scope(|s| s
                .spawn(|| keep(b"x\n"))
                .join()
                .unwrap()));
            keep(b"two\n");
            7
        });
        assert_eq!((answer, lines.as_slice()), (7, &b"one\ntwo\n"[..]));
        assert!(!keep(b"after\n"));
    }

    #[test]
    fn a_panic_ends_the_hold() {
        let r = std::panic::catch_unwind(|| {
            held(|| {
                assert!(keep(b"why\n"));
                panic!("look")
            })
        });
        assert!(r.is_err());
        // Not carried into a later hold (it went to stderr, which this
        // test does not capture).
        assert_eq!(held(|| ()).1, b"");
        assert!(!keep(b"after\n"));
    }
}
