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
    // Put back even when `f` panics: the thread's later lines are not held.
    struct Restore(Option<Option<Vec<u8>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                HELD.with(|h| *h.borrow_mut() = outer);
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
    HELD.with(|h| match h.try_borrow_mut().as_deref_mut() {
        Ok(Some(held)) => {
            held.extend_from_slice(line);
            true
        }
        _ => false,
    })
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
        let r = std::panic::catch_unwind(|| held(|| panic!("look")));
        assert!(r.is_err());
        assert!(!keep(b"after\n"));
    }
}
